"""Solver processes: the OT and Sinkhorn sliders' couplings solved in worker processes.

A slider move of ``ot`` or ``sinkhorn`` solves a new coupling for each fold's fit (a second or
so of CPU on the demo), and the app solves the neighbouring values ahead while the user looks.
In the app's server all of that shared one Python process with every session's page runs: the
solver threads, the background solves and the pages took turns at the interpreter lock, and
the background solves could only pause between two iterations. Worker processes take the
solves out of the server's process:

* each worker keeps the data-only part of the fits it was given (their fitted rows, cost
  matrix, graphs: a :class:`gapviz.couplings.TransportProblem`), sent once per worker, and
  receives only the slider values afterwards; it imports :mod:`gapviz.couplings` alone
  (numpy, scipy, numba: no POT, no scikit-learn);
* a solve someone waits for (a move) takes a free worker, or one that is solving ahead of
  time: that solve is abandoned between two solver iterations (within milliseconds) and
  asked for again later;
* a solve ahead of time takes a worker only while no move is being solved;
* the workers run BLAS on one thread, set before numpy loads (no thread-pool changes at run
  time), and stop when the server's process ends (their pipe closes);
* a pool starts as one process, which imports and compiles the solvers (numba) once and then
  forks the other workers: two workers' start costs about 0.9 CPU-second, against 1.7-2.0
  when each started on its own.

A worker runs the very code a fit runs in the process (:meth:`TransportProblem.solve` and
its barycentres) on the same arrays with BLAS on one thread, so a coupling solved in a worker
is the one solved in the process, bit for bit; the tests check it. Where no worker is ready
(starting, or one died), :meth:`SolverProcesses.solve` returns None and the caller solves in
its own process.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Future, InvalidStateError
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["SolverProcesses"]

#: Environment of a worker: BLAS and OpenMP on one thread from the start (a worker solves one
#: coupling at a time, and its products are small beside the serial solver steps), POT with its
#: numpy backend only.
WORKER_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "NUMBA_NUM_THREADS": "1", "POT_BACKEND_DISABLE_PYTORCH": "1",
              "POT_BACKEND_DISABLE_JAX": "1", "POT_BACKEND_DISABLE_CUPY": "1",
              "POT_BACKEND_DISABLE_TENSORFLOW": "1"}

#: Fits a worker keeps (least recently used dropped first): five folds of two runs, and some,
#: within a bound on their arrays (a fit of wide embeddings holds more).
WORKER_FITS = 12
WORKER_BYTES = 256 * 1024**2

#: Workers started in place of ones that ended, in a pool's life (then the process solves).
MAX_RESTARTS = 4


class _Abandoned(Exception):
    """A solve ahead of time gave way to a message waiting for the worker."""


# -- the worker ---------------------------------------------------------------------------------
def _warm() -> None:
    """Import the solvers and compile them on tiny problems (about 1.3 CPU-seconds)."""
    from . import couplings

    with warnings.catch_warnings():  # the tiny problems' own warnings say nothing to a user
        warnings.simplefilter("ignore")
        couplings.warm_up()


def _serve_group(pipes: list[tuple[int, int]]) -> None:
    """The first worker of a pool started at once: import and warm up once, then fork one
    worker per other pair of pipes, and serve the first pair.

    The forked workers start with the solvers imported and compiled (copy-on-write pages),
    so a pool of n workers costs one worker's start, not n. The fork happens while this
    process runs one thread and has used no thread pool (BLAS and numba run on one thread
    here), the condition under which a fork is safe. Each process keeps its own pipes only,
    so the server sees a worker's end as its pipe closing."""
    _warm()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # forked workers are reaped as they end
    for i, (fd_in, fd_out) in enumerate(pipes[1:], 1):
        if os.fork() == 0:
            try:
                for j, pair in enumerate(pipes):
                    if j != i:
                        for fd in pair:
                            os.close(fd)
                _serve(fd_in, fd_out, warm=False)
            finally:
                os._exit(0)
    for pair in pipes[1:]:
        for fd in pair:
            os.close(fd)
    _serve(*pipes[0], warm=False)


