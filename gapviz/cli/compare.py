"""``gapviz compare SOURCE [SOURCE ...] --methods ...``: one table of measures for
every (model, method) on the same pairs."""

from __future__ import annotations

import argparse
import ast
import json
from typing import Any

from .. import tables
from ..compare import COMPARE_KEYS, compare, rows_to_columns
from ..config import DEMO_DIM
from ..embeddings import PairedEmbeddings
from .common import add_demo_arguments, add_format_argument, load_source

DEFAULT_METHODS = "orig,center,standardize,pca,procrustes,sinkhorn,spectral"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare", help="table of measures for several methods (rows) and models",
        description="Fit and measure each method on each SOURCE ('demo', 'demo:PROFILE' for a "
                    "simulated profile, or a .npz/.parquet embeddings file of the same pairs).")
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    p.add_argument("--methods", default=DEFAULT_METHODS,
                   help=f"comma-separated method names (default: {DEFAULT_METHODS}; 'all' for every one)")
    p.add_argument("--set", action="append", default=[], metavar="METHOD.PARAM=VALUE",
                   help="a method parameter, e.g. --set spectral.n_components=120 (repeatable)")
    p.add_argument("--all-measures", action="store_true", help="every measure, not only the paper's")
    add_format_argument(p)
    add_demo_arguments(p, profile=False)
    p.set_defaults(func=cmd_compare)


def parse_settings(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["spectral.n_components=60"]`` -> ``{"spectral": {"n_components": 60}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        method, dot, param = key.partition(".")
        if not (sep and dot and method and param):
            raise ValueError(f"--set {item!r}: write METHOD.PARAM=VALUE, e.g. spectral.n_components=60.")
        try:
            value: Any = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw  # a plain string such as a graph name
        out.setdefault(method, {})[param] = value
    return out


def load_sources(sources: list[str], n_pairs: int, seed: int,
                 dim: int = DEMO_DIM) -> dict[str, PairedEmbeddings]:
    datasets: dict[str, PairedEmbeddings] = {}
    for src in sources:
        if src == "demo" or src.startswith("demo:"):
            profile = src.partition(":")[2] or "clip"
            pairs, _ = load_source("demo", profile=profile, n_pairs=n_pairs, dim=dim, seed=seed)
        else:
            pairs, _ = load_source(src)
        label = pairs.model or src
        datasets[label if label not in datasets else src] = pairs
    ids = {tuple(p.ids or ()) for p in datasets.values()}
    if len(ids) > 1:
        raise ValueError("the sources do not hold the same pairs (their ids differ); compare "
                         "models on embeddings of the same pairs.")
    return datasets


def cmd_compare(args: argparse.Namespace) -> int:
    from ..methods import METHODS

    names = list(METHODS) if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}.")
    datasets = load_sources(args.sources, args.n, args.demo_seed, args.dim)
    rows = compare(datasets, names, params=parse_settings(args.set))
    columns = rows_to_columns(rows)
    keys = None if args.all_measures else [k for k in COMPARE_KEYS]
    if args.format == "json":
        payload = {"rows": [{"model": r.model, "method": r.method, "params": r.params,
                             "metrics": r.metrics} for r in rows]}
        print(json.dumps(payload, indent=2))
    else:
        title = "gapviz compare: " + ", ".join(
            f"{label}{' (SIMULATED)' if p.is_simulated else ''}, N = {p.n}" for label, p in datasets.items())
        print(tables.render(columns, args.format, keys=keys, title=title, transpose=True), end="")
    return 0


def command_line(sources: list[str], methods: list[str],
                 settings: dict[str, dict[str, Any]] | None = None,
                 options: dict[str, Any] | None = None, *, fmt: str = "markdown") -> str:
    """The ``gapviz compare`` command that prints a table: the Compare page shows it, and a
    test parses it back with :func:`register`'s parser.

    Parameters
    ----------
    sources : list of str
        ``demo``, ``demo:PROFILE`` or embeddings files.
    methods : list of str
    settings : {method: {param: value}}, optional
        Written as ``--set METHOD.PARAM=VALUE`` (values as Python literals, as
        :func:`parse_settings` reads them).
    options : {flag: value}, optional
        Other options, e.g. ``{"--n": 500}``; a value of True writes the bare flag.
    """
    import shlex

    words = ["gapviz", "compare", *sources, "--methods", ",".join(methods)]
    for flag, value in (options or {}).items():
        words += [flag] if value is True else [flag, str(value)]
    for method, params in (settings or {}).items():
        words += [f"--set={method}.{key}={value!r}" for key, value in params.items()]
    words += ["--format", fmt]
    return shlex.join(words)
