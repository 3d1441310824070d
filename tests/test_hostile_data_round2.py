"""Hostile data, second round: one generated-fixture test per defect class.

1. thin images whose resize for a model would be gigapixels; 2. compressed tar streams read
whole before any limit; 3. floods of empty entries and a disk that fills up mid-extraction;
4. captions files of huge row counts; 5. limit variables set to inf, nan, negative or garbage;
6. NFD names, named pipes in a folder, encrypted zip entries.
"""

import bz2
import errno
import gzip
import io
import lzma
import os
import struct
import subprocess
import sys
import tarfile
import threading
import time
import unicodedata
import zipfile
import zlib
from pathlib import Path

import pytest
from PIL import Image

from datafixtures import image_bytes, register_tiny_model, write_image
from gapviz import hosting
from gapviz.data import DataError, DataReport, archives, images, load_folder, load_webdataset
from gapviz.data.archives import ENCRYPTED_ENTRY, ArchiveLimits, extract
from gapviz.data.defaults import (MAX_RESIZED_PIXELS, LimitSettingError, archive_entries_limit,
                                  captions_limits, decode_budget_bytes)
from gapviz.data.folder import LONG_LINE
from gapviz.data.images import (NOT_REGULAR_FILE, DecodeBudget, ImageError, check_image,
                                decoded_bytes, reserve_for_model, resize_bytes, resize_problem,
                                resized_size, too_thin_reason)
from gapviz.data.pairs import NO_IMAGE


def one_line(err) -> str:
    text = str(err.value if hasattr(err, "value") else err)
    assert "\n" not in text and "Traceback" not in text
    return text


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG of ``width`` x ``height`` (1-bit grey) with no pixel data: about 60 bytes whose
    header declares the size, all an attacker needs to reach the resize."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b""))
    return path


