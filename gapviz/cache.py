"""gapviz's disk cache: where it lives, and the embedding cache keyed by content.

Location: the ``cache_dir`` argument, else ``$GAPVIZ_CACHE_DIR``, else ``~/.cache/gapviz``.
Inside: ``downloads/`` (fetched files), ``extracted/`` (archives), ``uploads/`` and
``embeddings-uploads/`` (uploaded files), ``embeddings/`` (this module).

What is gapviz's: gapviz names everything it writes in an area by a hash (see
:func:`is_gapviz_entry`: ``extracted/<20 hex>``, ``uploads/<20 hex>``, ``embeddings/<40 hex>.npz``,
downloads at ``<2 hex>/<40 hex>`` with the same first two digits, and the temporary names
``.<entry>.<8 random>`` and ``.part`` files of those). The size cap, ``gapviz cache clear`` and
the clean-up of temporary files touch those names only, and never follow a symbolic link: an
area that is a link is left alone altogether, as is everything in the cache root outside the
areas. So pointing ``$GAPVIZ_CACHE_DIR`` at a shared folder (even one holding a ``downloads/``
folder of its own) is safe.

Size: the cache is capped (:func:`max_cache_bytes`, ``$GAPVIZ_CACHE_MAX_GB``, default 10 GiB).
:func:`enforce_cap` deletes whole entries (an extracted archive, an upload, one downloaded
file, one embeddings entry), least recently used first, never those the caller is using;
entries are touched when reused, so "used" means used by gapviz, not merely read.
:func:`clean_stale` removes what a killed process left behind (temporary extraction folders and
files), :func:`cache_usage` says what is there and :func:`clear_cache` empties it.

An embedding entry is keyed by a hash of everything that determines the numbers: each pair's
id, caption and image *bytes* (not its path, so a moved folder still hits), the model's
identity (name, weights tag or checkpoint, random-weight seed, open_clip version) and the image
pipeline. Entries are ordinary ``.npz`` embeddings files written atomically (a temporary name,
flushed to disk, then renamed), recording how many pairs they hold. Reading one checks it: an
entry that is unreadable, holds other pairs than its key's, or fewer rows than it records (a
manual edit, a truncated copy) counts as a miss and is replaced. No cached result is ever
shorter than its key says: :func:`gapviz.encode.embed_pairs` stores complete results only. A
cache that cannot be written (read-only, full, not a folder) fails the write with
:class:`CacheWriteError`, and leaves no partial entry; :func:`cache_write_problem` tells before
any work.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from .data.defaults import cache_area, cache_root
from .embeddings import EmbeddingsFileError, PairedEmbeddings, _write_npz, load_embeddings
from .safety import set_default_mode

#: Bumped when the key's recipe changes, so old entries are not read with a new meaning.
KEY_VERSION = "gapviz-embed-cache-v1"
#: Meta key of an embedding entry recording how many pairs it holds (checked on read).
ENTRY_N_KEY = "cache_entry_n_pairs"
#: The file :func:`cache_write_problem` writes and removes in the cache root, and its size.
_PROBE_PREFIX = ".gapviz-write-check."
_PROBE_BYTES = 64 * 1024


class CacheWriteError(OSError):
    """The cache could not be written (read-only, full, not a folder); nothing partial is left."""


def file_digest(path: str | os.PathLike) -> str:
    """BLAKE2b of a file's bytes (hex, 40 characters)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=20)).hexdigest()


def describe_os_error(err: OSError) -> str:
    """An ``OSError`` as people read it: ``No space left on device (/path)``."""
    what = err.strerror or str(err) or type(err).__name__
    return f"{what} ({err.filename})" if err.filename else what


