"""Command line: ``python -m gapviz evaluate|embed|compare ...``.

Errors in what a user gives (a bad file, a bad option) print one clear line to stderr and
exit with status 2; they never end in a stack trace.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

import numpy as np

from . import tables
from .config import DEMO_DIM, DEMO_N_PAIRS, DEMO_SEED
from .embeddings import EmbeddingsFileError, LoadReport, PairedEmbeddings, load_embeddings
from .measures import measure_gap, normalize_rows, paired_significance
from .simulate import PROFILES, simulate_pairs

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem with the user's input; its message is printed as is."""


def load_source(source: str, *, profile: str = "clip", n_pairs: int = DEMO_N_PAIRS,
                dim: int = DEMO_DIM, seed: int = DEMO_SEED) -> tuple[PairedEmbeddings, LoadReport]:
    """``demo`` (the simulated set) or the path of a .npz / .parquet embeddings file."""
    if source == "demo":
        pairs = simulate_pairs(n_pairs, dim, profile=profile, seed=seed)
        return pairs, LoadReport(n_read=pairs.n, n_kept=pairs.n)
    return load_embeddings(source)


def dataset_info(pairs: PairedEmbeddings, report: LoadReport, source: str) -> dict[str, Any]:
    info = {"source": source, "model": pairs.model, "n_pairs": pairs.n, "dim": pairs.dim,
            "simulated": pairs.is_simulated, "load": report.summary()}
    if pairs.is_simulated:
        info["imitates"] = pairs.meta.get("imitates", "")
    if report.warnings:
        info["warnings"] = list(report.warnings)
    return info


def _add_source_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", choices=sorted(PROFILES), default="clip",
                   help="simulated model profile of the demo (default: clip)")
    p.add_argument("--n", type=int, default=DEMO_N_PAIRS, help="demo: number of pairs (default 2500)")
    p.add_argument("--dim", type=int, default=DEMO_DIM, help="demo: embedding dimension (default 512)")
    p.add_argument("--demo-seed", type=int, default=DEMO_SEED, help="demo: seed (default 0)")


def _add_format_argument(p: argparse.ArgumentParser, choices: Sequence[str]) -> None:
    p.add_argument("--format", choices=list(choices), default="table",
                   help="output format (default: table). JSON writes infinite ratios as Infinity.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gapviz",
        description="Measure and close the modality gap between image and text embeddings.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ev = sub.add_parser("evaluate", help="print the gap report of an embeddings file or the demo",
                        description="Gap report of `demo` (simulated) or a .npz/.parquet embeddings "
                                    "file; with --method, before and after closing the gap.")
    ev.add_argument("source", help="'demo' or the path of a .npz / .parquet embeddings file")
    _add_format_argument(ev, ("table", "json", "csv", "markdown"))
    ev.add_argument("--separability", action="store_true",
                    help="also fit a linear classifier telling the modalities apart (slower)")
    _add_source_arguments(ev)
    _add_method_arguments(ev)
    ev.set_defaults(func=cmd_evaluate)

    for register in _subcommand_registrars():
        register(sub)
    return parser


def _add_method_arguments(p: argparse.ArgumentParser) -> None:
    from .methods.cli import add_method_arguments

    add_method_arguments(p)


def _subcommand_registrars() -> list:
    from . import compare_cli, embed_cli

    return [embed_cli.register, compare_cli.register]


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .methods.cli import apply_method, method_from_args, print_progress

    pairs, report = load_source(args.source, profile=args.profile, n_pairs=args.n, dim=args.dim,
                                seed=args.demo_seed)
    info = dataset_info(pairs, report, args.source)
    X, Y = normalize_rows(pairs.image_embeddings), normalize_rows(pairs.text_embeddings)
    orig = measure_gap(X, Y, separability=args.separability).metrics
    columns = {"ORIG": orig}
    extra: dict[str, Any] = {"dataset": info}
    method = method_from_args(args)
    if method is not None:
        fit_on = getattr(args, "fit_on", None)
        Xt, Yt = apply_method(method, X, Y, fit_on=fit_on, progress=print_progress(sys.stderr))
        if fit_on:
            extra["fit_on"] = {"source": fit_on}
        after = measure_gap(Xt, Yt, separability=args.separability).metrics
        label = method.name.upper()
        columns[label] = after
        extra["method"] = method.describe()
        extra["metrics_orig"] = orig
        extra["significance"] = [vars(t) for t in paired_significance(X, Y, Xt, Yt)]
        metrics = after
    else:
        metrics = orig
    print(_render_report(columns, args.format, info, extra, metrics), end="")
    return 0


def _render_report(columns: dict[str, dict[str, float]], fmt: str, info: dict[str, Any],
                   extra: dict[str, Any], metrics: dict[str, float]) -> str:
    if fmt == "json":
        payload = {**extra, "metrics": metrics}
        return json.dumps(payload, indent=2, default=_json_default) + "\n"
    if fmt in ("csv", "markdown"):
        return tables.render(columns, fmt)
    lines = [f"gapviz report: {info['model'] or info['source']}   "
             f"N = {info['n_pairs']} pairs, d = {info['dim']}"]
    if info["simulated"]:
        lines.append(f"SIMULATED DATA (imitates {info.get('imitates', 'a real model')}; "
                     "not that model's output)")
    lines.append(info["load"])
    lines += [f"warning: {w}" for w in info.get("warnings", [])]
    if "method" in extra:
        params = ", ".join(f"{k}={v}" for k, v in extra["method"]["params"].items())
        lines.append(f"method: {extra['method']['method']}({params})")
        if "fit_on" in extra:
            lines.append(f"fitted on the pairs of {extra['fit_on']['source']}, applied out of sample")
    lines.append("")
    body = tables.render(columns, "table")
    if "significance" in extra:
        body += "\npaired distances, ORIG vs after (paired t-test; Wilcoxon signed-rank):\n"
        for t in extra["significance"]:
            body += (f"  {t['distance']:<6} mean {t['mean_before']:.4f} -> {t['mean_after']:.4f}   "
                     f"t p = {t['t_pvalue']:.3g}   Wilcoxon p = {t['wilcoxon_pvalue']:.3g}\n")
    return "\n".join(lines) + "\n" + body


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, EmbeddingsFileError, FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
