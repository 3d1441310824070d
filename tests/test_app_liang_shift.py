"""The Liang shift on Close the gap through AppTest: its lambda slider, and lambda = 0 is raw."""

from __future__ import annotations

import pytest


@pytest.fixture
def at(app_session, simulated_workspace):
    return app_session("pages/close_gap.py",
                       workspace=simulated_workspace(200, 32, "Small simulated", seed=2,
                                                     profiles=["clip"]))


def test_the_lambda_slider_moves_the_shift_and_zero_is_the_raw_embeddings(at, assert_clean,
                                                                          card_values):
    at.selectbox(key="close_method").set_value("liang_shift").run()
    assert_clean(at, "Liang shift")
    slider = at.slider(key="close_liang_lambda")
    assert slider.value == pytest.approx(0.82) and (slider.min, slider.max) == (-1.0, 2.0)
    shifted = card_values(at)
    slider.set_value(0.0).run()
    assert_clean(at, "Liang shift, lambda = 0")
    raw = card_values(at)
    assert float(shifted["ITR"]) < float(raw["ITR"])        # the default closes the gap
    assert all(m.delta == "0" for m in at.metric[:len(raw)])  # lambda = 0: no change at all
