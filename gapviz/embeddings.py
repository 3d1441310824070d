"""The paired-embeddings container and the file format every part of gapviz reads and writes.

Format
------
``.npz``
    ``image_embeddings`` (N, d) and ``text_embeddings`` (N, d), float; optional ``ids``,
    ``captions``, ``image_paths`` (length N, strings), ``labels`` (length N, a class label per
    pair, strings or integers), ``groups`` (length N, the image id of each pair when an image
    has several captions: one pair per caption), ``model`` (a string) and ``meta`` (a JSON
    string: method, parameters, "simulated" flag, ...).
``.parquet``
    One row per pair: list-of-float columns ``image_embedding`` and ``text_embedding``, optional
    string columns ``id``, ``caption``, ``image_path``, ``label``, ``group`` (image id); ``model``
    and ``meta`` are kept in the
    file's key-value metadata under the key ``gapviz``.

Reading validates once, here at the boundary: structural problems (mismatched N, different d
between the modalities, d = 0, fewer than 2 usable pairs, missing arrays) raise
:class:`EmbeddingsFileError` with a one-line message that names the file and says what to fix;
bad rows (NaN/inf values, finite values too large for float32, zero vectors) are skipped and
reported in a :class:`LoadReport`, never silently dropped.

One typing rule for both formats: the embeddings hold real numbers (integers or floats; not
booleans, complex numbers, text or nested lists), one vector of d >= 1 numbers per pair.
Optional text fields of the wrong type (``model`` that is a list, ``meta`` that is not a JSON
object, ``captions`` that are numbers) are ignored with a warning in the report.

A folder of ``.parquet`` shards (as ``gapviz embed --ray`` writes) reads as one set: the shards
in name order, each checked like a file, then validated together (duplicate ids across shards,
too few pairs); the size limit applies to the folder's total.

Untrusted files are sized before they are read: the arrays' headers (``.npz``) or the row
groups' metadata (``.parquet``) give what loading would take (the embeddings counted as the
float32 they become, however narrow their stored type), and more than
:data:`MAX_EMBEDDINGS_BYTES` (``$GAPVIZ_MAX_EMBEDDINGS_MB``, or ``max_bytes=``) is refused
before anything is decompressed.

A file whose ``meta`` says ``simulated`` is treated as simulated only when its content is
that simulation (:attr:`PairedEmbeddings.is_simulated`); otherwise the load report says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .config import NPZ_OPTIONAL_KEYS, NPZ_REQUIRED_KEYS
from .safety import JSONInputError, loads_json, set_default_mode

#: Private entry of a reader's values: rows beyond float32 found before converting to float32.
_TOO_LARGE_KEY = "_too_large_rows"
PARQUET_COLUMNS = ("id", "caption", "image_path", "label", "group", "image_embedding",
                   "text_embedding")
PARQUET_META_KEY = b"gapviz"

#: Largest in-memory size of the arrays of one embeddings file (2 GiB holds 250,000 pairs of
#: 1,024-d float32 vectors with captions); ``$GAPVIZ_MAX_EMBEDDINGS_MB`` changes it. The
#: embeddings count as float32 (what they become), however narrow their type in the file.
MAX_EMBEDDINGS_BYTES = 2 * 1024**3
MAX_EMBEDDINGS_ENV = "GAPVIZ_MAX_EMBEDDINGS_MB"
#: Files whose arrays take more than this many times the file's size in memory are refused
#: as decompression bombs once over :data:`BOMB_FLOOR_BYTES` (float embeddings barely compress).
MAX_EXPANSION = 50
BOMB_FLOOR_BYTES = 64 * 1024**2


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


def content_hash(images: np.ndarray, texts: np.ndarray, ids: Sequence[str] | None = None) -> str:
    """SHA-1 of two arrays' shapes and bytes (C order) and the ids: a cache key that sees
    every value (Streamlit hashes large arrays by sampling; this does not)."""
    h = hashlib.sha1()
    for arr in (images, texts):
        arr = np.ascontiguousarray(arr)
        h.update(str(arr.shape).encode())
        h.update(memoryview(arr).cast("B"))
    h.update("\x1f".join(ids or []).encode())
    return h.hexdigest()


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
    labels : list of str, optional
        Class label of each pair (zero-shot accuracy, per-class gap); length N when given.
    groups : list of str, optional
        Image id of each pair when images have several captions (one pair per caption, the
        image's embedding repeated): the measures then count any caption of an image as its
        match, and the protocols never split an image's captions between fit and score.
        None: one caption per image.
    """

    image_embeddings: np.ndarray
    text_embeddings: np.ndarray
    ids: list[str] | None = None
    captions: list[str] | None = None
    image_paths: list[str] | None = None
    model: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    labels: list[str] | None = None
    groups: list[str] | None = None

    def __post_init__(self) -> None:
        self.image_embeddings = np.ascontiguousarray(self.image_embeddings, dtype=np.float32)
        self.text_embeddings = np.ascontiguousarray(self.text_embeddings, dtype=np.float32)
        check_pair_arrays(self.image_embeddings, self.text_embeddings, same_dim=False)
        n = self.image_embeddings.shape[0]
        if self.ids is None:
            self.ids = [str(i) for i in range(n)]
        for name in ("ids", "captions", "image_paths", "labels", "groups"):
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
        """Whether these pairs are gapviz's simulated data (the demo's kind): ``meta`` says
        ``simulated`` *and* the content hash equals that of the simulation the meta describes
        (profile, seed, N, d, generator parameters), regenerated once per content
        (:func:`verify_simulated`). A file whose meta only claims it is not: it would get the
        demo's label and a reproduce command printing other numbers."""
        if not self.meta.get("simulated", False):
            return False
        key = (id(self.image_embeddings), id(self.text_embeddings), id(self.ids),
               _simulation_recipe_key(self.meta))
        cached = self.__dict__.get("_simulated_verdict")
        if cached is None or cached[0] != key:
            cached = (key, verify_simulated(self))
            self.__dict__["_simulated_verdict"] = cached  # not a field: eq, repr, replace ignore it
        return cached[1]

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
            pick(self.labels), pick(self.groups),
        )

    def with_embeddings(self, image: np.ndarray, text: np.ndarray, **meta: Any) -> "PairedEmbeddings":
        """Same pairs with new (e.g. transformed) embeddings; ``meta`` entries are added."""
        return PairedEmbeddings(image, text, self.ids, self.captions, self.image_paths,
                                self.model, {**self.meta, **meta}, self.labels, self.groups)

    def content_hash(self) -> str:
        """SHA-1 of the embeddings' bytes and the ids: a cache key that sees every value.

        (Streamlit hashes large arrays by sampling; this does not.)
        """
        ids = self.ids if self.groups is None else [*self.ids, "\x1egroups", *self.groups]
        return content_hash(self.image_embeddings, self.text_embeddings, ids)

    @property
    def group_ids(self) -> np.ndarray | None:
        """Each pair's image id as an array when some image has several captions, else None
        (one caption per image): what the measures and protocols take as ``groups``."""
        if self.groups is None or len(set(self.groups)) == self.n:
            return None
        return np.asarray(self.groups)

    @property
    def n_images(self) -> int:
        return self.n if self.groups is None else len(set(self.groups))

    @property
    def convention(self) -> str:
        """"1 caption per image" or "all captions (5 per image), any counts"."""
        from .measures import caption_convention

        return caption_convention(self.n, self.n_images)