def _serve(fd_in: int, fd_out: int, *, warm: bool = True) -> None:
    """A worker's loop: receive ``(request id, token, twin or None, values, yields)``, solve,
    answer ``(request id, status, payload)``; return when the input pipe closes. ``warm``:
    import and compile the solvers first (False: done before the fork that made this one)."""
    requests = Connection(fd_in, writable=False)
    answers = Connection(fd_out, readable=False)
    from . import couplings

    if warm:
        _warm()
    try:
        _answer_requests(requests, answers, couplings.SOURCE_DIGEST)
    except (BrokenPipeError, ConnectionResetError):  # the server ended: nobody to answer
        return


def _answer_requests(requests: Connection, answers: Connection, digest: str) -> None:
    fits: OrderedDict = OrderedDict()
    answers.send(("ready", os.getpid(), digest))
    while True:
        try:
            message = requests.recv()
        except (EOFError, OSError):
            return
        if message is None:  # a nudge to give way, arrived after the solve it was meant for
            continue
        rid, token, twin, values, yields = message
        if twin is not None:
            fits[token] = (twin, _nbytes(twin.cache))
            while len(fits) > 1 and (len(fits) > WORKER_FITS
                                     or sum(size for _, size in fits.values()) > WORKER_BYTES):
                fits.popitem(last=False)
        if token not in fits:
            answers.send((rid, "unknown", None))
            continue
        fits.move_to_end(token)
        problem = fits[token][0]

        def give_way(fraction: float, message: str) -> None:
            if yields and requests.poll():
                raise _Abandoned

        try:
            G, state, info = problem.solve(values, None, give_way)
            result = (G, state, info, problem.barycentres(G))
        except _Abandoned:
            answers.send((rid, "abandoned", None))
        except Exception as exc:  # noqa: BLE001 - the caller gets it, raised in its process
            try:
                payload = pickle.dumps(exc)
            except Exception:  # noqa: BLE001 - an exception that does not pickle
                payload = pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))
            answers.send((rid, "error", payload))
        else:
            answers.send((rid, "ok", result))


def _nbytes(value: Any) -> int:
    """Bytes of the arrays in ``value`` (arrays, sparse matrices, and containers of them)."""
    if hasattr(value, "nbytes"):
        return int(value.nbytes)
    if hasattr(value, "data") and hasattr(value, "indices"):  # a scipy sparse matrix
        return sum(int(getattr(value, k).nbytes) for k in ("data", "indices", "indptr"))
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    return 0


