"""The Anatomy page through AppTest, on the demo: the new measures before and after a method,
the gap dimensions, the split, clusters, intervals on request and what closing costs."""

from __future__ import annotations

import pytest

from conftest import app_session, assert_clean, card_values


@pytest.fixture(scope="module")
def at():
    session = app_session("pages/anatomy.py")
    assert_clean(session, "Anatomy")
    return session


def test_the_anatomy_measures_raw_and_after_the_method(at):
    cards = card_values(at)
    assert {"RMG", "NDCG@10", "Hubness", "ITR", "Fréchet"} <= set(cards)
    assert any("How obtained" in c.value and "transductive" in c.value for c in at.caption)
    names = [c.key for c in at.get("plotly_chart")]
    assert "anatomy_dims" in names and "anatomy_split" in names
    assert any("largest gap dimensions carry" in c.value for c in at.caption)
    assert any("removes" in m.value and "of the mean shift" in m.value for m in at.markdown)


def test_clusters_of_the_demo_are_its_concepts(at):
    clusters = next(d.value for d in at.dataframe if d.key == "anatomy_clusters")
    assert len(clusters) == 20 and {"ITR", "R@5", "RMG"} <= set(clusters.columns)
    assert any("Clusters from the pairs’ labels" in c.value for c in at.caption)


def test_what_closing_costs_and_intervals_on_request(at):
    costs = next(d.value for d in at.dataframe if d.value.index.name == "kept")
    assert any("zero-shot accuracy" in str(i) for i in costs.index)
    assert any("R@1 image→text" in str(i) for i in costs.index)
    at.button(key="anatomy_ci_go").click().run()
    assert_clean(at, "intervals")
    assert "anatomy_ci" in [c.key for c in at.get("plotly_chart")]
    assert any("percentile-bootstrap intervals" in c.value and "200 resamples" in c.value
               for c in at.caption)


def test_another_method_under_another_protocol(at):
    at.selectbox(key="anatomy_method").set_value("center").run()
    at.selectbox(key="anatomy_protocol_center").set_value("held-out").run()
    assert_clean(at, "center, held-out")
    assert any("held-out: 5-fold cross-fit" in c.value for c in at.caption)
