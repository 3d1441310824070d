"""``gapviz embed --ray``: shards equal to a single-process embed, a killed run resumes, and the
shards folder feeds ``evaluate`` and ``compare``; and the folder reader, which needs no Ray.

The Ray tests run on a local runtime of 2 CPUs with a tiny random-weight open_clip model on
1,000 generated pairs. They are skipped where Ray is not installed (CI installs only
requirements.txt; ``pip install -r requirements-scale.txt`` runs them).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from datafixtures import make_webdataset, register_tiny_model, write_image
from gapviz import cli
from gapviz.embeddings import (EmbeddingsFileError, PairedEmbeddings, load_embeddings,
                               save_embeddings)

ROOT = Path(__file__).resolve().parents[1]
N_PAIRS = 1000
SHARD = 128
needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason='Ray is not installed (pip install "gapviz[scale]" or -r requirements-scale.txt)')


def _pairs(n: int, d: int, prefix: str, seed: int, model: str = "m") -> PairedEmbeddings:
    rng = np.random.default_rng(seed)
    return PairedEmbeddings(rng.normal(size=(n, d)), rng.normal(size=(n, d)),
                            [f"{prefix}{i}" for i in range(n)], [f"caption {prefix}{i}" for i in range(n)],
                            model=model, meta={"source": "x", "shard": {"start": 0}})


# ------------------------------------------------------------------ the folder reader, no Ray

def test_a_folder_of_shards_reads_as_one_set_in_name_order(tmp_path):
    a, b = _pairs(5, 4, "a", 0), _pairs(3, 4, "b", 1)
    save_embeddings(b, tmp_path / "part-1.parquet")  # written first, read second
    save_embeddings(a, tmp_path / "part-0.parquet")
    (tmp_path / ".part-2.parquet.tmp").write_bytes(b"half written")  # hidden: left out
    (tmp_path / "_manifest.json").write_text("{}")
    pairs, report = load_embeddings(tmp_path)
    assert pairs.ids == a.ids + b.ids and pairs.captions == a.captions + b.captions
    np.testing.assert_array_equal(pairs.image_embeddings,
                                  np.vstack([a.image_embeddings, b.image_embeddings]))
    np.testing.assert_array_equal(pairs.text_embeddings,
                                  np.vstack([a.text_embeddings, b.text_embeddings]))
    assert pairs.model == "m" and pairs.meta == {"source": "x", "shards": 2}
    assert report.n_read == 8 and report.n_kept == 8 and not report.warnings


def test_shards_are_validated_together(tmp_path):
    save_embeddings(_pairs(4, 4, "a", 0), tmp_path / "p0.parquet")
    save_embeddings(_pairs(3, 4, "a", 1), tmp_path / "p1.parquet")  # ids a0..a2 again
    pairs, report = load_embeddings(tmp_path)
    assert pairs.n == 4 and report.skipped["duplicate id (first occurrence kept)"] == [4, 5, 6]
    # The size limit is the folder's total, though each shard is under it.
    from gapviz.embeddings import _parquet_size

    sizes = [_parquet_size(tmp_path / f"p{i}.parquet") for i in (0, 1)]
    limit = max(sizes) + 1
    assert limit < sum(sizes)
    with pytest.raises(EmbeddingsFileError, match="more than the"):
        load_embeddings(tmp_path, max_bytes=limit)
    assert load_embeddings(tmp_path / "p0.parquet", max_bytes=limit)[0].n == 4


@pytest.mark.parametrize("other, message", [
    (lambda: _pairs(3, 8, "b", 1), "d=8, but p0.parquet has d=4; the shards of one folder must "
                                   "come from one model"),
    (lambda: _pairs(3, 4, "b", 1, model="other"), "model 'other', but p0.parquet has 'm'"),
])
def test_shards_of_different_models_are_refused(tmp_path, other, message):
    save_embeddings(_pairs(4, 4, "a", 0), tmp_path / "p0.parquet")
    save_embeddings(other(), tmp_path / "p1.parquet")
    with pytest.raises(EmbeddingsFileError, match=message):
        load_embeddings(tmp_path)


def test_folder_problems_are_one_line(tmp_path):
    with pytest.raises(EmbeddingsFileError, match="a folder without .parquet shards"):
        load_embeddings(tmp_path)
    save_embeddings(_pairs(4, 4, "a", 0), tmp_path / "p0.parquet")
    (tmp_path / "p1.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(EmbeddingsFileError, match=r"p1.parquet: not a readable parquet file"):
        load_embeddings(tmp_path)


def test_without_ray_the_option_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    rc = cli.main(["embed", str(tmp_path), "--ray", "--out", str(tmp_path / "shards")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert err.startswith("gapviz embed: error: --ray needs Ray Data") and 'pip install "gapviz[scale]"' in err


# ------------------------------------------------------------------ the actor and shard writer

def test_the_actor_marks_failed_images_and_the_shard_leaves_them_out(tmp_path):
    pytest.importorskip("open_clip")
    from gapviz.data.pairs import Pair
    from gapviz.encode import ModelSpec
    from gapviz.ray_embed import PairEncoder, write_shard

    tiny = register_tiny_model(tmp_path / "configs")
    paths = [write_image(tmp_path / f"{i}.jpg", seed=i, size=(24, 24)) for i in range(3)]
    paths[1].write_bytes(b"no longer an image")  # changed after listing
    pairs = [Pair(f"p{i}", str(p), f"caption {i}") for i, p in enumerate(paths)]
    encoder = PairEncoder(ModelSpec(tiny, "none"), device="cpu", precision="fp32")
    rows = encoder({"index": np.arange(3), "shard": np.zeros(3, int),
                    "caption": np.array([p.caption for p in pairs], object),
                    "image_path": np.array([p.image_path for p in pairs], object)})
    assert rows["skipped"][0] == rows["skipped"][2] == "" and rows["skipped"][1]
    assert np.isnan(rows["image_embedding"][1]).all() and np.isfinite(rows["text_embedding"]).all()
    kept, skipped = write_shard(tmp_path / "pairs-0-3.parquet", rows, pairs, 0, "tiny", {"k": 1})
    assert kept == 2 and skipped == {rows["skipped"][1]: ["p1"]}
    read, _ = load_embeddings(tmp_path / "pairs-0-3.parquet")
    assert read.ids == ["p0", "p2"] and read.meta["shard"] == {"start": 0, "end": 3,
                                                               "skipped": skipped}
    np.testing.assert_allclose(read.image_embeddings, rows["image_embedding"][[0, 2]], atol=1e-6)


# ------------------------------------------------------------------ on a local Ray runtime

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("open_clip")
    return register_tiny_model(tmp_path_factory.mktemp("model-configs"))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """1,000 small images with a captions.csv."""
    folder = tmp_path_factory.mktemp("pairs")
    lines = ["image,caption"]
    for i in range(N_PAIRS):
        write_image(folder / f"{i:04d}.jpg", seed=i, size=(24, 20))
        lines.append(f"{i:04d}.jpg,a picture number {i} of {N_PAIRS}")
    (folder / "captions.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def ray_runtime():
    ray = pytest.importorskip("ray", reason='Ray is not installed (pip install "gapviz[scale]")')
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


def _embed(tiny, source, out, *extra) -> int:
    argv = ["embed", str(source), "--out", str(out), "--model", tiny, "--pretrained", "none",
            "--precision", "fp32", "--no-cache", "-q", *map(str, extra)]
    return cli.main(argv)


@pytest.fixture(scope="module")
def single(tiny, source, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "single.parquet"
    assert _embed(tiny, source, out) == 0
    return load_embeddings(out)[0]


@pytest.fixture(scope="module")
def shards(tiny, source, single, ray_runtime, tmp_path_factory):
    out = tmp_path_factory.mktemp("ray") / "shards"
    assert _embed(tiny, source, out, "--ray", "--shard-size", SHARD) == 0
    return out


def _names(n: int = N_PAIRS, size: int = SHARD) -> list[str]:
    return [f"pairs-{s:09d}-{min(s + size, n):09d}.parquet" for s in range(0, n, size)]


def _assert_same(pairs: PairedEmbeddings, single: PairedEmbeddings) -> None:
    assert pairs.n == single.n == N_PAIRS
    assert pairs.ids == single.ids and pairs.captions == single.captions
    assert pairs.image_paths == single.image_paths and pairs.model == single.model
    np.testing.assert_allclose(pairs.image_embeddings, single.image_embeddings, atol=2e-6)
    np.testing.assert_allclose(pairs.text_embeddings, single.text_embeddings, atol=2e-6)


@needs_ray
def test_shards_equal_a_single_process_embed(shards, single):
    assert sorted(p.name for p in shards.glob("*.parquet")) == _names()
    pairs, report = load_embeddings(shards)
    _assert_same(pairs, single)
    assert report.n_kept == N_PAIRS and pairs.meta["shards"] == len(_names())
    assert pairs.meta["precision"] == "fp32" and pairs.meta["engine"].startswith("ray ")
    last, _ = load_embeddings(shards / _names()[-2])  # one shard alone is a valid file too
    assert last.ids == single.ids[768:896] and last.meta["shard"]["start"] == 768
    # Shards hold the file format save_embeddings writes.
    import pyarrow.parquet as pq

    assert pq.read_schema(shards / _names()[0]).remove_metadata() == \
        pq.read_schema(_written_by_save(single, shards.parent)).remove_metadata()


def _written_by_save(pairs: PairedEmbeddings, folder: Path) -> Path:
    return save_embeddings(pairs.subset(range(4)), folder / "reference.parquet", overwrite=True)


@needs_ray
def test_a_killed_run_resumes_without_rewriting_finished_shards(tiny, source, single,
                                                                ray_runtime, tmp_path):
    out = tmp_path / "shards"
    # A real process on its own local runtime; each shard write is slowed so it is killed
    # (SIGKILL, no clean-up) with some shards written and others not.
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        from pathlib import Path
        from datafixtures import register_tiny_model
        import gapviz.ray_embed as ray_embed
        register_tiny_model(Path({str(tmp_path / 'configs')!r}))
        write = ray_embed.write_shard
        def slow_write(*args, **kwargs):
            out = write(*args, **kwargs)
            time.sleep(2.0)
            return out
        ray_embed.write_shard = slow_write
        from gapviz import cli
        sys.exit(cli.main(["embed", {str(source)!r}, "--out", {str(out)!r}, "--model", {tiny!r},
                           "--pretrained", "none", "--precision", "fp32", "--no-cache", "-q",
                           "--ray", "--shard-size", "{SHARD}"]))
        """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while len(list(out.glob("pairs-*.parquet"))) < 2:
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no shard written in 120 s"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the process and the Ray runtime it started
        proc.wait()
    finished = {p.name: p.stat() for p in out.glob("pairs-*.parquet")}
    assert 2 <= len(finished) < len(_names())
    assert _embed(tiny, source, out, "--ray", "--shard-size", SHARD) == 0
    assert sorted(p.name for p in out.glob("*.parquet")) == _names()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    for name, before in finished.items():  # not rewritten
        after = (out / name).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), name
    _assert_same(load_embeddings(out)[0], single)


