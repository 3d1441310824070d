"""Retrieval, Compare and the exports in a real browser, on the built-in demo.

Reuses the server fixture and helpers of ``test_browser.py`` (``streamlit run app.py`` in
Debian's headless chromium through Playwright). Checks that the retrieval columns render with
the paper's contrast (raw: only images; spectral: the caption on top, highlighted), that the
downloads produce files that open in their tools (CSV in the csv module, the HTML report in
the browser with its charts drawn, the ``.npz`` in gapviz, a PNG in Pillow), and that the
compare table and heatmap render. Screenshots go to ``tests/artifacts/browser/``.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import pytest

from test_browser import (CHROMIUM, CHROMIUM_ARGS, FIRST_LOAD_TIMEOUT, VIEWPORT, _assert_no_exception,
                          _goto_page, _metrics, _wait_idle, app_url, sync_api)  # noqa: F401 (fixture)

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts" / "browser"
#: Seconds allowed for the Compare page's first table on the demo (seven methods fitted).
COMPARE_TIMEOUT = 240

COLUMNS_JS = """() => Array.from(document.querySelectorAll('.gv-cards'))
  .filter(b => b.querySelector('[data-rank]'))
  .map(b => Array.from(b.querySelectorAll('[data-rank]')).map(c => ({
      rank: Number(c.dataset.rank), modality: c.dataset.modality,
      partner: c.classList.contains('gv-partner')})))"""


def _shot(page, name: str) -> Path:
    """Full-height screenshot (Streamlit scrolls its own main area, so grow the viewport)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    height = page.evaluate("() => { const m = document.querySelector('[data-testid=\"stMain\"]');"
                           " return m ? m.scrollHeight : document.body.scrollHeight; }")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": max(int(height) + 20, VIEWPORT["height"])})
    page.wait_for_timeout(800)
    page.screenshot(path=str(path))
    page.set_viewport_size(VIEWPORT)
    page.wait_for_timeout(300)
    return path


def _download(page, popover_key: str, label: str, dest: Path) -> Path:
    """Open the page's Export popover, click the download ``label``, save the file."""
    menu = page.locator(f".st-key-{popover_key} button").first
    if page.get_by_role("button", name=label, exact=True).count() == 0 or \
            not page.get_by_role("button", name=label, exact=True).first.is_visible():
        menu.click()
        page.wait_for_timeout(400)
    with page.expect_download(timeout=90_000) as info:
        page.get_by_role("button", name=label, exact=True).first.click()
    path = dest / info.value.suggested_filename
    info.value.save_as(path)
    return path


def _open_in_browser(browser, path: Path, shot: str) -> int:
    """Open a downloaded HTML file with no network; return how many charts it drew."""
    context = browser.new_context(viewport=VIEWPORT, offline=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    page.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)
    charts = page.locator(".js-plotly-plot").count()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{shot}.png"), full_page=True)
    context.close()
    assert not errors, errors
    return charts


def _open_page(page, name: str, selector: str, timeout: float) -> float:
    """Go to page ``name``, wait for ``selector`` and for the app to settle; seconds it took."""
    started = time.monotonic()
    _goto_page(page, name)
    page.wait_for_selector(selector, timeout=timeout * 1000)
    _wait_idle(page, timeout)
    elapsed = time.monotonic() - started
    _assert_no_exception(page, name)
    return elapsed


