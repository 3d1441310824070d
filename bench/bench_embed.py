"""Benchmark: embedding pairs end to end against what this machine's arithmetic allows.

    python bench/bench_embed.py                  # fp32 and auto, 400 pairs: ~5 minutes, 2 cores
    python bench/bench_embed.py --n 785 --repeat 3 --precision auto --cli
    python bench/bench_embed.py --io             # loading, validating, cache hits (2,500 pairs)

Throughput (the default)
------------------------
Real photos with human-written captions: Debian's Tux Paint stamps (``apt-get install
tuxpaint-stamps-default``; PNG images under /usr/share/tuxpaint/stamps, caption = the first line
of the ``.txt`` beside each), loaded by gapviz's folder loader. Without the package the
benchmark says so and uses generated photo-like JPEGs with generated captions.

The model is ViT-B-32 with random weights (the same arithmetic as trained ones). For each
precision it measures, in the same process and one right after the other:

- the *bound*: the FLOPs the work needs, counted by ``torch.utils.flop_counter.FlopCounterMode``
  (the image tower once per image; the text tower at each caption's own token length), divided
  by the best matrix-product rate measured in this run (the best of fp32 and bf16 over a few
  shapes of the model's own products: the device's best arithmetic, whatever precision runs);
- end-to-end images/s, captions/s and pairs/s: ``embed_pairs`` (read, decode, preprocess,
  both towers, the precision self-check) plus writing the .npz, after a warm-up run (model
  build and the one-time bf16 copy of the weights are reported apart);
- the ratio of throughput to bound, next to the target (>= 35% end to end, issue "Embedding
  on matrix units"), and a closing line per precision: pairs/s, bound, ratio, target met or not.

The rate is measured before and after each run and averaged (the machine is shared: what a
neighbour takes from one it takes from the other); each run is repeated and the spread shown
(median, min-max). Next to each wall-clock ratio is the same ratio per CPU-second (FLOPs per
CPU-second of the run over FLOPs per CPU-second of the product), which does not depend on how
much of the machine the neighbours left. ``--cli`` also times the whole ``gapviz embed``
command on the folder (folder loading, model build, embedding, writing).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gapviz.cache import EmbeddingCache  # noqa: E402
from gapviz.cli.embed import main as embed_main  # noqa: E402
from gapviz.data import load_folder  # noqa: E402
from gapviz.embed_pipeline import PrecisionError, embed_stream, resolve_precision  # noqa: E402
from gapviz.embeddings import PairedEmbeddings, load_embeddings, save_embeddings  # noqa: E402
from gapviz.encode import (ModelSpec, _encode_text, _last_token, cache_identity,  # noqa: E402
                           embed_images, embed_pairs, embed_texts, load_model)

TUXPAINT = Path("/usr/share/tuxpaint/stamps")
#: End-to-end pairs/s as a share of the bound (issue "Embedding on matrix units").
TARGET = 0.35

WORDS = ("a man riding a wave on top of a surfboard . two dogs play in the snow near a red "
         "fence . a plate of food with broccoli and rice on a wooden table . people walking "
         "down a busy city street at night").split()


def photo_jpeg(seed: int, size: tuple[int, int]) -> bytes:
    """A photo-like JPEG: smooth colour fields plus texture, compressing like a real photo."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    chans = [128 + 100 * np.sin(rng.uniform(2, 9) * xx + rng.uniform(2, 9) * yy + rng.uniform(0, 6))
             for _ in range(3)]
    arr = np.clip(np.stack(chans, -1) + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def caption(rng: np.random.Generator) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(8, 16)))).capitalize() + "."


