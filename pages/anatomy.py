"""Anatomy: where the gap lives, how sure the numbers are, what closing it costs and buys.

The new measures raw and after the chosen method (under its protocol), bootstrap intervals of
both with their paired comparison on request, gap dimensions with the ablation curve, the
Fréchet distance split into a mean shift and a distribution part (and on the file's raw rows),
per-cluster gaps raw and after (click a cluster to list its pairs), hubness indices and NDCG
under MixBench's protocol beside the paper's pool, what closing costs, with the trade-off
across methods computed once per dataset, and what it buys (grouping of the mixed pool,
cross-modal transfer, the requested-modality rate) raw and after with intervals. Everything is
computed by :mod:`gapviz.anatomy`, :mod:`gapviz.closing_costs`, :mod:`gapviz.closing_gains`
and :mod:`gapviz.intervals`; this page caches and renders.
"""

from __future__ import annotations

import ui  # noqa: F401  (first: it sets up the process before numpy loads)

import math
import time

import pandas as pd
import streamlit as st

from gapviz.anatomy import centroid_vs_distribution, gap_anatomy
from gapviz.closing_costs import closing_costs, label_source, pair_labels
from gapviz.closing_gains import gain_outcomes, gains_report, pool_k
from gapviz.figures import anatomy as af
from gapviz.figures import palette
from gapviz.intervals import noise_verdict
from gapviz.measure_info import format_change, format_change_interval, format_metric, info
from gapviz.methods import describe_run, method_class
from gapviz.protocols import DEFAULT_FOLDS, DEFAULT_SEED
from gapviz.runs import planned_spec, tradeoff_specs
from gapviz.views import paired_distances
from gapviz.safety import plain_text
from ui import compute, links
from ui import export_menu as export_ui
from ui.components import guard, method_label, method_names, metric_cards
from ui.frame import page_header
from ui.scoring import scoring_controls, show_provenance
from ui.state import keep, workspace

#: Dimensions listed in the bar chart, points of the ablation curve.
DIMENSIONS_SHOWN = 30
ABLATION_DIMS = 20
#: Measures shown with intervals, and those compared raw vs after (ITR on a log scale).
INTERVAL_KEYS = ("RMG", "NDCG@10", "hubness", "R@5", "paired_cosine_distance")
COMPARED_KEYS = ("RMG", "NDCG@10", "hubness", "ITR", "R@5", "paired_cosine_distance",
                 "R@1_i2t_crossmodal")
#: The "more than resampling noise" column's answer to each verdict of a paired comparison
#: (:func:`gapviz.intervals.noise_verdict`).
NOISE_ANSWER = {"beyond noise": "yes", "within noise": "no",
                "not tested": "not tested (a ratio infinite on one side)"}
#: Bootstrap resamples and seed of the intervals.
CI_RESAMPLES = 200
CI_SEED = 0
#: Seconds between looks at a background sweep while it runs.
SWEEP_POLL_SECONDS = 1.0
#: Measures of the cluster table (raw and after).
CLUSTER_KEYS = ("ITR", "R@5", "paired_cosine_distance", "RMG")
#: Measures of the hubness and mixed-search table (raw and after).
SEARCH_KEYS = ("NDCG@10", "NDCG@10_mixbench", "hubness", "robinhood", "antihub_occurrence",
               "hub_occurrence")

ws = workspace()
act = page_header("Anatomy of the gap", "where it lives, how sure we are, what closing it costs",
                  link="anatomy")
pairs = act.pairs
X, Y = pairs.image_embeddings, pairs.text_embeddings


@st.cache_data(max_entries=8, show_spinner="Dissecting the gap (one pass over the pool)…")
def _anatomy(key: str, _X, _Y, labels: tuple | None, _like=None, raw_rows: bool = False,
             _scores=None):
    """The anatomy without intervals (cached by ``key``: content hash, and for the output of a
    method its name, parameters and scoring). ``_like``: measure the raw anatomy's clusters
    (the same pairs after a method), not clusters of its own. ``raw_rows``: ``_X``, ``_Y`` are
    the file's rows as loaded, so the Fréchet distance on them is measured too. ``_scores``:
    a score correction's terms (the run's), on which the ranking measures are taken."""
    return gap_anatomy(_X, _Y, labels=list(labels) if labels and _like is None else None,
                       cluster_like=_like, raw=(_X, _Y) if raw_rows else None,
                       ablation_dims=min(ABLATION_DIMS, _X.shape[1] - 1), intervals=False,
                       scores=_scores)


