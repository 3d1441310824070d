"""The ``embed`` command: image-caption pairs in, an embeddings file out.

``gapviz embed SOURCE --model NAME --pretrained TAG --out FILE.npz``

SOURCE is one of: a folder or ``.zip`` of images with captions; ``coco`` (downloaded) or
local COCO files (``captions_*.json``, the annotations zip, ``dataset_coco.json``, a parquet
listing); ``cc`` (with ``--tsv``) or a CC ``.tsv`` path or URL; a webdataset ``.tar``; or an
embeddings ``.npz``/``.parquet`` computed elsewhere (validated and copied, for models open_clip
lacks). :func:`register` adds the command to the main parser; :func:`run` carries it out.
"""

from __future__ import annotations

import argparse
import errno
import sys
import tarfile
import tempfile
import time
import zipfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TextIO

from ..cache import EmbeddingCache, cache_write_problem, describe_os_error
from ..data import DataError, DataReport, load_cc, load_coco, load_folder, load_webdataset, require_pairs
from ..data.archives import safe_path
from ..data.defaults import (CAPTION_CHOICES, CAPTION_FILES, CC_TSV_ENV, DOWNLOAD_RETRIES,
                            DOWNLOAD_TIMEOUT, DOWNLOAD_WORKERS, MAX_IMAGE_PIXELS, SAMPLE_N,
                            SAMPLE_SEED, cache_root)
from ..data.download import is_url
from ..embeddings import (EmbeddingsFileError, check_output_path, load_embeddings,
                          save_embeddings)
from ..ray_embed import (SHARD_SIZE, RayMissingError, check_shard_folder, embed_with_ray,
                         require_ray)
from ..safety import terminal_text
from .common import EXIT_INTERRUPTED, EXIT_USER_ERROR, error_line
from ..encode import (KNOWN_MODELS, PRECISIONS, EmbedResult, ModelLoadError, ModelSpec,
                     PrecisionError, embed_pairs)

DEFAULT_MODEL = KNOWN_MODELS[0]

DESCRIPTION = """\
Embed image-caption pairs with an open_clip model into a .npz/.parquet embeddings file
(ids, captions and image paths included) that `evaluate` reads. Bad inputs are skipped and
reported; results are cached, so the same data and model a second time is instant.

SOURCE: a folder or .zip of images with captions; coco (downloaded) or local COCO files
(captions_*.json, the annotations zip, dataset_coco.json, a parquet listing); cc with --tsv,
or a CC .tsv path or URL; a webdataset .tar; or a precomputed embeddings .npz/.parquet.
"""

