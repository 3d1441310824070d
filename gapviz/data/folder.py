"""Uploaded pairs: a folder or a ``.zip`` of images, with captions in one of two layouts.

Layouts (looked for in this order):

1. a captions file at the top (of the folder, or of the folder a zip was made of): ``captions.csv``,
   ``captions.tsv`` or ``captions.jsonl``, with a column ``image`` (or ``file_name``) giving
   each image's path relative to the file, a column ``caption``, and optionally ``id``;
2. a ``.txt`` beside each image, same name (``dog.jpg`` + ``dog.txt``): its first line is
   the caption.

Ids are the image paths relative to the folder (or the ``id`` column). A zip is extracted
safely into the cache first (see :mod:`gapviz.data.archives`), then read as a folder.
Anything that cannot be paired is counted in the report, never silently dropped.

A captions file is read as a stream, one line at a time, within a size and a row limit
(:func:`~gapviz.data.defaults.captions_limits`); its rows are matched against the files that
are there, so rows naming absent images cost a count each, not a file check. Names are
compared in Unicode NFC on both sides (macOS stores ``é`` decomposed, captions files hold
it composed). Only regular files are read: a named pipe, socket or device is skipped with
its reason instead of blocking the load.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import random
import stat
import tempfile
import unicodedata
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from .. import hosting
from ..safety import JSONInputError, loads_json
from .archives import ArchiveLimits, extract, is_archive, safe_parts, safe_path
from .defaults import (CAPTION_CHOICES, CAPTION_COLUMNS, CAPTION_FILES, ID_COLUMNS, IMAGE_COLUMNS,
                       IMAGE_EXTENSIONS, MAX_CAPTION_LINE, MAX_CAPTION_ROWS_ENV, MAX_CAPTIONS_ENV,
                       MAX_IMAGE_PIXELS, UNSUPPORTED_IMAGE_EXTENSIONS, VALIDATE_WORKERS,
                       cache_area, cache_root, captions_limits)
from .download import safe_file_name
from .images import NOT_REGULAR_FILE
from .pairs import (NO_IMAGE, Candidate, DataError, DataReport, Pair, Progress, all_captions,
                    collect_pairs, first_line)

UNREADABLE_ROW = "unreadable row in captions file"
UNCLOSED_QUOTE = ("captions-file row whose quote is never closed (it ran over the lines after "
                  "it, which are read on their own)")
EXTRA_FIELDS = ("captions-file row with more fields than the header (an unquoted comma? put "
                "the caption in double quotes)")
NOT_TEXT_VALUE = "captions-file row with a list or object where text belongs"
ROW_WITHOUT_IMAGE = "captions-file row without an image name"
UNSAFE_IMAGE_PATH = "image path leaves the upload folder (absolute or '..')"
LONG_LINE = f"captions-file line over {MAX_CAPTION_LINE // 1024**2} MiB (not read)"

_IMAGE_LIKE = IMAGE_EXTENSIONS + UNSUPPORTED_IMAGE_EXTENSIONS
_SKIP_DIRS = ("__MACOSX",)


def load_folder(source: str | os.PathLike, *, captions: str | os.PathLike | None = None,
                n: int | None = None, seed: int = 0, cache_dir: str | os.PathLike | None = None,
                max_pixels: int = MAX_IMAGE_PIXELS, workers: int = VALIDATE_WORKERS,
                limits: ArchiveLimits = ArchiveLimits(), caption_choice: str = "first",
                progress: Progress | None = None) -> tuple[list[Pair], DataReport]:
    """Pairs from a folder or a zip of images with captions (layouts in the module docstring).

    Parameters
    ----------
    source : path
        A folder, or a ``.zip`` (or ``.tar``) archive of one.
    captions : path, optional
        A captions file to use instead of looking for one (image paths relative to it).
    n, seed : int, optional
        Keep a seeded random sample of ``n`` pairs (default: all).
    cache_dir : path, optional
        Cache root for extracted archives (default: :func:`~gapviz.data.defaults.cache_root`).
    max_pixels : int
        Larger images are skipped as possible decompression bombs.
    caption_choice : {"first", "random", "all"}
        When a captions file has several rows for one image (Flickr30k-style): the first
        row's caption, one drawn with ``seed`` (per image), or all of them (one pair per
        caption, grouped by the image; ``n`` then counts images).

    Returns
    -------
    pairs : list of Pair
    report : DataReport
        Counts of what was skipped and why.
    """
    source = Path(source).expanduser()
    report = DataReport()
    if source.is_file() and is_archive(source):
        root = _content_root(extract(source, cache_root(cache_dir), report, limits=limits))
        kind = {"kind": "zip" if source.suffix.lower() == ".zip" else "archive",
                "archive": str(source)}
    elif source.is_dir():
        root, kind = source, {"kind": "folder", "root": str(source)}
    elif source.exists():
        raise DataError(f"{source}: not a folder or a .zip archive. Give a folder of images with "
                        "captions, or a .zip of one.")
    else:
        raise DataError(f"{source}: no such file or folder.")
    files = _list_files(root, report)
    caption_file = (Path(captions).expanduser() if captions is not None
                    else _find_caption_file(root, files))
    if caption_choice not in CAPTION_CHOICES:
        raise DataError(f"caption_choice must be one of {CAPTION_CHOICES}, got {caption_choice!r}.")
    several: dict[str, list[str]] = {}
    if caption_file is not None:
        candidates = _from_caption_file(caption_file, root, files, kind, report)
        report.notes.append(f"captions from {caption_file.name}")
        candidates, several = _one_per_image(candidates, caption_choice, seed)
        if several:
            report.notes.append(
                f"{len(several)} images have several captions; "
                + {"first": "the first row of each kept",
                   "random": f"one per image drawn at random (seed {seed})",
                   "all": "all kept, one pair each, grouped by image (any caption counts as "
                          "the image's match)"}[caption_choice])
    else:
        candidates = _from_sidecar_txt(root, files, kind, report)
        report.notes.append("captions from the first line of the .txt beside each image")
    pairs = collect_pairs(candidates, report, n=n, seed=seed, max_pixels=max_pixels,
                          workers=workers, progress=progress)
    if caption_choice == "all" and several:
        pairs = all_captions(pairs, several)
    return pairs, report


def _one_per_image(candidates: list[Candidate], choice: str, seed: int
                   ) -> tuple[list[Candidate], dict[str, list[str]]]:
    """One candidate per image file (rows naming the same image merged, in file order), with
    the caption ``choice`` picks; and each merged candidate's id -> all its captions."""
    by_image: dict[str, Candidate] = {}
    captions: dict[str, list[str]] = {}
    out = []
    for cand in candidates:
        key = cand.image_path
        if key is None or cand.problem is not None:
            out.append(cand)
            continue
        if key not in by_image:
            by_image[key] = cand
            captions[cand.id] = []
            out.append(cand)
        if cand.caption:
            captions[by_image[key].id].append(cand.caption)
    several = {ident: caps for ident, caps in captions.items() if len(caps) > 1}
    if choice == "random":
        for cand in by_image.values():
            caps = several.get(cand.id)
            if caps:
                cand.caption = random.Random(f"{seed}:{cand.id}").choice(caps)
    return out, several


