"""Close the gap through AppTest: how the protocol menu guides a user (small simulated pairs).

A method that reads the pairing, set to be scored on its own fit pairs, gets a note that says
what to choose (not an error), and its numbers only with the opt-in and a warning; "Fit on
another dataset" is offered only once there is one; the raw embeddings say they fit nothing.
"""

from __future__ import annotations

import pytest

from gapviz.simulate import simulate_pairs

N = 200


@pytest.fixture
def at(app_session, simulated_workspace):
    """A fresh session on Close the gap, on N simulated sim-CLIP pairs."""
    return app_session("pages/close_gap.py",
                       workspace=simulated_workspace(N, 32, "Small simulated", seed=2,
                                                     profiles=["clip"]))


def test_procrustes_on_its_own_fit_pairs_needs_the_opt_in_and_then_warns(at, assert_clean, card_values):
    at.selectbox(key="close_method").set_value("procrustes").run()
    assert_clean(at, "Procrustes, held-out by default")
    assert at.selectbox(key="close_protocol_procrustes").value == "held-out"
    assert any("held-out: 5-fold cross-fit" in c.value for c in at.caption)

    at.selectbox(key="close_protocol_procrustes").set_value("transductive").run()
    assert_clean(at, "Procrustes, transductive without the opt-in")  # a note, not an error
    note = " ".join(i.value for i in at.info)
    assert "memorises" in note and "Held-out" in note and "Score it on its own fit pairs" in note
    assert card_values(at) == {}  # no numbers without the opt-in

    at.checkbox(key="close_allow_leak").check().run()
    assert_clean(at, "Procrustes, transductive with the opt-in")
    assert "ITR" in card_values(at)
    assert any("Procrustes" in w.value or "procrustes" in w.value for w in at.warning)


def test_fit_on_is_offered_only_once_another_dataset_is_loaded(at, assert_clean):
    at.selectbox(key="close_method").set_value("sinkhorn").run()
    assert_clean(at, "Sinkhorn")
    options = at.selectbox(key="close_protocol_sinkhorn").options
    assert "Held-out (5-fold cross-fit)" in options and "Fit on another dataset" not in options
    ws = at.session_state["workspace"]
    ws.add(simulate_pairs(150, 32, seed=9), source="test", dataset="Other pairs",
           model=ws.active.model, activate=False)
    at.run()
    protocol = at.selectbox(key="close_protocol_sinkhorn")
    assert "Fit on another dataset" in protocol.options
    protocol.set_value("fit-on").run()
    assert_clean(at, "Sinkhorn fitted on the other pairs")
    assert any("fit-on Other pairs" in c.value and "fitted on 150 pairs" in c.value
               for c in at.caption)


def test_the_raw_embeddings_say_they_fit_nothing(at, assert_clean):
    at.selectbox(key="close_method").set_value("orig").run()
    assert_clean(at, "None (raw embeddings)")
    assert not [s for s in at.selectbox if s.key and s.key.startswith("close_protocol")]
    line = next(c.value for c in at.caption if "How obtained" in c.value)
    assert f"nothing fitted, {N} pairs scored" in line and "transductive" not in line
