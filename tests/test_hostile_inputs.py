"""Hostile and malformed inputs: each gives a one-line message naming the file, keeps the good
rows, and writes nothing outside the cache and the output (issue 14's list, case by case)."""

import io
import json
import multiprocessing
import os
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datafixtures import (LocalServer, file_tree, image_bytes, make_clashing_zip, make_coco,
                          make_npz_bomb, nested_json, write_big_png, write_image,
                          written_outside)
from gapviz import tables
from gapviz.data import DataError, load_cc, load_coco, load_folder, load_webdataset
from gapviz.data.archives import CLASHING_ENTRY, NAME_TOO_LONG
from gapviz.data.cc import UNREADABLE_JSON
from gapviz.data.coco import BAD_ANNOTATION, BAD_IMAGE_RECORD
from gapviz.data.defaults import MAX_IMAGE_PIXELS
from gapviz.data.download import DownloadError, Downloader, fetch_file
from gapviz.data.folder import NOT_TEXT_VALUE, UNREADABLE_ROW
from gapviz.data.images import DecodeBudget, check_image, open_rgb, too_large_reason
from gapviz.embeddings import (EmbeddingsFileError, PairedEmbeddings, check_output_path,
                               load_embeddings, save_embeddings)
from gapviz.exports import records_csv
from gapviz.safety import csv_cell

FAST = {"retries": 0, "backoff": 0.01}


def one_line(err) -> str:
    text = str(err.value if hasattr(err, "value") else err)
    assert "\n" not in text and "Traceback" not in text
    return text


def good_pairs(n=5, d=4, seed=0):
    rng = np.random.default_rng(seed)
    return PairedEmbeddings(rng.normal(size=(n, d)), rng.normal(size=(n, d)),
                            ids=[f"p{i}" for i in range(n)])


# ----------------------------------------------------------------------------- archives

def test_clashing_and_overlong_archive_entries_are_skipped_not_a_traceback(tmp_path):
    archive = make_clashing_zip(tmp_path / "up.zip")
    before = file_tree(tmp_path)
    pairs, report = load_folder(archive, cache_dir=tmp_path / "cache")
    assert {p.id: p.caption for p in pairs} == {"good1.jpg": "caption of good1",
                                                "good2.jpg": "caption of good2",
                                                "x/b.jpg": "caption of x/b"}
    assert len(report.skipped[CLASHING_ENTRY]) == 2          # the file "x", then "y/c.jpg"
    assert report.examples[CLASHING_ENTRY] == ["x", "y/c.jpg"]
    assert len(report.skipped[NAME_TOO_LONG]) == 1
    assert written_outside(before, file_tree(tmp_path), "cache") == []


