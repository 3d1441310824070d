"""Second attack review of the cache and the command line, one class of defect per section:

1. the size cap and ``cache clear`` touch only what gapviz wrote, never through a link;
2. no cached result is ever shorter than its key says (files vanishing mid-run, a truncated or
   forged entry), and an entry is written atomically;
3. a full, read-only or broken cache is a one-line warning, the output is still written, and
   ``--no-cache`` never touches the cache;
4. control characters and ``|`` from files never reach the terminal or a markdown table raw;
5. a demo too large for memory is refused before allocating, and a MemoryError is one line.

Every fixture is generated; the embedding runs use the tiny random-weight open_clip model.
"""

import errno
import io
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from datafixtures import file_tree, register_tiny_model, write_image, zip_folder
from gapviz import cache as cache_module
from gapviz import tables
from gapviz.cache import (CacheWriteError, EmbeddingCache, cache_entries, cache_usage,
                          cache_write_problem, clean_stale, clear_cache, enforce_cap,
                          is_gapviz_entry)
from gapviz.cli import main
from gapviz.embeddings import PairedEmbeddings, load_embeddings, save_embeddings
from gapviz.safety import EscapingStream, markdown_cell, terminal_text

#: Names gapviz gives its entries (see gapviz.cache): downloads by URL hash under its first two
#: digits, extractions and uploads by 20 hex digits, embedding entries by their 40-hex key.
URL_HASH = "ab" + "c" * 38
EXTRACTION, UPLOAD, ENTRY = "1" * 20, "2" * 20, "e" * 40 + ".npz"
#: Terminal control characters (line feed and tab aside) that must never be printed raw.
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
HOSTILE = "evil\x1b[2J\x1b]0;pwned\x07\rforged\nwrote /etc/passwd | x \u202e|\\"


