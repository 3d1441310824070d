"""Benchmark: the Compare page in a real browser, on the built-in demo, idle and on a busy machine.

The script starts the app itself (``streamlit run app.py``, headless, on a free port, with a
cache folder of its own) and drives Debian's headless chromium through Playwright, as the
browser tests do. On each load level it tops up the runnable tasks to ``load`` per CPU with
busy processes (``bench_ot_busy.start_busy``: ``while True: pass``), counting the work already
running there (sampled again before each measurement: it may come and go), and times, with the
page's default method selection:

* **cold**: a fresh server process (and cache folder); a first visitor opens the home page,
  waits until it has loaded, stays ``--dwell`` seconds more (reading it: meanwhile the server
  obtains the Compare page's opening rows in the background), then clicks Compare in the
  sidebar. Timed from the click;
* **warm**: the same server; a second visitor (a new browser context: no cookies, no cache)
  opens ``/compare`` directly. Timed from the navigation's start;
* **link**: another fresh server; its first visitor follows a link straight to ``/compare``
  as soon as the server answers, so nearly nothing was obtained before the visit: every row
  is fitted while the visitor waits (by the page's loop from the first row, the background
  worker from the last, the server's warm-up from the first). Timed from the navigation's
  start;
* **warmed link**: a third fresh server; its first visitor follows the same link once the
  server's warm-up (``ui.warmup``: the demo's first pages obtained at the server's start) is
  done, as a hosted demo's visitors do. The warm-up's time, from the server answering to its
  "done" line in the server's log, is printed too. Timed from the navigation's start;
* **floor**: what any Streamlit page with such a table costs here, timed the same way: a
  fresh server of a one-page app (``FLOOR_APP``: the title "Compare" and, where the page has
  its table, a dataframe of random numbers with the finished table's rows and columns),
  opened by a new visitor and timed from the navigation's start to the table shown with
  nothing running. No gapviz code runs in it: the link visits' time beyond it is the app's.

The clock is read in the page (``performance.now()``, polled every 50 ms): **first rows** is
when a table with at least one row is first drawn (the page shows the rows measured so far
while the others run), **finished** when the page's final table (the dataframe under the
Table / Heatmap / Trade-off tabs, drawn once every row is in) shows its rows and nothing runs
any more (no status widget, progress bar, spinner or stale element), a state that must hold
for 1 s to count. The rows shown are checked against the methods selected on the page. A visit
that ends on an exception, or does not finish within ``--timeout``, is reported as not finished
with a screenshot under /tmp (and the server log's tail).

Printed per level: the running tasks found and busy processes started, the running tasks
sampled every 0.1 s while each visit was timed (mean; the server, chromium and this script
included), the 1-minute load average, the CPU seconds the server (with its solver processes)
and the browser (every chromium process) used from each visit's start to the end of its quiet
second, the cold, warm, link, warmed-link and floor times, and whether the first four meet
the target: finished in under 5 s at 1 runnable task per CPU.

Usage: python bench/bench_compare_page.py [--loads 0,1] [--repeat 1] [--dwell 1]
       [--timeout 240] [--json results.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

# bench/ is the script's folder, so on sys.path
from bench_ot_busy import CpuSplit, Sampler, background_tasks, start_busy, stop_busy

ROOT = Path(__file__).resolve().parents[1]
#: The line the server prints once its warm-up is done (``ui.warmup.DONE_MESSAGE``; a test
#: checks the two agree).
DONE_MESSAGE = "gapviz warm-up: done"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]
VIEWPORT = {"width": 1440, "height": 900}
TARGET_S = 5.0
TARGET_LOAD = 1.0
#: Seconds the finished state must hold before it counts (a rerun would make the page busy).
QUIET_S = 1.0
#: Seconds allowed for the home page (the demo is measured and the spectral method fitted).
HOME_TIMEOUT_S = 120

#: Runs in every document the bench opens: polls the page every 50 ms and records, on the
#: page's own clock, when the first rows and the finished table are shown after ``t0``.
WATCH_JS = """
(() => {
  const busy = () => Boolean(document.querySelector(
      '[data-testid="stStatusWidget"], [data-testid="stProgress"], [data-testid="stSpinner"], '
      + '[data-stale="true"]'));
  const rowsOf = (frame) => {  // rows of a dataframe's accessible grid, once it is drawn
    const grid = frame && frame.querySelector('table[role="grid"]');
    return grid ? Number(grid.getAttribute('aria-rowcount')) - 1 : 0;
  };
  const onCompare = () => {
    const h1 = document.querySelector('h1');
    return Boolean(h1) && h1.innerText.trim() === 'Compare';
  };
  const w = window.__bench = {
    t0: 0, firstRows: null, firstRowsCount: 0, finished: null, rows: 0, idleSince: null,
    exception: false,
    arm() { Object.assign(w, {t0: performance.now(), firstRows: null, firstRowsCount: 0,
                              finished: null, rows: 0, idleSince: null, exception: false}); },
    busy,
  };
  setInterval(() => {
    const now = performance.now();
    w.exception = w.exception || Boolean(document.querySelector('[data-testid="stException"]'));
    w.idleSince = busy() ? null : (w.idleSince === null ? now : w.idleSince);
    if (!onCompare()) { w.finished = null; return; }
    if (w.firstRows === null) {
      for (const frame of document.querySelectorAll('[data-testid="stDataFrame"]')) {
        const n = rowsOf(frame);
        if (n > 0 && !frame.closest('[data-stale="true"]')) {
          w.firstRows = now; w.firstRowsCount = n; break;
        }
      }
    }
    const rows = rowsOf(document.querySelector('.st-key-compare_view [data-testid="stDataFrame"]'));
    if (rows > 0 && !busy()) {
      if (w.finished === null) { w.finished = now; w.rows = rows; }
    } else {
      w.finished = null;
    }
  }, 50);
})();
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``streamlit run app.py`` (or ``script``) on a free port with a fresh cache folder, until
    ``stop``."""

    def __init__(self, workdir: str, script: str = "app.py"):
        port = free_port()
        self.url = f"http://localhost:{port}"
        self.log_path = Path(workdir) / "streamlit.log"
        cache = Path(workdir) / "cache"
        env = {**os.environ, "GAPVIZ_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1"}
        # no file watcher: library files edited meanwhile must not rerun the page
        cmd = [sys.executable, "-m", "streamlit", "run", script, "--server.headless", "true",
               "--server.port", str(port), "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none"]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not self._healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"streamlit did not start:\n{self.log_tail()}")
            time.sleep(0.3)

    def wait_for_log(self, text: str, timeout: float) -> float | None:
        """Seconds until ``text`` is in the server's log (None: not within ``timeout``)."""
        start = time.monotonic()
        while text not in self.log_path.read_text():
            if self.proc.poll() is not None or time.monotonic() - start > timeout:
                return None
            time.sleep(0.1)
        return time.monotonic() - start

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                return r.read().strip() == b"ok"
        except OSError:
            return False

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text()[-chars:]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def new_page(browser):
    context = browser.new_context(viewport=VIEWPORT)
    context.add_init_script(WATCH_JS)
    return context, context.new_page()