def test_clashing_tar_entries_in_a_webdataset(tmp_path):
    shard = tmp_path / "shard.tar"
    with tarfile.open(shard, "w") as tf:
        for name, data in (("000001.jpg", image_bytes("JPEG", 1)), ("000001.txt", b"a tree"),
                           ("k/000002.jpg", image_bytes("JPEG", 2)), ("k/000002.txt", b"a cat"),
                           ("k", b"clash"), ("z" * 260 + ".txt", b"long")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    pairs, report = load_webdataset(shard, cache_dir=tmp_path / "cache")
    assert {p.id: p.caption for p in pairs} == {"000001": "a tree", "k/000002": "a cat"}
    assert len(report.skipped[CLASHING_ENTRY]) == 1 and len(report.skipped[NAME_TOO_LONG]) == 1


def test_truncated_tar_is_one_line_error(tmp_path):
    shard = tmp_path / "cut.tar"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for i in range(3):
            data = image_bytes("JPEG", i)
            info = tarfile.TarInfo(f"{i:06d}.jpg")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    shard.write_bytes(buf.getvalue()[:1500])
    with pytest.raises(DataError) as err:
        load_webdataset(shard, cache_dir=tmp_path / "cache")
    assert "cut.tar" in one_line(err)


# ----------------------------------------------------------------------------- nested JSON

def test_one_nested_captions_jsonl_row_is_skipped_and_the_rest_kept(tmp_path):
    up = tmp_path / "up"
    for i in range(3):
        write_image(up / f"{i}.jpg", seed=i)
    rows = [json.dumps({"image": "0.jpg", "caption": "a red kite"}),
            '{"image": "1.jpg", "caption": ' + "[" * 100_000 + "]" * 100_000 + "}",
            json.dumps({"image": "2.jpg", "caption": ["a", "list"]}),
            json.dumps({"image": "2.jpg", "caption": "a blue boat"})]
    (up / "captions.jsonl").write_text("\n".join(rows) + "\n")
    pairs, report = load_folder(up)
    assert {p.id: p.caption for p in pairs} == {"0.jpg": "a red kite", "2.jpg": "a blue boat"}
    assert report.examples[UNREADABLE_ROW] == ["captions.jsonl line 2"]
    assert report.examples[NOT_TEXT_VALUE] == ["captions.jsonl row 3"]


def test_captions_csv_with_an_oversized_field_skips_that_row(tmp_path):
    up = tmp_path / "up"
    for i in range(2):
        write_image(up / f"{i}.jpg", seed=i)
    (up / "captions.csv").write_text('image,caption\n0.jpg,"' + "x" * 200_000 + '"\n1.jpg,a dog\n')
    pairs, report = load_folder(up)
    assert [(p.id, p.caption) for p in pairs] == [("1.jpg", "a dog")]
    assert len(report.skipped[UNREADABLE_ROW]) == 1


def test_nested_webdataset_json_skips_only_that_sample(tmp_path):
    shard = tmp_path / "shard.tar"
    members = {"000001.jpg": image_bytes("JPEG", 1), "000001.json": nested_json(50_000).encode(),
               "000002.jpg": image_bytes("JPEG", 2), "000002.json": b'{"caption": "a bridge"}',
               "000003.jpg": image_bytes("JPEG", 3), "000003.json": b"[1, 2]"}
    with tarfile.open(shard, "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    pairs, report = load_webdataset(shard, cache_dir=tmp_path / "cache")
    assert [(p.id, p.caption) for p in pairs] == [("000002", "a bridge")]
    assert report.examples[UNREADABLE_JSON] == ["000001", "000003"]


def test_nested_coco_json_is_a_one_line_error(tmp_path):
    path = tmp_path / "captions_val2017.json"
    path.write_text('{"images": ' + "[" * 100_000 + "]" * 100_000 + ', "annotations": []}')
    with pytest.raises(DataError) as err:
        load_coco(path, tmp_path, cache_dir=tmp_path / "cache")
    message = one_line(err)
    assert "captions_val2017.json" in message and "nested 100001 levels" in message


def test_coco_with_wrongly_typed_parts(tmp_path):
    data = make_coco(tmp_path, n_images=4)
    path = tmp_path / "annotations" / "captions_val2017.json"
    path.write_text(json.dumps({**data, "images": 5}))
    with pytest.raises(DataError) as err:
        load_coco(path, tmp_path, cache_dir=tmp_path / "cache")
    assert "'images' must be a list of records, got a JSON number" in one_line(err)
    path.write_text(json.dumps({**data, "annotations": {"a": 1}}))
    with pytest.raises(DataError, match="'annotations' must be a list"):
        load_coco(path, tmp_path, cache_dir=tmp_path / "cache")
    # Bad records inside good lists are skipped and counted; the rest load.
    bad = {**data, "images": [5, "x", {"no": "id"}, *data["images"]],
           "annotations": [{"image_id": 1, "caption": {"nested": [1]}}, 7, *data["annotations"]]}
    path.write_text(json.dumps(bad))
    pairs, report = load_coco(path, tmp_path / "val2017", n=None, cache_dir=tmp_path / "cache")
    assert sorted(p.id for p in pairs) == ["1", "2"]  # 3: file missing; 4: no caption
    assert len(report.skipped[BAD_IMAGE_RECORD]) == 3 and len(report.skipped[BAD_ANNOTATION]) == 2


def test_karpathy_with_wrongly_typed_sentences(tmp_path):
    images = [{"filename": "a.jpg", "cocoid": 1, "sentences": 5},
              {"filename": "b.jpg", "cocoid": 2, "sentences": [{"tokens": 3}, {"raw": "a cat"}]},
              {"filename": "c.jpg", "cocoid": 3, "sentences": [{"tokens": ["a", "dog", 4]}]}, 9]
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        write_image(tmp_path / "img" / name)
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"images": images}))
    pairs, report = load_coco(path, tmp_path / "img", n=None, cache_dir=tmp_path / "cache")
    assert {p.id: p.caption for p in pairs} == {"2": "a cat", "3": "a dog"}
    assert len(report.skipped[BAD_IMAGE_RECORD]) == 1


# ----------------------------------------------------------------------------- embeddings files

