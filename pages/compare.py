"""Compare: every method (rows) on the current pairs, and every model that embedded them.

The paper's Tables 2-5 in one view: ITR / TIR, IMR / TMR, Fréchet distance and mixed-pool
recall@5/10/20, the best value of each column marked, as a table or a heatmap; on request,
what closing buys as more columns (grouping of the mixed pool, cross-modal transfer, the
requested-modality rate; :func:`gapviz.compare.with_gains`), with their intervals. Each cell
comes from the app's shared caches (:mod:`ui.compute`), so a method fitted on another page
is not fitted again, and the numbers are those of ``gapviz compare`` (the command is shown
under the table).

Rows are measured one after the other and shown as they come (a first visit fits the held-out
methods five times each); every row is cached per dataset, method, parameters and protocol,
so a later visit draws at once. The shuffled-pairs check is a null control: its rows say
"shuffled" everywhere (table, heatmap, exports) and nothing is marked best.
"""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from gapviz import exports
from gapviz.compare import significance as column_significance
from gapviz.compare import (COMPARE_KEYS, GAIN_COLUMNS, ComparisonRow, compare_row,
                            comparison_table, crowned, format_cell, params_text, rows_to_columns,
                            run_title, with_gains)
from gapviz.figures import palette
from gapviz.figures.compare import compare_heatmap, measure_help, measure_label
from gapviz.measure_info import LEGEND
from gapviz.measure_info import label as info_label
from gapviz.methods import is_score_correction, method_class
from gapviz.protocols import Provenance, chance_recall
from gapviz.runs import planned_spec
from gapviz.safety import plain_text
from gapviz.tables import run_cells
from gapviz.workspace import DEMO_DATASET, Active
from ui import compute, links
from ui import export_menu as export_ui
from ui.components import guard, method_label, method_names
from ui.frame import page_header
from ui.scoring import PROTOCOL_HELP, PROTOCOL_LABELS
from ui.state import keep, workspace

#: Background of the best cell of each column.
BEST_STYLE = palette.BEST_CELL_STYLE
#: Background of a best cell that noise explains, and of its runner-up.
NOISE_STYLE = palette.NOISE_CELL_STYLE
#: Methods left out of the default selection because they are the slowest rows (under their
#: default protocol, held-out, five fits each: Laplace OT a few seconds on 2,500 pairs on 2
#: cores, the VLAP map tens of seconds to minutes); the user adds them in one click.
SLOW_METHODS = ("ot", "vlap")
MEASURE_CACHE_ENTRIES = 256
#: Seconds of measuring after which the rows measured so far are shown while the others run
#: (a cached page draws faster than this and is not redrawn row by row).
PARTIAL_AFTER_S = 0.4

ws = workspace()
act = page_header("Compare", "every method and every model on the same pairs", link="compare")
ds = act.dataset
names = method_names()
offered = (["orig"] if "orig" in names else []) + [m for m in names if m != "orig"]


def _chosen(name: str) -> dict | None:
    """The parameters set on Close the gap for the method chosen there, else None (its
    defaults; :func:`gapviz.runs.planned_spec` lowers a default a fold cannot take)."""
    return ws.method_params if name == ws.method and ws.method_params else None


def _row(a: Active, name: str) -> ComparisonRow:
    """One row of the table: ``name`` on model ``a`` under the chosen protocol, obtained by the
    app's shared runner (a method fitted on another page is not fitted again) and measured,
    as ``gapviz compare`` obtains it (:func:`gapviz.compare.compare_row`)."""
    return compare_row(compute.runner(), compute.run_data(a), name,
                       model=a.model if len(models) > 1 else "", params=_chosen(name),
                       protocol=_protocol(name), allow_pairing_leak=allow_leak, shuffled=shuffled,
                       lower_chosen=True)


def _active_for(model: str) -> Active:
    return Active(ds, model, ds.models[model], ds.hashes[model])


