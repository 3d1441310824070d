"""``gapviz cache`` (show, clear) and ``gapviz embed``'s early check of ``--out``."""

from gapviz.cli import main

from datafixtures import file_tree, write_image


KEY = "1" * 20            # an extraction's name as gapviz gives it
DOWNLOAD = "ab" + "f" * 38  # a download's: a hash of its URL, under its first two digits


def _cache_with_entries(root):
    (root / "extracted" / KEY).mkdir(parents=True)
    (root / "extracted" / KEY / "a.jpg").write_bytes(bytes(3000))
    (root / "downloads" / "images" / "ab").mkdir(parents=True)
    (root / "downloads" / "images" / "ab" / DOWNLOAD).write_bytes(bytes(1000))
    (root / "mine.txt").write_text("not gapviz's")
    return root


def test_cache_show_and_clear(tmp_path, capsys):
    root = _cache_with_entries(tmp_path / "cache")
    assert main(["cache", "--cache-dir", str(root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"cache {root}: 3.9 KiB of ")
    assert any(line.split()[:3] == ["downloads", "1", "entries"] for line in out)
    assert any(line.split()[:3] == ["extracted", "1", "entries"] for line in out)
    assert main(["cache", "clear", "--area", "downloads", "--cache-dir", str(root)]) == 0
    assert "removed 1 entries" in capsys.readouterr().out
    assert (root / "extracted" / KEY / "a.jpg").is_file()
    assert not (root / "downloads" / "images" / "ab" / DOWNLOAD).exists()
    assert main(["cache", "clear", "--cache-dir", str(root)]) == 0
    assert main(["cache", "show", "--cache-dir", str(root)]) == 0
    assert "(empty)" in capsys.readouterr().out
    assert (root / "mine.txt").read_text() == "not gapviz's"


def _upload(tmp_path):
    up = tmp_path / "up"
    for i in range(2):
        write_image(up / f"{i}.jpg", seed=i)
        (up / f"{i}.txt").write_text(f"photo {i}")
    return up


def test_embed_out_that_is_a_folder_fails_before_embedding(tmp_path, capsys):
    up = _upload(tmp_path)
    (tmp_path / "out.npz").mkdir()
    before = file_tree(tmp_path)
    code = main(["embed", str(up), "--out", str(tmp_path / "out.npz"), "--overwrite",
                 "--cache-dir", str(tmp_path / "cache"), "--pretrained", "none", "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == (f"gapviz embed: error: {tmp_path / 'out.npz'} is a folder; give a "
                                 f"file name such as {tmp_path / 'out.npz' / 'embeddings.npz'}.")
    assert file_tree(tmp_path) == before  # nothing loaded, cached or written


def test_embed_out_in_an_unwritable_place_fails_before_embedding(tmp_path, capsys):
    up = _upload(tmp_path)
    (tmp_path / "afile").write_text("x")
    before = file_tree(tmp_path)
    code = main(["embed", str(up), "--out", str(tmp_path / "afile" / "e.npz"),
                 "--cache-dir", str(tmp_path / "cache"), "--pretrained", "none", "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "is a file, not a folder; choose another output path" in err
    assert "\n" not in err and "Traceback" not in err
    code = main(["embed", str(up), "--out", "/proc/gapviz-test/e.npz",
                 "--cache-dir", str(tmp_path / "cache"), "--pretrained", "none", "-q"])
    assert code == 2 and "cannot write in" in capsys.readouterr().err
    assert file_tree(tmp_path) == before
