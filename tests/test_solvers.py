"""Solver processes (gapviz.solvers): the OT and Sinkhorn sliders' couplings solved outside the
process, bit for bit the couplings solved in it; solves ahead of time give way to a move; a
worker that dies leaves the process to solve alone. And the processes gapviz owns quiet
OpenBLAS's idle threads before numpy loads (gapviz.threads.quiet_idle_blas_threads)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from gapviz.couplings import TransportProblem
from gapviz.methods.ot import OTGap, SinkhornGap, use_solver_processes
from gapviz.simulate import demo_models
from gapviz.solvers import SolverProcesses
from gapviz.threads import one_blas_thread

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pairs():
    p = demo_models()["clip"]
    return p.image_embeddings[:900], p.text_embeddings[:900]


@pytest.fixture(scope="module")
def solvers():
    pool = SolverProcesses(2)
    assert pool.wait_ready(120), "the solver processes did not start"
    yield pool
    pool.close()


def _state(fit):
    return (fit.coupling_, fit.barycentric_, fit.inverse_barycentric_,
            getattr(fit, "loss_", None), getattr(fit, "n_iter_", None), fit._state)


def _same(a, b):
    for x, y in zip(_state(a), _state(b)):
        if isinstance(x, tuple):
            assert all(np.array_equal(u, v) for u, v in zip(x, y))
        elif isinstance(x, np.ndarray):
            assert np.array_equal(x, y)
        else:
            assert x == y


@pytest.mark.parametrize("make, moves", [
    (lambda: OTGap(fit_size=300), [dict(reg_lap=30.0), dict(reg_lap=1000.0, reg_src=0.5)]),
    (lambda: OTGap(fit_size=300, direction="image_to_text", reg_type="disp"),
     [dict(reg_lap=10.0, reg_src=0.3)]),
    (lambda: SinkhornGap(fit_size=300), [dict(reg=0.02), dict(reg=0.2)]),
    (lambda: SinkhornGap(fit_size=300, out_of_sample="continuous", direction="text_to_image"),
     [dict(reg=0.1)]),
], ids=["ot", "ot-disp-one-sided", "sinkhorn", "sinkhorn-continuous"])
def test_a_refit_in_a_solver_process_is_the_refit_in_the_process_bit_for_bit(
        pairs, solvers, make, moves):
    X, Y = pairs
    here, there = make().fit(X, Y), make().fit(X, Y)
    before = solvers.stats["solved"]
    for move in moves:
        here.refit(**move)
        use_solver_processes(solvers)
        try:
            there.refit(**move)
        finally:
            use_solver_processes(None)
        _same(here, there)
        assert np.array_equal(here.transform_images(X), there.transform_images(X))
        assert np.array_equal(here.transform_texts(Y), there.transform_texts(Y))
    assert solvers.stats["solved"] == before + len(moves)  # solved there, not here


def test_solves_ahead_in_the_processes_fill_the_memo_with_the_cold_couplings(pairs, solvers):
    X, Y = pairs
    here, there = OTGap(fit_size=300).fit(X, Y), OTGap(fit_size=300).fit(X, Y)
    values = [dict(reg_lap=10.0), dict(reg_lap=300.0), dict(reg_src=0.9)]
    use_solver_processes(solvers)
    try:
        there.precompute(values)
    finally:
        use_solver_processes(None)
    for v in values:
        here.refit(**{"reg_lap": 100.0, "reg_src": 1.0, **v})
        there.refit(**{"reg_lap": 100.0, "reg_src": 1.0, **v})
        assert there.fit_seconds_ == 0.0  # read from the memo
        _same(here, there)


def test_a_solve_ahead_gives_way_to_a_move_and_is_solved_afterwards(pairs):
    X, Y = pairs
    # one worker: the move must take the worker the solve ahead holds
    slow = OTGap(fit_size=400, max_iter=400, tol=0.0, reg_lap=1000.0, reg_src=0.5).fit(X, Y)
    quick = OTGap(fit_size=200).fit(X, Y)
    with SolverProcesses(1) as pool:
        assert pool.wait_ready(120)
        ahead: dict = {}
        started = threading.Event()

        def solve_ahead():
            started.set()
            ahead["result"] = pool.solve(slow, {"reg_lap": 300.0, "reg_src": 0.5}, ahead=True)

        thread = threading.Thread(target=solve_ahead)
        thread.start()
        started.wait()
        while pool.stats["asked"] == 0:  # the solve ahead is under way
            threading.Event().wait(0.01)
        moved = pool.solve(quick, {"reg_lap": 30.0, "reg_src": 1.0})
        thread.join()
        assert pool.stats["abandoned"] >= 1
    G, state, info, maps = ahead["result"]
    with one_blas_thread(2):  # as every solve in the process runs
        G_here, _, info_here = slow._solve({"reg_lap": 300.0, "reg_src": 0.5}, None, None)
        G_quick = quick._solve({"reg_lap": 30.0, "reg_src": 1.0}, None, None)[0]
    assert np.array_equal(G, G_here) and info == info_here
    assert np.array_equal(moved[0], G_quick)


def test_when_the_workers_die_the_process_solves_alone(pairs):
    X, Y = pairs
    here, there = OTGap(fit_size=200).fit(X, Y), OTGap(fit_size=200).fit(X, Y)
    pool = SolverProcesses(2)
    assert pool.wait_ready(120)
    for worker in pool._workers:
        worker.kill()
    assert pool.solve(there, {"reg_lap": 10.0, "reg_src": 1.0}) is None
    use_solver_processes(pool)
    try:
        there.refit(reg_lap=10.0)
    finally:
        use_solver_processes(None)
        pool.close()
    here.refit(reg_lap=10.0)
    _same(here, there)


def test_a_pools_workers_start_as_one_process_and_its_copies_solve_alone(pairs):
    """The first worker imports and compiles the solvers, then forks the others (one start's
    cost for the pool); a forked worker solves on its own, bit for bit as the process, once
    the first has ended."""
    X, Y = pairs
    here, there = OTGap(fit_size=200).fit(X, Y), OTGap(fit_size=200).fit(X, Y)
    pool = SolverProcesses(2)
    try:
        assert pool.wait_ready(120)
        first, second = pool._workers
        assert first.process is not None and second.process is None
        assert second.pid not in (None, first.pid)
        stat = Path(f"/proc/{second.pid}/stat")
        if stat.exists():  # Linux: its parent is the first worker
            assert int(stat.read_text().rsplit(")", 1)[1].split()[1]) == first.pid
        first.kill()
        use_solver_processes(pool)
        try:
            there.refit(reg_lap=10.0)
        finally:
            use_solver_processes(None)
        assert pool.stats["solved"] == 1 and second.ready and not second.dead
    finally:
        pool.close()
    here.refit(reg_lap=10.0)
    _same(here, there)


class _Unsolvable:
    """A fit whose problem the worker cannot solve."""

    def _solver_token(self):
        return ("unsolvable",)

    def _solver_twin(self):
        return TransportProblem("no such kind")


def test_a_solve_that_fails_in_a_worker_raises_its_error_in_the_caller(solvers):
    with pytest.raises(ValueError, match="unknown transport problem 'no such kind'"):
        solvers.solve(_Unsolvable(), {"reg": 1.0})
    assert solvers.ready == 2  # the worker goes on


def test_a_solver_process_holds_neither_pot_nor_scikit_learn():
    code = ("import sys, numpy as np\n"
            "from gapviz import couplings\n"
            "couplings.warm_up()\n"
            "print(sorted(m for m in ('ot', 'sklearn', 'pandas', 'torch', 'streamlit') "
            "if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]"


def test_the_app_imports_ui_first_so_openblas_idle_threads_sleep():
    # ui/__init__ sets OpenBLAS's idle spin before numpy loads: it must be the first import
    # of the router and of every page (Streamlit runs a page file directly on a fresh server)
    for path in [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py"))]:
        tree = ast.parse(path.read_text())
        imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
                   and not (isinstance(node, ast.ImportFrom) and node.module == "__future__")]
        third_party = [node for node in imports
                       if (node.names[0].name if isinstance(node, ast.Import) else node.module)
                       .split(".")[0] not in sys.stdlib_module_names]
        first = third_party[0]
        assert isinstance(first, ast.Import) and first.names[0].name == "ui", path.name
    code = ("import os, sys\nimport ui\n"
            "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'), 'numpy' in sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    assert out.stdout.split() == ["4", "False"]


def test_the_command_line_quiets_openblas_before_numpy_loads():
    code = ("import os, sys\n"
            "seen = {}\n"
            "class Spy:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'numpy' and name not in seen:\n"
            "            seen[name] = os.environ.get('OPENBLAS_THREAD_TIMEOUT')\n"
            "sys.meta_path.insert(0, Spy())\n"
            "import gapviz.cli\n"
            "print(seen.get('numpy'))\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    assert out.stdout.strip() == "4"


def test_a_solver_process_running_other_solver_code_is_not_used(pairs, monkeypatch):
    # as when gapviz/couplings.py changed on disk after the server imported it
    import gapviz.couplings

    monkeypatch.setattr(gapviz.couplings, "SOURCE_DIGEST", "another version")
    fit = OTGap(fit_size=200).fit(*pairs)
    with SolverProcesses(1) as pool:
        pool.wait_ready(120)
        assert pool.ready == 0
        assert pool.solve(fit, {"reg_lap": 10.0, "reg_src": 1.0}) is None


@pytest.mark.parametrize("text, count", [("", None), ("0", 0), ("3", 3), ("99", 16),
                                         ("two", None)])
def test_the_server_takes_its_solver_process_count_from_the_environment(monkeypatch, text,
                                                                          count):
    from ui.compute import SOLVER_PROCESSES_ENV, solver_process_count

    monkeypatch.setenv(SOLVER_PROCESSES_ENV, text)
    assert solver_process_count() == count


def test_a_deferred_pool_starts_at_the_first_solve_which_the_process_makes(pairs):
    """The app's server makes its pool with ``start=False``: no process runs until a solve is
    asked for; that solve is made in the process (the same coupling), and the next ones in
    the workers once they are up."""
    X, Y = pairs
    pool = SolverProcesses(2, start=False)
    try:
        assert pool.ready == 0 and not pool._workers  # nothing started with the page
        here, there = SinkhornGap(fit_size=300).fit(X, Y), SinkhornGap(fit_size=300).fit(X, Y)
        use_solver_processes(pool)
        try:
            there.refit(reg=0.02)  # the first solve: starts the workers, solved here
            assert len(pool._workers) == 2 and pool.stats["asked"] == 0
            assert pool.wait_ready(120)
            there.refit(reg=0.2)  # now in a worker
        finally:
            use_solver_processes(None)
        assert pool.stats["solved"] == 1
        here.refit(reg=0.2)
        _same(here, there)
    finally:
        pool.close()


def test_a_deferred_pool_that_cannot_start_leaves_the_process_to_solve(pairs, monkeypatch):
    import gapviz.solvers as solvers_module

    def no_processes(*args, **kwargs):
        raise OSError("no processes here")

    monkeypatch.setattr(solvers_module, "_Worker", no_processes)
    pool = SolverProcesses(2, start=False)
    X, Y = pairs
    fit = SinkhornGap(fit_size=300).fit(X, Y)
    use_solver_processes(pool)
    try:
        fit.refit(reg=0.1)  # solved in the process, no error
    finally:
        use_solver_processes(None)
    assert fit.reg == 0.1 and pool.ready == 0 and pool.stats["asked"] == 0
    with pytest.raises(OSError):
        SolverProcesses(1)  # started at once: the caller hears it


def test_the_server_starts_its_solver_processes_with_the_sliders_page_not_with_the_others(
        monkeypatch):
    """Every page's frame makes the server's pool (``ui.compute.solver_processes``) without
    starting it, and a page's request for work ahead (the Compare rows) does not start it:
    Close the gap's request for its sliders' first views does, as does the warm-up's last
    job (its done line waits until they are ready) or the first slider move."""
    from ui import compute, warmup

    made = []

    class Pool:
        def __init__(self, workers, *, start=True):
            made.append(start)
            self.started = start

        def start(self):
            self.started = True

        def wait_ready(self, timeout=None):
            waited.append(self.started)
            return True

    waited = []
    monkeypatch.setattr(compute, "SolverProcesses", Pool)
    monkeypatch.setattr(compute, "_solvers", None)
    monkeypatch.setattr(compute, "use_solver_processes", lambda pool: None)
    monkeypatch.setattr(compute, "solver_process_count", lambda: 2)
    pool = compute.solver_processes()  # what the frame of every page calls
    assert made == [False] and not pool.started
    asked = []
    monkeypatch.setattr(type(compute.runs_ahead()), "request",
                        lambda self, name, jobs, first=False: asked.append(name))
    monkeypatch.setattr(compute, "compare_row_jobs", lambda *a, **k: ("rows", [lambda: None]))
    compute.compare_rows_ahead([], [], lambda name: None)  # the Overview's, the Compare page's
    assert asked == ["rows"] and not pool.started
    compute.start_solver_processes()  # the warm-up's last job
    assert pool.started and waited == []
    warmup._done_when_ready(1, 0.0)  # its done line waits for them, on its own thread
    assert waited == [True]
    pool.started = False
    monkeypatch.setattr(compute, "first_view_jobs", lambda act, specs: [lambda: None])
    monkeypatch.setattr(compute, "first_move_jobs", lambda act, specs: [lambda: None])
    compute.first_views_ahead(type("Act", (), {"key": "demo"})(), ["ot"])  # Close the gap
    assert pool.started and asked[-1][0] == "first views"


def test_a_fit_leaves_a_deferred_pool_unstarted_and_a_refit_starts_it(pairs):
    """A fit's own solve (a Compare row, a first view) is made in the process without starting
    the workers; the first refit (a slider move) starts them, and is made in the process."""
    X, Y = pairs
    pool = SolverProcesses(2, start=False)
    use_solver_processes(pool)
    try:
        fit = OTGap(fit_size=300).fit(X, Y)
        assert not pool._workers and pool.stats["asked"] == 0
        fit.refit(reg_lap=30.0)
        assert len(pool._workers) == 2 and pool.stats["asked"] == 0
    finally:
        use_solver_processes(None)
        pool.close()