@pytest.mark.parametrize("meta, warning", [
    (np.asarray(5), "ignored 'meta': must be one JSON string, got int64"),
    (np.asarray([1, 2]), "ignored 'meta': must be one JSON string, got int64 of shape (2,)"),
    (np.asarray('"abc"'), "ignored 'meta': must be a JSON object ({...}), got a JSON str"),
    (np.asarray("[" * 5000 + "]" * 5000), "ignored 'meta': JSON nested 5000 levels deep"),
    (np.asarray("{not json"), "ignored 'meta': not valid JSON"),
])
def test_npz_meta_of_the_wrong_type_is_ignored_with_a_warning(tmp_path, meta, warning):
    X = np.random.default_rng(0).normal(size=(4, 3))
    np.savez(tmp_path / "m.npz", image_embeddings=X, text_embeddings=X, meta=meta,
             model=np.asarray(["a", "b"]), captions=np.arange(4.0))
    pairs, report = load_embeddings(tmp_path / "m.npz")
    assert pairs.n == 4 and pairs.meta == {} and pairs.model == "" and pairs.captions is None
    assert any(w.startswith(warning) for w in report.warnings), report.warnings
    assert any(w.startswith("ignored 'model': must be one string") for w in report.warnings)
    assert any(w.startswith("ignored 'captions': must be a 1-D array of strings") for w in report.warnings)


def _parquet(path, image, text, metadata=None, **extra):
    table = pa.table({"image_embedding": image, "text_embedding": text, **extra})
    if metadata is not None:
        table = table.replace_schema_metadata({b"gapviz": metadata})
    pq.write_table(table, path)
    return path


@pytest.mark.parametrize("column, message", [
    (pa.array([1.0, 2.0, 3.0]), "column 'image_embedding' is double, not a list of numbers"),
    (pa.array([1, 2, 3]), "column 'image_embedding' is int64, not a list of numbers"),
    (pa.array(["1", "2", "3"]), "column 'image_embedding' is string, not a list of numbers"),
    (pa.array([{"a": 1.0}] * 3), "column 'image_embedding' is struct<a: double>, not a list"),
    (pa.array([[True, False]] * 3), "column 'image_embedding' holds lists of bool"),
    (pa.array([[[1.0, 2.0]]] * 3), "column 'image_embedding' holds lists of list<"),
    (pa.array([["1", "2"]] * 3), "column 'image_embedding' holds lists of string"),
])
def test_parquet_embeddings_follow_the_numbers_only_rule(tmp_path, column, message):
    path = _parquet(tmp_path / "e.parquet", column, pa.array([[1.0, 2.0]] * 3))
    with pytest.raises(EmbeddingsFileError) as err:
        load_embeddings(path)
    assert one_line(err).startswith(str(path)) and message in str(err.value)


@pytest.mark.parametrize("array, word", [
    (np.array([[True, False]] * 3), "booleans"), (np.array([["1", "2"]] * 3), "text"),
    (np.array([[1 + 1j, 2]] * 3), "complex numbers"),
])
def test_npz_follows_the_same_rule(tmp_path, array, word):
    np.savez(tmp_path / "e.npz", image_embeddings=array, text_embeddings=np.ones((3, 2)))
    with pytest.raises(EmbeddingsFileError) as err:
        load_embeddings(tmp_path / "e.npz")
    assert one_line(err).startswith(str(tmp_path / "e.npz"))
    assert f"'image_embeddings' holds {word}" in str(err.value) and "real numbers" in str(err.value)


def test_integer_embeddings_are_numbers_in_both_formats(tmp_path):
    ints = np.arange(12).reshape(4, 3) + 1
    np.savez(tmp_path / "i.npz", image_embeddings=ints, text_embeddings=ints[::-1])
    path = _parquet(tmp_path / "i.parquet", pa.array(ints.tolist()), pa.array(ints[::-1].tolist()))
    a, _ = load_embeddings(tmp_path / "i.npz")
    b, _ = load_embeddings(path)
    assert np.array_equal(a.image_embeddings, b.image_embeddings) and a.image_embeddings.dtype == np.float32


