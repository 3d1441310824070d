"""gapviz dashboard: ``streamlit run app.py``.

The entry file is a router: it lists the pages (:data:`ui.frame.PAGES`) in
``st.navigation`` and runs the one asked for. Each page draws the shared frame itself
(page config, state with the demo loaded, sidebar with the page menu: :mod:`ui.frame`), so it
also works when Streamlit runs it directly, as it does for a deep link on a freshly started
server while a ``pages/`` folder sits beside this file.
"""

from __future__ import annotations

import ui  # noqa: F401  (first: it sets up the process before numpy loads)

import streamlit as st

from ui.frame import PAGES, page_config

page_config()
st.navigation([st.Page(p.path, title=p.title, icon=p.icon, default=p.default) for p in PAGES],
              position="hidden").run()