def save_upload(files: Sequence[tuple[str, bytes]], cache_dir: str | os.PathLike | None = None) -> Path:
    """Store uploaded files (``(name, bytes)``, as a browser upload gives them) for :func:`load_folder`.

    One archive is stored as that file; several files (images plus captions) go to a folder.
    Several files among which an archive are refused (what would one do with a zip among
    images?), with a message that says to upload one archive at a time.
    The place is named by a hash of the content, so uploading the same files again reuses
    the earlier copy (and its extraction). Names are reduced to safe relative paths; a name
    that is not safe keeps only its last part.

    Returns
    -------
    Path
        What to pass to :func:`load_folder`.
    """
    if not files:
        raise DataError("nothing was uploaded; add a .zip, or images with their captions.")
    if hosting.hosted():
        limit = hosting.limits().max_upload_bytes
        total = sum(len(data) for _, data in files)
        if total > limit:
            raise DataError(f"the upload is {total / 1024**2:.3g} MiB, more than the "
                            f"{limit / 1024**2:.3g} MiB this demo accepts; upload a smaller sample.")
    digest = hashlib.sha1()
    for name, data in files:
        digest.update(name.encode("utf-8", "surrogatepass") + b"\0" + hashlib.sha1(data).digest())
    root = cache_area("uploads", cache_dir) / digest.hexdigest()[:20]
    archives = [name for name, _ in files if is_archive(name)]
    if archives and len(files) > 1:
        raise DataError(
            f"{len(files)} files uploaded together, {len(archives)} of them archives "
            f"({', '.join(archives[:3])}{', ...' if len(archives) > 3 else ''}): upload one "
            "archive at a time (put all pairs in one .zip), or images with their captions "
            "file and no archive.")
    if len(files) == 1 and is_archive(files[0][0]):
        target = root / safe_file_name(files[0][0], "upload.zip")
        _write_once(target, files[0][1])
        _keep_cache_small(cache_dir, target)
        return target
    seen_dirs: set[PurePosixPath] = set()
    written: set[PurePosixPath] = set()
    for name, data in files:
        rel = safe_path(name) or PurePosixPath(safe_file_name(name, "file"))
        if any(len(p.encode("utf-8", "surrogateescape")) > 255 for p in rel.parts):
            rel = PurePosixPath(safe_file_name(rel.name, "file"))
        if rel in seen_dirs or any(parent in written for parent in rel.parents):
            continue  # a file and a folder of the same name: the first one is kept
        written.add(rel)
        seen_dirs.update(rel.parents)
        _write_once(root.joinpath(*rel.parts), data)
    _keep_cache_small(cache_dir, root)
    return root