def _cli_command(models: list[str], methods: list[str]) -> tuple[str, str]:
    """The ``gapviz compare`` line that prints this table, and a note on its sources."""
    from gapviz.cli.compare import command_line
    from gapviz.methods import method_params

    settings = {}
    for name in methods:
        defaults = method_params(name)
        spec, _ = planned_spec(name, _chosen(name), act.pairs.n, act.pairs.dim,
                               protocol=_protocol(name), lower_chosen=True)
        changed = {k: v for k, v in spec.param_dict.items() if defaults.get(k, object()) != v}
        if changed:
            settings[name] = changed
    first = ds.models[models[0]]
    options = {}
    if first.is_simulated:
        sources = [f"demo:{ds.models[m].meta.get('profile', 'clip')}" for m in models]
        if ds.name != DEMO_DATASET:
            options = {"--n": first.n, "--demo-seed": first.meta.get("seed", 0)}
        note = "The simulated profiles are regenerated by the CLI from the same seed."
    else:
        sources = [f"{exports.slug(m)}.npz" for m in models]
        note = ("Give the embeddings files of the models (the Data page's uploads, or `gapviz "
                "embed` output), same pairs in each.")
    if protocol_choice != "default":
        options["--protocol"] = protocol_choice
    if allow_leak:
        options["--allow-pairing-leak"] = True
    if shuffled:
        options["--shuffled-control"] = True
    return command_line(sources, methods, settings, options), note


# ---------------------------------------------------------------------------------------------
# controls
# ---------------------------------------------------------------------------------------------
models_all = list(ds.models)
with st.container(border=True):
    c1, c2 = st.columns([2.2, 1.4], vertical_alignment="bottom")
    methods = c1.multiselect("Methods (rows)", offered, format_func=method_label,
                             **keep("compare_methods", [m for m in offered if m not in SLOW_METHODS
                                                        and not is_score_correction(m)]),
                             help="Each is fitted once per model and cached: the other pages "
                                  "reuse the fits, and this table reuses theirs. Laplace OT and "
                                  "VLAP are left out at first: held-out, each takes five fits "
                                  "(VLAP's are trainings: tens of seconds or more). The score "
                                  "corrections (z-scored similarities, CSLS, QB-Norm, DBNorm, "
                                  "NNN: they change scores, not embeddings) are a pick away.")
    if len(models_all) > 1:
        models = c2.multiselect("Models", models_all, **keep("compare_models", [act.model]),
                                help="The same pairs embedded by several models (added on Data).")
    else:
        models = [act.model]
        c2.caption(f"Model: **{plain_text(act.model)}**. Embed the same pairs with another model on **Data** "
                   "to compare models too.")
    methods = [m for m in offered if m in methods]
    models = [m for m in models_all if m in models]
    p1, p2, p3, p4, p5 = st.columns([1.6, 1.4, 1.2, 1.2, 1.2], vertical_alignment="bottom")
    protocol_choice = p1.selectbox(
        "Protocol", ["default", "transductive", "held-out"], help=PROTOCOL_HELP,
        format_func=lambda p: "Each method's default" if p == "default" else PROTOCOL_LABELS[p],
        **keep("compare_protocol", "default"))
    allow_leak = protocol_choice == "transductive" and p2.checkbox(
        "Score Procrustes, VLAP and score corrections on their own fit pairs",
        **keep("compare_allow_leak", False),
        help="Methods that learn from the pairing memorise their fit pairs, and a score "
             "correction's banks would hold each query's own pair; their transductive numbers "
             "are shown only if you ask, marked ⚠.")
    shuffled = p3.toggle("Shuffled-pairs check", **keep("compare_shuffled", False),
                         help="Captions permuted (seeded, none keeps its own): there is nothing "
                              "to find, so every honest row must fall to chance.")
    p4.toggle("Test the differences", **keep("compare_significance", True),
              help="Each column's best against its runner-up on the same pairs: a paired "
                   "bootstrap over pairs (200 resamples, p < 0.05). A win that noise explains "
                   "is not crowned.")
    gains_on = p5.toggle("What closing buys", **keep("compare_gains", False),
                         help="More columns: k-means on the mixed pool against the labels "
                              "(V-measure, ARI) and its modality purity, probes and "
                              "substitution across modalities, and the share of a query's "
                              "top 10 in the modality it asked for; about a second per row "
                              "the first time.")

if not methods or not models:
    st.info("Pick at least one method and one model.", icon=":material/checklist:")
    st.stop()


# ---------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------
def _protocol(name: str) -> str:
    if name == "orig":
        return "transductive"
    return method_class(name).default_protocol if protocol_choice == "default" else protocol_choice


