"""``gapviz compare SOURCE [SOURCE ...] --methods ...``: one table of measures for
every (model, method) on the same pairs."""

from __future__ import annotations

import argparse
import ast
import json
import math
import sys
from typing import Any

from .. import tables
from ..compare import (COMPARE_KEYS, SIGNIFICANCE_ALPHA, SIGNIFICANCE_RESAMPLES, compare,
                       failed_rows, rows_to_columns, significance)
from ..config import DEMO_DIM
from ..embeddings import PairedEmbeddings
from ..intervals import noise_verdict
from .common import add_demo_arguments, add_format_argument, load_source
from ..safety import markdown_cell, terminal_text
from ..tables import add_text_columns, provenance_cells
from .protocol_options import (add_protocol_arguments, chance_line, chance_record, load_fit_pairs,
                               protocol_kwargs)

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
    p.add_argument("--no-significance", action="store_true",
                   help="skip the paired bootstrap of each column's best against its runner-up")
    p.add_argument("--recipe", metavar="FILE",
                   help="replay a Compare page's recipe (\"Save recipe\"): its methods, protocol, "
                        "parameters and controls, on SOURCEs that hold the page's data (checked by "
                        "content hash)")
    add_format_argument(p)
    add_demo_arguments(p, profile=False)
    add_protocol_arguments(p, fit_on=True, seed_alias=True)
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
    settings = parse_settings(args.set)
    kwargs = protocol_kwargs(args)
    recipe = _read_recipe(args) if args.recipe else None
    if recipe is not None:
        names, settings, kwargs = _from_recipe(recipe, kwargs)
        demo = recipe.demo or {}
        args.n, args.demo_seed, args.dim = (demo.get("n", args.n), demo.get("seed", args.demo_seed),
                                            demo.get("dim", args.dim))
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}.")
    datasets = load_sources(args.sources, args.n, args.demo_seed, args.dim)
    if recipe is not None and recipe.data not in {p.content_hash() for p in datasets.values()}:
        from ..recipes import RecipeError

        raise RecipeError(f"no SOURCE is the data of the recipe ({recipe.dataset} · "
                          f"{recipe.model}, content hash {recipe.data[:12]}…); give the embeddings "
                          "the page compared.")
    if args.fit_on and len(datasets) > 1:
        raise ValueError(f"--fit-on {args.fit_on} holds one model's embeddings; with several "
                         "SOURCEs (models) compare them one at a time, each with its own fit file.")
    fit_on = load_fit_pairs(args.fit_on) if args.fit_on else None
    rows = compare(datasets, names, params=settings, fit_on=fit_on,
                   fit_source=args.fit_on, **kwargs)
    # A method that cannot run on these data is reported, and the others still are.
    failed = failed_rows(rows)
    for r in failed:
        print(terminal_text(f"gapviz compare: {r.label} ({r.protocol}) not run: {r.error}"),
              file=sys.stderr)
    for r in rows:
        if r.warning:
            print(terminal_text(f"gapviz compare: warning: {r.label}: {r.warning}"), file=sys.stderr)
        for note in r.notes:
            print(terminal_text(f"gapviz compare: note: {r.label}: {note}"), file=sys.stderr)
    if len(failed) == len(rows):
        raise ValueError("no method could run on these data; see the reasons above.")
    n_scored = next(iter(datasets.values())).n
    columns = rows_to_columns(rows)
    keys = list(COMPARE_KEYS) if not args.all_measures else tables.ordered_keys(columns)
    shuffled = bool(kwargs["shuffled"])
    tests = {} if args.no_significance else significance(rows, keys, shuffled=shuffled)
    if args.format == "json":
        payload = {"protocol": kwargs["protocol"] or "each method's default",
                   "shuffled_control": shuffled,
                   "chance": chance_record(n_scored),
                   "rows": [{"model": r.model, "method": r.method, "params": r.params,
                             "protocol": r.protocol, "provenance": r.provenance,
                             "metrics": r.metrics, "error": r.error, "notes": list(r.notes)}
                            for r in rows],
                   "significance": tests}
        print(json.dumps(payload, indent=2))
        return 0
    title = "gapviz compare: " + ", ".join(
        f"{terminal_text(label)}{' (SIMULATED)' if p.is_simulated else ''}, N = {p.n}"
        for label, p in datasets.items())
    if shuffled:
        title += f" — SHUFFLED CONTROL (captions permuted, seed {kwargs['seed']}): {SHUFFLED_NOTE}"
    rendered = tables.render(columns, args.format, keys=keys, title=title, transpose=True,
                             mark_best=not shuffled)
    ran = [r for r in rows if r.ok]
    if args.format in ("csv", "markdown"):
        cells = {r.label: provenance_cells(r.provenance) for r in ran}
        rendered = add_text_columns(rendered, args.format, cells)
        rendered += _not_run_rows(failed, keys, args.format)
        if args.format == "markdown" and shuffled:  # a title paragraph above the table
            rendered = f"**{_markdown_text(title)}**\n\n" + rendered
    else:
        width = max(len(r.label) for r in rows)
        notes = [terminal_text(f"{r.label.ljust(width)}  {_summary(r)}"
                               + "".join(f"; {n}" for n in r.notes))
                 for r in ran]
        notes += [terminal_text(f"{r.label.ljust(width)}  NOT RUN ({r.protocol}): {r.error}")
                  for r in failed]
        rendered += "\nhow each run was fitted and scored:\n" + "\n".join(notes) + "\n"
        rendered += chance_line(n_scored) + "\n"
        rendered += _significance_lines(tests)
    print(rendered, end="")
    return 0


