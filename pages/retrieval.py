"""Retrieval: one query in the mixed image + text pool, raw embeddings next to a method.

The paper's strongest evidence, made visible: with raw embeddings an image query returns
images only; once the gap is closed its own caption rises to the top. The query is a pair of
the dataset (its image or its caption), a random one, a point selected on Explore, or free
text typed by the user (embedded by the model that made the data, then placed in the method's
space through its out-of-sample path). Runs come from the app's shared runner
(:mod:`ui.compute`): a method fitted on another page is not fitted again.
"""

from __future__ import annotations

import ui  # noqa: F401  (first: it sets up the process before numpy loads)

import json

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from gapviz import exports
from gapviz.figures import retrieval as rv
from gapviz.methods import format_params, make_method
from gapviz.retrieval import IMAGE, TEXT, pick_example_query
from gapviz.runs import planned_spec
from ui import compute, links
from ui import export_menu as export_ui
from ui.components import guard, method_label, method_names
from ui.frame import page_header
from ui.scoring import scoring_controls, show_provenance
from ui.state import forget_kept, keep, set_kept, workspace

#: K of the top-K lists: slider range and default.
K_MIN, K_MAX, K_DEFAULT = 3, 50, 10
#: Above this many pairs the pair picker is a number box, not a searchable list.
PICKER_MAX = 20_000
#: Query sources offered.
SOURCES = {"pair": "A pair", "explore": "Explore selection", "text": "Free text"}
MODALITIES = {IMAGE: "Image", TEXT: "Caption"}
#: Session key where the Explore page leaves its selection: ``(content hash, [(row,
#: modality), ...])``.
EXPLORE_SELECTION_KEY = "explore_selection"
FIGURE_HEIGHT = 175

ws = workspace()
act = page_header("Retrieval", "one query in the mixed image + text pool", link="retrieval")
pairs = act.pairs
pool = 2 * pairs.n - 1
names = method_names()


def _explore_selection() -> list[tuple[int, str]]:
    """Points selected on Explore for the active data (row, modality), if any."""
    saved = st.session_state.get(EXPLORE_SELECTION_KEY)
    if isinstance(saved, (tuple, list)) and len(saved) == 2 and saved[0] == act.key:
        return [(int(r), str(m)) for r, m in saved[1] if 0 <= int(r) < pairs.n]
    return []


# ---------------------------------------------------------------------------------------------
# controls
# ---------------------------------------------------------------------------------------------
if st.session_state.get("retrieval_for") != act.key:  # new data: forget the old query
    forget_kept("retrieval_pair", "retrieval_explore_item")
    st.session_state["retrieval_for"] = act.key