@st.cache_data(max_entries=8, show_spinner="Resampling the scored pairs (raw and after)…")
def _intervals(key: str, _raw, _after, _X, _Y, _Xt, _Yt, n_resamples: int, seed: int):
    """Intervals raw and after the method, from the same resamples, and their comparison
    (cached by ``key``: content hash, method, parameters, scoring)."""
    from gapviz.intervals import before_after_intervals
    from gapviz.measures import normalize_rows

    return before_after_intervals(_raw.outcomes(normalize_rows(_X), normalize_rows(_Y)),
                                  _after.outcomes(normalize_rows(_Xt), normalize_rows(_Yt)),
                                  n_resamples=n_resamples, seed=seed, measures=COMPARED_KEYS)


@st.cache_data(max_entries=32, show_spinner="Measuring what the method keeps…")
def _costs(key: str, _X, _Y, _run, _after, labels: tuple | None):
    """What the run keeps (cached by the run's key); zero-shot after the method through the
    run's read-only fits (held-out: each fold's images against its own fit's prompts)."""
    return closing_costs(_X, _Y, _run.images, _run.texts, method=_run.fits or None,
                         fold_of=_run.fold_of, labels=list(labels) if labels else None,
                         after=_after)


@st.cache_data(max_entries=32, show_spinner="Measuring what closing buys…")
def _gains(key: str, _X, _Y, labels: tuple | None, k: int, _scores=None):
    """What closing buys, per pair, of one embedding of the pairs (cached by ``key``: the data
    hash for the raw embeddings, the run's key after a method; ``k``: the pool's k-means k)."""
    return gain_outcomes(_X, _Y, labels=list(labels) if labels else None, n_clusters=k,
                         seed=CI_SEED, scores=_scores)


@st.cache_data(max_entries=32, show_spinner=False)
def _gains_table(key: str, _before, _after, n_resamples: int, seed: int) -> dict:
    """Raw and after with intervals from the same resamples (cached by the run's key)."""
    return gains_report(_before, _after, n_resamples=n_resamples, seed=seed)


def _tradeoff_specs() -> list:
    """The runs of the trade-off across methods on the active pairs (the page's own method
    never enters them, so changing it never recomputes them)."""
    return tradeoff_specs(pairs.n, pairs.dim, folds=DEFAULT_FOLDS, seed=DEFAULT_SEED)


def _tradeoff() -> list[dict]:
    """The trade-off points of the active pairs: kept by the shared runner after the first
    time, with a progress bar while they are computed (Procrustes and Sinkhorn are each
    cross-fitted 5 times)."""
    return compute.tradeoff(act, _tradeoff_specs(),
                            title=f"Trade-off across methods on {pairs.n:,} pairs")