EXAMPLES = """\
examples:
  gapviz embed photos/ --pretrained none --out photos.npz    # random weights
  gapviz embed upload.zip --out upload.npz                   # CLIP ViT-B/32
  gapviz embed coco --n 2500 --seed 0 --out coco.npz         # downloads what it needs
  gapviz embed annotations/captions_val2017.json --images val2017/ --out coco.npz
  gapviz embed cc --tsv Validation_GCC-1.1.0-Validation.tsv --out cc.npz
  gapviz embed shard-000000.tar --out wds.npz                # webdataset
  gapviz embed llm2clip.npz --out checked.npz                # precomputed
  gapviz embed photos/ --ray --out photos-shards/            # Ray: parquet shards, resumable

upload layout: images with captions.csv/.tsv/.jsonl (columns image or file_name, and
caption), or a .txt beside each image whose first line is the caption.
"""


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``embed`` subcommand to ``subparsers`` (from ``parser.add_subparsers()``)."""
    p = subparsers.add_parser(
        "embed", help="embed image-caption pairs (folder, zip, COCO, CC) into an embeddings file",
        description=DESCRIPTION, epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", nargs="?", help="folder, .zip, coco, cc, COCO/CC/webdataset file, "
                   "or a precomputed .npz/.parquet")
    p.add_argument("--out", "-o", help="output embeddings file (.npz or .parquet)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    g = p.add_argument_group("model")
    g.add_argument("--model", default=DEFAULT_MODEL.name,
                   help=f"open_clip architecture (default {DEFAULT_MODEL.name}); see --list-models")
    g.add_argument("--pretrained", default=DEFAULT_MODEL.pretrained,
                   help="weights: a pretrained tag, a local checkpoint file, or 'none' for random "
                   f"weights (default {DEFAULT_MODEL.pretrained})")
    g.add_argument("--weights-seed", type=int, default=0, help="seed of random weights (default 0)")
    g.add_argument("--tokenizer", metavar="DIR",
                   help="a folder holding a Hugging Face tokenizer (what save_pretrained writes: "
                        "tokenizer.json, tokenizer_config.json), for models whose tokenizer "
                        "comes from the hub (SigLIP) on a machine that cannot reach it")
    g.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    g.add_argument("--batch-size", type=int,
                   help="images per batch (default: sized for the device, 32 on a CPU)")
    g.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto (default): bf16 on CPUs with native bf16, mixed precision on GPUs, "
                        "else fp32. Checked against fp32 on a sample (falls back below 0.999 "
                        "cosine); recorded in the file's meta")
    g.add_argument("--list-models", action="store_true", help="list well-known models and exit")
    d = p.add_argument_group("data")
    d.add_argument("--n", type=int, help=f"number of pairs to sample (default: {SAMPLE_N} for COCO "
                   "and CC, all for uploads)")
    d.add_argument("--seed", type=int, default=SAMPLE_SEED, help="sampling seed (default 0)")
    d.add_argument("--caption", choices=CAPTION_CHOICES, default="first",
                   help="COCO, and captions files with several rows per image (Flickr30k): "
                        "which caption of each image (default first; random: one per image, "
                        "seeded; all: every caption, one pair each, grouped by image, so any "
                        "caption counts as the image's match and --n counts images)")
    d.add_argument("--captions", help="uploads: captions file to use (.csv, .tsv, .jsonl)")
    d.add_argument("--images", help="COCO: local image folder")
    d.add_argument("--split", help="COCO: val2017, train2017, or a Karpathy split (test, val, ...)")
    d.add_argument("--annotations-url", help="COCO: URL of the annotations (zip, json or parquet)")
    d.add_argument("--images-url", help="COCO: base URL of images ({base}/{split}/{file_name})")
    d.add_argument("--tsv", help=f"CC: path or URL of the TSV (or ${CC_TSV_ENV})")
    d.add_argument("--max-pixels", type=int, default=MAX_IMAGE_PIXELS,
                   help="skip larger images (decompression bombs)")
    n = p.add_argument_group("downloads and cache")
    n.add_argument("--workers", type=int, default=DOWNLOAD_WORKERS, help="concurrent downloads")
    n.add_argument("--timeout", type=float, default=DOWNLOAD_TIMEOUT, help="seconds per connection")
    n.add_argument("--retries", type=int, default=DOWNLOAD_RETRIES, help="retries per download")
    n.add_argument("--cache-dir", help="cache root (default $GAPVIZ_CACHE_DIR or ~/.cache/gapviz)")
    n.add_argument("--no-cache", action="store_true",
                   help="leave the cache alone: no cached embeddings read or written, archives "
                        "and downloads in a temporary folder removed at the end")
    n.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    r = p.add_argument_group("Ray (pip install \"gapviz[scale]\")")
    r.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="embed with Ray Data into a folder of parquet shards (--out FOLDER); a "
                        "rerun skips finished shards. ADDRESS: a cluster (auto, ray://host:10001); "
                        "none starts a local runtime")
    r.add_argument("--shard-size", type=int, default=SHARD_SIZE,
                   help=f"--ray: pairs per shard (default {SHARD_SIZE})")
    p.set_defaults(func=run)
    return p


def main(argv: list[str] | None = None) -> int:
    """``gapviz embed ARGS...`` from Python (scripts, benchmarks): the same as the command."""
    from . import main as gapviz_main

    return gapviz_main(["embed", *(sys.argv[1:] if argv is None else argv)])


def run(args: argparse.Namespace) -> int:
    """Carry out ``embed``; returns the exit code (0 ok, 2 bad input, 130 interrupted)."""
    err = sys.stderr
    if args.list_models:
        for choice in KNOWN_MODELS:
            print(f"{choice.name:<22} --pretrained {choice.pretrained:<12} {choice.label}")
        print("Any other open_clip name works too (open_clip.list_models()); --pretrained takes "
              "a tag, a checkpoint file, or none.")
        return 0
    try:
        _check_args(args)
        return _embed(args, err)
    except (DataError, ModelLoadError, EmbeddingsFileError, FileExistsError, PrecisionError,
            RayMissingError) as exc:
        print(error_line("embed", exc), file=err)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("\ngapviz embed: interrupted. Finished downloads and extractions are cached; "
              "run the same command again to resume.", file=err)
        return EXIT_INTERRUPTED


def _check_args(args: argparse.Namespace) -> None:
    if not args.source:
        raise DataError("give a SOURCE: a folder, a .zip, coco, cc, a COCO/CC file, or a "
                        ".npz/.parquet of embeddings (see --help).")
    if getattr(args, "ray", None) is not None:
        require_ray()  # before any loading: a missing extra is one line
        if not args.out:
            raise DataError("give --out FOLDER for the shards.")
        if args.shard_size < 1:
            raise DataError(f"--shard-size must be at least 1, got {args.shard_size}.")
        check_shard_folder(args.out)
        return
    if not args.out:
        raise DataError("give --out FILE.npz (or .parquet) for the embeddings.")
    if Path(args.out).suffix.lower() not in (".npz", ".parquet"):
        raise DataError(f"--out {args.out}: choose a .npz or .parquet file name.")
    if Path(args.out).exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} already exists; choose another name or add --overwrite.")
    # A folder or an unwritable place fails now, not after the whole embedding.
    check_output_path(args.out, overwrite=args.overwrite)
    for name in ("n", "batch_size", "workers", "max_pixels"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise DataError(f"--{name.replace('_', '-')} must be at least 1, got {value}.")
    if args.retries < 0 or args.timeout <= 0:
        raise DataError("--retries must be >= 0 and --timeout > 0.")


def detect_kind(source: str) -> str:
    """What SOURCE is: folder, archive, coco, cc, webdataset, captions or embeddings."""
    lower = source.lower()
    if lower in ("coco", "cc"):
        return lower
    if is_url(source):
        return "cc" if lower.endswith(".tsv") else "coco"
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"{source}: no such file or folder (SOURCE is a folder, a .zip, coco, cc, "
                        "or a COCO/CC/webdataset/embeddings file).")
    if path.is_dir():
        return "folder"
    name = path.name.lower()
    if name in CAPTION_FILES or name.endswith((".csv", ".jsonl")):
        return "captions"
    if name.endswith(".npz"):
        return "embeddings"
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            columns = pq.read_schema(path).names
        except Exception as exc:  # pyarrow raises several types for unreadable files
            raise DataError(f"{path}: not a readable parquet file ({exc}).") from None
        return "embeddings" if "image_embedding" in columns else "coco"
    if name.endswith(".tsv"):
        return "cc"
    if name.endswith(".json"):
        return "coco"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = [Path(n).name for n in zf.namelist()]
        is_coco = any(n == "dataset_coco.json" or (n.startswith("captions_") and n.endswith(".json"))
                      for n in names)
        return "coco" if is_coco else "archive"
    if name.endswith((".tar", ".tar.gz", ".tgz")):
        try:
            with tarfile.open(path) as tf:
                names = [m.name for m in tf.getmembers()]
        except (tarfile.TarError, OSError) as exc:
            raise DataError(f"{path}: not a readable tar archive ({exc}).") from None
        paths = [p for p in map(safe_path, names) if p is not None]
        has_captions = any(p.name.lower() in CAPTION_FILES and len(p.parts) <= 2 for p in paths)
        return "archive" if has_captions else "webdataset"
    raise DataError(f"{path}: cannot tell what this file is. Give a folder, a .zip or .tar of "
                    "images with captions, a COCO .json/.zip/.parquet, a CC .tsv, or an "
                    "embeddings .npz/.parquet.")


def _load(args: argparse.Namespace, kind: str, progress: Any,
          cache_dir: str | None) -> tuple[list, DataReport]:
    download = {"workers": args.workers, "timeout": args.timeout, "retries": args.retries}
    common = {"cache_dir": cache_dir, "max_pixels": args.max_pixels, "progress": progress}
    n_remote = args.n if args.n is not None else SAMPLE_N
    if kind in ("folder", "archive"):
        return load_folder(args.source, captions=args.captions, n=args.n, seed=args.seed,
                           caption_choice=args.caption, **common)
    if kind == "captions":
        caption_file = Path(args.source).expanduser()
        return load_folder(caption_file.parent, captions=caption_file, n=args.n, seed=args.seed,
                           caption_choice=args.caption, **common)
    if kind == "webdataset":
        return load_webdataset(args.source, n=args.n, seed=args.seed, **common)
    if kind == "coco":
        annotations = None if args.source.lower() == "coco" else args.source
        return load_coco(annotations, args.images, n=n_remote, seed=args.seed,
                         caption_choice=args.caption, split=args.split,
                         annotations_url=args.annotations_url, images_url=args.images_url,
                         download=download, **common)
    if kind == "cc":
        tsv = args.tsv if args.source.lower() == "cc" else args.source
        return load_cc(tsv, n=n_remote, seed=args.seed, download=download, **common)
    raise AssertionError(kind)


class _Workspace:
    """Where a run's loaders put archives and downloads, and the embedding cache it uses.

    The cache, normally. With ``--no-cache``, a temporary folder removed at the end and no
    embedding cache: nothing in the cache is read or written. When the cache cannot be written
    (read-only, full, a file; checked before loading, or found while loading), one warning, then
    the temporary folder, with the embedding cache read-only (entries there still serve).
    """

    def __init__(self, args: argparse.Namespace, err: TextIO, stack: ExitStack) -> None:
        self.args, self.err, self.stack = args, err, stack
        self.root = cache_root(args.cache_dir)
        self.temporary: str | None = None
        self.folder: str | None = args.cache_dir
        self.cache: EmbeddingCache | None = None
        if args.no_cache:
            self._use_temporary()
            return
        problem = cache_write_problem(args.cache_dir)
        if problem is not None:
            self.fall_back(problem)
        else:
            self.cache = EmbeddingCache(args.cache_dir)

    def _use_temporary(self) -> None:
        self.temporary = self.stack.enter_context(tempfile.TemporaryDirectory(prefix="gapviz-embed-"))
        self.folder = self.temporary

    def fall_back(self, problem: str) -> None:
        """Warn (one line) and go on without writing to the cache."""
        print(terminal_text(f"  warning: cannot write to the cache {self.root} ({problem}); this "
                            "run goes on without it (archives and downloads in a temporary "
                            "folder, nothing cached). Free some space, or choose another "
                            "--cache-dir."), file=self.err)
        self._use_temporary()
        self.cache = EmbeddingCache(self.args.cache_dir, read_only=True)

    def is_cache_failure(self, exc: OSError) -> bool:
        """Whether ``exc`` is the cache failing to take a write (not the source's fault)."""
        if self.temporary is not None or exc.errno not in _CACHE_WRITE_ERRNOS:
            return False
        if not exc.filename:  # a failed write() names no file: ask the cache itself
            return cache_write_problem(self.args.cache_dir) is not None
        where, root = Path(exc.filename).absolute(), self.root.absolute()
        return where == root or root in where.parents


#: What a cache that cannot take a write says: full, over quota, read-only, forbidden, a file.
_CACHE_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                       errno.ENOTDIR}


