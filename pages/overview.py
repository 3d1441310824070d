"""Overview: the story of the current data in four panels that fit one screen.

1 the gap seen (scatter of the mixed pool), 2 the gap measured (ITR / TIR / IMR / TMR),
3 the gap closed (the same after the default spectral method), 4 the proof (one image query's
top results in the mixed pool, raw vs closed). Works on the demo with no clicks and follows
whatever data is active.
"""

from __future__ import annotations

import ui  # noqa: F401  (first: it sets up the process before numpy loads)

import html

import numpy as np
import streamlit as st

from gapviz import figures
from gapviz.figures import overview as ov
from gapviz.figures import palette
from gapviz.measure_info import GAP_CARDS, gap_sentence
from gapviz.retrieval import pick_example_query, retrieve
from gapviz.runs import default_spec
from ui import compute, links
from ui.components import guard, method_label, metric_cards, show_image
from ui.frame import page_header
from ui.state import workspace

PROOF_K = 5
SCATTER_HEIGHT = 205

act = page_header("The modality gap at a glance", compact=True, link="overview")
pairs = act.pairs


def _render() -> None:
    raw = compute.active_raw_view(act)
    spec = default_spec(pairs.n, pairs.dim)
    run = compute.run(act, spec)
    closed = compute.view(run)
    k = spec.param_dict["n_components"]
    closed_short = f"{method_label(spec.method)}, k = {k}"
    closed_label = (f"{closed_short}, {run.provenance.summary()} "
                    "(it never reads which text is whose)")

    links.write(links.recipe_for("overview", act, spec))
    default_query = pick_example_query(raw.report, closed.report)
    chosen = st.session_state.get("overview_query")  # (content hash, row): reset on new data
    query = (chosen[1] if chosen and chosen[0] == act.key and 0 <= chosen[1] < pairs.n
             else default_query)

    left, right = st.columns(2, gap="small")
    with left, st.container(border=True):
        st.markdown(ov.panel_title_html(1, "The gap, seen",
                                        "raw embeddings · PCA of images and texts together"),
                    unsafe_allow_html=True)
        fig = figures.gap_scatter(raw.projection, ids=pairs.ids, captions=pairs.captions,
                                  query=("image", query), height=SCATTER_HEIGHT)
        st.plotly_chart(fig, key="overview_raw_scatter", config={"displayModeBar": False})
        st.markdown(ov.panel_title_html(2, "The gap, measured"), unsafe_allow_html=True)
        metric_cards(raw.report.metrics, keys=GAP_CARDS, gap="xsmall")
        st.caption(gap_sentence(raw.report.metrics).capitalize())
    with right, st.container(border=True):
        st.markdown(ov.panel_title_html(3, "The gap, closed", closed_label),
                    unsafe_allow_html=True)
        fig = figures.gap_scatter(closed.projection, ids=pairs.ids, captions=pairs.captions,
                                  query=("image", query), height=SCATTER_HEIGHT)
        st.plotly_chart(fig, key="overview_closed_scatter", config={"displayModeBar": False})
        st.markdown("<div style='font-weight:600;font-size:0.92rem;margin:0.1rem 0 0 0;"
                    f"color:{palette.TITLE}'>Measured again "
                    f"<span style='color:{palette.MUTED};font-weight:400'>"
                    "· change vs raw</span></div>", unsafe_allow_html=True)
        metric_cards(closed.report.metrics, raw.report.metrics, keys=GAP_CARDS,
                            gap="xsmall")
        st.caption(gap_sentence(closed.report.metrics).capitalize())

    with st.container(border=True):
        caption = pairs.captions[query] if pairs.captions else pairs.ids[query]
        head, buttons = st.columns([3.4, 1.6], vertical_alignment="center")
        with head:
            st.markdown(ov.panel_title_html(4, "The proof", "one image query, its top 5 in the "
                                            f"mixed pool of {2 * pairs.n - 1:,} images and texts"),
                        unsafe_allow_html=True)
            st.markdown(f"<div style='font-size:0.9rem;margin-top:0.35rem'>Query: the "
                        f"{ov.pill_html('image')} of pair <code>{html.escape(pairs.ids[query])}</code>"
                        f" — its caption is <i>“{html.escape(caption)}”</i></div>",
                        unsafe_allow_html=True)
        with buttons:
            b1, b2 = st.columns(2)
            if b1.button("Random query", key="overview_random", icon=":material/shuffle:",
                         help="Another query, drawn at random", type="tertiary"):
                row = int(np.random.default_rng().integers(pairs.n))
                st.session_state["overview_query"] = (act.key, row)
                st.rerun()
            if b2.button("Best example", key="overview_best", icon=":material/star:",
                         type="tertiary",
                         help="The query whose own caption gains the most from closing the gap",
                         disabled=query == default_query):
                st.session_state["overview_query"] = (act.key, default_query)
                st.rerun()
        cols = st.columns([0.9, 5, 5] if pairs.image_paths else [5, 5], gap="medium")
        if pairs.image_paths and not show_image(cols[0], pairs.image_paths[query]):
            cols[0].caption("image not available")
        raw_hits = retrieve(pairs.image_embeddings, pairs.text_embeddings, "image", query, PROOF_K)
        closed_hits = retrieve(run.images, run.texts, "image", query, PROOF_K)
        cols[-2].markdown(ov.hits_html(pairs, raw_hits, "Raw embeddings"), unsafe_allow_html=True)
        cols[-1].markdown(ov.hits_html(pairs, closed_hits, f"Closed ({closed_short})"),
                          unsafe_allow_html=True)


with guard("build the overview"):
    _render()
# While the visitor reads this page, the Compare page's opening rows are obtained in the
# background (once per pairs): most visitors of the demo go there next.
compute.compare_rows_ahead([act], compute.compare_default_methods(), workspace().params_for)