#: Largest simulation (N x d values per modality) :func:`verify_simulated` regenerates; a
#: claim of a larger one is not believed (regenerating 131,072 pairs of d = 512 takes seconds).
MAX_VERIFIED_SIMULATION = 1 << 26
_SIMULATION_VERDICTS: dict[tuple, bool] = {}
_SIMULATION_VERDICTS_MAX = 64


def _simulation_recipe_key(meta: dict[str, Any]) -> str:
    """The parts of ``meta`` that say which simulation the pairs are, as one string."""
    wanted = {k: meta.get(k) for k in ("profile", "seed", "pair_seed", "params", "cluster_names")}
    return json.dumps(wanted, sort_keys=True, default=repr)


def _simulation_kwargs(pairs: "PairedEmbeddings") -> dict[str, Any] | None:
    """``simulate_pairs`` arguments that would regenerate ``pairs`` by their meta, or None
    when the meta cannot name a simulation (unknown profile, a seed that is not an integer,
    parameters that are not the generator's, or ids that are not the simulator's)."""
    from .simulate import PROFILES, GapParams

    meta = pairs.meta
    profile, seed = meta.get("profile"), meta.get("seed", 0)
    if not isinstance(profile, str) or profile not in PROFILES:
        return None
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        return None
    if pairs.n < 2 or pairs.dim < 2 or pairs.n * pairs.dim > MAX_VERIFIED_SIMULATION:
        return None
    pair_seed = meta.get("pair_seed")
    if pair_seed is not None and (not isinstance(pair_seed, int) or isinstance(pair_seed, bool)
                                  or pair_seed < 0):
        return None
    stem = "sim-" if pair_seed is None else f"sim-p{pair_seed}-"
    if pairs.ids != [f"{stem}{i:05d}" for i in range(pairs.n)]:
        return None  # cheap first: the simulator's own ids
    kwargs: dict[str, Any] = {"profile": profile, "seed": seed, "pair_seed": pair_seed}
    params = meta.get("params")
    if params is not None:
        if not isinstance(params, dict):
            return None
        fields = GapParams.__dataclass_fields__
        if set(params) - set(fields) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
                for v in params.values()):
            return None
        try:
            kwargs["params"] = GapParams(**{k: type(fields[k].default)(v) for k, v in params.items()})
        except (TypeError, ValueError, OverflowError):
            return None
    names = meta.get("cluster_names")
    if names is not None:
        if not isinstance(names, list) or not 1 <= len(names) <= pairs.n:
            return None
        kwargs["n_clusters"] = len(names)
    return kwargs


def _keep_verdict(key: tuple, verdict: bool) -> None:
    if key not in _SIMULATION_VERDICTS and len(_SIMULATION_VERDICTS) >= _SIMULATION_VERDICTS_MAX:
        _SIMULATION_VERDICTS.pop(next(iter(_SIMULATION_VERDICTS)))
    _SIMULATION_VERDICTS[key] = verdict


def record_simulation(pairs: "PairedEmbeddings", call: dict[str, Any]) -> None:
    """Note that ``pairs`` are what ``simulate_pairs(pairs.n, pairs.dim, **call)`` just
    returned, so :func:`verify_simulated` need not regenerate them. Kept only when the meta
    names that very call (:func:`_simulation_kwargs` gives ``call`` back): regenerating from
    the meta would then repeat the same deterministic draw. Anything else is still checked by
    regeneration."""
    if pairs.meta.get("simulated", False) and _simulation_kwargs(pairs) == call:
        _keep_verdict((pairs.content_hash(), _simulation_recipe_key(pairs.meta)), True)


