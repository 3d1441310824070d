"""Score corrections in the app (AppTest): Close the gap (their slider, cards on the corrected
scores, what they leave alone), Retrieval (the right column ranked on corrected scores, typed
text refused with a reason), Anatomy (costs and gains side by side) and Compare (rows)."""

from __future__ import annotations

import pytest

from gapviz.methods import make_method
from gapviz.protocols import fit_and_score
from gapviz.retrieval import retrieve
from gapviz.runs import RunData, Runner, planned_spec

N = 240


@pytest.fixture(scope="module")
def small_ws(simulated_workspace):
    return simulated_workspace(N, 32, "Small simulated", seed=2)


def _runner_metrics(ws, method, params=None):
    pairs = ws.active.pairs
    spec, _ = planned_spec(method, params, pairs.n, pairs.dim)
    return Runner().run(spec, RunData.of(pairs)).metrics


def test_close_the_gap_ranks_on_corrected_scores_and_says_so(small_ws, app_session, assert_clean,
                                                             card_values):
    at = app_session("pages/close_gap.py", workspace=small_ws)
    at.selectbox(key="close_method").set_value("csls").run()
    assert_clean(at, "CSLS")
    assert any("CSLS corrects scores, not embeddings" in c.value for c in at.caption)
    assert [s.label for s in at.slider] == ["Bank neighbours k"]
    want = _runner_metrics(small_ws, "csls")
    cards = card_values(at)
    assert cards["ITR"] == f"{want['ITR']:.3f}" or cards["ITR"].startswith(f"{want['ITR']:.2f}")
    # the slider refits: k = 3 gives other scores than k = 10
    at.slider[0].set_value(3).run()
    assert_clean(at, "CSLS k = 3")
    assert card_values(at) != cards


def test_retrieval_ranks_the_method_column_on_corrected_scores(small_ws, app_session,
                                                               assert_clean):
    at = app_session("pages/retrieval.py", workspace=small_ws)
    at.selectbox(key="retrieval_method").set_value("nnn").run()
    assert_clean(at, "NNN")
    assert any("corrected scores" in c.value for c in at.caption)
    partner = [m.value for m in at.metric if m.label.startswith("Rank of")]
    assert len(partner) == 2
    # the page's number is retrieve(..., scores=) on the run's terms for the default query
    pairs = small_ws.active.pairs
    spec, _ = planned_spec("nnn", None, pairs.n, pairs.dim)
    run = Runner().run(spec, RunData.of(pairs))
    at.selectbox(key="retrieval_pair").set_value(7).run()
    partner = [m.value for m in at.metric if m.label.startswith("Rank of")]
    res = retrieve(run.images, run.texts, "image", 7, 10, scores=run.scores)
    raw = retrieve(pairs.image_embeddings, pairs.text_embeddings, "image", 7, 10)
    assert partner == [f"#{raw.partner_rank:,}", f"#{res.partner_rank:,}"]


def test_anatomy_shows_costs_and_gains_for_a_score_correction(small_ws, app_session,
                                                              assert_clean):
    at = app_session("pages/anatomy.py", workspace=small_ws)
    at.selectbox(key="anatomy_method").set_value("qb_norm").run()
    assert_clean(at, "QB-Norm")
    assert any(m.value.startswith("**Raw embeddings → after QB-Norm") for m in at.markdown)
    frames = [d.value for d in at.dataframe]
    assert any("kept" in f.columns for f in frames)  # the costs
    gains = next(f for f in frames if "gain" in f.columns).set_index("gain")
    pairs = small_ws.active.pairs
    spec, _ = planned_spec("qb_norm", None, pairs.n, pairs.dim)
    run = Runner().run(spec, RunData.of(pairs))
    from gapviz.score_search import pool_search

    share = pool_search(run.images, run.texts, run.scores, k_requested=10)["requested_i2t"].mean()
    from gapviz.measure_info import format_metric, info

    key = "requested_modality_i2t"
    assert gains.loc[info(key).label, "after"] == format_metric(key, share)
    assert any("corrects scores, not embeddings" in c.value for c in at.caption)


def test_compare_has_a_row_per_correction(simulated_workspace, app_session, assert_clean):
    fresh = simulated_workspace(N, 32, "Small simulated", seed=2)  # no slider moved on it
    at = app_session("pages/compare.py", workspace=fresh)
    names = ["orig", "score_zscore", "csls", "qb_norm", "dbnorm", "nnn"]
    at.multiselect(key="compare_methods").set_value(names).run()
    assert_clean(at, "Compare corrections")
    table = at.dataframe[0].value
    assert set(names) <= set(table.index)
    pairs = fresh.active.pairs
    direct = fit_and_score(make_method("csls"), pairs.image_embeddings, pairs.text_embeddings)
    assert table.loc["csls", "protocol"] == "held-out"
    assert table.loc["csls", "ITR"] == pytest.approx(direct.metrics["ITR"], rel=1e-9)
