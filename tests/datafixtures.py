"""Real input files for the data-in and embedding tests, and a real local HTTP server.

Everything here writes genuine formats with the libraries users' files come from: Pillow
images (JPEG, PNG with alpha, WebP, animated GIF), ``zipfile`` / ``tarfile`` archives, COCO and
Karpathy JSON, CC TSV. :class:`LocalServer` is an ``http.server.ThreadingHTTPServer`` on
127.0.0.1 with routes that are slow, fail then succeed, go missing, or cut a body short.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
import time
import zipfile
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image

#: A tiny open_clip architecture (standard tokenizer and vocabulary) for fast, real runs.
TINY_MODEL = "gapviz-test-tiny"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
#: Another tiny architecture, for "this checkpoint does not fit that model".
OTHER_TINY_MODEL = "gapviz-test-tiny-16"
OTHER_TINY_CONFIG = {**TINY_CONFIG, "embed_dim": 16}
_registered = False


def register_tiny_model(folder: Path) -> str:
    """Register the tiny configs with open_clip (once per process); returns :data:`TINY_MODEL`."""
    global _registered
    if not _registered:
        import open_clip

        folder.mkdir(parents=True, exist_ok=True)
        for name, config in ((TINY_MODEL, TINY_CONFIG), (OTHER_TINY_MODEL, OTHER_TINY_CONFIG)):
            (folder / f"{name}.json").write_text(json.dumps(config))
        open_clip.add_model_config(folder)
        _registered = True
    return TINY_MODEL


# ----------------------------------------------------------------------------- images

def photo(seed: int, size: tuple[int, int] = (48, 40)) -> Image.Image:
    """A smooth random RGB picture (gradients plus blobs: compresses like a photo, not noise)."""
    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    channels = []
    for _ in range(3):
        a, b, c = rng.uniform(-1, 1, 3)
        channels.append(128 + 90 * np.sin(3 * a * xx + 3 * b * yy + c * 6))
    arr = np.clip(np.stack(channels, -1) + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def image_bytes(fmt: str, seed: int = 0, size: tuple[int, int] = (48, 40)) -> bytes:
    """Bytes of a real image file in ``fmt`` (JPEG, PNG, WEBP, GIF, BMP, TIFF)."""
    buf = io.BytesIO()
    img = photo(seed, size)
    if fmt == "GIF":
        img = img.convert("P")
    img.save(buf, fmt)
    return buf.getvalue()


def write_image(path: Path, fmt: str = "JPEG", seed: int = 0, size: tuple[int, int] = (48, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(fmt, seed, size))
    return path


def write_transparent_png(path: Path) -> Path:
    """A fully transparent RGBA PNG whose hidden colour is black (it must come out white)."""
    Image.new("RGBA", (20, 20), (0, 0, 0, 0)).save(path)
    return path


def write_animated_gif(path: Path) -> Path:
    """Two frames: red then blue; the first frame must be the one used."""
    frames = [Image.new("RGB", (16, 16), c).convert("P") for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def write_truncated_jpeg(path: Path, seed: int = 1) -> Path:
    data = image_bytes("JPEG", seed, (64, 64))
    path.write_bytes(data[: len(data) // 2])
    return path


def write_bomb_png(path: Path) -> Path:
    """A ~12 kB PNG declaring 10,000 x 10,000 pixels: more than Pillow's bomb threshold."""
    Image.new("1", (10_000, 10_000)).save(path)
    return path


SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>\n'


# ----------------------------------------------------------------------------- uploads

