"""Cached computations of the app, keyed by content hash.

Every cache is keyed on ``Active.key``, the content hash computed once when an embedding is
loaded, never on Streamlit's sampling hash of arrays (array arguments are ``_``-prefixed so
Streamlit does not hash them at all). Fitted methods, UMAP jobs and open_clip models are held
in :func:`st.cache_resource` stores (objects shared, not copied); small results (measures,
projections, distance samples) in :func:`st.cache_data` with ``max_entries``.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st

from gapviz import dashboard as dash
from gapviz.atlas_view import PLOTLY_MAX_POINTS
from gapviz.dashboard import ClosedView
from gapviz.methods import method_class
from gapviz.projection import Projection, joint_pca, joint_umap, warm_up_umap
from gapviz.protocols import (
    DEFAULT_FOLDS,
    DEFAULT_SEED,
    ProtocolResult,
    Provenance,
    protocol_transform,
    refit_result,
)
from gapviz.workspace import Active

from .components import method_label

log = logging.getLogger("gapviz.app")

#: Cache sizes: fitted methods (eigenvectors, OT plans), method views, raw views, UMAP layouts.
FIT_CACHE_ENTRIES = 12
VIEW_CACHE_ENTRIES = 64
RAW_CACHE_ENTRIES = 16
UMAP_CACHE_ENTRIES = 8
#: Seconds between checks of a background UMAP job.
UMAP_POLL_SECONDS = 1.0


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


#: Sizes of the stores of heavy objects, by kind.
STORE_ENTRIES = {"fits": FIT_CACHE_ENTRIES, "umap": UMAP_CACHE_ENTRIES,
                 "protocol": FIT_CACHE_ENTRIES, "live": FIT_CACHE_ENTRIES,
                 "live_views": VIEW_CACHE_ENTRIES}


@st.cache_resource
def store(kind: str) -> LRUStore:
    """The process-wide store of ``kind`` (fitted methods, UMAP jobs, protocol results, live
    fits and their views), shared by every session."""
    return LRUStore(STORE_ENTRIES[kind])


@st.cache_resource
def _umap_pool() -> ThreadPoolExecutor:
    # One worker: UMAP is CPU-bound, two layouts at once would only halve each other's speed.
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="gapviz-umap")


def frozen(params: dict[str, Any]) -> tuple:
    """Parameters as a hashable, order-independent cache key."""
    return tuple(sorted((k, v) for k, v in params.items()))


def fitted_method(act: Active, name: str, fit_params: dict[str, Any]) -> Any:
    """The method ``name`` fitted on the active pairs, fitted at most once per content hash.

    A progress bar is shown while a method that reports progress (OT) fits; a spinner for
    the others. Nothing Streamlit runs inside the stored computation itself, so a cached
    fit never replays stale elements.
    """
    return _stored("fits", (act.key, name, frozen(fit_params)),
                   f"Fitting {method_label(name)} on {act.pairs.n:,} pairs",
                   lambda progress: dash.fit_method(name, act.pairs.image_embeddings,
                                                    act.pairs.text_embeddings, fit_params,
                                                    progress=progress))


def _stored(kind: str, key: Any, title: str, compute: Any) -> Any:
    """``store(kind)[key]``, computed once by ``compute(progress)`` with a progress bar (and
    a spinner) while it runs. Nothing Streamlit runs inside the stored computation itself,
    so a stored result never replays stale elements."""
    items = store(kind)
    value = items.get(key)
    if value is not None:
        return value
    slot = st.empty()
    bar = slot.progress(0.0, text=f"{title}…")

    def progress(fraction: float, message: str = "") -> None:
        bar.progress(min(max(float(fraction), 0.0), 1.0),
                     text=f"{title}: {message}" if message else f"{title}…")

    try:
        with st.spinner(f"{title} (once; stored afterwards)…"):
            value = compute(progress)
    finally:
        slot.empty()
    items.put(key, value)
    return value


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

    Parameters that need no refit (spectral k) are view parameters: eigenvectors are computed
    once for the largest k offered and sliced for every k (no eigen-solve on a slider move).
    """
    fit_params, view_params = dash.split_params(name, params, act.pairs.n, act.pairs.dim)
    method = fitted_method(act, name, fit_params)
    X, Y = act.pairs.image_embeddings, act.pairs.text_embeddings
    return method_view(act.key, name, frozen(fit_params), frozen(view_params), method, X, Y)


