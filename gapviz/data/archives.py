"""Extracting zip and tar archives without trusting them.

An uploaded archive is untrusted input. The rules, enforced before or while writing:

- **paths**: an entry whose name is absolute (``/etc/x``, ``C:\\x``), or has a ``..`` part, is
  never written; it is reported as skipped ("zip slip"). Every written file is checked to lie
  inside the extraction folder;
- **kinds**: symbolic and hard links, devices and FIFOs are never created; encrypted zip
  entries are skipped as such (not taken for corrupt images);
- **size**: an archive whose entries declare more than ``max_bytes`` in all, or more than
  ``max_ratio`` times the archive's own size (a zip bomb), or more than ``max_entries``
  entries (folders and empty files count), is refused. A zip says all this in its central
  directory, which is counted record by record before it is parsed, so everything is checked
  before anything is written. A compressed tar (gzip, bzip2, xz) is read once, as a stream:
  entries and declared bytes are counted *while* reading, each header is checked before the
  data it announces is read (one header claiming a petabyte stops the read at once), long-name
  and extended headers are capped, and the decompressed bytes are counted too; reaching a
  limit stops the read. A plain tar has its headers checked the same way first, seeking over
  the data, before anything is written. Each written file counts as at least one disk block,
  so a flood of empty entries runs into the limits like real data;
- **names**: entries that clash with an earlier one (``x/b.jpg``, then a file ``x``, or the
  reverse) and names a file system cannot hold (a part over 255 bytes) are skipped and
  reported; any other name the disk refuses is skipped the same way. A full or read-only
  disk fails the whole extraction with what to do; never a traceback;
- **atomic**: extraction goes to a temporary folder that is renamed into place when complete,
  with a manifest (the entries skipped, to report again when the extraction is reused) that
  marks it finished; a refused or failed extraction (a limit reached, a full disk) removes
  everything it wrote, and a folder without its manifest is never taken as finished. The
  temporary folder's time stamp is refreshed while it is being written, so one left behind by
  a killed process is recognisably stale and removed by the next extraction (see
  :func:`gapviz.cache.clean_stale`).

Layout: ``<cache>/extracted/<key>/files/`` holds the entries, ``<key>/manifest.json`` the
manifest; :func:`extract` returns the ``files`` folder.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import struct
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from .defaults import (ARCHIVE_ENTRY_BYTES, MAX_ARCHIVE_BYTES, MAX_ARCHIVE_ENTRIES_ENV,
                       MAX_ARCHIVE_RATIO, archive_entries_limit, cache_area)
from .pairs import MAX_EXAMPLES, DataError, DataReport

UNSAFE_PATH = "unsafe path in archive (absolute or '..'; not extracted)"
NOT_REGULAR = "link or special file in archive (not extracted)"
DUPLICATE_ENTRY = "duplicate entry in archive (first kept)"
CLASHING_ENTRY = "archive entry clashes with an earlier one (a file and a folder of the same name; first kept)"
NAME_TOO_LONG = "archive entry name too long for the file system (a part over 255 bytes; not extracted)"
UNWRITABLE_ENTRY = "archive entry could not be written here (not extracted)"
ENCRYPTED_ENTRY = ("encrypted archive entry (password-protected; not extracted): make the zip "
                   "again without a password")

#: Archives expanding to less than this are never refused for their ratio (a small zip of
#: captions legitimately compresses well; a zip of images expands about 1x).
RATIO_FLOOR_BYTES = 32 * 1024**2
#: Longest file-name part, in bytes (ext4, APFS, NTFS: 255).
MAX_NAME_BYTES = 255
#: Largest tar long-name or extended (pax) header; tarfile reads one whole into memory before
#: the entry it describes. Real ones hold a name and a few attributes (well under 1 KiB).
MAX_TAR_HEADER_BYTES = 64 * 1024
#: Seconds between refreshes of the temporary folder's time stamp while extracting.
_TOUCH_EVERY = 10.0
#: Bytes copied per read.
_CHUNK = 1024 * 1024
#: Inside an extraction's folder: the entries, and the manifest that marks it finished.
_FILES = "files"
_MANIFEST = "manifest.json"
_MANIFEST_FORMAT = 1
#: Write errors that fail the whole extraction (the disk, not one entry's name, is at fault).
_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EMFILE, errno.ENFILE}
#: What reading a damaged, truncated or unsupported member can raise.
_READ_ERRORS = (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, RuntimeError,
                NotImplementedError, ValueError, zlib.error, lzma.LZMAError)


@dataclass(frozen=True)
class ArchiveLimits:
    """Limits of one archive (see the module docstring).

    ``max_entries`` None reads ``$GAPVIZ_MAX_ARCHIVE_ENTRIES`` (default
    :data:`~gapviz.data.defaults.MAX_ARCHIVE_ENTRIES`) when the limit is used. ``entry_bytes``
    is what each written file counts as at least.
    """

    max_bytes: int = MAX_ARCHIVE_BYTES
    max_ratio: float = MAX_ARCHIVE_RATIO
    ratio_floor_bytes: int = RATIO_FLOOR_BYTES
    max_entries: int | None = None
    entry_bytes: int = ARCHIVE_ENTRY_BYTES

    def entries(self) -> int:
        """The entry limit in force."""
        return archive_entries_limit() if self.max_entries is None else int(self.max_entries)

    def byte_bound(self, archive_size: int) -> int:
        """Most bytes an archive of ``archive_size`` bytes may expand to: ``max_bytes``, and
        ``max_ratio`` times its size once past ``ratio_floor_bytes``."""
        by_ratio = max(self.ratio_floor_bytes, int(self.max_ratio * max(archive_size, 1)))
        return min(self.max_bytes, by_ratio)


@dataclass(frozen=True)
class Entry:
    """One archive member: its name as stored, its safe relative path (None if unsafe)."""

    name: str
    path: PurePosixPath | None
    size: int
    regular: bool
    is_dir: bool
    encrypted: bool = False


def safe_parts(name: str) -> list[str] | None:
    """The parts of ``name`` as a relative path that stays inside its folder, or None.

    Backslashes count as separators (zips made on Windows); ``.`` parts are dropped; absolute
    names, drive letters and any ``..`` part make the name unsafe.
    """
    name = name.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return parts


def safe_path(name: str) -> PurePosixPath | None:
    """``name`` as a relative path that stays inside the extraction folder, or None (see
    :func:`safe_parts`)."""
    parts = safe_parts(name)
    return None if parts is None else PurePosixPath(*parts)


def is_archive(path: str | os.PathLike) -> bool:
    name = str(path).lower()
    return name.endswith((".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"))


# ----------------------------------------------------------------------------------- limits

def _too_many(path: Path, limit: int) -> DataError:
    return DataError(f"{path}: more than {limit:,} entries (files and folders, empty ones "
                     "included), more than gapviz accepts in one archive; split it into smaller "
                     f"archives (running gapviz yourself, ${MAX_ARCHIVE_ENTRIES_ENV} raises the "
                     "limit). Nothing was extracted.")


def _too_big(path: Path, total: int, limits: ArchiveLimits, *, partial: bool) -> DataError:
    size = max(path.stat().st_size, 1)
    least = "at least " if partial else ""
    if total > limits.max_bytes:
        return DataError(f"{path}: would expand to {least}{total / 1024**3:.1f} GiB, more than "
                         f"the {limits.max_bytes / 1024**3:.1f} GiB limit; upload a smaller "
                         "sample. Nothing was extracted.")
    return DataError(
        f"{path}: would expand {least}{total / size:.0f}x (from {size / 1024**2:.1f} MiB to "
        f"{total / 1024**2:.0f} MiB), more than {limits.max_ratio:.0f}x: this looks like a zip "
        "bomb (or a flood of empty files), not images. Nothing was extracted.")


def check_limits(path: Path, entries: list[Entry], limits: ArchiveLimits) -> None:
    """Raise :class:`DataError` if ``entries`` would expand beyond ``limits`` (see module doc)."""
    if len(entries) > limits.entries():
        raise _too_many(path, limits.entries())
    total = sum(e.size + limits.entry_bytes for e in entries if e.regular)
    if total > limits.byte_bound(path.stat().st_size):
        raise _too_big(path, total, limits, partial=False)


# ------------------------------------------------------------------------------ reading

#: An entry and a function opening it for reading (for a tar, valid until the next entry).
_Member = tuple[Entry, Callable[[], IO[bytes]]]


def _zip_entry_count(path: Path, stop: int) -> int:
    """Records in a zip's central directory, counted without parsing them (at most ``stop`` + 1).

    :class:`zipfile.ZipFile` builds an object per record before anything can be checked: two
    million records cost gigabytes and a minute. This walks the same records (the same way,
    by the directory's declared size) reading only their lengths. Returns 0 when the
    directory cannot be found; ``zipfile`` then says what is wrong.
    """
    try:
        with open(path, "rb") as f:
            end = zipfile._EndRecData(f)  # the end record, zip64 resolved; stable since Python 2
            if not end:
                return 0
            # The directory ends where the end record (and a zip64 one) starts, as zipfile finds
            # it: data prepended to the zip (a self-extractor) does not move it.
            size_cd = end[zipfile._ECD_SIZE]
            start = end[zipfile._ECD_LOCATION] - size_cd
            if end[zipfile._ECD_SIGNATURE] == zipfile.stringEndArchive64:
                start -= zipfile.sizeEndCentDir64 + zipfile.sizeEndCentDir64Locator
            f.seek(max(0, start))
            count = pos = at = 0
            buf = bytearray()
            while pos < size_cd and count <= stop:
                while len(buf) - at < 46:  # a record's fixed part
                    chunk = f.read(_CHUNK)
                    if not chunk:
                        return count
                    del buf[:at]
                    at = 0
                    buf += chunk
                if buf[at:at + 4] != b"PK\x01\x02":
                    return count
                name, extra, comment = struct.unpack_from("<3H", buf, at + 28)
                record = 46 + name + extra + comment
                count += 1
                pos += record
                at += record
                if at > len(buf):  # past what is buffered: skip ahead in the file
                    f.seek(at - len(buf), os.SEEK_CUR)
                    buf.clear()
                    at = 0
            return count
    except (OSError, struct.error, AttributeError, TypeError, IndexError):
        return 0


def _zip_members(path: Path, limits: ArchiveLimits) -> Iterator[_Member]:
    """The entries of a zip, after every limit was checked on its central directory."""
    if _zip_entry_count(path, limits.entries()) > limits.entries():
        raise _too_many(path, limits.entries())
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as err:
        raise DataError(f"{path}: not a readable zip archive ({err}).") from None
    with zf:
        members = []
        for info in zf.infolist():
            mode = (info.external_attr >> 16) & 0o170000
            # Unix zips store the file type in the high bits; 0 means "not recorded".
            regular = not info.is_dir() and mode in (0, 0o100000)
            members.append((Entry(info.filename, safe_path(info.filename), info.file_size, regular,
                                  info.is_dir(), bool(info.flag_bits & 0x1)), info))
        check_limits(path, [entry for entry, _ in members], limits)
        for entry, info in members:
            yield entry, lambda info=info: zf.open(info)


class _Refused(Exception):
    """A tar stream stopped by a limit while tarfile was reading it (message for the user)."""


class _BoundedTarInfo(tarfile.TarInfo):
    """A tar header whose long-name and extended (pax) headers are size-checked before tarfile
    reads them whole into memory (``_proc_member`` is tarfile's hook for subclasses)."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> Any:
        if (self.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
                          tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
                and not 0 <= self.size <= MAX_TAR_HEADER_BYTES):
            raise _Refused(f"a tar header of {self.size:,} bytes (real ones are under 1 KiB; at "
                           f"most {MAX_TAR_HEADER_BYTES:,} are read): the archive is damaged or "
                           "hostile; create it again. Nothing was extracted.")
        return super()._proc_member(tarfile_)


class _CountingReader:
    """A read-only stream that counts the bytes read through it and stops past ``cap``."""

    def __init__(self, stream: Any, cap: int) -> None:
        self.stream, self.cap, self.count = stream, cap, 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = _CHUNK
        data = self.stream.read(size)
        self.count += len(data)
        if self.count > self.cap:
            raise _Refused(f"the archive's data runs past the {self.cap / 1024**2:,.0f} MiB its "
                           "size limits allow: it is damaged or hostile. Nothing was extracted.")
        return data


def _decompressed(raw: IO[bytes]) -> Any:
    """``raw`` decompressed as it is read, by its first bytes (gzip, bzip2, xz, or none)."""
    head = raw.read(6)
    raw.seek(0)
    if head[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if head[:3] == b"BZh":
        return bz2.BZ2File(raw)
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw)
    return raw


def _open_tar(path: Path, fileobj: Any, mode: str) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=fileobj, mode=mode, tarinfo=_BoundedTarInfo)
    except _Refused as err:
        raise DataError(f"{path}: {err}") from None
    except (*_READ_ERRORS, RecursionError) as err:
        raise DataError(f"{path}: not a readable zip or tar archive ({err}).") from None


def _tar_headers(tf: tarfile.TarFile, path: Path, limits: ArchiveLimits) -> Iterator[tarfile.TarInfo]:
    """The members of an open tar, each counted against the limits before its data is read."""
    bound = limits.byte_bound(path.stat().st_size)
    max_entries = limits.entries()
    count = total = 0
    while True:
        try:
            member = tf.next()
        except _Refused as err:
            raise DataError(f"{path}: {err}") from None
        except (*_READ_ERRORS, RecursionError) as err:
            raise DataError(f"{path}: damaged tar archive after {count} entries ({err}); "
                            "create it again.") from None
        if member is None:
            return
        count += 1
        if count > max_entries:
            raise _too_many(path, max_entries)
        if member.size < 0:
            raise DataError(f"{path}: damaged tar archive (entry {count} declares a negative "
                            "size); create it again.")
        # Data follows regular members and any unknown type; checked before it is read.
        if member.isreg() or member.type not in tarfile.SUPPORTED_TYPES:
            total += member.size + (limits.entry_bytes if member.isreg() else 0)
            if total > bound:
                raise _too_big(path, total, limits, partial=True)
        yield member
        tf.members.clear()  # nothing here looks back: keep memory flat


def _tar_members(path: Path, limits: ArchiveLimits) -> Iterator[_Member]:
    """The entries of a tar, read once as a stream with every limit counted while reading.

    A plain (uncompressed) tar has its headers checked first, seeking over the data, so a
    flood of entries is refused in seconds before anything is written; a compressed one
    cannot be skipped through without decompressing it, so it is checked as it streams.
    """
    bound = limits.byte_bound(path.stat().st_size)
    with open(path, "rb") as raw:
        stream = _decompressed(raw)
        if stream is raw:
            with _open_tar(path, raw, "r:") as tf:
                for _ in _tar_headers(tf, path, limits):
                    pass
            raw.seek(0)
        # Past the declared bytes, a tar holds headers (512 bytes each, a little more with a
        # long name) and padding: this much more is plenty for an archive within its limits.
        cap = bound + 2048 * (limits.entries() + 1) + 64 * 1024**2
        with _open_tar(path, _CountingReader(stream, cap), "r|") as tf:
            for member in _tar_headers(tf, path, limits):
                yield (Entry(member.name, safe_path(member.name), member.size, member.isreg(),
                             member.isdir()), lambda member=member: tf.extractfile(member))


# ------------------------------------------------------------------------------ extracting

def archive_key(path: Path) -> str:
    """Cache key of an archive: its absolute path, size and modification time."""
    st = path.stat()
    return hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:20]


