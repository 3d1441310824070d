"""The ``gapviz`` command (also ``python -m gapviz``): ``evaluate``, ``embed``, ``compare``, ``cache``.

One module per subcommand; each has ``register(subparsers)`` and sets ``func`` (and the
subcommand's name) on its parser. :func:`main` runs one and turns a user's mistake into one
line on stderr and exit status 2 (see :mod:`gapviz.cli.common`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .common import EXIT_INTERRUPTED, EXIT_USER_ERROR, UserError, error_line

#: Subcommand modules, in the order ``--help`` lists them.
_SUBCOMMANDS = ("evaluate", "embed", "compare", "cache")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: every subcommand registered on one parser."""
    import importlib

    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="gapviz",
        description="Measure and close the modality gap between image and text embeddings.")
    parser.add_argument("--version", action="version", version=f"gapviz {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _SUBCOMMANDS:
        importlib.import_module(f".{name}", __name__).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input, 130 interrupted)."""
    from ..data import DataError
    from ..embeddings import EmbeddingsFileError
    from ..encode import ModelLoadError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, EmbeddingsFileError, DataError, ModelLoadError, FileNotFoundError,
            FileExistsError, ValueError) as err:
        print(error_line(args.command, err), file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"\ngapviz {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


__all__ = ["EXIT_USER_ERROR", "UserError", "build_parser", "main"]
