"""Benchmark: measure_gap on a CUDA GPU vs that GPU's own float32 matrix-product rate.

The similarity pass is about 2 N^2 d multiply-adds (the cross block once, each within-modality
block over its upper triangle), so its floor on a device is ``4 N^2 d / rate`` seconds with
``rate`` the device's float32 (TF32 off) product rate, measured in the same run as the best of
a few square products. Each size prints the measured seconds, that floor and their ratio.

Targets (CUDA, d = 512, TF32 off):
  N = 100,000 pairs: the device pass (gapviz.measures_torch.similarity_pass, float64 close
  calls included) <= 3.0 x the floor; the sweeps are memory-bound elementwise passes over
  each panel that torch does not fuse with the product. measure_gap's total is printed too:
  it adds the CPU-side normalisation and the Fréchet distance (beside the pass, on one BLAS
  thread as on the CPU path, so that its value is the same).
  N = 20,000: the GPU report equals the CPU report (every rank and metric).

Data: simulated CLIP-like pairs (gapviz.simulate) up to 200,000 pairs; above that, for
speed, Gaussian cones (images around one direction, texts around another, each text a noisy
copy of its image), float32.

Without a GPU the script says so and exits 0, after running the torch pass on torch's CPU
device at a small N to show that it works and equals the CPU pass.

Usage: python bench/bench_measures_gpu.py [--large] [--sizes 100000 200000] [--dim 512]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from timing import best_of  # noqa: E402  (bench/ is the script's folder)

TARGET_RATIO = 3.0
SIMULATE_UP_TO = 200_000


def pairs(n: int, d: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y) float32: simulated pairs up to SIMULATE_UP_TO, Gaussian cones above."""
    if n <= SIMULATE_UP_TO:
        from gapviz.simulate import simulate_pairs

        p = simulate_pairs(n, d, seed=seed)
        return p.image_embeddings, p.text_embeddings
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d), dtype=np.float32)
    X[:, 0] += 4.0
    Y = X + 1.5 * rng.standard_normal((n, d), dtype=np.float32)
    Y[:, 0] -= 4.0
    Y[:, 1] += 4.0
    return X, Y


def same_report(a, b) -> bool:
    for f in dataclasses.fields(a):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if isinstance(va, np.ndarray):
            if not np.array_equal(va, vb):
                return False
        elif isinstance(va, dict):
            if va.keys() != vb.keys() or any(
                    not (va[k] == vb[k] or (math.isnan(va[k]) and math.isnan(vb[k]))) for k in va):
                return False
        elif va != vb:
            return False
    return True


def without_gpu() -> None:
    print("bench_measures_gpu needs a CUDA GPU visible to torch; none here, so no GPU figures.")
    try:
        import torch  # noqa: F401
    except ImportError:
        print("(torch is not installed either.)")
        return
    from gapviz import measures_torch
    from gapviz.measures import measure_gap

    measures_torch.default_device = lambda: measures_torch.torch.device("cpu")
    measures_torch.torch.set_num_threads(1)  # its OpenMP pool spins on a shared machine
    n, d = 1_000, 128
    X, Y = pairs(n, d)
    measure_gap(X[:100], Y[:100], device="torch")  # warm up (numba compile, torch init)
    t_cpu = best_of(lambda: measure_gap(X, Y, device="cpu"), 2)
    t_torch = best_of(lambda: measure_gap(X, Y, device="torch"), 2)
    equal = same_report(measure_gap(X, Y, device="torch"), measure_gap(X, Y, device="cpu"))
    print(f"torch pass on torch's CPU device, N = {n:,}, d = {d}: {t_torch:.3f} s "
          f"(numba CPU pass {t_cpu:.3f} s); report equal to the CPU pass: {equal}")