def wait_idle(page, timeout: float) -> None:
    """Wait until the script run is over: nothing busy for ``QUIET_S``."""
    deadline = time.monotonic() + timeout
    quiet_since = None
    while time.monotonic() < deadline:
        if page.evaluate("() => window.__bench.busy()"):
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > QUIET_S:
            return
        time.sleep(0.1)
    raise TimeoutError(f"the page was still running after {timeout:g} s")


def expected_rows(page) -> int:
    """Rows the selection asks for: methods chosen times models chosen (one model: no menu)."""
    methods = page.locator(".st-key-compare_methods [data-tag]").count()
    models = page.locator(".st-key-compare_models [data-tag]").count()
    return methods * max(models, 1)


def time_compare(page, timeout: float, shot: str, split: CpuSplit) -> dict:
    """Wait for the finished table (the watcher armed before); its times in seconds and the CPU
    seconds the server and the browser used since ``split`` was last started, or
    ``finished: None`` with a screenshot at ``shot`` if it does not come within ``timeout``."""
    deadline = time.monotonic() + timeout
    with Sampler() as sampler:
        while True:
            state = page.evaluate("() => ({...window.__bench, now: performance.now()})")
            finished = state["finished"]
            if finished is not None and state["now"] - finished >= QUIET_S * 1000:
                break
            idle_since = state["idleSince"]
            idle = idle_since is not None and state["now"] - idle_since >= QUIET_S * 1000
            if time.monotonic() > deadline or (state["exception"] and idle):
                finished = None  # out of time, or the run ended on an exception
                break
            time.sleep(0.1)
    t0 = state["t0"]
    out = {"first_rows_s": None if state["firstRows"] is None else (state["firstRows"] - t0) / 1000,
           "first_rows": state["firstRowsCount"],
           "finished_s": None if finished is None else (finished - t0) / 1000,
           "rows": state["rows"], "exception": state["exception"],
           "running_mean": statistics.fmean(sampler.samples) if sampler.samples else None,
           "running_max": max(sampler.samples, default=None),
           "loadavg_1min": os.getloadavg()[0], **split.since()}
    if finished is None or state["exception"]:
        page.screenshot(path=shot, full_page=True)
        out["screenshot"] = shot
    else:
        out["expected_rows"] = expected_rows(page)
        columns = page.locator('.st-key-compare_view table[role="grid"]').first.get_attribute(
            "aria-colcount")
        out["columns"] = int(columns) if columns else None
    return out


