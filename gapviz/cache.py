"""gapviz's disk cache: where it lives, and the embedding cache keyed by content.

Location: the ``cache_dir`` argument, else ``$GAPVIZ_CACHE_DIR``, else ``~/.cache/gapviz``.
Inside: ``downloads/`` (fetched files), ``extracted/`` (archives), ``uploads/`` and
``embeddings-uploads/`` (uploaded files), ``embeddings/`` (this module). Nothing else in the
cache root is ever touched, so pointing ``$GAPVIZ_CACHE_DIR`` at a shared folder is safe.

Size: the cache is capped (:func:`max_cache_bytes`, ``$GAPVIZ_CACHE_MAX_GB``, default 10 GiB).
:func:`enforce_cap` deletes whole entries (an extracted archive, an upload, one downloaded
file, one embeddings entry), least recently used first, never those the caller is using;
entries are touched when reused, so "used" means used by gapviz, not merely read.
:func:`clean_stale` removes what a killed process left behind (temporary extraction folders and
files), :func:`cache_usage` says what is there and :func:`clear_cache` empties it.

An embedding entry is keyed by a hash of everything that determines the numbers: each pair's
id, caption and image *bytes* (not its path, so a moved folder still hits), the model's
identity (name, weights tag or checkpoint, random-weight seed, open_clip version) and the image
pipeline. Entries are ordinary ``.npz`` embeddings files written atomically (temporary name,
then rename), so an interrupted run never leaves a corrupt entry; one that is unreadable anyway
(a full disk, a manual edit) counts as a miss and is replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data.defaults import cache_root
from .embeddings import EmbeddingsFileError, PairedEmbeddings, load_embeddings, save_embeddings

#: Bumped when the key's recipe changes, so old entries are not read with a new meaning.
KEY_VERSION = "gapviz-embed-cache-v1"


def file_digest(path: str | os.PathLike) -> str:
    """BLAKE2b of a file's bytes (hex, 40 characters)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=20)).hexdigest()


class EmbeddingCache:
    """Embeddings of pair sets on disk, keyed by content (see the module docstring).

    Parameters
    ----------
    cache_dir : path, optional
        Cache root; entries go to ``<root>/embeddings``.
    workers : int
        Threads hashing image files (hashing releases the GIL).
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None, workers: int = 4) -> None:
        self.cache_dir = cache_dir
        self.workers = workers

    @property
    def folder(self) -> Path:
        return cache_root(self.cache_dir) / "embeddings"

    def key(self, pairs: Sequence[Any], model_identity: Mapping[str, Any]) -> str:
        """Content key of embedding ``pairs`` (objects with ``id``, ``caption``, ``image_path``)
        with the model described by ``model_identity`` (JSON-serialisable)."""
        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            digests = list(pool.map(file_digest, [p.image_path for p in pairs]))
        h = hashlib.blake2b(digest_size=20)
        h.update(KEY_VERSION.encode())
        h.update(json.dumps(dict(model_identity), sort_keys=True, default=str).encode())
        for pair, digest in zip(pairs, digests):
            # Unit separators keep ("ab", "c") and ("a", "bc") apart.
            h.update(f"\x1e{pair.id}\x1f{pair.caption}\x1f{digest}".encode("utf-8", "surrogatepass"))
        return h.hexdigest()

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.npz"

    def load(self, key: str) -> PairedEmbeddings | None:
        """The cached embeddings for ``key``, or None (a missing or unreadable entry)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            embeddings, _ = load_embeddings(path)
            os.utime(path)  # recently used
        except (EmbeddingsFileError, OSError):
            path.unlink(missing_ok=True)
            return None
        return embeddings

    def save(self, key: str, embeddings: PairedEmbeddings) -> Path:
        """Store ``embeddings`` under ``key`` (atomic; replaces an existing entry), then keep
        the cache under its cap (:func:`enforce_cap`)."""
        path = save_embeddings(embeddings, self.path(key), overwrite=True)
        enforce_cap(self.cache_dir, keep=[path])
        return path

    def clear(self) -> int:
        """Delete every embedding entry; returns how many were removed."""
        removed = 0
        if self.folder.is_dir():
            for entry in self.folder.glob("*.npz"):
                entry.unlink(missing_ok=True)
                removed += 1
        return removed