def _keep_cache_small(cache_dir: str | os.PathLike | None, in_use: Path) -> None:
    from ..cache import enforce_cap

    enforce_cap(cache_dir, keep=[in_use])


def _write_once(target: Path, data: bytes) -> None:
    """Write ``target`` atomically unless it is already there (same content by construction)."""
    if target.is_file():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, target)


def _content_root(root: Path) -> Path:
    """The folder a zip was made of: zipping ``photos/`` stores every entry under ``photos/``,
    and the pairs' ids should not depend on whether the folder or its zip was uploaded."""
    while True:
        entries = [e for e in root.iterdir() if not e.name.startswith(".") and e.name not in _SKIP_DIRS]
        if len(entries) != 1 or not entries[0].is_dir():
            return root
        root = entries[0]


def _nfc(name: str) -> str:
    """``name`` in Unicode NFC: how names are compared (macOS file systems store NFD)."""
    return unicodedata.normalize("NFC", name)


def _list_files(root: Path, report: DataReport) -> list[PurePosixPath]:
    """Relative paths of the visible files under ``root``, sorted (hidden and macOS metadata
    files are not user data).

    Files that are not regular (named pipes, sockets, devices, broken links) would block or
    fail a reader: those with an image or caption name stay listed, so the reader skips them
    with :data:`~gapviz.data.images.NOT_REGULAR_FILE` where the pair is counted; the others
    are reported here.
    """
    found = []
    stack = [(root, PurePosixPath())]
    while stack:
        folder, rel = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir, is_file = entry.is_dir(), entry.is_file()
            except OSError:
                is_dir = is_file = False
            if is_dir:
                if entry.name not in _SKIP_DIRS and not entry.is_symlink():
                    stack.append((Path(entry.path), rel / entry.name))
                continue
            path = rel / entry.name
            if is_file or path.suffix.lower() in _IMAGE_LIKE + (".txt",) or (
                    len(path.parts) == 1 and path.name.lower() in CAPTION_FILES):
                found.append(path)
            else:
                report.skip(NOT_REGULAR_FILE, path.as_posix())
    return sorted(found)


def _find_caption_file(root: Path, files: list[PurePosixPath]) -> Path | None:
    """The captions file at the top of the upload, if there is one."""
    found = [f for f in files if len(f.parts) == 1 and f.name.lower() in CAPTION_FILES]
    if not found:
        return None
    found.sort(key=lambda f: CAPTION_FILES.index(f.name.lower()))
    return root.joinpath(*found[0].parts)


