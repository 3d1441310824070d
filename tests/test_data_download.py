"""Downloads against a real HTTP server on 127.0.0.1: retries, timeouts, dead links, resume."""

import time

import pytest

from datafixtures import LocalServer, closed_port_url, image_bytes
from gapviz.data.download import DownloadError, Downloader, fetch_file, url_cache_path

FAST = {"backoff": 0.01}


@pytest.fixture
def files():
    return {f"/img/{i}.jpg": image_bytes("JPEG", i) for i in range(20)} | {
        "/flaky/a.jpg": image_bytes("JPEG", 50),
        "/slow/a.jpg": image_bytes("JPEG", 51),
        "/cut/big.bin": bytes(range(256)) * 4096,  # 1 MiB
    }


def test_fetch_writes_the_exact_bytes_once(tmp_path, files):
    with LocalServer(files) as server:
        d = Downloader(tmp_path, **FAST)
        path = d.fetch(server.url + "/img/1.jpg")
        assert path.read_bytes() == files["/img/1.jpg"]
        assert path == url_cache_path(server.url + "/img/1.jpg", tmp_path)
        d.fetch(server.url + "/img/1.jpg")
        assert server.hits["/img/1.jpg"] == 1  # the second time came from the cache
        assert not list(tmp_path.rglob("*.part"))


def test_server_errors_are_retried(tmp_path, files):
    with LocalServer(files, flaky_failures=2) as server:
        path = Downloader(tmp_path, retries=2, **FAST).fetch(server.url + "/flaky/a.jpg")
        assert path.read_bytes() == files["/flaky/a.jpg"]
        assert server.hits["/flaky/a.jpg"] == 3
    with LocalServer(files, flaky_failures=5) as server:
        with pytest.raises(DownloadError) as err:
            Downloader(tmp_path / "other", retries=1, **FAST).fetch(server.url + "/flaky/a.jpg")
        assert err.value.reason == "HTTP 500" and not err.value.permanent
        assert server.hits["/flaky/a.jpg"] == 2


def test_slow_server_times_out(tmp_path, files):
    with LocalServer(files, slow_seconds=1.5) as server:
        started = time.perf_counter()
        with pytest.raises(DownloadError) as err:
            Downloader(tmp_path, timeout=0.3, retries=1, **FAST).fetch(server.url + "/slow/a.jpg")
        assert err.value.reason == "timed out"
        assert time.perf_counter() - started < 1.4  # two 0.3 s attempts, not the server's 1.5 s
        assert server.hits["/slow/a.jpg"] == 2


def test_dead_links_are_final_and_remembered(tmp_path, files):
    with LocalServer(files) as server:
        d = Downloader(tmp_path, retries=3, **FAST)
        with pytest.raises(DownloadError) as err:
            d.fetch(server.url + "/img/gone.jpg")
        assert err.value.reason == "HTTP 404" and err.value.permanent
        assert server.hits["/img/gone.jpg"] == 1  # a 404 is not retried
        with pytest.raises(DownloadError, match="HTTP 404"):
            d.fetch(server.url + "/img/gone.jpg")
        assert server.hits["/img/gone.jpg"] == 1  # ...nor asked again on the next run
        Downloader(tmp_path, retry_dead=True, retries=0).__call__([server.url + "/img/gone.jpg"])
        assert server.hits["/img/gone.jpg"] == 2


def test_interrupted_transfer_resumes_with_range(tmp_path, files):
    with LocalServer(files) as server:
        path = Downloader(tmp_path, retries=2, **FAST).fetch(server.url + "/cut/big.bin")
        assert path.read_bytes() == files["/cut/big.bin"]
        assert server.hits["/cut/big.bin"] == 2
        assert server.ranges == [f"bytes={len(files['/cut/big.bin']) // 2}-"]


def test_part_file_left_by_a_killed_run_is_resumed(tmp_path, files):
    with LocalServer(files) as server:
        url = server.url + "/img/3.jpg"
        dest = url_cache_path(url, tmp_path)
        dest.parent.mkdir(parents=True)
        body = files["/img/3.jpg"]
        dest.with_name(dest.name + ".part").write_bytes(body[:100])
        assert Downloader(tmp_path).fetch(url).read_bytes() == body
        assert server.ranges == ["bytes=100-"]


def test_size_limit(tmp_path, files):
    with LocalServer(files) as server:
        with pytest.raises(DownloadError, match="larger than 1,000 bytes"):
            Downloader(tmp_path, max_bytes=1000).fetch(server.url + "/cut/big.bin")


def test_many_urls_concurrently_with_progress(tmp_path, files):
    calls = []
    with LocalServer(files, delay=0.2) as server:
        urls = [server.url + f"/img/{i}.jpg" for i in range(16)] + [server.url + "/img/none.jpg"]
        started = time.perf_counter()
        results = Downloader(tmp_path, workers=16, progress=lambda *a: calls.append(a))(urls)
        elapsed = time.perf_counter() - started
    assert elapsed < 1.5  # 17 requests of 0.2 s each would take 3.4 s one after another
    assert [r[1] for r in results] == [None] * 16 + ["download failed (HTTP 404)"]
    assert all(open(r[0], "rb").read() == files[f"/img/{i}.jpg"] for i, r in enumerate(results[:16]))
    assert calls[-1] == (17, 17, "downloading") and len(calls) == 17


def test_unreachable_host_and_bad_scheme(tmp_path):
    with pytest.raises(DownloadError, match="cannot connect"):
        Downloader(tmp_path, retries=1, **FAST).fetch(closed_port_url() + "/x.jpg")
    with pytest.raises(DownloadError, match="not an http"):
        Downloader(tmp_path).fetch("file:///etc/passwd")


def test_fetch_file_keeps_the_name_and_reports_bytes(tmp_path, files):
    seen = []
    with LocalServer(files) as server:
        path = fetch_file(server.url + "/img/2.jpg", tmp_path, progress=lambda *a: seen.append(a))
    assert path.name == "2.jpg" and path.read_bytes() == files["/img/2.jpg"]
    assert seen[-1] == (len(files["/img/2.jpg"]), len(files["/img/2.jpg"]), "downloading 2.jpg")


def test_repeated_urls_are_fetched_once(tmp_path, files):
    with LocalServer(files, delay=0.1) as server:
        url = server.url + "/img/5.jpg"
        results = Downloader(tmp_path, workers=4)([url, url, url])
        assert server.hits["/img/5.jpg"] == 1
    assert len({r[0] for r in results}) == 1 and open(results[0][0], "rb").read() == files["/img/5.jpg"]
