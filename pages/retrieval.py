"""Retrieval: one query in the mixed image + text pool, raw embeddings next to a method.

The paper's strongest evidence, made visible: with raw embeddings an image query returns
images only; once the gap is closed its own caption rises to the top. The query is a pair of
the dataset (its image or its caption), a random one, a point selected on Explore, or free
text typed by the user (embedded by the model that made the data, then placed in the method's
space through its out-of-sample path). Fitted methods come from the app's shared cache
(:func:`pages.common.closed_view`): a method fitted on another page is not fitted again.
"""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from gapviz import dashboard as dash
from gapviz import exports
from gapviz import retrieval_view as rv
from gapviz.figures import selected_rows
from gapviz.retrieval import IMAGE, TEXT, retrieve, retrieve_vector
from gapviz.run_params import params_text, suited_params
from pages import common
from pages import exports as export_ui

#: K of the top-K lists: slider range and default.
K_MIN, K_MAX, K_DEFAULT = 3, 50, 10
#: Above this many pairs the pair picker is a number box, not a searchable list.
PICKER_MAX = 20_000
#: Query sources offered.
SOURCES = {"pair": "A pair", "explore": "Explore selection", "text": "Free text"}
MODALITIES = {IMAGE: "Image", TEXT: "Caption"}
#: Session keys where the Explore page may leave its selection: ``(content hash, [(row,
#: modality), ...])``; the chart's own widget state is read as a fallback.
EXPLORE_SELECTION_KEYS = ("explore_selection", "explore_selected")
FIGURE_HEIGHT = 175

ws = common.workspace()
act = common.page_header("Retrieval", "one query in the mixed image + text pool")
pairs = act.pairs
pool = 2 * pairs.n - 1
names = common.method_names()
if not names:
    st.error("No gap-closing methods are available (gapviz.methods did not load).")
    st.stop()


# ---------------------------------------------------------------------------------------------
# state helpers
# ---------------------------------------------------------------------------------------------
def _set(key: str, value) -> None:
    """Set a widget's value from a callback, also where :func:`common.keep` saved it."""
    st.session_state[key] = value
    st.session_state.setdefault(common.KEPT_KEY, {})[key] = value


def _method_params(name: str) -> dict:
    """Parameters of ``name``: those set on Close the gap when it is the method chosen there,
    else its defaults (spectral: k = 60), lowered where the data cannot take them."""
    chosen = ws.method_params if name == ws.method and ws.method_params else None
    return suited_params(name, pairs.n, pairs.dim, chosen)


def _explore_selection() -> list[tuple[int, str]]:
    """Points selected on Explore for the active data (row, modality), if any.

    Read from the key Explore saves them under; else from the Explore chart's own widget
    state, which Streamlit drops after the first run of another page, so it is saved here.
    """
    for key in EXPLORE_SELECTION_KEYS:
        saved = st.session_state.get(key)
        if isinstance(saved, (tuple, list)) and len(saved) == 2 and saved[0] == act.key:
            return [(int(r), str(m)) for r, m in saved[1] if 0 <= int(r) < pairs.n]
    state = st.session_state.get("explore_scatter")
    selection = getattr(state, "selection", None) or (state.get("selection") if isinstance(state, dict) else None)
    rows = [(r, m) for r, m in selected_rows(selection) if 0 <= r < pairs.n]
    if rows:
        st.session_state[EXPLORE_SELECTION_KEYS[0]] = (act.key, rows)
    return rows


def _model_spec():
    """The open_clip model that made the active embeddings, or ``(None, reason)``."""
    meta = pairs.meta
    if act.simulated:
        return None, ("Free text needs the model that made the embeddings; the demo is simulated "
                      "(no model). Load your own pairs on **Data** to type queries.")
    name = meta.get("model_name")
    if not name:
        return None, ("These embeddings were loaded from a file, so gapviz does not know which "
                      "model made them; embed pairs on **Data** to type queries.")
    from gapviz.encode import ModelSpec

    return ModelSpec(str(name), meta.get("pretrained")), ""


@st.cache_resource(max_entries=2, show_spinner="Loading the model (once)…")
def _load_model(spec):
    from gapviz.encode import load_model

    return load_model(spec)


@st.cache_data(max_entries=128, show_spinner="Embedding your text…")
def _embed_text(identity: str, text: str, _spec) -> np.ndarray:
    """The typed text embedded by the model (keyed on the model's identity and the text)."""
    from gapviz.encode import embed_texts

    loader = getattr(common, "loaded_model", None) or _load_model  # share the Data page's model
    return embed_texts(loader(_spec), [text])[0]


# ---------------------------------------------------------------------------------------------
# controls
# ---------------------------------------------------------------------------------------------
if st.session_state.get("retrieval_for") != act.key:  # new data: forget the old query
    for key in ("retrieval_pair", "retrieval_explore_item"):
        st.session_state.pop(key, None)
        st.session_state.get(common.KEPT_KEY, {}).pop(key, None)
    st.session_state["retrieval_for"] = act.key