def _cluster_table(raw_rows: list[dict], after_rows: list[dict] | None, after_name: str
                   ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per-cluster measures raw and after, as (values, display text, cell styles): each
    measure's two columns shaded on one scale, darker = larger gap (an infinite ITR darkest)."""
    values: dict[str, list] = {"cluster": [r["name"] for r in raw_rows],
                               "pairs": [r["n"] for r in raw_rows]}
    text = {k: list(v) for k, v in values.items()}
    styles = {"cluster": values["cluster"], "pairs": [""] * len(raw_rows)}
    for key in CLUSTER_KEYS:
        runs = [("raw", raw_rows)] + ([(after_name, after_rows)] if after_rows else [])
        cols = {f"{info(key).label} · {run}": [r.get(key) for r in rows] for run, rows in runs}
        shades = af.gap_intensity([v for col in cols.values() for v in col], key)
        for c, (name, col) in enumerate(cols.items()):
            values[name] = col
            text[name] = [format_metric(key, v) for v in col]
            styles[name] = [_cell_style(t) for t in shades[c * len(col):(c + 1) * len(col)]]
    return (pd.DataFrame(values).set_index("cluster"), pd.DataFrame(text).set_index("cluster"),
            pd.DataFrame(styles).set_index("cluster"))


def _percent(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else 100 * v


def _cell_style(t: float | None) -> str:
    if t is None:
        return ""
    light = 96 - 40 * t
    return (f"background-color: hsl(217, 91%, {light:.0f}%); "
            f"color: {'white' if light < 70 else palette.TABLE_TEXT}")


def sensitivity_view(run=None, run_name: str = "") -> None:
    """How much of each number is the model and how much the pool: every measure against pool
    size (seeded subsamples, 3 draws each) and against the captions per image, raw and after
    the method (:mod:`gapviz.sensitivity`)."""
    from gapviz.figures.anatomy import sweep_figure
    from gapviz.sensitivity import SWEEP_KEYS, SWEEP_START

    groups = pairs.group_ids
    kinds = ["size"] + (["captions"] if groups is not None else [])
    c1, c2 = st.columns([2, 1], vertical_alignment="bottom")
    kind = c1.radio("Sweep", kinds, horizontal=True, key="anatomy_sweep_kind",
                    format_func={"size": "pool size", "captions": "captions per image"}.get)
    go_on = c2.toggle("Run the sweep", key="anatomy_sweep_on",
                      help="About 2-3 times one measure pass of all pairs: each size below all "
                           "of them is measured on 3 seeded draws.")
    if not go_on:
        st.caption(f"Every measure on seeded subsamples from {SWEEP_START} "
                   f"{'images' if groups is not None else 'pairs'} up to all "
                   f"{pairs.n_images:,}, 3 draws each, with the mutual-kNN alignment (Huh et "
                   "al. 2024)" + ("; and with the first, a random or all captions per image"
                                  if groups is not None else "") + ". Turn it on to run it.")
        return
    embeddings = [("raw", X, Y, None)]
    reports = {"raw": raw.report}
    key = act.key
    if run is not None:
        embeddings.append((run_name, run.images, run.texts, run.scores))
        reports[run_name] = run.report
        key += "/" + run.key
    job = compute.sweeps().job(key, kind, embeddings, groups, draws=3, reports=reports)
    if not job.done():
        @st.fragment(run_every=SWEEP_POLL_SECONDS)
        def _progress() -> None:
            if job.done():
                st.rerun()  # finished: draw the results once, and stop polling
            st.progress(min(max(job.fraction, 0.0), 1.0),
                        text=f"Sweeping in the background: {plain_text(job.message)}")

        _progress()
        return
    result = job.future.result()
    started = time.perf_counter()
    by = "size" if kind == "size" else "captions"
    st.plotly_chart(sweep_figure(result.summary(), SWEEP_KEYS, by=by,
                                 labels={k: info(k).label for k in SWEEP_KEYS},
                                 drifting=result.drifting()),
                    key="anatomy_sweep_fig", config=export_ui.chart_config("pool-sweep"))
    drift = result.drifting()
    st.dataframe(pd.DataFrame([{
        "measure": info(s["measure"]).label, "embeddings": s["label"], by: s[by],
        "mean": format_metric(s["measure"], s["mean"]),
        "range over draws": ("—" if s["draws"] == 1 else
                             f"[{format_metric(s['measure'], s['lo'])}, "
                             f"{format_metric(s['measure'], s['hi'])}]"),
        "draws": s["draws"],
        "drifts with N": "yes" if s["measure"] in drift.get(s["label"], []) else ""}
        for s in result.summary()]), hide_index=True, key="anatomy_sweep_table", width="stretch")
    st.caption(
        ("Pool size: seeded subsamples (" + ("whole images with all their captions"
                                             if groups is not None else "pairs")
         + "), 3 draws per size below all of them, one at all; points are the mean over the "
           "draws, whiskers their range. A measure drifts with N when its value on all pairs "
           "lies outside the range of its draws at the smallest size: the pool, not only the "
           "sampling, moved it." if kind == "size" else
         "Captions: the first caption of each image, one drawn at random (seed 0), or all of "
         "them with any caption counting as the image's match.")
        + (f" After: {plain_text(run_name)} as its run scored all pairs ({run.provenance.summary()}), "
           "subsampled with the same rows." if run is not None else "")
        + f" Mutual kNN: 10 nearest images against 10 nearest texts of each pair. Computed in "
          f"{result.seconds:.1f} s (shown in {time.perf_counter() - started:.1f} s).")


labels = pair_labels(pairs)
label_key = tuple(labels) if labels is not None else None
raw = compute.active_raw_view(act)
if pairs.group_ids is not None:
    st.info(f"These pairs have several captions per image ({pairs.convention}). The anatomy "
            "measures one caption per image; below, how the numbers move with the pool and with "
            "the captions per image.", icon=":material/info:")
    with guard("sweep the pool"):
        sensitivity_view()
    st.stop()
anat = None
with guard("measure the anatomy"):
    anat = _anatomy(act.key, X, Y, label_key, raw_rows=True)
if anat is None:
    st.stop()

# --- the method to dissect beside the raw embeddings ------------------------------------------
names = [m for m in method_names() if m != "orig"]
c1, c2, c3 = st.columns([1.3, 1.6, 3], vertical_alignment="bottom")
method = c1.selectbox("Method", names, format_func=method_label,
                      **keep("anatomy_method", ws.method if ws.method in names else names[0]))
run = view = prov = None
with guard(f"apply {method_label(method)}"):
    options, fit_on = scoring_controls("anatomy", act, method, c2)
    chosen = ws.method_params if method == ws.method and ws.method_params else None
    spec, _ = planned_spec(method, chosen, pairs.n, pairs.dim, lower_chosen=True,
                           **options)
    run = compute.run(act, spec, fit_on)
    view, prov, params = compute.view(run), run.provenance, spec.param_dict
    links.write(links.recipe_for("anatomy", act, spec))
    c3.caption(f"{describe_run(method, params)}: {method_class(method).summary}")
if view is None:
    st.stop()
#: One run of the page: the pairs, the method, its parameters and how it is scored.
run_key = run.key
run_name = describe_run(method, params)
after = None
with guard("measure the anatomy after the method"):
    after = _anatomy(run_key, run.images, run.texts, label_key, anat.clusters,
                     _scores=run.scores)

# --- cards -------------------------------------------------------------------------------------
st.markdown(f"**Raw embeddings → after {plain_text(run_name)}**")
cards = dict(raw.report.metrics) | anat.metrics
cards_after = dict(view.report.metrics) | (after.metrics if after else {})
metric_cards(cards_after, cards, keys=("RMG", "NDCG@10", "hubness", "ITR", "R@{k}", "frechet"),
             gap="xsmall")
show_provenance(prov)
st.caption(f"Each card: after the method, and the change from the raw embeddings "
           f"({pairs.n:,} pairs, no method). RMG: {info('RMG').help}. Its L2M and L2I are the "
           f"centroid gap ({raw.report.metrics.get('centroid_gap', float('nan')):.3f} raw) and "
           f"the paired L2 distance ({raw.report.metrics.get('paired_l2', float('nan')):.3f} raw).")


# --- how sure: intervals raw and after, on request -------------------------------------------
def _show_intervals() -> None:
    if after is None:
        return
    started = time.perf_counter()
    both = _intervals(run_key, anat, after, X, Y, run.images, run.texts, CI_RESAMPLES, CI_SEED)
    runs = {"Raw": (both.before.estimate, both.before.ci),
            run_name: (both.after.estimate, both.after.ci)}
    st.plotly_chart(af.interval_figure(runs, INTERVAL_KEYS,
                                       labels={k: info(k).label for k in INTERVAL_KEYS}),
                    key="anatomy_ci", config=export_ui.chart_config("gap-intervals"))
    rows = []
    for key, c in both.comparison.items():
        log = c["scale"] == "log"
        lo, hi = c["ci"]
        diff = c["difference"]
        rows.append({
            "measure": info(key).label,
            "raw": format_metric(key, c["b"]),
            "after": format_metric(key, c["a"]),
            "after − raw": ("undefined" if not math.isfinite(diff) else
                            f"log ratio {diff:+.3f}" if log else format_change(key, diff)),
            "95% interval of the change": (
                ("—" if not (math.isfinite(lo) and math.isfinite(hi)) else
                 f"[{lo:+.3f}, {hi:+.3f}]") if log else format_change_interval(key, lo, hi)),
            "p-value": "—" if math.isnan(c["p_value"]) else f"{c['p_value']:.3f}",
            "more than resampling noise": NOISE_ANSWER[noise_verdict(c)],
        })
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="anatomy_ci_compare", width="stretch",
                 column_config={"measure": st.column_config.TextColumn(width="medium")})
    outside = sorted(set(both.before.outside) & set(INTERVAL_KEYS)) + \
        [f"{k} (after)" for k in sorted(set(both.after.outside) & set(INTERVAL_KEYS))]
    st.caption(
        f"95% percentile-bootstrap intervals over the {prov.n_scored:,} scored pairs, "
        f"{CI_RESAMPLES} resamples (seed {CI_SEED}), the same resamples for raw and after: "
        f"raw = the embeddings as loaded, no method; after = {plain_text(run_name)}, "
        f"{prov.summary()}. The method's fit is held fixed (not refitted per resample), so "
        "fit-to-fit variability is left out; mixed-pool measures (NDCG, R@5, ITR, hubness) "
        "resample the queries, the pool kept whole. Paired comparison: the change after − raw "
        f"on each resample, two-sided p-value of no change (Hall & Wilson 1991; the smallest "
        f"{CI_RESAMPLES} resamples can give is {1 / (CI_RESAMPLES + 1):.3f}), no correction "
        "for testing several measures; ITR as log(after / raw). "
        + (f"Estimate outside its own interval (resampling pushes it one way): "
           f"{', '.join(outside)}. " if outside else "")
        + f"Computed in {both.seconds:.2f} s (shown in {time.perf_counter() - started:.2f} s).")


ci_asked = st.session_state.setdefault("anatomy_ci_runs", set())
with st.container(border=True):
    a, b = st.columns([4, 1.3], vertical_alignment="center")
    a.markdown("**How sure are these numbers?** Bootstrap intervals of the raw and the after "
               "values, and whether each change is more than resampling noise (a few seconds).")
    if b.button("Compute 95% intervals", key="anatomy_ci_go", icon=":material/functions:",
                disabled=run_key in ci_asked or after is None,
                help=f"Percentile bootstrap over the {pairs.n:,} scored pairs, {CI_RESAMPLES} "
                     "seeded resamples, raw and after the method on the same resamples."):
        ci_asked.add(run_key)
    if run_key in ci_asked:
        with guard("compute the intervals"):
            _show_intervals()

tab_dims, tab_split, tab_clusters, tab_costs, tab_gains, tab_search, tab_pool = st.tabs(
    ["Gap dimensions", "Mean shift vs distribution", "Clusters", "What closing costs",
     "What closing buys", "Hubness and mixed search", "Pool size"], key="anatomy_tabs")

with tab_pool, guard("sweep the pool"):
    sensitivity_view(run, run_name)

with tab_dims, guard("draw the gap dimensions"):
    fig_dims = af.dimension_figure(anat.dimensions.to_list(DIMENSIONS_SHOWN), anat.ablation.to_list(),
                                   n_dimensions=pairs.dim)
    st.plotly_chart(fig_dims, key="anatomy_dims",
                    config=export_ui.chart_config("gap-dimensions"))
    top = anat.dimensions.to_list(5)
    shown = anat.dimensions.to_list(DIMENSIONS_SHOWN)
    st.caption(f"Raw embeddings ({pairs.n:,} pairs, no method). Left: the {len(shown)} of "
               f"{pairs.dim:,} dimensions with the largest |mean(images) − mean(texts)|; the "
               f"{len(top)} largest carry {sum(d['share'] for d in top):.0%} of "
               f"||mean(images) − mean(texts)||², the {len(shown)} shown "
               f"{sum(d['share'] for d in shown):.0%}. Right: cross-modal R@1 and RMG after "
               "removing the top-m dimensions and renormalising (Schrodi et al., ICLR 2025).")

with tab_split, guard("split the gap"):
    splits = {"Raw": anat.split, run_name:
              after.split if after else centroid_vs_distribution(run.images, run.texts)}
    fig_split = af.split_figure(splits)
    left, right = st.columns([3, 2])
    left.plotly_chart(fig_split, key="anatomy_split",
                      config=export_ui.chart_config("gap-split"))
    removed = {p: (1 - splits[run_name][p] / anat.split[p] if anat.split[p] > 0
                   else float("nan")) for p in ("centroid", "distribution")}
    right.markdown(f"**{method_label(method)} removes** {removed['centroid']:.0%} of the mean "
                   f"shift and {removed['distribution']:.0%} of the distribution part.")
    raw_frechet = anat.metrics.get("frechet_raw")
    right.caption("Fréchet distance = ||μ_x − μ_y||² (the mean shift a centering removes) + "
                  "the Fréchet distance once each modality's mean is removed (shape and "
                  "spread; Dowson & Landau 1982), on the L2-normalised rows. Recent work finds "
                  "the distribution part, not the raw gap, predicts cross-modal quality. "
                  + (f"On the file's raw rows (not normalised, the scale of the paper's Table 4) "
                     f"the Fréchet distance is {format_metric('frechet_raw', raw_frechet)}. "
                     if raw_frechet is not None else
                     "The rows as loaded are unit-norm, so their raw Fréchet distance is this "
                     "one. ")
                  + f"After: {prov.summary()}.")

with tab_clusters, guard("measure the clusters"):
    clusters = anat.clusters
    if clusters is None:
        st.info("Too few pairs to choose clusters automatically; load at least a few hundred "
                "pairs, or a file with a `labels` column.", icon=":material/info:")
    else:
        after_rows = after.clusters.rows if after is not None and after.clusters else None
        values, text, styles = _cluster_table(clusters.rows, after_rows, method_label(method))
        source = ("the pairs’ labels" if clusters.source == "labels" else
                  f"k-means (k = {clusters.k}) on the raw joint embedding")
        st.caption(f"Clusters from {source}; each measured in its own mixed pool of its pairs: "
                   f"raw embeddings, and after {plain_text(run_name)} ({prov.summary()}; "
                   "the method fitted once on all pairs under its protocol, each cluster's "
                   "pairs then measured). Darker = larger gap, each measure's raw and after "
                   "columns on one scale (∞ darkest; for R@5, lower recall). Click a row to "
                   "list its pairs.")
        styled = text.style.apply(lambda _: styles, axis=None)
        event = st.dataframe(styled, key="anatomy_clusters", on_select="rerun",
                             selection_mode="single-row", width="stretch")
        chosen_rows = event.selection.rows if event is not None else []
        if chosen_rows:
            cluster = int(chosen_rows[0])
            members = clusters.members(cluster)
            st.markdown(f"**{plain_text(clusters.names[cluster])}**: {len(members):,} pairs "
                        "(pair distance: cosine distance of the raw embeddings)")
            st.dataframe(pd.DataFrame({
                "pair": [pairs.ids[i] for i in members[:200]],
                "caption": [pairs.captions[i] if pairs.captions else "" for i in members[:200]],
                "pair distance": paired_distances(X[members[:200]], Y[members[:200]]),
            }), hide_index=True, height=300, key="anatomy_cluster_pairs")


@st.fragment
def _tradeoff_panel() -> None:
    """The trade-off across methods, a fragment: the toggle reruns only this panel."""
    if not st.toggle("Trade-off across methods", key="anatomy_tradeoff",
                     help="Spectral at several k (slices of one fit), and the quick baselines "
                          "under their default protocols; computed once per dataset (up to half "
                          "a minute), stored afterwards, whatever the page's method."):
        return
    with guard("measure the trade-off"):
        points = _tradeoff()
        fig = af.tradeoff_figure(points, x_label="gap closed (1 − RMG after / before)")
        st.plotly_chart(fig, key="anatomy_tradeoff_fig",
                        config=export_ui.chart_config("gap-tradeoff"))
        st.caption("Top right is best: the gap closed and nothing lost. Each point is one run "
                   f"on these {pairs.n:,} pairs under its method's default protocol "
                   "(spectral and the baselines transductive; Sinkhorn and Procrustes "
                   f"held-out, {DEFAULT_FOLDS}-fold cross-fit, seed {DEFAULT_SEED}), whatever "
                   "the method chosen above; the table below says how each was obtained.")
        st.dataframe(pd.DataFrame([{
            "run": p["params"], "gap closed": _percent(p["gap_closed"]),
            "R@1 after / before": _percent(p["r1_kept"]),
            "neighbourhoods kept": _percent(p.get("neighbours_kept")), "RMG after": p["rmg_after"],
            "pairs fitted": p["n_fit"], "pairs scored": p["n_scored"],
            "protocol": (f"held-out, {DEFAULT_FOLDS}-fold cross-fit (seed {DEFAULT_SEED})"
                         if p["protocol"] == "held-out" else p["protocol"])}
            for p in points]),
            hide_index=True, key="anatomy_tradeoff_runs", width="stretch",
            column_config={"run": st.column_config.TextColumn(width="medium"),
                           "protocol": st.column_config.TextColumn(width="medium"),
                           "RMG after": st.column_config.NumberColumn(format="%.3f"),
                           **{c: st.column_config.NumberColumn(format="%.0f%%") for c in
                              ("gap closed", "R@1 after / before", "neighbourhoods kept")},
                           **{c: st.column_config.NumberColumn(format="localized") for c in
                              ("pairs fitted", "pairs scored")}})


with tab_costs, guard("measure what closing costs"):
    costs = _costs(run.key, X, Y, run, view.report, label_key)
    rows = [{"kept": key.replace("_crossmodal", "").replace("_i2t", " image→text")
             .replace("_t2i", " text→image"), "before": v["before"], "after": v["after"],
             "change": v["change"]} for key, v in costs["retrieval"].items()]
    rows += [{"kept": f"{m} neighbourhoods (10-NN kept)", "before": 1.0, "after": v,
              "change": v - 1.0} for m, v in costs["neighbourhood"].items() if m != "k"]
    zero_shot = costs.get("zero_shot")
    if zero_shot and zero_shot["after"] is not None:
        rows.append({"kept": f"zero-shot accuracy ({zero_shot['n_classes']} classes)",
                     "before": zero_shot["before"], "after": zero_shot["after"],
                     "change": zero_shot["change"]})
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="anatomy_costs", width="stretch",
                 column_config={"kept": st.column_config.TextColumn(width="large"),
                                **{c: st.column_config.NumberColumn(format="%.3f")
                                   for c in ("before", "after", "change")}})
    st.caption(
        f"Before: the raw embeddings ({pairs.n:,} pairs). After: {plain_text(run_name)}, "
        f"{prov.summary()}. Classic retrieval (images against texts only, and the reverse), "
        "each modality's own neighbourhoods, and zero-shot classification when the pairs have "
        "class labels (the demo's cluster names play them)"
        + (f"; class prototype: {zero_shot['prototype']}" if zero_shot else "")
        + (", each held-out pair's images classified by the fit that transformed them"
           if run.fold_of is not None else "")
        + ": a method may close the gap and lose these.")
    _tradeoff_panel()

