"""``python -m gapviz``: see :mod:`gapviz.cli`."""

import sys

from .cli import main

sys.exit(main())