def _from_caption_file(caption_file: Path, root: Path, files: list[PurePosixPath], kind: dict,
                       report: DataReport) -> list[Candidate]:
    """Candidates from the rows of ``caption_file`` whose image is there, then one per image
    no row names. A row naming an absent image is counted at once (it costs no candidate)."""
    base = caption_file.parent
    try:
        prefix = base.relative_to(root).as_posix()
        prefix = "" if prefix == "." else prefix + "/"
    except ValueError:  # a captions file outside the folder, given explicitly
        prefix = None
    # Plain strings here, not paths: 200,000 rows are matched in about a second.
    present = {_nfc(rel.as_posix()): rel for rel in files}
    candidates = []
    referenced: set[PurePosixPath] = set()
    for number, row in iter_caption_rows(caption_file, report):
        name = f"{caption_file.name} row {number}"
        image = (row.get("image") or "").strip()
        parts = safe_parts(image) if image else None
        if parts is None:
            # Counted like every other skip, when the sample reaches the row.
            problem = UNSAFE_IMAGE_PATH if image else ROW_WITHOUT_IMAGE
            candidates.append(Candidate(f"row {number}", row.get("caption"), f"{name}: {image}",
                                        problem=problem))
            continue
        found = present.get(_nfc(prefix + "/".join(parts))) if prefix is not None else None
        if found is not None:
            referenced.add(found)
            path = root.joinpath(*found.parts)
        elif prefix is not None and not any(p.startswith(".") or p in _SKIP_DIRS for p in parts):
            # Not among the files there (nor hidden, which the listing leaves out): absent.
            report.skip(NO_IMAGE, f"{image} ({name})")
            continue
        else:
            path = base.joinpath(*parts)
        ident = (row.get("id") or "").strip() or _relative_id(path, root)
        candidates.append(Candidate(ident, row.get("caption") or "", f"{image} ({name})",
                                    image_path=str(path),
                                    source={**kind, "file": _relative_id(path, root), "row": number}))
    for rel in files:
        if rel.suffix.lower() in _IMAGE_LIKE and rel not in referenced:
            ident = _nfc(rel.as_posix())
            candidates.append(Candidate(ident, None, rel.as_posix(),
                                        image_path=str(root.joinpath(*rel.parts)),
                                        source={**kind, "file": ident}))
    return candidates


def read_caption_rows(path: Path, report: DataReport) -> list[tuple[int, dict[str, str]]]:
    """All rows of a captions file; see :func:`iter_caption_rows`."""
    return list(iter_caption_rows(path, report))


