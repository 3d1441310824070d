"""The Streamlit edge of the app's computations: one shared runner, its progress, cached views.

How a run is obtained (slice, refit or the full protocol) is decided by
:class:`gapviz.runs.Runner` alone; this module gives it process-wide stores
(:func:`st.cache_resource`, shared by every session), shows a progress bar while it works, and
caches what a page draws of a run (:func:`st.cache_data`, keyed by the run's key: the
content hash of the pairs and the spec's digest, never Streamlit's sampling hash of arrays;
array arguments are ``_``-prefixed so Streamlit does not hash them at all). The PCA of a large
pool is kept once per pool for every session, while one holds it
(:data:`gapviz.workspace.POOLS`). UMAP layouts run in the background
(:class:`gapviz.projection.LayoutJobs`); open_clip models are held once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from concurrent.futures import Future
from typing import Any, Callable, Sequence

import numpy as np
import streamlit as st

from gapviz import hosting
from gapviz.figures.atlas import PLOTLY_MAX_POINTS
from gapviz.methods import method_label
from gapviz.methods.ot import foreground, use_solver_processes
from gapviz.projection import LayoutJobs, Projection, joint_pca, warm_up_umap
from gapviz.compare import COMPARE_KEYS, ComparisonRow, compare_row, rows_to_columns
from gapviz.methods import is_score_correction, menu_order, method_class
from gapviz.runs import (LRUStore, NeighbourSolves, Run, RunData, RunMemory, Runner, RunsAhead,
                         RunSpec, first_moves, needs_leak_consent, planned_spec, slider_values)
from gapviz.solvers import SolverProcesses
from gapviz.views import EmbeddingView
from gapviz.workspace import POOLS, Active


#: Entries of the shared stores: fit sets (eigenvectors, OT plans), finished runs, trade-off
#: points, UMAP layouts, cached views.
FIT_ENTRIES = 12
RUN_ENTRIES = 64
POINT_ENTRIES = 256
UMAP_ENTRIES = 8
VIEW_ENTRIES = 64
#: Sweeps kept (each a few dozen rows of numbers).
SWEEP_ENTRIES = 16
#: Seconds between checks of a background UMAP job.
UMAP_POLL_SECONDS = 1.0
#: Methods left out of the Compare page's default selection because they are the slowest rows
#: (under their default protocol, held-out, five fits each: Laplace OT a few seconds on 2,500
#: pairs on 2 cores, the VLAP map tens of seconds to minutes); the user adds them in one click.
COMPARE_SLOW_METHODS = ("ot", "vlap")
#: Largest pool whose Compare rows are obtained ahead, in the background (beyond it a row's
#: fits and measures take long enough, and d x d fits memory enough, to crowd what the user
#: asks for meanwhile).
AHEAD_MAX_PAIRS = 5_000
AHEAD_MAX_DIM = 1_024


@st.cache_resource
def runner() -> Runner:
    """The process-wide runner: its stores are shared by every session (a fit made for one
    visitor's page serves every page of every visitor with the same data)."""
    return Runner(RunMemory(LRUStore(FIT_ENTRIES), LRUStore(RUN_ENTRIES), LRUStore(POINT_ENTRIES)))


def run_data(act: Active) -> RunData:
    """The active pairs as a run's data (their content hash computed once, when loaded).

    Every measure and run of the pages starts here: in a hosted demo a pool past the
    session's compute budget is refused with what to do (``gapviz.hosting.check_pool_work``).
    """
    hosting.check_pool_work(act.pairs.n, act.pairs.dim)
    return RunData(act.pairs.image_embeddings, act.pairs.text_embeddings, act.key,
                   f"{act.dataset.name} · {act.model}")


def _with_progress(title: str, compute: Callable[[Callable[[float, str], None]], Any],
                   slot: Any = None) -> Any:
    """``compute(progress)`` with a progress bar and a spinner while it runs, both in ``slot``
    (an ``st.empty``; a new one by default), emptied afterwards. Nothing Streamlit runs inside
    the stored computation itself, so a stored result never replays elements."""
    slot = st.empty() if slot is None else slot
    with slot.container():
        bar = st.progress(0.0, text=f"{title}…")

        def progress(fraction: float, message: str = "") -> None:
            bar.progress(min(max(float(fraction), 0.0), 1.0),
                         text=f"{title}: {message}" if message else f"{title}…")

        try:
            with st.spinner(f"{title} (once; stored afterwards)…"):
                return compute(progress)
        finally:
            slot.empty()


_solvers: SolverProcesses | None = None
_solvers_lock = threading.Lock()


def solver_processes() -> SolverProcesses | None:
    """The server's solver processes (:mod:`gapviz.solvers`), made on the first page of the
    process and kept for its life, set as the process's (every page run sets them again:
    idempotent, cheap). The OT and Sinkhorn sliders' solves then run outside the server's
    Python process. They start once Close the gap, the page with the sliders, has drawn
    (:func:`first_views_ahead`), at the first slider move or solve ahead of one (which then
    runs in the process), or when the server's warm-up is done (:mod:`ui.warmup`); not with
    the other pages nor with a fit: their start (about 0.9 CPU-second for two) would share the
    CPUs with what a visitor waits for there (the Compare rows). None when none are wanted;
    when they cannot be started the pool closes itself and the process solves alone."""
    global _solvers
    with _solvers_lock:
        if _solvers is None:
            wanted = solver_process_count()
            if wanted == 0:
                return None
            # nothing is spawned here; a start that fails closes the pool (solves stay here)
            _solvers = SolverProcesses(wanted, start=False)
        use_solver_processes(_solvers)
    return _solvers


#: Environment variable: how many solver processes the server starts (0: none, the server
#: solves alone; default: one per CPU, at most 4). Each holds 0.2-0.4 GiB.
SOLVER_PROCESSES_ENV = "GAPVIZ_SOLVER_PROCESSES"


def solver_process_count() -> int | None:
    """The solver processes asked for in :data:`SOLVER_PROCESSES_ENV` (None: the default)."""
    text = os.environ.get(SOLVER_PROCESSES_ENV, "").strip()
    if not text:
        return None
    try:
        return max(0, min(int(text), 16))
    except ValueError:
        logging.getLogger(__name__).warning("%s=%r is not a whole number: the default is used",
                                            SOLVER_PROCESSES_ENV, text)
        return None


@st.cache_resource
def neighbour_solves() -> NeighbourSolves:
    """The background solves of neighbouring slider values (one worker: it only runs while the
    user looks at the page, and must not crowd the next move), shared by every session."""
    return NeighbourSolves(runner())


@st.cache_resource
def runs_ahead() -> RunsAhead:
    """The background worker that obtains what a page will likely ask for next (one worker,
    shared by every session; each request made once per process)."""
    return RunsAhead()


def start_solver_processes() -> None:
    """Start the server's solver processes unless they run (or none are wanted)."""
    solvers = solver_processes()
    if solvers is not None:
        solvers.start()


def compare_methods() -> list[str]:
    """The Compare page's rows, in menu order: "orig" first, then every method."""
    names = menu_order()
    return (["orig"] if "orig" in names else []) + [m for m in names if m != "orig"]


def compare_default_methods() -> list[str]:
    """The rows the Compare page opens with: every method but the slowest and the score
    corrections (a pick away)."""
    return [m for m in compare_methods()
            if m not in COMPARE_SLOW_METHODS and not is_score_correction(m)]


def compare_protocol(name: str, choice: str = "default") -> str:
    """The protocol of ``name``'s Compare row: its own default, or the page's choice."""
    if name == "orig":
        return "transductive"
    return method_class(name).default_protocol if choice == "default" else choice


def compare_page_row(act: Active, name: str, **options: Any) -> ComparisonRow:
    """One row of the Compare page: ``name`` on ``act`` under the page's protocol choice,
    obtained by the shared runner (a method fitted on another page is not fitted again) and
    measured, as ``gapviz compare`` obtains it. ``options``: those of :func:`_page_row`."""
    return _page_row(runner(), run_data(act), name, **options)


def _page_row(r: Runner, data: RunData, name: str, *, params: dict | None = None,
              protocol: str = "default", allow_leak: bool = False, shuffled: bool = False,
              model: str = "") -> ComparisonRow:
    return compare_row(r, data, name, model=model, params=params,
                       protocol=compare_protocol(name, protocol), allow_pairing_leak=allow_leak,
                       shuffled=shuffled, lower_chosen=True)


#: Entries of the Compare page's caches of per-run outcomes and of significance tables.
SIGNIFICANCE_ENTRIES = 256


@st.cache_data(max_entries=SIGNIFICANCE_ENTRIES, show_spinner=False)
def _pair_outcomes(key: str, _run: Run):
    from gapviz.intervals import pair_outcomes

    return pair_outcomes(_run.images, _run.texts, report=_run.report, hubness=False)


@st.cache_data(max_entries=SIGNIFICANCE_ENTRIES, show_spinner=False)
def _significance(run_keys: tuple, measures: tuple, _rows) -> dict[str, dict]:
    from gapviz.compare import significance

    return significance(_rows, list(measures), outcomes=lambda run: _pair_outcomes(run.key, run))


def compare_significance(rows: Sequence[ComparisonRow], keys: Sequence[str]) -> dict[str, dict]:
    """Each column's best against its runner-up on the same pairs (a paired bootstrap:
    :func:`gapviz.compare.significance`, as ``gapviz compare`` prints it), cached by the
    runs' keys and the measures: the Compare page and the server's warm-up share it."""
    return _significance(tuple(r.run.key for r in rows if r.run is not None), tuple(keys), rows)


def compare_columns(rows: Sequence[ComparisonRow], extra: Sequence[str] = ()) -> list[str]:
    """The Compare table's measure columns for ``rows``: those of :data:`COMPARE_KEYS` (then
    ``extra``) that some row has."""
    columns = rows_to_columns(rows)
    return [k for k in (*COMPARE_KEYS, *extra) if any(k in c for c in columns.values())]


def compare_significance_jobs(actives: Sequence[Active], methods: Sequence[str],
                             chosen: Callable[[str], dict | None]) -> list[Callable[[], Any]]:
    """The Compare page's significance test of its opening table (``methods`` on each of
    ``actives``, default protocol, the parameters ``chosen(name)``), as one background job
    to run after its rows (:func:`compare_row_jobs`): it takes the rows from the runner, in
    the page's order, and fills the cache the page reads. None for pools whose work is not
    done ahead."""
    datas = _ahead_data(actives)
    if not actives or any(a.key not in datas for a in actives):
        return []
    shared = runner()
    model = len(actives) > 1

    def job() -> dict[str, dict]:
        rows = []
        for a in actives:
            for m in methods:
                try:
                    rows.append(_page_row(shared, datas[a.key], m, params=chosen(m),
                                          model=a.model if model else ""))
                except (ValueError, RuntimeError):  # the page leaves such a row out too
                    continue
        return compare_significance(rows, compare_columns(rows))

    return [job]


def compare_order(tasks: Sequence[tuple[Any, str]], protocol: str = "default") -> list[int]:
    """The Compare page's order of its (model, method) rows, as indices: quick rows first (so
    the rows shown while the others run are many), then those that fit K times (held-out,
    fit-on) or train, each group in menu order."""
    return sorted(range(len(tasks)),
                  key=lambda i: compare_protocol(tasks[i][1], protocol) != "transductive"
                  or tasks[i][1] in COMPARE_SLOW_METHODS)


def compare_rows_ahead(actives: Sequence[Active], methods: Sequence[str],
                       chosen: Callable[[str], dict | None], *, protocol: str = "default",
                       allow_leak: bool = False, shuffled: bool = False,
                       from_the_end: bool = False) -> None:
    """Obtain the Compare page's rows in the background, one at a time, in the page's order
    (quick rows first), or with ``from_the_end`` in the reverse order: ``methods`` on each of
    ``actives`` (the models), with the parameters ``chosen(name)`` (those set on Close the gap
    for its method) and the page's controls.

    The Overview asks for the opening rows while the visitor reads it, in the page's order.
    The Compare page asks for its own rows from the end as it opens, while its own loop takes
    them from the first: the two meet in the middle, each taking the rows the other has done
    from the runner and waiting for the one under way (:meth:`gapviz.runs.Runner.run` never
    computes a run twice at once). A request is made once, and a newer one replaces what is
    left of an older request. Skipped past :data:`AHEAD_MAX_PAIRS` pairs or
    :data:`AHEAD_MAX_DIM` dimensions, for several captions per image, and in a hosted demo for
    anything but its built-in pairs (shared by every visitor, recognised by content hash; a
    visitor's own upload, simulated or not, is fitted when its Compare page asks)."""
    name, jobs = compare_row_jobs(actives, methods, chosen, protocol=protocol,
                                  allow_leak=allow_leak, shuffled=shuffled,
                                  from_the_end=from_the_end)
    if jobs:
        runs_ahead().request(name, jobs)


def compare_row_jobs(actives: Sequence[Active], methods: Sequence[str],
                     chosen: Callable[[str], dict | None], *, protocol: str = "default",
                     allow_leak: bool = False, shuffled: bool = False,
                     from_the_end: bool = False) -> tuple[Any, list[Callable[[], Any]]]:
    """The request :func:`compare_rows_ahead` makes: its name and its jobs (one per row, each
    obtaining the row exactly as the page does), none for pools it skips."""
    datas = _ahead_data(actives)
    actives = [a for a in actives if a.key in datas]
    shared = runner()
    tasks = [(a, m) for a in actives for m in methods]
    order = [tasks[i] for i in compare_order(tasks, protocol)]
    if from_the_end:
        order.reverse()
    params = {m: chosen(m) for m in methods}
    model = len(actives) > 1
    jobs = [lambda a=a, m=m: _page_row(shared, datas[a.key], m, params=params[m],
                                       protocol=protocol, allow_leak=allow_leak,
                                       shuffled=shuffled, model=a.model if model else "")
            for a, m in order]
    name = ("compare", tuple(a.key for a in actives), tuple(methods),
            repr(sorted((m, repr(p)) for m, p in params.items())), protocol, allow_leak, shuffled,
            from_the_end)
    return name, jobs


def _ahead_data(actives: Sequence[Active]) -> dict[str, RunData]:
    """The run data of those ``actives`` whose work may be done ahead, by content hash: up to
    :data:`AHEAD_MAX_PAIRS` pairs and :data:`AHEAD_MAX_DIM` dimensions, one caption per image,
    and in a hosted demo only its built-in pairs (shared by every visitor, recognised by
    content hash; a visitor's own upload, simulated or not, is fitted when a page asks)."""
    from .state import demo_keys

    hosted = hosting.hosted()
    actives = [a for a in actives if a.pairs.n <= AHEAD_MAX_PAIRS and a.pairs.dim <= AHEAD_MAX_DIM
               and a.pairs.groups is None and (not hosted or a.key in demo_keys())]
    try:  # resolved here, in the script's thread (Streamlit's caches belong to it)
        return {a.key: run_data(a) for a in actives}
    except ValueError:  # past a hosted demo's compute budget: the page says so when asked
        return {}


def first_view_specs(act: Active, names: Sequence[str],
                     skip: Callable[[str], bool] = lambda name: False) -> list[RunSpec]:
    """The first views Close the gap obtains ahead for ``names`` (but those ``skip`` names):
    each method whose sliders refit it (OT, Sinkhorn: a fit per fold, the menu's slowest first
    views) at the values the page would run for it, its defaults under its default protocol,
    unless that protocol needs the user's consent to score a method on its own fit pairs."""
    specs = []
    for name in names:
        default = method_class(name).default_protocol
        if skip(name) or needs_leak_consent(name, default):
            continue
        spec = planned_spec(name, None, act.pairs.n, act.pairs.dim, lower_chosen=True,
                            protocol=default, fit_on=None, allow_leak=False)[0]
        if slider_values(spec):
            specs.append(spec)
    return specs


def first_views_ahead(act: Active, specs: Sequence[RunSpec]) -> None:
    """Obtain the runs ``specs`` on ``act`` and their views (measures, PCA) in the background,
    before other work ahead: what the page now shown offers a click away (Close the gap: the
    first view of the methods whose fits take longest, at the values the page would run),
    then the runs of their likeliest first slider moves (:func:`first_move_jobs`). A spec the
    page then runs is found done or under way; another is never shown for it. The same limits
    as :func:`compare_rows_ahead`. The solver processes start too: the page offers the
    sliders, whose moves (and the solves ahead of them) need them ready."""
    jobs = first_view_jobs(act, specs) + first_move_jobs(act, specs)
    if jobs:
        runs_ahead().request(("first views", act.key, tuple(specs)), jobs, first=True)
    start_solver_processes()


def first_view_jobs(act: Active, specs: Sequence[RunSpec]) -> list[Callable[[], Any]]:
    """One job per spec, obtaining its run on ``act`` and the run's view (none for pools
    whose work is not done ahead: :func:`compare_rows_ahead`)."""
    data = _ahead_data([act]).get(act.key)
    if data is None:
        return []
    shared = runner()
    return [lambda s=s: shared.run(s, data).view for s in specs]


def first_move_jobs(act: Active, specs: Sequence[RunSpec]) -> list[Callable[[], Any]]:
    """One job per value a first slider move from each spec most likely goes to (one step
    either way of its first slider: :func:`gapviz.runs.first_moves`), obtaining that run and
    its view on ``act`` as the move would (:meth:`gapviz.runs.Runner.solve_ahead`), so the
    first move after a first view finds it done even when the look between them is too short
    to solve it on a busy machine; none for pools whose work is not done ahead."""
    data = _ahead_data([act]).get(act.key)
    if data is None:
        return []
    shared = runner()
    return [lambda s=s, v=v: shared.solve_ahead(s, data, v) for s in specs for v in first_moves(s)]


def run(act: Active, spec: RunSpec, fit_on: Active | None = None) -> Run:
    """The run ``spec`` on the active pairs (``gapviz.runs.Runner.run``), with a progress bar
    while it is computed. After a run with live sliders (OT, Sinkhorn), the slider values one
    step away are solved in the background while the user looks."""
    data = run_data(act)
    other = run_data(fit_on) if fit_on is not None else None
    r = runner()
    # the progress bar's place, made whether or not the run is computed, so that what the
    # page draws after it keeps its position (a live chart there stays mounted: ui.live_plot)
    slot = st.empty()
    if (data.key, spec) in r.memory.runs:  # kept, or obtained ahead of this slider move
        out = r.run(spec, data, fit_on=other)
    else:
        title = (f"{method_label(spec.method)} ({spec.protocol}"
                 f"{', shuffled' if spec.shuffled else ''}) on {act.pairs.n:,} pairs")
        out = _with_progress(title, lambda progress: r.run(spec, data, fit_on=other,
                                                           progress=progress), slot)
    if slider_values(spec) and fit_on is None:
        neighbour_solves().request(spec, data)
    return out


def raw_run(act: Active) -> Run:
    """The raw embeddings as a run (nothing fitted)."""
    return runner().run(RunSpec.make("orig"), run_data(act))


@st.cache_data(max_entries=VIEW_ENTRIES, show_spinner="Measuring…")
def _view(key: str, _run: Run) -> EmbeddingView:
    with foreground():  # the user waits for it: OT neighbours solved ahead pause meanwhile
        view = _run.view  # made once per run (maybe ahead of a slider move: NeighbourSolves)
    # The arrays live in the run already; do not copy them into the cache.
    return dataclasses.replace(view, images=None, texts=None)


def view(run: Run) -> EmbeddingView:
    """Measures, PCA and distance samples of a run's pairs (cached by the run's key). The
    view holds no arrays: take them from the run (``run.images``, ``run.texts``). Its spinner
    has a place of its own, made whether or not the view is computed (as :func:`run`'s
    progress bar)."""
    slot = st.empty()
    with slot.container():
        out = _view(run.key, run)
    slot.empty()
    return out


def active_raw_view(act: Active) -> EmbeddingView:
    return view(raw_run(act))


def tradeoff(act: Active, specs: Sequence[RunSpec], *, labels: Sequence[str] | None = None,
             fit_on: Active | None = None, title: str | None = None) -> list[dict]:
    """Trade-off points of ``specs`` on the active pairs (``Runner.tradeoff``; each point is
    kept once per data and run, whichever page asked), with a progress bar while missing
    points are computed."""
    stored = stored_tradeoff(act, specs, labels=labels)
    if stored is not None:
        return stored
    other = run_data(fit_on) if fit_on is not None else None
    title = title or f"Trade-off on {act.pairs.n:,} pairs"
    return _with_progress(title, lambda progress: runner().tradeoff(
        specs, run_data(act), labels=labels, before=raw_run(act).report, fit_on=other,
        progress=progress))


def stored_tradeoff(act: Active, specs: Sequence[RunSpec], *,
                    labels: Sequence[str] | None = None) -> list[dict] | None:
    """The trade-off points of ``specs`` if every one is kept already, else None."""
    r = runner()
    data = run_data(act)
    if not all((data.key, s) in r.memory.points for s in specs):
        return None
    return r.tradeoff(specs, data, labels=labels, before=raw_run(act).report)


def raw_projection(key: str, X: np.ndarray, Y: np.ndarray) -> Projection:
    """PCA of the raw mixed pool alone (content hash ``key``): the picture of a large pool
    without waiting for its measures (O(N^2 d) in :func:`active_raw_view`). One copy per
    pool for every session, kept while a session holds the pool
    (``gapviz.workspace.POOLS``), released when the last one ends."""
    if POOLS.has_view(key, "raw-pca"):
        return POOLS.view(key, "raw-pca", lambda: joint_pca(X, Y))
    with st.spinner("Projecting the pool…"):
        return POOLS.view(key, "raw-pca", lambda: joint_pca(X, Y))


def within_budget(act: Active) -> bool:
    """Whether the pages may measure the active pool (always, unless a hosted demo's budget
    refuses it)."""
    try:
        hosting.check_pool_work(act.pairs.n, act.pairs.dim)
    except hosting.HostedRefusal:
        return False
    return True


def active_projection(act: Active) -> Projection:
    """The raw pool's PCA: from the raw view when the measures are wanted anyway (small
    pools), on its own for pools past ``gapviz.figures.atlas.PLOTLY_MAX_POINTS``."""
    if 2 * act.pairs.n <= PLOTLY_MAX_POINTS and within_budget(act):
        return active_raw_view(act).projection
    return raw_projection(act.key, act.pairs.image_embeddings, act.pairs.text_embeddings)


# ---------------------------------------------------------------------------------------------
# UMAP in the background
# ---------------------------------------------------------------------------------------------
@st.cache_resource
def layouts() -> LayoutJobs:
    """Background UMAP layouts, one worker, shared by every session."""
    return LayoutJobs(LRUStore(UMAP_ENTRIES))


@st.cache_resource
def umap_warm_up() -> Future:
    """Compile UMAP's code in the background, once per server process (the first layout
    would otherwise wait tens of seconds for it); started when Explore is first opened."""
    return layouts().submit(warm_up_umap)


def umap_ready(act: Active, **params: Any) -> Projection | None:
    """The finished UMAP layout, or None while it runs (raises the job's error, if any)."""
    return layouts().ready(act.key, act.pairs.image_embeddings, act.pairs.text_embeddings,
                           **params)


# ---------------------------------------------------------------------------------------------
# models (open_clip), shared by the Data and Retrieval pages
# ---------------------------------------------------------------------------------------------
@st.cache_resource(max_entries=2, show_spinner="Loading the model (once)…")
def loaded_model(spec: Any) -> Any:
    """An open_clip model held across runs, pages and sessions (``gapviz.encode.ModelSpec``)."""
    from gapviz.encode import load_model

    return load_model(spec)


@st.cache_data(max_entries=128, show_spinner="Embedding your text…")
def embed_text(identity: str, text: str, _spec: Any) -> np.ndarray:
    """A typed text embedded by the model (keyed on the model's identity and the text)."""
    from gapviz.encode import embed_texts

    return embed_texts(loaded_model(_spec), [text])[0]


# ---------------------------------------------------------------------------------------------
# pool-size and caption sweeps in the background
# ---------------------------------------------------------------------------------------------
@st.cache_resource
def sweeps() -> Any:
    """Background sweeps (:class:`gapviz.sensitivity.SweepJobs`), one worker, shared by every
    session."""
    from gapviz.sensitivity import SweepJobs

    return SweepJobs(LRUStore(SWEEP_ENTRIES))
