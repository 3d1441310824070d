"""The pairs structure every loader returns, its skip report, and the shared keep-or-skip step.

A loader (folder, zip, COCO, Conceptual Captions, webdataset) only knows its own layout: it
turns its input into :class:`Candidate` pairs and reports what it could not even pair up
(an image without a caption, an unsafe archive entry). :func:`collect_pairs` then does the
rest the same way for all of them: reproducible sampling, downloading, caption checks,
duplicate ids, image checks, topping up the sample when some are skipped. The result is a
list of :class:`Pair` and a :class:`DataReport` that says how many were skipped and why.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from ..embeddings import LoadReport
from .defaults import MAX_CAPTION_LINE, MAX_IMAGE_PIXELS, VALIDATE_WORKERS
from .images import MISSING_IMAGE, NOT_REGULAR_FILE, check_image, open_rgb

#: ``progress(done, total, stage)``: called as work advances; ``stage`` names the step.
Progress = Callable[[int, int, str], None]
#: ``fetch(urls) -> [(local_path or None, failure reason or None), ...]``, one per URL, in order.
Fetcher = Callable[[Sequence[str]], list[tuple[str | None, str | None]]]

# Skip reasons shared by several loaders (image reasons live in images.py).
EMPTY_CAPTION = "empty caption"
BAD_UTF8 = "caption is not valid UTF-8"
DUPLICATE_ID = "duplicate id (the first usable one is kept)"
NO_CAPTION = "image without caption"
NO_IMAGE = MISSING_IMAGE
LONG_CAPTION = (f"caption longer than {MAX_CAPTION_LINE // 1024**2} MiB on one line (not a "
                "caption; put the caption on the first line)")

#: How many names the report keeps per skip reason, to show the user examples.
MAX_EXAMPLES = 5


class DataError(ValueError):
    """Input that cannot be used as a whole (no such folder, an archive bomb, no captions).

    The message says what was wrong and what to do. Problems with single pairs are not
    errors: they are skipped and counted in a :class:`DataReport`.
    """


@dataclass(frozen=True)
class Pair:
    """One image-caption pair, ready to embed.

    Attributes
    ----------
    id : str
        Unique within a loaded set (a file's relative path, a COCO image id, a TSV row).
    image_path : str
        A local file that passed :func:`~gapviz.data.images.check_image` (downloads and
        archive members are materialised in the cache first).
    caption : str
        Non-empty, whitespace collapsed to single spaces.
    source : mapping
        Where the pair came from: ``kind`` (folder, zip, coco, karpathy, cc, webdataset, ...)
        and kind-specific keys (``file``, ``url``, ``image_id``, ``row``, ``member``).
    group : str or None
        The image's id when the image has several captions, one pair each (``--caption
        all``); None for one caption per image.
    """

    id: str
    image_path: str
    caption: str
    source: Mapping[str, Any] = field(default_factory=dict)
    group: str | None = None

    def open_image(self, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
        """The image as RGB (first frame, alpha over white); see :func:`~gapviz.data.images.open_rgb`."""
        return open_rgb(self.image_path, max_pixels)


@dataclass
class Candidate:
    """A pair as a loader found it, before any checks.

    ``name`` is how the report refers to it (a file name, ``"row 12"``). The image is a local
    file (``image_path``) or a ``url`` to download; neither means a caption without an image,
    and ``caption=None`` an image without a caption. ``problem`` is a skip reason the loader
    already knows (an unreadable row). Loaders pass all of these on as candidates, so they are
    counted, like every other skip, only when the sample reaches them.
    """

    id: str
    caption: str | None
    name: str
    image_path: str | None = None
    url: str | None = None
    source: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None


@dataclass
class DataReport(LoadReport):
    """What happened while loading pairs: a :class:`~gapviz.embeddings.LoadReport`, plus names.

    ``skipped`` maps each reason to the running numbers of the skipped items (in the order the
    loader examined them); ``examples`` keeps the first few names per reason so a person can
    find them; ``notes`` says how the set was chosen (sample size, seed, caption choice).
    """

    examples: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def skip(self, reason: str, name: str) -> None:
        """Count one examined item as skipped for ``reason``."""
        self.skipped.setdefault(reason, []).append(self.n_read)
        self.n_read += 1
        names = self.examples.setdefault(reason, [])
        if len(names) < MAX_EXAMPLES:
            names.append(name)

    def keep(self) -> None:
        """Count one examined item as kept."""
        self.n_read += 1
        self.n_kept += 1

    def lines(self) -> list[str]:
        """The summary, then one line per skip reason with its count and example names."""
        out = [self.summary()]
        for reason, rows in sorted(self.skipped.items(), key=lambda kv: -len(kv[1])):
            if rows:
                names = self.examples.get(reason, [])
                more = ", ..." if len(rows) > len(names) else ""
                out.append(f"  skipped {len(rows)}: {reason} (e.g. {', '.join(names)}{more})")
        out += [f"  note: {note}" for note in self.notes]
        out += [f"  warning: {w}" for w in self.warnings]
        return out


def decode_text(raw: bytes) -> str:
    """Bytes from a caption file as text; invalid UTF-8 survives as surrogates.

    Decoding with ``surrogateescape`` lets a whole file be read even when a few rows are not
    UTF-8; :func:`caption_problem` then skips exactly those rows instead of the whole file.
    """
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    return raw.decode("utf-8", errors="surrogateescape")


def first_line(path: str | os.PathLike, limit: int = MAX_CAPTION_LINE) -> tuple[str | None, str | None]:
    """The first line of a text file (a caption beside an image) and None, or None and the
    skip reason.

    At most ``limit`` bytes are read, whatever the file's size: a first line longer than that
    is skipped (:data:`LONG_CAPTION`), and so is a file that is not a regular file (a named
    pipe would block the reader). Decoded as :func:`decode_text` does.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None, NOT_REGULAR_FILE
        with open(path, "rb") as f:
            head = f.read(limit + 1)
    except OSError as err:
        return None, f"caption file could not be read ({err.strerror or type(err).__name__})"
    lines = decode_text(head).splitlines()
    if len(head) > limit and len(lines) <= 1:  # no line break within the limit
        return None, LONG_CAPTION
    return (lines[0] if lines else ""), None


