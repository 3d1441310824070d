"""Benchmark: the dashboard's speed, on the library path each page runs.

Targets:
  k slider, N = 2,500 pairs: a k change to updated metrics and figures < 0.5 s
      (slice stored eigenvectors + all measures + joint PCA + distance samples + the figures
      the page redraws, built and serialised as Streamlit sends them; no eigen-solve).
  k slider, N = 10,000 pairs: reported (no target).
  First page load on the demo: the Overview's first run in a fresh process (AppTest), and a
      second session once the caches are warm.
  UMAP at 5,000 pairs: first layout (after the one-off compilation, reported apart) and cached.

Usage: python bench/bench_app.py [--sizes 2500 10000] [--repeat 5] [--skip-app] [--skip-umap]
Each part runs in its own process, so one part's caches and compiled code do not help another.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

SLIDER_TARGET_S = 0.5
K_VALUES = (20, 60, 120, 40, 100, 150, 80)


def _run_part(part: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--part", part, *args], capture_output=True,
                         text=True, cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if out.returncode != 0:
        raise RuntimeError(f"part {part} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# parts (each in a fresh process)
# ---------------------------------------------------------------------------------------------
def part_slider(n: int, repeat: int) -> dict:
    import plotly.io as pio

    from gapviz import figures
    from gapviz.runs import RunData, Runner, RunSpec
    from gapviz.simulate import simulate_pairs
    from gapviz.views import view_of

    pairs = simulate_pairs(n)
    X, Y = pairs.image_embeddings, pairs.text_embeddings
    t0 = time.perf_counter()
    raw = view_of(X, Y)
    raw_s = time.perf_counter() - t0
    # The page's path: the runner fits once, every k is a slice of that fit.
    runner, data = Runner(), RunData.of(pairs)
    spec = RunSpec.make("spectral", {"n_components": 60})
    t0 = time.perf_counter()
    runner.run(spec, data)
    fit_s = time.perf_counter() - t0

    def update(k: int) -> dict[str, float]:
        t = {}
        t0 = time.perf_counter()
        run = runner.run(spec.with_params(n_components=k), data)
        Xt, Yt = run.images, run.texts
        t["slice"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        view = view_of(Xt, Yt)
        t["measures+pca+distances"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        # What the page redraws: the "after" scatter (the "before" one is static) and the
        # histograms.
        scatter = figures.gap_scatter(view.projection, ids=pairs.ids, captions=pairs.captions,
                                      title=f"Spectral, k = {k}")
        hist = figures.distance_histogram([("raw", raw.paired, raw.all_pairs),
                                           ("after", view.paired, view.all_pairs)])
        t["figures"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        pio.to_json(scatter, validate=False)
        pio.to_json(hist, validate=False)
        t["serialise"] = time.perf_counter() - t0
        t["total"] = sum(t.values())
        return t

    update(K_VALUES[0])  # first call: numba kernels loaded from their cache
    runs = [update(k) for k in (K_VALUES * 3)[:max(repeat, 1)]]
    med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    return {"n": n, "raw_view_s": raw_s, "spectral_fit_s": fit_s, "median": med,
            "max_total": max(r["total"] for r in runs), "runs": len(runs),
            "eigenvectors": int(max(K_VALUES)), "fits": len(runner.memory.fits)}


def part_first_load() -> dict:
    from streamlit.testing.v1 import AppTest

    app = os.path.join(ROOT, "app.py")
    t0 = time.perf_counter()
    at = AppTest.from_file(app, default_timeout=600).run()
    first = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError([e.value for e in at.exception])
    t0 = time.perf_counter()
    at2 = AppTest.from_file(app, default_timeout=600).run()
    second = time.perf_counter() - t0
    t0 = time.perf_counter()
    at2.switch_page("pages/close_gap.py").run()
    close_gap = time.perf_counter() - t0
    return {"first_s": first, "second_session_s": second, "close_gap_after_overview_s": close_gap}


def part_umap(n: int) -> dict:
    from gapviz.projection import LayoutJobs, joint_umap, warm_up_umap
    from gapviz.runs import LRUStore
    from gapviz.simulate import simulate_pairs

    pairs = simulate_pairs(n)
    t0 = time.perf_counter()
    warm_up_umap()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    joint_umap(pairs.image_embeddings, pairs.text_embeddings)
    first_s = time.perf_counter() - t0
    # The app's path: a background job keyed by content hash; the second ask is a cache hit.
    jobs, key = LayoutJobs(LRUStore(8)), pairs.content_hash()
    X, Y = pairs.image_embeddings, pairs.text_embeddings
    job = jobs.job(key, X, Y)
    t0 = time.perf_counter()
    job.result()
    app_first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    proj = jobs.ready(key, X, Y)
    cached_s = time.perf_counter() - t0
    assert proj is not None
    return {"n": n, "compile_s": compile_s, "first_s": first_s, "app_first_s": app_first_s,
            "cached_s": cached_s}


# ---------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2500, 10000])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--umap-n", type=int, default=5000)
    ap.add_argument("--skip-app", action="store_true")
    ap.add_argument("--skip-umap", action="store_true")
    ap.add_argument("--part", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.part == "slider":
        print(json.dumps(part_slider(args.n, args.repeat)))
        return
    if args.part == "first_load":
        print(json.dumps(part_first_load()))
        return
    if args.part == "umap":
        print(json.dumps(part_umap(args.n)))
        return

    print(f"gapviz dashboard benchmark  (cpu count {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f})")
    for n in args.sizes:
        r = _run_part("slider", "--n", str(n), "--repeat", str(args.repeat))
        med = r["median"]
        target = f"target < {SLIDER_TARGET_S} s" if n == 2500 else "no target"
        ok = ("OK" if med["total"] < SLIDER_TARGET_S else "MISSED") if n == 2500 else ""
        print(f"\nk slider, N = {n:,} pairs (k up to {r['eigenvectors']}, {r['fits']} fit, in "
              f"{r['spectral_fit_s']:.2f} s; raw view {r['raw_view_s']:.2f} s)")
        print(f"  update (median of {r['runs']} k values): {med['total']:.3f} s   [{target}] {ok}")
        print("    " + ", ".join(f"{k} {v:.3f}" for k, v in med.items() if k != "total")
              + f"; worst {r['max_total']:.3f} s")
    if not args.skip_app:
        r = _run_part("first_load")
        print(f"\nFirst page load on the demo (Overview, fresh process, AppTest): {r['first_s']:.2f} s")
        print(f"  a second session (caches warm): {r['second_session_s']:.2f} s; then Close the gap: "
              f"{r['close_gap_after_overview_s']:.2f} s")
    if not args.skip_umap:
        r = _run_part("umap", "--n", str(args.umap_n))
        print(f"\nUMAP, N = {r['n']:,} pairs ({2 * r['n']:,} points)")
        print(f"  one-off compilation (background warm-up when Explore opens): {r['compile_s']:.1f} s")
        print(f"  first layout: {r['first_s']:.1f} s  (through the app's background job: "
              f"{r['app_first_s']:.1f} s)")
        print(f"  cached: {r['cached_s'] * 1000:.2f} ms")


if __name__ == "__main__":
    main()
