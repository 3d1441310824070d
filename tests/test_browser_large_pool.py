"""Explore on pools past Plotly's limit in a real browser, with every outside request blocked.

A real ``streamlit run`` serves the app with a generated pool as the active data
(``gapviz.simulate.simulate_pairs(n, 64)``); Playwright drives Debian's headless chromium,
whose every request to another host than the app's is refused and recorded (none may be
made: the atlas's DuckDB-WASM comes from the app itself, ``ui/atlas.py``).

- 100,000 pairs (200,000 points): Explore opens without waiting for the pool's measures and
  hands every point to Embedding Atlas (the atlas counts the rows it received); the page says
  the browser lacks WebGPU where it does; a click on the bar "image" of the atlas's modality
  chart lists 100,000 pairs beside it, and the atlas's "Clear filters" button clears them; a
  brush across its histogram of pair rows lists exactly the pairs of a range, both points of
  each, and Esc clears them; the help lines follow the viewer; the Plotly viewer says it shows a seeded sample and
  a small lasso on it lists a pair.
- The same pool with the app's own DuckDB-WASM files refused too: the atlas cannot start, the
  page says so and shows the Plotly sample.
- 200,000 pairs (400,000 points), served as a hosted demo: the atlas is offered and gets a
  seeded sample of 100,000 pairs (the page says so), and the pairs a chart filter lists
  (downloaded from the selection table) are exactly the sampled ones
  (``gapviz.figures.atlas.sample_pairs``).
- A click on a point of the atlas, its nearest neighbour (the partner) and a rectangle around
  it need WebGPU with ``shader-f16``; that test is skipped, with the reason, where the
  headless browser lacks it (software WebGPU has no 16-bit floats), as it does here.

Screenshots and the server logs go to ``tests/artifacts/browser/``. Skipped (with the
reason) when ``/usr/bin/chromium``, the ``playwright`` package or the ``embedding-atlas``
extra (``pip install "gapviz[atlas]"``) is missing; CI installs only requirements.txt, so
there it is skipped. The fallback without the atlas (a seeded Plotly sample) is tested by
AppTest in ``test_atlas_view.py``.
"""

from __future__ import annotations

import csv
import re
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from test_browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    RUN_TIMEOUT,
    VIEWPORT,
    _assert_no_exception,
    _serve,
    _wait_idle,
    sync_api,
)

ROOT = Path(__file__).resolve().parents[1]
N_PAIRS = 100_000
SAMPLED_PAIRS = 200_000
DIM = 64
#: Seconds for Explore's first run (generate the pool, PCA, the atlas's table) and for the
#: atlas to load its 200,000 rows into DuckDB-WASM.
OPEN_TIMEOUT = 180
ATLAS_TIMEOUT = 120

pytestmark = pytest.mark.browser

pytest.importorskip("embedding_atlas",
                    reason='embedding-atlas is not installed (pip install "gapviz[atlas]")')

#: The entry script: the app's own router with Explore as the first page (the Overview would
#: measure the pool: minutes at this size), and the generated pool as the session's data.
ENTRY = '''
import streamlit as st

from gapviz.simulate import simulate_pairs
from gapviz.workspace import Workspace
from ui.frame import PAGES, page_config


@st.cache_resource
def pool():
    return simulate_pairs({n}, {dim}, seed=0)


if "workspace" not in st.session_state:
    ws = Workspace()
    ws.add(pool(), source="generated", dataset="large pool", model="sim-CLIP", activate=True)
    st.session_state["workspace"] = ws
page_config()
st.navigation([st.Page(p.path, title=p.title, icon=p.icon, default=p.path == "pages/explore.py")
               for p in PAGES], position="hidden").run()
'''