def clean_caption(caption: str) -> str:
    """Whitespace (newlines, tabs, runs of spaces) collapsed to single spaces."""
    return " ".join(caption.split())


def caption_problem(caption: str | None) -> str | None:
    """The skip reason for a caption, or None when it is usable."""
    if caption is None:
        return NO_CAPTION
    if any("\udc80" <= ch <= "\udcff" for ch in caption):
        return BAD_UTF8
    if not caption.strip():
        return EMPTY_CAPTION
    return None


def sample_order(total: int, n: int | None, seed: int) -> tuple[np.ndarray, int]:
    """The order candidates are examined in, and how many pairs to keep.

    All of them in input order when ``n`` is None or covers them; otherwise a seeded random
    permutation, so the same ``(n, seed)`` always tries the same candidates first.
    """
    if n is None or n >= total:
        return np.arange(total), total
    return np.random.default_rng(seed).permutation(total), n


def collect_pairs(candidates: Sequence[Candidate], report: DataReport, *, n: int | None = None,
                  seed: int = 0, fetch: Fetcher | None = None,
                  max_pixels: int = MAX_IMAGE_PIXELS, workers: int = VALIDATE_WORKERS,
                  progress: Progress | None = None) -> list[Pair]:
    """Check candidates and keep up to ``n`` good pairs (all when ``n`` is None).

    Candidates are examined in :func:`sample_order`. Each is skipped, with its reason counted in
    ``report``, for: an empty or non-UTF-8 caption, an id already kept, a failed download, a
    missing, corrupt, truncated, oversized or unsupported image. When some of the first ``n``
    are skipped, the next ones in the same order replace them, so a sample keeps its size while
    candidates last and the kept set depends only on ``(n, seed)`` and the data.

    Parameters
    ----------
    candidates : sequence of Candidate
        Any sequence: a loader with millions of rows can build each one on demand.
    report : DataReport
        Updated in place.
    n : int or None
        Pairs wanted; None keeps every usable one.
    seed : int
        Seed of the sampling permutation.
    fetch : callable, optional
        Downloads candidates that have a ``url``; required when any has.
    max_pixels : int
        Larger images are skipped (decompression bombs).
    workers : int
        Threads checking images.
    progress : callable, optional
        ``progress(done, total, stage)``.

    Returns
    -------
    list of Pair
        In input order.
    """
    if n is not None and n < 1:
        raise DataError(f"asked for n={n} pairs; give a positive number (or none to keep all).")
    order, target = sample_order(len(candidates), n, seed)
    if n is not None and n < len(candidates):
        report.notes.append(f"random sample of {n} from {len(candidates)} candidates (seed {seed}); "
                            "skipped ones are replaced by the next in the same seeded order")
    elif n is not None and n > len(candidates):
        report.notes.append(f"asked for {n} pairs but only {len(candidates)} candidates exist")
    kept: list[tuple[int, Pair]] = []
    kept_ids: set[str] = set()
    pos = examined = 0
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        while len(kept) < target and pos < len(order):
            need = target - len(kept)
            # After a first pass, ask for enough to cover the skip rate seen so far, with a
            # little to spare: each extra round waits for its slowest download.
            rate = len(kept) / examined if examined else 1.0
            size = need if not examined else math.ceil(1.1 * need / max(rate, 0.2)) + 2
            chunk = [int(i) for i in order[pos:pos + size]]
            pos += len(chunk)
            cands = [candidates[i] for i in chunk]
            verdicts = _check_chunk(cands, fetch, pool, max_pixels, progress, done=len(kept),
                                    total=target)
            # Walk the chunk in sampling order and stop at the target, so that work done past
            # it (a download that was not needed) leaves no trace in the report.
            for i, cand, (path, reason) in zip(chunk, cands, verdicts):
                if len(kept) >= target:
                    break
                examined += 1
                if reason is None and cand.id in kept_ids:
                    reason = DUPLICATE_ID
                if reason is not None:
                    report.skip(reason, cand.name)
                    continue
                report.keep()
                kept_ids.add(cand.id)
                kept.append((i, Pair(cand.id, str(path), clean_caption(cand.caption or ""),
                                     dict(cand.source))))
    kept.sort(key=lambda item: item[0])
    return [pair for _, pair in kept]


