"""Explore on a 200,000-point pool (100,000 generated pairs) in a real browser.

A real ``streamlit run`` serves the app with a generated pool of 100,000 pairs
(``gapviz.simulate.simulate_pairs(100_000, 64)``) as the active data; Playwright drives
Debian's headless chromium. Explore must open without waiting for the pool's measures and
hand all 200,000 points to Embedding Atlas (the atlas counts the rows it received); a
selection in the atlas (a click on a bar of its modality chart) comes back as pairs listed
beside it; the Plotly viewer says it shows a seeded sample and a small lasso on it lists a
pair. A click on a point of the atlas, its nearest neighbour (the partner) and a rectangle
around it need WebGPU with ``shader-f16`` in the browser; that test is skipped, with the
reason, where the headless browser lacks it (software WebGPU has no 16-bit floats).

The atlas's component loads DuckDB-WASM from cdn.jsdelivr.net; the test answers those
requests with the copy the package ships. Screenshots and the server log go to
``tests/artifacts/browser/``. Skipped (with the reason) when ``/usr/bin/chromium``, the
``playwright`` package or the ``embedding-atlas`` extra (``pip install "gapviz[atlas]"``) is
missing; CI installs only requirements.txt, so there it is skipped. The fallback without
the atlas (a seeded Plotly sample) is tested by AppTest in ``test_atlas_view.py``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

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
DIM = 64
#: Seconds for Explore's first run (generate the pool, PCA, the atlas's table) and for the
#: atlas to load its 200,000 rows into DuckDB-WASM.
OPEN_TIMEOUT = 120
ATLAS_TIMEOUT = 90

pytestmark = pytest.mark.browser

pytest.importorskip("embedding_atlas",
                    reason='embedding-atlas is not installed (pip install "gapviz[atlas]")')

#: The entry script: the app's own router with Explore as the first page (the Overview would
#: measure the pool: minutes at this size), and the generated pool as the session's data.
ENTRY = f'''
import streamlit as st

from gapviz.simulate import simulate_pairs
from gapviz.workspace import Workspace
from ui.frame import PAGES, page_config


@st.cache_resource
def pool():
    return simulate_pairs({N_PAIRS}, {DIM}, seed=0)


if "workspace" not in st.session_state:
    ws = Workspace()
    ws.add(pool(), source="generated", dataset="large pool", model="sim-CLIP", activate=True)
    st.session_state["workspace"] = ws
page_config()
st.navigation([st.Page(p.path, title=p.title, icon=p.icon, default=p.path == "pages/explore.py")
               for p in PAGES], position="hidden").run()
'''


@pytest.fixture(scope="module")
def large_url(tmp_path_factory):
    """``streamlit run`` of an entry script beside links to the app's folders (so the pages,
    ``ui`` and ``.streamlit/config.toml`` are the repository's own)."""
    app = tmp_path_factory.mktemp("large-app")
    for name in ("pages", "ui", "assets", ".streamlit"):
        if (ROOT / name).exists():
            (app / name).symlink_to(ROOT / name)
    (app / "app.py").write_text(ENTRY)
    yield from _serve(tmp_path_factory, "streamlit-large-pool.log", script=app / "app.py",
                      cwd=app, env={"PYTHONPATH": str(ROOT)})


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def _duckdb_files() -> dict[str, Path]:
    """DuckDB-WASM's worker and module by their CDN names, from the copy the atlas package
    ships for its own viewer (the same DuckDB-WASM version as its Streamlit component)."""
    import embedding_atlas

    assets = Path(embedding_atlas.__file__).parent / "static" / "assets"
    files = {}
    for name, pattern in (("duckdb-browser-eh.worker.js", "duckdb-browser-eh.worker-*.js"),
                          ("duckdb-browser-mvp.worker.js", "duckdb-browser-mvp.worker-*.js"),
                          ("duckdb-eh.wasm", "duckdb-eh-*.wasm"),
                          ("duckdb-mvp.wasm", "duckdb-mvp-*.wasm")):
        found = sorted(assets.glob(pattern))
        if not found:
            pytest.skip(f"embedding-atlas ships no {pattern} under {assets}")
        files[name] = found[0]
    return files


def _offline_cdn(context) -> None:
    """The atlas's component loads DuckDB-WASM from cdn.jsdelivr.net; this machine is
    offline, so those requests are answered from the package's own copy (others fail)."""
    files = _duckdb_files()

    def serve(route):
        name = route.request.url.rsplit("/", 1)[-1]
        if name not in files:
            route.abort()
            return
        kind = "application/wasm" if name.endswith(".wasm") else "text/javascript"
        route.fulfill(path=str(files[name]), content_type=kind,
                      headers={"Access-Control-Allow-Origin": "*"})

    context.route("https://cdn.jsdelivr.net/**", serve)


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


