"""Close the gap: pick a method, move its sliders, watch the measures and the pool change.

The method choice reruns the page; the sliders live in a fragment, so moving one reruns only
that panel. Spectral k never refits: eigenvectors are computed once per dataset (for the
largest k offered) and sliced (``SpectralGap.training_embedding``).
"""

from __future__ import annotations

import ui  # noqa: F401  (first: it sets up the process before numpy loads)

import streamlit as st

from gapviz import exports, figures, hosting
from gapviz.config import RECALL_KS
from gapviz.measure_info import gap_sentence
from gapviz.methods import describe_run, make_method, method_class, method_params
from gapviz.methods.ot import foreground
from gapviz.protocols import PAPER_FIT_PAIRS, PAPER_MIN_SCORED, PaperSettingError, paper_setting
from gapviz.runs import DEFAULT_METHOD, planned_spec, setting_specs
from gapviz.safety import plain_text
from ui import compute, links
from ui import export_menu as export_ui
from ui.components import guard, method_label, method_names, metric_cards
from ui.frame import page_header
from ui.live_plot import Chart, live_charts
from ui.scoring import scoring_controls, show_provenance
from ui.sidebar import show_method_in_sidebar
from ui.state import keep, kept, set_kept, workspace

SCATTER_HEIGHT = 420
HIST_HEIGHT = 280

ws = workspace()
act = page_header("Close the gap", "methods that move images and texts together",
                  link="close_gap")

names = method_names()
# The page's controls in one block whatever they hold (the Paper setting row is there for a
# method only), and the method panel's in another: every block on the way to the charts keeps
# its place among its siblings, so a method switch redraws the charts in place (ui.live_plot)
# rather than loading them anew.
controls = st.container()
c1, c2, c3, c4 = controls.columns([1.3, 1.5, 0.7, 2.2], vertical_alignment="bottom")
method = c1.selectbox("Method", names, format_func=method_label,
                      **keep("close_method", DEFAULT_METHOD))
recall_k = c3.selectbox("Recall@K", RECALL_KS, **keep("close_recall_k", RECALL_KS[0]),
                        help="K of the mixed-pool recall card")
cls = method_class(method)
c4.caption(cls.summary)
options, fit_on = None, None
with controls, guard("choose the protocol"):
    options, fit_on = scoring_controls("close", act, method, c2)
if options is None:
    st.stop()


def _use_paper_setting() -> None:
    """Load the paper's fit set (5,000 dedicated pairs; a split of larger data) beside the
    scored pairs and choose protocol fit-on with it (a button's callback)."""
    try:
        fit, scored, how = paper_setting(act.pairs)
    except PaperSettingError as err:
        st.session_state["close_paper_error"] = str(err)
        return
    dataset = act.dataset.name
    if scored is not act.pairs:
        dataset, _ = ws.add(scored, source=how, dataset=f"{act.dataset.name} · scored "
                            f"{scored.n:,}", model=act.model, activate=True)
    fit_name, fit_model = ws.add(fit, source=how, dataset=f"{dataset} · paper fit set "
                                 f"({fit.n:,} pairs)", model=act.model, activate=False)
    set_kept(f"close_protocol_{method}", "fit-on")
    set_kept("close_fit_on", f"{fit_name} · {fit_model}")
    st.session_state["close_paper_fit_size"] = fit.n
    st.session_state["close_paper_how"] = how


if method != "orig":
    b1, b2 = controls.columns([1.3, 4.4], vertical_alignment="center")
    b1.button("Paper setting", key="close_paper", icon=":material/menu_book:",
              on_click=_use_paper_setting,
              help=f"Fit on {PAPER_FIT_PAIRS:,} pairs other than those scored, as the paper fits "
                   "OT: the demo gets 5,000 new pairs of the same simulated model; data of at "
                   f"least {PAPER_FIT_PAIRS + PAPER_MIN_SCORED:,} pairs is split (seeded). OT and "
                   "Sinkhorn then fit on all of them (no subsample): a fit of 5,000 pairs takes "
                   "a minute or more.")
    if st.session_state.get("close_paper_error"):
        b2.info(st.session_state.pop("close_paper_error"), icon=":material/info:")
    elif options.get("protocol") == "fit-on" and st.session_state.get("close_paper_how"):
        b2.caption(f":material/menu_book: {st.session_state['close_paper_how']}")
if ws.method != method:
    ws.method, ws.method_params = method, {}