def make_upload(root: Path, n: int, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    # A few hundred distinct pictures, reused: generating 2,500 at 640x480 would dominate.
    pool = [photo_jpeg(i, size) for i in range(min(n, 200))]
    for i in range(n):
        # A JPEG comment segment (FF FE) right after the start marker makes every file's bytes,
        # and so its content hash, distinct while the picture stays valid.
        jpeg = pool[i % len(pool)]
        comment = f"bench {i}".encode()
        segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
        (root / f"{i:05d}.jpg").write_bytes(jpeg[:2] + segment + jpeg[2:])
        (root / f"{i:05d}.txt").write_text(caption(rng))


def line(name: str, value: str, target: str = "") -> None:
    print(f"  {name:<48} {value:>16}   {target}", flush=True)


def io_main(args: argparse.Namespace) -> None:
    """Loading, validating, and cache hits (``--io``)."""
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"gapviz embed benchmark: {os.cpu_count()} CPU cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {load:.1f} at start")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"\n1. load + validate {args.pairs} uploaded pairs (640x480 JPEG + .txt each)")
        make_upload(tmp / "upload", args.pairs, (640, 480))
        with zipfile.ZipFile(tmp / "upload.zip", "w", zipfile.ZIP_STORED) as zf:
            for path in sorted((tmp / "upload").iterdir()):
                zf.write(path, f"upload/{path.name}")
        started = time.perf_counter()
        pairs, report = load_folder(tmp / "upload")
        folder_s = time.perf_counter() - started
        assert report.n_kept == args.pairs, report.summary()
        line("folder: load + validate", f"{folder_s:.2f} s", "target < 10 s")
        started = time.perf_counter()
        zipped, _ = load_folder(tmp / "upload.zip", cache_dir=tmp / "cache-zip")
        line("zip: safe extract + load + validate", f"{time.perf_counter() - started:.2f} s",
             "target < 10 s")
        assert len(zipped) == args.pairs

        print(f"\n2. ViT-B-32, random weights, on {len(pairs[:args.images])} images")
        started = time.perf_counter()
        model = load_model(ModelSpec("ViT-B-32", "none"))
        line("build model", f"{time.perf_counter() - started:.1f} s", f"device {model.device}")
        embed_images(model, [p.image_path for p in pairs[:8]], batch_size=8)  # warm-up
        subset = [p.image_path for p in pairs[:args.images]]
        started, cpu_started = time.perf_counter(), time.process_time()
        embed_images(model, subset, batch_size=32)
        img_s = time.perf_counter() - started
        cpu_s = time.process_time() - cpu_started
        line("images/s (decode + preprocess + forward)", f"{len(subset) / img_s:.1f} img/s",
             f"2,500 images ~ {args.pairs * img_s / len(subset) / 60:.1f} min")
        # On a shared machine wall time depends on the neighbours; CPU time much less so.
        line("images per CPU-second (all threads)", f"{len(subset) / cpu_s:.1f} img/cpu-s",
             f"x{os.cpu_count()} cores ~ {os.cpu_count() * len(subset) / cpu_s:.1f} img/s alone")
        caps = [p.caption for p in pairs[:256]]
        started = time.perf_counter()
        embed_texts(model, caps)
        txt_s = time.perf_counter() - started
        line("captions/s (padding trimmed, exact)", f"{len(caps) / txt_s:.1f} cap/s")
        tokens = model.tokenizer(caps[:64])
        with torch.inference_mode():
            started = time.perf_counter()
            model.model.encode_text(tokens)
            full_s = time.perf_counter() - started
        line("captions/s (open_clip encode_text, 77 tokens)", f"{64 / full_s:.1f} cap/s",
             "reference for the trim")

        print(f"\n3. cache hit for {args.pairs} pairs")
        cache_dir = tmp / "cache"
        spec = ModelSpec("ViT-B-32", "none")
        if args.full:
            started = time.perf_counter()
            first = embed_pairs(pairs, model, cache=EmbeddingCache(cache_dir))
            line("first run: embed all pairs (ViT-B-32)", f"{time.perf_counter() - started:.1f} s")
        else:
            # The entry is stored under the real key (this data + the ViT-B-32 spec) but holds
            # random unit vectors of ViT-B-32's shape instead of 2,500 real forward passes: a
            # hit hashes the data and reads the file, whatever numbers the file holds.
            cache = EmbeddingCache(cache_dir)
            rng = np.random.default_rng(0)
            vectors = rng.normal(size=(2, len(pairs), 512)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=2, keepdims=True)
            cache.save(cache.key(pairs, cache_identity(spec)),
                       PairedEmbeddings(vectors[0], vectors[1], [p.id for p in pairs],
                                        [p.caption for p in pairs], [p.image_path for p in pairs],
                                        spec.label()))
            first = None
        started = time.perf_counter()
        hit = embed_pairs(pairs, spec, cache=EmbeddingCache(cache_dir))
        hit_s = time.perf_counter() - started
        assert hit.from_cache and hit.embeddings.n == args.pairs
        line("library: hash 2,500 images + captions, read", f"{hit_s:.2f} s", "target: instant (< 2 s)")
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            rc = embed_main([str(tmp / "upload"), "--model", "ViT-B-32", "--pretrained", "none",
                             "--out", str(tmp / "out.npz"), "--cache-dir", str(cache_dir), "-q"])
        cli_s = time.perf_counter() - started
        assert rc == 0
        line("embed command, second run (load+validate+hit)", f"{cli_s:.2f} s",
             "target < 10 s (was minutes on the first run)")
        if first is not None:
            same = np.array_equal(first.embeddings.image_embeddings, hit.embeddings.image_embeddings)
            line("cache hit equals the first run", str(same))