@pytest.mark.parametrize("metadata, warning", [
    (b"[1, 2]", "ignored the file's 'gapviz' metadata: must be a JSON object"),
    (b"not json", "ignored the file's 'gapviz' metadata: not valid JSON"),
    (b'{"model": [1], "meta": {}}', "ignored 'model' in the metadata: must be a string"),
    (b'{"model": "m", "meta": 5}', "ignored 'meta' in the metadata: must be a JSON object"),
])
def test_parquet_list_metadata_is_ignored_with_a_warning(tmp_path, metadata, warning):
    vectors = pa.array([[1.0, 2.0], [3.0, 4.0], [5.0, 7.0]])
    path = _parquet(tmp_path / "m.parquet", vectors, vectors, metadata=metadata,
                    caption=pa.array([{"x": 1}] * 3))
    pairs, report = load_embeddings(path)
    assert pairs.n == 3 and pairs.captions is None
    assert any(w.startswith(warning) for w in report.warnings), report.warnings
    assert any("ignored column 'caption'" in w for w in report.warnings)


def test_zero_dimensional_vectors_name_the_file(tmp_path):
    np.savez(tmp_path / "d0.npz", image_embeddings=np.zeros((4, 0)), text_embeddings=np.zeros((4, 0)))
    path = _parquet(tmp_path / "d0.parquet", pa.array([[]] * 4, pa.list_(pa.float32())),
                    pa.array([[]] * 4, pa.list_(pa.float32())))
    for file in (tmp_path / "d0.npz", path):
        with pytest.raises(EmbeddingsFileError) as err:
            load_embeddings(file)
        assert one_line(err).startswith(str(file)) and "d=0" in str(err.value)


def test_npz_decompression_bomb_is_refused_from_the_headers(tmp_path):
    bomb = make_npz_bomb(tmp_path / "bomb.npz")
    assert bomb.stat().st_size < 400_000  # 164 MiB of float32 declared
    started = time.perf_counter()
    with pytest.raises(EmbeddingsFileError) as err:
        load_embeddings(bomb)
    assert time.perf_counter() - started < 1.0  # nothing was decompressed
    assert "decompression bomb" in one_line(err) and "bomb.npz" in str(err.value)


def test_embeddings_size_limit_is_clear_and_configurable(tmp_path, monkeypatch):
    path = save_embeddings(good_pairs(n=50, d=64), tmp_path / "e.npz")
    parquet = save_embeddings(good_pairs(n=50, d=64), tmp_path / "e.parquet")
    for file in (path, parquet):
        with pytest.raises(EmbeddingsFileError) as err:
            load_embeddings(file, max_bytes=10_000)
        assert "more than the 10,000 bytes limit" in one_line(err) and "GAPVIZ_MAX_EMBEDDINGS_MB" in str(err.value)
    monkeypatch.setenv("GAPVIZ_MAX_EMBEDDINGS_MB", "0.01")
    with pytest.raises(EmbeddingsFileError, match="limit"):
        load_embeddings(path)
    monkeypatch.setenv("GAPVIZ_MAX_EMBEDDINGS_MB", "1")
    assert load_embeddings(path)[0].n == 50


# ----------------------------------------------------------------------------- outputs

def test_outputs_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        fresh = save_embeddings(good_pairs(), tmp_path / "fresh.npz")
        assert fresh.stat().st_mode & 0o777 == 0o644
        shared = tmp_path / "shared.parquet"
        shared.write_bytes(b"old")
        shared.chmod(0o664)
        save_embeddings(good_pairs(), shared, overwrite=True)
        assert shared.stat().st_mode & 0o777 == 0o664  # a replaced file keeps its mode
    finally:
        os.umask(old)


def test_output_that_is_a_folder_or_unwritable_fails_before_any_work(tmp_path):
    (tmp_path / "out.npz").mkdir()
    before = file_tree(tmp_path)
    with pytest.raises(EmbeddingsFileError) as err:
        check_output_path(tmp_path / "out.npz", overwrite=True)
    assert "is a folder; give a file name such as" in one_line(err)
    with pytest.raises(EmbeddingsFileError, match="is a folder"):
        save_embeddings(good_pairs(), tmp_path / "out.npz", overwrite=True)
    (tmp_path / "afile").write_text("x")
    before = file_tree(tmp_path)
    with pytest.raises(EmbeddingsFileError) as err:
        check_output_path(tmp_path / "afile" / "sub" / "e.npz")
    assert "is a file, not a folder" in one_line(err)
    with pytest.raises(EmbeddingsFileError, match="cannot write in"):
        check_output_path("/proc/gapviz-test/e.npz")
    (tmp_path / "kept.npz").write_bytes(b"user data")
    before = file_tree(tmp_path)
    with pytest.raises(FileExistsError, match="already exists"):
        check_output_path(tmp_path / "kept.npz")
    assert (tmp_path / "kept.npz").read_bytes() == b"user data"
    assert file_tree(tmp_path) == before  # the checks leave nothing behind


