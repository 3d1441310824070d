"""The paired-embeddings container and the file format every part of gapviz reads and writes.

Format
------
``.npz``
    ``image_embeddings`` (N, d) and ``text_embeddings`` (N, d), float; optional ``ids``,
    ``captions``, ``image_paths`` (length N, strings), ``model`` (a string) and ``meta``
    (a JSON string: method, parameters, "simulated" flag, ...).
``.parquet``
    One row per pair: list-of-float columns ``image_embedding`` and ``text_embedding``, optional
    string columns ``id``, ``caption``, ``image_path``; ``model`` and ``meta`` are kept in the
    file's key-value metadata under the key ``gapviz``.

Reading validates once, here at the boundary: structural problems (mismatched N, different d
between the modalities, fewer than 2 usable pairs, missing arrays) raise
:class:`EmbeddingsFileError` with a message that says what to fix; bad rows (NaN/inf values,
zero vectors) are skipped and reported in a :class:`LoadReport`, never silently dropped.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import NPZ_OPTIONAL_KEYS, NPZ_REQUIRED_KEYS

PARQUET_COLUMNS = ("id", "caption", "image_path", "image_embedding", "text_embedding")
PARQUET_META_KEY = b"gapviz"


class EmbeddingsFileError(ValueError):
    """An embeddings file or array pair that cannot be used; the message says how to fix it."""


@dataclass
class LoadReport:
    """What happened while reading or validating pairs.

    Attributes
    ----------
    n_read : int
        Pairs found in the input.
    n_kept : int
        Pairs kept after skipping bad rows.
    skipped : dict of str to list of int
        Reason -> row indices (0-based, in the input) that were skipped for that reason.
    warnings : list of str
        Things worth knowing that did not stop the load (ignored keys, ...).
    """

    n_read: int = 0
    n_kept: int = 0
    skipped: dict[str, list[int]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        return self.n_read - self.n_kept

    def summary(self) -> str:
        """One line a person can read: kept/read and each skip reason with its count."""
        parts = [f"kept {self.n_kept} of {self.n_read} pairs"]
        parts += [f"skipped {len(rows)}: {reason}" for reason, rows in self.skipped.items() if rows]
        return "; ".join(parts)


@dataclass
class PairedEmbeddings:
    """N image-text pairs embedded in a common space; row i of each array is pair i.

    Parameters
    ----------
    image_embeddings : ndarray of shape (N, d)
    text_embeddings : ndarray of shape (N, d)
        Stored as float32; not normalised here (the measures normalise).
    ids : list of str, optional
        Pair ids; defaults to ``"0" .. "N-1"``.
    captions, image_paths : list of str, optional
        Length N when given.
    model : str
        Name of the model (or simulated profile) that produced the embeddings.
    meta : dict
        JSON-serialisable provenance: ``simulated``, ``imitates``, ``method``, ``params``, ...
    """

    image_embeddings: np.ndarray
    text_embeddings: np.ndarray
    ids: list[str] | None = None
    captions: list[str] | None = None
    image_paths: list[str] | None = None
    model: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.image_embeddings = np.ascontiguousarray(self.image_embeddings, dtype=np.float32)
        self.text_embeddings = np.ascontiguousarray(self.text_embeddings, dtype=np.float32)
        check_pair_arrays(self.image_embeddings, self.text_embeddings, same_dim=False)
        n = self.image_embeddings.shape[0]
        if self.ids is None:
            self.ids = [str(i) for i in range(n)]
        for name in ("ids", "captions", "image_paths"):
            values = getattr(self, name)
            if values is not None:
                values = [str(v) for v in values]
                if len(values) != n:
                    raise EmbeddingsFileError(
                        f"'{name}' has {len(values)} entries but there are {n} pairs; "
                        f"give one {name[:-1]} per pair or leave '{name}' out."
                    )
                setattr(self, name, values)

    @property
    def n(self) -> int:
        return int(self.image_embeddings.shape[0])

    @property
    def dim(self) -> int:
        return int(self.image_embeddings.shape[1])

    @property
    def is_simulated(self) -> bool:
        return bool(self.meta.get("simulated", False))

    def subset(self, rows: np.ndarray | list[int]) -> "PairedEmbeddings":
        """The pairs at ``rows`` (indices or a boolean mask), metadata carried along."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)

        def pick(values: list[str] | None) -> list[str] | None:
            return None if values is None else [values[i] for i in rows]

        return PairedEmbeddings(
            self.image_embeddings[rows], self.text_embeddings[rows], pick(self.ids),
            pick(self.captions), pick(self.image_paths), self.model, dict(self.meta),
        )

    def with_embeddings(self, image: np.ndarray, text: np.ndarray, **meta: Any) -> "PairedEmbeddings":
        """Same pairs with new (e.g. transformed) embeddings; ``meta`` entries are added."""
        return PairedEmbeddings(image, text, self.ids, self.captions, self.image_paths,
                                self.model, {**self.meta, **meta})

    def content_hash(self) -> str:
        """SHA-1 of the embeddings' bytes and the ids: a cache key that sees every value.

        (Streamlit hashes large arrays by sampling; this does not.)
        """
        h = hashlib.sha1()
        for arr in (self.image_embeddings, self.text_embeddings):
            h.update(str(arr.shape).encode())
            h.update(memoryview(arr).cast("B"))
        h.update("\x1f".join(self.ids or []).encode())
        return h.hexdigest()


