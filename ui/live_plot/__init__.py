"""Plotly charts that a rerun updates in place, several in one frame.

``st.plotly_chart`` (Streamlit 1.67) hashes the figure into the chart's element id, so every
new figure unmounts the chart (``Plotly.purge``) and draws a new one: in a browser without a
GPU each redraw of a WebGL scatter then makes a new WebGL context in software. A slider on
Close the gap redraws its scatter and histograms on every move. :func:`live_charts` draws
figures in a small component (one iframe, keyed, so it stays mounted across reruns) that
hands each new figure to ``Plotly.react`` on its own chart; a figure equal to the one shown
is not drawn again. Measured in headless chromium with software WebGL: six new figures of the
demo's scatter cost 2.96-3.37 CPU-s drawn anew, 0.82-0.87 CPU-s through ``Plotly.react``.

The charts of one call share that iframe, laid out in rows (side by side as
``st.columns(gap="medium")``, stacked on a narrow screen): a page loading them parses and
compiles ``plotly.min.js`` (4.8 MB) once, not once per chart.

The component's files are this folder's ``index.html`` and the ``plotly.min.js`` of the
installed plotly package, copied into a private temporary folder made for this process
(``tempfile.mkdtemp``: a random name, readable by this user only, removed at exit), which
Streamlit serves as static files. Where that folder cannot be made, :func:`live_charts` draws
with ``st.plotly_chart`` in ``st.columns`` instead.

Styling follows Streamlit's for Plotly: bold titles; the figure's own layout otherwise.
"""

from __future__ import annotations

import atexit
import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly
import plotly.graph_objects as go
import streamlit as st

__all__ = ["Chart", "live_charts"]

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


@dataclass(frozen=True)
class Chart:
    """One chart of :func:`live_charts`: its ``key`` (unique among the call's charts), the
    figure, Plotly's ``config`` (``displaylogo``, ``displayModeBar``, ...) and ``spec``,
    ``fig.to_json()`` when the caller has it already (a figure drawn on every rerun)."""

    key: str
    fig: go.Figure
    config: dict[str, Any] | None = None
    spec: str | None = None


def live_charts(rows: Sequence[Sequence[Chart]], *, key: str) -> None:
    """Draw the charts where the page is writing, one row of ``rows`` under another, the
    charts of a row side by side; later reruns with the same ``key`` update each chart in
    place (a chart is known by its own key)."""
    if _component is None:
        for row in rows:
            places = st.columns(len(row), gap="medium") if len(row) > 1 else [st.container()]
            for place, chart in zip(places, row):
                with place:
                    st.plotly_chart(chart.fig, key=chart.key, config=chart.config)
        return
    _component(rows=[[c.key for c in row] for row in rows],
               charts=[{"key": c.key, "spec": c.spec if c.spec is not None else c.fig.to_json(),
                        "config": json.dumps(c.config or {})} for row in rows for c in row],
               key=key, default=None)
