"""Benchmark: the server's memory for N sessions on the same large pool.

Target: memory for N sessions on the same pool grows by at most the per-session view state.
Each extra session that loads the same pool (default 200,000 pairs, 400,000 points, d = 64)
and opens Explore adds what it holds of its own (its workspace's bookkeeping, widget values,
the viewer's value), not a copy of the pool, of its PCA or of the atlas's table; and once the
sessions end, the pool's views (PCA, the atlas's table) are released.

How: one process, the app's own Explore page run through Streamlit's AppTest, one session at
a time. Each session loads the pool from the same embeddings file into a workspace of its own
(fresh arrays, as an upload or a server path gives) and opens Explore (Embedding Atlas when
``embedding-atlas`` is installed, else the seeded Plotly sample). A session is then kept as a
server keeps it: its session state (the AppTest's element tree, the browser's copy of the
page, is dropped). Resident memory (RSS) is read after a garbage collection, glibc's
``malloc_trim`` and Arrow's ``release_unused`` (memory already freed handed back to the
system, so that RSS counts what is held). Explore's one-off background compilation of
UMAP's code is waited for after the first session, so that it is not counted as a session's.

The per-session view state, printed beside the growth, is measured: the bytes reachable from
the last session's state and from no earlier session's (objects by ``sys.getsizeof``, numpy
arrays by the buffers they own).

Usage: python bench/bench_sessions_memory.py [--pairs 200000] [--dim 64] [--sessions 6]
       [--no-share]   (workspaces that share nothing: each session holds its own copy)
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import sys
import tempfile
import time
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

MB = 2 ** 20
#: Allowed on top of the measured per-session state: what the allocator keeps of a session's
#: run (arenas, fragmentation) after the trim. The target is on the mean growth from the
#: first session to the last (one session's reading moves by a few MiB either way).
SLACK_MB = 8


def rss_mb() -> float:
    """Resident memory of this process in MiB, after a collection and a trim."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: RSS as it is
        pass
    try:  # Arrow's own allocator (the tables Streamlit serialises) keeps freed pages too
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    except (ImportError, AttributeError):
        pass
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / MB


def _reach(root) -> dict[int, int]:
    """id -> bytes of every object reachable from ``root`` (not through modules, classes or
    functions' globals); a numpy array counts the buffer it owns."""
    import numpy as np

    seen: dict[int, int] = {}
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (types.ModuleType, type)):
            continue
        if isinstance(obj, np.ndarray):
            seen[id(obj)] = sys.getsizeof(obj) + (obj.nbytes if obj.base is None else 0)
            if obj.base is not None:
                stack.append(obj.base)
            continue
        seen[id(obj)] = sys.getsizeof(obj)
        if isinstance(obj, types.FunctionType):
            stack.extend(c.cell_contents for c in (obj.__closure__ or ())
                         if _filled(c))
            continue
        stack.extend(gc.get_referents(obj))
    return seen


def _own_state(states: list) -> tuple[int, int]:
    """Bytes and objects reachable from the last session's state and from no other's."""
    earlier: set[int] = set()
    for state in states[:-1]:
        earlier |= set(_reach(state))
    own = [size for key, size in _reach(states[-1]).items() if key not in earlier]
    return sum(own), len(own)


def _filled(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def _pool_file(pairs: int, dim: int, folder: Path) -> Path:
    from gapviz.embeddings import save_embeddings
    from gapviz.simulate import simulate_pairs

    path = folder / f"pool-{pairs}x{dim}.npz"
    save_embeddings(simulate_pairs(pairs, dim, seed=0), path, overwrite=True)
    return path


def _session(path: Path, share: bool):
    """One session: the pool loaded from ``path`` into its own workspace, Explore opened.
    Returns its session state (what a server keeps of it)."""
    from streamlit.testing.v1 import AppTest

    from gapviz.embeddings import load_embeddings
    from gapviz.workspace import POOLS, Workspace

    pairs, report = load_embeddings(path)
    ws = Workspace(pools=POOLS if share else None)
    ws.add(pairs, source=f"embeddings {path.name}", report=report)
    del pairs
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=900)
    at.session_state["workspace"] = ws
    at.switch_page("pages/explore.py")
    at.run()
    if at.exception:
        raise RuntimeError(f"Explore failed: {[e.value for e in at.exception]}")
    viewer = ("Embedding Atlas" if any("Drawn with Embedding Atlas" in c.value for c in at.caption)
              else "Plotly sample")
    return at.session_state, viewer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--sessions", type=int, default=6)
    ap.add_argument("--no-share", action="store_true",
                    help="workspaces that share nothing (each session its own copy)")
    args = ap.parse_args()
    if args.sessions < 2:
        ap.error("--sessions must be at least 2 (growth is measured per extra session)")
    import logging

    logging.getLogger("streamlit").setLevel(logging.ERROR)
    from gapviz.workspace import POOLS

    share = not args.no_share
    with tempfile.TemporaryDirectory(prefix="gapviz-bench-sessions-") as tmp:
        # a cache of its own (the atlas's component is laid out there), removed at the end
        os.environ.setdefault("GAPVIZ_CACHE_DIR", str(Path(tmp) / "cache"))
        path = _pool_file(args.pairs, args.dim, Path(tmp))
        pool_mb = (2 * args.pairs * args.dim * 4) / MB
        base = rss_mb()
        print(f"pool: {args.pairs:,} pairs ({2 * args.pairs:,} points), d = {args.dim}: "
              f"{pool_mb:.0f} MiB of float32 arrays per copy; sharing "
              f"{'on (gapviz.workspace.POOLS)' if share else 'off (--no-share)'}")
        print(f"RSS before any session: {base:.0f} MiB")
        states, readings = [], []
        for i in range(args.sessions):
            t0 = time.perf_counter()
            state, viewer = _session(path, share)
            states.append(state)
            if i == 0:
                # Explore compiles UMAP's code in the background once per process (numba:
                # tens of MB, not a session's); compile it here too, which waits for that
                # (one compilation per process), so that it is not counted.
                from gapviz.projection import warm_up_umap

                warm_up_umap()
            readings.append(rss_mb())
            print(f"session {i + 1}: Explore ({viewer}) in {time.perf_counter() - t0:.1f} s, "
                  f"RSS {readings[-1]:.0f} MiB")
        growth = [b - a for a, b in zip(readings, readings[1:])]
        own_bytes, own_objects = _own_state(states)
        view_mb = own_bytes / MB
        mean = (readings[-1] - readings[0]) / (len(readings) - 1)
        target = view_mb + SLACK_MB
        print(f"RSS growth per extra session: "
              f"{', '.join(f'{g:+.1f}' for g in growth)} MiB; mean {mean:+.1f} MiB "
              f"(session 1 to {args.sessions})")
        held = f"{own_bytes / 1024:,.0f} KiB in {own_objects:,} objects"
        if share:
            print(f"per-session view state (measured): {held}; target: mean growth <= that + "
                  f"{SLACK_MB} MiB allocator slack = {target:.1f} MiB per session -> "
                  f"{'MET' if mean <= target else 'NOT MET'}")
        else:
            print(f"a session's own state (measured): {held}, its copy of the pool included; "
                  "no target with --no-share (the comparison for the shared run)")
        print(f"shared pools: {POOLS.stats()}")
        del states, state
        after = rss_mb()  # (the walk's sets are gone with _own_state's frame)
        print(f"after the {args.sessions} sessions ended: RSS {after:.0f} MiB "
              f"({after - readings[-1]:+.0f} MiB); shared pools: {POOLS.stats()}")


if __name__ == "__main__":
    main()
