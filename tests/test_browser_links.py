"""Links in a real browser: a page's URL, opened on a freshly started server, shows the same
numbers.

Every page writes its state into the URL's query string (``ui/links.py``,
``gapviz.recipes.Recipe.to_query``). For Close the gap, Anatomy and Compare this test drives
``streamlit run app.py`` in Debian's headless chromium (Playwright): it opens the page on one
server, changes controls (the spectral k slider and Recall@K; the method and its protocol; the
methods and the protocol of the table), waits for the page to settle and reads its URL and its
metric cards (or table). It then starts a *fresh* server (a new process on a new port, its own
cache folder), opens the same path and query string in a new browser context, and checks that
the cards (label, value and change) or the table are exactly the same, that the widgets show
the restored choices, and that the page writes back the same query string. A link must name
its data by content hash (``data=``, 40 hex digits) and never hold a filesystem path.

Skipped (with the reason) only when ``/usr/bin/chromium`` or the ``playwright`` package is
missing. Server logs and screenshots go to ``tests/artifacts/browser/``.
"""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from urllib.parse import parse_qsl, unquote_plus, urlsplit

import pytest
from test_browser import (ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, FIRST_LOAD_TIMEOUT, ROOT,
                          RUN_TIMEOUT, VIEWPORT, _serve, _wait_idle, sync_api)
from test_browser import _assert_no_exception as _no_exception

pytestmark = pytest.mark.browser

_HASH = re.compile(r"[0-9a-f]{40}")
#: Compare's table (its "Table" tab, shown first).
TABLE = '.st-key-compare_view [data-testid="stDataFrame"]'


# ---------------------------------------------------------------------------------------------
# a server, and waiting for the app (test_browser.py's)
# ---------------------------------------------------------------------------------------------
#: A real ``streamlit run app.py`` on a free port with its own cache folder (a new process).
_server = contextmanager(_serve)


def _assert_no_exception(page, where: str) -> None:
    """test_browser's check, and no link refused or pointing at data the server lacks."""
    _no_exception(page, where)
    text = page.inner_text("body")
    assert "could not be opened" not in text, f"a link was refused on {where}: {text[:2000]}"
    assert "not loaded on this server" not in text, f"a link's data was not found on {where}"


