"""Process-wide thread policy: when BLAS, OpenMP and torch run on one thread, and how.

gapviz's heavy work is many small or mid-sized products (similarity panels, a fit's
factorisations, bootstrap resamples, a batch against a d x d layer), and it runs on shared
machines: the app's sessions are threads of one process, and the CPUs are often busy with other
work. A thread pool gains little on products that size, and its spinning threads fight the
other work for the cores. So:

* **Measure passes** (:func:`gapviz.measures.measure_gap` and the passes that follow its
  pattern) run their own worker threads, each doing a product and its numba sweep back to
  back on one core, under :func:`one_blas_thread`. Left to themselves, BLAS's thread pool and
  a second pool for the sweeps spin against each other on the same cores, which cost about
  40% on 2 cores. With one worker nothing runs beside BLAS, and it is left alone.
* **Method fits** (:meth:`gapviz.methods.base.GapMethod.fit`) hold BLAS to one thread only when
  the machine's other work already fills its CPUs (:func:`blas_for_a_busy_machine`). A fit's
  products and factorisations are mid-sized (N x d with N in the thousands): on a busy machine
  a fit on one thread was 3-10x faster (2 CPUs at load 6-8, N = 2,000, d = 512: spectral
  0.83 s -> 0.20 s, PCA 1.33 s -> 0.35 s, Procrustes 0.38 s -> 0.14 s).
* **Small torch work** (VLAP's training loop and its k-means) runs with BLAS, OpenMP and
  torch's intra-op pool all on one thread (:func:`one_thread`). Every product there is small
  (a batch of 256 against a d x d layer, k-means over N texts): a thread pool costs more in
  hand-offs than it gains. Measured on 2 busy CPUs (load 8), one VLAP fit at N = 2,000,
  d = 512: 45-121 s with the default pools, 1.6 s on one thread.

Each of these limits is a process-wide setting, and callers overlap (app sessions are
threads; a fit may run beside a measure pass). A caller that saved the setting, changed it
and put back what it saw could put back another caller's limit and leave the process at one
thread. Every limit therefore goes through one :class:`SharedSetting` per setting: the first
caller in applies it and the last one out restores what the process had.

The BLAS and OpenMP limits are set through :mod:`threadpoolctl` (as scikit-learn does), torch's
through :func:`torch.set_num_threads`; both are imported on first use, so importing this
module costs nothing.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator

__all__ = ["SharedSetting", "blas_for_a_busy_machine", "one_blas_thread", "one_thread",
           "quiet_idle_blas_threads"]


#: OpenBLAS reads this when it loads: the CPU cycles (as a power of two, 4 to 30) an idle worker
#: thread spins (``sched_yield`` in a loop) waiting for more work before it sleeps. Its default,
#: 2**28 cycles (about 0.1 s), is taken again after every threaded call.
BLAS_IDLE_SPIN = ("OPENBLAS_THREAD_TIMEOUT", "4")


def quiet_idle_blas_threads() -> None:
    """Have OpenBLAS's worker threads sleep as soon as their work is done, for this process.

    After each threaded product, OpenBLAS's idle workers spin for about 0.1 s before they
    sleep. On a machine whose CPUs are busy with other work that spinning takes the cores
    from the work that is left, and every threaded call starts it again: in the app, with the
    OT sliders' background solves taking and giving back the one-thread limit while a move
    was being solved and measured, an idle worker thread took 4 s of CPU in 14 s and a move's
    refit went from 0.5-1.1 s to 2-3.6 s (2 CPUs, two busy processes beside it). With the
    workers sleeping at once the refits took 0.4-1.2 s, and an idle machine loses only a
    thread wake-up (microseconds) per threaded product.

    OpenBLAS reads the setting when it loads (with numpy or scipy), so the processes gapviz
    owns call this before anything imports numpy: the app's server (the ``ui`` package, which
    every page imports first) and the command line. Afterwards it changes nothing; a value
    already set in the environment is kept. A program that imports gapviz is left alone.
    """
    os.environ.setdefault(*BLAS_IDLE_SPIN)


class SharedSetting:
    """A process-wide setting held while any caller needs it; shared by concurrent callers.

    The first caller in applies it and the last one out restores it, so concurrent passes (app
    sessions are threads) never leave the process with a wrong setting.

    Parameters
    ----------
    apply : callable
        ``apply()`` sets the setting and returns the function (no arguments) that puts back
        what was there before.

    Examples
    --------
    >>> events = []
    >>> def apply():
    ...     events.append("apply")
    ...     return lambda: events.append("restore")
    >>> setting = SharedSetting(apply)
    >>> with setting.held():
    ...     with setting.held():
    ...         pass
    >>> events
    ['apply', 'restore']
    """

    def __init__(self, apply: Callable[[], Callable[[], None]]) -> None:
        self._apply = apply
        self._lock = threading.Lock()
        self._users = 0
        self._restore: Callable[[], None] | None = None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the setting for the duration of the block.

        Yields
        ------
        None
            The setting is applied while the block runs; it is restored when the last
            concurrent holder leaves its block.
        """
        with self._lock:
            if self._users == 0:
                self._restore = self._apply()
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    self._restore()
                    self._restore = None