def extract(path: str | os.PathLike, cache_dir: str | os.PathLike, report: DataReport, *,
            select: Callable[[PurePosixPath], bool] = lambda p: True,
            limits: ArchiveLimits = ArchiveLimits()) -> Path:
    """Extract the safe, regular, selected members of ``path`` under ``cache_dir``.

    Unsafe names and non-regular members are counted in ``report`` and never written. A
    previous finished extraction of the same archive (same path, size and mtime) is reused,
    and what it skipped is reported again.

    Returns
    -------
    Path
        The folder holding the extracted files, at their archive-relative paths.

    Raises
    ------
    DataError
        Not a readable archive, a limit reached (see the module docstring), or the disk full
        or not writable; nothing extracted is then kept.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such archive file.")
    root = cache_area("extracted", cache_dir)
    final = root / archive_key(path)
    manifest = _finished(final)
    if manifest is not None:
        _replay(manifest, report)
        try:
            os.utime(final)  # recently used: the cache evicts least recently used entries first
        except OSError:
            pass
        return final / _FILES
    from ..cache import clean_stale
    try:
        root.mkdir(parents=True, exist_ok=True)
        clean_stale(cache_dir)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}."))
    except OSError as err:
        raise _disk_error(path, root, err) from None
    skipped: list[tuple[str, str]] = []

    def skip(reason: str, name: str) -> None:
        report.skip(reason, name)
        skipped.append((reason, name))

    try:
        try:
            (tmp / _FILES).mkdir()
        except OSError as err:
            raise _disk_error(path, tmp, err) from None
        is_zip = zipfile.is_zipfile(path)
        members = _zip_members(path, limits) if is_zip else _tar_members(path, limits)
        with closing(members):
            _Writer(path, tmp / _FILES, limits, stream=not is_zip).write_all(members, select, skip)
        _write_manifest(path, tmp, skipped)
        if _finished(final) is None:  # else another process finished the same extraction first
            if final.exists():  # left by an older gapviz, or unfinished: never reused as it is
                shutil.rmtree(final, ignore_errors=True)
            try:
                os.replace(tmp, final)
            except OSError as err:
                if _finished(final) is None:
                    raise DataError(f"{path}: could not move the extraction into place in {root} "
                                    f"({err.strerror or err}); nothing was kept.") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    from ..cache import enforce_cap
    enforce_cap(cache_dir, keep=[final, path])
    return final / _FILES


def _finished(final: Path) -> dict | None:
    """The manifest of a finished extraction at ``final``, or None."""
    try:
        manifest = json.loads((final / _MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (isinstance(manifest, dict) and manifest.get("format") == _MANIFEST_FORMAT
            and (final / _FILES).is_dir()):
        return None
    return manifest


def _write_manifest(path: Path, folder: Path, skipped: list[tuple[str, str]]) -> None:
    """Record what was skipped (the reasons, and the names the report shows) in ``folder``."""
    reasons = list(dict.fromkeys(reason for reason, _ in skipped))
    shown: dict[str, int] = {}
    rows = []
    for reason, name in skipped:
        shown[reason] = shown.get(reason, 0) + 1
        rows.append([reasons.index(reason), name if shown[reason] <= MAX_EXAMPLES else ""])
    try:
        (folder / _MANIFEST).write_text(json.dumps({"format": _MANIFEST_FORMAT, "archive": str(path),
                                                    "reasons": reasons, "skipped": rows}),
                                        encoding="utf-8")
    except OSError as err:
        raise _disk_error(path, folder.parent, err) from None


def _replay(manifest: dict, report: DataReport) -> None:
    """Report again what a reused extraction skipped."""
    reasons = manifest.get("reasons") or []
    for index, name in manifest.get("skipped") or []:
        report.skip(str(reasons[index]), str(name))


def _disk_error(path: Path, where: Path, err: OSError) -> DataError:
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return DataError(f"{path}: the disk is full ({err.strerror or err}) while extracting into "
                         f"{where}; nothing was kept. Free some space, lower $GAPVIZ_CACHE_MAX_GB, "
                         "or set $GAPVIZ_CACHE_DIR to a larger disk.")
    return DataError(f"{path}: cannot write the extraction into {where} ({err.strerror or err}); "
                     "nothing was kept. Make the cache folder writable, or set $GAPVIZ_CACHE_DIR "
                     "to another one.")


class _Writer:
    """Writes the members of one archive under ``dest``, counting bytes against the limits."""

    def __init__(self, path: Path, dest: Path, limits: ArchiveLimits, *, stream: bool) -> None:
        self.path, self.dest, self.limits = path, dest, limits
        # A tar stream cannot be read past a damaged member: that fails the whole archive.
        self.stream = stream
        self.dest_real = dest.resolve()
        self.bound = limits.byte_bound(path.stat().st_size)
        self.written = 0
        self.touched = time.monotonic()
        self.seen: set[PurePosixPath] = set()
        self.folders: set[PurePosixPath] = set()

    def write_all(self, members: Iterator[_Member], select: Callable[[PurePosixPath], bool],
                  skip: Callable[[str, str], None]) -> None:
        for entry, opener in members:
            if self._wanted(entry, select, skip):
                self._write(entry, opener, skip)

    def _wanted(self, entry: Entry, select: Callable[[PurePosixPath], bool],
                skip: Callable[[str, str], None]) -> bool:
        if entry.is_dir:
            return False
        if entry.path is None:
            skip(UNSAFE_PATH, entry.name)
        elif not entry.regular:
            skip(NOT_REGULAR, entry.name)
        elif entry.path in self.seen:
            skip(DUPLICATE_ENTRY, entry.name)
        elif any(len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES
                 for part in entry.path.parts):
            skip(NAME_TOO_LONG, entry.name[:80] + ("..." if len(entry.name) > 80 else ""))
        elif entry.path in self.folders or any(parent in self.seen for parent in entry.path.parents):
            skip(CLASHING_ENTRY, entry.name)
        elif select(entry.path):
            if entry.encrypted:
                skip(ENCRYPTED_ENTRY, entry.name)
                return False
            self.seen.add(entry.path)
            self.folders.update(entry.path.parents)
            return True
        return False

    def _count(self, nbytes: int) -> None:
        self.written += nbytes
        if self.written > self.bound:
            raise _too_big(self.path, self.written, self.limits, partial=True)

    def _write(self, entry: Entry, opener: Callable[[], IO[bytes]],
               skip: Callable[[str, str], None]) -> None:
        assert entry.path is not None
        target = self.dest.joinpath(*entry.path.parts)
        if time.monotonic() - self.touched > _TOUCH_EVERY:
            os.utime(self.dest.parent)  # still being written: not a stale leftover
            self.touched = time.monotonic()
        try:
            # Defence in depth: safe_path already excluded '..' and absolute names.
            if not target.resolve().is_relative_to(self.dest_real):
                raise DataError(f"archive entry {entry.name!r} resolves outside the extraction folder.")
            target.parent.mkdir(parents=True, exist_ok=True)
            out = open(target, "wb")
        except OSError as err:
            if err.errno in _DISK_ERRORS:
                raise _disk_error(self.path, self.dest.parent, err) from None
            # The planning step already skipped clashes and long names; this is what a given
            # disk still refuses (a case-insensitive clash, a reserved name).
            skip(UNWRITABLE_ENTRY, entry.name)
            return
        self._count(self.limits.entry_bytes)
        try:
            with out:
                self._copy(entry, opener, out)
        except OSError as err:  # reading errors are handled inside: this is writing or closing
            raise _disk_error(self.path, self.dest.parent, err) from None

    def _copy(self, entry: Entry, opener: Callable[[], IO[bytes]], out: IO[bytes]) -> None:
        try:
            src = opener()
        except _READ_ERRORS as err:
            self._damaged(entry, out, err)
            return
        with src:
            while True:
                try:
                    chunk = src.read(_CHUNK)
                except _Refused as err:
                    raise DataError(f"{self.path}: {err}") from None
                except _READ_ERRORS as err:
                    self._damaged(entry, out, err)
                    return
                if not chunk:
                    return
                self._count(len(chunk))
                out.write(chunk)

    def _damaged(self, entry: Entry, out: IO[bytes], err: BaseException) -> None:
        if self.stream:
            raise DataError(f"{self.path}: damaged tar archive at {entry.name!r} ({err}); create it "
                            "again.") from None
        # A damaged zip member: leave an empty file, which the image check then skips as
        # corrupt, and go on with the rest of the archive.
        out.seek(0)
        out.truncate()
