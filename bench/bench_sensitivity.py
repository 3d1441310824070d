"""Benchmark: the pool-size sweep against one full measure pass, timed in the same run.

    python bench/bench_sensitivity.py                 # N = 10,000 pairs, d = 512
    python bench/bench_sensitivity.py --n 5000 --draws 3

Target: a sweep of 5 sizes (N/16, N/8, N/4, N/2, N) x 3 draws (one at N), every measure plus
the mutual-kNN alignment per draw, costs at most 3x one full ``measure_gap`` of the N pairs.
The full pass's report is the app's (already computed when the sweep starts), so the sweep
reuses it at size N; printed with and without that reuse. The float32 product floor (one
general N x N x d product, two different matrices) is printed beside them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gapviz.measures import measure_gap  # noqa: E402
from gapviz.sensitivity import pool_size_sweep  # noqa: E402
from gapviz.simulate import simulate_pairs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--draws", type=int, default=3)
    args = ap.parse_args()
    n, d = args.n, args.dim
    pairs = simulate_pairs(n, d, seed=1)
    X, Y = pairs.image_embeddings, pairs.text_embeddings
    print("load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())
          + f" on {os.cpu_count()} CPUs")
    measure_gap(X[:300], Y[:300], ks=(1, 5))  # compile
    rng = np.random.default_rng(0)
    A = rng.standard_normal((n, d), dtype=np.float32)
    B = rng.standard_normal((n, d), dtype=np.float32)
    t0 = time.perf_counter()
    A @ B.T
    floor = time.perf_counter() - t0
    t0 = time.perf_counter()
    full = measure_gap(X, Y, ks=(1, 5))
    t_full = time.perf_counter() - t0
    sizes = [n // 16, n // 8, n // 4, n // 2, n]
    reused = pool_size_sweep([("raw", X, Y, None)], sizes=sizes, draws=args.draws,
                             reports={"raw": full})
    alone = pool_size_sweep([("raw", X, Y, None)], sizes=sizes, draws=args.draws)
    print(f"floor: one float32 {n:,} x {n:,} x {d} product (a @ b.T) = {floor:.3f} s")
    print(f"one measure_gap of {n:,} pairs: {t_full:.2f} s ({t_full / floor:.2f}x the product)")
    print(f"sweep of sizes {sizes} x {args.draws} draws (+ mutual kNN each):")
    for name, r in (("reusing the full report", reused), ("measuring all of it", alone)):
        ratio = r.seconds / t_full
        print(f"  {name:<26} {r.seconds:7.2f} s = {ratio:4.2f}x one measure pass "
              f"(target <= 3x){'' if ratio <= 3 else '  MISSED'}")


if __name__ == "__main__":
    main()