with st.container(border=True):
    c1, c2, c3 = st.columns([1.6, 1.3, 1.2], vertical_alignment="bottom")
    source = c1.radio("Query", list(SOURCES), format_func=SOURCES.get, horizontal=True,
                      **common.keep("retrieval_source", "pair"))
    method = c2.selectbox("Method (right column)", names, format_func=common.method_label,
                          **common.keep("retrieval_method", ws.method if ws.method in names else names[0]))
    k = c3.slider("Top K", K_MIN, K_MAX, **common.keep("retrieval_k", K_DEFAULT),
                  help="How many results each column lists.")
    params = _method_params(method)

    raw = view = None
    with common.guard(f"apply {common.method_label(method)}"):
        raw = common.active_raw_view(act)
        view = common.closed_view(act, method, params) if method != "orig" else raw
    if view is None:
        st.stop()

    query: rv.Query | None = None
    if source == "pair":
        best = dash.pick_example_query(raw.report, view.report)
        d1, d2, d3, d4 = st.columns([1.1, 3.2, 0.9, 1.1], vertical_alignment="bottom")
        modality = d1.radio("Query is the pair's", list(MODALITIES), format_func=MODALITIES.get,
                            horizontal=True, **common.keep("retrieval_modality", IMAGE))
        if "retrieval_pair" not in st.session_state:
            _set("retrieval_pair", best)
        if pairs.n <= PICKER_MAX:
            row = d2.selectbox(
                "Pair", range(pairs.n), key="retrieval_pair",
                format_func=lambda r: f"{pairs.ids[r]} · {rv.caption_of(pairs, r)[:90]}",
                on_change=lambda: _set("retrieval_pair", st.session_state["retrieval_pair"]),
                help="Type to search ids and captions.")
        else:
            row = d2.number_input("Pair (row)", 0, pairs.n - 1, step=1, key="retrieval_pair",
                                  on_change=lambda: _set("retrieval_pair", st.session_state["retrieval_pair"]))
        d3.button("Random", key="retrieval_random", icon=":material/shuffle:", width="stretch",
                  on_click=lambda: _set("retrieval_pair", int(np.random.default_rng().integers(pairs.n))))
        d4.button("Best example", key="retrieval_best", icon=":material/star:", width="stretch",
                  on_click=lambda: _set("retrieval_pair", best), disabled=int(row) == best,
                  help="The pair whose caption the method ranks best where the raw embeddings "
                       "rank texts worst: the paper's contrast at its clearest.")
        query = rv.Query(modality, int(row))
    elif source == "explore":
        chosen = _explore_selection()
        if not chosen:
            st.info("Nothing is selected on **Explore** yet: select points there with the lasso "
                    "or box tool, then come back; each selected image or caption becomes a query.",
                    icon=":material/gesture_select:")
        else:
            item = st.selectbox(
                f"Selected on Explore ({len(chosen):,} points)", range(len(chosen)),
                key="retrieval_explore_item",
                format_func=lambda i: (f"{MODALITIES[chosen[i][1]]} of {pairs.ids[chosen[i][0]]} · "
                                       f"{rv.caption_of(pairs, chosen[i][0])[:90]}"))
            r, m = chosen[min(int(item), len(chosen) - 1)]
            query = rv.Query(m, r)
    else:
        spec, reason = _model_spec()
        text = st.text_input("Your text", key="retrieval_text", disabled=spec is None,
                             placeholder="a dog running on a beach" if spec else "",
                             help="Embedded by the model of the active data, then placed in the "
                                  "method's space by its out-of-sample path.")
        if spec is None:
            st.caption(f":material/info: {reason}")
        elif text.strip():
            query = rv.Query(TEXT, None, text.strip())
        else:
            st.caption("Type a caption-like sentence and press Enter.")
    st.caption(f"Right column: **{common.method_label(method)}**"
               + (f" ({params_text(params)})" if params else "")
               + f". Pool: {pairs.n:,} images + {pairs.n:,} captions; a query is ranked against "
                 f"the other {pool:,}.")

if query is None:
    st.stop()


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------
def _results(query: rv.Query):
    """(raw result, method result) of the query, or raises with a message for the user."""
    X, Y = pairs.image_embeddings, pairs.text_embeddings
    if not query.is_free:
        return (retrieve(X, Y, query.modality, query.row, k),
                retrieve(view.images, view.texts, query.modality, query.row, k))
    spec, _ = _model_spec()
    vec = _embed_text(json.dumps(spec.identity(), sort_keys=True), query.text, spec)
    if vec.shape[0] != X.shape[1]:
        raise ValueError(f"the model gives {vec.shape[0]}-d vectors but the data is {X.shape[1]}-d; "
                         "the embeddings were not made by this model.")
    left = retrieve_vector(vec, X, Y, query.modality, k)
    if method == "orig":
        return left, retrieve_vector(vec, view.images, view.texts, query.modality, k)
    fit_params, view_params = dash.split_params(method, params, pairs.n, pairs.dim)
    fitted = common.fitted_method(act, method, fit_params)
    placed = rv.place_free_query(fitted, vec, query.modality, view_params)
    return left, retrieve_vector(placed, view.images, view.texts, query.modality, k)