def tar_bytes(members, mode="w", fmt=tarfile.PAX_FORMAT) -> bytes:
    """A tar of ``(name, data or None for a folder)``, compressed by ``mode`` (``w:gz`` ...)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=fmt) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tar_blocks(members) -> bytes:
    """Tar headers and data of ``(name, data)`` without the end-of-archive blocks, to append to."""
    out = b""
    for name, data in members:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        out += info.tobuf(tarfile.PAX_FORMAT) + data + bytes(-len(data) % tarfile.BLOCKSIZE)
    return out


def nothing_extracted(cache: Path) -> bool:
    extracted = cache / "extracted"
    return not extracted.exists() or not any(extracted.iterdir())


# ------------------------------------------------------------------ 1. thin images

def test_thin_images_are_refused_before_the_resize_and_the_resize_is_reserved(tmp_path, monkeypatch):
    # The pure rule: the resized picture has side**2 * aspect pixels, up or down.
    assert resized_size(1, 40_000_000, 224) == (224, 8_960_000_000)
    assert resized_size(640, 480, 224) == (299, 224)
    assert resize_problem(1, 40_000_000, 224) == too_thin_reason(224)
    assert resize_problem(640, 480, 224) is None and resize_problem(6000, 20, 224) is None
    assert "crop it nearer to square" in too_thin_reason(224)
    # The attack: a 60-byte PNG declaring 1 x 40,000,000 px, under the pixel limit.
    strip = png_header_only(tmp_path / "strip.png", 1, 40_000_000)
    assert strip.stat().st_size < 120
    started = time.perf_counter()
    with pytest.raises(ImageError) as err:
        with reserve_for_model(strip, 224):
            pytest.fail("the strip was let through to the resize")
    assert err.value.reason == too_thin_reason(224) and "1x40000000" in str(err.value)
    assert time.perf_counter() - started < 1  # refused from the header
    # An ordinary wide picture holds the budget for its decode *and* its resize, once.
    budget = DecodeBudget(10 * 1024**3)
    monkeypatch.setattr(images, "DECODE_BUDGET", budget)
    wide = write_image(tmp_path / "wide.png", "PNG", size=(1000, 10))
    with reserve_for_model(wide, 224):
        rgb = images.open_rgb(wide)  # nested: draws on the outer reservation, never waits
        assert budget.used == budget.peak
    assert rgb.size == (1000, 10) and budget.used == 0
    with Image.open(wide) as header:
        expected = decoded_bytes(header, to_rgb=True) + resize_bytes(1000, 10, 224)
    assert budget.peak == expected and expected > 4 * 22_400 * 224


def test_the_embedding_pipeline_skips_a_thin_strip_with_its_reason(tmp_path):
    pytest.importorskip("open_clip")
    from gapviz.embed_pipeline import embed_stream
    from gapviz.encode import ModelSpec, load_model

    loaded = load_model(ModelSpec(register_tiny_model(tmp_path / "configs"), "none"))
    side = 32  # the tiny model's input
    limit_aspect = MAX_RESIZED_PIXELS // side**2
    paths = [str(write_image(tmp_path / "ok.png", "PNG", size=(400, 40))),
             str(png_header_only(tmp_path / "strip.png", 1, 40_000_000)),
             str(png_header_only(tmp_path / "band.png", (limit_aspect + 10) * 2, 2))]
    result = embed_stream(loaded, paths, ["a", "b", "c"], precision="fp32", workers=2, lanes=1)
    assert result.failures == {1: too_thin_reason(side), 2: too_thin_reason(side)}
    assert not (result.images[0] != result.images[0]).any()  # the ordinary one was embedded


# ------------------------------------------------------------------ 2. compressed tar streams

@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_a_tar_header_claiming_a_huge_size_stops_the_read_at_once(tmp_path, mode):
    # One member declares a terabyte (a pax size field): refused from its header, before the
    # data it announces is read or decompressed (tarfile would seek through it for hours).
    info = tarfile.TarInfo("000001.jpg")
    info.size = 10**12
    header = info.tobuf(tarfile.PAX_FORMAT)
    body = tar_blocks([("000000.jpg", image_bytes("JPEG")), ("000000.txt", b"a photo")])
    raw = body + header + b"\xff" * 4096
    compress = {"w": lambda b: b, "w:gz": gzip.compress, "w:bz2": bz2.compress,
                "w:xz": lzma.compress}[mode]
    shard = tmp_path / "claim.tar"
    shard.write_bytes(compress(raw))
    started = time.perf_counter()
    with pytest.raises(DataError) as err:
        load_webdataset(shard, cache_dir=tmp_path / "cache")
    assert "would expand to at least 931.3 GiB" in one_line(err) and "claim.tar" in str(err.value)
    assert time.perf_counter() - started < 5 and nothing_extracted(tmp_path / "cache")


def test_an_oversized_extended_header_is_refused_before_it_is_read(tmp_path):
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = 2 * 1024**3  # tarfile would read 2 GiB into memory for it
    shard = tmp_path / "pax.tar.bz2"
    shard.write_bytes(bz2.compress(header.tobuf(tarfile.USTAR_FORMAT) + bytes(8192)))
    with pytest.raises(DataError, match=r"a tar header of 2,147,483,648 bytes.*Nothing was extracted"):
        load_webdataset(shard, cache_dir=tmp_path / "cache")


def test_entries_and_bytes_are_counted_while_a_compressed_tar_is_read(tmp_path):
    # Millions of headers in a few kB of bz2: the read stops at the entry limit.
    data = tar_bytes([(f"{i:06d}.txt", b"") for i in range(3000)], mode="w:bz2")
    shard = tmp_path / "many.tar.bz2"
    shard.write_bytes(data)
    read = []
    real = archives._CountingReader.read

    def counting(self, size=-1):
        out = real(self, size)
        read.append(len(out))
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(archives._CountingReader, "read", counting)
        with pytest.raises(DataError, match=r"more than 1,000 entries .*split it"):
            load_webdataset(shard, cache_dir=tmp_path / "cache",
                            limits=ArchiveLimits(max_entries=1000))
    assert sum(read) < 3000 * 1024 * 0.6  # stopped well before the end of the stream
    assert nothing_extracted(tmp_path / "cache")
    # A zip's central directory is counted record by record before zipfile parses it.
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as zf:
        for i in range(1500):
            zf.writestr(f"e{i}.txt", b"")
    assert archives._zip_entry_count(many, 1000) == 1001
    assert archives._zip_entry_count(many, 10_000) == 1500
    with pytest.raises(DataError, match=r"more than 1,000 entries"):
        load_folder(many, cache_dir=tmp_path / "cache", limits=ArchiveLimits(max_entries=1000))


# ------------------------------------------------------------------ 3. empty entries, full disk

def test_empty_entries_and_folders_count_and_a_refusal_leaves_nothing(tmp_path, monkeypatch):
    # Folders and empty files are entries like any other.
    members = [(f"d{i}", None) for i in range(800)] + [(f"d{i}/x.txt", b"") for i in range(300)]
    shard = tmp_path / "flood.tar"
    shard.write_bytes(tar_bytes(members))
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"more than 1,000 entries \(files and folders, empty ones"):
        extract(shard, cache, DataReport(), limits=ArchiveLimits(max_entries=1000))
    assert nothing_extracted(cache)  # a plain tar's headers are checked before any write
    # Each written file counts as a disk block: 10,000 empty files in a 30 kB tar.gz is 40 MiB.
    # A compressed tar is checked as it streams: the 8,000-odd files written before the limit
    # was reached are removed with their temporary folder.
    flood = tmp_path / "flood.tar.gz"
    flood.write_bytes(tar_bytes([(f"{i:05d}.txt", b"") for i in range(10_000)], mode="w:gz"))
    assert flood.stat().st_size < 100_000
    written = []
    real_open = open
    monkeypatch.setattr(archives, "open", lambda path, mode="r", *a, **k: written.append(mode)
                        or real_open(path, mode, *a, **k), raising=False)
    with pytest.raises(DataError, match="flood of empty files"):
        extract(flood, cache, DataReport())
    assert 7000 < written.count("wb") < 9000 and nothing_extracted(cache)


class _FullDisk(io.BytesIO):
    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_fails_the_extraction_and_leaves_nothing_taken_as_finished(tmp_path, monkeypatch):
    up = tmp_path / "up.zip"
    with zipfile.ZipFile(up, "w") as zf:
        for i in range(3):
            zf.writestr(f"{i}.jpg", image_bytes("JPEG", i))
            zf.writestr(f"{i}.txt", f"photo {i}")
    cache = tmp_path / "cache"
    real_open = open
    opened = []

    def filling_open(path, mode="r", *args, **kwargs):
        if "w" in mode and len(opened) >= 2:  # the third file hits a full disk
            return _FullDisk()
        opened.append(path)
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(archives, "open", filling_open, raising=False)
    with pytest.raises(DataError) as err:
        load_folder(up, cache_dir=cache)
    assert "the disk is full" in one_line(err) and "nothing was kept" in str(err.value)
    assert "GAPVIZ_CACHE_DIR" in str(err.value)
    assert nothing_extracted(cache)
    monkeypatch.undo()
    pairs, _ = load_folder(up, cache_dir=cache)  # a later run extracts again, completely
    assert sorted(p.caption for p in pairs) == ["photo 0", "photo 1", "photo 2"]
    # A folder without its manifest (an interrupted extraction by an older version, say) is
    # never taken as finished: it is extracted again.
    (final,) = (cache / "extracted").iterdir()
    (final / "manifest.json").unlink()
    (final / "files" / "0.jpg").write_bytes(b"")
    pairs, report = load_folder(up, cache_dir=cache)
    assert len(pairs) == 3 and report.n_kept == 3


def test_a_reused_extraction_reports_its_skips_again(tmp_path):
    shard = tmp_path / "s.tar.gz"
    shard.write_bytes(tar_bytes([("000001.jpg", image_bytes("JPEG", 1)), ("000001.txt", b"a tree"),
                                 ("000002.jpg", image_bytes("JPEG", 2)), ("000002.txt", b"a cat"),
                                 ("../evil.txt", b"x")], mode="w:gz"))
    first = load_webdataset(shard, cache_dir=tmp_path / "cache")[1]
    again = load_webdataset(shard, cache_dir=tmp_path / "cache")[1]
    assert first.skipped == again.skipped and first.examples == again.examples
    assert len(first.skipped[archives.UNSAFE_PATH]) == 1 and first.n_kept == 2


# ------------------------------------------------------------------ 4. huge captions files

def _two_images(folder: Path) -> None:
    write_image(folder / "a.jpg")
    write_image(folder / "b.jpg", seed=1)


def test_a_captions_file_of_many_rows_is_streamed_matched_and_bounded(tmp_path, monkeypatch):
    up = tmp_path / "up"
    _two_images(up)
    rows = [f"gone/{i}.jpg,caption {i}" for i in range(100_000)]
    (up / "captions.csv").write_text("image,caption\na.jpg,a cat\n" + "\n".join(rows)
                                     + "\nb.jpg,a dog\n" + "c.jpg," + "x" * (1024**2 + 10) + "\n")
    started = time.perf_counter()
    pairs, report = load_folder(up)
    assert time.perf_counter() - started < 10
    assert [(p.id, p.caption) for p in pairs] == [("a.jpg", "a cat"), ("b.jpg", "a dog")]
    assert len(report.skipped[NO_IMAGE]) == 100_000  # every row accounted for
    assert report.examples[LONG_LINE] == ["captions.csv line 100004"]  # skipped, not held
    # Row limit: reached while reading, said with the variable that raises it.
    monkeypatch.setenv("GAPVIZ_MAX_CAPTION_ROWS", "50000")
    with pytest.raises(DataError) as err:
        load_folder(up)
    assert "more than 50,000 rows" in one_line(err) and "$GAPVIZ_MAX_CAPTION_ROWS" in str(err.value)
    # Size limit: refused before reading.
    monkeypatch.setenv("GAPVIZ_MAX_CAPTIONS_MB", "0.5")
    with pytest.raises(DataError, match=r"captions.csv: .* MiB, more than the 0.5 MiB a captions "
                                        r"file may have.*GAPVIZ_MAX_CAPTIONS_MB"):
        load_folder(up)
    assert captions_limits() == (512 * 1024, 50_000)


def test_a_million_row_captions_file_in_a_small_zip_is_refused_while_reading(tmp_path):
    archive = tmp_path / "up.zip"
    rows = "".join(f"x{i}.jpg,a caption\n" for i in range(260_000))  # past the default limit
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.jpg", image_bytes("JPEG"))
        zf.writestr("b.jpg", image_bytes("JPEG", 1))
        zf.writestr("captions.csv", "image,caption\n" + rows)
    assert archive.stat().st_size < 2 * 1024**2
    started = time.perf_counter()
    with pytest.raises(DataError, match=r"more than 250,000 rows"):
        load_folder(archive, cache_dir=tmp_path / "cache")
    assert time.perf_counter() - started < 15


# ------------------------------------------------------------------ 5. limit variables

READERS = {
    "GAPVIZ_MAX_DECODE_MB": decode_budget_bytes,
    "GAPVIZ_MAX_ARCHIVE_ENTRIES": archive_entries_limit,
    "GAPVIZ_MAX_CAPTIONS_MB": captions_limits,
    "GAPVIZ_MAX_CAPTION_ROWS": captions_limits,
    "GAPVIZ_MAX_UPLOAD_MB": hosting.limits,
    "GAPVIZ_MAX_DOWNLOAD_MB": hosting.limits,
    "GAPVIZ_DOWNLOAD_SECONDS": hosting.limits,
    "GAPVIZ_TOTAL_DOWNLOAD_SECONDS": hosting.limits,
}


@pytest.mark.parametrize("name", sorted(READERS))
@pytest.mark.parametrize("value, says", [
    ("inf", "is not a finite number"), ("-inf", "is not a finite number"),
    ("nan", "is not a finite number"), ("1e400", "is not a finite number"),
    ("-5", "must be positive"), ("0", "must be positive"), ("lots", "is not a number"),
    ("1e300", "is too large")])
def test_every_limit_variable_follows_one_rule(monkeypatch, name, value, says):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError) as err:  # LimitSettingError, or HostedRefusal for hosting's
        READERS[name]()
    assert f"${name}={value!r} {says}" in one_line(err)
    assert "set it to a positive number of" in str(err.value) and "unset it" in str(err.value)
    monkeypatch.setenv(name, " 2.5 ")
    READERS[name]()  # a good value is read


def test_a_bad_decode_limit_breaks_no_import_and_is_not_a_corrupt_image(tmp_path, monkeypatch):
    env = {**os.environ, "GAPVIZ_MAX_DECODE_MB": "inf"}
    code = "import gapviz.data, gapviz.embed_pipeline, gapviz.cli; print('imported')"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "imported" in done.stdout, done.stderr
    monkeypatch.setattr(images, "DECODE_BUDGET", DecodeBudget())  # read at first use
    monkeypatch.setenv("GAPVIZ_MAX_DECODE_MB", "inf")
    path = write_image(tmp_path / "a.png", "PNG")
    with pytest.raises(LimitSettingError, match=r"\$GAPVIZ_MAX_DECODE_MB='inf' is not a finite"):
        check_image(path)
    monkeypatch.setenv("GAPVIZ_MAX_DECODE_MB", "64")
    assert check_image(path) is None and images.DECODE_BUDGET.limit == 64 * 1024**2


# ------------------------------------------------------------------ 6. names, pipes, encryption

def test_nfd_file_names_pair_with_nfc_captions(tmp_path):
    nfd = unicodedata.normalize("NFD", "café crème.jpg")
    nfc = unicodedata.normalize("NFC", "café crème.jpg")
    assert nfd != nfc
    up = tmp_path / "up"
    write_image(up / nfd)
    write_image(up / "b.jpg", seed=1)
    (up / "captions.csv").write_text(f"image,caption\n{nfc},a coffee\nb.jpg,a boat\n", encoding="utf-8")
    pairs, report = load_folder(up)
    assert {p.id: p.caption for p in pairs} == {nfc: "a coffee", "b.jpg": "a boat"}
    assert report.n_kept == 2 and not report.skipped
    # The .txt-beside layout: an NFD image beside an NFC caption file.
    side = tmp_path / "side"
    write_image(side / nfd)
    (side / unicodedata.normalize("NFC", "café crème.txt")).write_text("a coffee")
    write_image(side / "b.jpg", seed=1)
    (side / "b.txt").write_text("a boat")
    pairs, report = load_folder(side)
    assert {p.id: p.caption for p in pairs} == {nfc: "a coffee", "b.jpg": "a boat"}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need a POSIX system")
def test_named_pipes_in_a_folder_are_skipped_not_waited_for(tmp_path):
    up = tmp_path / "up"
    _two_images(up)
    (up / "a.txt").write_text("a photo")
    (up / "b.txt").write_text("a boat")
    for name in ("pipe.jpg", "pipe2.jpg", "pipe2.txt", "notes"):
        os.mkfifo(up / name)
    (up / "pipe3.jpg").write_bytes(image_bytes("JPEG", 3))
    os.mkfifo(up / "pipe3.txt")
    result = {}
    loader = threading.Thread(target=lambda: result.update(out=load_folder(up)), daemon=True)
    loader.start()
    loader.join(60)
    assert not loader.is_alive(), "the load blocked on a named pipe"
    pairs, report = result["out"]
    assert sorted(p.id for p in pairs) == ["a.jpg", "b.jpg"]
    # Each once: the stray pipe, a pipe image with a pipe caption, an image whose caption is a
    # pipe; a pipe image without any caption is just that.
    assert sorted(report.examples[NOT_REGULAR_FILE]) == ["notes", "pipe2.jpg", "pipe3.jpg"]
    assert report.examples["image without caption"] == ["pipe.jpg"] and report.n_read == 6
    assert "named pipe" in NOT_REGULAR_FILE and "put the file itself" in NOT_REGULAR_FILE
    # A captions file that is a pipe is a clear error, and a row naming a pipe is skipped.
    os.mkfifo(up / "captions.csv")
    with pytest.raises(DataError, match="captions.csv: not a regular file"):
        load_folder(up)
    (up / "captions.csv").unlink()
    (up / "captions.csv").write_text("image,caption\na.jpg,a cat\npipe.jpg,a pipe\nb.jpg,a boat\n")
    pairs, report = load_folder(up)
    assert sorted(p.id for p in pairs) == ["a.jpg", "b.jpg"] and "pipe.jpg (captions.csv row 2)" in \
        report.examples[NOT_REGULAR_FILE]


def _flag_encrypted(path: Path, name: str) -> None:
    """Set the 'encrypted' flag of entry ``name`` in its local header and its central directory
    record, as a password-protected zip has it (zipfile cannot write encrypted entries)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        local = zf.getinfo(name).header_offset
    data[local + 6] |= 0x01
    at = data.find(b"PK\x01\x02")
    while at != -1:
        length = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46:at + 46 + length] == name.encode():
            data[at + 8] |= 0x01
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))