def _interval(key: str, row: dict, side: str) -> str:
    lo, hi = row.get(side, (math.nan, math.nan))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "—"
    if side == "ci_change":
        return format_change_interval(key, lo, hi)
    return f"[{format_metric(key, lo)}, {format_metric(key, hi)}]"


with tab_gains, guard("measure what closing buys"):
    started = time.perf_counter()
    # one k for raw and every method: the classes, else the per-cluster gap's k-means k
    pool_clusters_k = (len(set(labels)) if labels is not None else
                       anat.clusters.k if anat.clusters is not None else pool_k(X, Y))
    gains_raw = _gains(act.key, X, Y, label_key, pool_clusters_k)
    gains_after = _gains(run.key, run.images, run.texts, label_key, pool_clusters_k,
                         _scores=run.scores)
    gains = _gains_table(run.key, gains_raw, gains_after, CI_RESAMPLES, CI_SEED)
    st.dataframe(pd.DataFrame([{
        "gain": info(key).label, "raw": format_metric(key, r["before"]),
        "raw 95%": _interval(key, r, "ci_before"),
        "after": format_metric(key, r["after"]), "after 95%": _interval(key, r, "ci_after"),
        "after − raw": format_change(key, r["change"]) if math.isfinite(r["change"]) else "—",
        "change 95%": _interval(key, r, "ci_change"),
        "more than noise": NOISE_ANSWER[noise_verdict(r)] if "p_value" in r else "—",
        "definition": info(key).help} for key, r in gains["measures"].items()]),
        hide_index=True, key="anatomy_gains", width="stretch",
        column_config={"gain": st.column_config.TextColumn(width="medium"),
                       "definition": st.column_config.TextColumn(width="large")})
    source = label_source(pairs)
    st.caption(
        f"Raw: the embeddings as loaded ({pairs.n:,} pairs, no method); after: "
        f"{plain_text(run_name)}, {prov.summary()}. Grouping: seeded k-means (k = "
        f"{gains['n_clusters']}, "
        + ("the number of label classes" if labels is not None else
           "the per-cluster gap's k, chosen by silhouette on the raw pairs")
        + f") on all {2 * pairs.n:,} items of the mixed pool, the same k raw and after; "
        "purity = share of clusters more than 90% one modality. "
        + (f"Labels: {source}; each image and text takes its pair's label. "
           if source else "No labels: the agreement, probe and substitution gains need a "
           "file with a `labels` column. ")
        + f"Requested modality: the share of the other modality in a query's top "
        f"{gains['k_requested']} of the pool, exact ranks, a tie counting against the query. "
        f"95% bootstrap intervals over the scored pairs, {CI_RESAMPLES} resamples (seed "
        f"{CI_SEED}), the same for raw and after: searches resample the queries (pool kept "
        "whole), the probes are held fixed, and the k-means clusters are held fixed (not "
        "rerun per resample, so k-means' own variability is left out); V-measure and NMI get "
        "basic (bias-corrected) intervals, which can lie below a small estimate. "
        + (f"{plain_text(method_label(method))} corrects scores, not embeddings: the searches "
           "(requested modality, substitution) rank on its corrected scores; k-means, purity "
           "and the probes read the embeddings, which it leaves as they are. "
           if run.scores is not None else "")
        + f"Shown in {time.perf_counter() - started:.2f} s.")

