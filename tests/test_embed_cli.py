"""The ``embed`` command end to end: real files and a real server in, an embeddings file out."""

import argparse
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from datafixtures import (LocalServer, image_bytes, make_coco, make_txt_folder, make_webdataset,
                          register_tiny_model, write_cc_tsv, write_image, zip_folder)
from gapviz.cli.embed import detect_kind, main, register
from gapviz.embeddings import PairedEmbeddings, load_embeddings, save_embeddings

pytest.importorskip("open_clip")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return register_tiny_model(tmp_path_factory.mktemp("model-configs"))


@pytest.fixture
def run(tiny, tmp_path, capsys):
    """Run ``embed`` with the tiny model and a private cache; returns (rc, stdout, stderr)."""
    def _run(*args, model=True):
        argv = [str(a) for a in args] + ["--cache-dir", str(tmp_path / "cache")]
        if model:
            argv += ["--model", tiny, "--pretrained", "none"]
        rc = main(argv)
        out, err = capsys.readouterr()
        return rc, out, err
    return _run


def test_register_adds_embed_to_a_parser():
    parser = argparse.ArgumentParser(prog="gapviz")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["embed", "photos/", "--out", "x.npz", "--pretrained", "none"])
    assert args.func.__name__ == "run" and args.source == "photos/" and args.pretrained == "none"


def test_folder_to_file_then_cache_hit(run, tmp_path):
    expected = make_txt_folder(tmp_path / "up")
    out = tmp_path / "emb.npz"
    rc, stdout, stderr = run(tmp_path / "up", "--out", out)
    assert rc == 0, stderr
    assert "kept 6 of 14 pairs" in stderr and "unsupported image format (SVG)" in stderr
    assert "embedded in" in stdout
    pairs, report = load_embeddings(out)
    assert report.n_kept == 6 and pairs.dim == 32
    assert dict(zip(pairs.ids, pairs.captions)) == expected
    assert all(p.startswith(str(tmp_path / "up")) for p in pairs.image_paths)
    assert pairs.meta["source_kind"] == "folder" and "kept 6 of 14" in pairs.meta["data_report"]
    np.testing.assert_allclose(np.linalg.norm(pairs.image_embeddings, axis=1), 1, atol=1e-5)
    # Again: the cache answers, and the file is identical.
    rc, stdout, _ = run(tmp_path / "up", "--out", out, "--overwrite")
    assert rc == 0 and "from cache" in stdout
    again, _ = load_embeddings(out)
    np.testing.assert_array_equal(again.image_embeddings, pairs.image_embeddings)


def test_zip_source_and_parquet_output(run, tmp_path):
    make_txt_folder(tmp_path / "up")
    archive = zip_folder(tmp_path / "up", tmp_path / "up.zip", extra={"../evil.jpg": image_bytes("JPEG")})
    rc, _, stderr = run(archive, "--out", tmp_path / "emb.parquet", "--n", "4", "--seed", "1")
    assert rc == 0, stderr
    assert "unsafe path in archive" in stderr
    pairs, _ = load_embeddings(tmp_path / "emb.parquet")
    assert pairs.n == 4 and pairs.captions and pairs.image_paths


def test_coco_files_with_image_folder(run, tmp_path):
    make_coco(tmp_path, n_images=10)
    rc, _, stderr = run(tmp_path / "annotations" / "captions_val2017.json", "--images",
                        tmp_path / "val2017", "--n", "5", "--caption", "random", "--out",
                        tmp_path / "coco.npz", "-q")
    assert rc == 0 and stderr == ""
    pairs, _ = load_embeddings(tmp_path / "coco.npz")
    assert pairs.n == 5 and all(c.startswith("image ") for c in pairs.captions)
    assert pairs.meta["caption_choice"] == "random"


def test_cc_tsv_through_a_local_server(run, tmp_path):
    files = {f"/img/{i}.jpg": image_bytes("JPEG", i) for i in range(6)}
    with LocalServer(files) as server:
        rows = [(f"photo {i}", f"{server.url}/img/{i}.jpg") for i in range(8)]  # 6 and 7 are dead
        tsv = write_cc_tsv(tmp_path / "cc.tsv", rows)
        rc, stdout, stderr = run("cc", "--tsv", tsv, "--n", "5", "--retries", "0",
                                 "--out", tmp_path / "cc.npz")
    assert rc == 0, stderr
    pairs, _ = load_embeddings(tmp_path / "cc.npz")
    assert pairs.n == 5 and set(pairs.captions) <= {f"photo {i}" for i in range(6)}
    assert "wrote" in stdout