# ---------------------------------------------------------------------------------------------
# size cap, stale temporary files, usage
# ---------------------------------------------------------------------------------------------
#: Cache areas, and whether each one's entries are its direct children (folders or files) or
#: every file below it (downloads are fanned out over hash-prefix folders).
AREAS: dict[str, str] = {"downloads": "files", "extracted": "children", "uploads": "children",
                         "embeddings-uploads": "children", "embeddings": "children"}
#: Default size cap of the whole cache; ``$GAPVIZ_CACHE_MAX_GB`` changes it.
MAX_CACHE_BYTES = 10 * 1024**3
MAX_CACHE_ENV = "GAPVIZ_CACHE_MAX_GB"
#: Temporary files and folders untouched for this long belong to a process that died.
STALE_SECONDS = 3600.0
#: Bookkeeping files next to downloads: never counted as entries of their own.
_SIDE_FILES = (".lock", ".dead", ".part")


def max_cache_bytes() -> int:
    """The cache's size cap: ``$GAPVIZ_CACHE_MAX_GB`` (a number) or :data:`MAX_CACHE_BYTES`."""
    raw = os.environ.get(MAX_CACHE_ENV, "").strip()
    try:
        return int(float(raw) * 1024**3) if raw and float(raw) > 0 else MAX_CACHE_BYTES
    except ValueError:
        return MAX_CACHE_BYTES


@dataclass(frozen=True)
class CacheEntry:
    """One evictable thing in the cache: its path, bytes on disk, last use (mtime, seconds)."""

    path: Path
    area: str
    size: int
    used: float


def _tree_size(path: Path) -> tuple[int, float]:
    """Bytes of the files under ``path`` and the newest modification time among them."""
    if path.is_file() or path.is_symlink():
        st = path.lstat()
        return st.st_size, st.st_mtime
    total, newest = 0, path.stat().st_mtime
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            total += st.st_size
            newest = max(newest, st.st_mtime)
    return total, newest


def _is_temp(name: str) -> bool:
    return name.startswith(".")


def cache_entries(cache_dir: str | os.PathLike | None = None) -> list[CacheEntry]:
    """Every evictable entry of the cache (temporary and bookkeeping files excluded)."""
    root = cache_root(cache_dir)
    entries = []
    for area, layout in AREAS.items():
        folder = root / area
        if not folder.is_dir():
            continue
        if layout == "files":
            for dirpath, dirs, names in os.walk(folder):
                dirs[:] = [d for d in dirs if not _is_temp(d)]
                for name in names:
                    if _is_temp(name) or name.endswith(_SIDE_FILES):
                        continue
                    path = Path(dirpath) / name
                    try:
                        st = path.lstat()
                    except OSError:
                        continue
                    entries.append(CacheEntry(path, area, st.st_size, st.st_mtime))
        else:
            for child in folder.iterdir():
                if _is_temp(child.name):
                    continue
                try:
                    size, used = _tree_size(child)
                except OSError:
                    continue
                entries.append(CacheEntry(child, area, size, used))
    return entries


@dataclass
class CacheUsage:
    """What the cache holds: bytes and entries per area, and its cap."""

    root: Path
    cap: int
    bytes_by_area: dict[str, int] = field(default_factory=dict)
    entries_by_area: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.bytes_by_area.values())

    def lines(self) -> list[str]:
        """A short table a person can read."""
        out = [f"cache {self.root}: {_human(self.total)} of {_human(self.cap)} cap"]
        for area in AREAS:
            if self.entries_by_area.get(area):
                out.append(f"  {area:<20} {self.entries_by_area[area]:>7,} entries  "
                           f"{_human(self.bytes_by_area[area]):>10}")
        return out


