"""App-side glue shared by every page: session state, caches keyed by content hash, the
sidebar, metric cards and the error guard. Library logic lives in ``gapviz``; this module only
caches it and renders it.

Caching (STYLE.md rule 6): every cache is keyed on ``Active.key``, the content hash computed
once when an embedding is loaded, never on Streamlit's sampling hash of arrays (array
arguments are ``_``-prefixed so Streamlit does not hash them at all). Fitted methods and
UMAP jobs are held in :func:`st.cache_resource` stores (objects shared, not copied); small
results (measures, projections, distance samples) in :func:`st.cache_data` with
``max_entries``.
"""

from __future__ import annotations

import html
import logging
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np
import streamlit as st

from gapviz import dashboard as dash
from gapviz.config import DEMO_DIM, DEMO_N_PAIRS
from gapviz.dashboard import ClosedView
from gapviz.projection import Projection, joint_umap, warm_up_umap
from gapviz.simulate import PROFILES, demo_models
from gapviz.workspace import DEMO_DATASET, Active, Workspace

log = logging.getLogger("gapviz.app")

# ---------------------------------------------------------------------------------------------
# constants of the app (one place)
# ---------------------------------------------------------------------------------------------
APP_TITLE = "gapviz"
APP_TAGLINE = "Measure and close the modality gap"
#: Cache sizes: fitted methods (eigenvectors, OT plans), method views, raw views, UMAP layouts.
FIT_CACHE_ENTRIES = 12
VIEW_CACHE_ENTRIES = 64
RAW_CACHE_ENTRIES = 16
UMAP_CACHE_ENTRIES = 8
#: Seconds between checks of a background UMAP job.
UMAP_POLL_SECONDS = 1.0
#: Display names of the methods (registry names are the CLI's).
METHOD_LABELS = {
    "orig": "None (raw embeddings)", "center": "Mean-centering", "standardize": "Standardisation",
    "pca": "PCA", "procrustes": "Procrustes", "vlap": "VLAP linear map",
    "sinkhorn": "Sinkhorn OT", "ot": "Laplace OT (EMD)", "spectral": "Spectral",
}
#: Order in which methods are offered (unknown registry entries follow).
METHOD_ORDER = ("spectral", "ot", "sinkhorn", "center", "standardize", "procrustes", "vlap",
                "pca", "orig")

WS_KEY = "workspace"
METHOD_SLOT_KEY = "_sidebar_method_slot"
KEPT_KEY = "_kept_widget_values"


# ---------------------------------------------------------------------------------------------
# state
# ---------------------------------------------------------------------------------------------
@st.cache_resource(show_spinner="Preparing the simulated demo…")
def demo_data() -> dict[str, Any]:
    """The demo's pairs under every simulated profile (shared read-only by all sessions)."""
    return demo_models()


def init_state() -> None:
    """Create this session's workspace once, with the demo loaded and active."""
    if WS_KEY in st.session_state:
        return
    ws = Workspace()
    for profile, pairs in demo_data().items():
        ws.add(pairs, source="built-in demo (simulated)", dataset=DEMO_DATASET,
               model=PROFILES[profile].name, activate=False)
    ws.select(DEMO_DATASET, PROFILES["clip"].name)
    ws.method_params = dash.default_params(DEMO_N_PAIRS, DEMO_DIM)
    st.session_state[WS_KEY] = ws


def workspace() -> Workspace:
    init_state()
    return st.session_state[WS_KEY]


def active() -> Active:
    act = workspace().active
    if act is None:  # cannot happen: the demo cannot be removed; say what to do if it does
        st.error("No dataset is loaded. Open **Data** and load the demo or your own pairs.")
        st.stop()
    return act


