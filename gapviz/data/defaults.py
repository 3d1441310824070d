"""Defaults and limits for getting image-caption pairs in (one place for them).

Every URL here can be overridden by an argument or by the environment variable named next to
it; that is how a mirror, a proxy, or the tests' local server on 127.0.0.1 is used instead.
"""

from __future__ import annotations

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
CAPTION_CHOICES = ("first", "random")

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
#: Bytes of decoded pixels all threads of a process may hold at once while opening images
#: (environment: ``GAPVIZ_MAX_DECODE_MB``); a larger image waits until others are done.
MAX_DECODE_BYTES = 1024**3
MAX_DECODE_ENV = "GAPVIZ_MAX_DECODE_MB"

#: Archives whose entries would expand to more than this are refused outright...
MAX_ARCHIVE_BYTES = 20 * 1024**3
#: ...and so are those expanding to more than this many times their own size (zip bombs);
#: JPEG/PNG archives expand about 1x, text-heavy ones a few times.
MAX_ARCHIVE_RATIO = 50
#: An archive may hold at most this many entries.
MAX_ARCHIVE_ENTRIES = 2_000_000

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
