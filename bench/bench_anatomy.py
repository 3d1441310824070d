"""Benchmark: the whole gap anatomy (with bootstrap intervals) against the plain measures.

Target: the anatomy, intervals included, in under 3 x the time of ``measure_gap`` on
the same pairs, measured in the same run. "Anatomy" is everything ``gap_anatomy`` adds on top
of a ``measure_gap`` report: per-dimension gap, the centroid/distribution split, the pool pass
(hubness and the ablation curve, M = 10), the per-cluster gap (k-means with k given, or the
labels) and B = 200 bootstrap resamples. The total (measure_gap + anatomy) is printed too.

A second table times what closing buys (``gapviz.closing_gains.gain_outcomes`` on one embedding:
the exact search pass for the requested-modality rate and substitution, k-means on the 2N items
of the pool, the two transfer probes, then B = 200 bootstrap resamples of the gains), against
``measure_gap`` timed in the same round. Target: under 4 x ``measure_gap``: the search pass
alone walks as many similarities as ``measure_gap`` (the pool's upper triangle), and k-means
and the probes each take about as long again at N = 10,000.

Usage: python bench/bench_anatomy.py [--sizes 2500 10000] [--dim 512] [--repeat 3] [--choose-k]
       [--part anatomy|gains|both]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

TARGET = 3.0
GAINS_TARGET = 4.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2500, 10_000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--resamples", type=int, default=200)
    ap.add_argument("--choose-k", action="store_true",
                    help="let k-means choose k by silhouette (default: the demo's labels)")
    ap.add_argument("--part", choices=("anatomy", "gains", "both"), default="both")
    args = ap.parse_args()
    if args.part in ("anatomy", "both"):
        bench_anatomy(args)
    if args.part in ("gains", "both"):
        bench_gains(args)


def bench_anatomy(args: argparse.Namespace) -> None:

    from gapviz.anatomy import gap_anatomy
    from gapviz.closing_costs import pair_labels
    from gapviz.measures import measure_gap
    from gapviz.simulate import simulate_pairs

    warm = simulate_pairs(300, 32, seed=0)  # compile the numba kernels (cached on disk after)
    gap_anatomy(warm.image_embeddings, warm.text_embeddings, n_clusters=3, n_resamples=20)

    print(f"d = {args.dim}, B = {args.resamples} resamples, {os.cpu_count()} CPUs; {args.repeat} rounds, "
          "each timing measure_gap then the anatomy back to back (the machine may be shared: the "
          "ratio of one round is the fair figure; the best round is shown)")
    print(f"{'N pairs':>8} {'measure_gap s':>14} {'anatomy s':>10} {'x measures':>11} {'target':>7} "
          f"{'total s':>8}   parts of that anatomy run (s); median ratio over rounds")
    for n in args.sizes:
        pairs = simulate_pairs(n, args.dim, seed=1)
        X, Y = pairs.image_embeddings, pairs.text_embeddings
        labels = None if args.choose_k else pair_labels(pairs)
        rounds = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            report = measure_gap(X, Y)
            t_plain = time.perf_counter() - t0
            t0 = time.perf_counter()
            a = gap_anatomy(X, Y, report=report, labels=labels, n_resamples=args.resamples)
            t_anat = time.perf_counter() - t0
            rounds.append((t_anat / t_plain, t_plain, t_anat, a.seconds))
        ratio, t_plain, t_anat, parts = min(rounds, key=lambda r: r[0])
        median = float(np.median([r[0] for r in rounds]))
        verdict = "met" if ratio < TARGET else "MISSED"
        detail = ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
        print(f"{n:>8,} {t_plain:>14.2f} {t_anat:>10.2f} {ratio:>10.2f}x {'<' + str(TARGET) + 'x':>7} "
              f"{t_plain + t_anat:>8.2f}   {verdict}; {detail}; median {median:.2f}x")



def bench_gains(args: argparse.Namespace) -> None:
    from gapviz.closing_costs import pair_labels
    from gapviz.closing_gains import gain_outcomes, pool_k
    from gapviz.intervals import gain_intervals
    from gapviz.measures import measure_gap
    from gapviz.simulate import simulate_pairs

    warm = simulate_pairs(300, 32, seed=0)  # compile the numba kernels (cached on disk after)
    gain_outcomes(warm.image_embeddings, warm.text_embeddings, labels=pair_labels(warm))

    print(f"\nwhat closing buys, one embedding: d = {args.dim}, B = {args.resamples}, "
          f"{os.cpu_count()} CPUs; {args.repeat} rounds of measure_gap then the gains")
    print(f"{'N pairs':>8} {'measure_gap s':>14} {'gains s':>8} {'x measures':>11} {'target':>7}"
          "   parts of that gains run (s); median ratio over rounds")
    for n in args.sizes:
        pairs = simulate_pairs(n, args.dim, seed=1)
        X, Y = pairs.image_embeddings, pairs.text_embeddings
        labels = None if args.choose_k else pair_labels(pairs)
        k = pool_k(X, Y, labels=labels)
        rounds = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            measure_gap(X, Y)
            t_plain = time.perf_counter() - t0
            t0 = time.perf_counter()
            o = gain_outcomes(X, Y, labels=labels, n_clusters=k)
            t1 = time.perf_counter()
            gain_intervals(o, n_resamples=args.resamples)
            t_gains = time.perf_counter() - t0
            parts = {**o.seconds, "intervals": time.perf_counter() - t1}
            rounds.append((t_gains / t_plain, t_plain, t_gains, parts))
        ratio, t_plain, t_gains, parts = min(rounds, key=lambda r: r[0])
        median = float(np.median([r[0] for r in rounds]))
        verdict = "met" if ratio < GAINS_TARGET else "MISSED"
        detail = ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
        print(f"{n:>8,} {t_plain:>14.2f} {t_gains:>8.2f} {ratio:>10.2f}x "
              f"{'<' + str(GAINS_TARGET) + 'x':>7}   {verdict}; {detail}; median {median:.2f}x")


if __name__ == "__main__":
    main()