class EmbeddingCache:
    """Embeddings of pair sets on disk, keyed by content (see the module docstring).

    Parameters
    ----------
    cache_dir : path, optional
        Cache root; entries go to ``<root>/embeddings``.
    workers : int
        Threads hashing image files (hashing releases the GIL).
    read_only : bool
        Serve entries that are there, write none (a cache that cannot be written).
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None, workers: int = 4,
                 read_only: bool = False) -> None:
        self.cache_dir = cache_dir
        self.workers = workers
        self.read_only = read_only

    @property
    def folder(self) -> Path:
        return cache_area("embeddings", self.cache_dir)

    def key(self, pairs: Sequence[Any], model_identity: Mapping[str, Any]) -> str:
        """Content key of embedding ``pairs`` (objects with ``id``, ``caption``, ``image_path``)
        with the model described by ``model_identity`` (JSON-serialisable).

        Raises ``OSError`` when an image cannot be read (it vanished since it was loaded)."""
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

    def load(self, key: str, ids: Sequence[str] | None = None) -> PairedEmbeddings | None:
        """The cached embeddings for ``key``, or None.

        None for a missing entry, one in a linked (not gapviz's) folder, and one that fails its
        check, which is then removed: unreadable, rows dropped on reading, a row count other than
        the one it records, or (given ``ids``, the pairs the key was made of) other pairs.
        """
        path = self.path(key)
        if _linked(self.folder) or not _is_regular(path):
            return None
        try:
            embeddings, report = load_embeddings(path)
        except (EmbeddingsFileError, OSError):
            self._discard(path)
            return None
        recorded = embeddings.meta.get(ENTRY_N_KEY)
        complete = (report.n_read == report.n_kept == embeddings.n
                    and isinstance(recorded, int) and recorded == embeddings.n
                    and (ids is None or list(embeddings.ids or []) == [str(i) for i in ids]))
        if not complete:
            self._discard(path)
            return None
        try:
            os.utime(path)  # recently used
        except OSError:  # a read-only cache still serves its entries
            pass
        embeddings.meta = {k: v for k, v in embeddings.meta.items() if k != ENTRY_N_KEY}
        return embeddings

    def _discard(self, path: Path) -> None:
        if not self.read_only:
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass

    def save(self, key: str, embeddings: PairedEmbeddings) -> Path | None:
        """Store ``embeddings`` under ``key``, then keep the cache under its cap (:func:`enforce_cap`).

        Atomic: written under a temporary name, flushed to disk, then renamed over any earlier
        entry, so a reader sees the whole entry or none. The entry records its row count.
        Returns its path (None for a read-only cache).

        Raises
        ------
        CacheWriteError
            The entry could not be written (a full disk, a read-only or linked folder); no
            partial entry or temporary file is left.
        """
        if self.read_only:
            return None
        path = self.path(key)
        if _linked(self.folder):
            raise CacheWriteError(f"{self.folder} is a symbolic link, and gapviz writes no cache "
                                  "entry through a link; point the cache (--cache-dir or "
                                  "$GAPVIZ_CACHE_DIR) at a folder of its own")
        stamped = replace(embeddings, meta={**embeddings.meta, ENTRY_N_KEY: embeddings.n})
        tmp = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{path.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as out:
                _write_npz(stamped, out)
                out.flush()
                os.fsync(out.fileno())
            set_default_mode(tmp)
            os.replace(tmp, path)
        except OSError as err:
            raise CacheWriteError(f"cannot write the cache entry in {self.folder}: "
                                  f"{describe_os_error(err)}; free some space or choose another "
                                  "cache folder (--cache-dir or $GAPVIZ_CACHE_DIR)") from err
        finally:
            if tmp is not None and os.path.lexists(tmp):
                try:
                    os.remove(tmp)
                except OSError:
                    pass
        enforce_cap(self.cache_dir, keep=[path])
        return path

    def clear(self) -> int:
        """Delete every embedding entry (gapviz's names only); returns how many were removed."""
        return clear_cache(self.cache_dir, ["embeddings"])[0]


def cache_write_problem(cache_dir: str | os.PathLike | None = None) -> str | None:
    """Why gapviz cannot write in the cache now, or None when it can.

    Creates the root if needed and writes, flushes and removes a small probe file there
    (``.gapviz-write-check.*``): a read-only or full disk, a root that is a file, missing
    permissions show up here, before any long work.
    """
    root = cache_root(cache_dir)
    if root.exists() and not root.is_dir():
        return "it is a file, not a folder"
    probe = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=root, prefix=_PROBE_PREFIX)
        with os.fdopen(fd, "wb") as out:
            out.write(bytes(_PROBE_BYTES))
            out.flush()
            os.fsync(out.fileno())
    except OSError as err:
        return describe_os_error(err)
    finally:
        if probe is not None:
            try:
                os.remove(probe)
            except OSError:
                pass
    return None


# ---------------------------------------------------------------------------------------------
# what is gapviz's: areas and the names gapviz gives their entries
# ---------------------------------------------------------------------------------------------
#: Cache areas, and whether each one's entries are its direct children (folders or files) or
#: files anywhere below it (downloads are fanned out over hash-prefix folders).
AREAS: dict[str, str] = {"downloads": "files", "extracted": "children", "uploads": "children",
                         "embeddings-uploads": "children", "embeddings": "children"}
#: Default size cap of the whole cache; ``$GAPVIZ_CACHE_MAX_GB`` changes it.
MAX_CACHE_BYTES = 10 * 1024**3
MAX_CACHE_ENV = "GAPVIZ_CACHE_MAX_GB"
#: Temporary files and folders untouched for this long belong to a process that died.
STALE_SECONDS = 3600.0
#: Bookkeeping files next to downloads: never counted as entries of their own.
_SIDE_FILES = (".lock", ".dead", ".part")

_URL_HASH = re.compile(r"[0-9a-f]{40}")
#: The names gapviz gives the direct children of each "children" area: an archive key
#: (gapviz.data.archives.archive_key), an upload's content hash (20 hex digits; 16 in earlier
#: versions), an embedding key.
_CHILD_NAMES: dict[str, tuple[re.Pattern[str], bool]] = {  # area -> (name, is a folder)
    "extracted": (re.compile(r"[0-9a-f]{20}"), True),
    "uploads": (re.compile(r"[0-9a-f]{16}(?:[0-9a-f]{4})?"), True),
    "embeddings-uploads": (re.compile(r"[0-9a-f]{16}(?:[0-9a-f]{4})?"), True),
    "embeddings": (re.compile(r"[0-9a-f]{40}\.npz"), False),
}
#: A temporary name gapviz's writers make for ``name`` (``tempfile`` with the prefix
#: ``.<name>.``: eight random characters, maybe a suffix).
_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}(?:\.[A-Za-z0-9]{1,8})?")