result = None
with common.guard("run the query"):
    result = _results(query)
if result is None:
    st.stop()
left_result, right_result = result
k = len(left_result.hits)  # the slider's K, or the whole pool when it is smaller

method_title = common.method_label(method) + (f" ({params_text(params)})" if params else "")
columns = (("Raw embeddings", left_result), (method_title, right_result))
own = "images" if query.modality == IMAGE else "texts"


def _column(i: int, title: str, res) -> go.Figure:
    """One column: its title, the two numbers (right: change vs raw), the cards, the figure."""
    st.markdown(f"#### {title}")
    m1, m2 = st.columns(2)
    other = columns[0][1]
    if res.partner_rank is not None:
        delta = None
        if i == 1 and other.partner_rank is not None and other.partner_rank != res.partner_rank:
            delta = f"{res.partner_rank - other.partner_rank:+,}"
        m1.metric(f"Rank of {rv.partner_label(query)}", f"#{res.partner_rank:,}", delta,
                  delta_color="inverse", border=True,
                  help=f"Where the query's true partner lands among the {pool:,} other items "
                       "(also beyond the top K). Lower is better.")
    else:
        m1.metric("Rank of the true partner", "—", border=True,
                  help="A free query has no true partner in the pool.")
    delta = None
    if i == 1 and other.same_modality_in_top_k != res.same_modality_in_top_k:
        delta = f"{res.same_modality_in_top_k - other.same_modality_in_top_k:+d}"
    m2.metric(f"{own.capitalize()} in the top {k}", f"{res.same_modality_in_top_k} / {len(res.hits)}",
              delta, delta_color="inverse", border=True,
              help=f"How many of the top {k} share the query's modality. With a gap, nearly all; "
                   "once it is closed, the other modality competes.")
    st.markdown(rv.hits_html(pairs, res, query), unsafe_allow_html=True)
    fig = rv.query_figure(res, k=k, pool_size=pool, query=query, ids=pairs.ids, height=FIGURE_HEIGHT)
    st.plotly_chart(fig, key=f"retrieval_fig_{i}",
                    config=export_ui.chart_config(f"retrieval-{'raw' if i == 0 else method}",
                                                  displayModeBar="hover"))
    st.caption(rv.summary_line(res, query, k, pool))
    return fig


figs: list[tuple[str, go.Figure]] = []
with common.guard("show the results"):
    st.markdown(rv.query_html(pairs, query), unsafe_allow_html=True)
    for i, (col, (title, res)) in enumerate(zip(st.columns(2, gap="large"), columns)):
        with col:
            figs.append((f"{title}: the query in numbers", _column(i, title, res)))
if len(figs) < 2:
    st.stop()


# ---------------------------------------------------------------------------------------------
# exports
# ---------------------------------------------------------------------------------------------
def _report() -> str:
    measures = {"ORIG": raw.report.metrics}
    if method != "orig":
        measures[method.upper()] = view.report.metrics
    desc = {"method": method, "params": params}
    what = (f"free text “{query.text}”" if query.is_free else
            f"the {MODALITIES[query.modality].lower()} of pair {pairs.ids[query.row]}")
    return exports.session_report(
        pairs, measures, title=f"Retrieval in the mixed pool: raw vs {common.method_label(method)}",
        dataset=act.dataset.name, source=act.dataset.source, model=act.model, method=desc,
        figures=figs, sections=[(f"Query: {what} (top {k})", rv.side_by_side_html(pairs, query, columns))],
        notes=[rv.summary_line(r, query, k, pool) + f" ({t})" for t, r in columns])


def _results_csv() -> str:
    import pandas as pd

    return pd.DataFrame(rv.hits_records(pairs, columns)).to_csv(index=False)


def _export_items() -> export_ui.ExportItems:
    items = export_ui.ExportItems(
        report=_report,
        columns={"ORIG": raw.report.metrics, **({method.upper(): view.report.metrics} if method != "orig" else {})},
        figures=figs,
        extra=[("Results · CSV", exports.file_name(stem, "results", ext="csv"), _results_csv,
                exports.MIME["csv"])])
    if method != "orig":
        fit_params, view_params = dash.split_params(method, params, pairs.n, pairs.dim)
        desc = exports.method_description(common.fitted_method(act, method, fit_params), view_params)
        items.embeddings = export_ui.EmbeddingsExport(pairs, view.images, view.texts, desc)
    return items


stem = f"retrieval-{act.model}"
e1, e2 = st.columns([5, 1])
e1.caption("Green: the query's true partner, wherever it lands. Similarities are cosines in each "
           "space; ranks count every item of the pool but the query.")
with e2, common.guard("prepare the exports"):
    export_ui.export_menu(_export_items(), prefix="retrieval", stem=stem)