# -- the pool -----------------------------------------------------------------------------------
class _Worker:
    """One worker process, its pipes, and the requests it has not answered yet."""

    def __init__(self, index: int, on_change: Callable[[], None], requests_fd: int,
                 answers_fd: int, process: subprocess.Popen | None) -> None:
        self.index = index
        self.ready = False
        self.dead = False
        self.busy: str | None = None  # None, "move" or "ahead"
        self.yields = False  # the request running now gives way to a message
        self.fits: set = set()  # tokens sent (the worker may have dropped some since)
        #: The process started for this worker; None for one forked by the first worker of
        #: its pool (its pid comes with its ready message).
        self.process = process
        self.pid: int | None = process.pid if process is not None else None
        self._on_change = on_change
        self._futures: dict[int, Future] = {}
        self._send_lock = threading.Lock()
        self._requests = Connection(requests_fd, readable=False)
        self._answers = Connection(answers_fd, writable=False)
        threading.Thread(target=self._read, name=f"gapviz-solver-{index}", daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                rid, status, payload = self._answers.recv()
            except (EOFError, OSError, pickle.UnpicklingError):
                break
            if rid == "ready":
                from .couplings import SOURCE_DIGEST

                self.pid = status

                if payload != SOURCE_DIGEST:  # other code than this process's: never used
                    logging.getLogger(__name__).warning(
                        "a solver process runs other solver code than the server (a file "
                        "changed since it started): it is not used; restart the server")
                    break
                self.ready = True
                self._on_change()
                continue
            future = self._futures.pop(rid, None)
            if future is not None:
                _settle(future, (status, payload))
        self.dead = True
        for future in list(self._futures.values()):
            _settle(future, ("dead", None))
        self._futures.clear()
        self._on_change()

    def send(self, rid: int, message: tuple) -> Future:
        future: Future = Future()
        self._futures[rid] = future
        try:
            with self._send_lock:
                self._requests.send(message)
        except (OSError, ValueError):
            self._futures.pop(rid, None)
            self.dead = True
            _settle(future, ("dead", None))
        return future

    def nudge(self) -> None:
        """Have the running solve give way (it checks for a waiting message between two
        solver iterations)."""
        try:
            with self._send_lock:
                self._requests.send(None)
        except (OSError, ValueError):
            self.dead = True

    def kill(self) -> None:
        """End the worker's process now (SIGKILL), and wait until it has ended."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
        elif self.pid is not None:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
            deadline = time.monotonic() + 5  # its parent (or init) reaps it
            while _alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.01)

    def close(self) -> None:
        """Close its pipe (the worker then ends) and wait up to 5 s for it, then kill it."""
        try:
            self._requests.close()
        except OSError:
            pass
        if self.process is not None:
            try:
                self.process.wait(timeout=5)
                return
            except subprocess.TimeoutExpired:
                pass
        elif self.pid is not None:  # forked by the pool's first worker, which reaps it
            deadline = time.monotonic() + 5
            while _alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not _alive(self.pid):
                return
        self.kill()


def _settle(future: Future, answer: tuple) -> None:
    """Answer ``future`` unless it has its answer (a worker's end can be seen twice at once: by
    a send that fails and by the reader that finds the pipe closed)."""
    with contextlib.suppress(InvalidStateError):
        future.set_result(answer)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (an ended one not yet reaped does not)."""
    try:
        os.kill(pid, 0)
    except OSError:  # none, or another user's process took the number: ours has ended
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):  # no /proc (not Linux): the signal's answer stands
        return True


def _start_workers(indices: list[int], on_change: Callable[[], None]) -> list[_Worker]:
    """Workers for ``indices``: one process, which forks the others once it has imported and
    compiled the solvers (where the platform forks; else one process each). Raises OSError
    when the process cannot be started."""
    if len(indices) > 1 and not hasattr(os, "fork"):
        return [w for i in indices for w in _start_workers([i], on_change)]
    pipes, ours = [], []
    try:
        for _ in indices:
            to_worker_r, to_worker_w = os.pipe()
            from_worker_r, from_worker_w = os.pipe()
            pipes.append((to_worker_r, from_worker_w))
            ours.append((to_worker_w, from_worker_r))
        theirs = [fd for pair in pipes for fd in pair]
        env = {**os.environ, **WORKER_ENV}
        code = (f"from gapviz.solvers import _serve_group; _serve_group({pipes!r})"
                if len(pipes) > 1 else
                f"from gapviz.solvers import _serve; _serve({pipes[0][0]}, {pipes[0][1]})")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        process = subprocess.Popen([sys.executable, "-c", code], pass_fds=theirs, env=env,
                                   stdin=subprocess.DEVNULL, close_fds=True)
    except OSError:
        for pair in pipes + ours:
            for fd in pair:
                os.close(fd)
        raise
    for pair in pipes:
        for fd in pair:
            os.close(fd)
    return [_Worker(i, on_change, w, r, process if k == 0 else None)
            for k, (i, (w, r)) in enumerate(zip(indices, ours))]