def _params_controls() -> dict:
    """A slider per parameter the chosen method offers as one (``GapMethod.params_info``);
    returns the parameters. Ranges follow the data (k <= min(N - 1, d) for spectral)."""
    infos = [p for p in cls.params_info if p.slider is not None or (p.menu and p.choices)]
    defaults = cls.suited_params(act.pairs.n, act.pairs.dim, method_params(method))
    params = {}
    tuned: tuple[str, ...] = ()
    if "tune" in defaults:
        hosted = hosting.hosted()
        params["tune"] = st.toggle(
            "Tune by grid search inside the fit pairs", **keep(f"close_tune_{method}", False),
            disabled=hosted,
            help=("Not on a hosted demo (one fit per grid value per fold): run gapviz on your "
                  "own machine, or `gapviz evaluate --method ... --tune`." if hosted else
                  "As the paper tunes OT's regularisation: each fit splits the pairs it is given "
                  "(80 % / 20 %, seeded), scores every grid value on the 20 % (mixed-pool R@5) "
                  "and refits on all its pairs with the best. Under held-out or fit-on the "
                  "scored pairs are never seen. Slow: one fit per grid value per fold.")) \
            and not hosted
        tuned = cls.tuned_names(params)
    for col, info in zip(st.columns(len(infos)) if len(infos) > 1 else [st.container()], infos):
        if info.name in tuned:
            col.caption(f"**{info.slider.label if info.slider else info.shown}**: chosen by the "
                        "grid search in each fit")
            continue
        if info.slider is None:  # a menu: OT's direction, spectral's graph weights
            # each choice by the name titles, tables and the CLI give it, then what it means
            names = {c: c if label == c else f"{c}: {label}"
                     for c, label in zip(info.choices, info.labels or info.choices)}
            params[info.name] = col.selectbox(
                info.menu, info.choices, format_func=names.get, help=info.help,
                **keep(f"close_{info.shown}_{method}".replace(" ", "_"), defaults[info.name]))
            continue
        slider = info.slider
        key = "close_" + (slider.key or info.shown).replace(" ", "_")
        default = defaults[info.name]
        if slider.options is not None:
            value = col.select_slider(slider.label, slider.options, help=slider.help or None,
                                      **keep(key, default))
        else:
            lo, hi = cls.slider_range(info.name, act.pairs.n, act.pairs.dim)
            if isinstance(default, int):
                lo, hi = int(lo), int(hi)
            value = col.slider(slider.label, lo, hi, step=slider.step, help=slider.help or None,
                               **keep(key, min(max(default, lo), hi), bounds=(lo, hi)))
        params[info.name] = type(default)(value)
    paper_size = st.session_state.get("close_paper_fit_size")
    if (paper_size and options.get("protocol") == "fit-on" and "fit_size" in method_params(method)
            and fit_on is not None and fit_on.pairs.n == paper_size):
        params["fit_size"] = int(paper_size)  # the paper's setting fits on every fit pair
    return params


@st.fragment
def method_panel() -> None:
    """Sliders, cards, the raw and "after" scatters and the histograms: everything a slider
    changes, and the raw scatter beside it.

    The charts are live charts in one frame (:func:`ui.live_plot.live_charts`): a move hands
    the new "after" scatter and histograms to the same charts, which redraw in place, and the
    raw scatter, the same figure each time, is not drawn again. All above them is one block
    (:func:`_panel_top`), whatever each method and run shows there (a tuning toggle, a line
    about its fit), so the charts keep their place and a method switch redraws them in place
    too.
    """
    # what a slider move shows the user waits for: work ahead of the next move pauses meanwhile
    with guard(f"apply {method_label(method)}"), foreground():
        with st.container():
            fig, hist = _panel_top()
        live_charts([[Chart("close_scatter_raw", raw_scatter, {"displaylogo": False},
                            raw_scatter_spec),
                      Chart("close_scatter", fig, {"displaylogo": False})],
                     [Chart("close_hist", hist, {"displayModeBar": False})]],
                    key="close_charts")


def _panel_top():
    """The method panel but its charts: sliders, the run, cards, captions, exports; the
    "after" scatter and the histograms to draw."""
    params = _params_controls()
    ws.method_params = params
    show_method_in_sidebar()  # every run: a fragment may only refill what it filled
    spec, notes = planned_spec(method, params, act.pairs.n, act.pairs.dim,
                               lower_chosen=True, **options)
    run = compute.run(act, spec, fit_on)
    view, prov = compute.view(run), run.provenance
    metric_cards(view.report.metrics, raw.report.metrics, recall_k=recall_k, gap="xsmall")
    st.caption("Change against the raw embeddings. After: "
               f"{gap_sentence(view.report.metrics)}")
    show_provenance(prov)
    if run.scores is not None:
        st.caption(f":material/functions: **{method_label(method)} corrects scores, "
                   "not embeddings**: the ranks on the cards (ITR/TIR, IMR/TMR, R@K) are "
                   "on the corrected scores, each pair's terms from the banks of its own "
                   "fit (fit pairs only); the scatter, the histograms and the distances "
                   "(Fréchet, centroid gap) are the raw embeddings', which it leaves as "
                   "they are.")
    _show_tuning(run)
    limit = describe_fit_size(method, params)
    st.caption(f":material/straighten: **Fit size**: each fit saw {prov.n_fit:,} pairs"
               + (f" ({limit})" if limit else "")
               + ". The number of fitted pairs often matters more than the sliders.")
    for note in notes:
        st.caption(f":material/info: {note}")
    fig = figures.gap_scatter(view.projection, ids=act.pairs.ids, captions=act.pairs.captions,
                              title=describe_run(method, params), height=SCATTER_HEIGHT)
    hist = figures.distance_histogram(
        [("Raw: true pairs vs all combinations", raw.paired, raw.all_pairs),
         (f"{method_label(method)}: true pairs vs all", view.paired, view.all_pairs)],
        height=HIST_HEIGHT)
    _export(params, run, view, fig, hist)
    ws.last_spec = spec
    recipe = links.recipe_for("close_gap", act, spec, recall_k=recall_k)
    links.write(recipe)
    links.save_button(recipe, key="close_recipe")
    return fig, hist


