"""Command-line options for the gap-closing methods (``gapviz evaluate --method``).

>>> parser = argparse.ArgumentParser()
>>> add_method_arguments(parser)
>>> args = parser.parse_args(["--method", "spectral", "--k", "20"])
>>> method = method_from_args(args)                         # SpectralGap(n_components=20)

Every option defaults to ``None`` (not given): a method then runs with its own defaults, and an
option that the chosen method does not take is an error rather than silently ignored.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any, Callable, TextIO

from ..methods import METHODS, make_method
from ..methods.base import GapMethod, ProgressCallback


@dataclass(frozen=True)
class _Option:
    """One command-line flag and the parameter it sets in each method that declares it."""

    flag: str
    type: Callable[[str], Any] | None
    help: str
    params: dict[str, str]          # method name -> parameter name
    choices: tuple[str, ...] | None = None
    store_const: Any = None         # for flags without a value: the parameter value they set

    @property
    def dest(self) -> str:
        return "method_" + self.flag.lstrip("-").replace("-", "_")


def _options() -> tuple[_Option, ...]:
    """The flags every registered method declares (``GapMethod.params_info``), merged by flag:
    ``--k`` is spectral's and PCA's ``n_components``, ``--seed`` spectral's and VLAP's
    ``random_state``."""
    merged: dict[str, _Option] = {}
    for name, cls in METHODS.items():
        for info in cls.params_info:
            if info.flag is None:
                continue
            known = merged.get(info.flag)
            if known is None:
                merged[info.flag] = _Option(info.flag, info.type, info.help, {name: info.name},
                                            info.choices, info.const)
            else:
                known.params[name] = info.name
    return tuple(merged.values())


_OPTIONS: tuple[_Option, ...] = _options()


def add_method_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--method``, ``--fit-on`` and every method parameter to ``parser`` (one group)."""
    group = parser.add_argument_group(
        "gap-closing method", "close the gap, then measure again (every option is optional; "
        "each applies to the methods named in its help)")
    group.add_argument("--method", choices=list(METHODS), default=None,
                       help="method to apply: " + "; ".join(f"{n}: {c.summary}" for n, c in METHODS.items()))
    group.add_argument("--fit-on", metavar="OTHER", default=None,
                       help="fit the method on the pairs of this embeddings file (.npz or .parquet) and "
                            "transform FILE's pairs out of sample, as the paper fits OT on separate pairs")
    group.add_argument("--paper-setting", action="store_true",
                       help="the paper's protocol: fit on 5,000 pairs other than those scored (the "
                            "demo: 5,000 new pairs of the same simulated model; a file of at least "
                            "5,500 pairs: a seeded split, the rest scored); implies fit-on")
    for opt in _OPTIONS:
        if opt.store_const is not None:
            group.add_argument(opt.flag, dest=opt.dest, action="store_const", const=opt.store_const,
                               default=None, help=opt.help)
        else:
            group.add_argument(opt.flag, dest=opt.dest, type=opt.type, choices=opt.choices,
                               default=None, help=opt.help)


def method_from_args(args: argparse.Namespace) -> GapMethod | None:
    """The method ``args`` ask for (unfitted), or ``None`` when no ``--method`` was given.

    Raises
    ------
    ValueError
        A method option was given without ``--method``, or one that the chosen method does not
        take (the message names the methods it applies to), or a parameter value the method
        rejects at construction.
    """
    given = [opt for opt in _OPTIONS if getattr(args, opt.dest, None) is not None]
    name = getattr(args, "method", None)
    if name is None:
        if given or getattr(args, "fit_on", None):
            flags = ", ".join([o.flag for o in given] + (["--fit-on"] if getattr(args, "fit_on", None) else []))
            raise ValueError(f"{flags} given without --method; choose one of: {', '.join(METHODS)}.")
        return None
    params: dict[str, Any] = {}
    for opt in given:
        if name not in opt.params:
            raise ValueError(f"{opt.flag} does not apply to --method {name}; it applies to "
                             f"{', '.join(opt.params)}.")
        params[opt.params[name]] = getattr(args, opt.dest)
    return make_method(name, **params)


def print_progress(stream: TextIO = sys.stderr, every: float = 0.1) -> ProgressCallback:
    """A progress callback for terminals: one line per ``every`` of the fit, and at its end."""
    last = [-1.0]

    def report(fraction: float, message: str) -> None:
        if fraction >= 1.0 or fraction - last[0] >= every:
            last[0] = fraction
            print(f"  [{fraction:4.0%}] {message}", file=stream, flush=True)

    return report