def iter_caption_rows(path: Path, report: DataReport) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a ``.csv`` / ``.tsv`` / ``.jsonl`` captions file as ``(row number, row)``, read
    one line at a time.

    Each row has the keys ``image``, ``caption`` and ``id`` (when present), whatever the
    file calls them (see :data:`~gapviz.data.defaults.IMAGE_COLUMNS`). Rows are numbered from 1
    after the header (``.jsonl``: by line). Unreadable rows (invalid or too deeply nested JSON,
    a JSON line that is not an object, a list or object where text belongs, a CSV field over
    the size limit, a line over :data:`~gapviz.data.defaults.MAX_CAPTION_LINE` characters) are
    skipped and counted in ``report``; the other rows are kept.

    Raises
    ------
    DataError
        Not a regular file, an unsupported type, no image and caption columns, or over the
        size or row limit (:func:`~gapviz.data.defaults.captions_limits`; the row limit when
        reading reaches it).
    """
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".jsonl"):
        raise DataError(f"{path}: unsupported captions file type '{suffix}'; use .csv, .tsv or "
                        ".jsonl with columns 'image' and 'caption'.")
    max_bytes, max_rows = captions_limits()
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such captions file.") from None
    except OSError as err:
        raise DataError(f"{path}: the captions file cannot be read ({err.strerror or err}).") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path}: not a regular file (a named pipe, socket or device); put the "
                        "captions file itself there.")
    if st.st_size > max_bytes:
        raise DataError(f"{path}: {st.st_size / 1024**2:,.1f} MiB, more than the "
                        f"{max_bytes / 1024**2:.3g} MiB a captions file may have; split the data "
                        f"into smaller uploads (running gapviz yourself, ${MAX_CAPTIONS_ENV} raises "
                        "the limit).")
    with open(path, "rb") as raw:
        lines = _numbered_lines(raw)
        rows = (_json_rows(path, lines, report, max_rows) if suffix == ".jsonl"
                else _delimited_rows(path, lines, report, max_rows))
        for number, fields in rows:
            if any(isinstance(v, (dict, list)) for v in fields.values()):
                report.skip(NOT_TEXT_VALUE, f"{path.name} row {number}")
                continue
            yield number, {k: "" if v is None else str(v) for k, v in fields.items()}


def _numbered_lines(raw: BinaryIO) -> Iterator[tuple[int, str | None]]:
    """``(line number, line without its end)`` from 1; the line is None when it is longer than
    :data:`~gapviz.data.defaults.MAX_CAPTION_LINE` characters (it is skipped, not held).

    Lines end at ``\n``, ``\r\n`` or ``\r``; invalid UTF-8 survives as surrogates (as
    :func:`~gapviz.data.pairs.decode_text` does), so only those rows are skipped later.
    """
    text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline=None)
    number = 0
    while line := text.readline(MAX_CAPTION_LINE + 1):
        number += 1
        if len(line) > MAX_CAPTION_LINE and not line.endswith("\n"):
            while line and not line.endswith("\n"):  # the rest of the line, in pieces
                line = text.readline(MAX_CAPTION_LINE)
            yield number, None
        else:
            yield number, line.removesuffix("\n")


def _row_limit(path: Path, max_rows: int) -> DataError:
    return DataError(f"{path}: more than {max_rows:,} rows, more than gapviz reads from one "
                     "captions file; split the data into smaller uploads (running gapviz "
                     f"yourself, ${MAX_CAPTION_ROWS_ENV} raises the limit).")


def _pick(columns: dict[str, Any], names: Sequence[str]) -> Any:
    return next((columns[c] for c in names if c in columns), None)


def _json_rows(path: Path, lines: Iterator[tuple[int, str | None]], report: DataReport,
               max_rows: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a ``.jsonl`` captions file, each line an object with its own keys."""
    rows = 0
    keys: dict[str, None] = {}
    usable = False
    for number, line in lines:
        if line is not None and not line.strip():
            continue
        rows += 1
        if rows > max_rows:
            raise _row_limit(path, max_rows)
        try:
            record = loads_json(line) if line is not None else None
        except JSONInputError:
            record = None
        if not isinstance(record, dict):
            report.skip(UNREADABLE_ROW if line is not None else LONG_LINE, f"{path.name} line {number}")
            continue
        columns = {str(k).strip().lower(): k for k in record}
        if len(keys) < 20:
            keys.update(dict.fromkeys(map(str, record)))
        image_key, caption_key = _pick(columns, IMAGE_COLUMNS), _pick(columns, CAPTION_COLUMNS)
        id_key = _pick(columns, ID_COLUMNS)
        usable = usable or (image_key is not None and caption_key is not None)
        yield number, {"image": record.get(image_key), "caption": record.get(caption_key),
                       "id": record.get(id_key) if id_key is not None else ""}
    if not usable:
        raise _no_columns(path, sorted(keys)[:20])


def _no_columns(path: Path, header: list[str]) -> DataError:
    return DataError(
        f"{path}: found columns {header[:20]}; a captions file needs a column "
        f"{' or '.join(repr(c) for c in IMAGE_COLUMNS[:2])} (the image file, relative to the "
        f"captions file) and a column 'caption'.")


