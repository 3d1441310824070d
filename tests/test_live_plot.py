"""The live chart (ui/live_plot): Close the gap's charts drawn by a component that redraws
them in place; its files in a private folder; st.plotly_chart where that folder cannot be made.
(That a slider move redraws in place, in a real browser: tests/test_browser.py.)"""

from __future__ import annotations

import json
import stat
import tempfile
from pathlib import Path

import plotly
import pytest

from ui import live_plot


def _spec(element) -> dict:
    return json.loads(json.loads(element.proto.json_args)["spec"])


def test_close_the_gap_draws_the_raw_and_after_scatters_and_histograms_live(app_session,
                                                                          assert_clean):
    at = app_session("pages/close_gap.py")
    assert_clean(at, "Close the gap")
    charts = {e.proto.id.rsplit("-", 1)[-1]: e for e in at.get("component_instance")
              if e.proto.component_name.endswith(live_plot.NAME)}
    assert sorted(charts) == ["close_hist", "close_scatter", "close_scatter_raw"]
    assert _spec(charts["close_scatter_raw"])["layout"]["title"]["text"] == "Raw embeddings"
    assert _spec(charts["close_scatter"])["layout"]["title"]["text"].startswith("Spectral")
    assert len(_spec(charts["close_hist"])["data"]) == 4  # two panels, two series each
    assert json.loads(json.loads(charts["close_hist"].proto.json_args)["config"]) == {
        "displayModeBar": False}
    # nothing on this page is drawn twice: the charts are not also st.plotly_chart
    assert not [c for c in at.get("plotly_chart") if c.key.startswith("close_scatter")]


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


def test_without_the_component_a_live_chart_is_a_plotly_chart(monkeypatch):
    from streamlit.testing.v1 import AppTest

    def script():
        import plotly.graph_objects as go

        from ui.live_plot import live_chart

        live_chart(go.Figure(go.Scatter(x=[1, 2], y=[3, 4])), key="chart",
                   config={"displaylogo": False})

    monkeypatch.setattr(live_plot, "_component", None)
    at = AppTest.from_function(script).run()
    assert not at.exception
    assert [c.key for c in at.get("plotly_chart")] == ["chart"]
    assert at.get("component_instance") == []


@pytest.mark.parametrize("needle", ["event.source !== window.parent", "streamlit:componentReady",
                                    "streamlit:setFrameHeight", 'src="plotly.min.js"'])
def test_the_page_talks_only_to_its_parent_and_loads_plotly_from_its_folder(needle):
    assert needle in (Path(live_plot.__file__).parent / "index.html").read_text()
