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
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from .. import hosting
from ..safety import JSONInputError, loads_json
from .archives import ArchiveLimits, extract, is_archive, safe_path
from .defaults import (CAPTION_COLUMNS, CAPTION_FILES, ID_COLUMNS, IMAGE_COLUMNS,
                       IMAGE_EXTENSIONS, MAX_IMAGE_PIXELS, UNSUPPORTED_IMAGE_EXTENSIONS,
                       VALIDATE_WORKERS, cache_root)
from .download import safe_file_name
from .pairs import Candidate, DataError, DataReport, Pair, Progress, collect_pairs, decode_text

UNREADABLE_ROW = "unreadable row in captions file"
UNCLOSED_QUOTE = ("captions-file row whose quote is never closed (it ran over the lines after "
                  "it, which are read on their own)")
EXTRA_FIELDS = ("captions-file row with more fields than the header (an unquoted comma? put "
                "the caption in double quotes)")
NOT_TEXT_VALUE = "captions-file row with a list or object where text belongs"
ROW_WITHOUT_IMAGE = "captions-file row without an image name"
UNSAFE_IMAGE_PATH = "image path leaves the upload folder (absolute or '..')"

_IMAGE_LIKE = IMAGE_EXTENSIONS + UNSUPPORTED_IMAGE_EXTENSIONS
_SKIP_DIRS = ("__MACOSX",)


def load_folder(source: str | os.PathLike, *, captions: str | os.PathLike | None = None,
                n: int | None = None, seed: int = 0, cache_dir: str | os.PathLike | None = None,
                max_pixels: int = MAX_IMAGE_PIXELS, workers: int = VALIDATE_WORKERS,
                limits: ArchiveLimits = ArchiveLimits(),
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
    files = _list_files(root)
    caption_file = (Path(captions).expanduser() if captions is not None
                    else _find_caption_file(root, files))
    if caption_file is not None:
        candidates = _from_caption_file(caption_file, root, files, kind, report)
        report.notes.append(f"captions from {caption_file.name}")
    else:
        candidates = _from_sidecar_txt(root, files, kind, report)
        report.notes.append("captions from the first line of the .txt beside each image")
    pairs = collect_pairs(candidates, report, n=n, seed=seed, max_pixels=max_pixels,
                          workers=workers, progress=progress)
    return pairs, report


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
    root = cache_root(cache_dir) / "uploads" / digest.hexdigest()[:20]
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


def _list_files(root: Path) -> list[PurePosixPath]:
    """Relative paths of the visible files under ``root``, sorted (hidden and macOS metadata
    files are not user data)."""
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS)
        rel = Path(folder).relative_to(root)
        found += [PurePosixPath(rel.as_posix(), name) for name in names if not name.startswith(".")]
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
    if not caption_file.is_file():
        raise DataError(f"{caption_file}: no such captions file.")
    rows = read_caption_rows(caption_file, report)
    base = caption_file.parent
    candidates = []
    referenced: set[Path] = set()
    for number, row in rows:
        name = f"{caption_file.name} row {number}"
        image = (row.get("image") or "").strip()
        rel = safe_path(image) if image else None
        if rel is None:
            # Counted like every other skip, when the sample reaches the row.
            problem = UNSAFE_IMAGE_PATH if image else ROW_WITHOUT_IMAGE
            candidates.append(Candidate(f"row {number}", row.get("caption"), f"{name}: {image}",
                                        problem=problem))
            continue
        path = base.joinpath(*rel.parts)
        referenced.add(path)
        ident = (row.get("id") or "").strip() or _relative_id(path, root)
        candidates.append(Candidate(ident, row.get("caption") or "", f"{image} ({name})",
                                    image_path=str(path),
                                    source={**kind, "file": _relative_id(path, root), "row": number}))
    for rel in files:
        path = root.joinpath(*rel.parts)
        if rel.suffix.lower() in _IMAGE_LIKE and path not in referenced:
            candidates.append(Candidate(rel.as_posix(), None, rel.as_posix(), image_path=str(path),
                                        source={**kind, "file": rel.as_posix()}))
    return candidates