def _significance_lines(tests: dict) -> str:
    """Each column's best against its runner-up (the Compare page's green and amber marks)."""
    if not tests:
        return ""
    lines = [f"best vs runner-up on the same pairs (paired bootstrap, {SIGNIFICANCE_RESAMPLES} "
             f"resamples, p < {SIGNIFICANCE_ALPHA}):"]
    for key, t in tests.items():
        verdict = {"beyond noise": "ahead beyond noise",
                   "within noise": "~ within noise (not crowned)",
                   "not tested": "not tested: a ratio infinite on one side (not crowned)"
                   }[noise_verdict(t)]
        p = "n/a" if math.isnan(t["p_value"]) else f"{t['p_value']:.3f}"
        lines.append(f"  {key:<24} {t['best']} vs {t['runner_up']}: p = {p}, {verdict}")
    return "\n".join(lines) + "\n"


def _read_recipe(args: argparse.Namespace):
    from .evaluate import _read_recipe as read

    recipe = read(args.recipe)
    if recipe.page != "compare":
        raise ValueError(f"this is a recipe of the {recipe.page} page: replay it with "
                         "`gapviz evaluate SOURCE --recipe FILE`.")
    return recipe


def _from_recipe(recipe, kwargs: dict[str, Any]) -> tuple[list[str], dict, dict[str, Any]]:
    """Methods, parameters and protocol options of a Compare recipe (the page's choices)."""
    view = recipe.view
    names = [str(m) for m in view.get("methods") or []]
    if not names:
        raise ValueError("the recipe lists no methods.")
    chosen = view.get("chosen") or {}
    settings = ({chosen["method"]: dict(chosen.get("params") or {})}
                if isinstance(chosen, dict) and chosen.get("method") in names else {})
    protocol = view.get("protocol", "default")
    out = {**kwargs, "protocol": None if protocol == "default" else protocol,
           "allow_pairing_leak": bool(view.get("allow_leak")), "shuffled": bool(view.get("shuffled"))}
    return names, settings, out


#: What a shuffled-control table says in its title (and why no best is marked in it).
SHUFFLED_NOTE = "a null check, not a ranking: every row should be at chance; no best is marked"


def _markdown_text(text: str) -> str:
    """Plain text for a markdown paragraph (model labels come from files)."""
    return "".join("\\" + c if c in "\\`*_[]<>|#" else c for c in terminal_text(text))


def _summary(row) -> str:
    from ..protocols import Provenance

    fields = {k: v for k, v in row.provenance.items() if k != "pool_size"}
    return Provenance(**fields).summary()


def _not_run_rows(failed, keys: list[str], fmt: str) -> str:
    """Rows that could not run, for csv and markdown: empty measures, the reason as protocol."""
    if not failed:
        return ""
    if fmt == "csv":
        import csv
        import io

        from ..safety import csv_rows

        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(csv_rows(
            [[r.label, *([""] * len(keys)), f"not run ({r.protocol}): {r.error}", "", ""] for r in failed]))
        return buf.getvalue()
    reason = lambda r: markdown_cell(f"not run ({r.protocol}): {r.error}")  # noqa: E731
    return "".join(f"| {markdown_cell(r.label)} |" + " — |" * len(keys) + f" {reason(r)} | | |\n"
                   for r in failed)


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