def test_retrieval_compare_and_exports_in_a_real_browser(app_url, tmp_path):  # noqa: F811
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport=VIEWPORT, accept_downloads=True)
            page.goto(app_url)
            page.wait_for_selector('[data-testid="stMetric"]', timeout=FIRST_LOAD_TIMEOUT * 1000)
            _wait_idle(page, FIRST_LOAD_TIMEOUT)

            # Retrieval: raw on the left (images only), spectral on the right (caption on top).
            retrieval_load = _open_page(page, "Retrieval", ".gv-cards [data-rank]", FIRST_LOAD_TIMEOUT)
            raw, closed = page.evaluate(COLUMNS_JS)
            k = 10
            assert [c["modality"] for c in raw[:k]] == ["image"] * k
            assert raw[-1]["partner"] and raw[-1]["rank"] > k  # its caption, far below
            assert closed[0]["partner"] and closed[0]["modality"] == "text" and closed[0]["rank"] == 1
            assert page.locator(".gv-card.gv-partner").first.is_visible()
            metrics = _metrics(page)
            assert metrics["Rank of its caption"].startswith("#")
            chart = page.locator(".st-key-retrieval_fig_0 .js-plotly-plot")
            chart.first.wait_for(timeout=FIRST_LOAD_TIMEOUT * 1000)  # Plotly's code may come late
            assert chart.count() == 1
            _shot(page, "1_retrieval_image_query")

            # A caption as the query: the columns are redrawn for it.
            page.locator(".st-key-retrieval_modality").get_by_text("Caption", exact=True).click()
            # the rerun may start late on a busy machine: wait for the caption query's card
            page.locator('[data-testid="stMetricLabel"]', has_text="Rank of its image").first.wait_for(
                timeout=FIRST_LOAD_TIMEOUT * 1000)
            _wait_idle(page)
            _assert_no_exception(page, "Retrieval, caption query")
            assert "Rank of its image" in _metrics(page)
            raw, closed = page.evaluate(COLUMNS_JS)
            assert raw[0]["modality"] == "text"
            _shot(page, "2_retrieval_caption_query")

            # Downloads from the Retrieval page open in their tools.
            results = _download(page, "retrieval_export", "Results · CSV", tmp_path)
            rows = list(csv.DictReader(io.StringIO(results.read_text())))
            assert len(rows) == 2 * k and {r["space"] for r in rows} == {"Raw embeddings", "Spectral (k = 60, affinity = shift)"}
            report = _download(page, "retrieval_export", "Report · HTML", tmp_path)
            assert report.suffix == ".html" and report.stat().st_size > 100_000  # plotly.js inlined
            assert _open_in_browser(browser, report, "3_report_opened_offline") == 2
            npz = _download(page, "retrieval_export", "Embeddings after spectral · .npz", tmp_path)
            from gapviz.embeddings import load_embeddings

            pairs, _ = load_embeddings(npz)
            assert pairs.meta["method"] == "spectral" and pairs.meta["params"]["n_components"] == 60
            assert pairs.dim == 60 and pairs.n == 2500
            from gapviz.exports import kaleido_available

            if kaleido_available():
                png = _download(page, "retrieval_export", "PNG", tmp_path)
                from PIL import Image

                with Image.open(png) as im:
                    assert im.format == "PNG" and im.size[0] > 1000

            # Compare: the table of methods, then the heatmap.
            page.keyboard.press("Escape")
            compare_load = _open_page(page, "Compare", '[data-testid="stDataFrame"]', COMPARE_TIMEOUT)
            _shot(page, "4_compare_table")
            page.get_by_role("tab", name="Heatmap").click()
            page.wait_for_selector(".st-key-compare_heatmap .js-plotly-plot .main-svg", timeout=30_000)
            page.wait_for_timeout(800)
            _shot(page, "5_compare_heatmap")
            measures = _download(page, "compare_export", "Measures · CSV", tmp_path)
            rows = list(csv.DictReader(io.StringIO(measures.read_text())))
            assert rows[0]["run"] == "orig" and "spectral" in {r["run"] for r in rows}
            spectral = next(r for r in rows if r["run"] == "spectral")
            assert float(spectral["ITR"]) < float(rows[0]["ITR"])
            (ARTIFACTS / "timings.txt").write_text(
                f"retrieval page, first load after the overview (browser, demo): {retrieval_load:.1f} s\n"
                f"compare page, default methods on the demo (browser): {compare_load:.1f} s\n")
        finally:
            browser.close()
