"""Conceptual Captions: the TSV with downloads from a real local server, and webdataset tars."""

import pytest

from datafixtures import LocalServer, image_bytes, make_webdataset, skip_counts, write_cc_tsv
from gapviz.data import DataError, load_cc, load_webdataset

RETRY_FAST = {"retries": 1, "backoff": 0.01, "timeout": 0.5}


@pytest.fixture
def server():
    files = {f"/img/{i}.jpg": image_bytes("JPEG", i) for i in range(10)}
    files["/flaky/ok.jpg"] = image_bytes("JPEG", 42)
    files["/slow/late.jpg"] = image_bytes("JPEG", 43)
    files["/img/svg"] = b"<svg xmlns='http://www.w3.org/2000/svg'/>"
    with LocalServer(files, slow_seconds=2.0, flaky_failures=1) as s:
        yield s


def _rows(url):
    return [
        ("a photo of 0", f"{url}/img/0.jpg"),
        ("a photo of 1", f"{url}/img/1.jpg"),
        ("a dead link", f"{url}/img/404.jpg"),
        ("a placeholder page", f"{url}/html/removed.jpg"),
        ("a flaky server", f"{url}/flaky/ok.jpg"),
        ("a slow server", f"{url}/slow/late.jpg"),
        ("a vector drawing", f"{url}/img/svg"),
        ("", f"{url}/img/2.jpg"),
        ("a photo of 3", f"{url}/img/3.jpg"),
        ("no url on this line", "not a url"),
    ]


def test_tsv_all_lines_every_failure_counted(tmp_path, server):
    tsv = write_cc_tsv(tmp_path / "cc.tsv", _rows(server.url))
    pairs, report = load_cc(tsv, n=None, cache_dir=tmp_path / "cache", download=RETRY_FAST)
    assert [(p.id, p.caption) for p in pairs] == [
        ("cc-1", "a photo of 0"), ("cc-2", "a photo of 1"), ("cc-5", "a flaky server"),
        ("cc-9", "a photo of 3")]
    assert skip_counts(report) == {
        "download failed (HTTP 404)": 1, "not an image (HTML page)": 1,
        "download failed (timed out)": 1, "unsupported image format (SVG)": 1,
        "empty caption": 1, "unreadable TSV line": 1}
    assert pairs[0].source == {"kind": "cc", "row": 1, "url": f"{server.url}/img/0.jpg",
                               "tsv": str(tsv)}
    assert server.hits["/flaky/ok.jpg"] == 2  # retried once after its 500


def test_tsv_sample_is_reproducible_and_cached(tmp_path, server):
    rows = [(f"photo {i}", f"{server.url}/img/{i}.jpg") for i in range(10)]
    rows += [(f"dead {i}", f"{server.url}/img/dead{i}.jpg") for i in range(10)]
    tsv = write_cc_tsv(tmp_path / "cc.tsv", rows, header=True)
    first, report = load_cc(tsv, n=6, seed=0, cache_dir=tmp_path / "cache", download=RETRY_FAST)
    hits = sum(server.hits.values())
    again, _ = load_cc(tsv, n=6, seed=0, cache_dir=tmp_path / "cache", download=RETRY_FAST)
    assert len(first) == 6 and [p.id for p in first] == [p.id for p in again]
    assert all(p.caption.startswith("photo") for p in first)
    assert sum(server.hits.values()) == hits  # images and dead links both came from the cache
    # Ids are line numbers of the file (the header is line 1).
    assert {p.id for p in first} <= {f"cc-{i}" for i in range(2, 12)}
    assert report.n_kept == 6 and skip_counts(report).get("download failed (HTTP 404)", 0) == report.n_skipped


def test_tsv_from_url_and_cc12m_column_order(tmp_path, server):
    server.files["/lists/cc12m.tsv"] = "".join(
        f"{server.url}/img/{i}.jpg\tcc12m photo {i}\n" for i in range(3)).encode()
    pairs, _ = load_cc(server.url + "/lists/cc12m.tsv", n=None, cache_dir=tmp_path / "cache")
    assert [p.caption for p in pairs] == ["cc12m photo 0", "cc12m photo 1", "cc12m photo 2"]


def test_missing_tsv_says_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv("GAPVIZ_CC_TSV", raising=False)
    with pytest.raises(DataError, match=r"ConceptualCaptions/download.*GAPVIZ_CC_TSV"):
        load_cc(None, cache_dir=tmp_path)
    with pytest.raises(DataError, match="no such TSV"):
        load_cc(tmp_path / "nope.tsv", cache_dir=tmp_path)


def test_webdataset_tar(tmp_path):
    tar = make_webdataset(tmp_path / "shard-000000.tar")
    pairs, report = load_webdataset(tar, cache_dir=tmp_path / "cache")
    assert [(p.id, p.caption) for p in pairs] == [
        ("000001", "A wds photo of a tree."), ("000002", "A wds photo of a bridge."),
        ("000003", "A wds photo of a cat.")]
    assert skip_counts(report) == {"image without caption": 1, "caption without image": 1,
                                   "unsafe path in archive": 1,
                                   "link or special file in archive": 1}
    assert not (tmp_path / "000006.jpg").exists() and not (tmp_path / "cache" / "000006.jpg").exists()
    assert not any(p.is_symlink() for p in (tmp_path / "cache").rglob("*"))
    assert pairs[0].open_image().size == (48, 40)
    assert pairs[1].source == {"kind": "webdataset", "archive": str(tar), "key": "000002"}