def check_pair_arrays(image: np.ndarray, text: np.ndarray, *, same_dim: bool = True,
                      min_pairs: int = 2) -> None:
    """Raise :class:`EmbeddingsFileError` unless ``image`` and ``text`` are usable paired arrays.

    Checks: both 2-D, the same number of rows N >= ``min_pairs``, and (``same_dim``) the same d.
    """
    for name, arr in (("image embeddings", image), ("text embeddings", text)):
        if np.ndim(arr) != 2:
            raise EmbeddingsFileError(
                f"{name} must be a 2-D array (N pairs x d dims), got shape {np.shape(arr)}.")
    if image.shape[0] != text.shape[0]:
        raise EmbeddingsFileError(
            f"{image.shape[0]} image embeddings but {text.shape[0]} text embeddings: row i of each "
            "must be pair i, so both need the same number of rows.")
    if same_dim and image.shape[1] != text.shape[1]:
        raise EmbeddingsFileError(
            f"image embeddings have d={image.shape[1]} but text embeddings d={text.shape[1]}: both "
            "modalities must live in the same space (embed them with the same model).")
    if image.shape[0] < min_pairs:
        raise EmbeddingsFileError(
            f"only {image.shape[0]} usable pair(s); at least {min_pairs} are needed to measure a gap.")


def clean_pairs(image: np.ndarray, text: np.ndarray) -> tuple[np.ndarray, LoadReport]:
    """Find the rows that can be used; report the others.

    Returns
    -------
    keep : ndarray of shape (n_kept,)
        Indices of the usable rows.
    report : LoadReport
        Counts per skip reason: non-finite values, zero vectors.
    """
    check_pair_arrays(image, text, min_pairs=0)
    n = image.shape[0]
    finite = np.isfinite(image).all(1) & np.isfinite(text).all(1)
    with np.errstate(invalid="ignore", over="ignore"):
        zero = ~((np.abs(image).max(1) > 0) & (np.abs(text).max(1) > 0))
    zero &= finite
    report = LoadReport(n_read=n)
    report.skipped["NaN or infinite values"] = np.flatnonzero(~finite).tolist()
    report.skipped["zero vector (no direction to compare)"] = np.flatnonzero(zero).tolist()
    keep = np.flatnonzero(finite & ~zero)
    report.n_kept = int(keep.size)
    return keep, report