@needs_ray
def test_a_rerun_with_another_model_is_refused_then_overwrites(tiny, source, shards, capsys,
                                                                tmp_path):
    capsys.readouterr()
    assert _embed(tiny, source, shards, "--ray", "--shard-size", SHARD, "--weights-seed", 1) == 2
    err = capsys.readouterr().err
    assert "holds the shards of another run" in err and "--overwrite" in err
    assert _embed(tiny, source, shards, "--ray", "--shard-size", SHARD) == 0  # the same run: all there
    assert "0 of 8 shards" in capsys.readouterr().out
    (tmp_path / "mine.txt").write_text("not a shard")
    assert _embed(tiny, source, tmp_path, "--ray") == 2
    assert "holds other files (mine.txt)" in capsys.readouterr().err


@needs_ray
def test_the_shards_folder_feeds_evaluate_and_compare(shards, single, tmp_path, capsys):
    capsys.readouterr()
    assert cli.main(["evaluate", str(shards), "--format", "json"]) == 0
    from_shards = json.loads(capsys.readouterr().out)
    path = save_embeddings(single, tmp_path / "single.parquet")
    assert cli.main(["evaluate", str(path), "--format", "json"]) == 0
    from_file = json.loads(capsys.readouterr().out)
    assert from_shards["dataset"]["n_pairs"] == N_PAIRS
    measures = {k: v for k, v in from_file["metrics"].items() if isinstance(v, (int, float))}
    assert len(measures) > 10
    for name, value in measures.items():
        assert from_shards["metrics"][name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    assert cli.main(["compare", str(shards), "--methods", "orig,center", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["method"] for r in rows] == ["orig", "center"]
    assert all(r["error"] is None and r["provenance"]["n_scored"] == N_PAIRS for r in rows)
    assert rows[0]["metrics"]["ITR"] == from_shards["metrics"]["ITR"]


@needs_ray
def test_a_webdataset_tar_through_ray_with_a_one_pair_shard(tiny, ray_runtime, tmp_path):
    tar = make_webdataset(tmp_path / "wds.tar")
    cache = ["--cache-dir", tmp_path / "cache"]
    assert _embed(tiny, tar, tmp_path / "one.npz", *cache) == 0
    assert _embed(tiny, tar, tmp_path / "shards", "--ray", "--shard-size", 2, *cache) == 0
    assert sorted(p.name for p in (tmp_path / "shards").glob("*.parquet")) == [
        "pairs-000000000-000000002.parquet", "pairs-000000002-000000003.parquet"]
    pairs, single = load_embeddings(tmp_path / "shards")[0], load_embeddings(tmp_path / "one.npz")[0]
    assert pairs.ids == single.ids == ["000001", "000002", "000003"]
    np.testing.assert_allclose(pairs.image_embeddings, single.image_embeddings, atol=2e-6)
    np.testing.assert_allclose(pairs.text_embeddings, single.text_embeddings, atol=2e-6)
