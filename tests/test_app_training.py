"""The Training page through AppTest: a tiny open_clip model trained here (not a pretrained
trajectory, see test_trajectory.py) gives a series of five checkpoints; the page measures it
and draws its curves, the logit scale, the pool at a chosen step with trails, and exports."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("open_clip")

from test_trajectory import train_tiny  # noqa: E402

PAGE = "pages/training.py"


def test_training_page_measures_a_series(app_session, assert_clean, tmp_path, monkeypatch):
    monkeypatch.setenv("GAPVIZ_CACHE_DIR", str(tmp_path / "cache"))
    config, checkpoints, _ = train_tiny(tmp_path, steps=100, every=20)
    assert len(checkpoints) == 5
    at = app_session(PAGE, training_arch=str(config),
                     training_models=str(checkpoints[0].parent))  # a folder of epoch_*.pt
    assert_clean(at, "training page before a run")
    assert "training_result" not in at.session_state
    at.button(key="training_run").click().run()
    assert_clean(at, "training page after a run")
    request, traj = at.session_state["training_result"]
    assert traj.labels == [f"epoch_{i}.pt" for i in range(1, 6)]
    assert not any(s.from_cache for s in traj.steps)
    assert len(at.get("plotly_chart")) == 3  # curves, logits, the pool with trails
    assert at.select_slider(key="training_step").value == "epoch_5.pt"
    at.select_slider(key="training_step").set_value("epoch_2.pt").run()
    assert_clean(at, "training page at step 2")
    scatter = json.loads(at.get("plotly_chart")[2].proto.spec)
    assert "epoch_2.pt" in scatter["layout"]["title"]["text"]
    assert "gapviz trajectory" in at.code[0].value and "--arch" in at.code[0].value
    # the raw-vs-method choice: each step after centering
    at.selectbox(key="training_method").set_value("center").run()
    assert_clean(at, "training page after center")
    scatter = json.loads(at.get("plotly_chart")[2].proto.spec)
    assert "epoch_2.pt" in scatter["layout"]["title"]["text"]
    assert "--method center" in at.code[0].value
    at.selectbox(key="training_method").set_value("raw").run()
    assert_clean(at, "training page back to raw")
    # measuring again reads every step from the cache
    at.button(key="training_run").click().run()
    assert_clean(at, "training page, second run")
    assert all(s.from_cache for s in at.session_state["training_result"][1].steps)
