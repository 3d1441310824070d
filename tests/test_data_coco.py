"""COCO: captions JSON, annotations zip, Karpathy split, parquet listing, and downloads."""

import io
import json
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datafixtures import LocalServer, closed_port_url, image_bytes, make_coco, make_karpathy, skip_counts
from gapviz.data import DataError, load_coco


def test_local_json_and_folder_all_pairs(tmp_path):
    data = make_coco(tmp_path)
    pairs, report = load_coco(tmp_path / "annotations" / "captions_val2017.json",
                              tmp_path / "val2017", n=None, cache_dir=tmp_path / "cache")
    # 8 listed images: #3's file is missing, #8 has no caption; plus one caption of image 999.
    assert [p.id for p in pairs] == ["1", "2", "4", "5", "6", "7"]
    assert all(p.caption == f"image {p.id} caption 0" for p in pairs)  # the first, in file order
    assert skip_counts(report) == {"caption without image": 2, "image without caption": 1}
    assert pairs[0].source["kind"] == "coco" and pairs[0].source["file_name"] == "000000000001.jpg"
    assert pairs[0].image_path == str(tmp_path / "val2017" / "000000000001.jpg")
    assert any("first of each image's captions" in note for note in report.notes)
    assert len(data["images"]) == 8


def test_sample_is_seeded_and_random_caption_is_reproducible(tmp_path):
    make_coco(tmp_path, n_images=30)
    ann = tmp_path / "annotations" / "captions_val2017.json"
    a, _ = load_coco(ann, tmp_path / "val2017", n=10, seed=0, caption_choice="random")
    b, _ = load_coco(ann, tmp_path / "val2017", n=10, seed=0, caption_choice="random")
    c, _ = load_coco(ann, tmp_path / "val2017", n=10, seed=1)
    assert len(a) == 10 and [(p.id, p.caption) for p in a] == [(p.id, p.caption) for p in b]
    assert {p.id for p in a} != {p.id for p in c}
    assert all(p.caption.startswith(f"image {p.id} caption ") for p in a)
    assert len({p.caption[-1] for p in a}) > 1  # not always the first


def test_images_folder_found_beside_annotations(tmp_path):
    make_coco(tmp_path)
    pairs, _ = load_coco(tmp_path / "annotations" / "captions_val2017.json", n=None)
    assert len(pairs) == 6 and pairs[0].image_path.startswith(str(tmp_path / "val2017"))


def test_annotations_zip_and_split_choice(tmp_path):
    make_coco(tmp_path)
    archive = tmp_path / "annotations_trainval2017.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(tmp_path / "annotations" / "captions_val2017.json", "annotations/captions_val2017.json")
        zf.writestr("annotations/instances_val2017.json", "{}")
    pairs, _ = load_coco(archive, tmp_path / "val2017", n=3, seed=0)
    assert len(pairs) == 3
    with pytest.raises(DataError, match=r"no captions_train2017\.json.*captions_val2017\.json"):
        load_coco(archive, tmp_path / "val2017", split="train2017")


def test_karpathy_split(tmp_path):
    path = make_karpathy(tmp_path)
    pairs, report = load_coco(path, tmp_path, n=None, split="test")
    assert [p.id for p in pairs] == ["1000", "1002", "1004"]
    assert [p.caption for p in pairs] == ["karpathy 0 sentence 0", "karpathy 2 sentence 0",
                                          "karpathy 4 sentence 0"]
    assert pairs[0].image_path == str(tmp_path / "val2014" / "COCO_val2014_000000000001.jpg")
    assert pairs[0].source["kind"] == "karpathy" and report.n_skipped == 0


def test_not_coco(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(DataError, match="neither COCO captions"):
        load_coco(tmp_path / "x.json", tmp_path)
    (tmp_path / "y.json").write_text("{broken")
    with pytest.raises(DataError, match="not a readable JSON"):
        load_coco(tmp_path / "y.json", tmp_path)


def _served_coco(tmp_path, dead=("000000000005.jpg",), n_images=40):
    """An annotations zip and images served like images.cocodataset.org, some links dead."""
    data = make_coco(tmp_path / "src", n_images=n_images)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("annotations/captions_val2017.json", json.dumps(data))
    files = {"/annotations/annotations_trainval2017.zip": buf.getvalue()}
    for im in data["images"]:
        path = tmp_path / "src" / "val2017" / im["file_name"]
        if path.exists() and im["file_name"] not in dead:
            files[f"/val2017/{im['file_name']}"] = path.read_bytes()
    return files


def test_download_annotations_then_only_the_sampled_images(tmp_path):
    files = _served_coco(tmp_path)
    with LocalServer(files) as server:
        kwargs = dict(annotations_url=server.url + "/annotations/annotations_trainval2017.zip",
                      images_url=server.url, n=6, seed=0, cache_dir=tmp_path / "cache",
                      download={"retries": 0, "backoff": 0.01})
        pairs, report = load_coco(**kwargs)
        assert len(pairs) == 6
        image_hits = {k: v for k, v in server.hits.items() if k.startswith("/val2017/")}
        # The sample's images were fetched once each, not the 40 of the listing.
        assert set(image_hits.values()) == {1} and len(image_hits) < 20
        assert {f"/val2017/{p.source['file_name']}" for p in pairs} <= set(image_hits)
        for pair in pairs:
            assert pair.source["url"] == f"{server.url}/val2017/{pair.source['file_name']}"
            assert pair.image_path.startswith(str(tmp_path / "cache" / "downloads"))
        hits_before = sum(server.hits.values())
        again, _ = load_coco(**kwargs)
        assert [p.id for p in again] == [p.id for p in pairs]
        # The rerun needed nothing new: annotations and images came from the cache, and the
        # dead links were remembered.
        assert sum(server.hits.values()) == hits_before


def test_dead_links_are_skipped_counted_and_replaced(tmp_path):
    files = _served_coco(tmp_path, dead=("000000000001.jpg", "000000000002.jpg", "000000000004.jpg",
                                         "000000000006.jpg"), n_images=12)
    with LocalServer(files) as server:
        pairs, report = load_coco(annotations_url=server.url + "/annotations/annotations_trainval2017.zip",
                                  images_url=server.url, n=5, seed=0, cache_dir=tmp_path / "cache",
                                  download={"retries": 0})
    assert len(pairs) == 5
    assert {"1", "2", "3", "4", "6"}.isdisjoint(p.id for p in pairs)
    assert skip_counts(report)["download failed (HTTP 404)"] >= 1
    assert report.n_kept == 5 and report.n_read == 5 + report.n_skipped


def test_parquet_listing(tmp_path):
    files = {f"/img/{i}.jpg": image_bytes("JPEG", i) for i in range(4)}
    with LocalServer(files) as server:
        table = pa.table({"image_id": [10, 11, 12, 13, 14],
                          "url": [f"{server.url}/img/{i}.jpg" for i in range(5)],
                          "captions": [[f"cap {i} a", f"cap {i} b"] for i in range(5)]})
        pq.write_table(table, tmp_path / "listing.parquet")
        pairs, report = load_coco(tmp_path / "listing.parquet", n=None, cache_dir=tmp_path / "cache",
                                  download={"retries": 0})
    assert [(p.id, p.caption) for p in pairs] == [(f"1{i}", f"cap {i} a") for i in range(4)]
    assert skip_counts(report) == {"download failed (HTTP 404)": 1}


def test_offline_annotations_download_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match=r"cannot download the COCO annotations.*pass the file"):
        load_coco(annotations_url=closed_port_url() + "/ann.zip", cache_dir=tmp_path,
                  download={"retries": 0})