def _partial(done: list[ComparisonRow]) -> None:
    """The rows measured so far, while the others are (no best marked yet)."""
    keys_so_far = [k for k in COMPARE_KEYS if any(k in r.metrics for r in done)]
    frame = comparison_table(done, keys_so_far, label=method_label, describe=params_text)
    if frame.empty:
        return
    if len(models) == 1:
        frame = frame.drop(columns=["model"])
    live.dataframe(frame.style.format({k: (lambda v, k=k: format_cell(k, v)) for k in keys_so_far}),
                   width="stretch", hide_index=len(models) == 1,
                   column_config={k: st.column_config.NumberColumn(measure_label(k))
                                  for k in keys_so_far})


def _slow(task: tuple[str, str]) -> bool:
    """A row that fits K times (held-out, fit-on) or a method that trains: measured last."""
    name = task[1]
    return _protocol(name) != "transductive" or name in SLOW_METHODS


failed = []
tasks = [(m, n) for m in models for n in methods]
# Quick rows first, so the rows shown while the others run are many; the table keeps the
# order of the menus.
order = sorted(range(len(tasks)), key=lambda i: _slow(tasks[i]))
measured: dict[int, ComparisonRow] = {}
bar = st.progress(0.0, text="Measuring…") if len(tasks) > 1 else None
live = st.empty()  # the rows so far while measuring; then the table, heatmap and trade-off
started = time.perf_counter()
for done, i in enumerate(order):
    model, name = tasks[i]
    if bar is not None:
        bar.progress(done / len(tasks), text=f"{model}: {method_label(name)} ({done + 1} of {len(tasks)})"
                     + (". The rows so far are below; the best of each column, the heatmap and "
                        "the trade-off come once every row is in (each row is kept: the next "
                        "visit is instant)." if measured else ""))
    try:
        measured[i] = _row(_active_for(model), name)
    except (ValueError, RuntimeError) as err:  # this row cannot run here; the others go on
        failed.append((model, name, str(err)))
    if done + 1 < len(tasks) and time.perf_counter() - started > PARTIAL_AFTER_S:
        _partial([measured[j] for j in sorted(measured)])
rows: list[ComparisonRow] = [measured[j] for j in sorted(measured)]
if bar is not None:
    bar.empty()
live.empty()  # the partial table goes; the full view is drawn in its place


@st.cache_data(max_entries=MEASURE_CACHE_ENTRIES, show_spinner=False)
def _gain_outcomes(key: str, _run, labels: tuple | None, k: int):
    """What closing buys of one run's scored pairs (cached by the run's key, labels and k)."""
    from gapviz.closing_gains import gain_outcomes

    return gain_outcomes(_run.images, _run.texts, labels=list(labels) if labels else None,
                         n_clusters=k, scores=_run.scores)


@st.cache_data(max_entries=MEASURE_CACHE_ENTRIES, show_spinner=False)
def _pool_k(key: str, _pairs) -> int:
    """k of the mixed pool's k-means for one model's pairs (cached by their content hash):
    the classes, else chosen by silhouette on the raw pairs."""
    from gapviz.closing_costs import pair_labels
    from gapviz.closing_gains import pool_k

    return pool_k(_pairs.image_embeddings, _pairs.text_embeddings, labels=pair_labels(_pairs))


gains_seconds = None
if gains_on:
    with guard("measure what closing buys"), st.spinner("Measuring what closing buys…"):
        gains_started = time.perf_counter()
        rows = with_gains(rows, {m: ds.models[m] for m in models},
                          n_clusters={m: _pool_k(ds.hashes[m], ds.models[m]) for m in models},
                          outcomes=lambda run, labels, k: _gain_outcomes(run.key, run, labels, k))
        gains_seconds = time.perf_counter() - gains_started
columns = rows_to_columns(rows)
if not columns:
    for model, name, reason in failed:
        st.error(f"{method_label(name)} on {plain_text(model)}: {plain_text(reason, None)}")
    st.stop()

keys = [k for k in (*COMPARE_KEYS, *(GAIN_COLUMNS if gains_on else ()))
        if any(k in c for c in columns.values())]
# A row scored on its own fit pairs (⚠) is never crowned; nothing is crowned in the check.
best = crowned(rows, keys, shuffled=shuffled)



