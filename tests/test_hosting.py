"""Hosted mode: visitors cannot make the server fetch internal addresses or show its files."""

import numpy as np
import pytest

from datafixtures import LocalServer, file_tree, image_bytes, write_image
from gapviz import hosting
from gapviz.data import DataError, save_upload
from gapviz.data.download import DownloadError, Downloader
from gapviz.embeddings import PairedEmbeddings, load_embeddings, save_embeddings
from gapviz.hosting import (HostedRefusal, address_problem, check_server_path, check_url, hosted,
                            limits, visible_image_path)


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), (" Yes ", True), ("on", True),
                                             ("0", False), ("", False), ("no", False)])
def test_one_setting_turns_hosted_mode_on(monkeypatch, value, expected):
    monkeypatch.setenv("GAPVIZ_HOSTED", value)
    assert hosted() is expected
    assert hosted(True) is True and hosted(False) is False and hosted("1") is True


def test_limits_default_and_environment(monkeypatch):
    assert limits() == hosting.HostingLimits()
    monkeypatch.setenv("GAPVIZ_MAX_UPLOAD_MB", "5")
    monkeypatch.setenv("GAPVIZ_DOWNLOAD_SECONDS", "7.5")
    got = limits()
    assert got.max_upload_bytes == 5 * 1024**2 and got.download_seconds == 7.5
    monkeypatch.setenv("GAPVIZ_TOTAL_DOWNLOAD_SECONDS", "soon")
    with pytest.raises(HostedRefusal, match=r"\$GAPVIZ_TOTAL_DOWNLOAD_SECONDS='soon' is not a number"):
        limits()


@pytest.mark.parametrize("address, problem", [
    ("127.0.0.1", "loopback address 127.0.0.1"), ("::1", "loopback address ::1"),
    ("::ffff:127.0.0.1", "loopback address 127.0.0.1"), ("10.1.2.3", "private address 10.1.2.3"),
    ("192.168.0.7", "private address 192.168.0.7"), ("172.20.0.1", "private address 172.20.0.1"),
    ("169.254.169.254", "link-local address 169.254.169.254"), ("fe80::1%eth0", "link-local address fe80::1"),
    ("fd00::5", "private address fd00::5"), ("224.0.0.1", "multicast address 224.0.0.1"),
    ("0.0.0.0", "private address 0.0.0.0"), ("100.64.0.1", "non-public address 100.64.0.1"),
    ("8.8.8.8", None), ("2606:4700:4700::1111", None),
])
def test_address_problem(address, problem):
    assert address_problem(address) == problem


@pytest.mark.parametrize("url, scheme", [("ftp://example.com/a.jpg", "ftp"), ("file:///etc/passwd", "file"),
                                         ("javascript:alert(1)", "javascript"), ("/etc/passwd", "a bare path")])
def test_only_http_urls_in_any_mode(url, scheme):
    for mode in (False, True):
        with pytest.raises(HostedRefusal) as err:
            check_url(url, hosted_mode=mode)
        assert f"not '{scheme}'" in str(err.value) and "give an http(s) URL" in str(err.value)