def _is_download(rel: PurePosixPath) -> bool:
    """Whether a file at ``rel`` (relative to ``downloads/``) has a name gapviz's downloader
    gives: ``.../<ab>/<ab...40 hex>`` (one URL's file) or ``.../<ab>/<ab...40 hex>/<name>`` (a
    named download such as the COCO annotations)."""
    parts = rel.parts
    if not parts or parts[-1].startswith(".") or parts[-1].endswith(_SIDE_FILES):
        return False  # a temporary or bookkeeping file, not a download
    if len(parts) >= 2 and _URL_HASH.fullmatch(parts[-1]) and parts[-2] == parts[-1][:2]:
        return True
    return len(parts) >= 3 and bool(_URL_HASH.fullmatch(parts[-2])) and parts[-3] == parts[-2][:2]


def _side_file_of(rel: PurePosixPath) -> bool:
    """Whether ``rel`` is a download's bookkeeping file (``.lock``, ``.dead``, ``.part``)."""
    return rel.name.endswith(_SIDE_FILES) and _is_download(rel.with_name(rel.name[:-5]))


def _is_child(area: str, path: Path) -> bool:
    """Whether ``path``, a direct child of ``area``, is an entry gapviz made (a regular file or
    folder, not a link, with the name gapviz gives)."""
    pattern, is_folder = _CHILD_NAMES[area]
    if not pattern.fullmatch(path.name):
        return False
    try:
        mode = path.lstat().st_mode
    except OSError:
        return False
    return stat.S_ISDIR(mode) if is_folder else stat.S_ISREG(mode)