def _embed(args: argparse.Namespace, err: TextIO) -> int:
    started = time.perf_counter()
    kind = detect_kind(args.source)
    progress = None if args.quiet else ProgressLine(err)
    if kind == "embeddings" and getattr(args, "ray", None) is not None:
        raise DataError(f"{args.source} holds embeddings already; --ray embeds images and captions.")
    if kind == "embeddings":
        embeddings, load_report = load_embeddings(args.source)
        _say(args, err, f"{args.source}: {load_report.summary()}")
        for warning in load_report.warnings:
            _say(args, err, f"  warning: {warning}")
        path = save_embeddings(embeddings, args.out, overwrite=args.overwrite)
        print(terminal_text(f"wrote {path} ({embeddings.n} pairs, d={embeddings.dim}, model "
                            f"'{embeddings.model or 'unknown'}', precomputed)"))
        return 0
    with ExitStack() as stack:
        work = _Workspace(args, err, stack)
        try:
            pairs, report = _load(args, kind, progress, work.folder)
        except OSError as exc:
            if not work.is_cache_failure(exc):
                raise
            if progress is not None:
                progress.finish()
            work.fall_back(describe_os_error(exc))
            pairs, report = _load(args, kind, progress, work.folder)
        code = _embed_pairs(args, err, kind, pairs, report, work, progress, started)
    return code


