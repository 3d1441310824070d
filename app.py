"""gapviz dashboard: ``streamlit run app.py``.

The entry file is a router: it lists the pages (:data:`ui.frame.PAGES`) in
``st.navigation`` and runs the one asked for. Each page draws the shared frame itself
(page config, state with the demo loaded, sidebar with the page menu: :mod:`ui.frame`), so it
also works when Streamlit runs it directly, as it does for a deep link on a freshly started
server while a ``pages/`` folder sits beside this file.

``streamlit run app.py`` first imports this file as a module and finds :data:`app` in it (an
``st.App``, Streamlit's ASGI application): the server then runs this file as the script of
every visit, and its start warms up the demo (:mod:`ui.warmup`).
"""

from __future__ import annotations

import ui  # noqa: F401  (first: it sets up the process before numpy loads)

import streamlit as st

if __name__ == "__main__":  # a visit: the router
    from ui.frame import PAGES, page_config

    page_config()
    st.navigation([st.Page(p.path, title=p.title, icon=p.icon, default=p.default) for p in PAGES],
                  position="hidden").run()
else:  # imported by ``streamlit run app.py``: the server, which answers before the warm-up
    from ui.warmup import lifespan  # (light: the warm-up imports the pages' libraries itself)

    app = st.App(__file__, lifespan=lifespan)