def verify_simulated(pairs: "PairedEmbeddings") -> bool:
    """Whether ``pairs`` are exactly the simulation their meta names: same content hash
    (embeddings and ids) as ``simulate_pairs`` regenerated with the meta's profile, seed,
    N, d and parameters. Verdicts are kept per content (a small cache), so each set is
    regenerated once."""
    if not pairs.meta.get("simulated", False):
        return False
    kwargs = _simulation_kwargs(pairs)
    if kwargs is None:
        return False
    key = (pairs.content_hash(), _simulation_recipe_key(pairs.meta))
    if key not in _SIMULATION_VERDICTS:
        from .simulate import simulate_pairs

        try:
            again = simulate_pairs(pairs.n, pairs.dim, **kwargs)
        except (ValueError, TypeError, MemoryError):
            verdict = False
        else:
            verdict = again.content_hash() == key[0]
        _keep_verdict(key, verdict)
    return _SIMULATION_VERDICTS[key]


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
    for name, arr in (("image embeddings", image), ("text embeddings", text)):
        if arr.shape[1] < 1:
            raise EmbeddingsFileError(
                f"{name} have d=0 (no numbers per vector); each pair needs vectors of d >= 1 numbers.")
    if same_dim and image.shape[1] != text.shape[1]:
        raise EmbeddingsFileError(
            f"image embeddings have d={image.shape[1]} but text embeddings d={text.shape[1]}: both "
            "modalities must live in the same space (embed them with the same model).")
    if image.shape[0] < min_pairs:
        raise EmbeddingsFileError(
            f"only {image.shape[0]} usable pair(s); at least {min_pairs} are needed to measure a gap.")


#: Largest magnitude a float32 holds; finite values beyond it (float64 files) cannot be used.
FLOAT32_MAX = float(np.finfo(np.float32).max)
#: Skip reasons of :func:`clean_pairs`, as the reports word them.
SKIP_NONFINITE = "NaN or infinite values"
SKIP_TOO_LARGE = "values too large for float32 (|x| > 3.4e38)"
SKIP_ZERO = "zero vector (no direction to compare)"


def too_large_rows(*arrays: np.ndarray) -> np.ndarray:
    """Boolean mask of shape (N,): rows of any of ``arrays`` holding a finite value beyond the
    float32 range (|x| > 3.4e38), which float32 would turn into inf. Only wider float types
    (float64, longdouble) can hold such values; others give all False. Checked in row blocks,
    so no full-size temporary is made."""
    n = arrays[0].shape[0]
    big = np.zeros(n, bool)
    for arr in arrays:
        if arr.dtype.kind != "f" or arr.dtype.itemsize <= 4:
            continue
        rows = max(1, (1 << 22) // max(arr.shape[1], 1))
        for i0 in range(0, n, rows):
            block = arr[i0:i0 + rows]
            with np.errstate(invalid="ignore"):
                big[i0:i0 + rows] |= (np.isfinite(block) & (np.abs(block) > FLOAT32_MAX)).any(1)
    return big


def clean_pairs(image: np.ndarray, text: np.ndarray, *,
                too_large: np.ndarray | None = None) -> tuple[np.ndarray, LoadReport]:
    """Find the rows that can be used; report the others.

    Parameters
    ----------
    image, text : ndarray of shape (N, d)
    too_large : ndarray of shape (N,) of bool, optional
        Rows whose values were finite but beyond float32 (:func:`too_large_rows` of the arrays
        before they became float32, where they turned into inf): reported as too large, not
        as NaN or infinite.

    Returns
    -------
    keep : ndarray of shape (n_kept,)
        Indices of the usable rows.
    report : LoadReport
        Counts per skip reason: non-finite values, values too large for float32, zero vectors.
    """
    check_pair_arrays(image, text, min_pairs=0)
    n = image.shape[0]
    finite = np.isfinite(image).all(1) & np.isfinite(text).all(1)
    # No full-size float copy (np.abs would make one): a non-zero value anywhere in the row.
    zero = ~((image != 0).any(1) & (text != 0).any(1))
    zero &= finite
    big = np.zeros(n, bool) if too_large is None else np.asarray(too_large, bool) & ~finite
    report = LoadReport(n_read=n)
    report.skipped[SKIP_NONFINITE] = np.flatnonzero(~finite & ~big).tolist()
    if big.any():
        report.skipped[SKIP_TOO_LARGE] = np.flatnonzero(big).tolist()
    report.skipped[SKIP_ZERO] = np.flatnonzero(zero).tolist()
    keep = np.flatnonzero(finite & ~zero)
    report.n_kept = int(keep.size)
    return keep, report


def _check_numeric(name: str, dtype: np.dtype, source: str) -> None:
    """The one typing rule of both formats: real numbers only (see the module docstring)."""
    if dtype.kind not in "iuf":
        kind = {"b": "booleans", "c": "complex numbers", "U": "text", "S": "bytes", "O": "objects",
                "M": "dates", "m": "time spans", "V": "records"}.get(dtype.kind, str(dtype))
        raise EmbeddingsFileError(
            f"{source}: '{name}' holds {kind} ({dtype}); embeddings must be real numbers "
            "(float or integer), one vector of d numbers per pair.")


def _from_arrays(values: dict[str, Any], source: str) -> tuple[PairedEmbeddings, LoadReport]:
    try:
        return _from_arrays_unchecked(values, source)
    except EmbeddingsFileError as err:
        message = str(err)
        if not message.startswith(source):
            message = f"{source}: {message}"
        raise EmbeddingsFileError(message) from None


def _from_arrays_unchecked(values: dict[str, Any], source: str) -> tuple[PairedEmbeddings, LoadReport]:
    image, text = np.asarray(values["image_embeddings"]), np.asarray(values["text_embeddings"])
    for name, arr in (("image_embeddings", image), ("text_embeddings", text)):
        _check_numeric(name, arr.dtype, source)
    check_pair_arrays(image, text, min_pairs=0, same_dim=False)
    too_large = values.pop(_TOO_LARGE_KEY, None)  # a reader that converted already found them
    if too_large is None or too_large.shape != (image.shape[0],):
        too_large = too_large_rows(image, text)
    with np.errstate(over="ignore"):  # values beyond float32 become inf: reported as too large
        image = image.astype(np.float32, copy=False)
        values["image_embeddings"] = image  # the file's own array (int8, float64...) is freed
        text = text.astype(np.float32, copy=False)
        values["text_embeddings"] = text
    check_pair_arrays(image, text, min_pairs=0)
    keep, report = clean_pairs(image, text, too_large=too_large)
    n = image.shape[0]
    for name in ("ids", "captions", "image_paths", "labels", "groups"):
        if values.get(name) is not None and len(values[name]) != n:
            raise EmbeddingsFileError(
                f"{source}: '{name}' has {len(values[name])} entries but there are {n} pairs; give "
                f"one per pair or leave '{name}' out.")
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
                          str(values.get("model") or ""), dict(values.get("meta") or {}),
                          values.get("labels"), values.get("groups"))
    pe = pe if keep.size == n else pe.subset(keep)
    if pe.group_ids is not None:  # an image id must name one image embedding
        from .measures import image_groups

        try:
            image_groups(pe.image_embeddings, pe.group_ids)
        except ValueError as err:
            pe.groups = None
            report.warnings.append(f"ignored 'groups' ({err}); the pairs are measured with one "
                                   "caption per row")
    return pe, report


