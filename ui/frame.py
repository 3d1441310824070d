"""The pages and the frame each of them draws first.

Every page file starts with :func:`page_header`: it sets the page up (config, CSS), creates
the session's state once (the demo loaded), and draws the sidebar with the page menu. So a
page works however Streamlit runs it: through the router (``app.py``, ``st.navigation``), or
on its own, as Streamlit runs a deep link such as ``/explore`` on a freshly started server
while a ``pages/`` folder sits beside the entry file. The menu is drawn with
``st.page_link`` from :data:`PAGES` (Streamlit's own menu is hidden: ``position="hidden"`` in
the router, ``client.showSidebarNavigation = false`` in ``.streamlit/config.toml``), so it is
the same in both cases. Only public, documented Streamlit calls are used.
"""

from __future__ import annotations

import gc
import threading
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from gapviz.methods.ot import pot_numpy_backend_only
from gapviz.workspace import Active

from . import links
from .components import COMPACT_CARDS_CSS, simulated_badge, style, user_text
from .sidebar import render_sidebar
from .state import active, init_state

pot_numpy_backend_only()  # the server hands POT numpy arrays only: import it without torch
_frozen = threading.Event()


def freeze_startup_objects() -> None:
    """Once per process, after the imports and the demo's load (by the server's warm-up, else
    by the first page): move every object alive then (modules, the demo's pairs) out of the
    cyclic garbage collector's sight (:func:`gc.freeze`). Streamlit runs a full collection after every script run, and it
    scanned those long-lived objects each time: 60-75 ms for the 208,000 objects of the
    app's imports on an idle 2-core machine, longer on a busy one, while the server serves
    nothing else. Objects are still freed when their last reference goes; only cycles among
    the objects alive at the freeze would be kept: the startup objects, which live as long as
    the process anyway, and those of a page run under way then (once per process)."""
    if not _frozen.is_set():
        _frozen.set()
        gc.collect()
        gc.freeze()

APP_TITLE = "gapviz"
APP_TAGLINE = "Measure and close the modality gap"
#: The browser tab's icon, shipped with the app: a Material icon here would make every
#: visitor's browser fetch it from Google's font servers.
FAVICON = str(Path(__file__).resolve().parents[1] / "assets" / "favicon.png")


@dataclass(frozen=True)
class PageEntry:
    path: str
    title: str
    icon: str
    default: bool = False


#: Every page, in menu order; add a page by adding its file to ``pages/`` and a line here.
PAGES: tuple[PageEntry, ...] = (
    PageEntry("pages/overview.py", "Overview", ":material/dashboard:", default=True),
    PageEntry("pages/data.py", "Data", ":material/database:"),
    PageEntry("pages/explore.py", "Explore", ":material/scatter_plot:"),
    PageEntry("pages/close_gap.py", "Close the gap", ":material/join_inner:"),
    PageEntry("pages/anatomy.py", "Anatomy", ":material/biotech:"),
    PageEntry("pages/retrieval.py", "Retrieval", ":material/search:"),
    PageEntry("pages/compare.py", "Compare", ":material/compare_arrows:"),
    PageEntry("pages/training.py", "Training", ":material/timeline:"),
)


def page_config() -> None:
    st.set_page_config(page_title="gapviz · modality gap", page_icon=FAVICON,
                       layout="wide", initial_sidebar_state="expanded")


def page_header(title: str, subtitle: str | None = None, *, compact: bool = False,
                link: str | None = None) -> Active:
    """Draw the frame (config, CSS, state, sidebar and menu), then the page's title and a
    line naming the active data; returns the active data.

    ``link``: the page's name in links (:mod:`ui.links`); a link's state in the URL is put
    back first, so the sidebar and the page draw the data and choices it names."""
    page_config()
    style(COMPACT_CARDS_CSS if compact else "")
    init_state()
    freeze_startup_objects()
    from .compute import solver_processes  # (ui.compute imports much: once the frame is up)

    solver_processes()
    links.share_loaded_data()
    if link is not None:
        links.restore(link)
    render_sidebar(PAGES, APP_TITLE, APP_TAGLINE)
    act = active()
    st.title(title)
    line = subtitle or ""
    cols = st.columns([5, 1]) if act.simulated else [st.container()]
    cols[0].caption(f"{line}{' · ' if line else ''}**{user_text(act.dataset.name)}** · "
                    f"{user_text(act.model)} · {act.pairs.n:,} pairs · {act.pairs.dim}-d"
                    + (f" · {act.pairs.n_images:,} images, {act.pairs.convention}"
                       if act.pairs.group_ids is not None else "")
                    + (f" · {user_text(act.pairs.meta['reference'])}"
                       if act.simulated and act.pairs.meta.get("reference") else ""))
    if act.simulated:
        with cols[1]:
            simulated_badge()
    return act