def visits(browser, timeout: float, tag: str, dwell: float) -> dict:
    """Cold and warm visits of the Compare page on a fresh server."""
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as workdir:
        server = Server(workdir)
        try:
            # cold: a first visitor lands on the home page, then opens Compare from the menu
            context, page = new_page(browser)
            started = time.monotonic()
            page.goto(server.url)
            page.wait_for_selector('[data-testid="stMetric"]', timeout=HOME_TIMEOUT_S * 1000)
            wait_idle(page, HOME_TIMEOUT_S)
            home_s = time.monotonic() - started
            page.wait_for_timeout(dwell * 1000)
            split = CpuSplit(server.proc.pid)
            page.evaluate("() => window.__bench.arm()")
            page.locator('[data-testid="stSidebar"] [data-testid="stPageLink"] a',
                         has_text="Compare").first.click()
            cold = time_compare(page, timeout, f"/tmp/bench_compare_{tag}_cold.png", split)
            context.close()
            # warm: a second visitor opens Compare directly (timed from navigation start: t0 = 0)
            context, page = new_page(browser)
            split.restart()
            page.goto(f"{server.url}/compare", wait_until="domcontentloaded")
            warm = time_compare(page, timeout, f"/tmp/bench_compare_{tag}_warm.png", split)
            context.close()
        finally:
            server.stop()
        if cold["finished_s"] is None or warm["finished_s"] is None:
            print(f"  server log (tail):\n{server.log_tail()}")
    result = {"home_s": home_s, "cold": cold, "warm": warm}
    # link: the first visitor of a fresh server follows a link straight to Compare as soon as
    # it answers, so nearly nothing was obtained ahead; warmed: once its warm-up is done
    result["link"], _ = link_visit(browser, timeout, f"{tag}_link", warmed=False)
    result["warmed"], result["warm_up_s"] = link_visit(browser, timeout, f"{tag}_warmed",
                                                       warmed=True)
    shown = result["warmed"] if result["warmed"]["finished_s"] is not None else result["warm"]
    result["floor_columns"] = shown.get("columns") or 20
    result["floor"] = floor_visit(browser, timeout, tag, shown.get("rows") or 8,
                                  result["floor_columns"])
    return result


