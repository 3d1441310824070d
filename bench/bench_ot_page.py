"""Benchmark: the OT sliders through the page, in a real browser, on a busy machine.

``bench_ot_busy.py`` times the library calls a slider move makes; this script times what the
visitor sees. It starts the app itself (``streamlit run app.py``, headless, on a free port,
with a cache folder of its own; ``bench_compare_page.Server``) and drives Debian's headless
chromium through Playwright, as the browser tests do. On each load level it tops up the
runnable tasks to ``load`` per CPU with busy processes (``bench_ot_busy.start_busy``:
``while True: pass``), counting the work found running before it starts any, and for each
kind of server in ``--servers`` starts a fresh one: ``fresh``, visited as soon as it answers
(its warm-up, ``ui.warmup``, still under way: the hardest case), or ``warmed``, visited once
its warm-up is done (a hosted demo's visitors); and times, on the built-in demo with Laplace
OT at its defaults (held-out protocol):

* the **first OT view**: a visitor opens the home page and waits until it has loaded, opens
  Close the gap from the sidebar (the page's default method is drawn, its charts too; not
  timed), then
  chooses Laplace OT in the method menu, as ``tests/test_browser.py`` does. Timed from the
  press on the menu's option;
* **one-step moves** of the reg_lap select-slider (``--moves`` of them): the visitor looks at
  the page for ``--look`` seconds (the server solves the neighbouring values in the
  background meanwhile), then moves the slider one step with the keyboard (ArrowLeft /
  ArrowRight on the focused thumb, a seeded random choice among the steps that stay on the
  slider). Timed from the key press.

The clock is read in the page: the start is the timed event's own time stamp (the first
``pointerdown`` or ``keydown`` after the bench arms its watcher), and the page is polled every
50 ms (``performance.now()``). A view or move has **finished** when the metric cards' values
differ from those shown before the action (as the browser test detects a move) and nothing runs
(no status widget, spinner or stale element), a state that must hold for 1 s to count; its
time is when that state began. The value moved to is read from the slider afterwards. A view
or move that ends on an exception, or does not finish within ``--timeout``, is reported as not
finished with a screenshot under /tmp, the exception's text and the server log's tail.

Printed per level and server: the seconds its warm-up took (warmed), the running tasks found
and busy processes started, the time Close the gap took to load until its live charts had
drawn and the CPU seconds the server and the browser used meanwhile (no target), the running tasks sampled every 0.1 s while timing (median and
max; the server, chromium and this script included), the first OT view, every move with the
value moved to (and whether the page had shown it before: its run is then kept, and the move
is the page's drawing alone, a move's floor), the CPU seconds the server (with its solver
processes) and the browser (every chromium process) used from each action to the end of its
quiet second, the moves' median and max (all of them, then split by shown before or not),
and the verdicts beside the targets (``bench_ot_busy.TARGETS``): a move < 1 s at 1 runnable
task per CPU and < 2 s at 2.5 (judged on the max), the first OT view < 3 s at 1 per CPU.

Usage: python bench/bench_ot_page.py [--loads 1,2.5] [--servers fresh,warmed] [--moves 6]
       [--look 2.0] [--seed 0] [--timeout 60] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

# bench/ is the script's folder, so on sys.path
from bench_compare_page import (DONE_MESSAGE, HOME_TIMEOUT_S, QUIET_S, VIEWPORT, Server,
                                headless_chromium, wait_idle)
from bench_ot_busy import (TARGETS, CpuSplit, Sampler, add_slider_arguments, background_tasks,
                           start_busy, stop_busy, verdict)

OT_LABEL = "Laplace OT (EMD)"
#: Close the gap's live charts (``ui/live_plot``: one iframe for the three): the component's
#: widget key and each chart's key.
LIVE_FRAME = "close_charts"
LIVE_CHARTS = ("close_scatter_raw", "close_scatter", "close_hist")
SLIDER = '.st-key-close_reg_lap input[type="range"]'

#: Runs in every document the bench opens. ``arm()`` keeps the cards shown now; the next
#: ``pointerdown``/``keydown`` starts the clock; every 50 ms the page is checked for other
#: cards with nothing running. Named ``__bench`` with a ``busy()`` as bench_compare_page's
#: watcher, so that its ``wait_idle`` works here.
WATCH_JS = """
(() => {
  const busy = () => Boolean(document.querySelector(
      '[data-testid="stStatusWidget"], [data-testid="stSpinner"], [data-stale="true"]'));
  const cards = () => Array.from(document.querySelectorAll('[data-testid="stMetricValue"]'))
      .map(el => el.innerText.trim()).join('|');
  const w = window.__bench = {
    armed: false, old: '', t0: null, shown: null, idleSince: null, exception: false, busy,
    arm() { Object.assign(w, {armed: true, old: cards(), t0: null, shown: null,
                              exception: false}); },
  };
  const start = (event) => { if (w.armed && w.t0 === null) w.t0 = event.timeStamp; };
  window.addEventListener('pointerdown', start, true);
  window.addEventListener('keydown', start, true);
  setInterval(() => {
    const now = performance.now();
    w.exception = w.exception || Boolean(document.querySelector('[data-testid="stException"]'));
    w.idleSince = busy() ? null : (w.idleSince === null ? now : w.idleSince);
    const changed = w.t0 !== null && cards() !== '' && cards() !== w.old;
    w.shown = changed && !busy() ? (w.shown === null ? now : w.shown) : null;
  }, 50);
})();
"""


def wait_finished(page, timeout: float, shot: str, split: CpuSplit) -> dict:
    """Wait for the armed action's new cards with nothing running; its time in seconds, the
    running tasks sampled meanwhile and the CPU seconds the server and the browser used from
    the arming to the end of the quiet second (``split``), or ``seconds: None`` with a
    screenshot at ``shot`` (and the exception's text) if it ends on an exception or does not
    come within ``timeout``."""
    deadline = time.monotonic() + timeout
    quiet_ms = QUIET_S * 1000
    with Sampler() as sampler:
        while True:
            state = page.evaluate("() => ({...window.__bench, now: performance.now()})")
            if state["shown"] is not None and state["now"] - state["shown"] >= quiet_ms:
                seconds = (state["shown"] - state["t0"]) / 1000
                break
            idle = state["idleSince"] is not None and state["now"] - state["idleSince"] >= quiet_ms
            if time.monotonic() > deadline or (state["exception"] and idle):
                seconds = None
                break
            time.sleep(0.1)
    out = {"seconds": seconds, "exception": state["exception"], "samples": sampler.samples,
           **split.since()}
    if seconds is None or state["exception"]:
        page.screenshot(path=shot, full_page=True)
        out["screenshot"] = shot
        out["exception_text"] = "\n".join(
            page.locator('[data-testid="stException"]').all_inner_texts())
    return out


def open_ot(page, url: str, timeout: float, shot: str, split: CpuSplit) -> dict:
    """Home page, then Close the gap (not timed), then Laplace OT chosen in the method menu
    (timed)."""
    started = time.monotonic()
    page.goto(url)
    page.wait_for_selector('[data-testid="stMetric"]', timeout=HOME_TIMEOUT_S * 1000)
    wait_idle(page, HOME_TIMEOUT_S)
    home_s = time.monotonic() - started
    started = time.monotonic()
    split.restart()
    page.locator('[data-testid="stSidebar"] [data-testid="stPageLink"] a',
                 has_text="Close the gap").first.click()
    page.wait_for_function("() => document.querySelector('h1')?.innerText.trim() === "
                           "'Close the gap'", timeout=HOME_TIMEOUT_S * 1000)
    wait_idle(page, HOME_TIMEOUT_S)
    wait_charts(page, HOME_TIMEOUT_S)
    close_gap_s = time.monotonic() - started
    close_gap_cpu = split.since()
    page.locator(".st-key-close_method").click()
    split.restart()
    page.evaluate("() => window.__bench.arm()")
    page.get_by_role("option", name=OT_LABEL).click()
    return {"home_s": home_s, "close_gap_s": close_gap_s, "close_gap_cpu": close_gap_cpu,
            **wait_finished(page, timeout, shot, split)}


def wait_charts(page, timeout: float) -> None:
    """Until Close the gap's live charts have drawn (their iframes load Plotly after the page's
    run is over: a visitor sees the page drawn before choosing a method)."""
    frame = page.locator(f".st-key-{LIVE_FRAME} iframe").first.element_handle(
        timeout=timeout * 1000).content_frame()
    for key in LIVE_CHARTS:
        frame.wait_for_selector(f'[data-key="{key}"] .main-svg', timeout=timeout * 1000)


def slider_state(page) -> dict:
    """The reg_lap slider's option index, its bounds and the value it shows."""
    return page.locator(SLIDER).first.evaluate(
        "(el) => ({index: Number(el.value), lo: Number(el.min), hi: Number(el.max),"
        " value: el.getAttribute('aria-valuetext')})")