def _open_explore(browser, url: str):
    context = browser.new_context(viewport=VIEWPORT)
    _offline_cdn(context)
    page = context.new_page()
    # The root, not /explore: a deep link on a fresh server runs the page file alone.
    page.goto(url)
    page.get_by_text("Drawn with Embedding Atlas").wait_for(timeout=OPEN_TIMEOUT * 1000)
    _wait_idle(page, OPEN_TIMEOUT)
    atlas = page.frame_locator('iframe[title*="embedding_atlas"]')
    # the atlas counts the rows it received: the whole table arrived in the browser
    atlas.get_by_text(f"{2 * N_PAIRS:,} / {2 * N_PAIRS:,}").first.wait_for(
        timeout=ATLAS_TIMEOUT * 1000)
    return page, atlas


def test_a_200k_point_pool_opens_in_explore_and_selections_list_pairs(large_url):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                     headless=True)
        try:
            started = time.monotonic()
            page, atlas = _open_explore(browser, large_url)
            opened = time.monotonic() - started
            _assert_no_exception(page, "Explore (200k points)")
            body = page.inner_text("body")
            assert f"All {2 * N_PAIRS:,} points shown" in body
            assert f"{N_PAIRS:,} pairs" in body
            _shot(page, "large_1_atlas")

            # The atlas's selection comes back as a predicate and is listed as pairs: a click
            # on the bar "image" of its modality chart selects every image.
            def boxes(text):
                found = atlas.get_by_text(text, exact=True)
                return [b for b in (found.nth(i).bounding_box() for i in range(found.count()))
                        if b]

            # the chart's title (the table below has a "modality" column too) and its label
            heading = min(boxes("modality"), key=lambda b: b["y"])
            bar = next(b for b in boxes("image") if 0 < b["y"] - heading["y"] < 80
                       and abs(b["x"] - heading["x"]) < 40)
            page.mouse.click(bar["x"] + bar["width"] + 30, bar["y"] + bar["height"] / 2)
            try:
                _wait_selected(page, re.compile(rf"{N_PAIRS:,} pairs selected"), 30)
            except AssertionError:
                _shot(page, "large_2_atlas_selection_failed")
                raise
            _wait_idle(page)
            _assert_no_exception(page, "Explore after an atlas selection")
            assert f"({N_PAIRS:,} points)" in page.inner_text("body")
            _shot(page, "large_2_atlas_selection")

            # The Plotly viewer: a seeded sample, said so; a small lasso around one point
            # lists its pair.
            page.get_by_text("Plotly (sample)", exact=True).click()
            plot = page.locator('[class*="st-key-explore_scatter"] .js-plotly-plot').first
            plot.wait_for(timeout=RUN_TIMEOUT * 1000)
            _wait_idle(page)
            assert (f"Showing 100,000 of {2 * N_PAIRS:,} points: a random sample of 50,000 "
                    f"of {N_PAIRS:,} pairs (seed 0)") in page.inner_text("body")
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
            print(f"Explore with 200,000 points opened in {opened:.0f} s; "
                  f"whole test {time.monotonic() - started:.0f} s")
        finally:
            browser.close()


#: Chromium switches for WebGPU in a headless browser (a GPU's adapter where there is one).
WEBGPU_ARGS = ("--enable-unsafe-webgpu", "--enable-features=Vulkan")


def _webgpu_f16(browser, url: str) -> str | None:
    """None when the browser offers a WebGPU adapter with ``shader-f16`` (what the atlas's
    point view needs), else what it lacks."""
    page = browser.new_page()
    try:
        page.goto(f"{url}/_stcore/health")  # a secure context (localhost)
        return page.evaluate("""async () => {
            if (!navigator.gpu) return "no navigator.gpu";
            const adapter = await navigator.gpu.requestAdapter();
            if (!adapter) return "no WebGPU adapter";
            return adapter.features.has("shader-f16") ? null
                : "a WebGPU adapter without shader-f16"; }""")
    finally:
        page.close()


def test_a_click_in_the_atlas_shows_the_pair(large_url):
    """Click a point of the atlas, ask for its nearest neighbours: one, its partner; then a
    rectangle around the point lists its pair. Needs WebGPU with 16-bit floats in the
    browser (Embedding Atlas draws its points with nothing else)."""
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=[a for a in CHROMIUM_ARGS if a != "--disable-gpu"]
                                     + list(WEBGPU_ARGS))
        try:
            lacking = _webgpu_f16(browser, large_url)
            if lacking:
                pytest.skip(f"headless chromium here has {lacking}: Embedding Atlas draws its "
                            "points with WebGPU and shader-f16 only (the rest of the atlas "
                            "is tested without it)")
            page, atlas = _open_explore(browser, large_url)
            canvas = atlas.locator("canvas").first
            canvas.wait_for(timeout=ATLAS_TIMEOUT * 1000)
            page.wait_for_timeout(2000)
            box = canvas.bounding_box()
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.click(x, y)
            atlas.get_by_text("Nearest Neighbors").first.click(timeout=30_000)
            atlas.get_by_text(re.compile(r"Neighbors of #\d+")).first.wait_for(timeout=30_000)
            _shot(page, "large_4_atlas_click_neighbour")
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
            _shot(page, "large_5_atlas_rectangle")
        finally:
            browser.close()