def max_embeddings_bytes() -> int:
    """The size limit of :func:`load_embeddings`: ``$GAPVIZ_MAX_EMBEDDINGS_MB`` or
    :data:`MAX_EMBEDDINGS_BYTES` (read by the one rule of every gapviz limit:
    :func:`gapviz.data.defaults.env_limit`)."""
    from .data.defaults import env_limit  # the data package imports this module at load time

    return int(env_limit(MAX_EMBEDDINGS_ENV, MAX_EMBEDDINGS_BYTES / 1024**2, "MiB",
                         scale=1024**2, integer=True))


def _too_big(path: Path, nbytes: int, limit: int) -> EmbeddingsFileError:
    return EmbeddingsFileError(
        f"{path}: the arrays would take {_size(nbytes)} in memory, more than the "
        f"{_size(limit)} limit; use a smaller file or raise ${MAX_EMBEDDINGS_ENV}.")


def _size(nbytes: float) -> str:
    return f"{nbytes / 1024**2:,.0f} MiB" if nbytes >= 10 * 1024**2 else f"{int(nbytes):,} bytes"


def _check_size(path: Path, nbytes: int, limit: int) -> None:
    """Refuse, before loading, arrays over ``limit`` bytes or expanding like a decompression bomb."""
    if nbytes > limit:
        raise _too_big(path, nbytes, limit)
    size = max(path.stat().st_size, 1)
    if nbytes > BOMB_FLOOR_BYTES and nbytes > MAX_EXPANSION * size:
        raise EmbeddingsFileError(
            f"{path}: a {size / 1024**2:.2f} MiB file whose arrays would take "
            f"{nbytes / 1024**2:,.0f} MiB ({nbytes / size:,.0f}x): a decompression bomb, not "
            "embeddings; nothing was loaded.")


def load_embeddings(path: str | os.PathLike, *,
                    max_bytes: int | None = None) -> tuple[PairedEmbeddings, LoadReport]:
    """Read a ``.npz`` or ``.parquet`` embeddings file, or a folder of ``.parquet`` shards.

    Parameters
    ----------
    path : path
        A file, or a folder whose ``*.parquet`` files (hidden ones aside) are shards of one set,
        read in name order into one :class:`PairedEmbeddings`.
    max_bytes : int, optional
        Refuse files whose arrays would take more memory than this, checked from the headers
        before loading (default :func:`max_embeddings_bytes`, 2 GiB).

    Returns the usable pairs and a :class:`LoadReport` of what was skipped and why.
    Raises :class:`EmbeddingsFileError` (a ``ValueError``) for anything that cannot be used,
    with a one-line message naming the file; no other exception comes from a file's content.
    """
    path = Path(path)
    limit = max_embeddings_bytes() if max_bytes is None else int(max_bytes)
    if not path.exists():
        raise EmbeddingsFileError(f"{path}: no such file. Give the path of a .npz or .parquet file.")
    if path.is_dir():
        return _load_shards(path, limit)
    if not path.is_file():
        raise EmbeddingsFileError(f"{path}: not a file (a folder?). Give the path of a .npz or "
                                  ".parquet file.")
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".parquet"):
        raise EmbeddingsFileError(
            f"{path}: unsupported extension '{suffix}'. gapviz reads embeddings from .npz "
            "(arrays image_embeddings, text_embeddings) or .parquet (columns image_embedding, "
            "text_embedding).")
    with _read_errors(path, "this file; use a smaller file", "embeddings file"):
        if suffix == ".npz":
            values, warnings = _read_npz(path, limit)
        else:
            values, warnings = _read_parquet(path, limit)
        pairs, report = _from_arrays(values, str(path))
    report.warnings.extend(warnings + _simulated_claim(pairs))
    return pairs, report


def _simulated_claim(pairs: PairedEmbeddings) -> list[str]:
    """A warning when a file's meta says "simulated" but its content is not that simulation.

    Not for a transformed export (its meta names the ``method`` that made it from simulated
    pairs): that it is not the simulation itself is what it says."""
    if (pairs.meta.get("simulated", False) and "method" not in pairs.meta
            and not pairs.is_simulated):
        return ["the file's meta says 'simulated', but its content is not gapviz's simulation "
                "with the meta's profile, seed and size (edited, subsampled or another "
                "generator): it is treated as real data, without the demo's label"]
    return []


