"""The cache: size cap with least-recently-used eviction, stale temporary files, show and clear."""

import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from datafixtures import LocalServer, image_bytes, make_zip_bomb, write_image
from gapviz.cache import (EmbeddingCache, cache_entries, cache_usage, clean_stale, clear_cache,
                          enforce_cap, max_cache_bytes)
from gapviz.data import DataError, load_folder
from gapviz.data.download import Downloader
from gapviz.embeddings import PairedEmbeddings


# Names as gapviz gives them (the cap and clear touch no others): a download is
# <2 hex>/<40 hex> with the same first digits, an extraction and an upload 20 hex digits, an
# embedding entry its 40-hex key.
OLD, NEW, STALE = "ab" + "1" * 38, "cd" + "2" * 38, "ab" + "3" * 38
K1, U1, E1 = "1" * 20, "2" * 20, "e" * 40 + ".npz"


def put(path: Path, size: int, age: float) -> Path:
    """A file of ``size`` bytes last used ``age`` seconds ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(size))
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


def age(path: Path, seconds: float) -> None:
    stamp = time.time() - seconds
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(p, (stamp, stamp))


@pytest.fixture
def cache(tmp_path):
    root = tmp_path / "cache"
    put(root / "downloads" / "images" / "ab" / OLD, 1000, 500)
    put(root / "downloads" / "images" / "ab" / f"{OLD}.dead", 10, 500)   # bookkeeping, not an entry
    put(root / "extracted" / K1 / "a.jpg", 3000, 400)
    put(root / "uploads" / U1 / "x.zip", 2000, 300)
    put(root / "embeddings" / E1, 1500, 200)
    put(root / "downloads" / "images" / "cd" / NEW, 1000, 10)
    put(root / "notes.txt", 99_999, 1000)      # not a cache area: never counted, never touched
    put(root / "models" / "w.bin", 99_999, 1000)
    age(root / "extracted" / K1, 400)  # a folder entry's own time stamp counts too
    age(root / "uploads" / U1, 300)
    return root


def test_usage_counts_only_the_cache_areas(cache):
    usage = cache_usage(cache)
    assert usage.bytes_by_area == {"downloads": 2000, "extracted": 3000, "uploads": 2000,
                                   "embeddings": 1500}
    assert usage.entries_by_area["downloads"] == 2 and usage.total == 8500
    assert usage.lines()[0].startswith(f"cache {cache}: 8.3 KiB of ")


def test_least_recently_used_entries_go_first_and_kept_ones_stay(cache):
    removed = enforce_cap(cache, max_bytes=5000, keep=[cache / "extracted" / K1 / "a.jpg"])
    # Oldest first: the old download (1000) is removed, the extraction (in use) is skipped,
    # then the upload (2000) goes: 8500 -> 5500 -> still over, then the embeddings entry.
    assert removed == [cache / "downloads" / "images" / "ab" / OLD, cache / "uploads" / U1,
                       cache / "embeddings" / E1]
    assert not (cache / "downloads" / "images" / "ab" / f"{OLD}.dead").exists()
    assert sum(e.size for e in cache_entries(cache)) == 4000
    assert (cache / "notes.txt").is_file() and (cache / "models" / "w.bin").is_file()
    assert enforce_cap(cache, max_bytes=5000) == []


def test_cap_from_the_environment(monkeypatch):
    monkeypatch.setenv("GAPVIZ_CACHE_MAX_GB", "0.5")
    assert max_cache_bytes() == 512 * 1024**2
    monkeypatch.setenv("GAPVIZ_CACHE_MAX_GB", "")
    assert max_cache_bytes() == 10 * 1024**3
    from gapviz.data.defaults import LimitSettingError

    for bad in ("lots", "inf", "-1", "nan"):  # one rule for every limit: refused by name
        monkeypatch.setenv("GAPVIZ_CACHE_MAX_GB", bad)
        with pytest.raises(LimitSettingError, match="GAPVIZ_CACHE_MAX_GB"):
            max_cache_bytes()


def test_reuse_counts_as_use(tmp_path):
    up = tmp_path / "up"
    write_image(up / "a.jpg")
    (up / "a.txt").write_text("a photo")
    write_image(up / "b.jpg", seed=1)
    (up / "b.txt").write_text("a boat")
    archive = tmp_path / "up.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(up.iterdir()):
            zf.write(p, p.name)
    cache = tmp_path / "cache"
    load_folder(archive, cache_dir=cache)
    (folder,) = (cache / "extracted").iterdir()
    age(folder, 5000)
    load_folder(archive, cache_dir=cache)  # reused, so now the most recently used
    assert time.time() - folder.stat().st_mtime < 60
    with LocalServer({"/a.jpg": image_bytes("JPEG")}) as server:
        d = Downloader(cache / "downloads" / "images")
        path = d.fetch(server.url + "/a.jpg")
        age(path, 5000)
        d.fetch(server.url + "/a.jpg")
        assert time.time() - path.stat().st_mtime < 60 and server.hits["/a.jpg"] == 1
    store = EmbeddingCache(cache)
    rng = np.random.default_rng(0)
    entry = store.save("k", PairedEmbeddings(rng.normal(size=(3, 2)), rng.normal(size=(3, 2))))
    age(entry, 5000)
    assert store.load("k") is not None and time.time() - entry.stat().st_mtime < 60


def test_loading_keeps_the_cache_under_its_cap_but_not_the_pairs_in_use(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    put(cache / "downloads" / "images" / "ab" / STALE, 600_000, 9000)
    up = tmp_path / "up"
    for i in range(3):
        write_image(up / f"{i}.jpg", seed=i, size=(300, 300))
        (up / f"{i}.txt").write_text(f"photo {i}")
    archive = tmp_path / "up.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(up.iterdir()):
            zf.write(p, p.name)
    monkeypatch.setenv("GAPVIZ_CACHE_MAX_GB", str(100_000 / 1024**3))  # 100 kB: smaller than this load
    pairs, _ = load_folder(archive, cache_dir=cache)
    assert len(pairs) == 3 and all(Path(p.image_path).is_file() for p in pairs)
    assert not (cache / "downloads" / "images" / "ab" / STALE).exists()


def test_small_zip_that_would_fill_the_cache_is_refused(tmp_path):
    bomb = make_zip_bomb(tmp_path / "b.zip", megabytes=90)
    assert bomb.stat().st_size < 200_000
    with pytest.raises(DataError, match="zip bomb"):
        load_folder(bomb, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "extracted").exists() or not any(
        (tmp_path / "cache" / "extracted").iterdir())


def test_stale_temporary_files_are_cleaned(tmp_path):
    cache = tmp_path / "cache"
    old_tmp = put(cache / "extracted" / f".{K1}.x1y2abcd" / "half.jpg", 100, 0).parent
    age(old_tmp, 7200)
    fresh_tmp = put(cache / "extracted" / f".{U1}.z9z9z9z9" / "busy.jpg", 100, 0).parent
    old_write = put(cache / "embeddings" / f".{E1}.tmp12345.npz", 100, 7200)
    old_part = put(cache / "downloads" / "images" / "ab" / f"{OLD}.part", 100, 7200)
    fresh_part = put(cache / "downloads" / "images" / "ab" / f"{STALE}.part", 100, 5)
    removed = clean_stale(cache)
    assert sorted(removed) == sorted([old_tmp, old_write, old_part])
    assert fresh_tmp.is_dir() and fresh_part.is_file() and not old_tmp.exists()


def test_killed_extraction_leaves_a_temp_folder_that_the_next_run_removes(tmp_path):
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(4000):
            zf.writestr(f"{i:05d}.txt", f"caption {i}" * 200)
    cache = tmp_path / "cache"
    code = ("import sys; from gapviz.data.archives import extract; from gapviz.data import DataReport;"
            f"extract({str(archive)!r}, {str(cache)!r}, DataReport())")
    proc = subprocess.Popen([sys.executable, "-c", code])
    extracted = cache / "extracted"
    deadline = time.time() + 60
    temps = []
    while time.time() < deadline and not temps and proc.poll() is None:
        temps = [p for p in extracted.glob(".*") if any(p.iterdir())] if extracted.is_dir() else []
        time.sleep(0.005)
    if not temps:
        proc.kill()
        pytest.skip("the extraction finished before it could be interrupted")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (leftover,) = [p for p in extracted.iterdir() if p.name.startswith(".")]
    assert not [p for p in extracted.iterdir() if not p.name.startswith(".")]  # never half-finished
    age(leftover, 7200)  # an hour later...
    from gapviz.data.archives import extract
    from gapviz.data.pairs import DataReport

    final = extract(archive, cache, DataReport())
    assert not leftover.exists() and len(list(final.iterdir())) == 4000


def test_clear_removes_the_cache_areas_only(cache):
    count, freed = clear_cache(cache, areas=["downloads"])
    assert count == 2 and freed == 2000
    assert not [p for p in (cache / "downloads").rglob("*") if not p.is_dir()]  # .dead too
    assert (cache / "extracted" / K1).is_dir()
    with pytest.raises(ValueError, match=r"unknown cache area\(s\) \['models'\]"):
        clear_cache(cache, areas=["models"])
    count, freed = clear_cache(cache)
    assert count == 3 and freed == 6500 and cache_usage(cache).total == 0
    assert (cache / "notes.txt").is_file() and (cache / "models" / "w.bin").is_file()


def test_a_flood_of_empty_files_counts_toward_the_cap(tmp_path):
    """Empty files cost an inode each: they count MIN_FILE_BYTES, so the cap sees a flood."""
    from gapviz.cache import MIN_FILE_BYTES

    folder = tmp_path / "extracted" / ("e" * 20)
    folder.mkdir(parents=True)
    for i in range(300):
        (folder / f"{i}.txt").write_bytes(b"")
    usage = cache_usage(tmp_path)
    assert usage.bytes_by_area["extracted"] == 300 * MIN_FILE_BYTES
    assert enforce_cap(tmp_path, max_bytes=1000) == [folder]