# ----------------------------------------------------------------------------- downloads

def test_url_ending_in_dot_dot_downloads_to_a_safe_name(tmp_path):
    tsv = "\n".join(f"photo {i}\t{{url}}/img/{i}.jpg" for i in range(3))
    coco_dir = tmp_path / "coco"
    data = make_coco(coco_dir, n_images=3)
    files = {f"/img/{i}.jpg": image_bytes("JPEG", i) for i in range(3)}
    with LocalServer(files) as server:
        server.files["/lists/cc/.."] = tsv.replace("{url}", server.url).encode()
        server.files["/mirror/.."] = json.dumps(data).encode()
        for im in data["images"]:
            local = coco_dir / "val2017" / im["file_name"]
            if local.exists():
                server.files[f"/val2017/{im['file_name']}"] = local.read_bytes()
        before = file_tree(tmp_path)
        pairs, report = load_cc(server.url + "/lists/cc/..", n=None, cache_dir=tmp_path / "cache",
                                download=FAST)
        assert [p.caption for p in pairs] == ["photo 0", "photo 1", "photo 2"]
        pairs, report = load_coco(annotations_url=server.url + "/mirror/..", images_url=server.url,
                                  n=None, cache_dir=tmp_path / "cache", download=FAST)
        assert sorted(p.id for p in pairs) == ["1", "2"]
        assert written_outside(before, file_tree(tmp_path), "cache") == []
        got = fetch_file(server.url + "/mirror/..", tmp_path / "cache" / "downloads")
        assert got.name == "download" and got.parent.parent.parent == tmp_path / "cache" / "downloads"


def _fetch_in_process(url, folder, barrier, results):
    from gapviz.data.download import Downloader

    downloader = Downloader(folder, retries=0)
    barrier.wait()  # both processes start their transfer at the same moment
    try:
        results.put(str(downloader.fetch(url)))
    except Exception as err:  # reported to the parent, which asserts on it
        results.put(f"{type(err).__name__}: {err}")


def test_two_processes_downloading_one_url_take_turns(tmp_path):
    body = bytes(range(256)) * 2000
    ctx = multiprocessing.get_context("spawn")
    with LocalServer({"/drip/big.bin": body}, drip_seconds=0.05) as server:
        url = server.url + "/drip/big.bin"
        barrier, results = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_fetch_in_process, args=(url, str(tmp_path / "dl"), barrier, results))
                 for _ in range(2)]
        for p in procs:
            p.start()
        got = [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=10)
        assert got[0] == got[1], got  # no "No such file" from a shared .part
        assert Path(got[0]).read_bytes() == body
        assert server.hits["/drip/big.bin"] == 1  # the second process waited, then found the file
    assert not list((tmp_path / "dl").rglob("*.part"))


def test_download_has_a_total_deadline(tmp_path):
    body = bytes(1000) * 100
    with LocalServer({"/drip/a.bin": body, "/drip/b.bin": body, "/img/c.jpg": image_bytes("JPEG")},
                     drip_seconds=0.1) as server:
        d = Downloader(tmp_path, deadline=0.5, timeout=5, retries=2, backoff=0.01)
        started = time.perf_counter()
        with pytest.raises(DownloadError) as err:
            d.fetch(server.url + "/drip/a.bin")
        assert time.perf_counter() - started < 1.5  # each read was quick; the total was not
        assert "0.5 s time limit" in err.value.reason and not err.value.permanent
        assert not list(tmp_path.rglob("*.dead"))  # slow is not dead: a later run may try again
        budget = Downloader(tmp_path / "b", total_seconds=0.4, timeout=5, retries=0)
        with pytest.raises(DownloadError):
            budget.fetch(server.url + "/drip/b.bin")
        with pytest.raises(DownloadError, match=r"total download time limit \(0.4 s\) reached"):
            budget.fetch(server.url + "/img/c.jpg")


def test_redirect_to_a_non_http_scheme_is_refused(tmp_path):
    with LocalServer({}, redirects={"/to-ftp": "ftp://127.0.0.1/x.jpg",
                                    "/to-file": "file:///etc/passwd"}) as server:
        d = Downloader(tmp_path, **FAST)
        for path, scheme in (("/to-ftp", "ftp"), ("/to-file", "file")):
            with pytest.raises(DownloadError) as err:
                d.fetch(server.url + path)
            assert err.value.reason == f"redirect refused: {scheme} URL refused (only http and https)"
            assert err.value.permanent


