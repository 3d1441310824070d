"""Conceptual Captions: the CC3M TSV (caption, image URL) or a local webdataset ``.tar``.

The TSV has one pair per line, ``caption<TAB>url``, no header (CC12M's ``url<TAB>caption``
order is recognised too). Only the sampled lines' images are downloaded; many CC links are
dead by now, so failures are skipped, counted by cause ("download failed (HTTP 404)", "not an
image (HTML page)"), and replaced by the next lines of the same seeded order until the sample
is full. Ids are the TSV line numbers (``cc-<line>``), stable for a given file.

A webdataset shard groups files by key, the name up to the first dot: ``000123.jpg`` with
``000123.txt`` (the caption) or ``000123.json`` (a ``caption`` field). It is extracted safely
into the cache (see :mod:`gapviz.data.archives`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from ..safety import JSONInputError, loads_json
from .archives import ArchiveLimits, extract
from .defaults import (CC_TSV_ENV, IMAGE_EXTENSIONS, MAX_CAPTION_LINE, MAX_IMAGE_PIXELS, SAMPLE_N,
                       SAMPLE_SEED, UNSUPPORTED_IMAGE_EXTENSIONS, VALIDATE_WORKERS, cache_area,
                       cache_root)
from .download import DownloadError, Downloader, fetch_file, is_url
from .pairs import (LONG_CAPTION, Candidate, DataError, DataReport, Pair, Progress, collect_pairs,
                    decode_text, first_line)

UNREADABLE_LINE = "unreadable TSV line (need caption<TAB>url)"
UNREADABLE_JSON = "unreadable webdataset .json (invalid, too deeply nested, or no text 'caption')"


def load_cc(tsv: str | os.PathLike | None = None, *, n: int | None = SAMPLE_N,
            seed: int = SAMPLE_SEED, cache_dir: str | os.PathLike | None = None,
            download: dict | None = None, max_pixels: int = MAX_IMAGE_PIXELS,
            workers: int = VALIDATE_WORKERS,
            progress: Progress | None = None) -> tuple[list[Pair], DataReport]:
    """A seeded sample of ``n`` Conceptual Captions pairs, images downloaded into the cache.

    Parameters
    ----------
    tsv : path or URL, optional
        The CC TSV (``Train_GCC-training.tsv``, ``Validation_GCC-1.1.0-Validation.tsv``). Default:
        ``$GAPVIZ_CC_TSV``. CC has no anonymous download, so there is no built-in URL.
    n, seed : int
        Sample size and seed (the paper's CC-PAIRS: 2,500). ``n=None`` keeps every line.
    download : dict, optional
        :class:`~gapviz.data.download.Downloader` settings (``workers``, ``timeout``, ...).

    Returns
    -------
    pairs : list of Pair
    report : DataReport
    """
    root = cache_root(cache_dir)
    settings = dict(download or {})
    tsv = tsv or os.environ.get(CC_TSV_ENV)
    if not tsv:
        raise DataError(
            "no Conceptual Captions TSV given. Download it (after accepting the terms) from "
            "https://ai.google.com/research/ConceptualCaptions/download and pass its path or URL "
            f"(or set {CC_TSV_ENV}).")
    path = _tsv_file(str(tsv), root, settings, progress)
    report = DataReport()
    lines = TsvLines(path, str(tsv))
    if not len(lines):
        raise DataError(f"{path}: the TSV has no lines.")
    report.notes.append(f"{path.name}: {len(lines)} lines; images downloaded from their URLs")
    fetch = Downloader(cache_area("downloads", root) / "images", progress=progress, **settings)
    pairs = collect_pairs(lines, report, n=n, seed=seed, fetch=fetch, max_pixels=max_pixels,
                          workers=workers, progress=progress)
    from ..cache import enforce_cap  # not at the top: gapviz.cache imports gapviz.data

    enforce_cap(cache_dir, keep=[path, *(p.image_path for p in pairs)])
    return pairs, report


class TsvLines(Sequence[Candidate]):
    """The lines of a CC TSV as candidates, each parsed only when asked for.

    One buffered pass records where each line starts (8 bytes a line); the sampler then reads
    just the lines it examines, so a 3.3M-line file never sits in memory as objects.
    """

    def __init__(self, path: Path, origin: str) -> None:
        self.path = path
        self.origin = origin
        self.offsets, self.line_numbers = _line_offsets(path)

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i):  # type: ignore[override]
        if not isinstance(i, int):
            raise TypeError("TsvLines supports integer indices only")
        with open(self.path, "rb") as f:
            f.seek(int(self.offsets[i]))
            fields = decode_text(f.readline()).rstrip("\r\n").split("\t")
        caption, url = _caption_url(fields)
        line = int(self.line_numbers[i])
        source = {"kind": "cc", "row": line, "url": url, "tsv": self.origin}
        return Candidate(f"cc-{line}", caption, f"line {line}", url=url, source=source,
                         problem=None if url else UNREADABLE_LINE)


def _tsv_file(tsv: str, root: Path, settings: dict, progress: Progress | None) -> Path:
    if is_url(tsv):
        try:
            return fetch_file(tsv, cache_area("downloads", root), progress=progress, **settings)
        except DownloadError as err:
            raise DataError(f"cannot download the CC TSV from {tsv} ({err.reason}).") from None
    path = Path(tsv).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such TSV file.")
    return path


def _line_offsets(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Byte offset and 1-based line number of each data line (not blank, not a header)."""
    starts, numbers = [], []
    pos = 0
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if line.strip() and not (number == 1 and _is_header(decode_text(line).split("\t"))):
                starts.append(pos)
                numbers.append(number)
            pos += len(line)
    return np.asarray(starts, dtype=np.int64), np.asarray(numbers, dtype=np.int64)


def _caption_url(fields: list[str]) -> tuple[str, str | None]:
    if len(fields) < 2:
        return "", None
    first, second = fields[0].strip(), fields[1].strip()
    if is_url(second):
        return first, second
    if is_url(first):  # CC12M order
        return second, first
    return first, None


def _is_header(fields: list[str]) -> bool:
    return {f.strip().lower() for f in fields} >= {"caption", "url"}


def load_webdataset(tar: str | os.PathLike, *, n: int | None = None, seed: int = SAMPLE_SEED,
                    cache_dir: str | os.PathLike | None = None, max_pixels: int = MAX_IMAGE_PIXELS,
                    workers: int = VALIDATE_WORKERS, limits: ArchiveLimits = ArchiveLimits(),
                    progress: Progress | None = None) -> tuple[list[Pair], DataReport]:
    """Pairs from a webdataset shard (``.tar``, ``.tar.gz``): per key an image and a caption.

    Parameters
    ----------
    tar : path
    n, seed : int, optional
        Keep a seeded random sample of ``n`` pairs (default: all).

    Returns
    -------
    pairs : list of Pair
    report : DataReport
    """
    tar = Path(tar).expanduser()
    report = DataReport()
    folder = extract(tar, cache_root(cache_dir), report, limits=limits)
    samples: dict[str, dict[str, Path]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = PurePosixPath(path.relative_to(folder).as_posix())
        stem, dot, ext = rel.name.partition(".")
        if not dot:
            continue
        samples.setdefault(str(rel.parent / stem), {})["." + ext.lower()] = path
    candidates = []
    image_exts = IMAGE_EXTENSIONS + UNSUPPORTED_IMAGE_EXTENSIONS
    for key, files in samples.items():
        image = next((files[e] for e in image_exts if e in files), None)
        caption, problem = _wds_caption(files)
        if image is None and caption is None and problem is None:
            continue  # neither half of a pair (metadata only)
        key = key.removeprefix("./")
        candidates.append(Candidate(key, caption, key, image_path=str(image) if image else None,
                                    source={"kind": "webdataset", "archive": str(tar), "key": key},
                                    problem=problem))
    if not candidates:
        raise DataError(f"{tar}: no webdataset samples found (expected files like 000001.jpg with "
                        "000001.txt).")
    report.notes.append(f"webdataset {tar.name}: {len(candidates)} keys")
    pairs = collect_pairs(candidates, report, n=n, seed=seed, max_pixels=max_pixels,
                          workers=workers, progress=progress)
    return pairs, report


def _wds_caption(files: dict[str, Path]) -> tuple[str | None, str | None]:
    """A sample's caption (None when it has none) and a skip reason for an unreadable one."""
    if ".txt" in files:  # its first line, read within the caption-line limit
        return first_line(files[".txt"])
    if ".json" in files:
        try:
            if files[".json"].stat().st_size > MAX_CAPTION_LINE:
                return None, LONG_CAPTION
            record = loads_json(files[".json"].read_bytes())
        except JSONInputError:
            return None, UNREADABLE_JSON
        if not isinstance(record, dict):
            return None, UNREADABLE_JSON
        value = record.get("caption")
        if isinstance(value, (dict, list)):
            return None, UNREADABLE_JSON
        return (None if value is None else str(value)), None
    return None, None