@pytest.mark.parametrize("url, kind", [
    ("http://127.0.0.1:8501/", "loopback"), ("http://localhost/admin", "loopback"),
    ("http://[::1]/", "loopback"), ("https://10.0.0.1/x.jpg", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"), ("http://0x7f000001/", "loopback"),
])
def test_hosted_urls_to_internal_addresses_are_refused(url, kind):
    with pytest.raises(HostedRefusal) as err:
        check_url(url, hosted_mode=True)
    assert f"is a {kind} address" in str(err.value) and "only public web addresses" in str(err.value)
    assert err.value.reason.endswith("refused in a hosted demo")
    check_url(url, hosted_mode=False)  # a person on their own machine may fetch anything
    check_url("http://8.8.8.8/a.jpg", hosted_mode=True)  # a public literal address passes


def test_hosted_downloader_never_contacts_the_local_server(tmp_path):
    with LocalServer({"/img/a.jpg": image_bytes("JPEG")}) as server:
        d = Downloader(tmp_path, hosted_mode=True, retries=0)
        with pytest.raises(DownloadError) as err:
            d.fetch(server.url + "/img/a.jpg")
        assert err.value.reason == "loopback address 127.0.0.1 refused in a hosted demo"
        assert err.value.permanent and sum(server.hits.values()) == 0
        assert d([server.url + "/img/a.jpg"]) == [
            (None, "download failed (loopback address 127.0.0.1 refused in a hosted demo)")]
        # The refusal depends on the mode, not the URL: nothing is remembered as dead.
        assert not list(tmp_path.rglob("*.dead"))
        assert Downloader(tmp_path, hosted_mode=False).fetch(server.url + "/img/a.jpg").is_file()


def test_address_is_checked_again_when_connecting(tmp_path, monkeypatch):
    """A host that resolved to a public address at check time and to 127.0.0.1 when connecting
    (DNS rebinding) is still refused: the connection itself checks the address it uses."""
    monkeypatch.setattr(hosting, "check_url", lambda url, hosted_mode=None: None)
    with LocalServer({"/img/a.jpg": image_bytes("JPEG")}) as server:
        with pytest.raises(DownloadError) as err:
            Downloader(tmp_path, hosted_mode=True, retries=0).fetch(server.url + "/img/a.jpg")
        assert err.value.reason == "loopback address 127.0.0.1 refused in a hosted demo"
        assert sum(server.hits.values()) == 0


def _only_127_0_0_1_is_public(monkeypatch):
    """Let the tests' server on 127.0.0.1 stand for a public host; other loopbacks stay internal."""
    real = hosting.address_problem
    monkeypatch.setattr(hosting, "address_problem",
                        lambda address: None if address == "127.0.0.1" else real(address))


def test_hosted_redirect_to_an_internal_host_is_refused(tmp_path, monkeypatch):
    _only_127_0_0_1_is_public(monkeypatch)
    with LocalServer({"/img/a.jpg": image_bytes("JPEG")}) as server:
        port = server.url.rsplit(":", 1)[1]
        server.redirects["/r/internal"] = f"http://127.0.0.2:{port}/img/a.jpg"
        server.redirects["/r/ftp"] = "ftp://127.0.0.1/a.jpg"
        server.redirects["/r/fine"] = "/img/a.jpg"
        d = Downloader(tmp_path, hosted_mode=True, retries=0)
        with pytest.raises(DownloadError) as err:
            d.fetch(server.url + "/r/internal")
        assert err.value.reason == "redirect refused: loopback address 127.0.0.2 refused in a hosted demo"
        with pytest.raises(DownloadError, match="redirect refused: ftp URL refused"):
            d.fetch(server.url + "/r/ftp")
        assert d.fetch(server.url + "/r/fine").read_bytes() == image_bytes("JPEG")
        assert server.hits["/img/a.jpg"] == 1


def test_hosted_download_limits_apply(tmp_path, monkeypatch):
    _only_127_0_0_1_is_public(monkeypatch)
    monkeypatch.setenv("GAPVIZ_MAX_DOWNLOAD_MB", "0.001")  # 1 kB
    with LocalServer({"/img/a.jpg": image_bytes("JPEG", size=(200, 200))}) as server:
        d = Downloader(tmp_path, hosted_mode=True, retries=0)
        assert d.max_bytes == 1048 and d.deadline == limits().download_seconds
        assert d.total_seconds == limits().total_download_seconds
        with pytest.raises(DownloadError, match="larger than 1,048 bytes"):
            d.fetch(server.url + "/img/a.jpg")


def test_hosted_upload_size_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("GAPVIZ_HOSTED", "1")
    monkeypatch.setenv("GAPVIZ_MAX_UPLOAD_MB", "0.01")
    before = file_tree(tmp_path)
    with pytest.raises(DataError, match=r"^the upload is 0.0191 MiB, more than the 0.01 MiB this demo "
                                        r"accepts; upload a smaller sample\.$"):
        save_upload([("a.jpg", bytes(20_000))], cache_dir=tmp_path / "cache")
    assert file_tree(tmp_path) == before
    assert save_upload([("a.jpg", bytes(5_000))], cache_dir=tmp_path / "cache").is_dir()


def test_server_paths_are_refused_when_hosted(tmp_path):
    uploads = tmp_path / "cache" / "uploads"
    inside = write_image(uploads / "abc" / "a.jpg")
    secret = write_image(tmp_path / "private" / "secret.jpg")
    assert check_server_path(inside, [uploads], hosted_mode=True) == inside.resolve()
    messages = set()
    for path in (secret, tmp_path / "private" / "missing.jpg", "/etc/passwd", uploads / ".." / "x"):
        with pytest.raises(HostedRefusal) as err:
            check_server_path(path, [uploads], hosted_mode=True)
        messages.add(str(err.value))
    assert messages == {"a hosted demo reads only uploaded files, not paths on the server; upload "
                        "the files instead."}  # the same whether or not the file exists
    assert check_server_path(secret, [uploads], hosted_mode=False) == secret.resolve()


def test_uploaded_embeddings_naming_server_images_show_none_of_them(tmp_path):
    secret = write_image(tmp_path / "home" / "someone" / "private.jpg")
    upload = tmp_path / "cache" / "uploads" / "abc"
    own = write_image(upload / "imgs" / "0.jpg")
    (upload / "link.jpg").symlink_to(secret)
    paths = [str(secret), "imgs/0.jpg", str(own), "../../../home/someone/private.jpg", "link.jpg",
             "/etc/hostname", "imgs/missing.jpg", ""]
    rng = np.random.default_rng(0)
    n = len(paths)
    npz = save_embeddings(PairedEmbeddings(rng.normal(size=(n, 4)), rng.normal(size=(n, 4)),
                                           image_paths=paths), upload / "e.npz")
    pairs, _ = load_embeddings(npz)
    shown = [visible_image_path(p, [upload], hosted_mode=True) for p in pairs.image_paths]
    assert shown == [None, own.resolve(), own.resolve(), None, None, None, None, None]
    # An embeddings file uploaded on its own brought no images: nothing at all is shown.
    assert [visible_image_path(p, [], hosted_mode=True) for p in pairs.image_paths] == [None] * n
    # On one's own machine, the file's paths are the user's own files.
    assert visible_image_path(str(secret), [], hosted_mode=False) == secret.resolve()
    assert visible_image_path("imgs/0.jpg", [upload], hosted_mode=False) == own.resolve()
    assert visible_image_path("imgs/missing.jpg", [upload], hosted_mode=False) is None


def test_hosted_visitors_choose_only_listed_models():
    from gapviz.encode import KNOWN_MODELS

    listed = [(m.name, m.pretrained) for m in KNOWN_MODELS]
    first = KNOWN_MODELS[0]
    hosting.check_model(first.name, first.pretrained, listed, hosted_mode=True)
    for name, pretrained in (("hf-hub:someone/model", None), ("local-dir:/srv/models", None),
                             (first.name, "/etc/passwd"), ("ViT-H-14", "laion2b_s32b_b79k")):
        with pytest.raises(HostedRefusal, match="offers only its listed models: .*choose one of them"):
            hosting.check_model(name, pretrained, listed, hosted_mode=True)
        hosting.check_model(name, pretrained, listed, hosted_mode=False)


def test_restrict_image_paths_once_at_load(tmp_path):
    secret = write_image(tmp_path / "private.jpg")
    upload = tmp_path / "cache" / "uploads" / "abc"
    own = write_image(upload / "0.jpg")
    rng = np.random.default_rng(1)
    pairs = PairedEmbeddings(rng.normal(size=(3, 4)), rng.normal(size=(3, 4)), ids=["a", "b", "c"],
                             captions=["x", "y", "z"], image_paths=[str(secret), "0.jpg", "nope.jpg"],
                             model="m", meta={"k": 1}, labels=["cat", "dog", "cat"])
    shown = hosting.restrict_image_paths(pairs, [upload], hosted_mode=True)
    assert shown.labels == ["cat", "dog", "cat"]
    assert shown.image_paths == ["", str(own.resolve()), ""]
    assert shown.ids == pairs.ids and shown.captions == pairs.captions and shown.meta == {"k": 1}
    assert np.array_equal(shown.image_embeddings, pairs.image_embeddings)
    assert pairs.image_paths[0] == str(secret)  # the input is not changed
    no_paths = PairedEmbeddings(rng.normal(size=(2, 2)), rng.normal(size=(2, 2)))
    assert hosting.restrict_image_paths(no_paths, [upload], hosted_mode=True) is no_paths
