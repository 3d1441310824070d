"""Embedding pairs with Ray Data, into a folder of parquet shards that a rerun resumes.

``gapviz embed SOURCE --ray [ADDRESS] --out FOLDER``

The pairs (listed by gapviz's loaders, :mod:`gapviz.data`, with their checks and downloads) are
split by index into shards of ``shard_size``: shard ``[start, end)`` is written as
``FOLDER/pairs-START-END.parquet`` in the embeddings file format (:mod:`gapviz.embeddings`), and
:func:`gapviz.embeddings.load_embeddings` reads the folder as one set. Ray Data carries the
shards still missing (one block each) through ``map_batches`` to :class:`PairEncoder` actors
(one per GPU where the cluster has GPUs, CPU actors otherwise), which run gapviz's embedding
pipeline (:func:`gapviz.embed_pipeline.embed_stream`); the driver writes each shard under a
hidden name and renames it once all its rows are back. A rerun skips the shards already there,
so a killed run resumes where it stopped. ``FOLDER/_gapviz_shards.json`` records the pairs, the
model and the shard size, so a rerun with other pairs or another model is refused instead of
mixed in.

Without an address a local Ray runtime is started (and stopped afterwards); with one
(``auto``, ``ray://host:10001``) the job runs on that cluster, which needs gapviz installed on
its workers and the image files readable from them (shared storage, or ``--cache-dir`` on it).
Ray is an optional extra: ``pip install "gapviz[scale]"``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .data.pairs import DataError, Pair, Progress
from .embeddings import PARQUET_META_KEY, EmbeddingsFileError
from .encode import ModelLoadError, ModelSpec, PrecisionError, resolve_precision
from .safety import set_default_mode

#: Pairs per shard: 4,096 pairs of 512-d vectors make a 16 MiB shard.
SHARD_SIZE = 4096
#: CPUs of the local runtime started when no address is given.
LOCAL_CPUS = 4
#: CPUs of each CPU actor (its torch threads; the pipeline runs one model lane per CPU).
CPU_ACTOR_CPUS = 4
MANIFEST = "_gapviz_shards.json"
MANIFEST_FORMAT = "gapviz ray shards 1"
SHARD_PATTERN = re.compile(r"pairs-(\d+)-(\d+)\.parquet")
INSTALL_HINT = 'pip install "gapviz[scale]"'


class RayMissingError(ImportError):
    """Ray is not installed; the message says how to install it."""


def require_ray() -> Any:
    """The ``ray`` module, or :class:`RayMissingError` with the install command."""
    try:
        import ray
        import ray.data  # noqa: F401  (ray without the [data] extra lacks its dependencies)
    except ImportError as err:
        raise RayMissingError(f"--ray needs Ray Data, which is not installed ({err}): "
                              f"{INSTALL_HINT}") from None
    return ray


def shard_ranges(n: int, shard_size: int) -> list[tuple[int, int]]:
    """``[start, end)`` of each shard of ``n`` pairs: a stable split by pair index."""
    return [(start, min(start + shard_size, n)) for start in range(0, n, shard_size)]


def shard_name(start: int, end: int) -> str:
    """The file name of shard ``[start, end)``; names sort in pair order."""
    return f"pairs-{start:09d}-{end:09d}.parquet"


@dataclass
class RayEmbedResult:
    """What :func:`embed_with_ray` did.

    Attributes
    ----------
    folder : Path
        The shards' folder (read it with :func:`gapviz.embeddings.load_embeddings`).
    n_pairs : int
        Pairs in the listing.
    shards : int
        Shards of the listing.
    written : list of str
        Shards written by this run.
    already : int
        Shards found finished by an earlier run (skipped).
    n_embedded : int
        Pairs embedded by this run, skipped images excluded.
    skipped : dict of str to list of str
        Reason -> ids of pairs whose image failed while embedding (this run's shards).
    seconds : float
    """

    folder: Path
    n_pairs: int
    shards: int
    written: list[str] = field(default_factory=list)
    already: int = 0
    n_embedded: int = 0
    skipped: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0


class PairEncoder:
    """The model actor of ``map_batches``: holds one loaded open_clip model and embeds batches.

    ``__call__`` takes a batch of n pairs (numpy columns ``index`` and ``shard``, passed through,
    ``caption`` and ``image_path``) and returns n rows: ``image_embedding`` and
    ``text_embedding`` of shape (n, d) (L2-normalised float32; NaN rows for images that failed),
    ``skipped`` (the reason, or ``""``), ``precision`` (what ran) and ``check`` (the actor's
    precision self-check as JSON, ``null`` for fp32). A reduced precision checks itself against
    fp32 on the actor's first batch (:func:`gapviz.embed_pipeline.check_precision`); later
    batches keep what that check settled on.

    Parameters
    ----------
    spec : ModelSpec
    device : str, optional
        Default: the best available (:func:`gapviz.encode.pick_device`).
    precision : {"auto", "fp32", "bf16", "fp16"}
    image_batch, text_batch : int, optional
    model_config : dict, optional
        The open_clip config of ``spec.name``, registered in the worker when open_clip there
        does not know the name (an architecture added with ``open_clip.add_model_config`` in
        the driver).
    """

    def __init__(self, spec: ModelSpec, *, device: str | None = None, precision: str = "auto",
                 image_batch: int | None = None, text_batch: int | None = None,
                 model_config: dict[str, Any] | None = None) -> None:
        from .encode import load_model

        if model_config is not None:
            _register_model_config(spec.name, model_config)
        self.loaded = load_model(spec, device=device)
        self.precision = precision
        self.image_batch, self.text_batch = image_batch, text_batch
        self.check: dict[str, Any] | None = None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from .embed_pipeline import embed_stream

        captions = [str(c) for c in batch["caption"]]
        stream = embed_stream(self.loaded, [str(p) for p in batch["image_path"]], captions,
                              precision=self.precision, image_batch=self.image_batch,
                              text_batch=self.text_batch)
        if stream.check is not None:
            self.check = stream.check.as_meta()
        self.precision = stream.precision
        n = len(captions)
        images = stream.images if stream.images.shape[1] else np.full(
            (n, stream.texts.shape[1]), np.nan, np.float32)
        skipped = np.array([stream.failures.get(i, "") for i in range(n)], dtype=object)
        return {"index": np.asarray(batch["index"]), "shard": np.asarray(batch["shard"]),
                "image_embedding": images, "text_embedding": stream.texts, "skipped": skipped,
                "precision": np.array([stream.precision] * n, dtype=object),
                "check": np.array([json.dumps(self.check)] * n, dtype=object)}


def _register_model_config(name: str, config: dict[str, Any]) -> None:
    import open_clip

    if name.replace("/", "-") in open_clip.list_models():
        return
    folder = Path(tempfile.mkdtemp(prefix="gapviz-model-config-"))
    (folder / f"{name.replace('/', '-')}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)


def _model_config(spec: ModelSpec) -> dict[str, Any] | None:
    """The driver's open_clip config of ``spec.name`` (None for hub and local-dir models)."""
    if spec.has_schema:
        return None
    import open_clip

    return open_clip.get_model_config(spec.name.replace("/", "-"))


def listing_hash(pairs: Sequence[Pair]) -> str:
    """SHA-1 of the pairs' ids and captions, in order: what the shard split depends on."""
    h = hashlib.sha1()
    for p in pairs:
        h.update(p.id.encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
        h.update(p.caption.encode("utf-8", "surrogatepass"))
        h.update(b"\x1e")
    return h.hexdigest()


def _manifest(pairs: Sequence[Pair], spec: ModelSpec, precision: str, shard_size: int) -> dict[str, Any]:
    return {"format": MANIFEST_FORMAT, "n_pairs": len(pairs), "shard_size": shard_size,
            "pairs_sha1": listing_hash(pairs), "model": spec.identity(), "precision": precision}


def check_shard_folder(folder: str | os.PathLike) -> Path:
    """Raise :class:`EmbeddingsFileError` when ``folder`` cannot be a shards folder (a file, or a
    file name); the cheap part of :func:`prepare_folder`, for a check before any work."""
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise EmbeddingsFileError(f"{folder} is a file; with --ray, --out names a folder for the "
                                  "shards.")
    if folder.suffix.lower() in (".npz", ".parquet"):
        raise EmbeddingsFileError(f"{folder}: with --ray, --out names a folder for the shards, "
                                  f"not a file; e.g. {folder.with_suffix('')}-shards/.")
    return folder


def prepare_folder(folder: str | os.PathLike, manifest: dict[str, Any], *,
                   overwrite: bool = False) -> Path:
    """Make ``folder`` ready for the shards of ``manifest``; returns it.

    A new or empty folder gets the manifest. A folder holding the same run's manifest is
    resumed. Anything else raises: another run's shards (unless ``overwrite``, which removes
    that run's shards and manifest, nothing else), a file, or a folder of other files (the
    folder is read as a whole, so it must hold shards only).
    """
    folder = check_shard_folder(folder)
    path = folder / MANIFEST
    if folder.is_dir():
        ours = [p for p in folder.iterdir() if p.name == MANIFEST or _is_shard_file(p.name)]
        others = sorted(p.name for p in folder.iterdir() if p not in ours)
        if others:
            raise EmbeddingsFileError(
                f"{folder} holds other files ({', '.join(others[:3])}"
                f"{', ...' if len(others) > 3 else ''}); give a new or empty folder for the shards.")
        if path.exists():
            try:
                existing = json.loads(path.read_text())
            except (OSError, ValueError):
                existing = None
            if existing != json.loads(json.dumps(manifest)):
                if not overwrite:
                    raise FileExistsError(
                        f"{folder} holds the shards of another run (other pairs, model, precision "
                        "or shard size); choose another folder or add --overwrite.")
                for p in ours:
                    p.unlink()
        elif ours and not overwrite:
            raise FileExistsError(f"{folder} holds shards without {MANIFEST}; choose another "
                                  "folder or add --overwrite.")
        elif ours:
            for p in ours:
                p.unlink()
        for p in folder.iterdir():  # a shard a killed run was still writing
            if p.name.startswith(".") and _is_shard_file(p.name) and p.exists():
                p.unlink()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            _write_atomic(path, json.dumps(manifest, indent=1).encode())
    except OSError as err:
        raise EmbeddingsFileError(f"{folder}: cannot write there ({err.strerror or err}); "
                                  "choose another folder.") from None
    return folder


def _is_shard_file(name: str) -> bool:
    """A finished shard, or one being written (hidden name)."""
    return bool(SHARD_PATTERN.fullmatch(name) or
                (name.startswith(".pairs-") and ".parquet." in name))


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        set_default_mode(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_shard(path: Path, rows: dict[str, np.ndarray], pairs: Sequence[Pair], start: int,
                label: str, meta: dict[str, Any]) -> tuple[int, dict[str, list[str]]]:
    """Write one shard atomically (hidden name, then rename); returns (pairs kept, skipped).

    ``rows`` are the actors' output rows of pairs ``start ...`` in index order. The file is
    what :func:`gapviz.embeddings.save_embeddings` writes for a ``.parquet`` (columns ``id``,
    ``caption``, ``image_path``, list-of-float32 ``image_embedding`` / ``text_embedding``, and
    ``model`` / ``meta`` under the ``gapviz`` metadata key), pairs whose image failed left out
    and listed in ``meta["shard"]["skipped"]``; a shard may hold fewer than 2 pairs.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    keep = np.flatnonzero(rows["skipped"] == "")
    skipped: dict[str, list[str]] = {}
    for i in np.flatnonzero(rows["skipped"] != ""):
        skipped.setdefault(str(rows["skipped"][i]), []).append(pairs[int(rows["index"][i])].id)
    chosen = [pairs[int(rows["index"][i])] for i in keep]
    columns: dict[str, Any] = {
        "id": pa.array([p.id for p in chosen], pa.string()),
        "caption": pa.array([p.caption for p in chosen], pa.string()),
        "image_path": pa.array([p.image_path for p in chosen], pa.string())}
    for name in ("image_embedding", "text_embedding"):
        arr = np.ascontiguousarray(np.asarray(rows[name], np.float32)[keep])
        flat = pa.array(arr.reshape(-1), pa.float32())
        columns[name] = pa.FixedSizeListArray.from_arrays(flat, arr.shape[1]).cast(pa.list_(pa.float32()))
    precision = str(rows["precision"][0]) if len(rows["precision"]) else None
    check = json.loads(str(rows["check"][0])) if len(rows["check"]) else None
    end = start + len(rows["index"])
    shard_meta = {**meta, "precision": precision, "precision_check": check,
                  "shard": {"start": start, "end": end, "skipped": skipped}}
    table = pa.table(columns).replace_schema_metadata(
        {PARQUET_META_KEY: json.dumps({"model": label, "meta": shard_meta}, default=str).encode()})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        set_default_mode(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return int(keep.size), skipped


def embed_with_ray(pairs: Sequence[Pair], spec: ModelSpec, out: str | os.PathLike, *,
                   address: str | None = None, shard_size: int = SHARD_SIZE,
                   num_cpus: int | None = None, device: str | None = None,
                   precision: str = "auto", image_batch: int | None = None,
                   text_batch: int | None = None, meta: dict[str, Any] | None = None,
                   overwrite: bool = False, progress: Progress | None = None) -> RayEmbedResult:
    """Embed ``pairs`` with ``spec`` on Ray into the shard folder ``out``, skipping finished shards.

    Parameters
    ----------
    pairs : sequence of Pair
        In a stable order (the loaders' order for the same source and options): shard names
        are pair index ranges.
    spec : ModelSpec
    out : path
        The shards' folder (new, empty, or this run's, to resume).
    address : str, optional
        A Ray cluster (``auto``, ``ray://host:10001``); default: a local runtime of
        ``num_cpus`` CPUs (default ``min(LOCAL_CPUS, cores)``), stopped afterwards. When Ray is
        already initialised in this process, that runtime is used.
    shard_size : int
        Pairs per shard (and per actor call).
    device : str, optional
        ``cpu`` for CPU actors; default: one actor per GPU (``num_gpus=1``) when the cluster
        has GPUs, else CPU actors of :data:`CPU_ACTOR_CPUS` CPUs.
    precision, image_batch, text_batch
        As in :func:`gapviz.encode.embed_pairs`.
    meta : dict, optional
        Extra provenance for each shard's ``meta`` (data source, sample size, ...).
    progress : callable, optional
        ``progress(pairs done, pairs, "embedding with Ray")`` after each shard.

    Returns
    -------
    RayEmbedResult

    Raises
    ------
    RayMissingError, DataError, EmbeddingsFileError, FileExistsError, ModelLoadError,
    PrecisionError
        Each with a one-line message; an actor's error is re-raised as itself.
    """
    started = time.perf_counter()
    if shard_size < 1:
        raise DataError(f"--shard-size must be at least 1, got {shard_size}.")
    if not pairs:
        raise DataError("no pairs to embed.")
    requested = str(precision).strip().lower()
    resolve_precision(requested, "cpu" if requested != "fp16" else "cuda")  # unknown names fail now
    ray = require_ray()
    folder = prepare_folder(out, _manifest(pairs, spec, requested, shard_size), overwrite=overwrite)
    ranges = shard_ranges(len(pairs), shard_size)
    pending = [r for r in ranges if not (folder / shard_name(*r)).exists()]
    result = RayEmbedResult(folder, len(pairs), len(ranges), already=len(ranges) - len(pending))
    if pending:
        started_here = not ray.is_initialized()
        if started_here:
            _init(ray, address, num_cpus)
        data_log = logging.getLogger("ray.data")
        level = data_log.level
        data_log.setLevel(logging.ERROR)  # its per-run INFO lines and the progress-bar notice
        context = ray.data.DataContext.get_current()
        bars = context.enable_progress_bars
        context.enable_progress_bars = False  # ``progress`` reports instead
        try:
            _run(ray, pairs, spec, folder, pending, result, device=device, precision=requested,
                 image_batch=image_batch, text_batch=text_batch, meta=meta or {},
                 progress=progress)
        except Exception as err:
            raise _user_error(err) from None
        finally:
            data_log.setLevel(level)
            context.enable_progress_bars = bars
            if started_here:
                ray.shutdown()
    result.seconds = time.perf_counter() - started
    return result


def _init(ray: Any, address: str | None, num_cpus: int | None) -> None:
    quiet = {"logging_level": logging.WARNING, "include_dashboard": False}
    if not address:
        # "local": a new runtime even where `ray start` left a cluster for ray.init() to join.
        ray.init(address="local", num_cpus=num_cpus or min(LOCAL_CPUS, os.cpu_count() or 1), **quiet)
        return
    try:
        ray.init(address=address, **quiet)
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as err:
        text = " ".join(str(err).split())[:200]
        raise DataError(f"cannot connect to the Ray cluster at {address} ({text}); check the "
                        "address (auto, ray://host:10001), or give --ray alone for a local "
                        "runtime.") from None


def _run(ray: Any, pairs: Sequence[Pair], spec: ModelSpec, folder: Path,
         pending: list[tuple[int, int]], result: RayEmbedResult, *, device: str | None,
         precision: str, image_batch: int | None, text_batch: int | None,
         meta: dict[str, Any], progress: Progress | None) -> None:
    import pyarrow as pa

    # One block per shard: an actor call embeds one whole shard.
    blocks = [pa.table({"index": pa.array(range(start, end), pa.int64()),
                        "shard": pa.array([start] * (end - start), pa.int64()),
                        "caption": pa.array([pairs[i].caption for i in range(start, end)], pa.string()),
                        "image_path": pa.array([pairs[i].image_path for i in range(start, end)],
                                               pa.string())})
              for start, end in pending]
    dataset = ray.data.from_arrow(blocks)
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus and (device is None or device.startswith("cuda")):
        device, n_actors, actors = "cuda", min(gpus, len(pending)), {"num_gpus": 1}
    else:
        cpus = max(1, int(resources.get("CPU", 1)))
        per_actor = min(CPU_ACTOR_CPUS, cpus)
        device = "cpu" if device is None else device
        n_actors, actors = max(1, min(cpus // per_actor, len(pending))), {"num_cpus": per_actor}
    size = max(end - start for start, end in pending)
    embedded = dataset.map_batches(
        PairEncoder, batch_size=size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=n_actors),
        fn_constructor_args=(spec,),
        fn_constructor_kwargs={"device": device, "precision": precision, "image_batch": image_batch,
                               "text_batch": text_batch, "model_config": _model_config(spec)},
        **actors)
    expected = {start: end - start for start, end in pending}
    parts: dict[int, list[dict[str, np.ndarray]]] = {}
    base_meta = {"simulated": False, "model_name": spec.name,
                 "pretrained": spec.pretrained or "none", "random_weights": spec.random_weights,
                 "normalized": True, **meta, "device": device, "precision_requested": precision,
                 "engine": f"ray {ray.__version__}"}
    done = len(pairs) - sum(expected.values())  # pairs of the shards finished earlier
    for batch in embedded.iter_batches(batch_size=None, batch_format="numpy"):
        for start in np.unique(batch["shard"]):
            rows = {k: v[batch["shard"] == start] for k, v in batch.items()}
            parts.setdefault(int(start), []).append(rows)
        for start in [s for s, got in parts.items() if sum(len(r["index"]) for r in got) == expected[s]]:
            got = parts.pop(start)
            rows = {k: np.concatenate([r[k] for r in got]) for k in got[0]}
            order = np.argsort(rows["index"], kind="stable")
            rows = {k: v[order] for k, v in rows.items()}
            name = shard_name(start, start + expected[start])
            kept, skipped = write_shard(folder / name, rows, pairs, start, spec.label(), base_meta)
            result.written.append(name)
            result.n_embedded += kept
            for reason, ids in skipped.items():
                result.skipped.setdefault(reason, []).extend(ids)
            done += expected[start]
            if progress is not None:
                progress(done, len(pairs), "embedding with Ray")
    if parts:  # every row comes back once; a shard still open means rows went missing
        raise DataError(f"Ray returned incomplete shards (first pairs {sorted(parts)[:5]}); run the "
                        "same command again to redo them.")


def _user_error(err: Exception) -> Exception:
    """The gapviz error inside a Ray error (an actor's ModelLoadError, ...), else ``err``."""
    seen = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for kind in (ModelLoadError, PrecisionError, DataError, EmbeddingsFileError):
            if type(current) is kind:
                return current
        cause = getattr(current, "cause", None)
        current = cause if isinstance(cause, BaseException) else current.__cause__
    return err
