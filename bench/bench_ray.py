"""Benchmark: pairs/s of ``gapviz embed --ray`` against the single-process ``gapviz embed``.

    python bench/bench_ray.py                       # ViT-B-32 (random weights), 512 pairs
    python bench/bench_ray.py --tiny --n 1000       # a tiny model: almost all overhead
    python bench/bench_ray.py --n 2000 --shard-size 256 --repeat 2

Needs Ray (``pip install "gapviz[scale]"``). Both paths embed the same generated pairs
(photo-like 224x224 JPEGs with generated captions, listed by gapviz's folder loader) from the
command line, end to end: listing, model load, embedding, writing (one parquet file, or the
parquet shards). The Ray path is timed twice: with its local runtime started and stopped by the
command (what a user waits for), and on a runtime already running (the per-run overhead of Ray
Data, the actors and the shards). Each path's best of ``--repeat`` runs is printed; no cache.

On one machine the Ray path cannot be faster than the single process: both use the same cores.
What it shows is the price of the machinery that lets the same command run on a cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gapviz.cli import main as gapviz_main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def make_pairs(folder: Path, n: int, size: int) -> None:
    """``n`` photo-like JPEGs of ``size`` x ``size`` with a captions.csv."""
    sys.path.insert(0, str(ROOT / "tests"))
    from datafixtures import write_image

    lines = ["image,caption"]
    for i in range(n):
        write_image(folder / f"{i:05d}.jpg", seed=i, size=(size, size))
        lines.append(f"{i:05d}.jpg,a generated picture number {i} with smooth colours")
    (folder / "captions.csv").write_text("\n".join(lines) + "\n")


def run_embed(argv: list[str]) -> float:
    """Wall seconds of ``gapviz ARGV`` in this process (its output swallowed)."""
    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = gapviz_main(argv)
    seconds = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"gapviz {' '.join(argv)} failed ({rc}):\n{err.getvalue()[-2000:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=512, help="pairs (default 512)")
    parser.add_argument("--shard-size", type=int, default=128, help="pairs per shard (default 128)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each path (best shown)")
    parser.add_argument("--precision", default="fp32", help="fp32 (default), bf16 or auto")
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny random-weight model (the tests' one): mostly overhead")
    args = parser.parse_args()
    try:
        import ray
    except ImportError:
        print('bench_ray needs Ray: pip install "gapviz[scale]"', file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="gapviz-bench-ray-"))
    if args.tiny:
        sys.path.insert(0, str(ROOT / "tests"))
        from datafixtures import register_tiny_model

        model = ["--model", register_tiny_model(work / "configs"), "--pretrained", "none"]
        label, image_size = "tiny random-weight model (tests/datafixtures.py)", 32
    else:
        model = ["--model", "ViT-B-32", "--pretrained", "none"]
        label, image_size = "ViT-B-32, random weights", 224
    try:
        source = work / "pairs"
        source.mkdir()
        make_pairs(source, args.n, image_size)
        common = [*model, "--precision", args.precision, "--no-cache", "-q"]
        single, cold, warm = [], [], []
        for r in range(args.repeat):
            single.append(run_embed(["embed", str(source), "--out", str(work / f"single{r}.parquet"),
                                     *common]))
            cold.append(run_embed(["embed", str(source), "--ray", "--out", str(work / f"cold{r}"),
                                   "--shard-size", str(args.shard_size), *common]))
            ray.init(address="local", num_cpus=min(4, os.cpu_count() or 1), include_dashboard=False,
                     logging_level="warning")
            try:
                warm.append(run_embed(["embed", str(source), "--ray", "--out", str(work / f"warm{r}"),
                                       "--shard-size", str(args.shard_size), *common]))
            finally:
                ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    cores = os.cpu_count() or 1
    n_shards = -(-args.n // args.shard_size)
    print(f"gapviz embed: {args.n} pairs ({image_size}x{image_size} JPEGs), {label}, "
          f"precision {args.precision}, ray {ray.__version__}")
    print(f"this machine: {cores} CPU cores, shared with other work while this ran; the local Ray "
          f"runtime gets min(4, {cores}) CPUs and one CPU actor. Both paths use the same cores, "
          "so this measures Ray's overhead, not a speedup.")
    print(f"{'path':<52} {'seconds':>8} {'pairs/s':>8} {'vs single':>9}")
    rows = [("single process (gapviz embed --out FILE.parquet)", min(single)),
            (f"Ray, runtime started by the command ({n_shards} shards)", min(cold)),
            (f"Ray, runtime already running ({n_shards} shards)", min(warm))]
    base = args.n / min(single)
    for name, seconds in rows:
        rate = args.n / seconds
        print(f"{name:<52} {seconds:8.1f} {rate:8.1f} {rate / base:8.2f}x")
    if args.repeat > 1:
        print(f"(best of {args.repeat}; all runs: single {[round(s, 1) for s in single]}, "
              f"ray cold {[round(s, 1) for s in cold]}, ray warm {[round(s, 1) for s in warm]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