def move(page, rng: random.Random, look: float, timeout: float, shot: str,
         split: CpuSplit) -> dict:
    """Look for ``look`` seconds, then move the slider one step (seeded, never off the ends)."""
    page.wait_for_timeout(look * 1000)
    now = slider_state(page)
    keys = ([] if now["index"] <= now["lo"] else ["ArrowLeft"]) \
        + ([] if now["index"] >= now["hi"] else ["ArrowRight"])
    key = rng.choice(keys)
    page.locator(SLIDER).first.focus()
    split.restart()
    page.evaluate("() => window.__bench.arm()")
    page.keyboard.press(key)
    out = wait_finished(page, timeout, shot, split)
    return {"from": now["value"], "to": slider_state(page)["value"], "key": key, **out}


def level(browser, load: float, args, tag: str, warmed: bool) -> dict:
    """First OT view and one-step moves on a fresh server, the machine topped up to ``load``;
    ``warmed``: visited once the server's warm-up is done, else as soon as it answers."""
    cpus = os.cpu_count() or 1
    found = background_tasks()
    n_busy = max(0, round(load * cpus - found))
    procs = start_busy(n_busy)
    out = {"load": load, "found": found, "busy": n_busy, "moves": [], "warmed": warmed}
    try:
        time.sleep(1.0)  # let the busy processes get going
        with tempfile.TemporaryDirectory(prefix="bench-ot-page-") as workdir:
            server = Server(workdir)
            try:
                if warmed:
                    out["warm_up_s"] = server.wait_for_log(DONE_MESSAGE, 300)
                context = browser.new_context(viewport=VIEWPORT)
                context.add_init_script(WATCH_JS)
                page = context.new_page()
                split = CpuSplit(server.proc.pid)
                out["first"] = open_ot(page, server.url, args.timeout,
                                       f"/tmp/bench_ot_page_{tag}_first.png", split)
                rng = random.Random(args.seed)
                for i in range(args.moves if out["first"]["seconds"] is not None else 0):
                    out["moves"].append(move(page, rng, args.look, args.timeout,
                                             f"/tmp/bench_ot_page_{tag}_move{i + 1}.png",
                                             split))
                    if out["moves"][-1]["seconds"] is None:
                        break
                context.close()
            finally:
                server.stop()
            if any("screenshot" in r for r in [out["first"], *out["moves"]]):
                out["server_log_tail"] = server.log_tail()
    finally:
        stop_busy(procs)
    out["loadavg_1min"] = os.getloadavg()[0]
    return out


