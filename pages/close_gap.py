"""Close the gap: pick a method, move its sliders, watch the measures and the pool change.

The method choice reruns the page; the sliders live in a fragment, so moving one reruns only
that panel. Spectral k never refits: eigenvectors are computed once per dataset (for the
largest k offered) and sliced (``SpectralGap.training_embedding``).
"""

from __future__ import annotations

import streamlit as st

from gapviz import dashboard as dash
from gapviz import exports, figures
from gapviz.config import RECALL_KS, SPECTRAL_K
from pages import common
from pages import exports as export_ui

#: Options of the regularisation sliders (log-spaced: these parameters matter by decades).
#: Laplace OT's reg_lap scales like 1/N against the transport cost (gapviz.methods.ot).
REG_LAP_OPTIONS = (0.0, 1.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
SINKHORN_REG_OPTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
SCATTER_HEIGHT = 420
HIST_HEIGHT = 280

ws = common.workspace()
act = common.page_header("Close the gap", "methods that move images and texts together")

names = common.method_names()
if not names:
    st.error("No gap-closing methods are available (gapviz.methods did not load).")
    st.stop()

c1, c2, c3 = st.columns([1.3, 0.7, 3], vertical_alignment="bottom")
method = c1.selectbox("Method", names, format_func=common.method_label,
                      **common.keep("close_method", dash.DEFAULT_METHOD if dash.DEFAULT_METHOD in names
                                    else names[0]))
recall_k = c2.selectbox("Recall@K", RECALL_KS, **common.keep("close_recall_k", RECALL_KS[0]),
                        help="K of the mixed-pool recall card")
summary = getattr(dash.method_registry().get(method), "summary", "")
c3.caption(summary)
if ws.method != method:
    ws.method, ws.method_params = method, {}


def _params_controls() -> dict:
    """The sliders of the chosen method; returns its parameters."""
    if method == "spectral":
        lo, hi = dash.spectral_k_range(act.pairs.n, act.pairs.dim)
        k = st.slider("Spectral k: eigenvectors kept", lo, hi, help="Moving k slices "
                      "eigenvectors computed once; nothing is refitted.",
                      **common.keep("close_k", min(max(SPECTRAL_K, lo), hi), bounds=(lo, hi)))
        return {"n_components": int(k)}
    if method == "ot":
        c1, c2 = st.columns(2)
        reg_lap = c1.select_slider("Laplacian regularisation (reg_lap)", REG_LAP_OPTIONS,
                                   help="Weight of the term that keeps neighbouring images "
                                        "neighbours after transport; 0 is plain exact OT. "
                                        "Each value is one fit (cached).",
                                   **common.keep("close_reg_lap", 100.0))
        reg_src = c2.slider("Source graph share (reg_src)", 0.0, 1.0, step=0.1,
                            help="1: regularise with the image graph only; 0: the text graph only.",
                            **common.keep("close_reg_src", 1.0))
        return {"reg_lap": float(reg_lap), "reg_src": float(reg_src)}
    if method == "sinkhorn":
        reg = st.select_slider("Entropic regularisation (reg)", SINKHORN_REG_OPTIONS,
                               help="Smaller is sharper and slower; much above 0.1 every image "
                                    "lands near the texts' mean.",
                               **common.keep("close_reg", 0.05))
        return {"reg": float(reg)}
    if method == "pca":
        hi = max(2, min(act.pairs.dim, 2 * act.pairs.n - 1, 200))
        k = st.slider("PCA dimensions", 2, hi,
                      **common.keep("close_pca_k", min(SPECTRAL_K, hi), bounds=(2, hi)))
        return {"n_components": int(k)}
    return {}


@st.fragment
def method_panel(after_slot, hist_slot) -> None:
    """Sliders, cards, the "after" scatter and the histograms: everything a slider changes.

    The "after" scatter and the histograms are written into containers the page created
    below the fragment (next to the static "before" scatter), so a slider move re-sends and
    redraws only what changed.
    """
    with common.guard(f"apply {common.method_label(method)}"):
        params = _params_controls()
        ws.method_params = params
        common.show_method_in_sidebar()  # every run: a fragment may only refill what it filled
        view = common.closed_view(act, method, params)
        common.metric_cards(view.report.metrics, raw.report.metrics, recall_k=recall_k,
                            gap="xsmall")
        st.caption("Change against the raw embeddings. After: "
                   f"{dash.gap_sentence(view.report.metrics)}")
        fig = figures.gap_scatter(view.projection, ids=act.pairs.ids, captions=act.pairs.captions,
                                  title=common.params_label(method, params), height=SCATTER_HEIGHT)
        after_slot.plotly_chart(fig, key="close_scatter", config={"displaylogo": False})
        hist = figures.distance_histogram(
            [("Raw: true pairs vs all combinations", raw.paired, raw.all_pairs),
             (f"{common.method_label(method)}: true pairs vs all", view.paired, view.all_pairs)],
            height=HIST_HEIGHT)
        hist_slot.plotly_chart(hist, key="close_hist", config={"displayModeBar": False})
        _export(params, view, fig, hist)


def _export(params: dict, view: dash.ClosedView, fig, hist) -> None:
    """Downloads of what is shown: measures, transformed embeddings, figures, HTML report."""
    fit_params, view_params = dash.split_params(method, params, act.pairs.n, act.pairs.dim)
    desc = exports.method_description(common.fitted_method(act, method, fit_params), view_params)
    columns = {"ORIG": raw.report.metrics, method.upper(): view.report.metrics}
    shown = [("Raw vs after the method (PCA)", fig), ("Distances: true pairs vs all", hist)]
    label = common.method_label(method)
    export_ui.export_menu(export_ui.ExportItems(
        columns=columns,
        embeddings=export_ui.EmbeddingsExport(act.pairs, view.images, view.texts, desc),
        figures=shown,
        report=lambda: exports.session_report(
            act.pairs, columns, title=f"Closing the modality gap: {label}",
            dataset=act.dataset.name, source=act.dataset.source, model=act.model, method=desc,
            figures=shown)),
        prefix="close", stem=f"close-{act.model}-{method}")


with common.guard("measure the raw embeddings"):
    raw = common.active_raw_view(act)
    panel = st.container()
    before_col, after_col = st.columns(2, gap="medium")
    hist_slot = st.container()
    before_col.plotly_chart(
        figures.gap_scatter(raw.projection, ids=act.pairs.ids, captions=act.pairs.captions,
                            title="Raw embeddings", height=SCATTER_HEIGHT),
        key="close_scatter_raw", config={"displaylogo": False})
    with panel:
        method_panel(after_col.empty(), hist_slot.empty())