@pytest.fixture(scope="module")
def first_url(tmp_path_factory):
    """The server the links are made on (shared by the tests of this file)."""
    with _server(tmp_path_factory, "links-first-server.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


@contextmanager
def _reopened(tmp_path_factory, browser, url: str, name: str, ready: str, shot: str):
    """The page of ``url`` opened on a fresh server (a new process, its own cache), in a new
    browser context: no exception, a screenshot, then the page to check."""
    with _server(tmp_path_factory, f"links-fresh-{name}.log") as fresh, \
            _browsing(browser, _same_link(url, fresh), ready) as page:
        _assert_no_exception(page, f"{fresh} {name} from a link")
        _shot(page, shot)
        yield page


@contextmanager
def _browsing(browser, url: str, ready: str):
    """``url`` opened in a new browser context (closed afterwards), once ``ready`` shows."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        _open(page, url, ready)
        yield page
    finally:
        context.close()


# ---------------------------------------------------------------------------------------------
# reading and driving the page
# ---------------------------------------------------------------------------------------------
def _cards(page) -> list[tuple[str, str, str]]:
    """Every metric card of the main area in order: (label, value, change shown)."""
    out = []
    for card in page.locator('[data-testid="stMain"] [data-testid="stMetric"]').all():
        label = card.locator('[data-testid="stMetricLabel"]').inner_text().strip()
        value = card.locator('[data-testid="stMetricValue"]').inner_text().strip()
        delta = card.locator('[data-testid="stMetricDelta"]')
        out.append((label, value, delta.first.inner_text().strip() if delta.count() else ""))
    return out


def _table(page) -> list[list[str]]:
    """The rows of Compare's table (header first), as its accessible grid lists them."""
    return page.locator(TABLE).first.evaluate(
        "e => Array.from(e.querySelectorAll('tr')).map("
        "r => Array.from(r.children).map(c => c.innerText.trim()))")


def _assert_same_table(restored: list[list[str]], table: list[list[str]]) -> None:
    """Every cell the same; a number within 1e-6 of it relatively. The grid holds the raw
    floats: sums over the pool (Fréchet, mean distances) vary in their last digits with the
    BLAS thread count of the server that computed them (seen: 0.0048775404 vs 0.0048775404239),
    far below the three decimals the page shows, while any change of a rank moves a ratio or a
    recall by more than 1e-4 (1 query in 2,500)."""
    assert len(restored) == len(table), (restored, table)
    for got, want in zip(restored, table):
        assert len(got) == len(want), (got, want)
        for a, b in zip(got, want):
            if a == b:
                continue
            try:
                x, y = float(a), float(b)
            except ValueError:
                raise AssertionError(f"cell {a!r} != {b!r} in {got}") from None
            assert abs(x - y) <= 1e-6 * max(abs(x), abs(y)), f"cell {a!r} != {b!r} in {got}"


def _query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def _wait_url(page, accept, what: str, timeout: float = RUN_TIMEOUT) -> str:
    """Poll ``page.url`` (Streamlit writes query parameters into the browser's history once
    the run has sent them) until ``accept(query)``; the URL."""
    deadline = time.monotonic() + timeout
    while True:
        url = page.url
        if accept(_query(url)):
            return url
        if time.monotonic() > deadline:
            raise AssertionError(f"the URL never showed {what}: {url}")
        page.wait_for_timeout(250)


def _choose(page, key: str, option: str) -> None:
    """Pick ``option`` in the selectbox with widget key ``key`` and wait for the rerun."""
    page.locator(f'.st-key-{key} input[role="combobox"]').click()
    page.get_by_role("option", name=option, exact=True).click()
    page.wait_for_timeout(300)
    _wait_idle(page)


def _selected(page, key: str) -> str:
    """The option a selectbox shows."""
    return page.locator(f'.st-key-{key} input[role="combobox"]').input_value()


def _tags(page, key: str) -> list[str]:
    """The options a multiselect shows, in order."""
    return [t.get_attribute("aria-label")
            for t in page.locator(f".st-key-{key} [data-tag]").all()]


def _remove_tag(page, key: str, option: str) -> None:
    """Take ``option`` out of the multiselect with widget key ``key`` (the tag focused, then
    Backspace: a click on a tag's remove button right after another change may only move the
    focus) and wait for the rerun."""
    tag = page.locator(f'.st-key-{key} [data-tag][aria-label="{option}"]')
    tag.focus()
    page.keyboard.press("Backspace")
    tag.wait_for(state="detached", timeout=RUN_TIMEOUT * 1000)
    page.wait_for_timeout(300)
    _wait_idle(page)


def _open(page, url: str, ready: str) -> None:
    page.goto(url)
    page.wait_for_selector(ready, timeout=FIRST_LOAD_TIMEOUT * 1000)
    _wait_idle(page, FIRST_LOAD_TIMEOUT)


def _assert_link(url: str, *keys: str) -> dict[str, str]:
    """The link names its data by content hash, carries ``keys``, and holds no path."""
    query = _query(url)
    assert _HASH.fullmatch(query.get("data", "")), f"no data=<40 hex digits> in {url}"
    for key in keys:
        assert key in query, f"no {key}= in {url}"
    # The demo's names hold no slash: any "/" or "\" in a value would be a path.
    for key, value in query.items():
        assert "/" not in value and "\\" not in value, f"a path in the link's {key}: {value!r}"
    for text in (str(ROOT), "/tmp", "/home", "/root", "/work", ".npz", "file:"):
        assert text not in unquote_plus(url), f"{text!r} in the link {url}"
    return query


def _same_link(url: str, fresh_base: str) -> str:
    """The same path and query string on the fresh server."""
    parts = urlsplit(url)
    return f"{fresh_base}{parts.path}?{parts.query}"


def _assert_written_back(page, query: dict[str, str], where: str) -> None:
    """The restored page writes the very same state into its URL (nothing reset)."""
    try:
        _wait_url(page, lambda q: q == query, "the link's query", timeout=30)
    except AssertionError:
        got = _query(page.url)
        diff = {k: (query.get(k), got.get(k)) for k in set(query) | set(got)
                if query.get(k) != got.get(k)}
        raise AssertionError(f"{where}: the restored page wrote another state "
                             f"(key: (link, restored)): {diff}") from None


# ---------------------------------------------------------------------------------------------
# the tests
# ---------------------------------------------------------------------------------------------
def test_close_gap_link_restores_k_and_recall_on_a_fresh_server(first_url, browser,
                                                                 tmp_path_factory):
    with _browsing(browser, f"{first_url}/close_gap", '[data-testid="stMetric"]') as page:
        _assert_no_exception(page, "Close the gap")
        default = _cards(page)
        assert _query(page.url).get("p.n_components") == "60", page.url

        # k to its largest value (a fragment rerun), then Recall@K 10 (a page rerun).
        page.locator('.st-key-close_k input[type="range"]').first.focus()
        page.keyboard.press("End")
        _wait_url(page, lambda q: q.get("p.n_components") == "200", "p.n_components=200")
        _wait_idle(page)
        _choose(page, "close_recall_k", "10")
        url = _wait_url(page, lambda q: q.get("v.recall_k") == "10"
                        and q.get("p.n_components") == "200", "v.recall_k=10")
        _wait_idle(page)
        _assert_no_exception(page, "Close the gap after the changes")
        query = _assert_link(url, "method", "protocol", "p.n_components", "v.recall_k")
        assert query["method"] == "spectral" and query["protocol"] == "transductive", url
        cards = _cards(page)
        assert [c[0] for c in cards][:4] == ["ITR", "TIR", "IMR", "TMR"]
        assert "Recall@10" in [c[0] for c in cards]
        assert cards != default and cards[0][1] != default[0][1], (default, cards)
        _shot(page, "links_1_close_gap_changed")

    with _reopened(tmp_path_factory, browser, url, "close-gap", '[data-testid="stMetric"]',
                   "links_2_close_gap_restored") as page:
        assert _cards(page) == cards
        assert _selected(page, "close_method") == "Spectral"
        assert _selected(page, "close_recall_k") == "10"
        assert page.locator('.st-key-close_k [data-testid="stSliderThumbValue"]'
                            ).inner_text().strip() == "200"
        _assert_written_back(page, query, "Close the gap")


def test_anatomy_link_restores_method_and_protocol_on_a_fresh_server(first_url, browser,
                                                                     tmp_path_factory):
    with _browsing(browser, f"{first_url}/anatomy", '[data-testid="stMetric"]') as page:
        _assert_no_exception(page, "Anatomy")
        default = _cards(page)
        assert _query(page.url).get("method") == "spectral", page.url

        _choose(page, "anatomy_method", "Mean-centering")
        _wait_url(page, lambda q: q.get("method") == "center", "method=center")
        _wait_idle(page)
        _choose(page, "anatomy_protocol_center", "Held-out (5-fold cross-fit)")
        url = _wait_url(page, lambda q: q.get("method") == "center"
                        and q.get("protocol") == "held-out", "protocol=held-out")
        _wait_idle(page)
        _assert_no_exception(page, "Anatomy after the changes")
        query = _assert_link(url, "method", "protocol")
        cards = _cards(page)
        assert [c[0] for c in cards][:2] == ["RMG", "NDCG@10"], cards
        assert cards != default, (default, cards)
        _shot(page, "links_3_anatomy_changed")

    with _reopened(tmp_path_factory, browser, url, "anatomy", '[data-testid="stMetric"]',
                   "links_4_anatomy_restored") as page:
        assert _cards(page) == cards
        assert _selected(page, "anatomy_method") == "Mean-centering"
        assert _selected(page, "anatomy_protocol_center") == "Held-out (5-fold cross-fit)"
        _assert_written_back(page, query, "Anatomy")


def test_compare_link_restores_methods_protocol_and_k_on_a_fresh_server(first_url, browser,
                                                                        tmp_path_factory):
    # Spectral k set on Close the gap travels to Compare's spectral row, and in its link.
    with _browsing(browser, f"{first_url}/close_gap", '[data-testid="stMetric"]') as page:
        page.locator('.st-key-close_k input[type="range"]').first.focus()
        page.keyboard.press("End")
        _wait_url(page, lambda q: q.get("p.n_components") == "200", "p.n_components=200")
        _wait_idle(page)
        page.locator('[data-testid="stSidebar"] [data-testid="stPageLink"] a',
                     has_text="Compare").first.click()
        page.wait_for_selector(TABLE, timeout=FIRST_LOAD_TIMEOUT * 1000)
        _wait_idle(page, FIRST_LOAD_TIMEOUT)
        _assert_no_exception(page, "Compare")
        default = _table(page)

        for name in ("Procrustes", "PCA"):
            _remove_tag(page, "compare_methods", name)
        _choose(page, "compare_protocol", "Transductive (fit on the scored pairs)")
        page.wait_for_selector(TABLE, timeout=RUN_TIMEOUT * 1000)
        url = _wait_url(page, lambda q: q.get("v.protocol") == '"transductive"'
                        and "procrustes" not in q.get("v.methods", "procrustes"),
                        'v.protocol="transductive"')
        _wait_idle(page)
        _assert_no_exception(page, "Compare after the changes")
        query = _assert_link(url, "v.methods", "v.protocol", "v.chosen")
        assert "pca" not in query["v.methods"] and '"spectral"' in query["v.methods"], url
        assert '"n_components": 200' in query["v.chosen"], url
        tags = _tags(page, "compare_methods")
        assert tags == ["None (raw embeddings)", "Spectral", "Sinkhorn OT", "Mean-centering",
                        "Liang shift", "Standardisation"], tags
        table = _table(page)
        assert table != default
        assert [r[0] for r in table[1:]] == tags, table
        assert all(r[2] in ("transductive", "—") for r in table[1:]), table  # the protocol column
        spectral = next(r for r in table if r[0] == "Spectral")
        assert spectral[1].startswith("k = 200,"), spectral
        _shot(page, "links_5_compare_changed")

    with _reopened(tmp_path_factory, browser, url, "compare", TABLE,
                   "links_6_compare_restored") as page:
        _assert_same_table(_table(page), table)
        assert _tags(page, "compare_methods") == tags
        assert _selected(page, "compare_protocol") == "Transductive (fit on the scored pairs)"
        _assert_written_back(page, query, "Compare")