@st.cache_data(max_entries=MEASURE_CACHE_ENTRIES, show_spinner=False)
def _outcomes(key: str, _run):
    from gapviz.intervals import pair_outcomes

    return pair_outcomes(_run.images, _run.texts, report=_run.report, hubness=False)


@st.cache_data(max_entries=MEASURE_CACHE_ENTRIES, show_spinner=False)
def _significance(run_keys: tuple, measures: tuple, _rows) -> dict[str, dict]:
    """Each column's best against its runner-up on the same pairs (paired bootstrap,
    :func:`gapviz.compare.significance`, as ``gapviz compare`` prints it), cached by the
    runs' keys."""
    return column_significance(_rows, list(measures),
                               outcomes=lambda run: _outcomes(run.key, run))


significance = {}
if st.session_state.get("compare_significance", True) and not shuffled:
    with guard("test the differences"), st.spinner("Testing each column's best against its runner-up…"):
        significance = _significance(tuple(r.run.key for r in rows if r.run is not None),
                                     tuple(keys), rows)
table = comparison_table(rows, keys, label=method_label, describe=params_text)
if len(models) == 1:
    table = table.drop(columns=["model"])
records = [{"run": r.label, "method": method_label(r.method), "model": r.model or act.model,
            "parameters": params_text(r.method, r.params), "title": run_title(r, method_label),
            "provenance": Provenance(**{k: v for k, v in r.provenance.items()
                                        if k != "pool_size"})} for r in rows]


def _style(frame: pd.DataFrame):
    styler = frame.style.format({k: (lambda v, k=k: format_cell(k, v)) for k in keys})

    def mark(col: pd.Series) -> list[str]:
        winners = best.get(col.name, set())
        test = significance.get(col.name)
        if test is not None and not test["significant"]:  # within noise of the runner-up
            return [NOISE_STYLE if run in (test["best"], test["runner_up"]) else ""
                    for run in col.index]
        return [BEST_STYLE if run in winners else "" for run in col.index]

    return styler.apply(mark, subset=keys)


recall_ks = [int(key[2:]) for key in keys if key.startswith("R@") and key[2:].isdigit()]


def _chance_bound(k: int) -> float:
    """Chance level of R@K in this pool plus 4 standard errors."""
    c = chance_recall(n_scored, k)
    return c.level + 4 * c.se


def _chance_line() -> str:
    """Chance level of each R@K column in this pool, and in the shuffled check which rows
    stay within chance + 4 standard errors."""
    parts = []
    for k in recall_ks:
        c = chance_recall(n_scored, k)
        parts.append(f"R@{k} {c.level:.3f} ± {c.se:.3f}")
    line = (f":material/casino: Chance level in this mixed pool of {2 * n_scored:,} items: "
            + ", ".join(parts) + ".")
    if shuffled:
        above = sorted({r["run"] for r in records for k in recall_ks
                        if columns[r["run"]].get(f"R@{k}", 0.0) > _chance_bound(k)})
        line += (" **Shuffled-pairs check**: captions permuted, nothing to find. "
                 + (f"Above chance + 4 SE: {', '.join(above)}." if above else
                    "Every row is within chance + 4 SE."))
    return line