with tab_search, guard("measure hubness and mixed search"):
    st.dataframe(pd.DataFrame([{
        "measure": info(key).label, "raw": format_metric(key, anat.metrics.get(key)),
        "after": format_metric(key, after.metrics.get(key) if after else None),
        "what it is": info(key).help} for key in SEARCH_KEYS]),
        hide_index=True, key="anatomy_search", width="stretch",
        column_config={"what it is": st.column_config.TextColumn(width="large")})
    mb = anat.mixbench.describe() if anat.mixbench is not None else None
    st.caption(
        f"Raw: the embeddings as loaded ({pairs.n:,} pairs, no method); after: "
        f"{plain_text(run_name)}, {prov.summary()}. NDCG@10 is MixBench's formula on the "
        f"paper's pool: each image query searches all {2 * pairs.n:,} items and only its paired "
        "text is relevant. NDCG@10 MixBench follows MixBench's protocol (Li et al. 2025, "
        "\"Closing the Modality Gap for Mixed Modality Search\"): caption queries kept out of "
        "the corpus, each document once, relevant in any rendering"
        + (f"; here {mb['queries']:,} caption queries search {mb['documents']:,} documents ("
           + ", ".join(f"{c:,} {r}" for r, c in mb["renderings"].items())
           + f"; mixed = unit vector of {mb['alpha']} text + {1 - mb['alpha']} image), dealt "
           f"by a permutation with seed {mb['seed']}; the queries are the captions of the "
           "documents shown as images (a caption shown as itself would find itself)"
           if mb else "")
        + ". A tie counts against the query in both. Hubness: the 10 nearest neighbours of "
        f"each of the {2 * pairs.n:,} pool items; skewness of how often each item is among "
        "them, and scikit-hubness's Robin Hood index, anti-hub share and hub occurrence "
        "(hubs: in at least 20 lists).")

stored_points = compute.stored_tradeoff(act, _tradeoff_specs())
figures = [("Gap dimensions and ablation", fig_dims), ("Mean shift vs distribution", fig_split)]
if stored_points:
    figures.append(("Trade-off across methods",
                    af.tradeoff_figure(stored_points, x_label="gap closed (1 − RMG after / before)")))
measures, runs = export_ui.raw_and_method(cards, pairs.n, method, cards_after, prov, params)
export_ui.export_menu(export_ui.ExportItems(
    columns=measures, runs=runs,
    keys=["RMG", "NDCG@10", "NDCG@10_mixbench", "hubness", "robinhood", "antihub_occurrence",
          "hub_occurrence", "ITR", "TIR", "R@5", "frechet", "centroid_gap"]
    + (["frechet_raw"] if "frechet_raw" in cards else []),
    figures=figures),
    prefix="anatomy", stem=f"anatomy-{act.model}")
if run is not None:
    links.save_button(links.recipe_for("anatomy", act, run.spec), key="anatomy_recipe")