@contextmanager
def _read_errors(path: Path, memory: str, what: str) -> Iterator[None]:
    """Anything a damaged file can still make a reader raise, as one line naming the file:
    "PATH: not enough memory to read MEMORY." or "PATH: not a readable WHAT (error)."."""
    try:
        yield
    except EmbeddingsFileError:
        raise
    except MemoryError:
        raise EmbeddingsFileError(f"{path}: not enough memory to read {memory}.") from None
    except (ValueError, TypeError, OSError, EOFError, KeyError, IndexError, RecursionError,
            zlib.error) as err:
        raise EmbeddingsFileError(f"{path}: not a readable {what} "
                                  f"({type(err).__name__}: {_one_line(err)}).") from None


def shard_files(folder: str | os.PathLike) -> list[Path]:
    """The ``*.parquet`` shards of ``folder`` in name order (hidden files, such as shards still
    being written, left out)."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.suffix.lower() == ".parquet" and not p.name.startswith(".") and p.is_file())


def _load_shards(folder: Path, limit: int) -> tuple[PairedEmbeddings, LoadReport]:
    """A folder of parquet shards as one set (see :func:`load_embeddings`)."""
    shards = shard_files(folder)
    if not shards:
        raise EmbeddingsFileError(
            f"{folder}: a folder without .parquet shards. Give a .npz or .parquet file, or a "
            "folder of .parquet shards (as `gapviz embed --ray` writes).")
    with _read_errors(folder, "these shards; use fewer or smaller shards",
                      "folder of embeddings shards"):
        total = 0
        for shard in shards:
            try:
                total += _parquet_size(shard)
            except Exception as err:  # pyarrow raises ArrowInvalid / OSError for corrupt files
                raise EmbeddingsFileError(
                    f"{shard}: not a readable parquet file ({_one_line(err)}).") from None
        if total > limit:
            raise _too_big(folder, total, limit)
        parts = [(shard, *_read_parquet(shard, limit)) for shard in shards]
        values, warnings = _join_shards(folder, parts)
        pairs, report = _from_arrays(values, str(folder))
    report.warnings.extend(warnings + _simulated_claim(pairs))
    return pairs, report


def _join_shards(folder: Path, parts: list[tuple[Path, dict[str, Any], list[str]]]
                 ) -> tuple[dict[str, Any], list[str]]:
    """The shards' values end to end: one model and one d, text columns kept where every shard
    has them, the first shard's meta (less its ``shard`` entry) with the number of shards."""
    first_path, first, _ = parts[0]
    warnings = [f"{path.name}: {w}" for path, _, ws in parts for w in ws]
    dims = {}
    for path, values, _ in parts:
        for key in ("image_embeddings", "text_embeddings"):
            d = values[key].shape[1]
            if dims.setdefault(key, (d, path))[0] != d:
                raise EmbeddingsFileError(
                    f"{path}: {key.split('_')[0]} vectors of d={d}, but {dims[key][1].name} has "
                    f"d={dims[key][0]}; the shards of one folder must come from one model.")
        if values.get("model", "") != first.get("model", ""):
            raise EmbeddingsFileError(
                f"{path}: model '{values.get('model', '')}', but {first_path.name} has "
                f"'{first.get('model', '')}'; the shards of one folder must come from one model.")
    joined: dict[str, Any] = {
        key: np.concatenate([values[key] for _, values, _ in parts])
        for key in ("image_embeddings", "text_embeddings")}
    if all(_TOO_LARGE_KEY in values for _, values, _ in parts):
        joined[_TOO_LARGE_KEY] = np.concatenate([values[_TOO_LARGE_KEY] for _, values, _ in parts])
    for key in ("ids", "captions", "image_paths", "labels", "groups"):
        have = [key in values for _, values, _ in parts]
        if all(have):
            joined[key] = [v for _, values, _ in parts for v in values[key]]
        elif any(have):
            warnings.append(f"ignored '{key}': only {sum(have)} of {len(parts)} shards have them"
                            + ("; pairs are numbered by position instead" if key == "ids" else ""))
    if "model" in first:
        joined["model"] = first["model"]
    meta = {k: v for k, v in dict(first.get("meta") or {}).items() if k != "shard"}
    joined["meta"] = {**meta, "shards": len(parts)}
    return joined, warnings


def _one_line(err: BaseException, width: int = 200) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= width else text[:width - 3] + "..."


def _npz_headers(path: Path, zf: zipfile.ZipFile) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of each ``.npy`` member, read from its header only (nothing decompressed
    beyond the first few hundred bytes)."""
    headers: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    for info in zf.infolist():
        if not info.filename.endswith(".npy"):
            continue
        key = info.filename[:-4]
        with zf.open(info) as member:
            try:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(member)
            except (ValueError, TypeError, SyntaxError, EOFError, OSError, zipfile.BadZipFile,
                    zlib.error) as err:
                raise EmbeddingsFileError(f"{path}: array '{key}' has no readable header "
                                          f"({_one_line(err)}); save it again with np.savez.") from None
        headers[key] = (tuple(int(x) for x in shape), np.dtype(dtype))
    return headers


def _in_memory_bytes(key: str, shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Bytes array ``key`` takes once loaded: the embeddings are widened to float32 (an int8
    or float16 file takes 4 or 2 times its stored size), other arrays take their own size."""
    itemsize = dtype.itemsize
    if key in NPZ_REQUIRED_KEYS:
        itemsize = max(itemsize, np.dtype(np.float32).itemsize)
    return int(np.prod(shape, dtype=np.float64)) * itemsize