def _large_app(tmp_path_factory, n_pairs: int, log: str, env: dict | None = None):
    """``streamlit run`` of an entry script beside links to the app's folders (so the pages,
    ``ui`` and ``.streamlit/config.toml`` are the repository's own)."""
    app = tmp_path_factory.mktemp(f"large-app-{n_pairs}")
    for name in ("pages", "ui", "assets", ".streamlit"):
        if (ROOT / name).exists():
            (app / name).symlink_to(ROOT / name)
    (app / "app.py").write_text(ENTRY.format(n=n_pairs, dim=DIM))
    yield from _serve(tmp_path_factory, log, script=app / "app.py", cwd=app,
                      env={"PYTHONPATH": str(ROOT), **(env or {})})


@pytest.fixture(scope="module")
def large_url(tmp_path_factory):
    """The app with 100,000 generated pairs (200,000 points: the atlas's limit)."""
    yield from _large_app(tmp_path_factory, N_PAIRS, "streamlit-large-pool.log")


@pytest.fixture
def sampled_url(tmp_path_factory):
    """The app as a hosted demo (``GAPVIZ_HOSTED=1``) with 200,000 generated pairs (400,000
    points: sampled for the atlas)."""
    yield from _large_app(tmp_path_factory, SAMPLED_PAIRS, "streamlit-sampled-pool.log",
                          env={"GAPVIZ_HOSTED": "1"})


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def _offline(context, url: str, *, refuse: str | None = None) -> list[str]:
    """Refuse every request to another host than the app's (recorded in the list returned),
    and those whose URL contains ``refuse``. The atlas must need nothing from elsewhere."""
    host = urlsplit(url).netloc
    outside: list[str] = []

    def handle(route):
        request_url = route.request.url
        if urlsplit(request_url).netloc != host:
            outside.append(request_url)
            route.abort()
        elif refuse is not None and refuse in request_url:
            route.abort()
        else:
            route.continue_()

    context.route("**/*", handle)
    return outside


def _selected(page) -> list[str]:
    return page.get_by_text(re.compile(r"^[\d,]+ pairs selected")).all_inner_texts()


def _wait_selected(page, expected: re.Pattern, timeout: float = RUN_TIMEOUT) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for text in _selected(page):
            if expected.match(text):
                return text
        page.wait_for_timeout(300)
    raise AssertionError(f"no selection matching {expected.pattern!r}; shown: {_selected(page)}")


def _browser(pw, extra_args=()):
    return pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                              args=[*CHROMIUM_ARGS, *extra_args])


def _open_explore(browser, url: str, rows: int, *, refuse: str | None = None):
    """Explore in a fresh browser context with outside requests refused; waits until the atlas
    counts ``rows`` rows. Returns the page, the atlas's frame and the refused outside URLs."""
    # Tall enough for the atlas's charts below its modality chart (its frame is 800 px).
    context = browser.new_context(viewport={**VIEWPORT, "height": 1400}, accept_downloads=True)
    # Streamlit's table saves CSV with the file-picker API where there is one (a dialog);
    # without it, as a plain download the test can read.
    context.add_init_script("delete window.showSaveFilePicker;")
    outside = _offline(context, url, refuse=refuse)
    page = context.new_page()
    # The root, not /explore: a deep link on a fresh server runs the page file alone.
    page.goto(url)
    atlas = page.frame_locator('iframe[title*="embedding_atlas"]')
    if refuse is None:
        page.get_by_text("Drawn with Embedding Atlas").wait_for(timeout=OPEN_TIMEOUT * 1000)
        # the atlas counts the rows it received: the whole table arrived in the browser
        atlas.get_by_text(f"{rows:,} / {rows:,}").first.wait_for(timeout=ATLAS_TIMEOUT * 1000)
        _wait_idle(page, OPEN_TIMEOUT)
    return page, atlas, outside


def _boxes(atlas, text: str) -> list[dict]:
    """Bounding boxes of the atlas's elements whose text is exactly ``text``."""
    found = atlas.get_by_text(text, exact=True)
    return [b for b in (found.nth(i).bounding_box() for i in range(found.count())) if b]


