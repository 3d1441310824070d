"""Benchmark: the OT sliders on a busy machine (a hosted demo shares its CPUs with every session).

The script loads the machine itself: it tops up the runnable tasks to ``load`` per CPU with busy
processes (``while True: pass``), counting the work already running there (sampled from
``/proc/loadavg``'s running-task count before it starts any), and on each load level times,
on the calibrated demo (``gapviz.simulate.demo_models()["clip"]``: 2,500 pairs, d = 512) with
Laplacian OT at its defaults (held-out, 5 folds, each fit on a seeded 500-pair subsample):

* the **first OT view**: a fresh held-out run through a runner as the app holds one
  (``gapviz.runs.Runner``) plus the page's view of it (``gapviz.runs.Run.view``: measures,
  PCA, computed in ``gapviz.methods.ot.foreground()`` as the page does), with the slider
  solves in solver processes started before it (``gapviz.solvers``, as the app's server
  starts them with its first page; ``--solvers threads`` solves in this process instead);
* **one-step moves** as the page makes them: after each run the page's background work
  (``gapviz.runs.NeighbourSolves``, requested as the app does: once a run with live sliders
  is in, before the page's view of it) obtains the neighbouring slider values (couplings,
  runs, views) while the user looks for
  ``--look`` seconds; then the slider moves one step (to a neighbour, in a seeded order),
  which lets the stale background work go, and the move is timed: the runner's run of the
  new value plus its view.

Each figure is printed beside its target (a move < 1 s at 1 runnable task per CPU and < 2 s at
2.5, the first view < 3 s at 1 per CPU) with the load it ran under: the running tasks sampled
every 0.1 s while it ran (this process's threads included), the busy processes started, and
the 1-minute load average. Streamlit's own rerun of the page (widgets, charts) is not timed.

Usage: python bench/bench_ot_busy.py [--loads 1,2.5] [--moves 6] [--look 2.0]
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # gapviz, and ui for the page's own code

from gapviz.threads import quiet_idle_blas_threads  # noqa: E402

quiet_idle_blas_threads()  # as the app's server does, before numpy loads

#: (what, load per CPU) -> target seconds.
TARGETS = {("move", 1.0): 1.0, ("move", 2.5): 2.0, ("first view", 1.0): 3.0}


def running_tasks() -> int:
    """Runnable tasks on the machine now (``/proc/loadavg``'s 4th field, less this reader)."""
    with open("/proc/loadavg") as fh:
        return int(fh.read().split()[3].split("/")[0]) - 1


class Sampler:
    """Samples :func:`running_tasks` every 0.1 s in a thread while a block runs."""

    def __enter__(self):
        self.samples, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self):
        while not self._stop.wait(0.1):
            self.samples.append(running_tasks())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def text(self) -> str:
        s = self.samples or [running_tasks()]
        return f"running tasks median {statistics.median(s):g} (max {max(s)})"


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent id, CPU seconds used) of a process, from ``/proc/PID/stat``; None once gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _is_chromium(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"chromium" in fh.read().split(b"\0", 1)[0]
    except OSError:
        return False


class CpuSplit:
    """CPU seconds used by the server (its process and every process under it: the solver
    processes) and by the browser (every chromium process on the machine) between two reads.
    A process that ends between the reads loses what it used (a move starts none)."""

    def __init__(self, server_pid: int):
        self.server_pid = server_pid
        self._start = self._read()

    def _read(self) -> tuple[dict[int, float], dict[int, float]]:
        stats = {int(p): _proc_stat(int(p)) for p in os.listdir("/proc") if p.isdigit()}
        stats = {pid: st for pid, st in stats.items() if st is not None}
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in stats.items():
            children.setdefault(ppid, []).append(pid)
        server, todo = set(), [self.server_pid]
        while todo:
            pid = todo.pop()
            if pid in stats and pid not in server:
                server.add(pid)
                todo += children.get(pid, [])
        return ({pid: stats[pid][1] for pid in server},
                {pid: st[1] for pid, st in stats.items() if pid not in server and _is_chromium(pid)})

    def restart(self) -> None:
        self._start = self._read()

    def since(self) -> dict[str, float]:
        """``{"server_cpu_s", "browser_cpu_s"}`` since the last start."""
        now = self._read()
        return {f"{name}_cpu_s": sum(v - self._start[k].get(pid, 0.0) for pid, v in now[k].items())
                for k, name in enumerate(("server", "browser"))}


def background_tasks(seconds: float = 3.0) -> float:
    """Median runnable tasks over ``seconds`` before this script adds any."""
    samples = []
    for _ in range(int(seconds / 0.1)):
        samples.append(running_tasks())
        time.sleep(0.1)
    return statistics.median(samples)


def start_busy(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def stop_busy(procs: list[subprocess.Popen]) -> None:
    for p in procs:  # only the processes this script started, by their ids
        p.kill()
    for p in procs:
        p.wait()


def level(load: float, moves: int, look: float, seed: int, processes: bool) -> dict:
    """First view and one-step moves with the machine topped up to ``load`` per CPU."""
    from gapviz.methods.ot import foreground, use_solver_processes
    from gapviz.solvers import SolverProcesses
    from gapviz.runs import NeighbourSolves, RunData, Runner, RunSpec, neighbour_values, slider_values
    from gapviz.simulate import demo_models

    views: dict[str, object] = {}

    def page_view(run):  # the page's view (ui.compute.view: the run's, made once)
        if run.key not in views:
            with foreground():
                views[run.key] = run.view
        return views[run.key]

    cpus = os.cpu_count() or 1
    pairs = demo_models()["clip"]
    data = RunData(pairs.image_embeddings, pairs.text_embeddings, "bench-busy")
    solvers = None
    if processes:  # as the app's server: started with its first page, before any visitor
        solvers = SolverProcesses()
        solvers.wait_ready(60)
        use_solver_processes(solvers)
    before = background_tasks()
    n_busy = max(0, round(load * cpus - before))
    procs = start_busy(n_busy)
    out = {"load": load, "background": before, "busy": n_busy, "moves": [], "samples": []}
    try:
        time.sleep(1.0)
        runner = Runner()
        solves = NeighbourSolves(runner)
        spec = RunSpec.make("ot")
        with Sampler() as s:
            t0 = time.perf_counter()
            run = runner.run(spec, data)
            solves.request(spec, data)  # as the app does after a run with live sliders
            page_view(run)  # the page's view: measures, PCA
            out["first"] = time.perf_counter() - t0
        out["first_load"] = s.text()
        rng = random.Random(seed)
        current = spec
        for _ in range(moves):
            time.sleep(look)  # the user looks at the page
            value = rng.choice(neighbour_values("ot", slider_values(current)))
            current = current.with_params(**value)
            with Sampler() as s:
                t0 = time.perf_counter()
                moved = runner.run(current, data)
                solves.request(current, data)  # the app asks once the run is in, before its view
                page_view(moved)
                dt = time.perf_counter() - t0
            out["moves"].append((value, dt, s.text()))
        solves.cancel()  # let the last background job go
        solves.wait()
    finally:
        use_solver_processes(None)
        if solvers is not None:
            solvers.close()
        stop_busy(procs)
    out["loadavg"] = os.getloadavg()[0]
    return out


def verdict(what: str, load: float, seconds: float) -> str:
    target = TARGETS.get((what, load))
    if target is None:
        return "(no target)"
    return f"target < {target:g} s: {'PASS' if seconds < target else 'FAIL'}"


def add_slider_arguments(ap: argparse.ArgumentParser) -> None:
    """The options this bench shares with ``bench_ot_page.py``: loads, moves, look, seed."""
    ap.add_argument("--loads", default="1,2.5", help="runnable tasks per CPU (comma-separated)")
    ap.add_argument("--moves", type=int, default=6, help="one-step moves per load level")
    ap.add_argument("--look", type=float, default=2.0,
                    help="seconds the user looks at the page before each move (the server "
                         "obtains the neighbouring values meanwhile)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the moves' order")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_slider_arguments(ap)
    ap.add_argument("--solvers", choices=("processes", "threads"), default="processes",
                    help="where the slider solves run: solver processes (the app's server) or "
                         "threads of this process (the library's default)")
    args = ap.parse_args()
    logging.getLogger("streamlit").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")

    import ot  # noqa: F401  (imported once, before any timing)

    from gapviz.methods.ot import OTGap
    from gapviz.simulate import demo_models

    cpus = os.cpu_count() or 1
    print(f"{cpus} CPUs; load average {', '.join(f'{v:.2f}' for v in os.getloadavg())} at start; "
          f"slider solves in {args.solvers}")
    # compile and warm up once, unloaded (a server has done this before its first visitor)
    pairs = demo_models()["clip"]
    OTGap().fit(pairs.image_embeddings[:600], pairs.text_embeddings[:600]).refit(reg_lap=10.0)
    results = []
    for load in (float(v) for v in args.loads.split(",")):
        res = level(load, args.moves, args.look, args.seed, args.solvers == "processes")
        results.append(res)
        times = [dt for _, dt, _ in res["moves"]]
        print(f"\nload {load:g} per CPU: {res['background']:g} running tasks found, "
              f"{res['busy']} busy processes started (1-min load average {res['loadavg']:.2f} at "
              "the end)")
        print(f"  first OT view {res['first']:.2f} s ({res['first_load']}) "
              f"{verdict('first view', load, res['first'])}")
        for value, dt, text in res["moves"]:
            print(f"    move to {', '.join(f'{k}={v:g}' for k, v in value.items())}: "
                  f"{dt:.2f} s ({text})")
        print(f"  one-step moves (after {args.look:g} s looking): median "
              f"{statistics.median(times):.2f} s, max {max(times):.2f} s "
              f"{verdict('move', load, max(times))} (max)")
    print("\nsummary (running tasks include this process's own threads):")
    for res in results:
        times = [dt for _, dt, _ in res["moves"]]
        print(f"  load {res['load']:g}/CPU: first view {res['first']:.2f} s "
              f"{verdict('first view', res['load'], res['first'])}; move max {max(times):.2f} s, "
              f"median {statistics.median(times):.2f} s {verdict('move', res['load'], max(times))}")


if __name__ == "__main__":
    main()