def _from_arrays(values: dict[str, Any], source: str) -> tuple[PairedEmbeddings, LoadReport]:
    image, text = values["image_embeddings"], values["text_embeddings"]
    for name, arr in (("image_embeddings", image), ("text_embeddings", text)):
        if not np.issubdtype(np.asarray(arr).dtype, np.number):
            raise EmbeddingsFileError(f"{source}: '{name}' must hold numbers, got {np.asarray(arr).dtype}.")
    image = np.asarray(image, dtype=np.float32)
    text = np.asarray(text, dtype=np.float32)
    check_pair_arrays(image, text, min_pairs=0)
    keep, report = clean_pairs(image, text)
    n = image.shape[0]
    for name in ("ids", "captions", "image_paths"):
        if values.get(name) is not None and len(values[name]) != n:
            raise EmbeddingsFileError(
                f"{source}: '{name}' has {len(values[name])} entries but there are {n} pairs.")
    ids = values.get("ids")
    if ids is not None:
        ids = [str(v) for v in ids]
        seen: dict[str, int] = {}
        dup = []
        for i, v in enumerate(ids):
            if v in seen:
                dup.append(i)
            seen.setdefault(v, i)
        if dup:
            report.skipped["duplicate id (first occurrence kept)"] = dup
            keep = np.setdiff1d(keep, dup)
            report.n_kept = int(keep.size)
    try:
        check_pair_arrays(image[keep], text[keep])
    except EmbeddingsFileError as err:
        raise EmbeddingsFileError(f"{source}: {err} ({report.summary()})") from None
    pe = PairedEmbeddings(image, text, ids, values.get("captions"), values.get("image_paths"),
                          str(values.get("model") or ""), dict(values.get("meta") or {}))
    return (pe if keep.size == n else pe.subset(keep)), report


def load_embeddings(path: str | os.PathLike) -> tuple[PairedEmbeddings, LoadReport]:
    """Read a ``.npz`` or ``.parquet`` embeddings file.

    Returns the usable pairs and a :class:`LoadReport` of what was skipped and why.
    Raises :class:`EmbeddingsFileError` (a ``ValueError``) for anything that cannot be used.
    """
    path = Path(path)
    if not path.exists():
        raise EmbeddingsFileError(f"{path}: no such file. Give the path of a .npz or .parquet file.")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        values, warnings = _read_npz(path)
    elif suffix == ".parquet":
        values, warnings = _read_parquet(path)
    else:
        raise EmbeddingsFileError(
            f"{path}: unsupported extension '{suffix}'. gapviz reads embeddings from .npz "
            "(arrays image_embeddings, text_embeddings) or .parquet (columns image_embedding, "
            "text_embedding).")
    pairs, report = _from_arrays(values, str(path))
    report.warnings.extend(warnings)
    return pairs, report


def _read_npz(path: Path) -> tuple[dict[str, Any], list[str]]:
    import zipfile

    if not zipfile.is_zipfile(path):  # np.load would try pickle and say something misleading
        raise EmbeddingsFileError(
            f"{path}: not a readable .npz file (an .npz is a zip archive of arrays, as written by "
            "np.savez). Check the file, or save your arrays with np.savez.")
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as err:  # zipfile.BadZipFile, OSError, EOFError: a corrupt file
        raise EmbeddingsFileError(f"{path}: not a readable .npz file ({err}).") from None
    with npz:
        keys = set(npz.files)
        missing = [k for k in NPZ_REQUIRED_KEYS if k not in keys]
        if missing:
            raise EmbeddingsFileError(
                f"{path}: missing array(s) {missing}; found {sorted(keys)}. An embeddings .npz needs "
                "'image_embeddings' and 'text_embeddings' (N x d each).")
        unknown = sorted(keys - set(NPZ_REQUIRED_KEYS) - set(NPZ_OPTIONAL_KEYS))
        warnings = [f"ignored unknown key(s) {unknown}; known optional keys are "
                    f"{list(NPZ_OPTIONAL_KEYS)}"] if unknown else []
        try:
            values: dict[str, Any] = {k: npz[k] for k in keys if k not in unknown}
        except ValueError as err:  # object arrays need pickle, which we refuse for safety
            raise EmbeddingsFileError(
                f"{path}: cannot read ({err}). Save arrays as numbers/strings, not Python objects "
                "(np.savez of object arrays is not accepted).") from None
        except Exception as err:  # a truncated member: zlib.error, EOFError, BadZipFile
            raise EmbeddingsFileError(f"{path}: not a readable .npz file ({err}).") from None
    for name in ("ids", "captions", "image_paths"):
        if name in values:
            values[name] = [str(v) for v in np.atleast_1d(values[name])]
    if "model" in values:
        values["model"] = str(values["model"])
    if "meta" in values:
        try:
            values["meta"] = json.loads(str(values["meta"]))
        except json.JSONDecodeError:
            warnings.append("ignored 'meta': not a JSON string")
            values.pop("meta")
    return values, warnings


