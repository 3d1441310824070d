"""Defaults and limits for getting image-caption pairs in (one place for them).

Every URL here can be overridden by an argument or by the environment variable named next to
it; that is how a mirror, a proxy, or the tests' local server on 127.0.0.1 is used instead.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from .. import __version__

#: Environment variable naming gapviz's cache root (downloads, extracted archives, embeddings).
CACHE_DIR_ENV = "GAPVIZ_CACHE_DIR"
#: Cache root when neither an argument nor the environment variable gives one.
DEFAULT_CACHE_DIR = "~/.cache/gapviz"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache root: ``cache_dir`` if given, else ``$GAPVIZ_CACHE_DIR``, else ``~/.cache/gapviz``."""
    chosen = cache_dir or os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR
    return Path(chosen).expanduser()


class CacheAreaError(OSError):
    """A cache area gapviz would write into is not a folder it owns (a symbolic link)."""


def cache_area(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache area ``name`` (``downloads``, ``extracted``, ``uploads``, ``embeddings``) of
    :func:`cache_root`, where gapviz writes.

    An area that is a symbolic link is refused (:class:`CacheAreaError`, an ``OSError``, so
    callers that fall back from an unwritable cache do so): gapviz writes, as it clears and
    caps, only in folders it owns, never through a link to somewhere else in a shared cache.
    """
    path = cache_root(cache_dir) / name
    if path.is_symlink():
        raise CacheAreaError(f"{path} is a symbolic link: gapviz writes only into cache folders "
                             "it owns; remove the link, or give another cache folder "
                             f"(--cache-dir or ${CACHE_DIR_ENV}).")
    return path

#: COCO 2017 annotations (captions_train2017.json and captions_val2017.json are inside, 241 MB).
COCO_ANNOTATIONS_URL = "http://images.cocodataset.org/annotations/annotations_trainval2017.zip"
COCO_ANNOTATIONS_URL_ENV = "GAPVIZ_COCO_ANNOTATIONS_URL"
#: Base of COCO image URLs: ``{base}/{split}/{file_name}``, e.g. ``.../val2017/000000000139.jpg``.
COCO_IMAGES_URL = "http://images.cocodataset.org"
COCO_IMAGES_URL_ENV = "GAPVIZ_COCO_IMAGES_URL"
#: COCO split used when the annotations are downloaded (5,000 images, 25,014 captions).
COCO_SPLIT = "val2017"

#: Conceptual Captions has no anonymous download: the user gives the TSV (path or URL) from
#: https://ai.google.com/research/ConceptualCaptions/download, as an argument or in this variable.
CC_TSV_ENV = "GAPVIZ_CC_TSV"

#: Sample size and seed of the paper's COCO-PAIRS and CC-PAIRS (2,500 random pairs each).
SAMPLE_N = 2500
SAMPLE_SEED = 0
#: Which caption of an image with several: "first" (in file order) or "random" (seeded).
CAPTION_CHOICES = ("first", "random", "all")

#: Image formats accepted, as Pillow names them (MPO is the multi-picture JPEG of phone cameras).
SUPPORTED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF")
#: File extensions looked at as images in folders and archives (unsupported ones are reported).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif")
UNSUPPORTED_IMAGE_EXTENSIONS = (".svg", ".svgz", ".heic", ".heif", ".avif", ".tif", ".tiff",
                                ".bmp", ".ico", ".psd", ".jxl", ".raw", ".cr2", ".nef", ".pdf")
#: Larger images are refused before decoding (a decompression bomb declares a huge size in a
#: small file). 40 megapixels holds an 8K frame (7680 x 4320) and a 6000 x 6000 scan; a model
#: sees 224 x 224 of it anyway.
MAX_IMAGE_PIXELS = 40_000_000
#: A model's preprocessing scales an image's shorter side to its input size (224 px for most
#: CLIPs) before cropping the centre, so a very thin picture (1 x 40,000,000 px passes the
#: pixel limit) would be resized to terapixels. Images whose resized size would exceed this are
#: skipped: 16 megapixels allows a 300:1 strip at 224 px and an 80:1 one at 448 px.
MAX_RESIZED_PIXELS = 16_000_000
#: Bytes of decoded pixels all threads of a process may hold at once while opening and
#: resizing images (environment: ``GAPVIZ_MAX_DECODE_MB``); a larger image waits until others
#: are done.
MAX_DECODE_BYTES = 1024**3
MAX_DECODE_ENV = "GAPVIZ_MAX_DECODE_MB"

#: Archives whose entries would expand to more than this are refused outright...
MAX_ARCHIVE_BYTES = 20 * 1024**3
#: ...and so are those expanding to more than this many times their own size (zip bombs);
#: JPEG/PNG archives expand about 1x, text-heavy ones a few times.
MAX_ARCHIVE_RATIO = 50
#: An archive may hold at most this many entries, folders and empty files included
#: (environment: ``GAPVIZ_MAX_ARCHIVE_ENTRIES``): 100,000 images with a .txt each, plus folders.
MAX_ARCHIVE_ENTRIES = 250_000
MAX_ARCHIVE_ENTRIES_ENV = "GAPVIZ_MAX_ARCHIVE_ENTRIES"
#: Each extracted file is counted as at least this many bytes against the archive's size
#: limits: what it really takes on disk (one block), so a flood of empty files is not free.
ARCHIVE_ENTRY_BYTES = 4096

#: A captions file larger than this is refused before it is read (environment:
#: ``GAPVIZ_MAX_CAPTIONS_MB``), and one with more rows than the next limit is refused when
#: reading reaches it (``GAPVIZ_MAX_CAPTION_ROWS``): 250,000 rows is 50,000 images with five
#: captions each.
MAX_CAPTIONS_BYTES = 64 * 1024**2
MAX_CAPTIONS_ENV = "GAPVIZ_MAX_CAPTIONS_MB"
MAX_CAPTION_ROWS = 250_000
MAX_CAPTION_ROWS_ENV = "GAPVIZ_MAX_CAPTION_ROWS"
#: Longest line of a captions file (or first line of a .txt caption) read, in characters; a
#: longer one is skipped as unreadable (CSV's own limit for one field is 128 KiB).
MAX_CAPTION_LINE = 1024**2

#: Caption file names looked for at the top of an upload, in this order.
CAPTION_FILES = ("captions.csv", "captions.tsv", "captions.jsonl")
#: Column names accepted for the image file and the caption in a captions file.
IMAGE_COLUMNS = ("image", "file_name", "filename", "file")
CAPTION_COLUMNS = ("caption", "text")
ID_COLUMNS = ("id",)

#: Downloads: concurrent connections, seconds before a silent connection is given up,
#: seconds one image URL may take in all (attempts included), the same for one large file
#: (an annotation listing), attempts per URL, first back-off (doubled each retry), largest
#: accepted image.
DOWNLOAD_WORKERS = 16
DOWNLOAD_TIMEOUT = 20.0
DOWNLOAD_DEADLINE = 120.0
FILE_DEADLINE = 3600.0
DOWNLOAD_RETRIES = 3
DOWNLOAD_BACKOFF = 0.5
MAX_DOWNLOAD_BYTES = 50 * 1024**2
USER_AGENT = f"gapviz/{__version__} (image-caption research tool; python urllib)"

#: Threads that open and check images (Pillow releases the GIL while decoding).
VALIDATE_WORKERS = 4


class LimitSettingError(ValueError):
    """A limit variable (``GAPVIZ_MAX_...``) set to something that is not a usable limit."""


def env_limit(name: str, default: float, unit: str, *, scale: float = 1,
              integer: bool = False) -> float:
    """The limit in the environment variable ``name``, times ``scale``; ``default`` (in
    ``unit``) times ``scale`` when it is unset or empty.

    Every gapviz limit variable is read by this one rule: a positive, finite number (``1024``,
    ``0.5``, ``1e3``). Anything else (``inf``, ``nan``, ``-1``, ``0``, ``lots``) raises
    :class:`LimitSettingError` naming the variable and what it takes. It is read when the
    limit is used, never at import, so a bad value breaks only what needs that limit.

    Parameters
    ----------
    name : str
        The variable, e.g. ``"GAPVIZ_MAX_DECODE_MB"``.
    default : float
        In ``unit``.
    unit : str
        What the number counts (``"MiB"``, ``"seconds"``, ``"rows"``), for the message.
    scale : float
        Factor from ``unit`` to the value returned (``1024**2`` for MiB to bytes).
    integer : bool
        Return an int (at least 1).
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return int(default * scale) if integer else default * scale
    fix = (f"set it to a positive number of {unit} (default {default:g}), or unset it for the "
           "default")
    try:
        value = float(raw)
    except ValueError:
        raise LimitSettingError(f"${name}={raw!r} is not a number; {fix}.") from None
    if not math.isfinite(value):
        raise LimitSettingError(f"${name}={raw!r} is not a finite number (a limit cannot be "
                                f"infinite); {fix}.")
    if value <= 0:
        raise LimitSettingError(f"${name}={raw!r} must be positive; {fix}.")
    scaled = value * scale
    if not scaled < 2**62:
        raise LimitSettingError(f"${name}={raw!r} is too large to be a limit; {fix}.")
    return max(1, int(scaled)) if integer else scaled


def decode_budget_bytes() -> int:
    """Bytes of decoded pixels in flight at once: ``$GAPVIZ_MAX_DECODE_MB`` or 1 GiB."""
    return int(env_limit(MAX_DECODE_ENV, MAX_DECODE_BYTES / 1024**2, "MiB", scale=1024**2,
                         integer=True))


def archive_entries_limit() -> int:
    """Most entries of one archive: ``$GAPVIZ_MAX_ARCHIVE_ENTRIES`` or :data:`MAX_ARCHIVE_ENTRIES`."""
    return int(env_limit(MAX_ARCHIVE_ENTRIES_ENV, MAX_ARCHIVE_ENTRIES, "entries", integer=True))


def captions_limits() -> tuple[int, int]:
    """(bytes, rows) a captions file may have: ``$GAPVIZ_MAX_CAPTIONS_MB`` (default 64) and
    ``$GAPVIZ_MAX_CAPTION_ROWS`` (default 250,000)."""
    size = env_limit(MAX_CAPTIONS_ENV, MAX_CAPTIONS_BYTES / 1024**2, "MiB", scale=1024**2,
                     integer=True)
    rows = env_limit(MAX_CAPTION_ROWS_ENV, MAX_CAPTION_ROWS, "rows", integer=True)
    return int(size), int(rows)
