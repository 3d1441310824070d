"""The ``gapviz`` command (also ``python -m gapviz``): ``evaluate``, ``embed``, ``compare``,
``trajectory``, ``cache``.

One module per subcommand; each has ``register(subparsers)`` and sets ``func`` (and the
subcommand's name) on its parser. :func:`main` runs one and turns a user's mistake into one
line on stderr and exit status 2, and what the machine could not do (out of memory, a full
disk) into one line and status 1 (see :mod:`gapviz.cli.common`). While it runs, everything
the command prints passes through :class:`gapviz.safety.EscapingStream`: text from files (a
model name, a file name) cannot send the terminal a control sequence.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from typing import Iterator, Sequence

from ..threads import quiet_idle_blas_threads

quiet_idle_blas_threads()  # the command line's process is gapviz's own: before numpy loads

from ..safety import EscapingStream
from .common import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USER_ERROR, UserError, error_line

#: Subcommand modules, in the order ``--help`` lists them.
_SUBCOMMANDS = ("evaluate", "embed", "compare", "trajectory", "cache")


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


@contextmanager
def escaped_output() -> Iterator[None]:
    """``sys.stdout`` and ``sys.stderr`` escape control characters while the block runs.

    Both keep line feeds and tabs; standard error also a carriage return that starts a write,
    which the progress line uses to rewrite itself in place.
    """
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = EscapingStream(out), EscapingStream(err, rewind=True)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err


def _os_error_hint(err: OSError) -> str:
    """What to do about an ``OSError`` that stopped a command."""
    import errno

    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return "; free some space or choose a folder on another disk, then run the command again."
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "; choose a file or folder you may read and write, or fix its permissions."
    return "."


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 the machine could not do it,
    2 bad input, 130 interrupted)."""
    from ..cache import describe_os_error
    from ..data import DataError
    from ..embeddings import EmbeddingsFileError
    from ..encode import ModelLoadError
    from ..methods.ot import pot_numpy_backend_only

    pot_numpy_backend_only()
    parser = build_parser()
    args = parser.parse_args(argv)
    with escaped_output():
        try:
            return int(args.func(args) or 0)
        except (UserError, EmbeddingsFileError, DataError, ModelLoadError, FileNotFoundError,
                FileExistsError, ValueError) as err:
            print(error_line(args.command, err), file=sys.stderr)
            return EXIT_USER_ERROR
        except MemoryError as err:
            detail = f" ({err})" if str(err) else ""
            print(error_line(args.command, f"out of memory{detail}; use less data (a smaller "
                             "--n or --dim, a sample of the file) or a machine with more "
                             "memory."), file=sys.stderr)
            return EXIT_FAILURE
        except OSError as err:  # a full disk, a read-only folder, a device error
            print(error_line(args.command, describe_os_error(err) + _os_error_hint(err)),
                  file=sys.stderr)
            return EXIT_FAILURE
        except KeyboardInterrupt:
            print(f"\ngapviz {args.command}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED


__all__ = ["EXIT_FAILURE", "EXIT_USER_ERROR", "UserError", "build_parser", "escaped_output", "main"]