def product_rate(torch, device, repeat: int = 3) -> tuple[float, str]:
    """Best float32 product rate (flop/s, TF32 off) over a few square sizes."""
    def seconds(m: int) -> float:
        A = torch.randn(m, m, device=device)
        B = torch.randn(m, m, device=device)

        def run():
            A @ B
            torch.cuda.synchronize(device)

        run()
        return best_of(run, repeat)

    rates = {m: 2.0 * m ** 3 / seconds(m) for m in (4096, 8192, 16384)}
    torch.cuda.empty_cache()
    m = max(rates, key=rates.get)
    return rates[m], f"{m} x {m} x {m}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 200_000])
    ap.add_argument("--large", action="store_true", help="also 500,000 and 1,000,000 pairs (minutes)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--check", type=int, default=20_000,
                    help="N at which the GPU report is compared with the CPU report (0: skip)")
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        torch = None
    if torch is None or not torch.cuda.is_available():
        without_gpu()
        return

    from gapviz import measures_torch
    from gapviz.measures import measure_gap

    pass_seconds = []
    timed_pass = measures_torch.similarity_pass

    def similarity_pass(*a, **k):  # measure_gap imports it at each call: time it there
        t0 = time.perf_counter()
        out = timed_pass(*a, **k)
        pass_seconds.append(time.perf_counter() - t0)
        return out

    measures_torch.similarity_pass = similarity_pass
    device = torch.device("cuda")
    d = args.dim
    print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs")
    matmul = torch.backends.cuda.matmul
    saved = matmul.allow_tf32
    matmul.allow_tf32 = False
    try:
        rate, where = product_rate(torch, device)
    finally:
        matmul.allow_tf32 = saved
    print(f"float32 product rate (TF32 off), best of {where}: {rate / 1e12:.2f} TFLOP/s")
    X, Y = pairs(2_000, d)
    measure_gap(X, Y, device="cuda")  # warm up: CUDA context, cuBLAS, numba kernels
    measure_gap(X, Y, device="cpu")

    if args.check:
        X, Y = pairs(args.check, d)
        t0 = time.perf_counter()
        gpu = measure_gap(X, Y, device="cuda")
        t_gpu = time.perf_counter() - t0
        t0 = time.perf_counter()
        cpu = measure_gap(X, Y, device="cpu")
        t_cpu = time.perf_counter() - t0
        print(f"N = {args.check:,}: GPU {t_gpu:.2f} s, CPU {t_cpu:.2f} s; reports equal: "
              f"{'PASS' if same_report(gpu, cpu) else 'FAIL'}")

    sizes = list(args.sizes) + ([500_000, 1_000_000] if args.large else [])
    print(f"{'N pairs':>10} {'total s':>9} {'pass s':>9} {'floor s':>9} {'pass x floor':>13} "
          f"{'target':>8} {'GPU peak GB':>12}  verdict")
    for n in sizes:
        try:
            X, Y = pairs(n, d)
        except MemoryError:
            print(f"{n:>10,}  not enough host memory for the inputs; stopping")
            break
        torch.cuda.reset_peak_memory_stats(device)
        try:
            t0 = time.perf_counter()
            measure_gap(X, Y, device="cuda")
            seconds = time.perf_counter() - t0
        except torch.cuda.OutOfMemoryError:
            print(f"{n:>10,}  out of GPU memory; stopping")
            break
        peak = torch.cuda.max_memory_allocated(device) / 2 ** 30
        floor = 4.0 * n * n * d / rate
        ratio = pass_seconds[-1] / floor
        target = TARGET_RATIO if n == 100_000 and d == 512 else None
        verdict = "" if target is None else ("PASS" if ratio <= target else "FAIL")
        tgt = "-" if target is None else f"<= {target:.1f}"
        print(f"{n:>10,} {seconds:>9.2f} {pass_seconds[-1]:>9.2f} {floor:>9.2f} {ratio:>13.2f} "
              f"{tgt:>8} {peak:>12.2f}  {verdict}")
        del X, Y
    print("floor = 4 N^2 d / product rate: the similarity pass's 2 N^2 d multiply-adds at the "
          "device's float32 rate; pass = the device pass with its float64 close calls; total = "
          "all of measure_gap.")


if __name__ == "__main__":
    main()