def timed_text(result: dict, timeout: float) -> str:
    if result["seconds"] is not None:
        text = f"{result['seconds']:.2f} s"
    elif result["exception"]:
        text = "NOT finished: the run ended on an EXCEPTION"
    else:
        text = f"NOT finished in {timeout:g} s"
    if result.get("screenshot"):
        text += f" (screenshot {result['screenshot']})"
    samples = result["samples"]
    if samples:
        text += f" [running tasks median {statistics.median(samples):g}, max {max(samples)}]"
    if "server_cpu_s" in result:
        text += (f" [CPU-s: server {result['server_cpu_s']:.2f}, "
                 f"browser {result['browser_cpu_s']:.2f}]")
    return text


def judged(what: str, load: float, seconds: float) -> str:
    """The verdict beside the target, or nothing where the load level has no target."""
    return f"; {verdict(what, load, seconds)}" if (what, load) in TARGETS else ""


def report(res: dict, args) -> None:
    first = res["first"]
    samples = first["samples"] + [s for m in res["moves"] for s in m["samples"]]
    print(f"  {res['found']:g} running tasks found, {res['busy']} busy processes started; "
          f"running tasks while timing median {statistics.median(samples):g}, max "
          f"{max(samples)}; 1-min load average {res['loadavg_1min']:.2f} at the end")
    warm_up = res.get("warm_up_s")
    server = ("fresh server, its warm-up under way" if not res["warmed"] else
              f"server warmed up in {warm_up:.1f} s" if warm_up is not None else
              "warm-up NOT done in 300 s")
    cpu = first["close_gap_cpu"]
    print(f"  home page loaded in {first['home_s']:.1f} s, Close the gap (default method, its "
          f"charts drawn) in {first['close_gap_s']:.1f} s [CPU-s: server "
          f"{cpu['server_cpu_s']:.2f}, browser {cpu['browser_cpu_s']:.2f}] ({server}; no target)")
    line = f"  first OT view: {timed_text(first, args.timeout)}"
    if first["seconds"] is not None:
        line += judged("first view", res["load"], first["seconds"])
    print(line)
    shown = set()  # values the page has shown: their runs are kept, nothing is computed
    for m in res["moves"]:
        shown.add(m["from"])
        m["shown_before"] = m["to"] in shown
        print(f"    move {m['key']:<10} reg_lap {m['from']} -> {m['to']}"
              f"{' (shown before)' if m['shown_before'] else ''}: {timed_text(m, args.timeout)}")
    for r in (first, *res["moves"]):
        if r.get("exception_text"):
            print(f"  exception shown on the page:\n{r['exception_text']}")
    if "server_log_tail" in res:
        print(f"  server log (tail):\n{res['server_log_tail']}")
    times = [m["seconds"] for m in res["moves"]]
    if times and None not in times and len(times) == args.moves:
        print(f"  one-step moves (after {args.look:g} s looking): median "
              f"{statistics.median(times):.2f} s, max {max(times):.2f} s"
              f"{judged('move', res['load'], max(times))}")
        for seen, what in ((False, "to values not shown before (solved ahead, or not)"),
                           (True, "to values shown before (the page's drawing alone: its floor)")):
            some = [m["seconds"] for m in res["moves"] if m["shown_before"] is seen]
            if some:
                print(f"    {len(some)} {what}: median {statistics.median(some):.2f} s, "
                      f"max {max(some):.2f} s")
    else:
        print(f"  one-step moves: {sum(t is not None for t in times)} of {args.moves} finished")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_slider_arguments(ap)
    ap.add_argument("--timeout", type=float, default=60,
                    help="seconds allowed for the first view and for each move")
    ap.add_argument("--servers", default="fresh,warmed",
                    help="servers to visit on each load level: fresh (as soon as it answers), "
                         "warmed (once its warm-up is done); comma-separated")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args()
    servers = [v.strip() for v in args.servers.split(",")]
    if not servers or any(v not in ("fresh", "warmed") for v in servers):
        ap.error(f"--servers takes fresh and/or warmed, got {args.servers!r}")

    cpus = os.cpu_count() or 1
    print(f"Close the gap, Laplace OT on the demo, through the page in headless chromium; "
          f"{cpus} CPUs; load average {', '.join(f'{v:.2f}' for v in os.getloadavg())} at start")
    results = []
    with headless_chromium() as browser:
        for load in (float(v) for v in args.loads.split(",")):
            for kind in servers:
                print(f"\nload {load:g} per CPU, {kind} server:")
                res = level(browser, load, args, f"load{load:g}_{kind}", kind == "warmed")
                results.append(res)
                report(res, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"cpus": cpus, "look_s": args.look,
                                               "levels": results}, indent=2))


if __name__ == "__main__":
    main()
