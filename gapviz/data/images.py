"""Opening images safely: which formats, how big, what counts as broken.

Every image that reaches a model goes through :func:`open_rgb`, and every image a loader keeps
has passed :func:`check_image`, so the rules live here once:

- formats: JPEG (and MPO, the phone-camera JPEG), PNG, WebP, GIF (first frame). Others are
  named when refused ("unsupported image format (SVG)"), so the user knows what to convert;
- size: more than ``max_pixels`` pixels is refused *before* decoding (a decompression bomb is a
  small file that declares a huge image);
- memory: every decode first reserves its decoded size from one per-process budget
  (:data:`DECODE_BUDGET`, ``MAX_DECODE_BYTES``), so many threads opening large images at once
  wait for each other instead of adding up to gigabytes; an image about to be resized for a
  model reserves the resized size too (:func:`reserve_for_model`);
- shape: an image whose resize to a model's input would exceed ``MAX_RESIZED_PIXELS`` is
  refused before decoding (:func:`resize_problem`): a 1 x 40,000,000 strip passes the pixel
  limit in a 120-byte PNG, and scaled to 224 px on its short side it is 2 terapixels;
- kind: only regular files are opened (a named pipe would block the reader forever);
- broken: files Pillow cannot identify, and truncated or corrupt data, found by decoding fully;
- colour: transparent images are composited on white (what a person sees in a viewer, and what
  captions describe), EXIF orientation is applied, the result is RGB.
"""

from __future__ import annotations

import os
import stat
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .defaults import (MAX_IMAGE_PIXELS, MAX_RESIZED_PIXELS, SUPPORTED_FORMATS,
                       LimitSettingError, decode_budget_bytes)

#: Describes what :func:`open_rgb` does to pixels; part of the embedding cache key, so change it
#: whenever the pipeline changes.
IMAGE_PIPELINE = "gapviz-image-v1: first frame, EXIF orientation, alpha over white, RGB"

CORRUPT = "corrupt or truncated image"
# ``warnings.catch_warnings`` edits process-wide state, so threads opening images take turns
# (opening only parses the header; decoding happens outside the lock).
_OPEN_LOCK = threading.Lock()
NOT_AN_IMAGE = "not an image"
MISSING_IMAGE = "caption without image (file missing)"
NOT_REGULAR_FILE = ("not a regular file (a named pipe, socket, device or broken link; skipped): "
                    "put the file itself in its place")


class DecodeBudget:
    """Bytes of decoded pixels that threads may hold at once; a reservation waits for room.

    One image larger than the whole budget still runs, alone (its size is already bounded by
    ``max_pixels``). ``peak`` records the most ever reserved at once. A reservation made
    inside another one by the same thread draws on the outer one (whose estimate covers the
    inner work), so a thread never waits for memory while holding some: two threads each
    holding half the budget and waiting for more would wait forever.

    Parameters
    ----------
    limit_bytes : int, optional
        Default: :func:`~gapviz.data.defaults.decode_budget_bytes` (``$GAPVIZ_MAX_DECODE_MB``),
        read at the first reservation, so a bad setting fails the decode that needs it and
        not the import of gapviz.
    """

    def __init__(self, limit_bytes: int | None = None) -> None:
        self._limit = None if limit_bytes is None else int(limit_bytes)
        self.used = 0
        self.peak = 0
        self._cond = threading.Condition()
        self._held = threading.local()

    @property
    def limit(self) -> int:
        if self._limit is None:
            self._limit = decode_budget_bytes()
        return self._limit

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        limit = self.limit
        if getattr(self._held, "depth", 0):  # covered by this thread's outer reservation
            self._held.depth += 1
            try:
                yield
            finally:
                self._held.depth -= 1
            return
        nbytes = max(0, min(int(nbytes), limit))
        with self._cond:
            while self.used and self.used + nbytes > limit:
                self._cond.wait()
            self.used += nbytes
            self.peak = max(self.peak, self.used)
        self._held.depth = 1
        try:
            yield
        finally:
            self._held.depth = 0
            with self._cond:
                self.used -= nbytes
                self._cond.notify_all()


#: The process-wide decode budget (``$GAPVIZ_MAX_DECODE_MB``, default 1 GiB).
DECODE_BUDGET = DecodeBudget()