def _put(path: Path, data: bytes = b"x" * 100, age: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if age:
        stamp = time.time() - age
        os.utime(path, (stamp, stamp))
    return path


def _age(path: Path, seconds: float) -> Path:
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))
    return path


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` (not through links) and its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


# ---------------------------------------------------------------------------------------------
# 1. only what gapviz wrote, never through a link
# ---------------------------------------------------------------------------------------------
def _users_files(root: Path) -> None:
    """A shared folder's own files inside gapviz's area names, old enough to look stale."""
    _put(root / "downloads" / "report.pdf", age=9000)
    _put(root / "downloads" / "ab" / "notes.txt", age=9000)        # a 2-hex folder, not a hash name
    _put(root / "downloads" / "cd" / ("ab" + "0" * 38), age=9000)  # hash name under the wrong prefix
    _put(root / "downloads" / "photos" / "x.part", age=9000)
    _put(root / "uploads" / "my-upload" / "a.zip", age=9000)
    _put(root / "uploads" / ".DS_Store", age=9000)
    _put(root / "uploads" / "todo.txt", age=9000)
    _put(root / "extracted" / "holiday" / "p.jpg", age=9000)
    _put(root / "extracted" / ".git.config12", age=9000)            # a dot name, not gapviz's temp
    _put(root / "embeddings" / "mine.npz", age=9000)
    _put(root / "notes.txt", age=9000)


def _gapviz_files(root: Path) -> list[Path]:
    return [_put(root / "downloads" / "images" / "ab" / URL_HASH, age=500),
            _put(root / "downloads" / "images" / "ab" / f"{URL_HASH}.dead", age=500),
            _put(root / "downloads" / "ab" / URL_HASH / "captions.zip", age=500),
            _put(root / "extracted" / EXTRACTION / "a.jpg", age=400),
            _put(root / "uploads" / UPLOAD / "b.jpg", age=300),
            _put(root / "embeddings" / ENTRY, age=200),
            _age(_put(root / "extracted" / f".{EXTRACTION}.abcd1234" / "half.jpg").parent, 9000)]


def test_clear_cap_and_clean_up_touch_only_gapviz_entries(tmp_path, capsys):
    root = tmp_path / "shared"
    _users_files(root)
    users = _snapshot(root)
    ours = _gapviz_files(root)
    assert {e.path for e in cache_entries(root)} == {ours[0], ours[2], ours[3].parent,
                                                      ours[4].parent, ours[5]}
    assert not is_gapviz_entry(root, root / "downloads" / "report.pdf")
    assert is_gapviz_entry(root, ours[0]) and is_gapviz_entry(root, ours[3].parent)
    assert clean_stale(root) == [ours[6]]  # gapviz's stale temporary folder only
    assert len(enforce_cap(root, max_bytes=0)) == 5
    assert _snapshot(root) == users
    for p in _gapviz_files(root):
        assert p.exists()
    assert main(["cache", "clear", "--cache-dir", str(root)]) == 0
    assert "removed 5 entries" in capsys.readouterr().out
    assert _snapshot(root) == users  # byte for byte, gapviz's own files gone


@pytest.mark.parametrize("area", ["downloads", "uploads", "extracted", "embeddings"])
def test_an_area_that_is_a_link_is_never_read_or_deleted_through(tmp_path, capsys, area):
    root, elsewhere = tmp_path / "cache", tmp_path / "elsewhere"
    # gapviz-looking names on the far side of the link: still not gapviz's to delete
    names = {"downloads": f"images/ab/{URL_HASH}", "uploads": f"{UPLOAD}/b.jpg",
             "extracted": f"{EXTRACTION}/a.jpg", "embeddings": ENTRY}
    _put(elsewhere / names[area], age=9000)
    _put(elsewhere / f".{EXTRACTION}.abcd1234", age=9000)
    _put(elsewhere / "precious.txt", age=9000)
    root.mkdir()
    (root / area).symlink_to(elsewhere, target_is_directory=True)
    before = _snapshot(elsewhere)
    assert cache_entries(root) == [] and cache_usage(root).linked == [area]
    assert enforce_cap(root, max_bytes=0) == [] and clean_stale(root) == []
    assert main(["cache", "clear", "--cache-dir", str(root)]) == 0
    assert f"left {area}/ alone: a symbolic link" in capsys.readouterr().out
    assert main(["cache", "--cache-dir", str(root)]) == 0
    assert "a symbolic link: not gapviz's" in capsys.readouterr().out
    assert _snapshot(elsewhere) == before and (root / area).is_symlink()


def test_links_inside_an_area_are_not_followed_or_deleted(tmp_path):
    root, elsewhere = tmp_path / "cache", tmp_path / "elsewhere"
    _put(elsewhere / "ab" / URL_HASH, age=9000)
    _put(elsewhere / "keep.jpg", age=9000)
    (root / "downloads" / "images").mkdir(parents=True)
    (root / "downloads" / "images" / "ab").symlink_to(elsewhere / "ab", target_is_directory=True)
    (root / "uploads").mkdir()
    (root / "uploads" / UPLOAD).symlink_to(elsewhere, target_is_directory=True)
    (root / "embeddings").mkdir()
    (root / "embeddings" / ENTRY).symlink_to(elsewhere / "keep.jpg")
    before = _snapshot(elsewhere)
    assert cache_entries(root) == []
    clear_cache(root)
    assert _snapshot(elsewhere) == before
    assert (root / "uploads" / UPLOAD).is_symlink() and (root / "embeddings" / ENTRY).is_symlink()
    store = EmbeddingCache(root)
    assert store.load("e" * 40) is None  # a link in the entry's place is not an entry


def test_clear_leaves_a_running_commands_fresh_temporary_files(tmp_path):
    root = tmp_path / "cache"
    busy = _put(root / "extracted" / f".{EXTRACTION}.busy1234" / "a.jpg").parent
    part = _put(root / "downloads" / "images" / "ab" / f"{URL_HASH}.part")
    writing = _put(root / "embeddings" / f".{ENTRY}.wxyz1234.tmp")
    stale = _put(root / "embeddings" / f".{ENTRY}.old01234.tmp", age=9000)
    clear_cache(root)
    assert busy.is_dir() and part.is_file() and writing.is_file() and not stale.exists()


# ---------------------------------------------------------------------------------------------
# 2. no cached result shorter than its key; atomic entries
# ---------------------------------------------------------------------------------------------
def _embeddings(n: int, seed: int = 0) -> PairedEmbeddings:
    rng = np.random.default_rng(seed)
    return PairedEmbeddings(rng.normal(size=(n, 4)), rng.normal(size=(n, 4)),
                            ids=[f"p{i}" for i in range(n)], model="m")


def test_an_entry_records_its_size_and_a_short_or_foreign_one_is_a_miss(tmp_path):
    store = EmbeddingCache(tmp_path / "cache")
    key, ids = "a" * 40, [f"p{i}" for i in range(6)]
    path = store.save(key, _embeddings(6))
    assert [p.name for p in store.folder.iterdir()] == [path.name]  # no temporary file left
    hit = store.load(key, ids=ids)
    assert hit is not None and hit.n == 6 and cache_module.ENTRY_N_KEY not in hit.meta
    assert store.load(key, ids=ids[:5]) is None and not path.exists()  # other pairs: removed

    store.save(key, _embeddings(6))
    forged = _embeddings(6).subset(np.arange(3))  # fewer rows than the entry records
    forged.meta[cache_module.ENTRY_N_KEY] = 6
    save_embeddings(forged, path, overwrite=True)
    assert store.load(key) is None and not path.exists()

    save_embeddings(_embeddings(3), path)  # no record at all (written by hand, or by an old run)
    assert store.load(key) is None and not path.exists()

    store.save(key, _embeddings(6))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated copy
    assert store.load(key) is None and not path.exists()


def test_a_failed_write_leaves_no_entry_and_no_temporary_file(tmp_path, monkeypatch):
    store = EmbeddingCache(tmp_path / "cache")

    def full_disk(pairs, target):
        target.write(b"PK\x03\x04 half an entry")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module, "_write_npz", full_disk)
    with pytest.raises(CacheWriteError, match="No space left on device; free some space"):
        store.save("b" * 40, _embeddings(4))
    assert list(store.folder.iterdir()) == []


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("open_clip")
    return register_tiny_model(tmp_path_factory.mktemp("model-configs"))


def _photo_folder(root: Path, n: int = 8) -> Path:
    for i in range(n):
        write_image(root / f"p{i:02d}.jpg", seed=i, size=(24, 24))
        (root / f"p{i:02d}.txt").write_text(f"photo number {i}")
    return root


@pytest.fixture
def embed(tiny, capsys):
    """``gapviz embed`` with the tiny model; returns (exit status, stdout, stderr)."""
    def run(*args):
        rc = main(["embed", *map(str, args), "--model", tiny, "--pretrained", "none",
                   "--precision", "fp32"])
        out, err = capsys.readouterr()
        return rc, out, err
    return run


def test_images_vanishing_mid_run_are_never_cached_under_the_whole_sets_key(
        embed, tmp_path, monkeypatch):
    folder, cache = _photo_folder(tmp_path / "photos"), tmp_path / "cache"
    aside = tmp_path / "aside"
    aside.mkdir()
    real_key = EmbeddingCache.key

    def key_then_vanish(self, pairs, identity):
        # As `gapviz cache clear` under a running embed: the images go after the key was made.
        key = real_key(self, pairs, identity)
        for pair in pairs[::2]:
            shutil.move(pair.image_path, aside / Path(pair.image_path).name)
        return key

    monkeypatch.setattr(EmbeddingCache, "key", key_then_vanish)
    rc, out, err = embed(folder, "--out", tmp_path / "first.npz", "--cache-dir", cache)
    assert rc == 0 and "(4 pairs" in out and "skipped 4 while embedding" in err
    assert "not cached: 4 of 8 pairs failed while embedding" in err
    assert not any((cache / "embeddings").glob("*.npz"))
    monkeypatch.setattr(EmbeddingCache, "key", real_key)
    for moved in aside.iterdir():
        shutil.move(moved, folder / moved.name)
    rc, out, err = embed(folder, "--out", tmp_path / "again.npz", "--cache-dir", cache)
    assert rc == 0 and "(8 pairs" in out and "embedded in" in out and "from cache" not in out
    rc, out, _ = embed(folder, "--out", tmp_path / "third.npz", "--cache-dir", cache)
    assert rc == 0 and "(8 pairs" in out and "from cache" in out
    assert load_embeddings(tmp_path / "third.npz")[0].n == 8


def test_a_short_entry_under_the_full_key_is_replaced_not_served(embed, tmp_path):
    folder, cache = _photo_folder(tmp_path / "photos"), tmp_path / "cache"
    assert embed(folder, "--out", tmp_path / "a.npz", "--cache-dir", cache)[0] == 0
    (entry,) = (cache / "embeddings").glob("*.npz")
    full, _ = load_embeddings(entry)
    short = full.subset(np.arange(5))  # what the old bug stored: fewer rows, the full set's key
    save_embeddings(short, entry, overwrite=True)
    rc, out, _ = embed(folder, "--out", tmp_path / "b.npz", "--cache-dir", cache)
    assert rc == 0 and "(8 pairs" in out and "from cache" not in out
    assert load_embeddings(entry)[0].n == 8  # replaced by the complete result


# ---------------------------------------------------------------------------------------------
# 3. a cache that cannot be written: one warning, the output still written
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["folder", "zip"])
@pytest.mark.parametrize("no_cache", [False, True])
def test_a_cache_that_is_a_file_still_gives_the_output(embed, tmp_path, source, no_cache):
    folder = _photo_folder(tmp_path / "photos", n=4)
    src = folder if source == "folder" else zip_folder(folder, tmp_path / "photos.zip")
    blocked = _put(tmp_path / "cache-is-a-file", b"not a folder")
    extra = ["--no-cache"] if no_cache else []
    rc, out, err = embed(src, "--out", tmp_path / "out.npz", "--cache-dir", blocked, *extra)
    assert rc == 0, err
    assert "Traceback" not in err and "(4 pairs" in out
    assert load_embeddings(tmp_path / "out.npz")[0].n == 4
    warnings = [line for line in err.splitlines() if "warning" in line]
    if no_cache:
        assert warnings == []
    else:
        assert len(warnings) == 1 and "cannot write to the cache" in warnings[0]
        assert "it is a file, not a folder" in warnings[0] and "--cache-dir" in warnings[0]
    assert blocked.read_bytes() == b"not a folder"


def test_no_cache_never_touches_the_cache(embed, tmp_path):
    folder = _photo_folder(tmp_path / "photos", n=4)
    archive = zip_folder(folder, tmp_path / "photos.zip")
    cache = tmp_path / "cache"
    _put(cache / "embeddings" / ENTRY, b"not really an entry")
    before = _snapshot(cache), file_tree(cache)
    rc, out, err = embed(archive, "--out", tmp_path / "out.npz", "--cache-dir", cache, "--no-cache")
    assert rc == 0 and "(4 pairs" in out, err
    assert (_snapshot(cache), file_tree(cache)) == before
    assert "temporary folder, removed now" in err


def test_a_full_disk_at_the_cache_write_is_a_warning(embed, tmp_path, monkeypatch):
    folder, cache = _photo_folder(tmp_path / "photos", n=4), tmp_path / "cache"

    def full_disk(pairs, target):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module, "_write_npz", full_disk)
    rc, out, err = embed(folder, "--out", tmp_path / "out.npz", "--cache-dir", cache, "-q")
    assert rc == 0 and "(4 pairs" in out and "Traceback" not in err
    (line,) = err.splitlines()  # one line, even with --quiet
    assert line.startswith("  warning: embeddings not cached: cannot write the cache entry")
    assert "No space left on device" in line
    assert list((cache / "embeddings").iterdir()) == []


def test_a_cache_filling_up_while_loading_falls_back_to_a_temporary_folder(
        embed, tmp_path, monkeypatch):
    from gapviz.cli import embed as embed_cli

    folder = _photo_folder(tmp_path / "photos", n=4)
    archive, cache = zip_folder(folder, tmp_path / "photos.zip"), tmp_path / "cache"
    real_load, calls = embed_cli._load, []

    def fills_up_once(args, kind, progress, cache_dir):
        calls.append(cache_dir)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device",
                          str(cache / "extracted" / ".x.abcd1234" / "p00.jpg"))
        return real_load(args, kind, progress, cache_dir)

    monkeypatch.setattr(embed_cli, "_load", fills_up_once)
    rc, out, err = embed(archive, "--out", tmp_path / "out.npz", "--cache-dir", cache)
    assert rc == 0 and "(4 pairs" in out, err
    assert calls[0] == str(cache) and calls[1] != str(cache)
    assert sum("cannot write to the cache" in line for line in err.splitlines()) == 1


def test_cache_write_problem_names_what_is_wrong(tmp_path):
    assert cache_write_problem(tmp_path / "fresh") is None
    assert list((tmp_path / "fresh").iterdir()) == []  # the probe is gone
    _put(tmp_path / "file")
    assert cache_write_problem(tmp_path / "file") == "it is a file, not a folder"
    assert "Not a directory" in cache_write_problem(tmp_path / "file" / "below")


def test_an_os_error_writing_the_output_is_one_line(tmp_path, capsys, monkeypatch):
    from gapviz.cli import embed as embed_cli

    save_embeddings(_embeddings(4), tmp_path / "in.npz")

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out.npz"))

    monkeypatch.setattr(embed_cli, "save_embeddings", full_disk)
    assert main(["embed", str(tmp_path / "in.npz"), "--out", str(tmp_path / "out.npz"), "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"gapviz embed: error: No space left on device ({tmp_path / 'out.npz'}); "
                   "free some space or choose a folder on another disk, then run the command "
                   "again.")


# ---------------------------------------------------------------------------------------------
# 4. control characters and | from files
# ---------------------------------------------------------------------------------------------
def test_terminal_text_and_markdown_cell():
    assert terminal_text("a\x1b[2Jb\x07\r\n\t\x9b\u202e\x7f") == "a\\x1b[2Jb\\x07\\r\\n\\t\\x9b\\u202e\\x7f"
    assert terminal_text("C:\\data\\x.npz") == "C:\\data\\x.npz"  # backslashes stay readable
    assert terminal_text("a\nb\tc\x1b", keep="\n\t") == "a\nb\tc\\x1b"
    assert markdown_cell("a|b\\") == "a\\|b\\\\" and markdown_cell("x\x1by") == "x\\x1by"
    stream = io.StringIO()
    escaping = EscapingStream(stream, rewind=True)
    escaping.write("\rprogress 3/8")   # a progress line rewriting itself: kept
    escaping.write("name\rforged\n")  # a carriage return inside a printed name: shown
    assert stream.getvalue() == "\rprogress 3/8name\\rforged\n"


@pytest.mark.parametrize("fmt", ["table", "markdown", "csv", "json"])
@pytest.mark.parametrize("transpose", [False, True])
def test_tables_show_hostile_run_names_as_text(fmt, transpose):
    columns = {HOSTILE: {"ITR": 1.5, "R@5": 0.25}, "ORIG": {"ITR": 2.0, "R@5": 0.5}}
    out = tables.render(columns, fmt, title=HOSTILE, transpose=transpose)
    assert not RAW_CONTROL.search(out)
    lines = out.splitlines()
    if fmt == "markdown":
        cells = [len(re.findall(r"(?<!\\)\|", line)) for line in lines]
        assert len(set(cells)) == 1, out  # every row has the header's columns
    if fmt in ("table", "markdown"):
        assert len(lines) == (5 if fmt == "table" else 4)  # title, header, rule, 2 rows
    if fmt == "json":
        import json

        assert HOSTILE in json.loads(out)["columns"]  # JSON keeps the name, escaped by json


def test_text_columns_escape_their_cells():
    rendered = tables.render({"a": {"ITR": 1.0}}, "markdown", transpose=True)
    out = tables.add_text_columns(rendered, "markdown", {"a": [HOSTILE, "1", "2"]})
    assert not RAW_CONTROL.search(out)
    assert len({len(re.findall(r"(?<!\\)\|", line)) for line in out.splitlines()}) == 1


@pytest.mark.parametrize("argv", [
    ["evaluate", "{a}"], ["evaluate", "{a}", "--format", "markdown"],
    ["compare", "{a}", "{b}"], ["compare", "{a}", "{b}", "--format", "markdown"],
    ["embed", "{a}", "--out", "{out}"],
])
def test_no_command_prints_a_control_character_from_a_file(tmp_path, capsys, argv):
    for name, seed in (("a", 0), ("b", 1)):
        pairs = _embeddings(30, seed)
        pairs.model = HOSTILE + name
        save_embeddings(pairs, tmp_path / f"{name}.npz")
    args = [a.format(a=tmp_path / "a.npz", b=tmp_path / "b.npz", out=tmp_path / "o.npz") for a in argv]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert not RAW_CONTROL.search(out) and not RAW_CONTROL.search(err)
    if argv[0] == "embed":
        (line,) = out.splitlines()  # the "wrote" line cannot be split into a forged one
        assert line.startswith("wrote ") and "\\x1b[2J" in line and "\\nwrote" in line


def test_an_error_naming_a_hostile_file_is_one_line(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "no\nsuch\x1b[2J.npz")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not RAW_CONTROL.search(err) and "no\\nsuch\\x1b[2J" in err


# ---------------------------------------------------------------------------------------------
# 5. sizes that cannot fit
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["evaluate", "compare"])
def test_a_demo_too_large_for_memory_is_refused_before_allocating(capsys, command, monkeypatch):
    import gapviz.cli.common as common

    monkeypatch.setattr(common, "simulate_pairs", lambda *a, **k: pytest.fail("allocated"))
    assert main([command, "demo", "--n", "100000000", "--dim", "100000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MemoryError" not in err
    assert f"gapviz {command}: error: a demo of 100,000,000 pairs x 100,000 dimensions" in err
    assert "lower --n or --dim" in err


def test_the_estimate_uses_the_memory_available(capsys, monkeypatch):
    import gapviz.cli.common as common

    monkeypatch.setattr(common, "available_memory", lambda: 1024**2)  # 1 MiB left
    assert main(["evaluate", "demo", "--n", "200", "--dim", "64"]) == 2
    assert "more than the 1.0 MiB available" in capsys.readouterr().err
    monkeypatch.setattr(common, "available_memory", lambda: None)  # unknown: no refusal
    assert main(["evaluate", "demo", "--n", "200", "--dim", "64", "--format", "json"]) == 0


def test_running_out_of_memory_is_one_line(capsys, monkeypatch):
    import gapviz.cli.common as common

    def oom(*args, **kwargs):
        raise MemoryError("Unable to allocate 5.00 PiB for an array")

    monkeypatch.setattr(common, "simulate_pairs", oom)
    assert main(["evaluate", "demo", "--n", "100", "--dim", "8"]) == 1
    err = capsys.readouterr().err
    assert err == ("gapviz evaluate: error: out of memory (Unable to allocate 5.00 PiB for an "
                   "array); use less data (a smaller --n or --dim, a sample of the file) or a "
                   "machine with more memory.\n")


@pytest.mark.parametrize("area", ["extracted", "uploads", "embeddings"])
def test_gapviz_never_writes_through_an_area_that_is_a_link(tmp_path, area):
    """As clear and the cap never delete through a link, loading and caching never write
    through one: a cache area that is a symbolic link is refused with what to do, and the
    folder it points to is left as it was."""
    from gapviz.data import load_folder, save_upload
    from gapviz.data.defaults import CacheAreaError

    cache, elsewhere = tmp_path / "cache", tmp_path / "elsewhere"
    cache.mkdir()
    elsewhere.mkdir()
    (elsewhere / "theirs.txt").write_text("not gapviz's")
    (cache / area).symlink_to(elsewhere, target_is_directory=True)
    pairs_dir = tmp_path / "pairs"
    for i in range(3):
        write_image(pairs_dir / f"img{i}.jpg", seed=i)
        (pairs_dir / f"img{i}.txt").write_text(f"picture {i}")
    with pytest.raises(CacheAreaError, match="symbolic link"):
        if area == "extracted":
            load_folder(zip_folder(pairs_dir, tmp_path / "pairs.zip"), cache_dir=cache)
        elif area == "uploads":
            save_upload([("a.txt", b"a caption")], cache_dir=cache)
        else:
            EmbeddingCache(cache).save("0" * 40, PairedEmbeddings(
                np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32), ["a", "b", "c"]))
    assert sorted(p.name for p in elsewhere.iterdir()) == ["theirs.txt"]