def _read_npz(path: Path, limit: int) -> tuple[dict[str, Any], list[str]]:
    if not zipfile.is_zipfile(path):  # np.load would try pickle and say something misleading
        raise EmbeddingsFileError(
            f"{path}: not a readable .npz file (an .npz is a zip archive of arrays, as written by "
            "np.savez). Check the file, or save your arrays with np.savez.")
    try:
        with zipfile.ZipFile(path) as zf:
            headers = _npz_headers(path, zf)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError,
            EOFError, zlib.error) as err:
        raise EmbeddingsFileError(f"{path}: not a readable .npz file ({_one_line(err)}).") from None
    missing = [k for k in NPZ_REQUIRED_KEYS if k not in headers]
    if missing:
        raise EmbeddingsFileError(
            f"{path}: missing array(s) {missing}; found {sorted(headers)}. An embeddings .npz needs "
            "'image_embeddings' and 'text_embeddings' (N x d each).")
    unknown = sorted(set(headers) - set(NPZ_REQUIRED_KEYS) - set(NPZ_OPTIONAL_KEYS))
    warnings = [f"ignored unknown key(s) {unknown}; known optional keys are "
                f"{list(NPZ_OPTIONAL_KEYS)}"] if unknown else []
    wanted = [k for k in headers if k not in unknown]
    for key in wanted:
        if headers[key][1].hasobject:
            raise EmbeddingsFileError(
                f"{path}: '{key}' holds Python objects, which need pickle (refused for safety); "
                "save arrays as numbers/strings, not Python objects.")
    for key in NPZ_REQUIRED_KEYS:
        _check_numeric(key, headers[key][1], str(path))
    nbytes = sum(_in_memory_bytes(k, *headers[k]) for k in wanted)
    _check_size(path, nbytes, limit)
    try:
        with np.load(path, allow_pickle=False) as npz:
            values: dict[str, Any] = {k: npz[k] for k in wanted}
    except ValueError as err:  # object arrays need pickle, which we refuse for safety
        raise EmbeddingsFileError(
            f"{path}: cannot read ({_one_line(err)}). Save arrays as numbers/strings, not Python "
            "objects (np.savez of object arrays is not accepted).") from None
    except Exception as err:  # a truncated member: zlib.error, EOFError, BadZipFile
        raise EmbeddingsFileError(f"{path}: not a readable .npz file ({_one_line(err)}).") from None
    for name in ("ids", "captions", "image_paths", "labels", "groups"):
        if name in values:
            arr = values.pop(name)
            numbered = name in ("ids", "labels", "groups")
            allowed = "USiu" if numbered else "US"
            if arr.ndim != 1 or arr.dtype.kind not in allowed:
                warnings.append(f"ignored '{name}': must be a 1-D array of "
                                f"{'strings or integers' if numbered else 'strings'}"
                                f", got {arr.dtype} of shape {arr.shape}")
                continue
            values[name] = [_text(v) for v in arr]
    if "model" in values:
        model = values.pop("model")
        if model.size == 1 and model.dtype.kind in "US":
            values["model"] = _text(model.reshape(-1)[0])
        else:
            warnings.append(f"ignored 'model': must be one string, got {model.dtype} of shape "
                            f"{model.shape}")
    if "meta" in values:
        meta = values.pop("meta")
        if meta.size == 1 and meta.dtype.kind in "US":
            parsed, problem = _meta_object(_text(meta.reshape(-1)[0]))
        else:
            parsed, problem = None, f"must be one JSON string, got {meta.dtype} of shape {meta.shape}"
        if problem:
            warnings.append(f"ignored 'meta': {problem}")
        else:
            values["meta"] = parsed
    return values, warnings