def _is_temp_child(area: str, name: str) -> bool:
    """Whether ``name`` in ``area`` is a temporary name of one of gapviz's entries there."""
    match = _TEMP_NAME.fullmatch(name)
    return bool(match) and bool(_CHILD_NAMES[area][0].fullmatch(match["name"]))


def is_gapviz_entry(cache_dir: str | os.PathLike | None, path: str | os.PathLike) -> bool:
    """Whether ``path`` is an entry gapviz made in its cache (what the cap and ``clear`` may
    delete): in an area that is not a link, reached without a link, named as gapviz names it."""
    root = cache_root(cache_dir)
    path = Path(path)
    try:
        rel = PurePosixPath(*path.relative_to(root).parts)
    except ValueError:
        return False
    if len(rel.parts) < 2 or rel.parts[0] not in AREAS or _linked(root / rel.parts[0]):
        return False
    area = rel.parts[0]
    if AREAS[area] == "children":
        return len(rel.parts) == 2 and _is_child(area, path)
    inside = PurePosixPath(*rel.parts[1:])
    linked = any(_linked(root / rel.parts[0] / PurePosixPath(*inside.parts[:i]))
                 for i in range(1, len(inside.parts)))
    return not linked and _is_download(inside) and _is_regular(path)


def _linked(path: Path) -> bool:
    return path.is_symlink()


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def _area_folders(root: Path, areas: Iterable[str]) -> Iterable[tuple[str, Path]]:
    """The areas that are real folders (a link or a file in an area's place is not gapviz's)."""
    for area in areas:
        folder = root / area
        try:
            if stat.S_ISDIR(folder.lstat().st_mode):
                yield area, folder
        except OSError:
            continue


def linked_areas(cache_dir: str | os.PathLike | None = None) -> list[str]:
    """Areas that are symbolic links: never read, counted or deleted through."""
    root = cache_root(cache_dir)
    return [area for area in AREAS if _linked(root / area)]


# ---------------------------------------------------------------------------------------------
# size cap, stale temporary files, usage
# ---------------------------------------------------------------------------------------------
#: The least a cached file counts toward the cap (an empty file still holds an inode and its
#: directory entry): 250,000 empty files count as 122 MiB, not 0.
MIN_FILE_BYTES = 512


def max_cache_bytes() -> int:
    """The cache's size cap: ``$GAPVIZ_CACHE_MAX_GB`` (a number) or :data:`MAX_CACHE_BYTES`
    (read by the one rule of every gapviz limit: :func:`gapviz.data.defaults.env_limit`)."""
    from .data.defaults import env_limit

    return int(env_limit(MAX_CACHE_ENV, MAX_CACHE_BYTES / 1024**3, "GiB", scale=1024**3,
                         integer=True))


@dataclass(frozen=True)
class CacheEntry:
    """One evictable thing in the cache: its path, bytes on disk, last use (mtime, seconds)."""

    path: Path
    area: str
    size: int
    used: float


def _tree_size(path: Path) -> tuple[int, float]:
    """Bytes of the files under ``path`` and the newest modification time among them (links
    are counted as links, never followed). Each file counts at least :data:`MIN_FILE_BYTES`,
    so a flood of empty or tiny files is not invisible to the cap."""
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode):
        return max(st.st_size, MIN_FILE_BYTES), st.st_mtime
    total, newest = 0, st.st_mtime
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            total += max(st.st_size, MIN_FILE_BYTES)
            newest = max(newest, st.st_mtime)
    return total, newest


