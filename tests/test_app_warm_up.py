"""A freshly started server's warm-up (``ui.warmup``): ``streamlit run app.py`` finds the app's
ASGI application, whose start obtains what a first visitor's pages show of the demo; the
pages then fit and measure nothing again."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_streamlit_run_finds_the_app_and_its_warm_up():
    """``streamlit run app.py`` serves ``app.app`` (an ``st.App``) when it finds one, and runs
    the file as each visit's script; its start is :func:`ui.warmup.lifespan`."""
    from streamlit.web.server.app_discovery import discover_asgi_app

    found = discover_asgi_app(ROOT / "app.py")
    assert found.is_asgi_app and found.import_string == "app:app"


def test_the_compare_bench_waits_for_the_line_the_warm_up_prints():
    from ui import warmup

    bench = (ROOT / "bench" / "bench_compare_page.py").read_text()
    assert f'DONE_MESSAGE = "{warmup.DONE_MESSAGE}"' in bench


def test_the_warm_up_starts_in_its_own_thread_unless_turned_off(monkeypatch):
    from ui import warmup

    started = []
    monkeypatch.setattr(warmup, "warm_up", lambda: started.append(threading.current_thread().name))

    async def serve() -> None:
        async with warmup.lifespan(None):
            pass

    for value, runs in (("0", 0), ("off", 0), ("1", 1), ("", 1)):
        monkeypatch.setenv(warmup.WARM_UP_ENV, value)
        before = len(started)
        asyncio.run(serve())
        for t in threading.enumerate():  # the thread ends at once (warm_up is replaced)
            if t.name == warmup.WARM_UP_THREAD:
                t.join(10)
        assert len(started) - before == runs, value
    assert set(started) == {warmup.WARM_UP_THREAD}


def test_after_the_warm_up_the_first_pages_fit_and_measure_nothing(
        app_session, assert_clean, simulated_workspace, monkeypatch):
    """The warm-up's runs are the pages' own: after it, the Overview, the Compare page (its
    significance test too), Close the gap with Laplace OT (its slowest first view) and a first one-step move of its
    first slider, either way, run no fold and measure nothing in the page (the page's solves
    ahead of the next move run on threads of their own), and the Compare table shows the
    numbers ``gapviz compare`` gives."""
    import math

    import gapviz.compare
    import gapviz.runs as runs
    import gapviz.views as views
    from gapviz.compare import compare
    from gapviz.simulate import PROFILES
    from ui import compute, frame, state, warmup

    ws = simulated_workspace(160, 40, "Warm", seed=5, profiles=["clip"])
    monkeypatch.setattr(state, "demo_workspace", lambda: ws)
    frozen = []  # the startup objects are frozen by the warm-up, not by the first page
    monkeypatch.setattr(frame, "_frozen", threading.Event())
    monkeypatch.setattr(frame.gc, "freeze", lambda: frozen.append(1))
    handed = warmup.warm_up()
    assert frozen == [1]
    n_rows = len(compute.compare_default_methods())
    # raw and Overview views, rows and their significance test, OT, Sinkhorn, the solvers'
    # start, then OT's and Sinkhorn's likeliest first moves (one step of the first slider
    # either way: two each)
    assert handed == 2 + n_rows + 1 + 3 + 4
    assert warmup.warm_up_jobs(ws)[-5] is compute.start_solver_processes
    compute.runs_ahead().wait()

    fits, measured, drawn, tested = [], [], [], []

    def in_page(seen: list, what):  # calls made by the page, not by its work ahead
        def call(*a, **k):
            if not threading.current_thread().name.startswith("gapviz-"):
                seen.append(a[0] if seen is fits else 1)
            return what(*a, **k)
        return call

    monkeypatch.setattr(runs, "protocol_transform", in_page(fits, runs.protocol_transform))
    monkeypatch.setattr(runs, "measure_gap", in_page(measured, runs.measure_gap))
    monkeypatch.setattr(views, "view_of", in_page(drawn, views.view_of))
    monkeypatch.setattr(gapviz.compare, "significance", in_page(tested, gapviz.compare.significance))

    at = app_session("pages/overview.py", workspace=ws)
    assert_clean(at, "Overview")
    at.switch_page("pages/compare.py").run()
    assert_clean(at, "Compare")
    table = at.dataframe[0].value
    assert tested == []  # the significance test of the opening table was the warm-up's
    assert any("Green: the column's best" in c.value for c in at.caption)  # and it is shown
    at.switch_page("pages/close_gap.py").run()
    assert_clean(at, "Close the gap")
    at.selectbox(key="close_method").set_value("ot").run()
    assert_clean(at, "Close the gap, Laplace OT")
    assert fits == [] and measured == [] and drawn == []
    first = runs.first_moves(at.session_state["workspace"].last_spec)
    assert [set(v) for v in first] == [{"reg_lap", "reg_src"}] * 2
    for value in first:  # either way, as a visitor's first move goes
        at.select_slider(key="close_reg_lap").set_value(value["reg_lap"]).run()
        assert_clean(at, f"Laplace OT moved to {value}")
        assert runs.slider_values(at.session_state["workspace"].last_spec) == value
        assert fits == [] and measured == [] and drawn == [], value
    compute.neighbour_solves().wait()

    pairs = ws.datasets[ws.current_dataset].models[PROFILES["clip"].name]
    for row in compare({"clip": pairs}, compute.compare_default_methods()):
        for key in ("ITR", "TIR", "R@5"):
            assert math.isclose(table.loc[row.method, key], row.metrics[key], rel_tol=1e-12), \
                (row.method, key)
