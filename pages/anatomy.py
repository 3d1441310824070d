"""Anatomy: where the gap lives, how sure the numbers are, and what closing it costs.

Gap dimensions with the ablation curve, the Fréchet distance split into a mean shift and a
distribution part (raw and after the chosen method), per-cluster gaps (click a cluster to list
its pairs), bootstrap intervals on request, and the trade-off between closing the gap and what
the method keeps. Everything is computed by :mod:`gapviz.anatomy`, :mod:`gapviz.closing_costs`
and :mod:`gapviz.intervals`; this page caches and renders.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import streamlit as st

from gapviz import anatomy_figures as af
from gapviz import dashboard as dash
from gapviz.anatomy import centroid_vs_distribution, gap_anatomy
from gapviz.closing_costs import closing_costs, pair_labels
from gapviz.measure_info import info
from gapviz.methods import describe_run, method_class, suited_params
from gapviz.protocols import fit_size
from gapviz.safety import plain_text
from ui import compute
from ui import export_menu as export_ui
from ui.components import guard, method_label, method_names, metric_cards
from ui.frame import page_header
from ui.scoring import scoring_controls, show_provenance
from ui.state import keep, workspace

#: Dimensions listed in the bar chart, points of the ablation curve.
DIMENSIONS_SHOWN = 30
ABLATION_DIMS = 20
#: Measures shown with intervals.
INTERVAL_KEYS = ("RMG", "NDCG@10", "hubness", "R@5", "paired_cosine_distance")
#: Spectral k values of the trade-off view (slices of one fit).
TRADEOFF_KS = (5, 10, 20, 40, 60, 120, 200)
#: Methods of the trade-off view besides spectral (quick ones; each under its default protocol).
TRADEOFF_METHODS = ("center", "standardize", "sinkhorn", "procrustes")

ws = workspace()
act = page_header("Anatomy of the gap", "where it lives, how sure we are, what closing it costs")
pairs = act.pairs
X, Y = pairs.image_embeddings, pairs.text_embeddings


@st.cache_data(max_entries=8, show_spinner="Dissecting the gap (one pass over the pool)…")
def _anatomy(key: str, _X, _Y, labels: tuple | None):
    """The raw anatomy without intervals (cached by content hash)."""
    return gap_anatomy(_X, _Y, labels=list(labels) if labels else None,
                       ablation_dims=min(ABLATION_DIMS, _X.shape[1] - 1), intervals=False)


@st.cache_data(max_entries=8, show_spinner=False)
def _intervals(key: str, _anat, _X, _Y, n_resamples: int, seed: int):
    from gapviz.intervals import bootstrap_ci
    from gapviz.measures import normalize_rows

    return bootstrap_ci(_anat.outcomes(normalize_rows(_X), normalize_rows(_Y)),
                        n_resamples=n_resamples, seed=seed)


@st.cache_data(max_entries=32, show_spinner="Measuring what the method keeps…")
def _costs(key: str, name: str, params_items: tuple, scoring, _X, _Y, _view, _fits, _fold_of,
           labels: tuple | None):
    return closing_costs(_X, _Y, _view.images, _view.texts, method=_fits, fold_of=_fold_of,
                         labels=list(labels) if labels else None, after=_view.report)


@st.cache_data(max_entries=32, show_spinner=False)
def _point(key: str, label: str, params_items: tuple, scoring, _X, _Y, _view, _raw_report,
           rmg_before: float):
    return dash.tradeoff_point(label, _X, _Y, _view.images, _view.texts, _raw_report,
                               _view.report, rmg_before=rmg_before)


def _shade(column: pd.Series) -> list[str]:
    """Background of a cluster table column: darker blue = larger gap (for R@5: lower recall),
    on the column's own range (log scale for ITR, which spans decades)."""
    values = column.astype(float).replace([float("inf")], float("nan"))
    if column.name == "ITR":
        values = np.log10(values.where(values > 0))
    lo, hi = values.min(), values.max()
    out = []
    for v in values:
        if pd.isna(v) or hi <= lo:
            out.append("")
            continue
        t = (v - lo) / (hi - lo)
        t = 1 - t if column.name == "R@5" else t
        light = 96 - 40 * t
        out.append(f"background-color: hsl(217, 91%, {light:.0f}%); "
                   f"color: {'white' if light < 70 else '#0F172A'}")
    return out


labels = pair_labels(pairs)
label_key = tuple(labels) if labels is not None else None
raw = compute.active_raw_view(act)
anat = None
with guard("measure the anatomy"):
    anat = _anatomy(act.key, X, Y, label_key)
if anat is None:
    st.stop()

# --- the method to dissect beside the raw embeddings ------------------------------------------
names = [m for m in method_names() if m != "orig"]
c1, c2, c3 = st.columns([1.3, 1.6, 3], vertical_alignment="bottom")
method = c1.selectbox("Method", names, format_func=method_label,
                      **keep("anatomy_method", ws.method if ws.method in names else names[0]))