def _human(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:,.0f} {unit}" if unit == "bytes" else f"{nbytes:,.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:,.1f} TiB"


def cache_usage(cache_dir: str | os.PathLike | None = None) -> CacheUsage:
    """Bytes and entries per area of the cache (for ``gapviz cache show``)."""
    usage = CacheUsage(cache_root(cache_dir), max_cache_bytes())
    for entry in cache_entries(cache_dir):
        usage.bytes_by_area[entry.area] = usage.bytes_by_area.get(entry.area, 0) + entry.size
        usage.entries_by_area[entry.area] = usage.entries_by_area.get(entry.area, 0) + 1
    return usage


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
        for suffix in _SIDE_FILES:  # a download's bookkeeping goes with it
            path.with_name(path.name + suffix).unlink(missing_ok=True)


def enforce_cap(cache_dir: str | os.PathLike | None = None, *, max_bytes: int | None = None,
                keep: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Delete least recently used entries until the cache fits in ``max_bytes``.

    Parameters
    ----------
    max_bytes : int, optional
        Default :func:`max_cache_bytes`.
    keep : paths
        Entries in use (or files inside them) that must stay even if old.

    Returns
    -------
    list of Path
        The entries removed, oldest first. When the kept entries alone exceed the cap, the
        cache stays over it until they are no longer in use.
    """
    cap = max_cache_bytes() if max_bytes is None else int(max_bytes)
    entries = cache_entries(cache_dir)
    total = sum(e.size for e in entries)
    if total <= cap:
        return []
    protected: set[Path] = set()  # each kept path and every folder above it
    for p in keep:
        path = Path(p).absolute()
        protected.add(path)
        protected.update(path.parents)
    removed = []
    for entry in sorted(entries, key=lambda e: e.used):
        if total <= cap:
            break
        if entry.path.absolute() in protected:
            continue
        _remove(entry.path)
        total -= entry.size
        removed.append(entry.path)
    return removed


def clean_stale(cache_dir: str | os.PathLike | None = None, *,
                older_than: float = STALE_SECONDS) -> list[Path]:
    """Remove temporary folders and files (names starting with ``.``, and ``.part`` downloads)
    left in the cache areas by processes that were killed: those untouched for ``older_than``
    seconds. Returns them."""
    root = cache_root(cache_dir)
    now = time.time()
    removed = []
    for area in AREAS:
        folder = root / area
        if not folder.is_dir():
            continue
        for dirpath, dirs, names in os.walk(folder):
            for name in [*dirs, *names]:
                # Dot-names are temporary extractions and writes; .part files are interrupted
                # downloads (resumable, but not after this long).
                if not (_is_temp(name) or name.endswith(".part")):
                    continue
                path = Path(dirpath) / name
                try:
                    if now - path.lstat().st_mtime < older_than:
                        continue
                except OSError:
                    continue
                _remove(path)
                removed.append(path)
            dirs[:] = [d for d in dirs if not _is_temp(d)]
    return removed


def clear_cache(cache_dir: str | os.PathLike | None = None,
                areas: Sequence[str] | None = None) -> tuple[int, int]:
    """Delete everything in the given cache ``areas`` (default: all of :data:`AREAS`).

    Returns ``(entries removed, bytes freed)``. Files outside the areas are left alone.
    """
    chosen = list(AREAS) if areas is None else list(areas)
    unknown = [a for a in chosen if a not in AREAS]
    if unknown:
        raise ValueError(f"unknown cache area(s) {unknown}; choose from {list(AREAS)}.")
    count = freed = 0
    for entry in cache_entries(cache_dir):
        if entry.area in chosen:
            _remove(entry.path)
            count += 1
            freed += entry.size
    root = cache_root(cache_dir)
    for area in chosen:  # leftovers: temporary files, bookkeeping of removed downloads
        if (root / area).is_dir():
            shutil.rmtree(root / area, ignore_errors=True)
    return count, freed
