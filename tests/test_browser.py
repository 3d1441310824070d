"""The whole app in a real browser: ``streamlit run app.py`` driven by Playwright in Debian's
headless chromium.

Visits every page, checks that no exception is shown, moves the spectral k slider and checks
that the metric cards changed, lasso-selects points on Explore and checks that pairs are
listed, and saves a screenshot of each step under ``tests/artifacts/browser/``.

Skipped (with the reason) only when ``/usr/bin/chromium`` or the ``playwright`` package is
missing; CI installs chromium (``.ci/run``).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-dev-shm-usage"]
VIEWPORT = {"width": 1440, "height": 900}
#: Seconds allowed for the first page (the demo is measured and the spectral method fitted).
FIRST_LOAD_TIMEOUT = 120
RUN_TIMEOUT = 90

pytestmark = pytest.mark.browser

sys.path.insert(0, str(ROOT))
from ui.frame import PAGES  # noqa: E402  (the menu every page must show)

if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed at /usr/bin/chromium "
                "(apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="the playwright Python package is not installed")


#: A real open_clip architecture built with random weights: no download needed.
BROWSER_MODEL = "ViT-S-32"
CAPTIONS = ["a red kite over a field", "a boat on a lake", "a city street at night",
            "a dog in the snow", "two cats on a sofa", "a bowl of fruit", "a train at a station",
            "a bicycle by a wall"]


def _pairs_zip(folder: Path) -> Path:
    """8 pictures with captions.csv and one caption whose image is missing, zipped."""
    import zipfile

    from datafixtures import write_image

    root = folder / "pairs"
    lines = ["image,caption"]
    for i, caption in enumerate(CAPTIONS):
        write_image(root / f"img{i}.jpg", seed=i, size=(160, 120))
        lines.append(f"img{i}.jpg,{caption}")
    lines.append("missing.jpg,an image that is not there")
    (root / "captions.csv").write_text("\n".join(lines) + "\n")
    path = folder / "pairs.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for file in sorted(root.iterdir()):
            zf.write(file, f"pairs/{file.name}")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """A real ``streamlit run app.py`` on a free port, with its own cache folder."""
    yield from _serve(tmp_path_factory, "streamlit.log")


@pytest.fixture
def fresh_app_url(tmp_path_factory):
    """A server of its own, started for one test (nothing has run on it yet)."""
    yield from _serve(tmp_path_factory, "streamlit-fresh.log")


def _serve(tmp_path_factory, log_name: str, *, script: Path = ROOT / "app.py", cwd: Path = ROOT,
           env: dict | None = None, args: tuple[str, ...] = (), process: list | None = None,
           wait_for: str | None = None):
    """A real ``streamlit run SCRIPT`` on a free port with its own cache folder, until the
    fixture ends (its log saved as ``tests/artifacts/browser/LOG_NAME``). ``args``: more
    ``streamlit run`` options; ``process``: a list the server's ``Popen`` is appended to (a
    test that reads its memory); ``wait_for``: a line the server's log must show before the
    server is handed over (the warm-up's done line, say)."""
    port = _free_port()
    cache = tmp_path_factory.mktemp("gapviz-cache")
    log_path = tmp_path_factory.mktemp("server") / "streamlit.log"
    env = {**os.environ, "GAPVIZ_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1", **(env or {})}
    cmd = [sys.executable, "-m", "streamlit", "run", str(script),
           "--server.headless=true", f"--server.port={port}", "--server.address=127.0.0.1",
           "--browser.gatherUsageStats=false", "--server.fileWatcherType=none",
           "--server.runOnSave=false", *args]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    if process is not None:
        process.append(proc)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        deadline = time.monotonic() + 240
        while wait_for is not None and wait_for not in log_path.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the server's log never said {wait_for!r}:\n"
                            f"{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        server_log = log_path.read_text()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / log_name).write_text(server_log)


def _wait_idle(page, timeout: float = RUN_TIMEOUT) -> None:
    """Wait until the script run is over: no "Running" status widget, no stale elements,
    no spinner, for a short quiet period."""
    deadline = time.monotonic() + timeout
    quiet_since = None
    while time.monotonic() < deadline:
        busy = page.evaluate("""() => {
            const running = document.querySelector('[data-testid="stStatusWidget"]');
            const stale = document.querySelector('[data-stale="true"]');
            const spin = document.querySelector('[data-testid="stSpinner"]');
            return Boolean(running || stale || spin);
        }""")
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > 1.0:
            return
        time.sleep(0.2)
    raise AssertionError(f"the app was still running after {timeout} s")


def _assert_no_exception(page, where: str) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, f"exception shown on {where}"
    text = page.inner_text("body")
    assert "Traceback" not in text, f"traceback text on {where}"
    assert "Something went wrong" not in text, f"error message on {where}: {text[:2000]}"


def _metrics(page) -> dict[str, str]:
    out = {}
    for card in page.locator('[data-testid="stMetric"]').all():
        label = card.locator('[data-testid="stMetricLabel"]').inner_text().strip()
        value = card.locator('[data-testid="stMetricValue"]').inner_text().strip()
        out.setdefault(label, value)
    return out


def _goto_page(page, title: str) -> None:
    """Click the menu's link to ``title`` and wait until that page has run: its heading
    (every page's differs) has replaced the one shown, and nothing runs any more. On a busy
    machine the new run may start more than the idle wait's quiet second after the click, so
    waiting for quiet alone could read the old page."""
    shown = page.locator("h1").first.inner_text().strip() if page.locator("h1").count() else ""
    page.locator('[data-testid="stSidebar"] [data-testid="stPageLink"] a',
                 has_text=title).first.click()
    page.wait_for_function(
        "(old) => { const h = document.querySelector('h1');"
        " return h !== null && h.innerText.trim() !== old; }", arg=shown,
        timeout=FIRST_LOAD_TIMEOUT * 1000)
    _wait_idle(page)


def _shot(page, name: str, full: bool = True) -> Path:
    """Screenshot under tests/artifacts/browser/. Streamlit scrolls its main area itself, so
    a full-page shot grows the viewport to the content's height for the picture."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    height = page.evaluate("() => { const m = document.querySelector('[data-testid=\"stMain\"]');"
                           " return m ? m.scrollHeight : document.body.scrollHeight; }")
    if full and height > VIEWPORT["height"]:
        page.set_viewport_size({"width": VIEWPORT["width"], "height": int(height) + 20})
        page.wait_for_timeout(800)
        page.screenshot(path=str(path))
        page.set_viewport_size(VIEWPORT)
        page.wait_for_timeout(300)
    else:
        page.screenshot(path=str(path))
    return path


def test_every_page_in_a_real_browser(app_url):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                     headless=True)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            # Nothing but the app's own server: a hosted demo must not send its visitors'
            # browsers elsewhere (fonts, icons, scripts from a CDN).
            elsewhere: list[str] = []
            page.on("request", lambda r: None if r.url.startswith((app_url, "data:", "blob:"))
                    else elsewhere.append(r.url))
            started = time.monotonic()
            page.goto(app_url)
            page.wait_for_selector('[data-testid="stMetric"]', timeout=FIRST_LOAD_TIMEOUT * 1000)
            _wait_idle(page, FIRST_LOAD_TIMEOUT)
            first_load = time.monotonic() - started

            # Overview: four panels on the demo, no clicks.
            _assert_no_exception(page, "Overview")
            body = page.inner_text("body")
            for panel in ("The gap, seen", "The gap, measured", "The gap, closed", "The proof"):
                assert panel in body
            assert "Simulated data" in body
            overview = _metrics(page)
            assert {"ITR", "TIR", "IMR", "TMR"} <= set(overview)
            # (Plotly's browser code is a chunk fetched when a first chart is drawn: wait for it.)
            page.locator(".js-plotly-plot").nth(1).wait_for(timeout=FIRST_LOAD_TIMEOUT * 1000)
            assert page.locator(".js-plotly-plot").count() >= 2
            _shot(page, "1_overview", full=False)  # what a stakeholder sees: one screen

            # Data: the demo is listed with its three simulated models.
            _goto_page(page, "Data")
            _assert_no_exception(page, "Data")
            assert "Demo (simulated)" in page.inner_text("body")
            _shot(page, "2_data")

            # Explore: the scatter, then a lasso selection lists pairs.
            _goto_page(page, "Explore")
            _assert_no_exception(page, "Explore")
            plot = page.locator('[class*="st-key-explore_scatter"] .js-plotly-plot').first
            plot.wait_for(timeout=30_000)
            _shot(page, "3_explore")
            box = plot.locator(".nsewdrag").first.bounding_box()
            assert box is not None
            cx, cy = box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5
            rx, ry = box["width"] * 0.3, box["height"] * 0.3
            page.mouse.move(cx - rx, cy - ry)
            page.mouse.down()
            for x, y in ((cx + rx, cy - ry), (cx + rx, cy + ry), (cx - rx, cy + ry),
                         (cx - rx, cy - ry + 2)):
                page.mouse.move(x, y, steps=8)
            page.mouse.up()
            # the selection's rerun may start late on a busy machine: wait for what it lists
            selected = page.get_by_text(re.compile(r"[\d,]+ pairs selected"))
            try:
                selected.first.wait_for(timeout=RUN_TIMEOUT * 1000)
            except sync_api.TimeoutError:
                raise AssertionError("a lasso selection did not list pairs") from None
            _wait_idle(page)
            _assert_no_exception(page, "Explore after a lasso selection")
            _shot(page, "4_explore_selection")

            # Close the gap: move the k slider, the cards must change.
            _goto_page(page, "Close the gap")
            _assert_no_exception(page, "Close the gap")
            before = _metrics(page)
            assert "ITR" in before
            _shot(page, "5_close_gap")
            slider = page.locator('.st-key-close_k input[type="range"]').first
            slider.focus()
            t0 = time.monotonic()
            page.keyboard.press("End")
            page.wait_for_function(
                "(old) => { const el = document.querySelector('[data-testid=\"stMetricValue\"]');"
                " return el && el.innerText.trim() !== old; }", arg=before["ITR"], timeout=60_000)
            slider_update = time.monotonic() - t0
            _wait_idle(page)
            _assert_no_exception(page, "Close the gap after moving k")
            after = _metrics(page)
            assert after["ITR"] != before["ITR"], (before, after)
            assert after != before
            _shot(page, "6_close_gap_k_moved")

            # State survives moving between pages: k stays where it was put.
            _goto_page(page, "Overview")
            _goto_page(page, "Close the gap")
            assert _metrics(page)["ITR"] == after["ITR"]

            # Data: the user's own zip, embedded with a random-weight open_clip model (offline).
            _goto_page(page, "Data")
            page.get_by_role("tab", name="Your pairs").click()
            page.locator('.st-key-data_pairs_upload input[type="file"]').set_input_files(
                str(_pairs_zip(ARTIFACTS.parent / "browser-upload")))
            _wait_idle(page)
            page.locator('.st-key-data_pairs_model input[role="combobox"]').click()
            page.get_by_role("option", name="Another open_clip model…").click()
            _wait_idle(page)
            arch = page.locator('.st-key-data_pairs_arch input')
            arch.fill(BROWSER_MODEL)
            arch.press("Enter")
            _wait_idle(page)
            page.locator('.st-key-data_pairs_random label').first.click()
            _wait_idle(page)
            page.locator('.st-key-data_pairs_go button').click()
            page.get_by_text("Loaded ").first.wait_for(timeout=RUN_TIMEOUT * 1000)
            _wait_idle(page)
            _assert_no_exception(page, "Data after loading a zip")
            body = page.inner_text("body")
            assert "kept 8 of 9 pairs" in body, body[:3000]
            assert "pairs.zip" in page.inner_text('[data-testid="stSidebar"]')
            # the page stays on the tab the pairs were loaded from (it went back to Demo)
            assert page.locator('[role="tab"][aria-selected="true"]').all_inner_texts() == \
                ["Your pairs"]
            _shot(page, "7_data_own_zip")
            _goto_page(page, "Overview")
            _assert_no_exception(page, "Overview on the user's data")
            assert "pairs.zip" in page.inner_text("body")
            _shot(page, "8_overview_own_data", full=False)

            assert not elsewhere, f"requests beyond the app's server: {sorted(set(elsewhere))[:5]}"
            (ARTIFACTS / "timings.txt").write_text(
                f"first page load (browser, demo): {first_load:.2f} s\n"
                f"k slider -> first card updated (browser): {slider_update:.2f} s\n")
        finally:
            browser.close()


#: Each page's URL path and the title it shows (the menu order of ui.frame.PAGES).
DEEP_LINKS = {"data": "Data", "explore": "Explore the gap", "close_gap": "Close the gap",
              "anatomy": "Anatomy of the gap", "retrieval": "Retrieval", "compare": "Compare"}


def test_deep_links_work_on_a_freshly_started_server(fresh_app_url):
    """A link to a page opened before anyone has opened the app's root: Streamlit runs the
    page file itself then (a ``pages/`` folder sits beside app.py); each page must still draw
    the whole app, with the same menu, and its links must lead to the other pages."""
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                     headless=True)
        try:
            for path, title in DEEP_LINKS.items():
                page = browser.new_page(viewport=VIEWPORT)  # a new session for each link
                page.goto(f"{fresh_app_url}/{path}")
                page.wait_for_selector("h1", timeout=FIRST_LOAD_TIMEOUT * 1000)
                _wait_idle(page, FIRST_LOAD_TIMEOUT)
                _assert_no_exception(page, f"/{path} opened directly")
                assert page.locator("h1").first.inner_text().strip() == title
                links = page.locator('[data-testid="stSidebar"] [data-testid="stPageLink"]')
                # Streamlit's browser code for a page link is a chunk of its own, fetched when
                # the first link is drawn: on a new browser context and a busy server the menu
                # shows a moment after the run is over (seen: half a second). Wait for it.
                links.nth(len(PAGES) - 1).wait_for(timeout=FIRST_LOAD_TIMEOUT * 1000)
                # Each link's text is its material icon's name, then its label.
                assert [t.strip().split("\n")[-1] for t in links.all_inner_texts()] == [
                    p.title for p in PAGES], f"the menu of /{path}"
                # Streamlit's own menu (which would list files, not pages) is hidden.
                assert page.locator('[data-testid="stSidebarNav"]').count() == 0
                assert "Demo (simulated)" in page.inner_text('[data-testid="stSidebar"]')
                page.close()
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(f"{fresh_app_url}/compare")
            page.wait_for_selector("h1", timeout=FIRST_LOAD_TIMEOUT * 1000)
            _wait_idle(page, FIRST_LOAD_TIMEOUT)
            _goto_page(page, "Overview")
            assert "The gap, seen" in page.inner_text("body")
            _goto_page(page, "Explore")
            assert page.locator("h1").first.inner_text().strip() == "Explore the gap"
            _assert_no_exception(page, "menu links after a deep link")
        finally:
            browser.close()



#: Targets of a live regularisation slider at the demo's 2,500 pairs, printed beside the
#: measured times; bench/bench_ot_live.py judges them (a timed test on a shared machine does not).
SLIDER_MOVE_TARGET = 1.0
FIRST_VIEW_TARGET = 5.0


_CARDS_JS = ("Array.from(document.querySelectorAll('[data-testid=\"stMetricValue\"]'))"
             ".map(el => el.innerText.trim()).join('|')")


def _cards(page) -> str:
    """Every metric card's value, in order (a move may leave one card's value as it was)."""
    return page.evaluate(f"() => {_CARDS_JS}")


def _change_of_cards(page, old: str, timeout_ms: int = 120_000) -> None:
    page.wait_for_function(f"(old) => {{ const now = {_CARDS_JS}; return now && now !== old; }}",
                           arg=old, timeout=timeout_ms)


#: Close the gap's live charts (ui/live_plot), all in one frame.
_CHART_KEYS = ("close_scatter_raw", "close_scatter", "close_hist")


def _live_charts(page):
    """The frame of Close the gap's live charts (ui/live_plot: one iframe for the three), once
    each chart has drawn."""
    frame = page.locator(".st-key-close_charts iframe").first.element_handle().content_frame()
    for key in _CHART_KEYS:
        frame.wait_for_selector(f'[data-key="{key}"] .main-svg',
                                timeout=FIRST_LOAD_TIMEOUT * 1000)
    return frame


def _chart_title(frame, key: str) -> str:
    return frame.evaluate(f"() => document.querySelector('[data-key=\"{key}\"] .gtitle').textContent")


def _charts_kept(frame) -> bool:
    """The frame and each chart's plot are those marked by :func:`_mark_charts` (a chart
    loaded anew, or purged and drawn again, would lose its mark)."""
    return frame.evaluate("(keys) => window.__kept === true && keys.every(k => "
                          "document.querySelector(`[data-key=\"${k}\"] .main-svg`).__kept === true)",
                          list(_CHART_KEYS))


def _mark_charts(frame) -> None:
    frame.evaluate("(keys) => { window.__kept = true; for (const k of keys) "
                   "document.querySelector(`[data-key=\"${k}\"] .main-svg`).__kept = true; }",
                   list(_CHART_KEYS))


def test_ot_and_sinkhorn_sliders_move_live(app_url):
    """On Close the gap, choose Laplace OT then Sinkhorn (each under its default protocol,
    held-out): the cards change to the method's view, then each of three one-step moves of
    the regularisation slider (to values not seen before, each after the user has read for 2 s,
    as in bench/bench_ot_page.py)
    changes the cards again, with no exception and the protocol still said, and redraws the
    "after" scatter in place (its title says the new value; no chart is drawn anew, neither by
    a move nor by the method switch). The times are
    printed beside their targets (first view 5 s, a move 1 s) but not judged here: wall-clock
    targets are met in bench/bench_ot_live.py, not in a test on a shared machine."""
    timings = {}
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                     headless=True)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(f"{app_url}/close_gap")
            page.wait_for_selector('[data-testid="stMetric"]', timeout=FIRST_LOAD_TIMEOUT * 1000)
            _wait_idle(page, FIRST_LOAD_TIMEOUT)
            charts = _live_charts(page)
            _mark_charts(charts)  # a chart drawn anew would lose its mark
            # three one-step moves, each to a value not seen before: reg_lap 100 -> 30 -> 10
            # -> 1; reg 0.05 -> 0.1 -> 0.2 -> 0.5
            for label, key, arrow in (("Laplace OT (EMD)", "close_reg_lap", "ArrowLeft"),
                                      ("Sinkhorn OT", "close_reg", "ArrowRight")):
                before = _cards(page)
                page.locator(".st-key-close_method").click()
                t0 = time.monotonic()
                page.get_by_role("option", name=label).click()
                _change_of_cards(page, before)
                _wait_idle(page)
                timings[f"{label}: first view"] = time.monotonic() - t0
                _assert_no_exception(page, label)
                assert "held-out: 5-fold cross-fit" in page.inner_text("body")
                # the method switch redrew the charts in place (a sibling block above them
                # that changed its place would have them loaded anew)
                charts.wait_for_function(
                    "(m) => document.querySelector('[data-key=\"close_scatter\"] .gtitle')"
                    "?.textContent.startsWith(m)",
                    arg=label, timeout=30_000)
                assert _charts_kept(charts), f"{label}: a chart was loaded anew"
                moves = []
                for _ in range(3):
                    page.wait_for_timeout(2000)  # the user reads; neighbouring values solve
                    before = _cards(page)
                    title = _chart_title(charts, "close_scatter")
                    page.locator(f'.st-key-{key} input[type="range"]').first.focus()
                    t0 = time.monotonic()
                    page.keyboard.press(arrow)
                    _change_of_cards(page, before)
                    moves.append(time.monotonic() - t0)
                    _wait_idle(page)
                    _assert_no_exception(page, f"{label} after a slider move")
                    # the move redrew the "after" scatter in place, with the new value
                    charts.wait_for_function(
                        "(old) => { const t = document.querySelector("
                        "'[data-key=\"close_scatter\"] .gtitle');"
                        " return t && t.textContent !== old; }", arg=title, timeout=30_000)
                    assert _charts_kept(charts), f"{label}: a chart was drawn anew"
                # the median of three one-step moves: one hiccup of a shared machine (a
                # collection, another test's leftover work in the server) is not the app's speed
                timings[f"{label}: slider move"] = sorted(moves)[1]
                timings[f"{label}: slider moves (all)"] = moves
                _shot(page, f"7_{key}_moved")
        finally:
            browser.close()
    print("live sliders:", {k: [round(x, 2) for x in v] if isinstance(v, list) else round(v, 2)
                            for k, v in timings.items()})
    print(f"targets: first view < {FIRST_VIEW_TARGET:.0f} s, slider move < {SLIDER_MOVE_TARGET:.0f} s "
          "(judged by bench/bench_ot_live.py)")