def _children(folder: Path) -> list[Path]:
    """The entries of ``folder``; none when it cannot be listed (housekeeping is best effort)."""
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def _walk_files(folder: Path) -> Iterable[tuple[PurePosixPath, Path]]:
    """``(path relative to folder, path)`` of every regular file below ``folder``, never
    descending into a linked folder (``os.walk`` lists links but does not follow them)."""
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = Path(dirpath) / name
            if _is_regular(path):
                yield PurePosixPath(*path.relative_to(folder).parts), path


def cache_entries(cache_dir: str | os.PathLike | None = None) -> list[CacheEntry]:
    """Every evictable entry of the cache: gapviz's entries (see :func:`is_gapviz_entry`) in
    the areas that are real folders; temporary and bookkeeping files excluded."""
    root = cache_root(cache_dir)
    entries = []
    for area, folder in _area_folders(root, AREAS):
        if AREAS[area] == "files":
            for rel, path in _walk_files(folder):
                if not _is_download(rel):
                    continue
                try:
                    st = path.lstat()
                except OSError:
                    continue
                entries.append(CacheEntry(path, area, st.st_size, st.st_mtime))
            continue
        for child in _children(folder):
            if not _is_child(area, child):
                continue
            try:
                size, used = _tree_size(child)
            except OSError:
                continue
            entries.append(CacheEntry(child, area, size, used))
    return entries


@dataclass
class CacheUsage:
    """What the cache holds: bytes and entries per area, its cap, and the areas skipped
    because they are symbolic links."""

    root: Path
    cap: int
    bytes_by_area: dict[str, int] = field(default_factory=dict)
    entries_by_area: dict[str, int] = field(default_factory=dict)
    linked: list[str] = field(default_factory=list)

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
        for area in self.linked:
            out.append(f"  {area:<20} a symbolic link: not gapviz's, never counted or deleted")
        return out


def _human(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:,.0f} {unit}" if unit == "bytes" else f"{nbytes:,.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:,.1f} TiB"


def cache_usage(cache_dir: str | os.PathLike | None = None) -> CacheUsage:
    """Bytes and entries per area of the cache (for ``gapviz cache show``)."""
    usage = CacheUsage(cache_root(cache_dir), max_cache_bytes(), linked=linked_areas(cache_dir))
    for entry in cache_entries(cache_dir):
        usage.bytes_by_area[entry.area] = usage.bytes_by_area.get(entry.area, 0) + entry.size
        usage.entries_by_area[entry.area] = usage.entries_by_area.get(entry.area, 0) + 1
    return usage


def _remove(path: Path) -> bool:
    """Delete one of gapviz's entries (a folder as a whole; a download with its bookkeeping
    files). Returns whether it is gone.

    A folder is first renamed to a temporary name, then deleted: a reader finds it whole or
    not at all, never half deleted under its own name (and if the deletion is cut short, the
    rest is a stale temporary folder that :func:`clean_stale` removes). Never follows a link:
    a folder that became a link since it was listed is left alone (``shutil.rmtree`` refuses
    links)."""
    try:
        if stat.S_ISDIR(path.lstat().st_mode):
            trash = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
            os.rename(path, trash)
            shutil.rmtree(trash, ignore_errors=True)
            return True
        path.unlink(missing_ok=True)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    for suffix in _SIDE_FILES:  # a download's bookkeeping goes with it
        try:
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        except OSError:
            pass
    return True