def _text(value: Any) -> str:
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _meta_object(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """``meta`` parsed as a JSON object, or None and why not."""
    try:
        meta = loads_json(text)
    except JSONInputError as err:
        return None, str(err)
    if not isinstance(meta, dict):
        return None, f"must be a JSON object ({{...}}), got a JSON {type(meta).__name__}"
    return meta, None


def _parquet_size(path: Path) -> int:
    """Bytes a parquet file can take once decoded, from its footer: per column chunk, the
    larger of its uncompressed size and its value count times 8 (dictionary or run-length
    encoding can make the former far smaller than the decoded data).

    The footer is read here, bounded, rather than through pyarrow's metadata accessors: for some
    damaged footers (level histograms of the wrong size) those throw a C++ exception that Python
    cannot catch, which ends the whole process. Raises ``ValueError`` for anything malformed."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size < 12:
            raise ValueError("too short for a parquet file")
        fh.seek(size - 8)
        tail = fh.read(8)
        if tail[4:] == b"PARE":
            raise ValueError("an encrypted parquet footer; write the file unencrypted")
        if tail[4:] != b"PAR1":
            raise ValueError("no parquet footer (the file does not end in PAR1)")
        length = int.from_bytes(tail[:4], "little")
        if not 0 < length <= size - 12:
            raise ValueError(f"a footer length of {length} bytes in a file of {size}")
        fh.seek(size - 8 - length)
        footer = fh.read(length)
    total = 0
    for group in _ThriftCompact(footer).struct().get(4, []):  # FileMetaData.row_groups
        for chunk in group.get(1, []):  # RowGroup.columns
            column = chunk.get(3)  # ColumnChunk.meta_data
            if not isinstance(column, dict):
                raise ValueError("a column chunk without its metadata")
            values, unpacked = column.get(5), column.get(6)  # num_values, total_uncompressed_size
            if not (isinstance(values, int) and isinstance(unpacked, int)) or min(values, unpacked) < 0:
                raise ValueError("a column chunk with a missing or negative size")
            total += max(unpacked, values * 8)
    return total


class _ThriftCompact:
    """A bounded reader of one Thrift compact-protocol struct (the encoding of a parquet
    footer): structs as ``{field id: value}``, lists as lists, strings as bytes. Every length
    is checked against the bytes left and nesting is capped, so no input can make it allocate
    more than the footer's size or recurse without end."""

    _MAX_DEPTH = 64

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def _byte(self) -> int:
        if self.pos >= len(self.data):
            raise ValueError("the footer ends inside a value")
        self.pos += 1
        return self.data[self.pos - 1]

    def _varint(self) -> int:
        value = shift = 0
        while True:
            byte = self._byte()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise ValueError("a varint longer than 64 bits")

    def _zigzag(self) -> int:
        value = self._varint()
        return (value >> 1) ^ -(value & 1)

    def _take(self, n: int) -> bytes:
        if n < 0 or n > len(self.data) - self.pos:
            raise ValueError(f"a length of {n} bytes past the footer's end")
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def _value(self, kind: int, depth: int) -> Any:
        if depth > self._MAX_DEPTH:
            raise ValueError("values nested too deep")
        if kind in (1, 2):  # boolean (field header form)
            return kind == 1
        if kind == 3:
            return self._byte()
        if kind in (4, 5, 6):
            return self._zigzag()
        if kind == 7:
            return self._take(8)
        if kind == 8:
            return self._take(self._varint())
        if kind in (9, 10):
            header = self._byte()
            n, element = header >> 4, header & 0x0F
            if n == 15:
                n = self._varint()
            if n > len(self.data) - self.pos:  # every element takes at least one byte
                raise ValueError(f"a list of {n} elements in fewer bytes")
            if element in (1, 2):  # booleans inside lists take one byte each
                return [self._byte() == 1 for _ in range(n)]
            return [self._value(element, depth + 1) for _ in range(n)]
        if kind == 11:
            n = self._varint()
            if not n:
                return {}
            if 2 * n > len(self.data) - self.pos:
                raise ValueError(f"a map of {n} entries in fewer bytes")
            types = self._byte()
            return dict((self._value(types >> 4, depth + 1), self._value(types & 0x0F, depth + 1))
                        for _ in range(n))
        if kind == 12:
            return self.struct(depth + 1)
        raise ValueError(f"an unknown Thrift type {kind}")

    def struct(self, depth: int = 0) -> dict[int, Any]:
        if depth > self._MAX_DEPTH:
            raise ValueError("structs nested too deep")
        fields: dict[int, Any] = {}
        field = 0
        while True:
            header = self._byte()
            if header == 0:
                return fields
            kind, delta = header & 0x0F, header >> 4
            field = field + delta if delta else self._zigzag()
            try:
                fields[field] = self._value(kind, depth)
            except (TypeError, RecursionError) as err:  # unhashable map key, deep lists
                raise ValueError(f"a malformed value ({err.__class__.__name__})") from None


def _vector_column(path: Path, table: Any, col: str) -> tuple[np.ndarray, np.ndarray]:
    """A parquet list-of-numbers column as an (N, d) float32 array, by the one typing rule,
    and the (N,) mask of rows whose values were beyond float32 (:func:`too_large_rows`)."""
    import pyarrow as pa

    column = table.column(col)
    kind = column.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)):
        raise EmbeddingsFileError(
            f"{path}: column '{col}' is {kind}, not a list of numbers; each row must hold one "
            "vector (a list of floats), e.g. written from a list of numpy arrays.")
    value = kind.value_type
    if not (pa.types.is_integer(value) or pa.types.is_floating(value)):
        raise EmbeddingsFileError(
            f"{path}: column '{col}' holds lists of {value}; embeddings must be lists of real "
            "numbers (float or integer).")
    column = column.combine_chunks()
    n = len(column)
    if column.null_count:
        raise EmbeddingsFileError(f"{path}: column '{col}' has {column.null_count} empty (null) "
                                  "row(s); every row needs a vector.")
    flat = column.flatten()
    if flat.null_count:
        raise EmbeddingsFileError(f"{path}: column '{col}' has missing (null) numbers inside "
                                  "vectors; write NaN instead, or drop those rows.")
    if pa.types.is_fixed_size_list(kind):
        d = kind.list_size
    else:
        offsets = np.asarray(column.offsets)
        lengths = np.diff(offsets)
        if lengths.size and (lengths != lengths[0]).any():
            raise EmbeddingsFileError(
                f"{path}: column '{col}' has rows of different lengths (e.g. {sorted(set(lengths[:50].tolist()))[:5]}); "
                "every row needs a vector of the same length d.")
        d = int(lengths[0]) if lengths.size else 0
    if not n:
        return np.zeros((0, d), np.float32), np.zeros(0, bool)
    values = flat.to_numpy(zero_copy_only=False).reshape(n, d)
    big = too_large_rows(values)
    with np.errstate(over="ignore"):  # beyond float32: inf, reported as too large
        return values.astype(np.float32, copy=False), big