def test_webdataset_tar(run, tmp_path):
    tar = make_webdataset(tmp_path / "shard.tar")
    assert detect_kind(str(tar)) == "webdataset"
    rc, _, stderr = run(tar, "--out", tmp_path / "wds.npz")
    assert rc == 0, stderr
    assert load_embeddings(tmp_path / "wds.npz")[0].ids == ["000001", "000002", "000003"]


def test_precomputed_embeddings_come_in_too(run, tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
    x[2] = np.nan
    save_embeddings(PairedEmbeddings(x, y, model="LLM2CLIP-Openai-L-14"), tmp_path / "llm2clip.npz")
    rc, stdout, stderr = run(tmp_path / "llm2clip.npz", "--out", tmp_path / "checked.parquet", model=False)
    assert rc == 0 and "precomputed" in stdout and "skipped 1: NaN" in stderr
    pairs, _ = load_embeddings(tmp_path / "checked.parquet")
    assert pairs.n == 4 and pairs.model == "LLM2CLIP-Openai-L-14"


def test_detect_kind(tmp_path):
    write_image(tmp_path / "up" / "a.jpg")
    (tmp_path / "up" / "captions.csv").write_text("image,caption\na.jpg,x\n")
    with zipfile.ZipFile(tmp_path / "ann.zip", "w") as zf:
        zf.writestr("annotations/captions_val2017.json", "{}")
    zip_folder(tmp_path / "up", tmp_path / "up.zip")
    assert detect_kind("coco") == "coco" and detect_kind("CC") == "cc"
    assert detect_kind(str(tmp_path / "up")) == "folder"
    assert detect_kind(str(tmp_path / "up" / "captions.csv")) == "captions"
    assert detect_kind(str(tmp_path / "ann.zip")) == "coco"
    assert detect_kind(str(tmp_path / "up.zip")) == "archive"
    assert detect_kind("https://example.org/Validation_GCC.tsv") == "cc"


@pytest.mark.parametrize("args, message", [
    (["nowhere/", "--out", "x.npz"], "no such file or folder"),
    (["{up}", "--out", "x.csv"], "choose a .npz or .parquet"),
    (["{up}"], "give --out"),
    (["{up}", "--out", "x.npz", "--n", "0"], "--n must be at least 1"),
    (["{up}", "--out", "x.npz", "--model", "ViT-B-33"], "Did you mean"),
    (["{bad}", "--out", "x.npz"], "only 0 usable pair(s)"),
])
def test_bad_input_is_one_clear_message(run, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    make_txt_folder(tmp_path / "up")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_bytes(b"corrupt")
    (tmp_path / "bad" / "x.txt").write_text("a caption")
    argv = [a.format(up=tmp_path / "up", bad=tmp_path / "bad") for a in args]
    has_model = "--model" in argv
    rc, _, stderr = run(*argv, model=not has_model)
    assert rc == 2
    assert message in stderr and "Traceback" not in stderr
    assert stderr.count("gapviz embed: error:") == 1


def test_existing_output_is_not_replaced(run, tmp_path):
    make_txt_folder(tmp_path / "up")
    (tmp_path / "x.npz").write_bytes(b"precious")
    rc, _, stderr = run(tmp_path / "up", "--out", tmp_path / "x.npz")
    assert rc == 2 and "--overwrite" in stderr
    assert (tmp_path / "x.npz").read_bytes() == b"precious"


def test_real_process_exit_code_and_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "gapviz", "embed", str(tmp_path / "missing"),
                             "--out", str(tmp_path / "x.npz")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "no such file or folder" in result.stderr and "Traceback" not in result.stderr


def test_list_models(run):
    rc, stdout, _ = run("--list-models", model=False)
    assert rc == 0 and "ViT-L-14-quickgelu" in stdout and "--pretrained openai" in stdout
