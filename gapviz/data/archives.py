"""Extracting zip and tar archives without trusting them.

An uploaded archive is untrusted input. The rules, enforced before or while writing:

- **paths**: an entry whose name is absolute (``/etc/x``, ``C:\\x``), or has a ``..`` part, is
  never written; it is reported as skipped ("zip slip"). Every written file is checked to lie
  inside the extraction folder;
- **kinds**: symbolic and hard links, devices and FIFOs are never created;
- **size**: an archive whose entries declare more than ``max_bytes`` in all, or more than
  ``max_ratio`` times the archive's own size (a zip bomb), is refused as a whole before
  anything is written, and bytes are counted again while writing;
- **names**: entries that clash with an earlier one (``x/b.jpg``, then a file ``x``, or the
  reverse) and names a file system cannot hold (a part over 255 bytes) are skipped and
  reported; any other entry the disk refuses is skipped the same way, never a traceback;
- **atomic**: extraction goes to a temporary folder that is renamed into place when complete,
  so an interrupted extraction is never mistaken for a finished one. The temporary folder's
  time stamp is refreshed while it is being written, so one left behind by a killed process is
  recognisably stale and removed by the next extraction (see :func:`gapviz.cache.clean_stale`).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from .defaults import MAX_ARCHIVE_BYTES, MAX_ARCHIVE_ENTRIES, MAX_ARCHIVE_RATIO
from .pairs import DataError, DataReport

UNSAFE_PATH = "unsafe path in archive (absolute or '..'; not extracted)"
NOT_REGULAR = "link or special file in archive (not extracted)"
DUPLICATE_ENTRY = "duplicate entry in archive (first kept)"
CLASHING_ENTRY = "archive entry clashes with an earlier one (a file and a folder of the same name; first kept)"
NAME_TOO_LONG = "archive entry name too long for the file system (a part over 255 bytes; not extracted)"
UNWRITABLE_ENTRY = "archive entry could not be written here (not extracted)"

#: Archives expanding to less than this are never refused for their ratio (a small zip of
#: captions legitimately compresses well; a zip of images expands about 1x).
RATIO_FLOOR_BYTES = 32 * 1024**2
#: Longest file-name part, in bytes (ext4, APFS, NTFS: 255).
MAX_NAME_BYTES = 255
#: Seconds between refreshes of the temporary folder's time stamp while extracting.
_TOUCH_EVERY = 10.0


@dataclass(frozen=True)
class ArchiveLimits:
    """Size limits applied before extraction (see the module docstring)."""

    max_bytes: int = MAX_ARCHIVE_BYTES
    max_ratio: float = MAX_ARCHIVE_RATIO
    ratio_floor_bytes: int = RATIO_FLOOR_BYTES
    max_entries: int = MAX_ARCHIVE_ENTRIES


@dataclass(frozen=True)
class Entry:
    """One archive member: its name as stored, its safe relative path (None if unsafe)."""

    name: str
    path: PurePosixPath | None
    size: int
    regular: bool
    is_dir: bool


def safe_path(name: str) -> PurePosixPath | None:
    """``name`` as a relative path that stays inside the extraction folder, or None.

    Backslashes count as separators (zips made on Windows); ``.`` parts are dropped; absolute
    names, drive letters and any ``..`` part make the name unsafe.
    """
    name = name.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return PurePosixPath(*parts)


def is_archive(path: str | os.PathLike) -> bool:
    name = str(path).lower()
    return name.endswith((".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"))


@contextmanager
def _open(path: Path) -> Iterator[tuple[list[Entry], Callable[[Entry], IO[bytes]]]]:
    """Entries of a zip or tar archive and a function opening one of them for reading."""
    if zipfile.is_zipfile(path):
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as err:
            raise DataError(f"{path}: not a readable zip archive ({err}).") from None
        with zf:
            infos = {}
            entries = []
            for info in zf.infolist():
                mode = (info.external_attr >> 16) & 0o170000
                # Unix zips store the file type in the high bits; 0 means "not recorded".
                regular = not info.is_dir() and mode in (0, 0o100000)
                entry = Entry(info.filename, safe_path(info.filename), info.file_size, regular,
                              info.is_dir())
                entries.append(entry)
                infos[id(entry)] = info
            yield entries, lambda e: zf.open(infos[id(e)])
        return
    try:
        tf = tarfile.open(path)
    except (tarfile.TarError, OSError, EOFError, ValueError) as err:
        raise DataError(f"{path}: not a readable zip or tar archive ({err}).") from None
    with tf:
        members = {}
        entries = []
        try:
            for member in tf:
                entry = Entry(member.name, safe_path(member.name), member.size, member.isreg(),
                              member.isdir())
                entries.append(entry)
                members[id(entry)] = member
        except (tarfile.TarError, OSError, EOFError, ValueError) as err:
            raise DataError(f"{path}: damaged tar archive after {len(entries)} entries ({err}); "
                            "create it again.") from None

        def opener(e: Entry) -> IO[bytes]:
            stream = tf.extractfile(members[id(e)])
            assert stream is not None  # regular members always have a stream
            return stream

        yield entries, opener


def check_limits(path: Path, entries: list[Entry], limits: ArchiveLimits) -> None:
    """Raise :class:`DataError` if ``entries`` would expand beyond ``limits`` (see module doc)."""
    if len(entries) > limits.max_entries:
        raise DataError(f"{path}: {len(entries):,} entries, more than the {limits.max_entries:,} "
                        "gapviz accepts; split the archive.")
    total = sum(e.size for e in entries if e.regular)
    size = max(path.stat().st_size, 1)
    if total > limits.max_bytes:
        raise DataError(f"{path}: would expand to {total / 1024**3:.1f} GiB, more than the "
                        f"{limits.max_bytes / 1024**3:.1f} GiB limit; upload a smaller sample.")
    if total > limits.ratio_floor_bytes and total / size > limits.max_ratio:
        raise DataError(
            f"{path}: would expand {total / size:.0f}x (from {size / 1024**2:.1f} MiB to "
            f"{total / 1024**2:.0f} MiB), more than {limits.max_ratio:.0f}x: this looks like a zip "
            "bomb, not images. Nothing was extracted.")


def archive_key(path: Path) -> str:
    """Cache key of an archive: its absolute path, size and modification time."""
    st = path.stat()
    return hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:20]


def extract(path: str | os.PathLike, cache_dir: str | os.PathLike, report: DataReport, *,
            select: Callable[[PurePosixPath], bool] = lambda p: True,
            limits: ArchiveLimits = ArchiveLimits()) -> Path:
    """Extract the safe, regular, selected members of ``path`` under ``cache_dir``.

    Unsafe names and non-regular members are counted in ``report`` and never written. A
    previous complete extraction of the same archive (same path, size and mtime) is reused.

    Returns
    -------
    Path
        The folder holding the extracted files, at their archive-relative paths.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such archive file.")
    root = Path(cache_dir) / "extracted"
    final = root / archive_key(path)
    with _open(path) as (entries, opener):
        check_limits(path, entries, limits)
        plan: list[Entry] = []
        seen: set[PurePosixPath] = set()
        folders: set[PurePosixPath] = set()
        for entry in entries:
            if entry.is_dir:
                continue
            if entry.path is None:
                report.skip(UNSAFE_PATH, entry.name)
            elif not entry.regular:
                report.skip(NOT_REGULAR, entry.name)
            elif entry.path in seen:
                report.skip(DUPLICATE_ENTRY, entry.name)
            elif any(len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES
                     for part in entry.path.parts):
                report.skip(NAME_TOO_LONG, entry.name[:80] + ("..." if len(entry.name) > 80 else ""))
            elif entry.path in folders or any(parent in seen for parent in entry.path.parents):
                report.skip(CLASHING_ENTRY, entry.name)
            elif select(entry.path):
                seen.add(entry.path)
                folders.update(entry.path.parents)
                plan.append(entry)
        if final.is_dir():
            os.utime(final)  # recently used: the cache evicts least recently used entries first
            return final
        root.mkdir(parents=True, exist_ok=True)
        from ..cache import clean_stale
        clean_stale(cache_dir)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}."))
        try:
            _write_all(plan, opener, tmp, limits, report)
            try:
                os.replace(tmp, final)
            except OSError:  # another process finished the same extraction first
                if not final.is_dir():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    from ..cache import enforce_cap
    enforce_cap(cache_dir, keep=[final, path])
    return final