def decoded_bytes(image: Image.Image, to_rgb: bool = False) -> int:
    """Memory a decode of ``image`` takes: its pixels in its own mode (at the ``draft`` scale when
    one is set), plus, for ``to_rgb``, the RGBA and RGB copies :func:`to_rgb` may make."""
    width, height = image.size
    bands = len(image.getbands())
    per_pixel = max(1, bands * (4 if image.mode in ("I", "F") or image.mode.startswith("I;16") else 1))
    return width * height * (per_pixel + (8 if to_rgb else 0))


class ImageError(ValueError):
    """An image that cannot be used; ``reason`` is the short skip reason for reports."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def too_large_reason(max_pixels: int) -> str:
    return f"image too large (over {max_pixels:,} pixels; possible decompression bomb)"


def too_thin_reason(side: int, max_resized_pixels: int = MAX_RESIZED_PIXELS) -> str:
    return (f"image too thin or too wide for the model (scaling its short side to {side} px "
            f"would make over {max_resized_pixels:,} pixels); crop it nearer to square")


def resized_size(width: int, height: int, side: int) -> tuple[int, int]:
    """(width, height) after scaling the shorter side to ``side`` pixels, keeping the aspect
    ratio: what CLIP-style preprocessing (open_clip's ``Resize(side)``) makes before it crops
    the centre ``side`` x ``side``."""
    short = max(1, min(width, height))
    scale = side / short
    return (side, max(1, round(height * scale))) if width <= height else (
        max(1, round(width * scale)), side)


def resize_problem(width: int, height: int, side: int,
                   max_resized_pixels: int = MAX_RESIZED_PIXELS) -> str | None:
    """The skip reason for an image of ``width`` x ``height`` that a model with input ``side``
    would resize to more than ``max_resized_pixels``, or None.

    A pure function of sizes, for any code that resizes for a model: the resized picture has
    ``side**2 * aspect`` pixels whether the image is scaled up or down, so a thin strip that
    passes the pixel limit (1 x 40,000,000, a 120-byte PNG) would otherwise cost gigabytes.
    """
    new_width, new_height = resized_size(width, height, side)
    return too_thin_reason(side, max_resized_pixels) if new_width * new_height > max_resized_pixels else None


def resize_bytes(width: int, height: int, side: int) -> int:
    """Memory of resizing a ``width`` x ``height`` RGB image as :func:`resized_size` says:
    the result and Pillow's intermediate (one axis resized first; no larger than the source
    or the result), at Pillow's 4 bytes per RGB pixel."""
    new_width, new_height = resized_size(width, height, side)
    resized = new_width * new_height
    return 4 * (resized + max(resized, width * height))


@contextmanager
def reserve_for_model(path: str | os.PathLike, side: int, max_pixels: int = MAX_IMAGE_PIXELS,
                      max_resized_pixels: int = MAX_RESIZED_PIXELS) -> Iterator[None]:
    """Hold the decode budget for opening ``path`` *and* resizing it to a model's ``side``.

    Reads the header only; raises :class:`ImageError` (reason from :func:`resize_problem`, or
    the usual ones of :func:`open_rgb`) before anything is decoded. Inside, :func:`open_rgb`
    and the model's preprocessing run within this one reservation::

        with reserve_for_model(path, 224):
            tensor = preprocess(open_rgb(path))
    """
    image = _open(path, max_pixels)
    with image:
        width, height = image.size
        need = decoded_bytes(image, to_rgb=True)
    problem = resize_problem(width, height, side, max_resized_pixels)
    if problem is not None:
        raise ImageError(problem, f"{width}x{height}, aspect ratio "
                                  f"{max(width, height) / max(1, min(width, height)):,.0f}:1")
    with DECODE_BUDGET.reserve(need + resize_bytes(width, height, side)):
        yield


def unsupported_reason(fmt: str) -> str:
    return f"unsupported image format ({fmt}); convert to JPEG, PNG, WebP or GIF"


def sniff_format(head: bytes) -> str | None:
    """Name the format of a file Pillow could not identify, from its first bytes.

    Returns the name of a known non-raster or unsupported format (``"SVG"``, ``"HEIC"``, ...),
    or None when the bytes look like nothing known (then the file is called corrupt).
    """
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return "SVG"
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "HTML page"
    if head[:2] == b"\x1f\x8b":
        return "gzip (SVGZ?)"
    if head.startswith(b"%PDF"):
        return "PDF"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF"
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1"):
            return "HEIC"
        return "video (MP4/MOV)"
    if head.startswith(b"\xff\x0a") or head.startswith(b"\x00\x00\x00\x0cJXL "):
        return "JPEG XL"
    return None


