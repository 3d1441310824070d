"""A Plotly chart that a rerun updates in place.

``st.plotly_chart`` (Streamlit 1.67) hashes the figure into the chart's element id, so every
new figure unmounts the chart (``Plotly.purge``) and draws a new one: in a browser without a
GPU each redraw of a WebGL scatter then makes a new WebGL context in software. A slider on
Close the gap redraws its scatter and histograms on every move. :func:`live_chart` draws a
figure in a small component (one iframe, keyed, so it stays mounted across reruns) that
hands each new figure to ``Plotly.react`` on the same chart; a figure equal to the one shown
is not drawn again. Measured in headless chromium with software WebGL: six new figures of the
demo's scatter cost 2.96-3.37 CPU-s drawn anew, 0.82-0.87 CPU-s through ``Plotly.react``.

The component's files are this folder's ``index.html`` and the ``plotly.min.js`` of the
installed plotly package, copied into a private temporary folder made for this process
(``tempfile.mkdtemp``: a random name, readable by this user only, removed at exit), which
Streamlit serves as static files. Where that folder cannot be made, :func:`live_chart` draws
with ``st.plotly_chart`` instead.

Styling follows Streamlit's for Plotly: bold titles; the figure's own layout otherwise.
"""

from __future__ import annotations

import atexit
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import plotly
import plotly.graph_objects as go
import streamlit as st

__all__ = ["live_chart"]

log = logging.getLogger(__name__)
_HERE = Path(__file__).resolve().parent
#: The component's name (Streamlit registers it under this module's name).
NAME = "gapviz_live_plot"


def _component_folder() -> Path | None:
    """A private folder holding the component's ``index.html`` and plotly's ``plotly.min.js``;
    None (with the reason logged) where it cannot be made."""
    try:
        folder = Path(tempfile.mkdtemp(prefix="gapviz-live-plot-"))
        atexit.register(shutil.rmtree, folder, True)
        shutil.copyfile(_HERE / "index.html", folder / "index.html")
        shutil.copyfile(Path(plotly.__file__).parent / "package_data" / "plotly.min.js",
                        folder / "plotly.min.js")
        return folder
    except OSError as err:
        log.warning("gapviz: charts redraw with st.plotly_chart (no folder for the live "
                    "chart's files: %s)", err)
        return None


def _declare():
    folder = _component_folder()
    if folder is None:
        return None
    import streamlit.components.v1 as components

    return components.declare_component(NAME, path=str(folder))


_component = _declare()


def live_chart(fig: go.Figure, *, key: str, config: dict[str, Any] | None = None,
               spec: str | None = None) -> None:
    """Draw ``fig`` where the page is writing, updated in place by later reruns with the same
    ``key``. ``config``: Plotly's config (``displaylogo``, ``displayModeBar``, ...); ``spec``:
    ``fig.to_json()`` when the caller has it already (a figure drawn on every rerun)."""
    if _component is None:
        st.plotly_chart(fig, key=key, config=config)
        return
    _component(spec=spec if spec is not None else fig.to_json(),
               config=json.dumps(config or {}), key=key, default=None)
