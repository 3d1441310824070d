"""``python -m gapviz``: the ``gapviz`` command (see :mod:`gapviz.cli`)."""

import sys

from .cli import main

sys.exit(main())