def active_raw_view(act: Active) -> ClosedView:
    return raw_view(act.key, act.pairs.image_embeddings, act.pairs.text_embeddings)


@st.cache_data(max_entries=RAW_CACHE_ENTRIES, show_spinner="Projecting the pool…")
def raw_projection(key: str, _X: np.ndarray, _Y: np.ndarray) -> Projection:
    """PCA of the raw mixed pool alone (cached by content hash ``key``): the picture of a
    large pool without waiting for its measures (O(N^2 d) in :func:`raw_view`)."""
    return joint_pca(_X, _Y)


def active_projection(act: Active) -> Projection:
    """The raw pool's PCA: from the raw view when the measures are wanted anyway (small
    pools), on its own for pools past ``gapviz.atlas_view.PLOTLY_MAX_POINTS``."""
    if 2 * act.pairs.n <= PLOTLY_MAX_POINTS:
        return active_raw_view(act).projection
    return raw_projection(act.key, act.pairs.image_embeddings, act.pairs.text_embeddings)


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
    jobs = store("umap")
    key = (act.key, frozen(params))
    job = jobs.get(key)
    if job is None or job.cancelled():
        X, Y = act.pairs.image_embeddings, act.pairs.text_embeddings
        job = _umap_pool().submit(joint_umap, X, Y, **params)
        jobs.put(key, job)
    return job


def umap_ready(act: Active, **params: Any) -> Projection | None:
    """The finished UMAP layout, or None while it runs (raises the job's error, if any)."""
    job = umap_job(act, **params)
    return job.result() if job.done() else None


# ---------------------------------------------------------------------------------------------
# models (open_clip), shared by the Data and Retrieval pages
# ---------------------------------------------------------------------------------------------
@st.cache_resource(max_entries=2, show_spinner="Loading the model (once)…")
def loaded_model(spec: Any) -> Any:
    """An open_clip model held across runs, pages and sessions (``gapviz.encode.ModelSpec``)."""
    from gapviz.encode import load_model

    return load_model(spec)


@st.cache_data(max_entries=128, show_spinner="Embedding your text…")
def embed_text(identity: str, text: str, _spec: Any) -> np.ndarray:
    """A typed text embedded by the model (keyed on the model's identity and the text)."""
    from gapviz.encode import embed_texts

    return embed_texts(loaded_model(_spec), [text])[0]


# ---------------------------------------------------------------------------------------------
# protocols: how the shown numbers are obtained
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scoring:
    """How a method's numbers are obtained on the active pairs (``gapviz.protocols``).

    ``fit_on`` is the dataset (and its content hash) to fit on for the "fit-on" protocol.
    ``allow_leak`` lets a method that reads the pairing be scored on its own fit pairs (the
    numbers then carry a warning). ``shuffled`` runs the shuffled-pairs control.
    """

    protocol: str
    folds: int = DEFAULT_FOLDS
    seed: int = DEFAULT_SEED
    fit_on: tuple[str, str] | None = None   # (dataset label, content hash)
    allow_leak: bool = False
    shuffled: bool = False


def transductive_provenance(act: Active, name: str, method: Any = None) -> Provenance:
    """Fitted on the scored pairs, or on the subsample of them a fitted ``method`` kept
    (OT and Sinkhorn's ``fit_index_``)."""
    fitted_rows = getattr(method, "fit_index_", None)
    n_fit = act.pairs.n if fitted_rows is None else min(act.pairs.n, len(fitted_rows))
    return Provenance("transductive", name, n_fit, act.pairs.n)


def protocol_result(act: Active, name: str, params: dict[str, Any], scoring: Scoring,
                    fit_pairs: Any = None) -> ProtocolResult:
    """``gapviz.protocols.protocol_transform`` of the active pairs, computed once per content
    hash, method, parameters and scoring (held-out: K fits; fit-on: one fit on other pairs)."""
    return _stored(
        "protocol", (act.key, name, frozen(params), scoring),
        f"{method_label(name)} ({scoring.protocol}) on {act.pairs.n:,} pairs",
        lambda progress: protocol_transform(
            name, act.pairs.image_embeddings, act.pairs.text_embeddings,
            protocol=scoring.protocol, params=params, folds=scoring.folds, seed=scoring.seed,
            fit_pairs=fit_pairs, fit_source=scoring.fit_on[0] if scoring.fit_on else None,
            allow_pairing_leak=scoring.allow_leak, shuffled=scoring.shuffled, progress=progress))


