"""The sidebar every page shares: the app's name, the page menu, the dataset and model
selectors, and what is active (dataset, model, method, simulated or not)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import streamlit as st

from gapviz.figures import palette
from gapviz.methods import format_params, method_class, method_label, offered_params
from gapviz.workspace import Workspace

from .components import simulated_badge, user_text
from .state import active, workspace

#: Session key of the slot that shows the chosen method (a fragment rewrites it).
METHOD_SLOT_KEY = "_sidebar_method_slot"


def _on_dataset_change() -> None:
    ws = workspace()
    ws.select(st.session_state["sidebar_dataset"])
    st.session_state.pop("sidebar_model", None)


def _on_model_change() -> None:
    ws = workspace()
    ws.select(ws.current_dataset, st.session_state["sidebar_model"])


def render_sidebar(pages: Sequence[Any], title: str, tagline: str) -> None:
    """The app's name, a link per page (``pages``: entries with path, title and icon), the
    dataset and model selectors, and a card saying what is active."""
    ws = workspace()
    act = active()
    sb = st.sidebar
    sb.markdown(f"### {title}\n<span style='color:{palette.MUTED}'>{tagline}</span>",
                unsafe_allow_html=True)
    for page in pages:
        sb.page_link(page.path, label=page.title, icon=page.icon)
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
        st.markdown(f"**{user_text(act.dataset.name)}**  \n{act.pairs.n:,} pairs · "
                    f"{act.pairs.dim}-d"
                    + (f"  \n{act.pairs.convention}" if act.pairs.group_ids is not None else ""))
        model_line = f"**Model** {user_text(act.model)}"
        if act.simulated and act.pairs.meta.get("imitates"):
            model_line += f"  \nimitates {user_text(act.pairs.meta['imitates'])}"
        st.markdown(model_line)
        # A slot the "Close the gap" fragment rewrites when a slider moves (a fragment may
        # write to a container the full run drew), so the sidebar never shows a stale k.
        st.session_state[METHOD_SLOT_KEY] = slot = st.empty()
        slot.markdown(method_line(ws))
        if act.simulated:
            simulated_badge()


def show_method_in_sidebar() -> None:
    """Redraw the sidebar's method line (called by fragments after a parameter change)."""
    slot = st.session_state.get(METHOD_SLOT_KEY)
    if slot is not None:
        slot.markdown(method_line(workspace()))


def method_line(ws: Workspace) -> str:
    """The sidebar's method line: the method chosen on Close the gap (where Anatomy and
    Retrieval start too), named by that page, since the Overview closes the gap with its own
    method (spectral) whatever is chosen there."""
    return f"**Close the gap** {method_summary(ws)}"


def method_summary(ws: Workspace) -> str:
    """The chosen method and its slider parameters as the page will run them on the active
    data, e.g. "Spectral (k = 60)"."""
    label = method_label(ws.method)
    try:
        cls = method_class(ws.method)
    except ValueError:
        return label
    shown = offered_params(ws.method, ws.method_params)
    act = ws.active
    if act is not None and shown:
        shown = {k: v for k, v in cls.suited_params(act.pairs.n, act.pairs.dim, shown).items()
                 if k in shown}
    text = format_params(ws.method, shown)
    return f"{label} ({text})" if text else label