def _check_chunk(chunk: list[Candidate], fetch: Fetcher | None, pool: ThreadPoolExecutor,
                 max_pixels: int, progress: Progress | None, done: int,
                 total: int) -> list[tuple[str | None, str | None]]:
    """(image path, skip reason or None) for each candidate of ``chunk``, in order."""
    verdicts: list[tuple[str | None, str | None]] = [
        (c.image_path, c.problem or caption_problem(c.caption)
         or (NO_IMAGE if c.image_path is None and c.url is None else None)) for c in chunk]
    to_fetch = [k for k, c in enumerate(chunk) if verdicts[k][1] is None and c.image_path is None]
    if to_fetch:
        if fetch is None:
            raise DataError("some pairs have image URLs but no downloader was given.")
        results = fetch([chunk[k].url or "" for k in to_fetch])
        for k, (path, failure) in zip(to_fetch, results):
            verdicts[k] = (path, failure)
    to_check = [k for k, (path, reason) in enumerate(verdicts) if reason is None]
    if not to_check:
        return verdicts
    checked = pool.map(lambda k: check_image(verdicts[k][0], max_pixels), to_check)
    for count, (k, reason) in enumerate(zip(to_check, checked), 1):
        verdicts[k] = (verdicts[k][0], reason)
        if progress is not None:
            progress(min(done + count, total), total, "checking images")
    return verdicts


def require_pairs(pairs: Sequence[Pair], report: DataReport, source: str, min_pairs: int = 2) -> None:
    """Raise :class:`DataError` unless at least ``min_pairs`` pairs were kept from ``source``."""
    if len(pairs) < min_pairs:
        detail = "\n".join(report.lines())
        raise DataError(f"{source}: only {len(pairs)} usable pair(s), at least {min_pairs} are "
                        f"needed.\n{detail}")


def all_captions(pairs: Sequence[Pair], captions: Mapping[str, Sequence[str]]) -> list[Pair]:
    """One pair per caption of each kept image (``--caption all``): pair ``id`` becomes ``id#k``
    for its k-th caption (k from 0, in ``captions[id]``'s order), all of them with ``group`` =
    ``id``. Captions that are empty or unreadable are left out (the image keeps the others)."""
    out = []
    for pair in pairs:
        texts = [clean_caption(c) for c in captions.get(pair.id, [pair.caption])
                 if caption_problem(c) is None] or [pair.caption]
        out += [Pair(f"{pair.id}#{k}", pair.image_path, text, pair.source, group=pair.id)
                for k, text in enumerate(texts)]
    return out


def with_groups(embeddings: Any, pairs: Sequence[Pair]) -> Any:
    """``embeddings`` (a PairedEmbeddings of ``pairs``, row for row) with each pair's image id
    when some image has several captions, and one image embedding per image: the first of its
    rows, copied to the others (the same file embedded in different batches can differ in the
    last bits, and every measure needs one embedding per image)."""
    groups = [p.group for p in pairs]
    if all(g is None for g in groups):
        return embeddings
    groups = [g if g is not None else p.id for g, p in zip(groups, pairs)]
    images = np.array(embeddings.image_embeddings, copy=True)
    first: dict[str, int] = {}
    for r, g in enumerate(groups):
        images[r] = images[first.setdefault(g, r)]
    out = embeddings.with_embeddings(images, embeddings.text_embeddings)
    out.groups = groups
    return out