def _write_all(plan: list[Entry], opener: Callable[[Entry], IO[bytes]], dest: Path,
               limits: ArchiveLimits, report: DataReport) -> None:
    dest_real = dest.resolve()
    written = 0
    touched = time.monotonic()
    for entry in plan:
        assert entry.path is not None
        target = dest.joinpath(*entry.path.parts)
        if time.monotonic() - touched > _TOUCH_EVERY:
            os.utime(dest)  # still being written: not a stale leftover
            touched = time.monotonic()
        try:
            # Defence in depth: safe_path already excluded '..' and absolute names.
            if not target.resolve().is_relative_to(dest_real):
                raise DataError(f"archive entry {entry.name!r} resolves outside the extraction folder.")
            target.parent.mkdir(parents=True, exist_ok=True)
            out = open(target, "wb")
        except OSError:
            # The planning step already skipped clashes and long names; this is what a given
            # disk still refuses (a case-insensitive clash, a reserved name, a full disk).
            report.skip(UNWRITABLE_ENTRY, entry.name)
            continue
        with out:
            try:
                with opener(entry) as src:
                    while chunk := src.read(1024 * 1024):
                        written += len(chunk)
                        if written > limits.max_bytes:
                            raise DataError("archive expands beyond the size limit while "
                                            "extracting; nothing was kept.")
                        out.write(chunk)
            except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, RuntimeError,
                    NotImplementedError, ValueError):
                # A damaged or encrypted member: leave an empty file, which the image check
                # then skips as corrupt, and go on with the rest of the archive.
                out.seek(0)
                out.truncate()
