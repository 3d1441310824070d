"""The session's state: its workspace (datasets, models, the chosen method) and widget values
kept across pages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import streamlit as st

from gapviz.config import DEMO_DIM, DEMO_N_PAIRS
from gapviz.runs import default_spec
from gapviz.simulate import PROFILES, demo_models, statistics_rows
from gapviz.workspace import DEMO_DATASET, Active, Workspace

WS_KEY = "workspace"
KEPT_KEY = "_kept_widget_values"


@st.cache_resource(show_spinner="Preparing the simulated demo…")
def demo_data() -> dict[str, Any]:
    """The demo's pairs under every simulated profile (shared read-only by all sessions)."""
    return demo_models()


@st.cache_resource
def demo_keys() -> frozenset[str]:
    """Content hashes of the built-in demo's pairs (every profile): what is the demo itself,
    whatever a file's meta or a dataset's name says."""
    return frozenset(pairs.content_hash() for pairs in demo_data().values())


@st.cache_resource
def demo_statistics() -> list[dict[str, Any]]:
    """The demo's profile statistics beside the real model's figures (``statistics_rows``)."""
    return statistics_rows(demo_data())


def init_state() -> None:
    """Create this session's workspace once, with the demo loaded and active."""
    if WS_KEY in st.session_state:
        return
    st.session_state[WS_KEY] = demo_workspace()


def demo_workspace() -> Workspace:
    """A new visitor's workspace: the demo's profiles loaded, its CLIP profile active."""
    ws = Workspace()
    for profile, pairs in demo_data().items():
        ws.add(pairs, source="built-in demo (simulated)", dataset=DEMO_DATASET,
               model=PROFILES[profile].name, activate=False)
    ws.select(DEMO_DATASET, PROFILES["clip"].name)
    ws.method_params = default_spec(DEMO_N_PAIRS, DEMO_DIM).param_dict
    return ws


def workspace() -> Workspace:
    init_state()
    return st.session_state[WS_KEY]


def active() -> Active:
    act = workspace().active
    if act is None:  # cannot happen: the demo cannot be removed; say what to do if it does
        st.error("No dataset is loaded. Open **Data** and load the demo or your own pairs.")
        st.stop()
    return act


def keep(key: str, default: Any, *, bounds: tuple[Any, Any] | None = None,
         options: Sequence[Any] | None = None) -> dict[str, Any]:
    """Widget keyword arguments that keep its value when the user switches pages.

    Streamlit forgets a widget's state once a run does not draw it (another page); the value
    is saved on change and put back before the widget is drawn again. ``bounds`` clips a
    kept value into the widget's current range (a k kept from a larger dataset); ``options``
    (a menu's) sets a kept value that is no longer offered back to ``default``, and saves
    that (a fit set chosen while other data was loaded). Use as
    ``st.slider("k", 2, 200, **keep("close_k", 60, bounds=(2, 200)))``.
    """
    if options is not None and kept(key, default) not in options:
        set_kept(key, default)
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


def set_kept(key: str, value: Any) -> None:
    """Set a :func:`keep` widget's value from a callback (also where it is saved)."""
    st.session_state[key] = value
    st.session_state.setdefault(KEPT_KEY, {})[key] = value


def forget_kept(*keys: str) -> None:
    """Drop widget values (and their saved copies), e.g. a query chosen on other data."""
    saved = st.session_state.get(KEPT_KEY, {})
    for key in keys:
        st.session_state.pop(key, None)
        saved.pop(key, None)