def test_encrypted_zip_entries_are_reported_as_encrypted(tmp_path):
    archive = tmp_path / "up.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(3):
            zf.writestr(f"{i}.jpg", image_bytes("JPEG", i))
            zf.writestr(f"{i}.txt", f"photo {i}")
    _flag_encrypted(archive, "1.jpg")
    with zipfile.ZipFile(archive) as zf:
        assert zf.getinfo("1.jpg").flag_bits & 0x1
    pairs, report = load_folder(archive, cache_dir=tmp_path / "cache")
    assert sorted(p.id for p in pairs) == ["0.jpg", "2.jpg"]
    assert report.examples[ENCRYPTED_ENTRY] == ["1.jpg"]
    assert "without a password" in ENCRYPTED_ENTRY
    assert not any("corrupt" in reason for reason in report.skipped)


def test_the_embeddings_and_cache_limits_follow_the_one_rule(monkeypatch):
    """Every gapviz limit variable is read by one rule: infinite, negative or garbage values
    are refused by name (never an OverflowError, never a silent default)."""
    from gapviz.cache import max_cache_bytes
    from gapviz.data.defaults import LimitSettingError
    from gapviz.embeddings import max_embeddings_bytes

    monkeypatch.setenv("GAPVIZ_MAX_EMBEDDINGS_MB", "64")
    assert max_embeddings_bytes() == 64 * 1024**2
    for name, read in (("GAPVIZ_MAX_EMBEDDINGS_MB", max_embeddings_bytes),
                       ("GAPVIZ_CACHE_MAX_GB", max_cache_bytes)):
        for bad in ("inf", "-5", "lots", "nan"):
            monkeypatch.setenv(name, bad)
            with pytest.raises(LimitSettingError, match=name):
                read()
        monkeypatch.delenv(name)