def _embed_pairs(args: argparse.Namespace, err: TextIO, kind: str, pairs: list,
                 report: DataReport, work: _Workspace, progress: Any, started: float) -> int:
    if progress is not None:
        progress.finish()
    for line in report.lines():
        _say(args, err, line)
    require_pairs(pairs, report, args.source)
    spec = ModelSpec(args.model, args.pretrained, seed=args.weights_seed, tokenizer=args.tokenizer)
    _say(args, err, f"embedding {len(pairs)} pairs with {spec.label()}")
    meta = {"source": args.source, "source_kind": kind, "n": args.n, "seed": args.seed,
            "caption_choice": args.caption if kind in ("coco", "folder", "archive", "captions")
            else None,
            "data_report": report.summary()}
    if getattr(args, "ray", None) is not None:
        return _embed_ray(args, err, pairs, spec, meta, progress, started)
    result: EmbedResult = embed_pairs(pairs, spec, cache=work.cache, device=args.device,
                                      image_batch=args.batch_size, meta=meta, progress=progress,
                                      precision=args.precision)
    if progress is not None:
        progress.finish()
    for reason, ids in result.skipped.items():
        _say(args, err, f"  skipped {len(ids)} while embedding: {reason} (e.g. {', '.join(ids[:3])})")
    check = result.precision_check
    for note in result.notes:
        if check is not None and not check.passed:
            print(terminal_text(f"  warning: {note}"), file=err)  # shown even with --quiet
        else:
            _say(args, err, f"  {note}")
    for warning in result.warnings:  # the cache could not be written: shown even with --quiet
        print(terminal_text(f"  warning: {warning}"), file=err)
    if work.temporary is not None and any(
            str(p).startswith(work.temporary) for p in result.embeddings.image_paths or []):
        _say(args, err, "  note: the images were extracted or downloaded to a temporary folder, "
                        "removed now; the image paths in the output name files that are gone")
    path = save_embeddings(result.embeddings, args.out, overwrite=args.overwrite)
    how = "from cache" if result.from_cache else f"embedded in {result.seconds:.1f} s"
    print(terminal_text(f"wrote {path} ({result.embeddings.n} pairs, d={result.embeddings.dim}, "
                        f"{spec.label()}, {how}; total {time.perf_counter() - started:.1f} s)"))
    return 0