def link_visit(browser, timeout: float, tag: str, *, warmed: bool) -> tuple[dict, float | None]:
    """A fresh server's first visitor following a link to ``/compare`` (timed from navigation
    start), at once or, ``warmed``, once the server's warm-up is done; the visit's times and
    the warm-up's seconds from the server answering (None: not waited for, or not done)."""
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as workdir:
        server = Server(workdir)
        try:
            warm_up_s = server.wait_for_log(DONE_MESSAGE, timeout) if warmed else None
            context, page = new_page(browser)
            split = CpuSplit(server.proc.pid)
            page.goto(f"{server.url}/compare", wait_until="domcontentloaded")
            visit = time_compare(page, timeout, f"/tmp/bench_compare_{tag}.png", split)
            context.close()
        finally:
            server.stop()
        if visit["finished_s"] is None or (warmed and warm_up_s is None):
            print(f"  server log (tail):\n{server.log_tail()}")
    return visit, warm_up_s


def loaded_visits(browser, load: float, timeout: float, tag: str, dwell: float) -> dict:
    """Cold and warm visits with the machine topped up to ``load`` runnable tasks per CPU
    (the work found running is counted again before each measurement: it may come and go)."""
    cpus = os.cpu_count() or 1
    found = background_tasks()
    n_busy = max(0, round(load * cpus - found))
    procs = start_busy(n_busy)
    try:
        time.sleep(1.0)  # let the busy processes get going
        return {"found": found, "busy": n_busy, **visits(browser, timeout, tag, dwell)}
    finally:
        stop_busy(procs)


def verdict(load: float, seconds: float | None) -> str:
    if load != TARGET_LOAD:
        return f"(the target is judged at load {TARGET_LOAD:g} per CPU)"
    ok = seconds is not None and seconds < TARGET_S
    return f"target < {TARGET_S:g} s at load {TARGET_LOAD:g} per CPU: {'met' if ok else 'NOT met'}"


def visit_line(name: str, v: dict, load: float, timeout: float, judge: bool = True) -> str:
    first = ("no rows" if v["first_rows_s"] is None
             else f"first rows {v['first_rows_s']:.2f} s ({v['first_rows']} rows)")
    if v["finished_s"] is None:
        finish = ("NOT finished: the run ended on an EXCEPTION" if v["exception"]
                  else f"NOT finished in {timeout:g} s")
    else:
        finish = (f"finished {v['finished_s']:.2f} s, {v['rows']} of {v['expected_rows']} rows"
                  + (" (MISSING rows)" if v["rows"] != v["expected_rows"] else "")
                  + (", an EXCEPTION shown" if v["exception"] else ""))
    if "screenshot" in v:
        finish += f" (screenshot {v['screenshot']})"
    running = ("n/a" if v["running_mean"] is None
               else f"mean {v['running_mean']:.1f} (max {v['running_max']})")
    return (f"  {name}: {first}, {finish}\n"
            f"        running tasks {running}, 1-min load average {v['loadavg_1min']:.2f}; "
            f"CPU-s to the end of the quiet second: server {v['server_cpu_s']:.2f}, browser "
            f"{v['browser_cpu_s']:.2f}" + (f"; {verdict(load, v['finished_s'])}" if judge else ""))


#: The floor visit's app (``{rows}``, ``{columns}``: the finished table's shape).
FLOOR_APP = """
import numpy as np
import pandas as pd
import streamlit as st

st.title("Compare")
with st.container(key="compare_view"):
    rng = np.random.default_rng(0)
    st.dataframe(pd.DataFrame(rng.random(({rows}, {columns})),
                              columns=[f"measure {{i}}" for i in range({columns})]))
"""