def _click_modality_bar(page, atlas, label: str) -> None:
    """Click the bar ``label`` of the atlas's modality chart (a chart filter)."""
    # the chart's title (the table below has a "modality" column too) and its label
    heading = min(_boxes(atlas, "modality"), key=lambda b: b["y"])
    bar = next(b for b in _boxes(atlas, label) if 0 < b["y"] - heading["y"] < 80
               and abs(b["x"] - heading["x"]) < 40)
    page.mouse.click(bar["x"] + bar["width"] + 30, bar["y"] + bar["height"] / 2)


def _download_selection(page) -> list[dict]:
    """The rows of Explore's selection table, saved with its "Download as CSV" button."""
    page.locator('[data-testid="stDataFrame"]').first.hover()
    with page.expect_download(timeout=RUN_TIMEOUT * 1000) as info:
        page.get_by_role("button", name="Download as CSV").first.click()
    with open(info.value.path(), newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def _lacks_webgpu_f16(page) -> str | None:
    """What the page's browser lacks of WebGPU with ``shader-f16`` (the atlas's point view),
    or None."""
    return page.evaluate("""async () => {
        if (!navigator.gpu) return "no navigator.gpu";
        const adapter = await navigator.gpu.requestAdapter();
        if (!adapter) return "no WebGPU adapter";
        return adapter.features.has("shader-f16") ? null
            : "a WebGPU adapter without shader-f16"; }""")


def test_a_200k_point_pool_opens_offline_and_chart_filters_list_pairs(large_url):
    with sync_api.sync_playwright() as pw:
        browser = _browser(pw)
        try:
            started = time.monotonic()
            page, atlas, outside = _open_explore(browser, large_url, 2 * N_PAIRS)
            opened = time.monotonic() - started
            _assert_no_exception(page, "Explore (200k points)")
            body = page.inner_text("body")
            assert f"All {2 * N_PAIRS:,} points shown" in body
            assert f"{N_PAIRS:,} pairs" in body
            # the help follows the viewer: the atlas's own, not Plotly's lasso
            assert "Click a bar of a chart" in body and "double-click the chart" not in body
            assert "Lasso or box-select" not in body
            assert "Tested in a browser: chart filters list the right pairs" in body
            if _lacks_webgpu_f16(page):
                page.get_by_text("so the atlas's point view stays empty").wait_for(
                    timeout=RUN_TIMEOUT * 1000)
                _wait_idle(page)
            _shot(page, "large_1_atlas")

            # A chart filter comes back as a predicate and is listed as pairs: a click on the
            # bar "image" of its modality chart selects every image.
            _click_modality_bar(page, atlas, "image")
            try:
                _wait_selected(page, re.compile(rf"{N_PAIRS:,} pairs selected"), 30)
            except AssertionError:
                _shot(page, "large_2_atlas_selection_failed")
                raise
            _wait_idle(page)
            _assert_no_exception(page, "Explore after an atlas selection")
            assert f"({N_PAIRS:,} points)" in page.inner_text("body")
            _shot(page, "large_2_atlas_selection")

            # The atlas's "Clear filters" (the × beside its selection count) clears the list.
            atlas.locator('button[title="Clear filters"]').first.click()
            page.get_by_text("Nothing selected yet").wait_for(timeout=RUN_TIMEOUT * 1000)
            _wait_idle(page)
            assert "press Esc in it, or click × beside its selection count" in page.inner_text(
                "body")

            # A brush across the histogram of the column "pair": every pair of a range of
            # rows, both points of each (checked on the selection table's CSV).
            heading = min(_boxes(atlas, "pair"), key=lambda b: b["y"])
            y = heading["y"] + 90
            page.mouse.move(heading["x"] + 80, y)
            page.mouse.down()
            page.mouse.move(heading["x"] + 160, y, steps=8)
            page.mouse.up()
            text = _wait_selected(page, re.compile(r"^[\d,]+ pairs selected"), 60)
            _wait_idle(page)
            _shot(page, "large_2b_atlas_histogram_brush")
            rows = _download_selection(page)
            pairs = sorted(int(r["pair"].removeprefix("sim-")) for r in rows)
            assert len(pairs) == int(text.split()[0].replace(",", "")) > 0, text
            assert pairs == list(range(pairs[0], pairs[-1] + 1)), (pairs[:3], pairs[-3:])
            assert {r["selected"] for r in rows} == {"image + text"}
            # Esc in the atlas clears too
            page.locator('iframe[title*="embedding_atlas"]').focus()
            page.keyboard.press("Escape")
            page.get_by_text("Nothing selected yet").wait_for(timeout=RUN_TIMEOUT * 1000)
            _wait_idle(page)

            # The Plotly viewer: a seeded sample, said so, with Plotly's help; a small lasso
            # around one point lists its pair.
            page.get_by_role("radiogroup", name="Viewer").get_by_text(
                "Plotly (sample)", exact=True).click()
            plot = page.locator('[class*="st-key-explore_scatter"] .js-plotly-plot').first
            plot.wait_for(timeout=RUN_TIMEOUT * 1000)
            _wait_idle(page)
            body = page.inner_text("body")
            assert (f"Showing 100,000 of {2 * N_PAIRS:,} points: a random sample of 50,000 "
                    f"of {N_PAIRS:,} pairs (seed 0)") in body
            assert "Lasso or box-select" in body and "double-click the chart to clear" in body
            assert "Click a bar of a chart" not in body
            x, y = plot.evaluate("""(gd) => {
                const tr = gd._fullData.find((t) => t.customdata);
                const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
                const box = gd.getBoundingClientRect();
                return [box.left + xa._offset + xa.l2p(tr.x[0]),
                        box.top + ya._offset + ya.l2p(tr.y[0])]; }""")
            page.mouse.move(x - 3, y - 3)
            page.mouse.down()
            for dx, dy in ((3, -3), (3, 3), (-3, 3), (-3, -2)):
                page.mouse.move(x + dx, y + dy, steps=3)
            page.mouse.up()
            text = _wait_selected(page, re.compile(r"^(?!100,000)[\d,]+ pairs selected"))
            # a 6-pixel lasso in a cloud of 100,000 points: a few pairs, not the pool
            assert 1 <= int(text.split()[0].replace(",", "")) <= 200, text
            _wait_idle(page)
            _assert_no_exception(page, "Explore after a lasso on the sample")
            _shot(page, "large_3_plotly_sample_selection")
            # nothing left the app: the atlas's DuckDB-WASM came from this server
            assert outside == [], outside
            print(f"Explore with 200,000 points opened in {opened:.0f} s; "
                  f"whole test {time.monotonic() - started:.0f} s")
        finally:
            browser.close()


def test_an_atlas_that_cannot_start_says_why_and_shows_the_sample(large_url):
    """DuckDB-WASM refused (as a CDN would be on a closed network): the page says the atlas
    did not start and switches to the Plotly sample by itself."""
    with sync_api.sync_playwright() as pw:
        browser = _browser(pw)
        try:
            page, _, outside = _open_explore(browser, large_url, 2 * N_PAIRS,
                                             refuse="/assets/duckdb/")
            page.get_by_text("Embedding Atlas did not start in this browser").wait_for(
                timeout=ATLAS_TIMEOUT * 1000)
            page.locator('[class*="st-key-explore_scatter"] .js-plotly-plot').first.wait_for(
                timeout=RUN_TIMEOUT * 1000)
            _wait_idle(page)
            _assert_no_exception(page, "Explore after the atlas failed")
            body = page.inner_text("body")
            assert "worker" in body, body[:3000]  # the reason: DuckDB-WASM's worker failed
            assert f"Showing 100,000 of {2 * N_PAIRS:,} points" in body
            assert "double-click the chart to clear" in body
            assert page.locator('iframe[title*="embedding_atlas"]').count() == 0
            assert outside == [], outside
            _shot(page, "large_4_atlas_failed_sample")
        finally:
            browser.close()


def test_a_400k_point_pool_is_sampled_and_filters_list_the_sampled_pairs(sampled_url):
    """On a hosted demo: the atlas is offered there, since nothing comes from elsewhere."""
    from gapviz.figures.atlas import ATLAS_MAX_POINTS, sample_pairs

    sample = sample_pairs(SAMPLED_PAIRS, ATLAS_MAX_POINTS)
    shown = sample.rows.size
    with sync_api.sync_playwright() as pw:
        browser = _browser(pw)
        try:
            page, atlas, outside = _open_explore(browser, sampled_url, 2 * shown)
            _assert_no_exception(page, "Explore (400k points, sampled)")
            assert (f"Showing {2 * shown:,} of {2 * SAMPLED_PAIRS:,} points: a random sample "
                    f"of {shown:,} of {SAMPLED_PAIRS:,} pairs (seed 0)") in page.inner_text("body")
            _click_modality_bar(page, atlas, "text")
            _wait_selected(page, re.compile(rf"{shown:,} pairs selected"), 60)
            _wait_idle(page)
            _shot(page, "large_5_sampled_selection")
            # The listed pairs, downloaded from the selection table, are the sampled ones.
            rows = _download_selection(page)
            ids = [f"sim-{r:05d}" for r in sample.rows]
            assert len(rows) == shown
            assert sorted(r["pair"] for r in rows) == sorted(ids)
            assert {r["selected"] for r in rows} == {"text"}
            assert outside == [], outside
        finally:
            browser.close()


#: Chromium switches for WebGPU in a headless browser (a GPU's adapter where there is one).
WEBGPU_ARGS = ("--enable-unsafe-webgpu", "--enable-features=Vulkan")


def test_a_click_in_the_atlas_shows_the_pair(large_url):
    """Click a point of the atlas, ask for its nearest neighbours: one, its partner; then a
    rectangle around the point lists its pair. Needs WebGPU with 16-bit floats in the
    browser (Embedding Atlas draws its points with nothing else)."""
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=[a for a in CHROMIUM_ARGS if a != "--disable-gpu"]
                                     + list(WEBGPU_ARGS))
        try:
            probe = browser.new_page()
            try:
                probe.goto(f"{large_url}/_stcore/health")  # a secure context (localhost)
                lacking = _lacks_webgpu_f16(probe)
            finally:
                probe.close()
            if lacking:
                pytest.skip(f"headless chromium here has {lacking}: Embedding Atlas draws its "
                            "points with WebGPU and shader-f16 only (the rest of the atlas "
                            "is tested without it)")
            page, atlas, _ = _open_explore(browser, large_url, 2 * N_PAIRS)
            canvas = atlas.locator("canvas").first
            canvas.wait_for(timeout=ATLAS_TIMEOUT * 1000)
            page.wait_for_timeout(2000)
            box = canvas.bounding_box()
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.click(x, y)
            atlas.get_by_text("Nearest Neighbors").first.click(timeout=30_000)
            atlas.get_by_text(re.compile(r"Neighbors of #\d+")).first.wait_for(timeout=30_000)
            _shot(page, "large_6_atlas_click_neighbour")
            # shift-drag: a rectangle around the clicked point lists its pair beside the atlas
            page.keyboard.down("Shift")
            page.mouse.move(x - 4, y - 4)
            page.mouse.down()
            page.mouse.move(x + 4, y + 4, steps=4)
            page.mouse.up()
            page.keyboard.up("Shift")
            text = _wait_selected(page, re.compile(r"^[\d,]+ pairs selected"))
            assert int(text.split()[0].replace(",", "")) >= 1, text
            _assert_no_exception(page, "Explore after a click in the atlas")
            _shot(page, "large_7_atlas_rectangle")
        finally:
            browser.close()