def keep(key: str, default: Any, *, bounds: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """Widget keyword arguments that keep its value when the user switches pages.

    Streamlit forgets a widget's state once a run does not draw it (another page); the value
    is saved on change and put back before the widget is drawn again. ``bounds`` clips a
    kept value into the widget's current range (a k kept from a larger dataset). Use as
    ``st.slider("k", 2, 200, **keep("close_k", 60, bounds=(2, 200)))``.
    """
    saved = st.session_state.setdefault(KEPT_KEY, {})
    if key not in st.session_state:
        st.session_state[key] = saved.get(key, default)
    if bounds is not None:
        lo, hi = bounds
        value = st.session_state[key]
        if value < lo or value > hi:
            st.session_state[key] = min(max(value, lo), hi)
    saved.setdefault(key, st.session_state[key])

    def _save() -> None:
        st.session_state[KEPT_KEY][key] = st.session_state[key]

    return {"key": key, "on_change": _save}


def kept(key: str, default: Any = None) -> Any:
    """The saved value of a :func:`keep` widget (also when it is not drawn in this run)."""
    if key in st.session_state:
        return st.session_state[key]
    return st.session_state.get(KEPT_KEY, {}).get(key, default)


# ---------------------------------------------------------------------------------------------
# errors: a message on the page, never a traceback
# ---------------------------------------------------------------------------------------------
@contextmanager
def guard(action: str) -> Iterator[None]:
    """Run a block; show an error message (not a traceback) if it fails.

    ``ValueError`` and friends carry messages written for the user (validation at the
    boundary), so they are shown as they are; anything else gets a generic line and is
    logged with its traceback on the server. Streamlit's own control flow (rerun, stop) is
    a ``BaseException`` and passes through.
    """
    try:
        yield
    except (ValueError, KeyError, OSError, RuntimeError) as err:
        log.info("%s failed: %s", action, err, exc_info=True)
        st.error(f"Could not {action}: {err}", icon=":material/error:")
    except Exception as err:  # noqa: BLE001 - the page edge: nothing may escape as a traceback
        log.exception("%s failed", action)
        st.error(f"Something went wrong while trying to {action} ({type(err).__name__}: {err}). "
                 "The previous data is still loaded.", icon=":material/error:")


# ---------------------------------------------------------------------------------------------
# stores for heavy objects (cache_resource), keyed by content hash
# ---------------------------------------------------------------------------------------------
class LRUStore:
    """A small thread-safe least-recently-used map (fitted methods, UMAP jobs)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


@st.cache_resource
def _fit_store() -> LRUStore:
    return LRUStore(FIT_CACHE_ENTRIES)


@st.cache_resource
def _umap_store() -> LRUStore:
    return LRUStore(UMAP_CACHE_ENTRIES)


@st.cache_resource
def _umap_pool() -> ThreadPoolExecutor:
    # One worker: UMAP is CPU-bound, two layouts at once would only halve each other's speed.
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="gapviz-umap")


def _frozen(params: dict[str, Any]) -> tuple:
    return tuple(sorted((k, v) for k, v in params.items()))


def fitted_method(act: Active, name: str, fit_params: dict[str, Any]) -> Any:
    """The method ``name`` fitted on the active pairs, fitted at most once per content hash.

    A progress bar is shown while a method that reports progress (OT) fits; a spinner for
    the others. Nothing Streamlit runs inside the stored computation itself, so a cached
    fit never replays stale elements.
    """
    store = _fit_store()
    key = (act.key, name, _frozen(fit_params))
    method = store.get(key)
    if method is not None:
        return method
    label = METHOD_LABELS.get(name, name)
    slot = st.empty()
    bar = slot.progress(0.0, text=f"Fitting {label} on {act.pairs.n:,} pairs…")

    def progress(fraction: float, message: str = "") -> None:
        text = f"Fitting {label}: {message}" if message else f"Fitting {label}…"
        bar.progress(min(max(float(fraction), 0.0), 1.0), text=text)

    try:
        with st.spinner(f"Fitting {label} on {act.pairs.n:,} pairs (once; cached afterwards)…"):
            method = dash.fit_method(name, act.pairs.image_embeddings, act.pairs.text_embeddings,
                                     fit_params, progress=progress)
    finally:
        slot.empty()
    store.put(key, method)
    return method


@st.cache_data(max_entries=RAW_CACHE_ENTRIES, show_spinner="Measuring the gap…")
def raw_view(key: str, _X: np.ndarray, _Y: np.ndarray) -> ClosedView:
    """Measures, PCA and distance samples of raw embeddings (cached by content hash ``key``)."""
    view = dash.view_of(_X, _Y)
    # The raw arrays live in the workspace already; do not copy them into the cache.
    view.images = view.texts = None  # type: ignore[assignment]
    return view


@st.cache_data(max_entries=VIEW_CACHE_ENTRIES, show_spinner=False)
def method_view(key: str, name: str, fit_items: tuple, view_items: tuple, _method: Any,
                _X: np.ndarray, _Y: np.ndarray) -> ClosedView:
    """Measures, PCA and distance samples after a method (cached by hash, method, params)."""
    Xt, Yt = dash.transformed(_method, _X, _Y, dict(view_items))
    return dash.view_of(Xt, Yt)


def closed_view(act: Active, name: str, params: dict[str, Any]) -> ClosedView:
    """The view of the active pairs after ``name`` with ``params``: fit once, slice, measure.

    Spectral ``n_components`` (k) is a view parameter: eigenvectors are computed once for
    ``max_components`` and sliced for every k (no eigen-solve on a slider move).
    """
    fit_params, view_params = dash.split_params(name, params, act.pairs.n, act.pairs.dim)
    method = fitted_method(act, name, fit_params)
    X, Y = act.pairs.image_embeddings, act.pairs.text_embeddings
    return method_view(act.key, name, _frozen(fit_params), _frozen(view_params), method, X, Y)


def active_raw_view(act: Active) -> ClosedView:
    return raw_view(act.key, act.pairs.image_embeddings, act.pairs.text_embeddings)


# ---------------------------------------------------------------------------------------------
# UMAP in the background
# ---------------------------------------------------------------------------------------------
@st.cache_resource
def umap_warm_up() -> Future:
    """Compile UMAP's code in the background, once per server process (the first layout
    would otherwise wait tens of seconds for it); started when Explore is first opened."""
    return _umap_pool().submit(warm_up_umap)


def umap_job(act: Active, **params: Any) -> Future:
    """A background UMAP layout of the active pairs (started once per hash and parameters)."""
    store = _umap_store()
    key = (act.key, _frozen(params))
    job = store.get(key)
    if job is None or job.cancelled():
        X, Y = act.pairs.image_embeddings, act.pairs.text_embeddings
        job = _umap_pool().submit(joint_umap, X, Y, **params)
        store.put(key, job)
    return job


def umap_ready(act: Active, **params: Any) -> Projection | None:
    """The finished UMAP layout, or None while it runs (raises the job's error, if any)."""
    job = umap_job(act, **params)
    return job.result() if job.done() else None


# ---------------------------------------------------------------------------------------------
# rendering helpers
# ---------------------------------------------------------------------------------------------
def method_label(name: str) -> str:
    return METHOD_LABELS.get(name, name)


def method_names() -> list[str]:
    """Registered method names in display order."""
    reg = dash.method_registry()
    ordered = [m for m in METHOD_ORDER if m in reg]
    return ordered + sorted(m for m in reg if m not in ordered)


def metric_cards(metrics: dict[str, float], baseline: dict[str, float] | None = None, *,
                 keys: Sequence[str] = dash.ALL_CARDS, recall_k: int = dash.DEFAULT_RECALL_K,
                 per_row: int | None = None, border: bool = True, gap: str = "small") -> None:
    """One ``st.metric`` per key, with the change against ``baseline`` coloured the right way
    (lower ITR/IMR/TMR/distances is green; higher recall is green)."""
    keys = [dash.card_key(k, recall_k) for k in keys]
    per_row = per_row or len(keys)
    for start in range(0, len(keys), per_row):
        cols = st.columns(per_row, gap=gap)
        for col, key in zip(cols, keys[start:start + per_row]):
            value = metrics.get(key)
            delta = dash.format_delta(key, baseline.get(key), value) if baseline else None
            col.metric(dash.card_label(key), dash.format_metric(key, value), delta,
                       delta_color=dash.delta_color(key), help=dash.card_help(key), border=border)


#: A little CSS: less empty space above the title, compact metric cards, tighter captions.
_CSS = """
<style>
.block-container {padding-top: 3.35rem; padding-bottom: 1.5rem; padding-left: 2.75rem;
                  padding-right: 2.75rem;}
h1 {font-size: 1.95rem !important; padding-top: 0 !important; padding-bottom: 0 !important;}
[data-testid="stMetric"] {padding: 0.55rem 0.6rem 0.5rem 0.7rem;}
[data-testid="stMetricValue"] {font-size: 1.55rem; line-height: 1.25;}
[data-testid="stMetricDelta"] {font-size: 0.8rem;}
</style>
"""


#: Even more compact cards, for pages that must fit one screen (the Overview).
COMPACT_CARDS_CSS = """
<style>
[data-testid="stMetric"] {padding: 0.35rem 0.6rem 0.35rem 0.6rem;}
[data-testid="stMetricValue"] {font-size: 1.3rem;}
[data-testid="stMetricDelta"] {font-size: 0.72rem;}
[data-testid="stMetricLabel"] p {font-size: 0.8rem;}
</style>
"""


def style(extra: str = "") -> None:
    """Apply the app's small CSS adjustments (called once per run by the router)."""
    st.html(_CSS + extra)


def simulated_badge() -> None:
    st.badge("Simulated data", icon=":material/science:", color="orange")


_router = threading.local()


@contextmanager
def routed() -> Iterator[None]:
    """The router (app.py) runs the chosen page inside this: the page then knows that the
    shared frame (style, state, sidebar) is already drawn in this run."""
    _router.active = True
    try:
        yield
    finally:
        _router.active = False


def leave_legacy_pages_mode() -> None:
    """Make sure this run is routed by ``app.py`` (``st.navigation``), not by the folder.

    A folder named ``pages/`` beside the entry file puts Streamlit in its legacy multipage
    mode until some session calls ``st.navigation``: the first run after a server start (and
    every ``AppTest`` run) then executes the requested file directly, with a menu of every
    file in the folder. That mode is switched off here and the run restarted, so the router
    draws the real menu and page.
    """
    try:
        from streamlit import config as st_config
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # pragma: no cover - a Streamlit without it has no legacy mode to leave
        return
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        # AppTest resets the mode before every run, and a restart would drop the run's button
        # clicks; there the page simply draws the shared frame itself (page_setup).
        if not st_config.get_option("global.appTest"):
            st.rerun()


def page_setup() -> None:
    """Called first by every page: leave the legacy mode if Streamlit ran the page without
    the router, and draw the shared frame (style, state, sidebar) if it still did."""
    if not getattr(_router, "active", False):
        leave_legacy_pages_mode()
        style()
        init_state()
        render_sidebar()


def page_header(title: str, subtitle: str | None = None) -> Active:
    """Title, a one-line subtitle naming the active data, the simulated badge; returns it."""
    page_setup()
    act = active()
    st.title(title)
    line = subtitle or ""
    cols = st.columns([5, 1]) if act.simulated else [st.container()]
    cols[0].caption(f"{line}{' · ' if line else ''}**{act.dataset.name}** · {act.model} · "
                    f"{act.pairs.n:,} pairs · {act.pairs.dim}-d")
    if act.simulated:
        with cols[1]:
            simulated_badge()
    return act


def _on_dataset_change() -> None:
    ws = workspace()
    ws.select(st.session_state["sidebar_dataset"])
    st.session_state.pop("sidebar_model", None)


def _on_model_change() -> None:
    ws = workspace()
    ws.select(ws.current_dataset, st.session_state["sidebar_model"])


def render_sidebar() -> None:
    """Dataset and model selectors, and what is active: dataset, model, method, simulated."""
    ws = workspace()
    act = active()
    sb = st.sidebar
    sb.markdown(f"### {APP_TITLE}\n<span style='color:#64748B'>{APP_TAGLINE}</span>",
                unsafe_allow_html=True)
    names = list(ws.datasets)
    st.session_state["sidebar_dataset"] = act.dataset.name
    sb.selectbox("Dataset", names, key="sidebar_dataset", on_change=_on_dataset_change)
    models = list(act.dataset.models)
    if len(models) > 1:
        st.session_state["sidebar_model"] = act.model
        sb.selectbox("Model", models, key="sidebar_model", on_change=_on_model_change,
                     help="The same pairs embedded by several models: every page follows this "
                          "choice, and nothing computed before is computed again.")
    with sb.container(border=True):
        st.markdown(f"**{act.dataset.name}**  \n{act.pairs.n:,} pairs · {act.pairs.dim}-d")
        model_line = f"**Model** {html.escape(act.model)}"
        if act.simulated and act.pairs.meta.get("imitates"):
            imitates = html.escape(str(act.pairs.meta["imitates"]))
            model_line += f"  \n<span style='color:#64748B'>imitates {imitates}</span>"
        st.markdown(model_line, unsafe_allow_html=True)
        # A slot the "Close the gap" fragment rewrites when a slider moves (a fragment may
        # write to a container the full run drew), so the sidebar never shows a stale k.
        st.session_state[METHOD_SLOT_KEY] = slot = st.empty()
        slot.markdown(f"**Method** {method_summary(ws)}")
        if act.simulated:
            simulated_badge()


def show_method_in_sidebar() -> None:
    """Redraw the sidebar's method line (called by fragments after a parameter change)."""
    slot = st.session_state.get(METHOD_SLOT_KEY)
    if slot is not None:
        slot.markdown(f"**Method** {method_summary(workspace())}")


def params_label(name: str, params: dict[str, Any]) -> str:
    """A method with its parameters for titles: "Spectral, k = 60", "Laplace OT (EMD), reg_lap = 1"."""
    parts = []
    for key, value in params.items():
        shown = "k" if (name == "spectral" and key == "n_components") else key
        parts.append(f"{shown} = {value:g}" if isinstance(value, float) else f"{shown} = {value}")
    return ", ".join([method_label(name), *parts])


def method_summary(ws: Workspace) -> str:
    """The chosen method and its main parameter, e.g. "Spectral (k = 60)"."""
    label = method_label(ws.method)
    p = ws.method_params
    if ws.method == "spectral" and "n_components" in p:
        k = p["n_components"]
        act = ws.active
        if act is not None:  # as the page will clip it for this dataset
            lo, hi = dash.spectral_k_range(act.pairs.n, act.pairs.dim)
            k = min(max(k, lo), hi)
        return f"{label} (k = {k})"
    shown = [f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}" for k, v in p.items()
             if k in ("reg", "reg_lap", "reg_src", "n_components")]
    return f"{label} ({', '.join(shown)})" if shown else label


def describe_pair_item(pairs: Any, row: int, modality: str) -> str:
    """A short text for one pool item: its caption (texts) or "image of: caption" (images)."""
    caption = pairs.captions[row] if pairs.captions else f"pair {pairs.ids[row]}"
    return caption if modality == "text" else f"image of “{caption}”"
