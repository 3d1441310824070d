"""The app's shared parts (Streamlit): everything a page needs that is not itself a page.

- :mod:`ui.frame`: the list of pages and the frame every page draws first (page config,
  style, session state, sidebar with the page menu);
- :mod:`ui.state`: the session's workspace and widget values kept across pages;
- :mod:`ui.compute`: cached computations keyed by content hash (fits, views, UMAP, models);
- :mod:`ui.components`: metric cards, the error guard, labels;
- :mod:`ui.sidebar`: dataset / model selectors and what is active;
- :mod:`ui.export_menu`: the download menu.

Library logic lives in :mod:`gapviz` (which never imports Streamlit); this package caches it
and renders it. Pages live in ``pages/``, one file per page.
"""

from gapviz.threads import quiet_idle_blas_threads

# The server's process is gapviz's own, and this package is the first thing of the app's that a
# page or the router imports (each imports it before numpy): OpenBLAS reads this as it loads.
quiet_idle_blas_threads()