def _show_tuning(run) -> None:
    """What each fit's grid search chose (one line per fit), when the run tuned itself."""
    tunings = [fit.describe().get("tuning") for fit in run.fits]
    lines = [f"fit {i + 1}: " + ", ".join(f"{k} = {v:g}" for k, v in t["chosen"].items())
             + f" (best score {max(r['score'] for r in t['results']):.3f} on "
               f"{t['inner_validation']:,} of its pairs)"
             for i, t in enumerate(tunings) if t]
    if lines:
        criterion = next(t for t in tunings if t)["criterion"]
        st.caption(f":material/tune: **Grid search**, each fit inside its own pairs "
                   f"(criterion: {criterion}): " + "; ".join(lines))


def describe_fit_size(name: str, params: dict) -> str:
    """What limits a fit's pairs, for methods that subsample them (OT, Sinkhorn)."""
    if "fit_size" not in method_params(name):
        return ""
    size = params.get("fit_size", method_params(name)["fit_size"])
    return ("fit_size: all fit pairs" if size is None else
            f"fit_size = {size:,}: at most {size:,} of the fit pairs, a seeded subsample; the "
            "Paper setting fits on 5,000")


def _export(params: dict, run, view, fig, hist) -> None:
    """Downloads of what is shown: measures, transformed embeddings (the protocol in their
    meta), figures, HTML report (the protocol in its notes)."""
    prov = run.provenance
    desc = exports.method_description(make_method(method, **params), provenance=prov)
    columns, runs = export_ui.raw_and_method(raw.report.metrics, act.pairs.n, method,
                                             view.report.metrics, prov, params)
    shown = [("Raw embeddings (PCA)", raw_scatter), ("After the method (PCA)", fig),
             ("Distances: true pairs vs all", hist)]
    label = method_label(method)
    export_ui.export_menu(export_ui.ExportItems(
        columns=columns, runs=runs,
        embeddings=export_ui.EmbeddingsExport(act.pairs, run.images, run.texts, desc),
        figures=shown,
        report=lambda: exports.session_report(
            act.pairs, columns, title=f"Closing the modality gap: {label}",
            dataset=act.dataset.name, source=act.dataset.source, model=act.model, method=desc,
            figures=shown, notes=[f"How obtained: {prov.summary()}"])),
        prefix="close", stem=f"close-{act.model}-{method}")


with guard("measure the raw embeddings"):
    raw = compute.active_raw_view(act)
    raw_scatter = figures.gap_scatter(raw.projection, ids=act.pairs.ids,
                                      captions=act.pairs.captions, title="Raw embeddings",
                                      height=SCATTER_HEIGHT)
    raw_scatter_spec = raw_scatter.to_json()  # drawn by every move's rerun: made once here
    method_panel()


def _first_views_ahead() -> None:
    """While the visitor reads the page, obtain the first view of each other method whose
    sliders refit it (OT, Sinkhorn) at the values this page would run for it: its defaults
    under its default protocol, unless the visitor chose another protocol for it."""
    def skip(name: str) -> bool:
        default = method_class(name).default_protocol
        return name == method or kept(f"close_protocol_{name}", default) != default

    compute.first_views_ahead(act, compute.first_view_specs(act, names, skip))


_first_views_ahead()


with st.expander("What closing costs: the trade-off across this method's settings",
                 icon=":material/balance:"), guard("measure the trade-off"):
    if st.toggle("Compute", key="close_tradeoff",
                 help="For each value of the method's main slider (spectral: k = 5 … 200, "
                      "slices of one fit under the transductive protocol): the share of the gap "
                      "closed (1 − RMG after / before) against cross-modal R@1 and each "
                      "modality's 10-nearest neighbourhoods kept. Other methods: the current "
                      "setting. Computed once per data, method and protocol."):
        from gapviz.figures import anatomy as af

        if ws.last_spec is None or ws.last_spec.method != method:
            st.stop()  # the method panel above could not run; it says why
        specs = setting_specs(ws.last_spec, act.pairs.n, act.pairs.dim)
        points = compute.tradeoff(act, specs, fit_on=fit_on,
                                  title=f"Trade-off of {method_label(method)}'s settings")
        st.plotly_chart(af.tradeoff_figure(points, x_label="gap closed (1 − RMG after / before)"),
                        key="close_tradeoff_fig", config={"displaylogo": False})
        how = points[0]["how"] if points else ws.last_spec.protocol
        st.caption(f"How obtained (each point): {plain_text(how, None)}. Top right is best: the "
                   "gap closed and nothing lost. The Anatomy page has the full costs "
                   "(cross-modal R@1/R@5, neighbourhoods, zero-shot).")