def _read_parquet(path: Path) -> tuple[dict[str, Any], list[str]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises ArrowInvalid / OSError for corrupt files
        raise EmbeddingsFileError(f"{path}: not a readable parquet file ({err}).") from None
    cols = set(table.column_names)
    missing = [c for c in ("image_embedding", "text_embedding") if c not in cols]
    if missing:
        raise EmbeddingsFileError(
            f"{path}: missing column(s) {missing}; found {sorted(cols)}. An embeddings parquet has "
            "one row per pair with list-of-float columns 'image_embedding' and 'text_embedding'.")
    unknown = sorted(cols - set(PARQUET_COLUMNS))
    warnings = [f"ignored unknown column(s) {unknown}"] if unknown else []
    values: dict[str, Any] = {}
    for col, key in (("image_embedding", "image_embeddings"), ("text_embedding", "text_embeddings")):
        rows = table.column(col).to_pylist()
        lengths = {len(r) if r is not None else -1 for r in rows}
        if -1 in lengths or len(lengths) > 1:
            raise EmbeddingsFileError(
                f"{path}: column '{col}' has rows of different lengths or nulls "
                f"(lengths {sorted(lengths)[:5]}); every row needs a vector of the same length d.")
        values[key] = np.asarray(rows, dtype=np.float32).reshape(len(rows), -1)
    for col, key in (("id", "ids"), ("caption", "captions"), ("image_path", "image_paths")):
        if col in cols:
            values[key] = ["" if v is None else str(v) for v in table.column(col).to_pylist()]
    raw_meta = (table.schema.metadata or {}).get(PARQUET_META_KEY)
    if raw_meta:
        extra = json.loads(raw_meta)
        values["model"] = extra.get("model", "")
        values["meta"] = extra.get("meta", {})
    return values, warnings


def save_embeddings(pairs: PairedEmbeddings, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``pairs`` to ``path`` (``.npz`` or ``.parquet``, by its extension), atomically.

    Refuses to replace an existing file unless ``overwrite=True``: user data is never clobbered.
    The file is written under a temporary name and renamed, so an interrupted write never leaves
    a half-written file at ``path``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".parquet"):
        raise EmbeddingsFileError(f"{path}: choose a .npz or .parquet file name.")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another name or pass overwrite=True.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        if suffix == ".npz":
            _write_npz(pairs, tmp)
        else:
            _write_parquet(pairs, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def to_npz_bytes(pairs: PairedEmbeddings) -> bytes:
    """The ``.npz`` file content as bytes (for download buttons)."""
    import io

    buf = io.BytesIO()
    _write_npz(pairs, buf)
    return buf.getvalue()


def _write_npz(pairs: PairedEmbeddings, target: Any) -> None:
    arrays: dict[str, Any] = {
        "image_embeddings": pairs.image_embeddings,
        "text_embeddings": pairs.text_embeddings,
        "ids": np.asarray(pairs.ids, dtype=str),
        "model": np.asarray(pairs.model),
        "meta": np.asarray(json.dumps(pairs.meta, default=str)),
    }
    if pairs.captions is not None:
        arrays["captions"] = np.asarray(pairs.captions, dtype=str)
    if pairs.image_paths is not None:
        arrays["image_paths"] = np.asarray(pairs.image_paths, dtype=str)
    np.savez(target, **arrays)


def _write_parquet(pairs: PairedEmbeddings, target: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns: dict[str, Any] = {"id": pa.array(pairs.ids, pa.string())}
    if pairs.captions is not None:
        columns["caption"] = pa.array(pairs.captions, pa.string())
    if pairs.image_paths is not None:
        columns["image_path"] = pa.array(pairs.image_paths, pa.string())
    for name, arr in (("image_embedding", pairs.image_embeddings), ("text_embedding", pairs.text_embeddings)):
        flat = pa.array(arr.reshape(-1), pa.float32())
        columns[name] = pa.FixedSizeListArray.from_arrays(flat, arr.shape[1]).cast(pa.list_(pa.float32()))
    table = pa.table(columns)
    meta = json.dumps({"model": pairs.model, "meta": pairs.meta}, default=str).encode()
    table = table.replace_schema_metadata({PARQUET_META_KEY: meta})
    pq.write_table(table, target)