scoring = view = prov = result = None
with guard(f"apply {method_label(method)}"):
    scoring, fit_pairs = scoring_controls("anatomy", act, method, c2)
    chosen = ws.method_params if method == ws.method and ws.method_params else None
    params = suited_params(method, fit_size(pairs.n, scoring.protocol), pairs.dim, chosen)
    view, prov = compute.scored_view(act, method, params, scoring, fit_pairs)
    c3.caption(f"{describe_run(method, params)}: {method_class(method).summary}")
if view is None:
    st.stop()
after = None
with guard("measure the anatomy after the method"):
    after = _anatomy(f"{act.key}/{method}/{compute.frozen(params)}/{scoring}", view.images,
                     view.texts, label_key)

# --- cards -------------------------------------------------------------------------------------
st.markdown("**Raw embeddings → after the method**")
cards = dict(raw.report.metrics) | anat.metrics
cards_after = dict(view.report.metrics) | (after.metrics if after else {})
metric_cards(cards_after, cards, keys=("RMG", "NDCG@10", "hubness", "ITR", "R@{k}", "frechet"),
             gap="xsmall")
show_provenance(prov)
st.caption(f"RMG: {info('RMG').help}. Its L2M and L2I are the centroid gap "
           f"({raw.report.metrics.get('centroid_gap', float('nan')):.3f} raw) and the paired L2 "
           f"distance ({raw.report.metrics.get('paired_l2', float('nan')):.3f} raw).")

tab_dims, tab_split, tab_clusters, tab_costs = st.tabs(
    ["Gap dimensions", "Mean shift vs distribution", "Clusters", "What closing costs"],
    key="anatomy_tabs")

with tab_dims, guard("draw the gap dimensions"):
    fig_dims = af.dimension_figure(anat.dimensions.to_list(DIMENSIONS_SHOWN), anat.ablation.to_list())
    st.plotly_chart(fig_dims, key="anatomy_dims",
                    config=export_ui.chart_config("gap-dimensions"))
    top = anat.dimensions.to_list(5)
    st.caption(f"The {len(top)} largest gap dimensions carry "
               f"{sum(d['share'] for d in top):.0%} of ||mean(images) − mean(texts)||². Right: "
               "cross-modal R@1 and RMG after removing the top-m dimensions and renormalising "
               "(Schrodi et al., ICLR 2025).")

with tab_split, guard("split the gap"):
    splits = {"Raw": anat.split, describe_run(method, params):
              after.split if after else centroid_vs_distribution(view.images, view.texts)}
    fig_split = af.split_figure(splits)
    left, right = st.columns([3, 2])
    left.plotly_chart(fig_split, key="anatomy_split",
                      config=export_ui.chart_config("gap-split"))
    removed = {k: v for k, v in zip(("centroid", "distribution"),
                                    (1 - splits[list(splits)[1]][p] / anat.split[p]
                                     if anat.split[p] > 0 else float("nan")
                                     for p in ("centroid", "distribution")))}
    right.markdown(f"**{method_label(method)} removes** {removed['centroid']:.0%} of the mean "
                   f"shift and {removed['distribution']:.0%} of the distribution part.")
    right.caption("Fréchet distance = ||μ_x − μ_y||² (the mean shift a centering removes) + "
                  "the Fréchet distance once each modality's mean is removed (shape and "
                  "spread; Dowson & Landau 1982). Recent work finds the distribution part, not "
                  "the raw gap, predicts cross-modal quality.")
    with right.container(border=True):
        st.markdown("**How sure are these numbers?**")
        if st.button("Compute 95% intervals", key="anatomy_ci_go", icon=":material/functions:",
                     help="Percentile bootstrap over pairs, 200 seeded resamples (mixed-pool "
                          "measures: queries resampled, the pool kept)."):
            st.session_state["anatomy_ci_for"] = act.key
    if st.session_state.get("anatomy_ci_for") == act.key:
        started = time.perf_counter()
        ci = _intervals(act.key, anat, X, Y, 200, 0)
        st.plotly_chart(af.interval_figure(ci.estimate, ci.ci, INTERVAL_KEYS,
                                           labels={k: info(k).label for k in INTERVAL_KEYS}),
                        key="anatomy_ci", config=export_ui.chart_config("gap-intervals"))
        st.caption(f"Raw embeddings, 95% percentile-bootstrap intervals over {pairs.n:,} pairs, "
                   f"200 resamples, seed 0; computed in {ci.seconds:.2f} s "
                   f"(shown in {time.perf_counter() - started:.2f} s).")

