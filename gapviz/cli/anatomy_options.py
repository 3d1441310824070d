"""``evaluate --anatomy``: the gap's anatomy, bootstrap intervals and, with ``--method``, what
closing the gap costs, beside the usual report.

JSON gains ``RMG``, ``NDCG@10`` (MixBench's formula on the paper's mixed pool),
``NDCG@10_mixbench`` (MixBench's protocol), ``hubness`` with scikit-hubness's ``robinhood``,
``antihub_occurrence`` and ``hub_occurrence``, the cross-modal ``R@1_i2t_crossmodal`` and
``R@1_t2i_crossmodal`` and, for the file's own pairs when their rows are not unit-norm,
``frechet_raw`` (the Fréchet distance on those raw rows) in ``metrics`` (and
``metrics_orig``), ``anatomy`` (dimensions, ablation, clusters, centroid_vs_distribution,
hubness, ndcg_mixbench), ``ci`` =
{measure: [low, high]} and ``ci_method``; with ``--method`` also ``anatomy_orig``, ``ci_orig``,
``closing_costs``, ``gap_removed`` and ``comparison`` (ORIG vs the method, paired bootstrap on
the same pairs). What closing buys (:mod:`gapviz.closing_gains`: k-means agreement with the
labels and modality purity on the mixed pool, cross-modal probes and substitution, the
requested-modality rate) is ``closing_gains`` = {"measures": {key: {"before", "ci_before"
[, "after", "ci_after", "change", "ci_change", "p_value", "significant"]}}, "n_clusters",
"labels_from", ...}, its values also in ``metrics`` (and ``metrics_orig``). The text table and
markdown show the main numbers.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np

from ..anatomy import ABLATION_DIMS, GapAnatomy, gap_anatomy, gap_removed
from ..closing_costs import closing_costs, crossmodal_recall, label_source, pair_labels
from ..closing_gains import gain_outcomes, gains_report, pool_k
from ..intervals import N_RESAMPLES, noise_verdict, paired_comparison
from ..measures import GapReport

#: The scalar measures the CLI compares between ORIG and a method (paired bootstrap).
COMPARED = ("RMG", "NDCG@10", "hubness", "ITR", "R@5", "R@1_i2t_crossmodal", "R@1_t2i_crossmodal",
            "paired_cosine_distance", "centroid_gap")
#: The main numbers the text table and markdown show with their intervals.
SHOWN = ("RMG", "NDCG@10", "hubness", "R@1_i2t_crossmodal", "ITR", "centroid_gap")


def add_anatomy_arguments(parser: argparse.ArgumentParser) -> None:
    """``--anatomy`` and its knobs (one group)."""
    group = parser.add_argument_group(
        "gap anatomy",
        "where the gap lives (per dimension, per cluster, centroid vs distribution), RMG, "
        "NDCG@10 (also under MixBench's protocol), hubness indices, the Fréchet distance on "
        "the raw rows, what closing buys (grouping, transfer, requested modality), bootstrap "
        "intervals and, with --method, what closing costs")
    group.add_argument("--anatomy", action="store_true",
                       help="add the gap anatomy, what closing buys, intervals and (with "
                            "--method) closing costs")
    group.add_argument("--resamples", type=int, default=N_RESAMPLES,
                       help=f"bootstrap resamples of pairs for the intervals and comparisons "
                            f"(default {N_RESAMPLES}; 0: no intervals)")
    group.add_argument("--clusters", type=int, default=None, metavar="K",
                       help="k of k-means for the per-cluster gap and for the mixed pool's "
                            "grouping (default: the file's labels or the demo's concepts; "
                            "without labels, k chosen by silhouette on the raw pairs)")
    group.add_argument("--ablation-dims", type=int, default=ABLATION_DIMS, metavar="M",
                       help=f"ablation curve: remove the top 0..M gap dimensions (default {ABLATION_DIMS})")
    group.add_argument("--anatomy-seed", type=int, default=0,
                       help="seed of k-means and of the bootstrap (default 0)")


def check_anatomy_arguments(args: argparse.Namespace) -> None:
    """One ``ValueError`` per bad value, before anything is computed."""
    if not getattr(args, "anatomy", False):
        return
    if args.resamples != 0 and args.resamples < 10:
        raise ValueError(f"--resamples must be 0 (no intervals) or at least 10, got {args.resamples}.")
    if args.clusters is not None and args.clusters < 1:
        raise ValueError(f"--clusters must be at least 1, got {args.clusters}.")
    if args.ablation_dims < 0:
        raise ValueError(f"--ablation-dims must be 0 or more, got {args.ablation_dims}.")


def anatomy_section(args: argparse.Namespace, pairs: Any, X: np.ndarray, Y: np.ndarray,
                    orig: GapReport, *, method: Any = None, transformed: tuple | None = None,
                    after: GapReport | None = None, fits: Any = None,
                    fold_of: np.ndarray | None = None, scores: Any = None) -> dict[str, Any]:
    """Everything ``--anatomy`` adds to the report.

    ``scores``: a score correction's terms of the scored pairs (the run's); the measures that
    rank take the corrected scores.

    ``fits`` and ``fold_of`` are the protocol's fitted methods (``ProtocolResult``): zero-shot
    after the method sends the class embeddings through the fit that transformed each pair.

    Returns
    -------
    dict
        ``columns``: {"ORIG": {RMG, NDCG@10, ...}, METHOD: {...}} to merge into the table's
        columns; the other keys go to the JSON as they are (see the module docstring).
    """
    check_anatomy_arguments(args)
    labels = pair_labels(pairs)
    if labels is not None and args.clusters is None:
        clusters_from = {"labels": labels}
    else:
        clusters_from = {"n_clusters": args.clusters}
    opts = dict(intervals=args.resamples > 0, n_resamples=max(args.resamples, 10),
                seed=args.anatomy_seed, ablation_dims=min(args.ablation_dims, X.shape[1]))
    # the file's rows as given: the Fréchet distance on them when they are not unit-norm
    # (each modality on its own, so a shuffled-pairs control leaves it unchanged)
    raw = (pairs.image_embeddings, pairs.text_embeddings)
    a0 = gap_anatomy(X, Y, report=orig, raw=raw, **clusters_from, **opts)
    out: dict[str, Any] = {"columns": {"ORIG": {**a0.metrics, **crossmodal_recall(orig, (1,))}}}
    # what closing buys: k chosen once on the raw pairs, kept for the method
    k = pool_k(X, Y, labels=labels, n_clusters=args.clusters, seed=args.anatomy_seed)
    g0 = gain_outcomes(X, Y, labels=labels, n_clusters=k, seed=args.anatomy_seed)
    gain_opts = dict(n_resamples=args.resamples, seed=args.anatomy_seed)
    if method is None or transformed is None:
        out.update(_json_parts(a0, ""))
        out["closing_gains"] = _gains_json(gains_report(g0, **gain_opts), pairs)
        out["columns"]["ORIG"].update(g0.estimates())
        return out

    Xt, Yt = transformed
    a1 = gap_anatomy(Xt, Yt, report=after, scores=scores, **clusters_from, **opts)
    out["columns"][method.name.upper()] = {**a1.metrics, **crossmodal_recall(a1.report, (1,))}
    g1 = gain_outcomes(Xt, Yt, labels=labels, n_clusters=k, seed=args.anatomy_seed, scores=scores)
    out["closing_gains"] = _gains_json(gains_report(g0, g1, **gain_opts), pairs)
    out["columns"]["ORIG"].update(g0.estimates())
    out["columns"][method.name.upper()].update(g1.estimates())
    out.update(_json_parts(a1, ""))
    out.update(_json_parts(a0, "_orig"))
    out["gap_removed"] = gap_removed(a0.split, a1.split)
    out["closing_costs"] = closing_costs(X, Y, Xt, Yt, method=fits, fold_of=fold_of,
                                         labels=labels, before=orig, after=after)
    if args.resamples > 0:
        comp = paired_comparison(a0.outcomes(X, Y), a1.outcomes(Xt, Yt), n_resamples=args.resamples,
                                 seed=args.anatomy_seed, measures=[m for m in COMPARED])
        out["comparison"] = {"a": "ORIG", "b": method.name.upper(),
                             "method": f"paired bootstrap over pairs, B = {args.resamples}, "
                                       "two-sided, alpha = 0.05, no multiple-testing correction",
                             "measures": comp}
    return out


def _gains_json(report: dict[str, Any], pairs: Any) -> dict[str, Any]:
    """:func:`gapviz.closing_gains.gains_report` with where the labels came from."""
    source = label_source(pairs)
    report["labels_from"] = source or "none: only modality purity and the requested-modality rate"
    report["k_rule"] = ("the number of label classes" if source else
                        "chosen by silhouette on the raw pairs (or --clusters)")
    return report


def _json_parts(a: GapAnatomy, suffix: str) -> dict[str, Any]:
    j = a.to_json()
    parts = {f"anatomy{suffix}": j["anatomy"]}
    if "ci" in j:
        parts[f"ci{suffix}"] = j["ci"]
        parts[f"ci_method{suffix}"] = j["ci_method"]
    parts[f"anatomy_seconds{suffix}"] = j["seconds"]
    return parts


def render_anatomy(extra: dict[str, Any], fmt: str, metrics: dict[str, float] | None = None) -> str:
    """The main anatomy numbers for the text table (``fmt="table"``) or markdown ("" otherwise).

    ``metrics``: the reported run's measures, printed beside their intervals.
    """
    if "anatomy" not in extra or fmt not in ("table", "markdown"):
        return ""
    md = fmt == "markdown"
    lines = ["", "### Gap anatomy" if md else "gap anatomy" + (f" ({extra['comparison']['b']})"
                                                               if "comparison" in extra else "")]
    if md:
        lines.append("")
    bullet = "- " if md else "  "
    ci = extra.get("ci", {})
    if ci:
        cm = extra["ci_method"]
        lines.append(f"{bullet}{cm['level']:.0%} intervals: {cm['method']}, B = {cm['n_resamples']}")
    for key in SHOWN:
        if key in ci:
            lo, hi = ci[key]
            value = (metrics or {}).get(key)
            estimate = "" if value is None else f"{_fmt(value)} "
            note = (" (estimate outside: resampling biases this measure)"
                    if key in cm.get("estimate_outside", ()) else "")
            lines.append(f"{bullet}{key}: {estimate}[{_fmt(lo)}, {_fmt(hi)}]{note}")
    anat = extra["anatomy"]
    values = metrics or {}
    if "NDCG@10_mixbench" in values and "ndcg_mixbench" in anat:
        mb = anat["ndcg_mixbench"]
        lines.append(f"{bullet}NDCG@10: {_fmt(values.get('NDCG@10'))} (MixBench's formula on the "
                     f"paper's pool), {_fmt(values['NDCG@10_mixbench'])} under MixBench's protocol "
                     f"({mb['queries']} caption queries, {mb['documents']} documents "
                     + ", ".join(f"{c} {r}" for r, c in mb["renderings"].items())
                     + f", seed {mb['seed']})")
    if "robinhood" in values:
        hub = anat.get("hubness", {})
        lines.append(f"{bullet}hubness (k = {hub.get('k', 10)}, scikit-hubness's indices): skewness "
                     f"{_fmt(values.get('hubness'))}, Robin Hood {_fmt(values['robinhood'])}, "
                     f"anti-hubs {_pct(values.get('antihub_occurrence'))}, hub occurrence "
                     f"{_pct(values.get('hub_occurrence'))}")
    split = anat["centroid_vs_distribution"]
    lines.append(f"{bullet}Fréchet {_fmt(split['frechet'])} on the L2-normalised rows = centroid "
                 f"{_fmt(split['centroid'])} ({_pct(split['centroid_share'])}) + distribution "
                 f"{_fmt(split['distribution'])}")
    raw_frechet = (extra.get("metrics_orig") or values).get("frechet_raw")
    if raw_frechet is not None:
        lines.append(f"{bullet}Fréchet on the file's raw rows (not normalised): {_fmt(raw_frechet)}")
    top = ", ".join(f"{d['index']} ({_pct(d['share'])})" for d in anat["dimensions"][:5])
    lines.append(f"{bullet}top gap dimensions (share of the squared centroid gap): {top}")
    abl = anat["ablation"]
    if len(abl) > 1:
        first, last = abl[0], abl[-1]
        lines.append(f"{bullet}removing the top {last['removed']} gap dimensions: cross-modal R@1 "
                     f"{_fmt(first['R@1_i2t_crossmodal'])} -> {_fmt(last['R@1_i2t_crossmodal'])}, "
                     f"RMG {_fmt(first['RMG'])} -> {_fmt(last['RMG'])}")
    rows = [c for c in anat["clusters"] if "RMG" in c]
    if rows:
        rows.sort(key=lambda c: c["RMG"], reverse=True)
        worst = ", ".join(f"{c['name']} {_fmt(c['RMG'])} (n={c['n']})" for c in rows[:3])
        lines.append(f"{bullet}clusters ({anat['cluster_source']}, {len(anat['clusters'])}) with the "
                     f"largest RMG: {worst}")
    if "closing_costs" in extra:
        cc = extra["closing_costs"]
        name = extra.get("comparison", {}).get("b", "method")
        r = cc["retrieval"]
        lines.append(f"{bullet}what closing costs (ORIG -> {name}): " + ", ".join(
            f"{k.replace('_crossmodal', '')} {_fmt(v['before'])} -> {_fmt(v['after'])}" for k, v in r.items()))
        nb = cc["neighbourhood"]
        lines.append(f"{bullet}{nb['k']} nearest same-modality neighbours kept: images "
                     f"{_pct(nb['image'])}, texts {_pct(nb['text'])}")
        if "zero_shot" in cc and cc["zero_shot"]["after"] is not None:
            z = cc["zero_shot"]
            lines.append(f"{bullet}zero-shot accuracy {_fmt(z['before'])} -> {_fmt(z['after'])} "
                         f"({z['n_classes']} classes; class = {z['prototype']})")
        g = extra["gap_removed"]
        lines.append(f"{bullet}gap removed: centroid part {_pct(g['centroid']['fraction_removed'])}, "
                     f"distribution part {_pct(g['distribution']['fraction_removed'])}")
    if "closing_gains" in extra:
        lines.extend(_gain_lines(extra["closing_gains"], extra.get("comparison", {}).get("b"),
                                 bullet))
    if "comparison" in extra:
        c = extra["comparison"]
        lines.append(f"{bullet}ORIG vs {c['b']} ({c['method']}):")
        for key, r in c["measures"].items():
            mark = {"beyond noise": "significant", "within noise": "within noise",
                    "not tested": "not tested: a ratio infinite on one side"}[noise_verdict(r)]
            scale = ", log scale" if r.get("scale") == "log" else ""
            p = "n/a" if math.isnan(r["p_value"]) else f"{r['p_value']:.3g}"
            lines.append(f"{bullet}  {key}: {_fmt(r['a'])} -> {_fmt(r['b'])}, p = {p}"
                         f"{scale} ({mark})")
    return "\n".join(lines) + "\n"


def _gain_lines(gains: dict[str, Any], name: str | None, bullet: str) -> list[str]:
    """What closing buys, one line per measure: raw [interval] -> after [interval], change."""
    from ..measure_info import info

    head = (f"what closing buys (ORIG -> {name}" if name else "what closing buys (ORIG")
    lines = [f"{bullet}{head}; k-means k = {gains['n_clusters']} on the mixed pool, labels: "
             f"{gains.get('labels_from', 'none')}"
             + (f"; {gains['ci_method']['level']:.0%} intervals" if "ci_method" in gains else "")
             + "):"]

    def ci(row: dict[str, Any], key: str) -> str:
        return f" [{_fmt(row[key][0])}, {_fmt(row[key][1])}]" if key in row else ""

    outside = []
    for key, row in gains["measures"].items():
        text = f"{bullet}  {info(key).label}: {_fmt(row['before'])}{ci(row, 'ci_before')}"
        if "after" in row:
            text += (f" -> {_fmt(row['after'])}{ci(row, 'ci_after')}, change "
                     f"{row['change']:+.4g}{ci(row, 'ci_change')}")
        lines.append(text)
        for side in ("before", "after"):
            lo, hi = row.get(f"ci_{side}", (-math.inf, math.inf))
            if side in row and not lo <= row[side] <= hi and info(key).label not in outside:
                outside.append(info(key).label)
    if outside:
        lines.append(f"{bullet}  (estimate outside its interval: {', '.join(outside)}; V-measure "
                     "and NMI get basic, bias-corrected intervals, and a small value of theirs "
                     "is mostly the plug-in bias of a classes x clusters table)")
    return lines


def _fmt(v: float | None) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float) and (math.isinf(v) or math.isnan(v)):
        return str(v)
    return f"{v:.4g}"


def _pct(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{100 * v:.1f}%"