def _open(path: str | os.PathLike, max_pixels: int) -> Image.Image:
    """Open lazily (header only) and enforce kind, format and size rules; raise :class:`ImageError`."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise ImageError(MISSING_IMAGE, str(path)) from None
    except OSError as err:
        raise ImageError(CORRUPT, str(err)) from None
    if not stat.S_ISREG(mode):
        raise ImageError(NOT_REGULAR_FILE, str(path))
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            # We enforce our own limit below; Pillow's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError:
        raise ImageError(too_large_reason(max_pixels)) from None
    except UnidentifiedImageError:
        with open(path, "rb") as f:
            known = sniff_format(f.read(1024))
        raise ImageError(unsupported_reason(known) if known and known != "HTML page"
                         else f"{NOT_AN_IMAGE} ({known})" if known
                         else CORRUPT, "Pillow cannot identify the file") from None
    except FileNotFoundError:
        raise ImageError(MISSING_IMAGE, str(path)) from None
    except (OSError, SyntaxError, ValueError) as err:  # Pillow's parsers raise all three
        raise ImageError(CORRUPT, str(err)) from None
    fmt = image.format or "unknown"
    if fmt not in SUPPORTED_FORMATS:
        image.close()
        raise ImageError(unsupported_reason(fmt))
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageError(too_large_reason(max_pixels), f"{width}x{height}")
    if width == 0 or height == 0:
        image.close()
        raise ImageError(CORRUPT, "zero-sized image")
    return image


def check_image(path: str | os.PathLike, max_pixels: int = MAX_IMAGE_PIXELS) -> str | None:
    """Decode ``path`` fully; return None when it is usable, else the skip reason.

    Decoding to the end is what finds truncated files (a header alone looks fine). JPEGs are
    decoded at reduced scale (``draft``), which still reads every byte but costs less.
    """
    try:
        image = _open(path, max_pixels)
    except ImageError as err:
        return err.reason
    try:
        with image:
            if image.format in ("JPEG", "MPO"):
                image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            with DECODE_BUDGET.reserve(decoded_bytes(image)):
                image.load()
    except Image.DecompressionBombError:
        return too_large_reason(max_pixels)
    except LimitSettingError:  # a bad $GAPVIZ_MAX_DECODE_MB: to be shown, not a corrupt image
        raise
    except (OSError, SyntaxError, ValueError, EOFError):  # truncated / corrupt data
        return CORRUPT
    return None


def open_rgb(path: str | os.PathLike, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """The image at ``path`` as an RGB :class:`PIL.Image.Image`, ready for a model.

    GIFs give their first frame; EXIF orientation is applied; transparency is composited on
    white. Raises :class:`ImageError` (with a report-ready ``reason``) for anything unusable.
    """
    image = _open(path, max_pixels)
    try:
        with image, DECODE_BUDGET.reserve(decoded_bytes(image, to_rgb=True)):
            image.seek(0)
            image.load()
            image = ImageOps.exif_transpose(image) or image
            return to_rgb(image)
    except Image.DecompressionBombError:
        raise ImageError(too_large_reason(max_pixels)) from None
    except LimitSettingError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageError(CORRUPT, str(err)) from None


def thumbnail(path: str | os.PathLike | None, size: int = 512) -> Image.Image | None:
    """A copy of the image at ``path`` at most ``size`` pixels on its longer side, for showing;
    None when there is no path or the image cannot be used (missing, broken, too large).

    Decoded through :func:`open_rgb`, so the pixel limit and the decode-memory budget hold for
    previews and thumbnails as they do for embedding.
    """
    if not path:
        return None
    try:
        image = open_rgb(path)
    except (ImageError, OSError):
        return None
    image.thumbnail((size, size))
    return image


def square_tile(image: Image.Image, size: int, background: tuple[int, int, int] = (255, 255, 255)
                ) -> Image.Image:
    """``image`` centred on a ``size`` x ``size`` canvas, shrunk to fit but never enlarged (a
    small picture stays sharp): tiles of a grid then line up whatever their shapes."""
    image = image.copy()
    image.thumbnail((size, size))
    canvas = Image.new("RGB", (size, size), background)
    canvas.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    return canvas


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB copy of ``image``; any transparency (alpha, palette or tRNS) is laid over white.

    16-bit and float greyscale (``I;16``, ``I``, ``F``) are scaled to 8 bits first: Pillow's
    own conversion clips them, which turns most 16-bit pictures white.
    """
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8), "L")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")