def make_txt_folder(root: Path) -> dict[str, str]:
    """A folder with a ``.txt`` beside each image, and every kind of bad input.

    Returns the expected good pairs as {id: caption}.
    """
    good = {
        "a.jpg": ("JPEG", "A red kite over a field.\nsecond line is ignored"),
        "b.png": ("PNG", "A boat on a lake."),
        "c.webp": ("WEBP", "A city street at night."),
        "sub/d.gif": ("GIF", "  A   dog\tin the snow.  "),
    }
    for i, (name, (fmt, caption)) in enumerate(good.items()):
        write_image(root / name, fmt, seed=i)
        (root / name).with_suffix(".txt").write_text(caption, encoding="utf-8")
    write_transparent_png(root / "clear.png")
    (root / "clear.txt").write_text("A transparent square.")
    write_animated_gif(root / "anim.gif")
    (root / "anim.txt").write_text("A red square.")
    # Bad inputs, one of each.
    write_image(root / "nocap.jpg", seed=10)                           # image without caption
    (root / "orphan.txt").write_text("A caption without its image.")   # caption without image
    write_image(root / "empty.jpg", seed=11)
    (root / "empty.txt").write_text("   \n")                           # empty caption
    write_image(root / "latin1.jpg", seed=12)
    (root / "latin1.txt").write_bytes("Caf\xe9 au lait.".encode("latin-1"))  # not UTF-8
    write_truncated_jpeg(root / "trunc.jpg")
    (root / "trunc.txt").write_text("A truncated photo.")
    (root / "garbage.jpg").write_bytes(os.urandom(2000))
    (root / "garbage.txt").write_text("Random bytes.")
    (root / "drawing.svg").write_bytes(SVG)
    (root / "drawing.txt").write_text("A vector drawing.")
    write_bomb_png(root / "bomb.png")
    (root / "bomb.txt").write_text("A decompression bomb.")
    (root / ".hidden.jpg").write_bytes(b"ignored: hidden files are not user data")
    return {**{name: " ".join(cap.splitlines()[0].split()) for name, (_, cap) in good.items()},
            "clear.png": "A transparent square.", "anim.gif": "A red square."}


#: Skip counts :func:`make_txt_folder` must produce, by reason prefix.
TXT_FOLDER_SKIPS = {
    "image without caption": 1,
    "caption without image": 1,
    "empty caption": 1,
    "caption is not valid UTF-8": 1,
    "corrupt or truncated image": 2,
    "unsupported image format (SVG)": 1,
    "image too large": 1,
}


def skip_counts(report) -> dict[str, int]:
    """{reason: count} of a report, reasons cut to the prefixes used in the tables above."""
    out: Counter[str] = Counter()
    for reason, rows in report.skipped.items():
        if not rows:
            continue
        short = reason.split(";")[0]
        for prefix in (*TXT_FOLDER_SKIPS, "duplicate id", "unsafe path in archive",
                       "download failed (HTTP 404)", "download failed (timed out)",
                       "not an image (HTML page)", "unreadable TSV line",
                       "link or special file in archive"):
            if short.startswith(prefix):
                short = prefix
                break
        out[short] += len(rows)
    return dict(out)


def zip_folder(folder: Path, zip_path: Path, top: str | None = "upload",
               extra: dict[str, bytes] | None = None) -> Path:
    """Zip ``folder`` (under a top-level folder ``top``, as zipping a folder does) plus ``extra``
    entries written with their names exactly as given (for hostile names)."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                rel = path.relative_to(folder).as_posix()
                zf.write(path, f"{top}/{rel}" if top else rel)
        for name, data in (extra or {}).items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return zip_path


def add_zip_symlink(zip_path: Path, name: str, target: str) -> None:
    """Append a Unix symbolic-link entry (mode 0o120777), as ``zip -y`` stores one."""
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (0o120777 << 16)
    with zipfile.ZipFile(zip_path, "a") as zf:
        zf.writestr(info, target)


def make_zip_bomb(path: Path, megabytes: int = 120) -> Path:
    """A real zip bomb: ``megabytes`` of zeros deflated to ~0.1% of that."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("upload/zeros.jpg", "w") as out:
            block = b"\0" * (1024 * 1024)
            for _ in range(megabytes):
                out.write(block)
    return path


# ----------------------------------------------------------------------------- COCO and CC

