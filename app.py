"""gapviz dashboard: ``streamlit run app.py``.

The entry file is a router: it sets the page up, initialises the session's state once
(the built-in demo is loaded, so every page works with no clicks), draws the sidebar shared
by all pages, and runs the page chosen in the navigation. Pages live in ``pages/``; add one by
adding a line to :data:`PAGES` (a page whose file is not there yet is left out).
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # `pages.common` and `gapviz` import from the repository root
    sys.path.insert(0, str(ROOT))

from pages import common  # noqa: E402

common.leave_legacy_pages_mode()  # before anything is drawn (see its docstring)

#: (file, title, Material icon, default?) of every page, in menu order.
PAGES: list[tuple[str, str, str, bool]] = [
    ("pages/overview.py", "Overview", ":material/dashboard:", True),
    ("pages/data.py", "Data", ":material/database:", False),
    ("pages/explore.py", "Explore", ":material/scatter_plot:", False),
    ("pages/close_gap.py", "Close the gap", ":material/join_inner:", False),
    ("pages/retrieval.py", "Retrieval", ":material/search:", False),
    ("pages/compare.py", "Compare", ":material/compare_arrows:", False),
]

st.set_page_config(page_title="gapviz · modality gap", page_icon=":material/join_inner:",
                   layout="wide", initial_sidebar_state="expanded")

pg = st.navigation([st.Page(path, title=title, icon=icon, default=default)
                    for path, title, icon, default in PAGES if (ROOT / path).is_file()])
common.style()
common.init_state()
common.render_sidebar()
with common.routed():
    pg.run()
