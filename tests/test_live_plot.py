"""The live charts (ui/live_plot): Close the gap's three charts drawn by one component (one
frame) that redraws each in place; its files in a private folder; st.plotly_chart where that folder cannot be made.
(That a slider move redraws in place, in a real browser: tests/test_browser.py.)"""

from __future__ import annotations

import json
import stat
import tempfile
from pathlib import Path

import plotly
import pytest

from ui import live_plot


def _charts(element) -> dict:
    """The component's charts by key: {key: (figure, config)}."""
    args = json.loads(element.proto.json_args)
    return {c["key"]: (json.loads(c["spec"]), json.loads(c["config"])) for c in args["charts"]}


def test_close_the_gap_draws_its_three_charts_live_in_one_frame(app_session, assert_clean):
    at = app_session("pages/close_gap.py")
    assert_clean(at, "Close the gap")
    frames = [e for e in at.get("component_instance")
              if e.proto.component_name.endswith(live_plot.NAME)]
    assert len(frames) == 1  # one iframe: the page loads Plotly once
    assert frames[0].proto.id.endswith("close_charts")
    assert json.loads(frames[0].proto.json_args)["rows"] == [
        ["close_scatter_raw", "close_scatter"], ["close_hist"]]
    charts = _charts(frames[0])
    assert charts["close_scatter_raw"][0]["layout"]["title"]["text"] == "Raw embeddings"
    assert charts["close_scatter"][0]["layout"]["title"]["text"].startswith("Spectral")
    assert len(charts["close_hist"][0]["data"]) == 4  # two panels, two series each
    assert charts["close_hist"][1] == {"displayModeBar": False}
    assert charts["close_scatter"][1] == {"displaylogo": False}
    # nothing on this page is drawn twice: the charts are not also st.plotly_chart
    assert not [c for c in at.get("plotly_chart") if c.key.startswith("close_")]


def test_the_component_folder_is_private_and_holds_its_page_and_plotly(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    folder = live_plot._component_folder()
    assert folder is not None and folder.parent == tmp_path
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700  # mkdtemp: this user's only
    assert sorted(p.name for p in folder.iterdir()) == ["index.html", "plotly.min.js"]
    bundled = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    assert (folder / "plotly.min.js").read_bytes() == bundled.read_bytes()
    assert "Plotly.react" in (folder / "index.html").read_text()


def test_a_folder_that_cannot_be_made_leaves_the_plain_chart(monkeypatch, caplog):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/tmp")

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    assert live_plot._component_folder() is None
    assert "st.plotly_chart" in caplog.text and "Permission denied" in caplog.text


def test_without_the_component_the_charts_are_plotly_charts_in_their_rows(monkeypatch):
    from streamlit.testing.v1 import AppTest

    def script():
        import plotly.graph_objects as go

        from ui.live_plot import Chart, live_charts

        def fig():
            return go.Figure(go.Scatter(x=[1, 2], y=[3, 4]))

        live_charts([[Chart("left", fig(), {"displaylogo": False}), Chart("right", fig())],
                     [Chart("below", fig())]], key="charts")

    monkeypatch.setattr(live_plot, "_component", None)
    at = AppTest.from_function(script).run()
    assert not at.exception
    assert [c.key for c in at.get("plotly_chart")] == ["left", "right", "below"]
    assert len(at.columns) == 2  # the first row side by side
    assert at.get("component_instance") == []


@pytest.mark.parametrize("needle", ["event.source !== window.parent", "streamlit:componentReady",
                                    "streamlit:setFrameHeight", 'src="plotly.min.js"'])
def test_the_page_talks_only_to_its_parent_and_loads_plotly_from_its_folder(needle):
    assert needle in (Path(live_plot.__file__).parent / "index.html").read_text()