def _show_table_and_heatmap() -> None:
    view_tab, heat_tab, trade_tab = st.tabs(["Table", "Heatmap", "Trade-off"], key="compare_view")
    with view_tab:
        config = {k: st.column_config.NumberColumn(measure_label(k), help=measure_help(k)) for k in keys}
        config["method"] = st.column_config.TextColumn("method", pinned=True)
        config["parameters"] = st.column_config.TextColumn("parameters", width="medium")
        config["scored"] = st.column_config.NumberColumn("scored", format="localized")
        config["fitted"] = st.column_config.TextColumn(
            "fitted", width="medium", help="Pairs each fit saw. Held-out: K folds, each fitted on the other "
                           "folds' pairs (\"1,000 of 2,000\": a seeded subsample of them, as "
                           "Sinkhorn's fit size asks).")
        st.dataframe(_style(table), key="compare_table", width="stretch",
                     height=min(35 * (len(table) + 1) + 3, 640), column_config=config,
                     hide_index=len(models) == 1)
        st.caption(_chance_line())
        if significance:
            ties = [f"{info_label(k)} ({t['best']} vs {t['runner_up']}, p = {t['p_value']:.2f})"
                    for k, t in significance.items() if not t["significant"]]
            st.caption(":material/balance: Green: the column's best, ahead of the runner-up "
                       "beyond noise (paired bootstrap over the same pairs, 200 resamples, "
                       "p < 0.05). Amber: best and runner-up within noise"
                       + (": " + "; ".join(ties) if ties else "") + ".")
        marks = (" Nothing is highlighted: on shuffled pairs no run can be best." if shuffled
                 else " The best of each column is highlighted.")
        st.caption(f"{LEGEND}{marks} ITR/TIR: own-modality-first ratio (∞: no query ever gets "
                   "the other modality first); IMR/TMR: mean rank of the best other-modality "
                   "item; R@K: mixed-pool recall. Ratios and ranks to three significant "
                   "figures, the other measures to three decimals.")
        if gains_on:
            _show_gain_intervals()
    with heat_tab:
        st.plotly_chart(heat, key="compare_heatmap", config=export_ui.chart_config(
            "compare-heatmap-shuffled-control" if shuffled else "compare-heatmap"))
        if shuffled:
            st.caption("Shuffled-pairs control: a null check, not a ranking, so no cell is "
                       "coloured or starred as best. ⚠ (amber) marks a recall above chance + 4 "
                       "standard errors, where a protocol would be finding pairs that are not "
                       "there. Each row names its protocol.")
        else:
            st.caption("Each column is coloured on its own scale: dark = the best run of that "
                       "measure, light = the worst (ITR/TIR/IMR/TMR on a log scale). ★ marks "
                       "the best value. Each row names its protocol.")
    with trade_tab:
        if st.toggle("Compute what each run keeps", key="compare_tradeoff",
                     help="Gap closed (1 − RMG after / before) against cross-modal R@1 and "
                          "each modality's 10-nearest neighbourhoods kept; one point per run."):
            fig = _tradeoff()
            st.plotly_chart(fig, key="compare_tradeoff_fig",
                            config=export_ui.chart_config("compare-tradeoff"))
            st.caption("Top right is best: the gap closed and nothing lost. Each run is a "
                       "number, its two markers what it kept (hover for the values; a click on "
                       "the legend hides a run). Each point under its row's protocol.")


def _show_gain_intervals() -> None:
    """What closing buys with its 95% intervals, one row per run (the table's gain columns)."""
    from gapviz.closing_costs import label_source

    shown = [k for k in GAIN_COLUMNS if k in keys]
    if not shown:
        return
    records_ci = []
    for r in rows:
        if not r.ok:
            continue
        cells = {"run": run_title(r, method_label)}
        for k in shown:
            lo, hi = r.ci.get(k, (float("nan"), float("nan")))
            value = r.metrics.get(k)
            cells[info_label(k)] = (format_cell(k, value)
                                    + (f" [{format_cell(k, lo)}, {format_cell(k, hi)}]"
                                       if lo == lo and hi == hi else ""))
        records_ci.append(cells)
    st.dataframe(pd.DataFrame(records_ci), hide_index=True, key="compare_gains_ci",
                 width="stretch")
    source = label_source(act.pairs)
    st.caption(
        ":material/trending_up: What closing buys, each run's scored pairs as its protocol "
        "scored them: seeded k-means on the mixed pool with one k per model (the number of "
        "label classes, else chosen by silhouette on the raw pairs), V-measure and ARI against "
        "the labels, modality purity (share of clusters more than 90% one modality); linear "
        "probes fitted on one modality and scored on the other; substitution (the nearest item "
        "of the other modality has the query's label); requested modality (share of the other "
        "modality in a query's top 10, exact, a tie counting against the query). "
        + (f"Labels: {source}. " if source else
           "No labels here: only purity and the requested-modality rate. ")
        + "95% bootstrap intervals over the scored pairs (200 resamples; k-means clusters and "
          "probes held fixed; V-measure basic, bias-corrected). `gapviz evaluate --anatomy "
          "--method NAME` gives the same per method, raw beside it."
        + (f" Measured in {gains_seconds:.1f} s." if gains_seconds is not None else ""))