def enforce_cap(cache_dir: str | os.PathLike | None = None, *, max_bytes: int | None = None,
                keep: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Delete least recently used entries until the cache fits in ``max_bytes``.

    Only gapviz's entries count and go (:func:`cache_entries`).

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
        if entry.path.absolute() in protected or not _remove(entry.path):
            continue
        total -= entry.size
        removed.append(entry.path)
    return removed


def _leftovers(root: Path, areas: Iterable[str]) -> list[Path]:
    """gapviz's temporary files and folders and download bookkeeping files in ``areas``
    (whatever their age), plus probe files of :func:`cache_write_problem` in the root."""
    found = [p for p in root.glob(_PROBE_PREFIX + "*") if _is_regular(p)] if root.is_dir() else []
    for area, folder in _area_folders(root, areas):
        if AREAS[area] == "files":
            for rel, path in _walk_files(folder):
                if _side_file_of(rel):
                    found.append(path)
            continue
        for child in _children(folder):
            if _is_temp_child(area, child.name) and not _linked(child):
                found.append(child)
            elif area in ("uploads", "embeddings-uploads") and _is_child(area, child):
                # An upload's files are written as ".<name>.<random>" and renamed.
                found += [path for rel, path in _walk_files(child) if _TEMP_NAME.fullmatch(rel.name)]
    return found


def _age(path: Path, now: float) -> float:
    try:
        return now - path.lstat().st_mtime
    except OSError:
        return 0.0


def clean_stale(cache_dir: str | os.PathLike | None = None, *,
                older_than: float = STALE_SECONDS) -> list[Path]:
    """Remove temporary folders and files gapviz's writers left in the cache areas when they
    were killed (``.<entry>.<random>`` names, interrupted ``.part`` downloads): those untouched
    for ``older_than`` seconds. Lock and failure records of downloads stay. Returns them."""
    root = cache_root(cache_dir)
    now = time.time()
    removed = []
    for path in _leftovers(root, AREAS):
        if path.name.endswith((".lock", ".dead")) or _age(path, now) < older_than:
            continue
        if _remove_leftover(path):
            removed.append(path)
    return removed


def _remove_leftover(path: Path) -> bool:
    try:
        if stat.S_ISDIR(path.lstat().st_mode):
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        return False
    return not os.path.lexists(path)


def _prune_empty_folders(root: Path, areas: Iterable[str]) -> None:
    """Remove the empty hash-named folders gapviz made for downloads (``ab/``, ``ab<38 hex>/``).
    Area folders and any folder named otherwise stay, empty or not."""
    for _, folder in _area_folders(root, [a for a in areas if AREAS[a] == "files"]):
        for dirpath, dirs, _ in os.walk(folder, topdown=False):
            for name in dirs:
                path = Path(dirpath) / name
                if (len(name) == 2 or _URL_HASH.fullmatch(name)) and re.fullmatch("[0-9a-f]+", name):
                    try:
                        path.rmdir()  # only when empty; a link is not a folder here
                    except OSError:
                        pass


def clear_cache(cache_dir: str | os.PathLike | None = None,
                areas: Sequence[str] | None = None) -> tuple[int, int]:
    """Delete gapviz's entries in the given cache ``areas`` (default: all of :data:`AREAS`).

    Returns ``(entries removed, bytes freed)``. Only what gapviz made goes (see
    :func:`is_gapviz_entry`); other files in the areas, areas that are links, and everything
    outside the areas stay. Temporary files younger than :data:`STALE_SECONDS` belong to a
    gapviz command still running and stay too (:func:`clean_stale` takes them later).
    """
    chosen = list(AREAS) if areas is None else list(areas)
    unknown = [a for a in chosen if a not in AREAS]
    if unknown:
        raise ValueError(f"unknown cache area(s) {unknown}; choose from {list(AREAS)}.")
    count = freed = 0
    for entry in cache_entries(cache_dir):
        if entry.area in chosen and _remove(entry.path):
            count += 1
            freed += entry.size
    root = cache_root(cache_dir)
    now = time.time()
    for path in _leftovers(root, chosen):
        in_progress = path.name.endswith((".lock", ".part")) or _TEMP_NAME.fullmatch(path.name)
        if not (in_progress and _age(path, now) < STALE_SECONDS):
            _remove_leftover(path)
    _prune_empty_folders(root, chosen)
    return count, freed
