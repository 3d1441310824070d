"""The shared embeddings file format: round trips, and every kind of bad input."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gapviz.embeddings import (EmbeddingsFileError, PairedEmbeddings, load_embeddings,
                               save_embeddings, to_npz_bytes)


def make_pairs(n=6, d=4, seed=0):
    rng = np.random.default_rng(seed)
    return PairedEmbeddings(rng.normal(size=(n, d)), rng.normal(size=(n, d)),
                            ids=[f"p{i}" for i in range(n)], captions=[f"caption {i}" for i in range(n)],
                            image_paths=[f"img/{i}.jpg" for i in range(n)], model="ViT-B-32/openai",
                            meta={"method": "orig"})


@pytest.mark.parametrize("suffix", [".npz", ".parquet"])
def test_round_trip(tmp_path, suffix):
    pairs = make_pairs()
    path = save_embeddings(pairs, tmp_path / f"e{suffix}")
    back, report = load_embeddings(path)
    assert np.array_equal(back.image_embeddings, pairs.image_embeddings)
    assert np.array_equal(back.text_embeddings, pairs.text_embeddings)
    assert back.ids == pairs.ids and back.captions == pairs.captions
    assert back.image_paths == pairs.image_paths
    assert back.model == "ViT-B-32/openai" and back.meta == {"method": "orig"}
    assert report.n_read == report.n_kept == 6 and report.summary() == "kept 6 of 6 pairs"


def test_npz_bytes_is_a_loadable_file(tmp_path):
    path = tmp_path / "x.npz"
    path.write_bytes(to_npz_bytes(make_pairs()))
    assert load_embeddings(path)[0].n == 6


def test_minimal_npz_gets_default_ids(tmp_path):
    np.savez(tmp_path / "m.npz", image_embeddings=np.eye(3), text_embeddings=np.eye(3))
    pairs, _ = load_embeddings(tmp_path / "m.npz")
    assert pairs.ids == ["0", "1", "2"] and pairs.captions is None and pairs.image_embeddings.dtype == np.float32


def test_bad_rows_are_skipped_and_reported(tmp_path):
    X = np.random.default_rng(0).normal(size=(8, 3))
    Y = np.random.default_rng(1).normal(size=(8, 3))
    X[1, 0] = np.nan
    Y[2, 2] = np.inf
    X[4] = 0.0
    np.savez(tmp_path / "b.npz", image_embeddings=X, text_embeddings=Y,
             ids=np.array([f"r{i}" for i in range(8)]))
    pairs, report = load_embeddings(tmp_path / "b.npz")
    assert pairs.ids == ["r0", "r3", "r5", "r6", "r7"]
    assert report.skipped["NaN or infinite values"] == [1, 2]
    assert report.skipped["zero vector (no direction to compare)"] == [4]
    assert report.n_read == 8 and report.n_kept == 5 and report.n_skipped == 3
    assert "kept 5 of 8 pairs" in report.summary() and "skipped 2: NaN" in report.summary()


def test_duplicate_ids_keep_the_first(tmp_path):
    np.savez(tmp_path / "d.npz", image_embeddings=np.eye(4), text_embeddings=np.eye(4),
             ids=np.array(["a", "b", "a", "c"]))
    pairs, report = load_embeddings(tmp_path / "d.npz")
    assert pairs.ids == ["a", "b", "c"]
    assert report.skipped["duplicate id (first occurrence kept)"] == [2]


@pytest.mark.parametrize("arrays,message", [
    ({"image_embeddings": np.ones((3, 4)), "text_embeddings": np.ones((2, 4))}, "same number of rows"),
    ({"image_embeddings": np.ones((3, 4)), "text_embeddings": np.ones((3, 5))}, "d=4 but text embeddings d=5"),
    ({"image_embeddings": np.ones((1, 4)), "text_embeddings": np.ones((1, 4))}, "at least 2"),
    ({"image_embeddings": np.ones(4), "text_embeddings": np.ones(4)}, "2-D array"),
    ({"text_embeddings": np.ones((3, 4))}, "missing array"),
    ({"image_embeddings": np.ones((3, 4)), "text_embeddings": np.ones((3, 4)),
      "captions": np.array(["a", "b"])}, "'captions' has 2 entries"),
])
def test_structural_problems_raise_clear_errors(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(EmbeddingsFileError, match=message):
        load_embeddings(tmp_path / "bad.npz")


def test_all_rows_bad_is_an_error_with_the_reasons(tmp_path):
    X = np.full((3, 2), np.nan)
    np.savez(tmp_path / "nan.npz", image_embeddings=X, text_embeddings=np.ones((3, 2)))
    with pytest.raises(EmbeddingsFileError, match="only 0 usable pair.*skipped 3: NaN"):
        load_embeddings(tmp_path / "nan.npz")


def test_unknown_keys_are_reported_not_fatal(tmp_path):
    np.savez(tmp_path / "u.npz", image_embeddings=np.eye(3), text_embeddings=np.eye(3), logits=np.ones(3))
    pairs, report = load_embeddings(tmp_path / "u.npz")
    assert pairs.n == 3 and "ignored unknown key(s) ['logits']" in report.warnings[0]


def test_pickled_objects_are_refused(tmp_path):
    np.savez(tmp_path / "o.npz", image_embeddings=np.eye(3), text_embeddings=np.eye(3),
             captions=np.array([{"a": 1}, None, 3], dtype=object))
    with pytest.raises(EmbeddingsFileError, match="not Python objects"):
        load_embeddings(tmp_path / "o.npz")


def test_corrupt_and_unsupported_files(tmp_path):
    (tmp_path / "c.npz").write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(EmbeddingsFileError, match="not a readable .npz"):
        load_embeddings(tmp_path / "c.npz")
    (tmp_path / "c.parquet").write_bytes(b"garbage")
    with pytest.raises(EmbeddingsFileError, match="not a readable parquet"):
        load_embeddings(tmp_path / "c.parquet")
    (tmp_path / "e.csv").write_text("a,b\n")
    with pytest.raises(EmbeddingsFileError, match="unsupported extension '.csv'"):
        load_embeddings(tmp_path / "e.csv")
    with pytest.raises(EmbeddingsFileError, match="no such file"):
        load_embeddings(tmp_path / "missing.npz")


def test_parquet_ragged_rows_and_missing_columns(tmp_path):
    pq.write_table(pa.table({"image_embedding": [[1.0, 0.0], [0.0, 1.0, 2.0]],
                             "text_embedding": [[1.0, 0.0], [0.0, 1.0]]}), tmp_path / "r.parquet")
    with pytest.raises(EmbeddingsFileError, match="different lengths"):
        load_embeddings(tmp_path / "r.parquet")
    pq.write_table(pa.table({"image": [[1.0]]}), tmp_path / "m.parquet")
    with pytest.raises(EmbeddingsFileError, match="missing column"):
        load_embeddings(tmp_path / "m.parquet")


def test_parquet_written_by_hand_loads(tmp_path):
    """A user's own parquet (one row per pair, list-of-float columns) with no gapviz metadata."""
    pq.write_table(pa.table({"id": ["x", "y", "z"], "caption": ["a", "b", "c"],
                             "image_embedding": [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
                             "text_embedding": [[0.5, 0.5], [0.2, 1.0], [1.0, 0.1]]}), tmp_path / "h.parquet")
    pairs, _ = load_embeddings(tmp_path / "h.parquet")
    assert pairs.ids == ["x", "y", "z"] and pairs.captions == ["a", "b", "c"] and pairs.dim == 2


def test_save_never_overwrites_user_data(tmp_path):
    target = tmp_path / "mine.npz"
    target.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="already exists"):
        save_embeddings(make_pairs(), target)
    assert target.read_bytes() == b"precious"
    save_embeddings(make_pairs(), target, overwrite=True)
    assert load_embeddings(target)[0].n == 6
    assert [p.name for p in tmp_path.iterdir()] == ["mine.npz"]  # no temporary file left behind


def test_content_hash_sees_every_value():
    a = make_pairs()
    b = make_pairs()
    assert a.content_hash() == b.content_hash()
    b.image_embeddings[3, 2] += 1e-6
    assert a.content_hash() != b.content_hash()


def test_meta_json_survives(tmp_path):
    pairs = make_pairs()
    pairs.meta = {"method": "spectral", "params": {"k": 60}}
    back, _ = load_embeddings(save_embeddings(pairs, tmp_path / "m.npz"))
    assert back.meta == json.loads(json.dumps(pairs.meta))