def _read_parquet(path: Path, limit: int) -> tuple[dict[str, Any], list[str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        size = _parquet_size(path)
        pf = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises ArrowInvalid / OSError for corrupt files
        raise EmbeddingsFileError(f"{path}: not a readable parquet file ({_one_line(err)}).") from None
    _check_size(path, size, limit)
    cols = set(pf.schema_arrow.names)
    missing = [c for c in ("image_embedding", "text_embedding") if c not in cols]
    if missing:
        raise EmbeddingsFileError(
            f"{path}: missing column(s) {missing}; found {sorted(cols)}. An embeddings parquet has "
            "one row per pair with list-of-float columns 'image_embedding' and 'text_embedding'.")
    unknown = sorted(cols - set(PARQUET_COLUMNS))
    warnings = [f"ignored unknown column(s) {unknown}"] if unknown else []
    try:
        table = pf.read(columns=[c for c in PARQUET_COLUMNS if c in cols])
    except Exception as err:
        raise EmbeddingsFileError(f"{path}: not a readable parquet file ({_one_line(err)}).") from None
    if table.nbytes > limit:
        raise _too_big(path, table.nbytes, limit)
    values: dict[str, Any] = {}
    big = []
    for col, key in (("image_embedding", "image_embeddings"), ("text_embedding", "text_embeddings")):
        values[key], rows = _vector_column(path, table, col)
        big.append(rows)
    if big[0].shape == big[1].shape:
        values[_TOO_LARGE_KEY] = big[0] | big[1]
    for col, key in (("id", "ids"), ("caption", "captions"), ("image_path", "image_paths"),
                     ("label", "labels"), ("group", "groups")):
        if col not in cols:
            continue
        kind = table.schema.field(col).type
        text_like = pa.types.is_string(kind) or pa.types.is_large_string(kind)
        numbered = col in ("id", "label", "group")
        if not (text_like or (numbered and pa.types.is_integer(kind))):
            warnings.append(f"ignored column '{col}': must hold "
                            f"{'strings or integers' if numbered else 'strings'}, got {kind}")
            continue
        values[key] = ["" if v is None else str(v) for v in table.column(col).to_pylist()]
    raw_meta = (pf.schema_arrow.metadata or {}).get(PARQUET_META_KEY)
    if raw_meta:
        extra, problem = _meta_object(raw_meta.decode("utf-8", errors="replace"))
        if problem:
            warnings.append(f"ignored the file's 'gapviz' metadata: {problem}")
        else:
            assert extra is not None
            model, meta = extra.get("model", ""), extra.get("meta", {})
            if isinstance(model, str):
                values["model"] = model
            else:
                warnings.append(f"ignored 'model' in the metadata: must be a string, got "
                                f"{type(model).__name__}")
            if isinstance(meta, dict):
                values["meta"] = meta
            else:
                warnings.append(f"ignored 'meta' in the metadata: must be a JSON object, got "
                                f"{type(meta).__name__}")
    return values, warnings


def check_output_path(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Raise :class:`EmbeddingsFileError` / :class:`FileExistsError` unless ``path`` can be written.

    Checks, before any work that would be lost: a ``.npz`` or ``.parquet`` name, not a folder,
    not an existing file unless ``overwrite``, and a folder that exists (or can be made) where a
    file can be created. Call it before embedding; :func:`save_embeddings` checks again.
    """
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if path.is_dir():
        raise EmbeddingsFileError(f"{path} is a folder; give a file name such as "
                                  f"{path / 'embeddings.npz'}.")
    if suffix not in (".npz", ".parquet"):
        raise EmbeddingsFileError(f"{path}: choose a .npz or .parquet file name.")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another name or pass overwrite=True.")
    parent = path.parent
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise EmbeddingsFileError(f"{path}: {existing} is a file, not a folder; choose another "
                                  "output path.")
    probe_dir = parent if parent.is_dir() else existing
    try:
        fd, probe = tempfile.mkstemp(dir=probe_dir, prefix=f".{path.name}.", suffix=".check")
    except OSError as err:
        raise EmbeddingsFileError(f"{path}: cannot write in {probe_dir} ({err.strerror or err}); "
                                  "choose a folder you can write to.") from None
    os.close(fd)
    os.remove(probe)
    if path.exists() and not os.access(path, os.W_OK) and not os.access(parent, os.W_OK):
        raise EmbeddingsFileError(f"{path}: the file is read-only; choose another output path.")
    return path


def save_embeddings(pairs: PairedEmbeddings, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``pairs`` to ``path`` (``.npz`` or ``.parquet``, by its extension), atomically.

    Refuses to replace an existing file unless ``overwrite=True``: user data is never clobbered.
    The file is written under a temporary name and renamed, so an interrupted write never leaves
    a half-written file at ``path``; it gets the usual permissions (those of the file it
    replaces, else 0666 less the umask). Problems with ``path`` (a folder, unwritable) raise
    :class:`EmbeddingsFileError` before anything is written (see :func:`check_output_path`).
    """
    path = check_output_path(path, overwrite=overwrite)
    suffix = path.suffix.lower()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise EmbeddingsFileError(f"{path}: cannot create the folder {path.parent} "
                                  f"({err.strerror or err}); choose another output path.") from None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        if suffix == ".npz":
            _write_npz(pairs, tmp)
        else:
            _write_parquet(pairs, tmp)
        # mkstemp made the file 0600: give it the mode a plain write would (or the replaced file's).
        set_default_mode(tmp, replacing=path)
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
    if pairs.labels is not None:
        arrays["labels"] = np.asarray(pairs.labels, dtype=str)
    if pairs.groups is not None:
        arrays["groups"] = np.asarray(pairs.groups, dtype=str)
    np.savez(target, **arrays)


def _write_parquet(pairs: PairedEmbeddings, target: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns: dict[str, Any] = {"id": pa.array(pairs.ids, pa.string())}
    if pairs.captions is not None:
        columns["caption"] = pa.array(pairs.captions, pa.string())
    if pairs.image_paths is not None:
        columns["image_path"] = pa.array(pairs.image_paths, pa.string())
    if pairs.labels is not None:
        columns["label"] = pa.array(pairs.labels, pa.string())
    if pairs.groups is not None:
        columns["group"] = pa.array(pairs.groups, pa.string())
    for name, arr in (("image_embedding", pairs.image_embeddings), ("text_embedding", pairs.text_embeddings)):
        flat = pa.array(arr.reshape(-1), pa.float32())
        columns[name] = pa.FixedSizeListArray.from_arrays(flat, arr.shape[1]).cast(pa.list_(pa.float32()))
    table = pa.table(columns)
    meta = json.dumps({"model": pairs.model, "meta": pairs.meta}, default=str).encode()
    table = table.replace_schema_metadata({PARQUET_META_KEY: meta})
    pq.write_table(table, target)
