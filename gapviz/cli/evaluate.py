"""``gapviz evaluate SOURCE``: the gap report of the demo or an embeddings file, and with
``--method`` before and after closing the gap."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

import numpy as np

from .. import tables
from ..measures import measure_gap, normalize_rows, paired_significance
from .common import add_demo_arguments, add_format_argument, dataset_info, json_default, load_source

def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``evaluate`` to the command line."""
    from .method_options import add_method_arguments

    ev = sub.add_parser("evaluate", help="print the gap report of an embeddings file or the demo",
                        description="Gap report of `demo` (simulated) or a .npz/.parquet embeddings "
                                    "file; with --method, before and after closing the gap.")
    ev.add_argument("source", help="'demo' or the path of a .npz / .parquet embeddings file")
    add_format_argument(ev)
    ev.add_argument("--separability", action="store_true",
                    help="also fit a linear classifier telling the modalities apart (slower)")
    add_demo_arguments(ev)
    add_method_arguments(ev)
    ev.set_defaults(func=cmd_evaluate)
    return ev


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .method_options import apply_method, method_from_args, print_progress

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
        return json.dumps(payload, indent=2, default=json_default) + "\n"
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