def read_caption_rows(path: Path, report: DataReport) -> list[tuple[int, dict[str, str]]]:
    """Rows of a ``.csv`` / ``.tsv`` / ``.jsonl`` captions file as ``(row number, row)``.

    Each row has the keys ``image``, ``caption`` and ``id`` (when present), whatever the
    file calls them (see :data:`~gapviz.data.defaults.IMAGE_COLUMNS`). Rows are numbered from 1
    after the header. Unreadable rows (invalid or too deeply nested JSON, a JSON line that is
    not an object, a list or object where text belongs, a CSV field over the size limit) are
    skipped and counted in ``report``; the other rows are kept.
    """
    text = decode_text(path.read_bytes())
    suffix = path.suffix.lower()
    records: list[tuple[int, dict[str, Any]]] = []
    if suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = loads_json(line)
            except JSONInputError:
                record = None
            if not isinstance(record, dict):
                report.skip(UNREADABLE_ROW, f"{path.name} line {number}")
                continue
            records.append((number, {str(k): v for k, v in record.items()}))
        header = sorted({k for _, r in records for k in r})
    elif suffix in (".csv", ".tsv"):
        header, records = _delimited_rows(path, text, report)
    else:
        raise DataError(f"{path}: unsupported captions file type '{suffix}'; use .csv, .tsv or "
                        ".jsonl with columns 'image' and 'caption'.")
    columns = {key.strip().lower(): key for key in header}
    image_col = next((columns[c] for c in IMAGE_COLUMNS if c in columns), None)
    caption_col = next((columns[c] for c in CAPTION_COLUMNS if c in columns), None)
    id_col = next((columns[c] for c in ID_COLUMNS if c in columns), None)
    if image_col is None or caption_col is None:
        raise DataError(
            f"{path}: found columns {header[:20]}; a captions file needs a column "
            f"{' or '.join(repr(c) for c in IMAGE_COLUMNS[:2])} (the image file, relative to the "
            f"captions file) and a column 'caption'.")
    rows = []
    for number, row in records:
        fields = {"image": row.get(image_col), "caption": row.get(caption_col),
                  "id": row.get(id_col) if id_col else ""}
        if any(isinstance(v, (dict, list)) for v in fields.values()):
            report.skip(NOT_TEXT_VALUE, f"{path.name} row {number}")
            continue
        rows.append((number, {k: "" if v is None else str(v) for k, v in fields.items()}))
    return rows


def _delimited_rows(path: Path, text: str, report: DataReport
                    ) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and ``(row number, row)`` of a ``.csv`` / ``.tsv`` captions file.

    A captions file holds one row per line, so a quoted field that runs over several lines is
    a quote left open: that row is skipped (:data:`UNCLOSED_QUOTE`) and the lines it swallowed
    are read on their own, so they are neither lost nor silently merged. A row with more
    fields than the header keeps them in its caption when the caption is the last column (a
    comma in an unquoted caption), and is skipped (:data:`EXTRA_FIELDS`) otherwise.
    """
    # TSV captions often hold bare quotes ("a 'so-called' cat"), so TSV is not quoted.
    options: dict[str, Any] = ({"delimiter": "\t", "quoting": csv.QUOTE_NONE}
                               if path.suffix.lower() == ".tsv" else {})
    reader = csv.reader(io.StringIO(text, newline=""), **options)
    try:
        header = next(reader, [])
    except csv.Error:
        raise DataError(f"{path}: the header line is not readable CSV/TSV; the first line must "
                        "name the columns (image, caption).") from None
    lines = text.splitlines()
    last = _last_caption_column(header)
    records: list[tuple[int, dict[str, str]]] = []
    rejoined = 0

    def add(fields: list[str], where: str) -> None:
        nonlocal rejoined
        if len(fields) > len(header):
            if last is None:
                report.skip(EXTRA_FIELDS, where)
                return
            fields = [*fields[:last], options.get("delimiter", ",").join(fields[last:])]
            rejoined += 1
        records.append((len(records) + 1, dict(zip(header, fields))))

    done = reader.line_num
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error:  # e.g. a field over the size limit
            report.skip(UNREADABLE_ROW, f"{path.name} line {done + 1}")
            done = reader.line_num
            continue
        start, done = done + 1, reader.line_num
        if done > start:  # a quote left open swallowed the lines after it
            report.skip(UNCLOSED_QUOTE, f"{path.name} line {start}")
            for number in range(start + 1, min(done, len(lines)) + 1):
                line = lines[number - 1]
                if not line.strip():
                    continue
                try:
                    add(next(csv.reader([line], strict=True, **options)), f"{path.name} line {number}")
                except csv.Error:
                    report.skip(UNREADABLE_ROW, f"{path.name} line {number}")
            continue
        if fields:
            add(fields, f"{path.name} line {start}")
    if rejoined:
        report.notes.append(f"{path.name}: {rejoined} row(s) had more fields than the header; "
                            "the extra fields were kept in the caption (its last column).")
    return header, records


def _last_caption_column(header: list[str]) -> int | None:
    """Index of the caption column when it is the header's last column, else None."""
    names = [h.strip().lower() for h in header]
    return len(names) - 1 if names and names[-1] in CAPTION_COLUMNS else None


def _from_sidecar_txt(root: Path, files: list[PurePosixPath], kind: dict,
                      report: DataReport) -> list[Candidate]:
    texts = {f.with_suffix(""): f for f in files if f.suffix.lower() == ".txt"}
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
        txt = texts.get(rel.with_suffix(""))
        caption = None
        if txt is not None:
            used.add(txt)
            lines = decode_text(root.joinpath(*txt.parts).read_bytes()).splitlines()
            caption = lines[0] if lines else ""
        candidates.append(Candidate(rel.as_posix(), caption, rel.as_posix(),
                                    image_path=str(root.joinpath(*rel.parts)),
                                    source={**kind, "file": rel.as_posix()}))
    for txt in sorted(set(texts.values()) - used):
        lines = decode_text(root.joinpath(*txt.parts).read_bytes()).splitlines()
        candidates.append(Candidate(txt.with_suffix("").as_posix(), lines[0] if lines else "",
                                    txt.as_posix(), source={**kind, "file": txt.as_posix()}))
    return candidates


def _relative_id(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:  # a captions file outside the folder, given explicitly
        return path.as_posix()