# ---------------------------------------------------------------------------------- the bound

@dataclass(frozen=True)
class Product:
    """One way of running torch matrix products: dtype, shape, and how the cores are used
    (``parallel``: one product per core at once, one thread each; else one product on all)."""

    dtype: str
    shape: tuple[int, int, int]
    parallel: bool


PRODUCT_SHAPES = ((2048, 2048, 2048), (1600, 768, 3072), (1600, 3072, 768))


def product_rate(device: str, product: Product, seconds: float) -> tuple[float, float]:
    """(FLOP/s of wall time, FLOP per CPU-second of this process) of ``product``, run for
    ``seconds``."""
    import torch

    m, k, n = product.shape
    dtype = getattr(torch, product.dtype)
    cores = torch.get_num_threads()
    lanes = cores if product.parallel else 1
    flops = [0.0] * lanes

    def run(lane: int) -> None:
        if product.parallel:
            torch.set_num_threads(1)
        a = torch.randn(m, k, device=device).to(dtype)
        b = torch.randn(k, n, device=device).to(dtype)
        a @ b
        barrier.wait()
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            a @ b
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            flops[lane] += 2.0 * m * k * n

    barrier = threading.Barrier(lanes + 1)
    threads = [threading.Thread(target=run, args=(lane,)) for lane in range(lanes)]
    for thread in threads:
        thread.start()
    barrier.wait()
    wall, cpu = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.join()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return sum(flops) / wall, sum(flops) / max(cpu, 1e-9)


def best_product(device: str) -> tuple[Product, float]:
    """The fastest product here over fp32 and bf16 (fp16 too on GPUs), the shapes above and
    both ways of using the cores, from short probes; and its rate."""
    dtypes = ["float32", "bfloat16"] + (["float16"] if device != "cpu" else [])
    modes = [False, True] if device == "cpu" else [False]
    rates = {}
    for dtype in dtypes:
        for shape in PRODUCT_SHAPES:
            for parallel in modes:
                product = Product(dtype, shape, parallel)
                rates[product] = product_rate(device, product, 0.3)[0]
    best = max(rates, key=rates.get)
    return best, rates[best]