@st.cache_data(max_entries=VIEW_CACHE_ENTRIES, show_spinner="Measuring…")
def _result_view(key: str, name: str, params_items: tuple, scoring: Scoring,
                 _result: ProtocolResult) -> ClosedView:
    return dash.view_of(_result.image_embeddings, _result.text_embeddings)


def _slider_names(name: str) -> set[str]:
    return {p.name for p in method_class(name).params_info if p.slider is not None}


@st.cache_resource
def _precompute_pool() -> ThreadPoolExecutor:
    # One worker: it only runs while the user looks at the page, and must not crowd the next move.
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="gapviz-precompute")


def neighbour_values(name: str, sliders: dict[str, Any]) -> list[dict[str, Any]]:
    """The slider values one step away from ``sliders`` (one parameter moved at a time): where
    a user's next move most likely goes."""
    out = []
    for info in method_class(name).params_info:
        if info.slider is None or info.name not in sliders:
            continue
        value, sl = sliders[info.name], info.slider
        if sl.options is not None:
            options = list(sl.options)
            if value in options:
                i = options.index(value)
                steps = [options[j] for j in (i - 1, i + 1) if 0 <= j < len(options)]
            else:
                steps = []
        else:
            step = sl.step or 0.1
            steps = [round(v, 10) for v in (value - step, value + step)
                     if sl.lo is not None and sl.hi is not None and sl.lo <= v <= sl.hi]
        out += [{**sliders, info.name: v} for v in steps]
    return out


#: The latest background request: older ones give way (the user has moved on).
_latest_precompute = [0]


def _precompute(token: int, fits: tuple, values: list[dict[str, Any]]) -> None:
    for fit in fits:
        if token != _latest_precompute[0]:
            return
        try:
            fit.precompute(values)
        except Exception:  # noqa: BLE001 - ahead-of-time work; a failure shows on the real move
            log.debug("precompute failed", exc_info=True)
            return


def live_view(act: Active, name: str, params: dict[str, Any], scoring: Scoring,
              fit_pairs: Any = None) -> tuple[ClosedView, Provenance]:
    """A method with ``refit`` (OT, Sinkhorn) under ``scoring``: fitted once per content hash,
    protocol and non-slider parameters; a slider move refits the same fits (their costs,
    graphs and recent solutions reused: ``gapviz.protocols.refit_result``) and measures again.
    """
    sliders = {k: v for k, v in params.items() if k in _slider_names(name)}
    base_params = {k: v for k, v in params.items() if k not in sliders}
    views = store("live_views")
    view_key = (act.key, name, frozen(params), scoring)
    cached = views.get(view_key)
    if cached is not None:
        return cached
    bases = store("live")
    base_key = (act.key, name, frozen(base_params), scoring)
    entry = bases.get(base_key)
    if entry is None:
        entry = (threading.Lock(), protocol_result(act, name, params, scoring, fit_pairs))
        bases.put(base_key, entry)
    lock, base = entry
    with lock:  # the fits are refitted in place; one slider move at a time per fit set
        result = refit_result(base, act.pairs.image_embeddings, act.pairs.text_embeddings,
                              **sliders)
        view = dash.view_of(result.image_embeddings, result.text_embeddings)
    out = (view, result.provenance)
    views.put(view_key, out)
    # While the user looks, solve the neighbouring slider values (kept by each fit), so the
    # next move one step away is a look-up.
    _latest_precompute[0] += 1
    _precompute_pool().submit(_precompute, _latest_precompute[0], base.fits,
                              neighbour_values(name, sliders))
    return out


def scored_view(act: Active, name: str, params: dict[str, Any], scoring: Scoring,
                fit_pairs: Any = None) -> tuple[ClosedView, Provenance]:
    """The view of the active pairs after ``name`` under ``scoring``, and how it was obtained.

    Transductive scoring of a method that does not read the pairing takes the fast path of
    :func:`closed_view` (one fit per content hash; spectral k slices eigenvectors). Every other
    case goes through ``protocol_transform``; a method that reads the pairing is refused
    transductive scoring unless ``scoring.allow_leak`` (then the provenance carries a warning).
    """
    cls = method_class(name)
    if hasattr(cls, "refit"):
        return live_view(act, name, params, scoring, fit_pairs)
    if scoring.protocol == "transductive" and not scoring.shuffled and not cls.uses_pairing:
        return closed_view(act, name, params), transductive_provenance(act, name)
    result = protocol_result(act, name, params, scoring, fit_pairs)
    view = _result_view(act.key, name, frozen(params), scoring, result)
    return view, result.provenance