def _embed_ray(args: argparse.Namespace, err: TextIO, pairs: list, spec: ModelSpec,
               meta: dict[str, Any], progress: Any, started: float) -> int:
    ray = embed_with_ray(pairs, spec, args.out, address=args.ray or None,
                         shard_size=args.shard_size, device=args.device, precision=args.precision,
                         image_batch=args.batch_size, meta=meta, overwrite=args.overwrite,
                         progress=progress)
    if progress is not None:
        progress.finish()
    for reason, ids in ray.skipped.items():
        _say(args, err, f"  skipped {len(ids)} while embedding: {reason} (e.g. {', '.join(ids[:3])})")
    print(terminal_text(f"wrote {len(ray.written)} of {ray.shards} shards to {ray.folder} "
                        f"({ray.already} already there; {ray.n_pairs} pairs, {spec.label()}; "
                        f"total {time.perf_counter() - started:.1f} s)"))
    return 0


def _say(args: argparse.Namespace, err: TextIO, line: str) -> None:
    """Print one progress line (unless ``--quiet``); names from files in it are escaped."""
    if not args.quiet:
        print(terminal_text(line), file=err)


class ProgressLine:
    """A one-line progress display on ``stream``: rewritten in place on a terminal, a line
    every quarter otherwise (so logs stay short)."""

    def __init__(self, stream: TextIO, interval: float = 0.2) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.interval = interval
        self.last = 0.0
        self.stage = ""
        self.quarter = -1
        self.open = False

    def __call__(self, done: int, total: int, stage: str) -> None:
        stage = terminal_text(stage)  # may name a downloaded file
        if stage != self.stage:
            self.finish()
            self.stage, self.quarter = stage, -1
        if stage.startswith("downloading ") and total > 1024:  # bytes of one file
            text = f"{stage}: {done / 1024**2:.1f}" + (f" of {total / 1024**2:.1f} MiB" if total else " MiB")
        else:
            text = f"{stage}: {done}/{total}"
        fraction = done / total if total else 0.0
        if self.tty:
            now = time.monotonic()
            if now - self.last >= self.interval or done >= total:
                self.last = now
                self.stream.write(f"\r{text} ({fraction:.0%})   ")
                self.stream.flush()
                self.open = True
        else:
            quarter = int(fraction * 4)
            if quarter > self.quarter:
                self.quarter = quarter
                self.stream.write(f"{text} ({fraction:.0%})\n")

    def finish(self) -> None:
        if self.open:
            self.stream.write("\n")
            self.stream.flush()
            self.open = False


if __name__ == "__main__":
    sys.exit(main())
