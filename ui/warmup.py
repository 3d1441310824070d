"""A freshly started server's warm-up: what a first visitor's pages show of the built-in demo,
obtained before anyone asks.

``streamlit run app.py`` serves the app as an ASGI application (``app.app``, an ``st.App``),
and its start runs :func:`lifespan`: one background thread imports the pages' libraries,
loads the demo and hands the background worker (:func:`ui.compute.runs_ahead`) the runs a
new visitor's pages show of it, in the order a visitor meets them (:func:`warm_up_jobs`): the
raw embeddings' view (on every page), the Overview's closed view, the Compare page's opening
rows with their significance test and Close the gap's slowest first views (Laplace OT,
Sinkhorn); then it starts the solver processes, unless Close the gap or a slider move started them, and obtains the runs of those
methods' likeliest first slider moves (one step of the first slider, either way). The same
functions build the runs as the pages do, so they have the pages' keys: a page finds them
done or under way, never a different result.

The worker gives way to every page's own work (:class:`gapviz.runs.RunsAhead`), so a visitor
who arrives during the warm-up waits for no more than without it, and what a page asks for
ahead goes before what is left of the warm-up (which then runs on, not replaced); one who
arrives after it (a hosted demo's visitors, a link opened a minute after the start) waits as
a second visitor does. ``GAPVIZ_WARM_UP=0`` turns it off. Without ``streamlit run app.py``
(AppTest, a page file run directly) nothing warms up and the pages obtain what they show when
asked.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

#: Environment variable: "0" (or false / no / off) turns the warm-up off.
WARM_UP_ENV = "GAPVIZ_WARM_UP"
#: The line the server prints once every warm-up run is in (benchmarks wait for it).
DONE_MESSAGE = "gapviz warm-up: done"

#: Seconds the warm-up waits for the solver processes to be ready (its last job).
SOLVERS_READY_S = 60.0
#: The warm-up thread's name.
WARM_UP_THREAD = "gapviz-warm-up"
#: Streamlit's logger of calls made outside a visit ("missing ScriptRunContext").
CONTEXT_LOGGER = "streamlit.runtime.scriptrunner_utils.script_run_context"

log = logging.getLogger("gapviz.warmup")


def enabled() -> bool:
    """Whether :data:`WARM_UP_ENV` leaves the warm-up on (the default)."""
    return os.environ.get(WARM_UP_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


@asynccontextmanager
async def lifespan(_app: Any) -> AsyncIterator[None]:
    """The server's start and end (``st.App(lifespan=...)``): the warm-up starts in a thread of
    its own, so the server answers at once."""
    if enabled():
        threading.Thread(target=warm_up, name=WARM_UP_THREAD, daemon=True).start()
    yield


def warm_up() -> int:
    """Import what the pages need, load the demo and hand its first visitor's runs to the
    background worker; how many jobs were handed over (0 when the warm-up failed: the pages
    then obtain what they show when asked, and the server's log says why)."""
    _show_progress()
    start = time.perf_counter()
    try:
        import pandas.io.formats.style  # noqa: F401  (the tables' styles: jinja2, 0.4 s)
        import plotly.graph_objects  # noqa: F401  (the pages' figures)

        import gapviz.figures  # noqa: F401
        from . import compute, frame, state  # noqa: F401  (frame: every page draws it first)

        ws = state.demo_workspace()
        frame.freeze_startup_objects()  # its pause here, not in the first visitor's page
        jobs = warm_up_jobs(ws)
        left = [len(jobs)]
        lock = threading.Lock()

        def counted(job: Callable[[], Any]) -> Callable[[], Any]:
            def run() -> Any:
                out = job()
                with lock:
                    left[0] -= 1
                    if left[0] == 0:  # a job before started the solver processes
                        threading.Thread(target=_done_when_ready, args=(len(jobs), start),
                                         name=WARM_UP_THREAD, daemon=True).start()
                return out
            return run

        # straight to the worker: the solver processes start after the runs (the last job)
        compute.runs_ahead().request(("warm-up", ws.active.key), [counted(j) for j in jobs],
                                     lasting=True)
        log.info("gapviz warm-up: %d jobs (the demo's first pages) handed to the background "
                 "worker (%.1f s)", len(jobs), time.perf_counter() - start)
        return len(jobs)
    except Exception:  # noqa: BLE001 - the server serves without it; pages compute when asked
        log.warning("gapviz warm-up failed; each page obtains what it shows when asked",
                    exc_info=True)
        return 0


def warm_up_jobs(ws: Any) -> list[Callable[[], Any]]:
    """The runs a new visitor's pages show of the workspace's active pairs, as background jobs,
    in the order a visitor meets them: the raw view (every page), the Overview's closed view,
    the Compare page's opening rows (in the page's order) and their significance test, Close
    the gap's first views of the methods with live sliders (but its default method, which
    the Overview's view is); then
    the solver processes' start and the runs of those methods' likeliest first slider moves
    (:func:`ui.compute.first_move_jobs`)."""
    from gapviz.runs import DEFAULT_METHOD, RunSpec, default_spec

    from . import compute
    from .components import method_names

    act = ws.active
    views = compute.first_view_jobs(
        act, [RunSpec.make("orig"), default_spec(act.pairs.n, act.pairs.dim)])
    opening = compute.compare_default_methods()
    _, rows = compute.compare_row_jobs([act], opening, ws.params_for)
    rows += compute.compare_significance_jobs([act], opening, ws.params_for)
    specs = compute.first_view_specs(act, method_names(), lambda name: name == DEFAULT_METHOD)
    firsts = compute.first_view_jobs(act, specs)
    # the solver processes (about 0.9 CPU-second for two) after the runs a page shows first: a
    # visitor who opens the app at the server's start does not share the CPUs with their start,
    # and none of those runs needs them (a fit's own solve is made in the process); the
    # sliders' moves do, and the runs of the likeliest first moves come last
    return (views + rows + firsts + [compute.start_solver_processes]
            + compute.first_move_jobs(act, specs))


def _done_when_ready(n_jobs: int, start: float) -> None:
    """Say the warm-up is done once the solver processes its last job started are ready (at
    most :data:`SOLVERS_READY_S`), waiting on its own thread, not the background worker's: a
    visitor who comes after the line shares the CPUs with neither the runs nor their imports."""
    from . import compute

    solvers = compute.solver_processes()
    if solvers is not None:
        solvers.wait_ready(SOLVERS_READY_S)
    log.info("%s, %d jobs (the demo's first pages) in %.1f s since it started", DONE_MESSAGE,
             n_jobs, time.perf_counter() - start)


class _NotWarmUp(logging.Filter):
    """Drops a record made on the warm-up's thread: Streamlit's note that a cached function
    (the demo's load) ran outside a visit, which is what the warm-up does on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.threadName != WARM_UP_THREAD


def _show_progress() -> None:
    """The warm-up's lines in the server's output (Streamlit sets up its own loggers only),
    without Streamlit's note for each cached function it calls outside a visit."""
    context_log = logging.getLogger(CONTEXT_LOGGER)
    if not any(isinstance(f, _NotWarmUp) for f in context_log.filters):
        context_log.addFilter(_NotWarmUp())
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