def make_coco(root: Path, n_images: int = 8, folder: str = "val2017",
              url_base: str = "http://images.cocodataset.org") -> dict:
    """COCO-format captions JSON + images under ``root/folder``; returns the JSON dict.

    Image i has captions ``"image {i} caption {k}"`` for k in 0..2 (annotation order mixes
    images, as real files do). Plus: an annotation whose image is not listed (id 999), an
    image with no annotation (the last one), and one listed image whose file is absent.
    """
    images, annotations = [], []
    for i in range(n_images):
        name = f"{i + 1:012d}.jpg"
        images.append({"id": i + 1, "file_name": name, "coco_url": f"{url_base}/{folder}/{name}",
                       "width": 48, "height": 40})
        if i != 2:  # the third image's file is missing on disk
            write_image(root / folder / name, seed=100 + i)
    for k in range(3):
        for i in range(n_images - 1):  # the last image has no caption
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "caption": f"image {i + 1} caption {k}"})
    annotations.append({"id": 5000, "image_id": 999, "caption": "an image nobody listed"})
    data = {"info": {}, "licenses": [], "images": images, "annotations": annotations}
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"captions_{folder}.json").write_text(json.dumps(data))
    return data


def make_karpathy(root: Path, n_images: int = 6) -> Path:
    """Karpathy's ``dataset_coco.json`` with images under ``root/val2014``; splits alternate
    test/train."""
    images = []
    for i in range(n_images):
        name = f"COCO_val2014_{i + 1:012d}.jpg"
        write_image(root / "val2014" / name, seed=200 + i)
        images.append({"filepath": "val2014", "filename": name, "imgid": i, "cocoid": 1000 + i,
                       "split": "test" if i % 2 == 0 else "train",
                       "sentences": [{"raw": f"karpathy {i} sentence {k}", "tokens": []} for k in range(5)]})
    path = root / "dataset_coco.json"
    path.write_text(json.dumps({"dataset": "coco", "images": images}))
    return path