class SolverProcesses:
    """Worker processes that solve the couplings of fitted ``ot`` and ``sinkhorn`` fits.

    Parameters
    ----------
    workers : int, optional
        Worker processes (default: the CPU count, at most 4). They start in the background;
        a solve asked for before one is ready returns None.
    start : bool, default=True
        Start them now. False: at the first solve asked for (which the process then solves
        itself) or :meth:`wait_ready`. The app's server defers them so: their start (about
        0.9 CPU-second for two) would otherwise share a fresh server's CPUs with its first page.

    Notes
    -----
    Set for the whole process with :func:`gapviz.methods.ot.use_solver_processes` (the app's
    server does); :meth:`_TransportGap.refit` and :meth:`_TransportGap.precompute` then solve
    here, and in their own process when :meth:`solve` returns None.
    """

    def __init__(self, workers: int | None = None, *, start: bool = True) -> None:
        n = workers if workers is not None else max(1, min(4, os.cpu_count() or 1))
        self._cond = threading.Condition()
        self._ids = itertools.count()
        self._moves_waiting = 0
        self._closed = False
        #: Requests sent, answered with a solution, abandoned for a move; problems sent.
        self.stats = {"asked": 0, "solved": 0, "abandoned": 0, "problems": 0}
        self._pid = os.getpid()  # a forked child has no workers of its own
        self._restarts = 0
        self._size = n
        self._workers: list[_Worker] = []
        self._deferred = not start
        if start:
            self.start()

    def start(self) -> None:
        """Start the workers, if not yet started (nor closed). Raises OSError when no process
        can be started, unless the start was deferred: the pool is then closed, and the
        process solves alone."""
        with self._cond:
            if self._workers or self._closed or os.getpid() != self._pid:
                return
            try:
                workers = _start_workers(list(range(self._size)), self._changed)
            except OSError:
                self._closed = True
                if not self._deferred:
                    raise
                logging.getLogger(__name__).warning("no solver processes", exc_info=True)
                return
            self._workers = workers

    def _changed(self) -> None:
        with self._cond:
            self._cond.notify_all()

    @property
    def ready(self) -> int:
        """Workers started and alive."""
        return sum(w.ready and not w.dead for w in self._workers)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until every worker has started (or died); whether all are ready. Starts
        them first if they were not."""
        self.start()
        with self._cond:
            self._cond.wait_for(lambda: all(w.ready or w.dead for w in self._workers), timeout)
        return all(w.ready and not w.dead for w in self._workers)

    def give_way(self) -> None:
        """Have every solve ahead of time give way now (a move's other work starts: its
        measures, say); it is asked for again once no move is solving."""
        with self._cond:
            for w in self._workers:
                if w.busy == "ahead" and w.yields:
                    w.nudge()

    def _take(self, ahead: bool, urgent: Callable[[], bool], start: bool) -> _Worker | None:
        """A worker for a solve (marked busy), or None when none is alive (or, unless
        ``start``, none was started)."""
        with self._cond:
            if not ahead:
                self._moves_waiting += 1
            try:
                while True:
                    if start:
                        self.start()  # deferred until now: this solve runs in the process
                    self._restart_dead()
                    alive = [w for w in self._workers if w.ready and not w.dead]
                    if self._closed or not alive:
                        return None
                    idle = [w for w in alive if w.busy is None]
                    if not ahead or urgent():
                        if idle:
                            chosen = idle[0]
                        else:  # a solve ahead of time gives way to the move
                            giving = [w for w in alive if w.busy == "ahead" and w.yields]
                            chosen = giving[0] if giving else None
                            if chosen is not None:
                                chosen.nudge()
                        if chosen is not None:
                            chosen.busy, chosen.yields = "move", False
                            return chosen
                    elif idle and self._moves_waiting == 0 and all(
                            w.busy != "move" for w in alive):
                        chosen = idle[0]
                        chosen.busy, chosen.yields = "ahead", True
                        return chosen
                    self._cond.wait(0.25)
            finally:
                if not ahead:
                    self._moves_waiting -= 1

    def _restart_dead(self) -> None:
        """Start a new worker in place of each one that ended (an out-of-memory kill, say), up
        to :data:`MAX_RESTARTS` in the pool's life; it takes solves once it is ready. Called
        with the condition held."""
        for i, worker in enumerate(self._workers):
            if worker.dead and not self._closed and self._restarts < MAX_RESTARTS:
                self._restarts += 1
                worker.close()
                try:
                    self._workers[i] = _start_workers([i], self._changed)[0]
                except OSError:  # it stays dead: the others, or the process, solve
                    logging.getLogger(__name__).warning("a solver process could not be "
                                                        "started again", exc_info=True)

    def _release(self, worker: _Worker, kind: str) -> None:
        with self._cond:
            if worker.busy == kind:
                worker.busy, worker.yields = None, False
            self._cond.notify_all()

    def solve(self, fit: Any, values: Mapping[str, Any], *, ahead: bool = False,
              urgent: Callable[[], bool] | None = None,
              wait: Callable[[], None] | None = None,
              start_workers: bool = True) -> tuple | None:
        """``fit``'s coupling for the live ``values``, solved cold in a worker:
        ``(G, state, info, maps)`` as :meth:`_TransportGap._solve` and its barycentres give
        them; None when no worker is alive (solve in the process then).

        A pool made with ``start=False`` starts its workers at the first solve asked for (that
        one is made in the process), unless ``start_workers`` is False: a fit's own solve
        (the Compare page's Sinkhorn row, a first view) leaves them unstarted, so their start
        (about 0.9 CPU-second for two) does not share the CPUs with a page being obtained; the
        first slider move or solve ahead of one starts them.

        ``ahead``: a solve ahead of time, which waits while a move is solving and gives way to
        one (it is then asked for again), unless ``urgent()`` says a move waits for it;
        ``wait()``, called before each try, returns once it may start (the process's other
        work a user waits for is done). Raises what the solve raised.
        """
        if os.getpid() != self._pid:
            return None
        urgent = urgent if urgent is not None else (lambda: False)
        token = fit._solver_token()
        while True:
            if ahead and wait is not None:
                wait()
            worker = self._take(ahead, urgent, start_workers)
            if worker is None:
                return None
            kind = worker.busy
            try:
                twin = None if token in worker.fits else fit._solver_twin()
                status, payload = self._ask(worker, token, twin, values, kind == "ahead")
                if status == "unknown":  # the worker dropped it: send it again
                    status, payload = self._ask(worker, token, fit._solver_twin(), values,
                                                kind == "ahead")
            finally:
                self._release(worker, kind)
            if status == "ok":
                return payload
            if status == "error":
                raise pickle.loads(payload)
            if status == "dead":
                logging.getLogger(__name__).warning("a solver process ended; %d left",
                                                    self.ready)
            # abandoned (a move came) or a dead worker: ask again

    def _ask(self, worker: _Worker, token: Any, twin: Any, values: Mapping[str, Any],
             yields: bool) -> tuple[str, Any]:
        rid = next(self._ids)
        with self._cond:
            self.stats["asked"] += 1
            self.stats["problems"] += twin is not None
        future = worker.send(rid, (rid, token, twin, dict(values), yields))
        status, payload = future.result()
        with self._cond:
            if status in ("ok", "abandoned"):
                self.stats["solved" if status == "ok" else "abandoned"] += 1
        if status != "dead":
            if twin is not None:
                worker.fits.add(token)
            if status == "unknown":
                worker.fits.discard(token)
        return status, payload

    def close(self) -> None:
        """Stop the workers (each ends when its pipe closes)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for w in self._workers:
            w.close()

    def __enter__(self) -> "SolverProcesses":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