# ----------------------------------------------------------------------------- images

def test_81_megapixel_png_is_refused_before_decoding(tmp_path):
    path = write_big_png(tmp_path / "big.png")
    assert path.stat().st_size < 300_000 and MAX_IMAGE_PIXELS < 81_000_000
    started = time.perf_counter()
    assert check_image(path) == too_large_reason(MAX_IMAGE_PIXELS)
    with pytest.raises(Exception, match="image too large"):
        open_rgb(path)
    assert time.perf_counter() - started < 0.5


def test_decode_memory_in_flight_is_bounded():
    budget = DecodeBudget(100)
    seen = []

    def work(n):
        with budget.reserve(n):
            seen.append(budget.used)
            time.sleep(0.02)

    threads = [threading.Thread(target=work, args=(n,)) for n in (60, 60, 30, 30, 500, 10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(seen) <= 100 and budget.peak <= 100 and budget.used == 0
    assert 100 in seen  # the oversized one ran alone, holding the whole budget


def test_image_checks_share_the_decode_budget(tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from gapviz.data import images

    paths = [write_image(tmp_path / f"{i}.png", "PNG", seed=i, size=(600, 400)) for i in range(8)]
    one = 600 * 400 * 3  # an RGB PNG decoded
    budget = DecodeBudget(2 * one)
    monkeypatch.setattr(images, "DECODE_BUDGET", budget)
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(check_image, paths)) == [None] * 8
    assert budget.peak <= 2 * one and budget.used == 0


# ----------------------------------------------------------------------------- CSV exports

def test_csv_cells_that_spreadsheets_would_run_are_neutralised():
    hostile = ['=HYPERLINK("http://x","y")', "@SUM(A1)", "+cmd|' /C calc'!A0", "-2+3", "\tx", "＝1+1"]
    assert [csv_cell(c) for c in hostile] == ["'" + c for c in hostile]
    assert [csv_cell(c) for c in ("-0.5", "+3", "-inf", "a=b", "", 7, None)] == \
        ["-0.5", "+3", "-inf", "a=b", "", 7, None]
    text = tables.render({'=HYPERLINK("http://evil")': {"itr": -0.25}}, "csv", keys=["itr"],
                         transpose=True)
    assert text.splitlines() == ["run,itr", "\"'=HYPERLINK(\"\"http://evil\"\")\",-0.25"]
    rows = records_csv([{"caption": "@SUM(1)", "similarity": -0.5, "pair_id": "-2+3"}])
    assert rows.splitlines() == ["caption,similarity,pair_id", "'@SUM(1),-0.5,'-2+3"]


def test_download_names_from_hostile_urls():
    from gapviz.data.download import download_name

    assert download_name("/a/..") == download_name("/a/%2e%2e") == download_name("/") == "download"
    assert download_name("/a/captions.json") == "captions.json"
    long = download_name("/" + "é" * 300 + ".json")
    assert long.endswith(".json") and len(long.encode()) <= 100


def test_zip_uploaded_with_an_overlong_name_is_stored(tmp_path):
    from gapviz.data import save_upload

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.jpg", image_bytes("JPEG"))
        zf.writestr("a.txt", "a photo")
    stored = save_upload([("n" * 400 + ".zip", buf.getvalue())], cache_dir=tmp_path / "cache")
    assert stored.suffix == ".zip" and len(stored.name.encode()) <= 100
    pairs, _ = load_folder(stored, cache_dir=tmp_path / "cache")
    assert [p.caption for p in pairs] == ["a photo"]


def test_user_strings_render_as_plain_text_in_markdown():
    from gapviz.safety import plain_text

    markdown_it = pytest.importorskip("markdown_it")
    md = markdown_it.MarkdownIt("commonmark").enable("table").enable("strikethrough")
    hostile = "![x](http://evil/a.png) <img src=x onerror=alert(1)> [click](javascript:x) **b** ~~s~~"
    html = md.render(plain_text(hostile))
    assert "<img" not in html and "<a " not in html and "<strong>" not in html and "<s>" not in html
    assert "![x](http://evil/a.png)" in html  # shown as written
    assert plain_text("ViT-B/32\nmodel", max_length=None) == "ViT-B/32 model"
    assert plain_text("x" * 300).endswith("…") and len(plain_text("x" * 300)) == 200