def floor_visit(browser, timeout: float, tag: str, rows: int, columns: int) -> dict:
    """A new visitor of a fresh server of :data:`FLOOR_APP` (a table of ``rows`` x ``columns``),
    timed from the navigation's start as :func:`link_visit` times the Compare page."""
    with tempfile.TemporaryDirectory(prefix="bench-compare-floor-") as workdir:
        script = Path(workdir) / "floor_app.py"
        script.write_text(FLOOR_APP.format(rows=rows, columns=columns))
        server = Server(workdir, str(script))
        try:
            context, page = new_page(browser)
            split = CpuSplit(server.proc.pid)
            page.goto(server.url, wait_until="domcontentloaded")
            visit = time_compare(page, timeout, f"/tmp/bench_compare_{tag}_floor.png", split)
            context.close()
        finally:
            server.stop()
    visit["expected_rows"] = rows
    return visit


def median_finish(runs: list[dict], which: str) -> float | None:
    times = [r[which]["finished_s"] for r in runs]
    return None if None in times else statistics.median(times)


@contextlib.contextmanager
def headless_chromium():
    """Debian's chromium, headless, launched through Playwright as the browser tests do."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loads", default="0,1", help="runnable tasks per CPU (comma-separated)")
    ap.add_argument("--repeat", type=int, default=1, help="cold + warm measurements per load")
    ap.add_argument("--dwell", type=float, default=1.0,
                    help="seconds the first visitor stays on the loaded home page before "
                         "opening Compare (default 1)")
    ap.add_argument("--timeout", type=float, default=240,
                    help="seconds allowed for the page to finish, per visit")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args()

    cpus = os.cpu_count() or 1
    print(f"Compare page on the demo (default methods), headless chromium; {cpus} CPUs; "
          f"load average {', '.join(f'{v:.2f}' for v in os.getloadavg())} at start")
    results = []
    with headless_chromium() as browser:
        for load in (float(v) for v in args.loads.split(",")):
            res = {"load": load, "runs": []}
            results.append(res)
            print(f"\nload {load:g} per CPU:")
            for i in range(args.repeat):
                run = loaded_visits(browser, load, args.timeout, f"load{load:g}_{i}", args.dwell)
                res["runs"].append(run)
                prefix = "" if args.repeat == 1 else f"repetition {i + 1}: "
                print(f"  {prefix}{run['found']:g} running tasks found, {run['busy']} busy "
                      f"processes started; home page loaded in {run['home_s']:.1f} s (fresh "
                      "server, not timed)")
                print(visit_line(f"cold (first visitor, from the home page after {args.dwell:g} s)", run["cold"],
                                 load, args.timeout))
                print(visit_line("warm (second visitor, /compare directly)", run["warm"],
                                 load, args.timeout))
                print(visit_line("link (first visitor of a fresh server, /compare directly)",
                                 run["link"], load, args.timeout))
                warm_up = ("did NOT finish" if run["warm_up_s"] is None
                           else f"done {run['warm_up_s']:.1f} s after the server answered")
                print(visit_line(f"warmed link (the same, once the server's warm-up is "
                                 f"done; the warm-up {warm_up})", run["warmed"], load,
                                 args.timeout))
                floor = run["floor"]
                print(visit_line(f"floor (no gapviz: a one-page Streamlit app with a "
                                 f"{floor['expected_rows']}-row table of "
                                 f"{run['floor_columns']} columns, a fresh server's new visitor)",
                                 floor, load, args.timeout, judge=False))

    print(f"\nsummary (median of {args.repeat}; finished table):")
    for res in results:
        parts = []
        for which in ("cold", "warm", "link", "warmed", "floor"):
            seconds = median_finish(res["runs"], which)
            text = "not finished" if seconds is None else f"{seconds:.2f} s"
            if res["load"] == TARGET_LOAD and which != "floor":
                text += f" ({verdict(res['load'], seconds)})"
            parts.append(f"{which} {text}")
        print(f"  load {res['load']:g}/CPU: " + ", ".join(parts))
    if args.json:
        Path(args.json).write_text(json.dumps({"cpus": cpus, "target_s": TARGET_S,
                                               "target_load": TARGET_LOAD, "levels": results},
                                              indent=2))


if __name__ == "__main__":
    main()