def _tradeoff():
    """One point per row (the shared runner keeps each once per data and run, whichever page
    asked for it)."""
    from gapviz.figures import anatomy as af

    points = []
    for r in rows:
        if r.method == "orig" or r.run is None:
            continue
        a = _active_for(r.model or act.model)
        points += compute.tradeoff(a, [r.run.spec], labels=[run_title(r, method_label)],
                                   title="Measuring what each run keeps")
    title = ("What closing the gap costs: shuffled-pairs control" if shuffled
             else "What closing the gap costs")
    return af.tradeoff_figure(points, x_label="gap closed (1 − RMG after / before)", title=title)


def _heatmap_title() -> tuple[str, str]:
    """The heatmap's title and subtitle: they say what the runs are, and travel with a PNG/SVG
    export."""
    where = f"{plain_text(ds.name)} · {', '.join(plain_text(m) for m in models)} · {n_scored:,} pairs"
    if shuffled:
        return ("Shuffled-pairs control (captions permuted): every row should be at chance",
                f"{where} · a null check, not a ranking: nothing is marked best")
    return "Gap-closing methods compared", f"{where} · ★ the best of each column"


n_scored = next(iter(records))["provenance"].n_scored
# The heatmap's rows read as the table's, with the protocol (and "shuffled") in each name.
display = {r["title"]: columns[r["run"]] for r in records}
above_chance = ({(r["title"], f"R@{k}") for r in records for k in recall_ks
                 if columns[r["run"]].get(f"R@{k}", 0.0) > _chance_bound(k)} if shuffled else set())
heat_title, heat_subtitle = _heatmap_title()
heat = compare_heatmap(display, keys, title=heat_title, subtitle=heat_subtitle, rank=not shuffled,
                       flagged=above_chance)
with live.container(), guard("show the comparison"):
    _show_table_and_heatmap()
for model, name, reason in failed:
    st.caption(f":material/block: {method_label(name)} on {plain_text(model)} could not run: "
               f"{plain_text(reason, None)}")
for r in records:
    if r["provenance"].warning:
        st.warning(f"{r['run']}: {plain_text(r['provenance'].warning, None)}",
                   icon=":material/warning:")

e1, e2 = st.columns([5, 1], vertical_alignment="center")
with e1.expander("The same table from the command line"), guard("write the command"):
    cmd, note = _cli_command(models, methods)
    st.code(cmd, language="bash")
    st.caption(note + " Use `--format table|csv|json` for other layouts.")


def _run_cells(r: ComparisonRow) -> dict[str, str]:
    """How a run was obtained, for the measures CSV / markdown (``gapviz.tables.run_cells``)."""
    text = params_text(r.method, r.params)
    if r.method != "orig":
        return run_cells(r.provenance, params=text)
    return run_cells(None, params=text, n_scored=r.provenance.get("n_scored", n_scored),
                     shuffled=bool(r.provenance.get("shuffled")))


def _report() -> str:
    title = ("Shuffled-pairs control of gap-closing methods (captions permuted: every row "
             "should be at chance)" if shuffled else "Comparison of gap-closing methods")
    return exports.session_report(
        act.pairs, columns, keys=keys, title=title, dataset=ds.name, source=ds.source,
        model=", ".join(models), method=None, figures=[("Comparison heatmap", heat)],
        notes=[f"{r['run']}: {r['method']}" + (f" ({r['parameters']})" if r["parameters"] else "")
               + f"; how obtained: {r['provenance'].summary()}" for r in records],
        mark_best=not shuffled)


recipe = links.recipe_for("compare", act, None, methods=methods, models=models,
                          protocol=protocol_choice, allow_leak=allow_leak, shuffled=shuffled,
                          chosen={"method": ws.method, "params": ws.method_params})
links.write(recipe)
with e2, guard("prepare the exports"):
    links.save_button(recipe, key="compare_recipe")
    export_ui.export_menu(
        export_ui.ExportItems(columns=columns, keys=keys, runs={r.label: _run_cells(r) for r in rows},
                              figures=[("shuffled-control heatmap" if shuffled else "heatmap", heat)],
                              report=_report, mark_best=not shuffled),
        prefix="compare", stem=f"compare-{ds.name}" + ("-shuffled-control" if shuffled else ""))
