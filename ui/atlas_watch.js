// gapviz: tells the page whether Embedding Atlas started in this browser.
// Inlined into the atlas component's index.html (ui/atlas.py) before the atlas's own module.
// It sends one component value, {"gapviz": {...}}, the way streamlit-component-lib does:
//   {"state": "failed", "reason": "..."}  a script, DuckDB-WASM's worker or the atlas's start
//                                         failed, or nothing was drawn within the time limit;
//   {"state": "started", "webgpu": "..."} the atlas drew its view, but this browser offers no
//                                         WebGPU with 16-bit floats (its point view stays
//                                         empty); nothing is sent when WebGPU is there.
(() => {
  const LIMIT_MS = __START_TIMEOUT_MS__;
  let started = false;
  let reported = false;

  function send(status) {
    window.parent.postMessage({ isStreamlitMessage: true, type: "streamlit:setComponentValue",
                                value: { gapviz: status }, dataType: "json" }, "*");
  }

  function fail(reason) {
    if (started || reported) return;  // errors after the start belong to the atlas itself
    reported = true;
    send({ state: "failed", reason: String(reason || "an unknown error").slice(0, 300) });
  }

  // A script or style sheet that does not load; an error thrown while starting.
  window.addEventListener("error", (event) => {
    const el = event.target;
    if (el && (el.tagName === "SCRIPT" || el.tagName === "LINK")) {
      fail(`could not load ${el.src || el.href}`);
    } else if (event instanceof ErrorEvent && !/^ResizeObserver loop/.test(event.message || "")) {
      fail(event.message);  // (a ResizeObserver loop is a harmless notice, not a failure)
    }
  }, true);
  window.addEventListener("unhandledrejection", (event) => {
    const r = event.reason;
    fail(r && r.message ? r.message : r);
  });

  // DuckDB-WASM runs in a worker: its failure to load shows on the Worker object only.
  const NativeWorker = window.Worker;
  window.Worker = class extends NativeWorker {
    constructor(url, options) {
      super(url, options);
      this.addEventListener("error", (event) => {
        fail(`a worker of the atlas failed (${event.message || "its code did not load"})`);
      });
    }
  };

  async function webgpuLack() {
    if (!navigator.gpu) return "no WebGPU";
    try {
      const adapter = await navigator.gpu.requestAdapter();
      if (!adapter) return "no WebGPU adapter";
      return adapter.features.has("shader-f16") ? null : "WebGPU without 16-bit floats (shader-f16)";
    } catch (err) {
      return `WebGPU failed (${err && err.message ? err.message : err})`;
    }
  }

  // Started: the atlas drew into the container its module appends to <body>.
  const drawn = () => Boolean(document.body) &&
    Array.from(document.body.children).some((el) => el.tagName === "DIV" && el.childElementCount > 0);
  const observer = new MutationObserver(() => {
    if (started || reported || !drawn()) return;
    started = true;
    observer.disconnect();
    webgpuLack().then((lack) => { if (lack) send({ state: "started", webgpu: lack }); });
  });
  observer.observe(document.documentElement, { childList: true, subtree: true });
  setTimeout(() => {
    if (!started) fail(`nothing was drawn within ${LIMIT_MS / 1000} s`);
  }, LIMIT_MS);
})();