with tab_clusters, guard("measure the clusters"):
    clusters = anat.clusters
    if clusters is None:
        st.info("Too few pairs to choose clusters automatically; load at least a few hundred "
                "pairs, or a file with a `labels` column.", icon=":material/info:")
    else:
        table = pd.DataFrame(clusters.rows)
        shown = ["name", "n", "ITR", "R@5", "paired_cosine_distance", "RMG"]
        table = table[[c for c in shown if c in table.columns]].set_index("name")
        st.caption(f"Clusters from {'the pairs’ labels' if clusters.source == 'labels' else f'k-means (k = {clusters.k}) on the joint embedding'}; "
                   "each measured in its own mixed pool. Darker = larger gap. Click a row to list "
                   "its pairs.")
        gap_cols = [c for c in ("ITR", "paired_cosine_distance", "RMG", "R@5")
                    if c in table.columns]
        styled = table.style.format(precision=3).apply(_shade, subset=gap_cols)
        event = st.dataframe(styled, key="anatomy_clusters", on_select="rerun",
                             selection_mode="single-row", width="stretch")
        chosen_rows = event.selection.rows if event is not None else []
        if chosen_rows:
            cluster = int(chosen_rows[0])
            members = clusters.members(cluster)
            st.markdown(f"**{plain_text(clusters.names[cluster])}**: {len(members):,} pairs")
            st.dataframe(pd.DataFrame({
                "pair": [pairs.ids[i] for i in members[:200]],
                "caption": [pairs.captions[i] if pairs.captions else "" for i in members[:200]],
                "pair distance": dash.paired_distances(X[members[:200]], Y[members[:200]]),
            }), hide_index=True, height=300, key="anatomy_cluster_pairs")

with tab_costs, guard("measure what closing costs"):
    if prov.protocol != "transductive" or method_class(method).uses_pairing:
        result = compute.protocol_result(act, method, params, scoring, fit_pairs)
        fits, fold_of = result.fits, result.fold_of
    else:  # the shared transductive fit
        fit_params, _ = dash.split_params(method, params, pairs.n, pairs.dim)
        fits, fold_of = compute.fitted_method(act, method, fit_params), None
    costs = _costs(act.key, method, compute.frozen(params), scoring, X, Y, view, fits, fold_of,
                   label_key)
    rows = [{"kept": key.replace("_crossmodal", "").replace("_i2t", " image→text")
             .replace("_t2i", " text→image"), "before": v["before"], "after": v["after"],
             "change": v["change"]} for key, v in costs["retrieval"].items()]
    rows += [{"kept": f"{m} neighbourhoods (10-NN kept)", "before": 1.0, "after": v,
              "change": v - 1.0} for m, v in costs["neighbourhood"].items() if m != "k"]
    if "zero_shot" in costs and costs["zero_shot"]["after"] is not None:
        z = costs["zero_shot"]
        rows.append({"kept": f"zero-shot accuracy ({z['n_classes']} classes, {z['prototype']})",
                     "before": z["before"], "after": z["after"], "change": z["change"]})
    left, right = st.columns([2, 3])
    left.dataframe(pd.DataFrame(rows).set_index("kept").style.format("{:.3f}"),
                   key="anatomy_costs")
    left.caption("Classic retrieval (images against texts only, and the reverse), each "
                 "modality's own neighbourhoods, and zero-shot classification when the pairs "
                 "have class labels (the demo's cluster names play them): a method may close "
                 "the gap and lose these.")
    if right.toggle("Trade-off across methods", key="anatomy_tradeoff",
                    help="Spectral at several k (slices of one fit), and the quick baselines "
                         "under their default protocols; up to half a minute the first time, "
                         "cached afterwards."):
        points = []
        for k in TRADEOFF_KS:
            if k <= method_class("spectral").slider_range("n_components", pairs.n, pairs.dim)[1]:
                p = {"n_components": k}
                v, _ = compute.scored_view(act, "spectral", p, compute.Scoring("transductive"))
                points.append(_point(act.key, f"spectral k={k}", compute.frozen(p), None, X, Y, v,
                                     raw.report, anat.metrics["RMG"]))
        for name in TRADEOFF_METHODS:
            sc = compute.Scoring(method_class(name).default_protocol)
            p = suited_params(name, fit_size(pairs.n, sc.protocol), pairs.dim)
            v, _ = compute.scored_view(act, name, p, sc)
            points.append(_point(act.key, method_label(name), compute.frozen(p), sc, X, Y, v,
                                 raw.report, anat.metrics["RMG"]))
        fig_trade = af.tradeoff_figure(points, x_label="gap closed (1 − RMG after / before)")
        right.plotly_chart(fig_trade, key="anatomy_tradeoff_fig",
                           config=export_ui.chart_config("gap-tradeoff"))
        right.caption("Top right is best: the gap closed and nothing lost. Each point's "
                      "protocol is its method's default (spectral and the baselines "
                      "transductive; Sinkhorn and Procrustes held-out).")

export_ui.export_menu(export_ui.ExportItems(
    columns={"ORIG": cards, f"{method.upper()} ({prov.protocol})": cards_after},
    keys=["RMG", "NDCG@10", "hubness", "ITR", "TIR", "R@5", "frechet", "centroid_gap"],
    figures=[("Gap dimensions and ablation", fig_dims), ("Mean shift vs distribution", fig_split)]),
    prefix="anatomy", stem=f"anatomy-{act.model}")
