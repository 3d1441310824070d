"""Fixtures several test files share: the app driven through Streamlit's AppTest, small
workspaces of simulated pairs, and a throw-away gapviz cache.

This file holds fixtures, and the hooks that spread the suite over the CPUs (pytest-xdist),
and is never imported by a test module: ask for a fixture by name (``def test_x(app_session,
assert_clean): ...``). ``app_session``, ``assert_clean``, ``card_values`` and
``simulated_workspace`` are functions, session-scoped so that a fixture of any scope may use
them. (The local HTTP server, image fixtures and the tiny open_clip model are in
``datafixtures.py``; ``reference.py`` holds the brute-force measures.)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Iterable

import pytest

_ROOT = Path(__file__).resolve().parents[1]
_APP = str(_ROOT / "app.py")
#: Seconds one AppTest run may take (the first one measures the demo and fits spectral).
_APP_TIMEOUT = 240

#: Test files that start a real server and drive it in chromium: they run one after another on
#: one worker (see :func:`pytest_collection_modifyitems`).
_BROWSER_FILES = ("test_browser", "test_hosted_hostile_uploads")
#: The most test processes ``-n auto`` starts (each imports torch and loads the demo).
_MAX_WORKERS = 4


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto``: one test process per CPU this process may use, at most :data:`_MAX_WORKERS`."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(_MAX_WORKERS, cpus or 1))


def pytest_collection_modifyitems(config, items) -> None:
    """With ``-n`` (pytest-xdist, ``--dist loadgroup``): a test file's tests run in one process,
    so its module fixtures are made once; the files that drive a real server in chromium run in
    one process one after another, so no two servers and browsers share the CPUs, and only the
    library and AppTest tests run beside them."""
    for item in items:
        name = item.path.stem
        group = "browser" if name.startswith(_BROWSER_FILES) else name
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(autouse=True)
def _solves_in_the_process_after_each_test():
    """The app's pages set its solver processes for the whole process (``ui.compute``); after
    each test the process solves in itself again, so a library test never depends on what an
    app test ran before it (the processes stay up for the next app test). The background work
    an app test's pages asked for is let go and waited for first: it sets the solver processes
    again and holds the process's BLAS limit while it runs."""
    yield
    compute = sys.modules.get("ui.compute")
    if compute is not None:
        for worker in (compute.runs_ahead(), compute.neighbour_solves()):
            worker.cancel()
            worker.wait()
    ot = sys.modules.get("gapviz.methods.ot")
    if ot is not None:
        ot.use_solver_processes(None)


@pytest.fixture(autouse=True)
def _no_quiet_period_after_slider_moves(monkeypatch):
    """Work ahead for other pages waits ``gapviz.runs.SLIDER_QUIET_S`` after the last slider
    request, process-wide: tested on its own (``tests/test_runs.py``); elsewhere it would only
    make a test wait on what another test moved."""
    import gapviz.runs

    monkeypatch.setattr(gapviz.runs, "SLIDER_QUIET_S", 0.0)


def _app_session(page: str | None = None, *, workspace: Any = None, timeout: float = _APP_TIMEOUT,
                 query: dict[str, str] | None = None, **widgets: Any):
    """A fresh AppTest session of ``app.py``, run once, on ``page`` (e.g. "pages/compare.py").

    ``workspace`` replaces the session's workspace (the demo otherwise); ``query`` is the
    URL's query string (a link); ``widgets`` are initial widget values by key.
    """
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(_APP, default_timeout=timeout)
    at.query_params.update(query or {})
    if workspace is not None:
        at.session_state["workspace"] = workspace
    for key, value in widgets.items():
        at.session_state[key] = value
    if page is not None:
        at.switch_page(page)
    return at.run()


def _assert_clean(at, where: str) -> None:
    """No exception and no error message on the page."""
    assert not at.exception, f"{where}: {[e.value for e in at.exception]}"
    assert not at.error, f"{where}: {[e.value for e in at.error]}"


def _card_values(at) -> dict[str, str]:
    """``{label: value}`` of the metric cards (the first card of each label)."""
    out: dict[str, str] = {}
    for m in at.metric:
        out.setdefault(m.label, m.value)
    return out


def _simulated_workspace(n: int, dim: int, name: str, *, seed: int = 0,
                         profiles: Iterable[str] | None = None):
    """A workspace holding simulated pairs under each profile as models of one dataset
    (sim-CLIP active)."""
    from gapviz.simulate import PROFILES, simulate_pairs
    from gapviz.workspace import Workspace

    ws = Workspace()
    for p in (profiles if profiles is not None else PROFILES):
        ws.add(simulate_pairs(n, dim, profile=p, seed=seed), source="test", dataset=name,
               model=PROFILES[p].name, activate=p == "clip")
    return ws


def _fitting_on_the_second_fit_set(n: int = 120):
    """``(workspace, session, first)``: pairs "Main" active beside two other datasets of the
    same dimension ("Other A", "Other B"), a Close the gap session fitting spectral on
    "Other B" (protocol fit-on), and the fit set the menu offered first."""
    from gapviz.simulate import simulate_pairs

    ws = _simulated_workspace(n, 32, "Main", seed=1, profiles=["clip"])
    for seed, name in ((2, "Other A"), (3, "Other B")):
        ws.add(simulate_pairs(150, 32, seed=seed), source="test", dataset=name,
               model=ws.active.model, activate=False)
    at = _app_session("pages/close_gap.py", workspace=ws)
    at.selectbox(key="close_protocol_spectral").set_value("fit-on").run()
    fit_on = at.selectbox(key="close_fit_on")
    first = fit_on.value
    fit_on.set_value(next(o for o in fit_on.options if o.startswith("Other B"))).run()
    return ws, at, first


@pytest.fixture(scope="session")
def fitting_on_the_second_fit_set():
    """``fitting_on_the_second_fit_set(n=120)``: ``(workspace, session, first)``, a Close the
    gap session fitting on the second of two other loaded datasets (fit-on)."""
    return _fitting_on_the_second_fit_set


@pytest.fixture(scope="session")
def app_session():
    """``app_session(page=None, *, workspace=None, timeout=240, **widgets)``: a fresh AppTest
    session of ``app.py``, run once, on ``page`` (e.g. "pages/compare.py").

    ``workspace`` replaces the session's workspace (the demo otherwise); ``widgets`` are
    initial widget values by key.
    """
    return _app_session


@pytest.fixture(scope="session")
def assert_clean():
    """``assert_clean(at, where)``: no exception and no error message on the page."""
    return _assert_clean


@pytest.fixture(scope="session")
def card_values():
    """``card_values(at)``: ``{label: value}`` of the metric cards (the first of each label)."""
    return _card_values


@pytest.fixture(scope="session")
def simulated_workspace():
    """``simulated_workspace(n, dim, name, *, seed=0, profiles=None)``: a workspace holding
    simulated pairs under each profile (all by default) as models of one dataset, sim-CLIP
    active."""
    return _simulated_workspace


@pytest.fixture(scope="module")
def gapviz_cache(tmp_path_factory):
    """``$GAPVIZ_CACHE_DIR`` pointed at a fresh folder for the module."""
    mp = pytest.MonkeyPatch()
    folder = tmp_path_factory.mktemp("gapviz-cache")
    mp.setenv("GAPVIZ_CACHE_DIR", str(folder))
    yield folder
    mp.undo()