def _delimited_rows(path: Path, lines: Iterator[tuple[int, str | None]], report: DataReport,
                    max_rows: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a ``.csv`` / ``.tsv`` captions file, each line parsed on its own.

    A captions file holds one row per line, so a quoted field that runs past the end of its
    line is a quote left open: that row is skipped (:data:`UNCLOSED_QUOTE`) and the lines
    after it are read as their own rows, so they are neither lost nor silently merged. A row
    with more fields than the header keeps them in its caption when the caption is the last
    column (a comma in an unquoted caption), and is skipped (:data:`EXTRA_FIELDS`) otherwise.
    """
    # TSV captions often hold bare quotes ("a 'so-called' cat"), so TSV is not quoted.
    options: dict[str, Any] = ({"delimiter": "\t", "quoting": csv.QUOTE_NONE}
                               if path.suffix.lower() == ".tsv" else {})
    first = next(lines, (1, ""))[1]
    header = _fields(first, options) if first is not None else UNREADABLE_ROW
    if isinstance(header, str):
        raise DataError(f"{path}: the header line is not readable CSV/TSV; the first line must "
                        "name the columns (image, caption).")
    columns = {key.strip().lower(): key for key in header}
    image_col, caption_col = _pick(columns, IMAGE_COLUMNS), _pick(columns, CAPTION_COLUMNS)
    id_col = _pick(columns, ID_COLUMNS)
    if image_col is None or caption_col is None:
        raise _no_columns(path, header)
    last = _last_caption_column(header)
    rows = records = rejoined = 0
    for number, line in lines:
        if line == "":
            continue
        rows += 1
        if rows > max_rows:
            raise _row_limit(path, max_rows)
        where = f"{path.name} line {number}"
        fields = _fields(line, options) if line is not None else LONG_LINE
        if isinstance(fields, str):
            report.skip(fields, where)
            continue
        if len(fields) > len(header):
            if last is None:
                report.skip(EXTRA_FIELDS, where)
                continue
            fields = [*fields[:last], options.get("delimiter", ",").join(fields[last:])]
            rejoined += 1
        records += 1
        record = dict(zip(header, fields))
        yield records, {"image": record.get(image_col), "caption": record.get(caption_col),
                        "id": record.get(id_col) if id_col else ""}
    if rejoined:
        report.notes.append(f"{path.name}: {rejoined} row(s) had more fields than the header; "
                            "the extra fields were kept in the caption (its last column).")


def _fields(line: str, options: dict[str, Any]) -> list[str] | str:
    """The fields of one line, or the skip reason when it cannot be read as a row."""
    try:
        return next(csv.reader([line], strict=True, **options), [])
    except csv.Error as err:
        message = str(err)
    if "unexpected end of data" in message:  # the line ends inside a quoted field
        return UNCLOSED_QUOTE
    try:  # as lenient as csv's default: 'a "b" c' and the like are read as they come
        return next(csv.reader([line], **options), [])
    except csv.Error:  # e.g. a field over csv's size limit
        return UNREADABLE_ROW


def _last_caption_column(header: list[str]) -> int | None:
    """Index of the caption column when it is the header's last column, else None."""
    names = [h.strip().lower() for h in header]
    return len(names) - 1 if names and names[-1] in CAPTION_COLUMNS else None


def _from_sidecar_txt(root: Path, files: list[PurePosixPath], kind: dict,
                      report: DataReport) -> list[Candidate]:
    texts = {_nfc(f.with_suffix("").as_posix()): f for f in files if f.suffix.lower() == ".txt"}
    images = [f for f in files if f.suffix.lower() in _IMAGE_LIKE]
    if not images:
        raise DataError(f"{root}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)}).")
    if not texts:
        raise DataError(
            f"{root}: no captions found. Add a captions.csv (or .tsv/.jsonl) with columns "
            "'image' and 'caption', or a .txt beside each image (dog.jpg + dog.txt) whose first "
            "line is the caption.")
    candidates = []
    used: set[PurePosixPath] = set()
    for rel in images:
        ident = _nfc(rel.as_posix())
        txt = texts.get(_nfc(rel.with_suffix("").as_posix()))
        caption, problem = None, None
        if txt is not None:
            used.add(txt)
            caption, problem = first_line(root.joinpath(*txt.parts))
        candidates.append(Candidate(ident, caption, rel.as_posix(),
                                    image_path=str(root.joinpath(*rel.parts)),
                                    source={**kind, "file": ident}, problem=problem))
    for txt in sorted(set(texts.values()) - used):
        caption, problem = first_line(root.joinpath(*txt.parts))
        ident = _nfc(txt.with_suffix("").as_posix())
        candidates.append(Candidate(ident, caption if problem is None else "", txt.as_posix(),
                                    source={**kind, "file": _nfc(txt.as_posix())}, problem=problem))
    return candidates


def _relative_id(path: Path, root: Path) -> str:
    try:
        return _nfc(path.relative_to(root).as_posix())
    except ValueError:  # a captions file outside the folder, given explicitly
        return path.as_posix()
