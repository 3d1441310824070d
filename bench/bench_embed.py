"""Benchmark: data in and embeddings out, on this machine, each figure next to its target.

    python bench/bench_embed.py              # ~2-4 minutes on a 2-core CPU
    python bench/bench_embed.py --full       # also embed all 2,500 pairs with ViT-B-32 for real

Measures
--------
1. Loading and validating 2,500 uploaded pairs (a folder of real JPEGs with a .txt beside each,
   and the same folder as a .zip): target well under 10 s.
2. ViT-B-32 (random weights: the same cost as trained ones) on this device: images per second
   (decode + preprocess + forward, COCO-sized 640x480 JPEGs) and captions per second.
3. A cache hit for 2,500 pairs: hashing every image and caption and reading the entry back,
   first in the library, then as the whole ``embed`` command (process start-up excluded).
   Without ``--full`` the entry under that key holds random vectors of ViT-B-32's shape rather
   than 2,500 real forward passes (minutes on a CPU): a hit hashes the data and reads the
   file, and costs the same whatever numbers the file holds. ``--full`` embeds for real.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gapviz.cache import EmbeddingCache  # noqa: E402
from gapviz.data import load_folder  # noqa: E402
from gapviz.embeddings import PairedEmbeddings  # noqa: E402
from gapviz.cli.embed import main as embed_main  # noqa: E402
from gapviz.encode import ModelSpec, embed_images, embed_pairs, embed_texts, load_model  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=2500)
    parser.add_argument("--images", type=int, default=128, help="images embedded for images/s")
    parser.add_argument("--full", action="store_true", help="embed all pairs with ViT-B-32")
    args = parser.parse_args()
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
            cache.save(cache.key(pairs, spec.identity()),
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


if __name__ == "__main__":
    main()