def count_flops(loaded, captions: list[str]) -> tuple[float, float, float]:
    """(FLOPs per image, FLOPs of all ``captions``, FLOPs per image as counted under inference
    mode) as torch's ``FlopCounterMode`` counts them.

    Counted with autograd on: under ``inference_mode`` ``nn.MultiheadAttention`` takes a fused
    kernel (``_native_multi_head_attention``) that the counter does not see, and misses the
    attention's projections (a third of a ViT's products); the third figure shows that count.
    Captions are counted at their own token length (each distinct length once): the least
    work a text tower with a causal mask must do, so padding a batch to its longest caption
    counts against the pipeline, not for it.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = loaded.model
    size = loaded.preprocess(Image.new("RGB", (64, 64))).shape
    image = torch.zeros((1, *size), device=loaded.device)

    def flops(fn) -> float:
        with FlopCounterMode(display=False) as counter:
            fn()
        return float(counter.get_total_flops())

    with torch.inference_mode():
        fused = flops(lambda: model.encode_image(image))
    with torch.enable_grad():
        per_image = flops(lambda: model.encode_image(image))
        tokens = loaded.tokenizer(captions)
        lengths = (_last_token(tokens) + 1).tolist()
        per_length = {}
        for length in sorted(set(lengths)):
            row = tokens[lengths.index(length)][None, :length].to(loaded.device)
            per_length[length] = flops(lambda: _encode_text(model, row))
    return per_image, float(sum(per_length[n] for n in lengths)), fused


# ---------------------------------------------------------------------------------- the data

def tuxpaint_pairs(n: int, tmp: Path) -> tuple[list, str]:
    """Up to ``n`` Tux Paint stamp pairs, or generated ones when the package is absent."""
    if TUXPAINT.is_dir():
        pairs, report = load_folder(TUXPAINT)
        pairs = pairs[:n]
        return pairs, (f"Tux Paint stamps ({TUXPAINT}): {report.summary()}; using {len(pairs)}")
    print(f"  Tux Paint stamps not found at {TUXPAINT} (apt-get install -y "
          "tuxpaint-stamps-default); falling back to generated 640x480 JPEGs and captions")
    make_upload(tmp / "generated", n, (640, 480))
    pairs, report = load_folder(tmp / "generated")
    return pairs, f"generated photo-like JPEGs: {report.summary()}"


# ---------------------------------------------------------------------------------- the runs

@dataclass
class Run:
    seconds: float
    cpu_seconds: float
    bound_rate: float  # FLOP/s, the best product's sustained rate just before and after
    bound_cpu_rate: float  # FLOP per CPU-second of that product


def measure(device: str, product: Product, work, probe_seconds: float) -> Run:
    """Time ``work`` (wall and CPU) between two sustained measurements of ``product``.

    The machine is shared: the bound is the product's rate over a few seconds right before
    and right after the work, averaged, so a neighbour's load weighs on both.
    """
    before = product_rate(device, product, probe_seconds)
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    after = product_rate(device, product, probe_seconds)
    return Run(wall, cpu, (before[0] + after[0]) / 2, (before[1] + after[1]) / 2)


def spread(values: list[float], fmt: str) -> str:
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def throughput_main(args: argparse.Namespace) -> None:
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"gapviz embed throughput: {os.cpu_count()} CPU cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), load average {load[0]:.1f} {load[1]:.1f} "
          f"{load[2]:.1f} at start")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pairs, what = tuxpaint_pairs(args.n, tmp)
        print(f"  data: {what}")
        started = time.perf_counter()
        loaded = load_model(ModelSpec("ViT-B-32", "none"), device=args.device)
        print(f"  model: ViT-B-32, random weights, on {loaded.device}; built in "
              f"{time.perf_counter() - started:.1f} s")
        captions = [p.caption for p in pairs]
        paths = [p.image_path for p in pairs]
        per_image, text_flops, fused = count_flops(loaded, captions)
        n = len(pairs)
        print(f"  FLOPs counted by torch: image tower {per_image / 1e9:.2f} GFLOP per image "
              f"({fused / 1e9:.2f} if counted under inference_mode, where the counter misses the "
              f"fused attention kernel); text tower {text_flops / n / 1e9:.3f} GFLOP per caption "
              f"at its own length (mean "
              f"{float((_last_token(loaded.tokenizer(captions)) + 1).float().mean()):.1f} tokens)")
        product, rate = best_product(loaded.device)
        how = "one per core, 1 thread each" if product.parallel else "one on all threads"
        print(f"  fastest matrix product here: {product.dtype} {'x'.join(map(str, product.shape))} "
              f"({how}), {rate / 1e9:.0f} GFLOP/s now; the bound below is its rate over "
              f"{args.probe:.0f} s before and after each run, averaged")
        precisions = args.precision or ["fp32", "auto"]
        for precision in precisions:
            try:
                resolved = resolve_precision(precision, loaded.device)
            except PrecisionError as err:
                print(f"\n{precision}: not run: {err}")
                continue
            shown = f"{precision} -> {resolved}" if precision == "auto" else precision
            print(f"\n{shown}")
            started = time.perf_counter()
            warm = embed_pairs(pairs[:16], loaded, precision=precision)
            line("warm-up run (16 pairs; one-time costs: bf16 copy)", f"{time.perf_counter() - started:.1f} s")
            for note in warm.notes:
                print(f"    {note}")
            kinds = ("pairs",) if args.pairs_only else ("images", "captions", "pairs")
            runs: dict[str, list[Run]] = {kind: [] for kind in kinds}
            flops = {"images": n * per_image, "captions": text_flops}
            result = {}

            def end_to_end() -> None:
                result["r"] = embed_pairs(pairs, loaded, precision=precision)
                save_embeddings(result["r"].embeddings, tmp / "out.npz", overwrite=True)

            work = {"images": lambda: embed_stream(loaded, paths, [], precision=precision),
                    "captions": lambda: embed_stream(loaded, [], captions, precision=precision),
                    "pairs": end_to_end}
            for _ in range(args.repeat):
                for kind in kinds:
                    runs[kind].append(measure(loaded.device, product, work[kind], args.probe))
            kept = result["r"].embeddings.n
            counts = {"images": n, "captions": n, "pairs": kept}
            flops["pairs"] = kept * per_image + text_flops
            check = result["r"].precision_check
            line("precision recorded in the file's meta", str(result["r"].embeddings.meta["precision"]))
            if check is not None:
                line("self-check: min / mean cosine to fp32",
                     f"{check.min:.5f} / {check.mean:.5f}", "pass >= 0.999" if check.passed else
                     "FAILED: fell back to fp32")
            labels = {"images": "images/s (read+decode+preprocess+tower)",
                      "captions": "captions/s (tokenize+tower)",
                      "pairs": "pairs/s end to end (+ self-check, write)"}
            if args.cli:
                # The whole command, as a user runs it: load and validate the folder, build the
                # model (random init here; reading weights otherwise), make the bf16 copy,
                # embed, write. Its own "embedded in" time is the embedding part of it.
                cli_out = io.StringIO()
                argv = [str(TUXPAINT if TUXPAINT.is_dir() else tmp / "generated"), "--model",
                        "ViT-B-32", "--pretrained", "none", "--out", str(tmp / "cli.npz"),
                        "--overwrite", "--no-cache", "-q", "--precision", precision]

                def command() -> None:
                    with contextlib.redirect_stdout(cli_out):
                        assert embed_main(argv) == 0

                runs["command"] = []
                for _ in range(args.repeat):
                    runs["command"].append(measure(loaded.device, product, command, args.probe))
                written = load_embeddings(tmp / "cli.npz")[0]  # the whole folder, whatever --n
                counts["command"] = written.n
                flops["command"] = written.n * per_image + count_flops(loaded, written.captions)[1]
                kinds = (*kinds, "command")
                labels["command"] = "`gapviz embed` pairs/s, whole command"
                print("    " + cli_out.getvalue().strip().splitlines()[-1])
            for kind in kinds:
                rs = runs[kind]
                ratio = [100 * flops[kind] / r.seconds / r.bound_rate for r in rs]
                per_cpu = [100 * flops[kind] / r.cpu_seconds / r.bound_cpu_rate for r in rs]
                target = f"; target >= {100 * TARGET:.0f}%" if kind in ("pairs", "command") else ""
                line(labels[kind], spread([counts[kind] / r.seconds for r in rs], ".1f"),
                     f"{spread(ratio, '.0f')}% of bound (per CPU-second {spread(per_cpu, '.0f')}%)"
                     f"{target}")
            rs = runs["pairs"]
            line("bound: product rate around the runs, GFLOP/s", spread([r.bound_rate / 1e9 for r in rs], ".0f"))
            line("bound, pairs/s", spread([r.bound_rate * kept / flops["pairs"] for r in rs], ".1f"))
            # Per CPU-second, both sides are free of how much of the machine the neighbours left.
            line("CPU used by the end-to-end runs", f"{spread([r.cpu_seconds / r.seconds for r in rs], '.2f')}"
                 f" of {torch.get_num_threads()} cores")
            # The figure and its floor side by side, from this one run.
            ratio = statistics.median(flops["pairs"] / r.seconds / r.bound_rate for r in rs)
            print(f"  => {shown}: {spread([kept / r.seconds for r in rs], '.1f')} pairs/s end to end; "
                  f"bound {spread([r.bound_rate * kept / flops['pairs'] for r in rs], '.1f')} pairs/s; "
                  f"{100 * ratio:.0f}% of bound; target >= {100 * TARGET:.0f}%: "
                  f"{'met' if ratio >= TARGET else 'NOT met'}", flush=True)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"\nload average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at the end")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=400, help="pairs embedded (throughput)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per precision")
    parser.add_argument("--precision", action="append", choices=("auto", "fp32", "bf16", "fp16"),
                        help="precision to run (repeatable; default fp32 and auto)")
    parser.add_argument("--probe", type=float, default=3.0,
                        help="seconds the bound's product runs before and after each run")
    parser.add_argument("--cli", action="store_true",
                        help="also time the whole `gapviz embed` command on the same folder")
    parser.add_argument("--pairs-only", action="store_true",
                        help="skip the images-only and captions-only runs")
    parser.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    parser.add_argument("--io", action="store_true",
                        help="instead: loading, validating and cache hits of uploaded pairs")
    parser.add_argument("--pairs", type=int, default=2500, help="--io: uploaded pairs")
    parser.add_argument("--images", type=int, default=128, help="--io: images embedded for images/s")
    parser.add_argument("--full", action="store_true", help="--io: embed all pairs with ViT-B-32")
    args = parser.parse_args()
    if args.io:
        io_main(args)
    else:
        throughput_main(args)


if __name__ == "__main__":
    main()