#: threadpoolctl's controller of the libraries loaded, and ``len(sys.modules)`` when it was made.
_controller: tuple[int, object] | None = None


def _threadpool_controller():
    """threadpoolctl's controller of the BLAS and OpenMP libraries loaded now. It lists the
    libraries loaded when it is made, so it is made again once more modules are imported: a
    library loaded later (scipy's own OpenBLAS, loaded with ``scipy.linalg`` after numpy's,
    scikit-learn's OpenMP) is held too."""
    global _controller
    from threadpoolctl import ThreadpoolController

    made = _controller
    if made is None or made[0] != len(sys.modules):
        made = _controller = (len(sys.modules), ThreadpoolController())
    return made[1]


def _take_openblas_control() -> None:
    """Let this thread set OpenBLAS's thread count. threadpoolctl (3.8 and later) lets only the
    first thread that set it change it while that thread lives, and ignores every other thread's
    limit without a word: in the app, the background worker's first fit took it, and every
    session's limit did nothing. A :class:`SharedSetting` already orders the process's callers
    (the first one in applies, the last one out restores), so it takes the control each time."""
    try:
        from threadpoolctl import OpenBLASController
    except ImportError:  # threadpoolctl before 3.0: no such controller, no control to take
        return
    clear = getattr(OpenBLASController, "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)


def _limit(limits: int, user_api: str) -> Callable[[], None]:
    """``limits`` threads for the libraries of ``user_api`` loaded now; returns what restores
    them (from whichever thread the last holder leaves on)."""
    _take_openblas_control()
    limiter = _threadpool_controller().limit(limits=limits, user_api=user_api)

    def restore() -> None:
        _take_openblas_control()
        limiter.restore_original_limits()

    return restore


def _blas_to_one_thread() -> Callable[[], None]:
    return _limit(1, "blas")


_blas_held_to_one = SharedSetting(_blas_to_one_thread)


@contextlib.contextmanager
def one_blas_thread(workers: int) -> Iterator[None]:
    """Hold BLAS to one thread while the block runs ``workers`` threads of its own.

    A worker's product and its numba sweep then run back to back on one core. Left to
    themselves, BLAS's thread pool and a second pool for the sweeps spin against each other on
    the same cores, which cost about 40% on 2 cores. With one worker nothing runs beside BLAS,
    and it is left alone. The limit is one :class:`SharedSetting` for the whole process.

    Parameters
    ----------
    workers : int
        Threads the caller runs beside BLAS. With 1, BLAS is left as it is; with more, it is
        held to one thread. Pass 2 to hold it whatever the caller's own threads.

    Yields
    ------
    None

    See Also
    --------
    blas_for_a_busy_machine : the limit only when the machine is busy.
    one_thread : BLAS, OpenMP and torch all on one thread.
    """
    if workers == 1:
        yield
        return
    with _blas_held_to_one.held():
        yield


def blas_for_a_busy_machine() -> contextlib.AbstractContextManager[None]:
    """One BLAS thread while the machine's other work already fills its CPUs, else no limit.

    A fit's products and factorisations are mid-sized (N x d with N in the thousands): on a
    busy machine BLAS's spinning thread pool fights the other work for the cores, and a fit on
    one thread was 3-10x faster (2 CPUs at load 6-8, N = 2,000, d = 512: spectral 0.83 s ->
    0.20 s, PCA 1.33 s -> 0.35 s, Procrustes 0.38 s -> 0.14 s). The limit is the one
    :func:`one_blas_thread` holds, so concurrent callers never leave the process with a wrong
    setting.

    Returns
    -------
    context manager
        :func:`one_blas_thread` when the machine has more than one CPU and its 1-minute load
        average exceeds the CPU count less one; otherwise (one CPU, a machine with room, or no
        load average, as on Windows) one that leaves BLAS as it is.
    """
    cpus = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # no load average (Windows): leave BLAS as it is
        return contextlib.nullcontext()
    return one_blas_thread(2) if cpus > 1 and load > cpus - 1 else contextlib.nullcontext()


def _torch_and_openmp_to_one_thread() -> Callable[[], None]:
    """torch's intra-op pool and OpenMP to one thread; returns what puts them back."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    restore_openmp = _limit(1, "openmp")

    def restore() -> None:
        restore_openmp()
        torch.set_num_threads(before)

    return restore


_torch_and_openmp_held_to_one = SharedSetting(_torch_and_openmp_to_one_thread)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one thread: BLAS, OpenMP and torch's intra-op pool.

    BLAS is held by :func:`one_blas_thread`'s limit, OpenMP and torch by a second
    :class:`SharedSetting`, so that concurrent fits and measure passes never leave the process
    with a wrong setting. Meant for small products (VLAP: a batch of 256 against a d x d layer,
    k-means over N texts), where a thread pool costs more in hand-offs than it gains and, on a
    shared machine, its spinning threads fight other work for the cores. Measured on 2 busy
    CPUs (load 8), one VLAP fit at N = 2,000, d = 512: 45-121 s with the default pools, 1.6 s
    on one thread.

    Yields
    ------
    None

    Notes
    -----
    Needs torch (imported when the first holder enters).
    """
    with one_blas_thread(2), _torch_and_openmp_held_to_one.held():
        yield