def write_cc_tsv(path: Path, rows: list[tuple[str, str]], header: bool = False) -> Path:
    lines = (["caption\turl"] if header else []) + [f"{c}\t{u}" for c, u in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_webdataset(path: Path) -> Path:
    """A webdataset shard: 3 good samples (jpg+txt, png+json, webp+txt), an image-only key,
    a caption-only key, an unsafe ``../`` member and a symlink member."""
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []

    def add(name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = int(time.time())
        members.append((info, data))

    add("000001.jpg", image_bytes("JPEG", 301))
    add("000001.txt", b"A wds photo of a tree.")
    add("000002.png", image_bytes("PNG", 302))
    add("000002.json", json.dumps({"caption": "A wds photo of a bridge.", "url": "x"}).encode())
    add("000003.webp", image_bytes("WEBP", 303))
    add("000003.txt", b"A wds photo of a cat.")
    add("000004.jpg", image_bytes("JPEG", 304))          # image without caption
    add("000005.txt", b"A caption with no image.")       # caption without image
    add("../000006.jpg", image_bytes("JPEG", 306))       # zip-slip style name
    link = tarfile.TarInfo("000007.jpg")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    members.append((link, None))
    with tarfile.open(path, "w") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


# ----------------------------------------------------------------------------- HTTP server

class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # Clients that give up (timeouts, size limits) make the handler's writes fail with a
        # broken pipe; that is the behaviour under test, not a server fault.
        pass


class LocalServer:
    """A real HTTP server on 127.0.0.1 (free port) serving ``files`` ({url path: bytes}).

    Route prefixes change behaviour: ``/slow/...`` waits ``slow_seconds`` before answering;
    ``/flaky/...`` answers 500 the first ``flaky_failures`` times per path; ``/cut/...`` sends
    half the body then closes the first time, and honours ``Range`` afterwards; ``/html/...``
    answers 200 with an HTML page; ``/drip/...`` sends its body in 20 pieces ``drip_seconds``
    apart (never silent for long, but slow in total); a path in ``redirects`` answers 302 to
    the location given; anything not in ``files`` is 404. ``hits`` counts requests per path and
    ``ranges`` records the Range headers received.
    """

    def __init__(self, files: dict[str, bytes], slow_seconds: float = 2.0, flaky_failures: int = 2,
                 delay: float = 0.0, redirects: dict[str, str] | None = None,
                 drip_seconds: float = 0.1) -> None:
        self.files = files
        self.slow_seconds = slow_seconds
        self.flaky_failures = flaky_failures
        self.delay = delay
        self.redirects = dict(redirects or {})
        self.drip_seconds = drip_seconds
        self.hits: Counter[str] = Counter()
        self.ranges: list[str] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):  # noqa: N802 (http.server's naming)
                path = self.path.split("?")[0]
                with server._lock:
                    server.hits[path] += 1
                    count = server.hits[path]
                    if "Range" in self.headers:
                        server.ranges.append(self.headers["Range"])
                if server.delay:
                    time.sleep(server.delay)
                if path.startswith("/slow/"):
                    time.sleep(server.slow_seconds)
                if path.startswith("/flaky/") and count <= server.flaky_failures:
                    return self._send(500, b"temporary failure")
                if path in server.redirects:
                    self.send_response(302)
                    self.send_header("Location", server.redirects[path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if path.startswith("/html/"):
                    return self._send(200, b"<!DOCTYPE html><html><body>Photo unavailable</body></html>",
                                      "text/html")
                body = server.files.get(path)
                if body is None:
                    return self._send(404, b"not found")
                if path.startswith("/drip/"):
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    step = max(1, -(-len(body) // 20))
                    try:
                        for start in range(0, len(body), step):
                            self.wfile.write(body[start:start + step])
                            self.wfile.flush()
                            time.sleep(server.drip_seconds)
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # the client gave up (a deadline under test)
                    return
                if path.startswith("/cut/") and count == 1:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    part = body[start:]
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                    self.send_header("Content-Length", str(len(part)))
                    self.end_headers()
                    self.wfile.write(part)
                    return
                return self._send(200, body)

            def _send(self, code: int, body: bytes, ctype: str = "application/octet-stream"):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    def __enter__(self) -> "LocalServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (connection refused at once)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# ----------------------------------------------------------------------------- hostile files

def file_tree(root: Path) -> set[str]:
    """Relative paths of every file and folder under ``root`` (to prove nothing else was written)."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def written_outside(before: set[str], after: set[str], *allowed: str) -> list[str]:
    """Paths in ``after`` but not ``before`` that are not under one of the ``allowed`` prefixes."""
    return sorted(p for p in after - before
                  if not any(p == a or p.startswith(a.rstrip("/") + "/") for a in allowed))


def make_clashing_zip(path: Path) -> Path:
    """A zip whose entries clash: ``x/b.jpg`` then a file ``x``; a file ``y`` then ``y/c.jpg``;
    a name part of 300 bytes; plus two good pairs (sidecar captions)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, seed in (("good1", 1), ("good2", 2)):
            zf.writestr(f"{name}.jpg", image_bytes("JPEG", seed))
            zf.writestr(f"{name}.txt", f"caption of {name}")
        zf.writestr("x/b.jpg", image_bytes("JPEG", 3))
        zf.writestr("x/b.txt", "caption of x/b")
        zf.writestr("x", b"a file where a folder already is")
        zf.writestr("y", b"a file first")
        zf.writestr("y/c.jpg", image_bytes("JPEG", 4))
        zf.writestr("n" * 300 + ".jpg", image_bytes("JPEG", 5))
    return path


def nested_json(depth: int) -> str:
    """``{"caption": [[[...]]]}`` nested ``depth`` lists deep."""
    return '{"caption": ' + "[" * depth + "]" * depth + "}"


def write_big_png(path: Path, width: int = 9000, height: int = 9000) -> Path:
    """A small file (a few hundred kB) declaring ``width x height`` pixels (81 MP by default):
    under Pillow's bomb threshold, costly to decode."""
    Image.new("1", (width, height)).save(path, optimize=True)
    return path


def make_npz_bomb(path: Path, rows: int = 20_000, dim: int = 1024) -> Path:
    """An ``.npz`` of two zero arrays deflated to about a thousandth of their size."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for key in ("image_embeddings", "text_embeddings"):
            with zf.open(f"{key}.npy", "w", force_zip64=True) as out:
                header = {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)}
                np.lib.format.write_array_header_1_0(out, header)
                block = bytes(4 * dim * 1000)
                for _ in range(rows // 1000):
                    out.write(block)
    return path