with st.container(border=True):
    c1, c2, c5, c3 = st.columns([1.6, 1.3, 1.5, 1.2], vertical_alignment="bottom")
    source = c1.radio("Query", list(SOURCES), format_func=SOURCES.get, horizontal=True,
                      **keep("retrieval_source", "pair"))
    method = c2.selectbox("Method (right column)", names, format_func=method_label,
                          **keep("retrieval_method", ws.method if ws.method in names else names[0]))
    k = c3.slider("Top K", K_MIN, K_MAX, **keep("retrieval_k", K_DEFAULT),
                  help="How many results each column lists.")

    raw = view = prov = run = None
    with guard(f"apply {method_label(method)}"):
        raw = compute.active_raw_view(act)
        options, fit_on = scoring_controls("retrieval", act, method, c5)
        # the parameters set on Close the gap for the method chosen there, else its defaults
        chosen = ws.method_params if method == ws.method and ws.method_params else None
        spec, _ = planned_spec(method, chosen, pairs.n, pairs.dim, lower_chosen=True,
                               **options)
        run = compute.run(act, spec, fit_on)
        view, params = compute.view(run), spec.param_dict
        prov = None if method == "orig" else run.provenance
    if view is None:
        st.stop()

    query: rv.Query | None = None
    if source == "pair":
        best = pick_example_query(raw.report, view.report)
        d1, d2, d3, d4 = st.columns([1.1, 3.2, 0.9, 1.1], vertical_alignment="bottom")
        modality = d1.radio("Query is the pair's", list(MODALITIES), format_func=MODALITIES.get,
                            horizontal=True, **keep("retrieval_modality", IMAGE))
        # the pair chosen before (kept while the user was on other pages), else the best example
        kept_pair = keep("retrieval_pair", best, bounds=(0, pairs.n - 1))
        if pairs.n <= PICKER_MAX:
            row = d2.selectbox(
                "Pair", range(pairs.n),
                format_func=lambda r: f"{pairs.ids[r]} · {rv.caption_of(pairs, r)[:90]}",
                help="Type to search ids and captions.", **kept_pair)
        else:
            row = d2.number_input("Pair (row)", 0, pairs.n - 1, step=1, **kept_pair)
        d3.button("Random", key="retrieval_random", icon=":material/shuffle:", width="stretch",
                  on_click=lambda: set_kept("retrieval_pair", int(np.random.default_rng().integers(pairs.n))))
        d4.button("Best example", key="retrieval_best", icon=":material/star:", width="stretch",
                  on_click=lambda: set_kept("retrieval_pair", best), disabled=int(row) == best,
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
        spec, reason = rv.query_model(pairs)
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
    st.caption(f"Right column: **{method_label(method)}**"
               + (f" ({format_params(method, params)})" if params else "")
               + f". Pool: {pairs.n:,} images + {pairs.n:,} captions; "
               + (f"typed text is not in the pool: it is ranked against all {2 * pairs.n:,}."
                  if source == "text" else
                  f"a query from the pool is ranked against the other {pool:,}."))
    if prov is not None:
        show_provenance(prov)

if query is None:
    st.stop()


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------
def _results(query: rv.Query):
    """(raw result, method result) of the query, or raises with a message for the user."""
    if not query.is_free:
        return rv.run_query(pairs, run.images, run.texts, query, k, scores=run.scores)
    if run.scores is not None:
        return rv.run_query(pairs, run.images, run.texts, query, k, scores=run.scores)
    spec, _ = rv.query_model(pairs)
    vector = compute.embed_text(json.dumps(spec.identity(), sort_keys=True), query.text, spec)
    if method == "orig":
        return rv.run_query(pairs, run.images, run.texts, query, k, vector=vector)
    # The new query is placed by the run's first fit (held-out: the fold whose frame the
    # others were aligned to; the query is new to every fit), read-only.
    return rv.run_query(pairs, run.images, run.texts, query, k, method=run.fits[0],
                        vector=vector)


result = None
with guard("run the query"):
    result = _results(query)
if result is None:
    st.stop()
left_result, right_result = result
k = len(left_result.hits)  # the slider's K, or the whole pool when it is smaller
if run.scores is not None:
    st.caption(f"Right: ranked on {method_label(method)}'s corrected scores (the embeddings are "
               "unchanged; each pair's score terms come from the fit of its protocol, banks of "
               "fit pairs only). The number beside a hit is its corrected score, not a cosine.")

method_title = method_label(method) + (f" ({format_params(method, params)})" if params else "")
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
with guard("show the results"):
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
    desc = {"method": method, "params": params,
            **({"protocol": prov.to_dict()} if prov is not None else {})}
    what = (f"free text “{query.text}”" if query.is_free else
            f"the {MODALITIES[query.modality].lower()} of pair {pairs.ids[query.row]}")
    return exports.session_report(
        pairs, measures, title=f"Retrieval in the mixed pool: raw vs {method_label(method)}",
        dataset=act.dataset.name, source=act.dataset.source, model=act.model, method=desc,
        figures=figs, sections=[(f"Query: {what} (top {k})", rv.side_by_side_html(pairs, query, columns))],
        notes=[rv.summary_line(r, query, k, pool) + f" ({t})" for t, r in columns]
        + ([f"How obtained: {prov.summary()}"] if prov is not None else []))


def _results_csv() -> str:
    how = {columns[0][0]: "no method: the raw embeddings, nothing fitted",
           columns[1][0]: prov.summary() if prov is not None else "no method: the raw embeddings"}
    return exports.records_csv(rv.hits_records(pairs, columns, query=query, how=how))


def _export_items() -> export_ui.ExportItems:
    measures, runs = export_ui.raw_and_method(raw.report.metrics, pairs.n, method,
                                              view.report.metrics, prov, params)
    items = export_ui.ExportItems(
        report=_report, columns=measures, runs=runs, figures=figs,
        extra=[("Results · CSV", exports.file_name(stem, "results", ext="csv"), _results_csv,
                exports.MIME["csv"])])
    if method != "orig":
        desc = exports.method_description(make_method(method, **params), provenance=prov)
        items.embeddings = export_ui.EmbeddingsExport(pairs, run.images, run.texts, desc)
    return items


stem = f"retrieval-{act.model}"
e1, e2 = st.columns([5, 1])
e1.caption("Green: the query's true partner, wherever it lands. Similarities are cosines in each "
           "space; ranks count every item of the pool but the query.")
with e2, guard("prepare the exports"):
    export_ui.export_menu(_export_items(), prefix="retrieval", stem=stem)
    # a pair's query is part of the link; a typed text or a selection from Explore is not
    recipe = links.recipe_for("retrieval", act, run.spec, k=int(st.session_state["retrieval_k"]),
                              **({"query": f"{query.row}:{query.modality}"}
                                 if source == "pair" else {}))
    links.write(recipe)
    links.save_button(recipe, key="retrieval_recipe")
