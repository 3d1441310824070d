"""The Anatomy page through AppTest, on the demo: the new measures before and after a method,
the gap dimensions, the split, clusters raw and after, intervals raw and after on request,
what closing costs and the trade-off across methods (computed once per dataset)."""

from __future__ import annotations

import math
import re

import pytest

from gapviz import closing_costs
from gapviz.measure_info import format_metric


@pytest.fixture(scope="module")
def at(app_session, assert_clean):
    session = app_session("pages/anatomy.py")
    assert_clean(session, "Anatomy")
    return session


def _frame(at, column):
    """The first table with this column (or, for a selectable table, this key)."""
    return next(d.value for d in at.dataframe if d.key == column or column in d.value.columns)


def test_the_anatomy_measures_raw_and_after_the_method(at, card_values):
    cards = card_values(at)
    assert {"RMG", "NDCG@10", "Hubness", "ITR", "Fréchet"} <= set(cards)
    assert any("How obtained" in c.value and "transductive" in c.value for c in at.caption)
    assert any(m.value.startswith("**Raw embeddings → after Spectral, k = ") for m in at.markdown)
    names = [c.key for c in at.get("plotly_chart")]
    assert "anatomy_dims" in names and "anatomy_split" in names
    dims = next(c.value for c in at.caption if "largest gap dimensions" in c.value
                or "dimensions with the largest" in c.value)
    assert dims.startswith("Raw embeddings (2,500 pairs, no method). Left: the 30 of 512 dimensions")
    assert any("removes" in m.value and "of the mean shift" in m.value for m in at.markdown)


def test_gap_dimensions_figure_has_round_rmg_ticks_and_says_how_many_dimensions(at):
    import json

    fig = json.loads(next(c for c in at.get("plotly_chart") if c.key == "anatomy_dims").proto.spec)
    layout = fig["layout"]
    titles = [a["text"] for a in layout["annotations"]]
    assert "Where the centroid gap lives (top 30 of 512 dimensions)" in titles
    assert any(re.fullmatch(r"top 30: \d+%", t) for t in titles)
    rmg_axis = next(ax for name, ax in layout.items()
                    if name.startswith("yaxis") and ax.get("title", {}).get("text") == "RMG")
    for tick in rmg_axis["tickvals"]:
        assert round(tick, 3) == pytest.approx(tick, abs=1e-12)  # 0.47, 0.48 ... not 0.47667


def test_clusters_raw_and_after_the_method_formatted_like_the_cards(at):
    table = _frame(at, "anatomy_clusters")
    assert len(table) == 20
    assert list(table.columns) == ["pairs", "ITR · raw", "ITR · Spectral", "R@5 · raw",
                                   "R@5 · Spectral", "Paired cos. dist. · raw",
                                   "Paired cos. dist. · Spectral", "RMG · raw", "RMG · Spectral"]
    cells = [str(v) for col in table.columns[1:] for v in table[col]]
    assert "inf" not in cells and not any(re.fullmatch(r"\d{3,}\.\d+", c) for c in cells)
    assert all(c == "∞" or re.fullmatch(r"[\d,]+(\.\d+)?%?", c) for c in cells)
    # the method changes the clusters' gaps: after differs from raw
    assert list(table["RMG · raw"]) != list(table["RMG · Spectral"])
    caption = next(c.value for c in at.caption if c.value.startswith("Clusters from"))
    assert "raw embeddings, and after Spectral" in caption and "transductive" in caption


def test_cluster_values_are_the_clusters_measured_raw_and_after(at):
    from gapviz.anatomy import cluster_gaps
    from gapviz.closing_costs import pair_labels

    pairs = at.session_state["workspace"].active.pairs
    raw = cluster_gaps(pairs.image_embeddings, pairs.text_embeddings, labels=pair_labels(pairs))
    table = _frame(at, "anatomy_clusters")
    for row in raw.rows[:3]:
        assert table.loc[row["name"], "ITR · raw"] == format_metric("ITR", row["ITR"])
        assert table.loc[row["name"], "RMG · raw"] == format_metric("RMG", row["RMG"])


def test_what_closing_costs_reads_whole_labels(at):
    costs = _frame(at, "kept")
    kept = list(costs["kept"])
    assert "zero-shot accuracy (20 classes)" in kept
    assert "R@1 image→text" in kept
    caption = next(c.value for c in at.caption if c.value.startswith("Before: the raw embeddings"))
    assert "class prototype: mean text embedding of the class" in caption
    assert "transductive: fitted on the 2,500 scored pairs" in caption


def test_intervals_raw_and_after_on_request(at, assert_clean, card_values):
    assert "anatomy_ci" not in [c.key for c in at.get("plotly_chart")]  # only on request
    at.button(key="anatomy_ci_go").click().run()
    assert_clean(at, "intervals")
    chart = next(c for c in at.get("plotly_chart") if c.key == "anatomy_ci")
    import json

    runs = {t["name"] for t in json.loads(chart.proto.spec)["data"]}
    assert len(runs) == 2 and "Raw" in runs and any(r.startswith("Spectral, k = ") for r in runs)
    compare = _frame(at, "more than resampling noise")
    assert list(compare["measure"])[:2] == ["RMG", "NDCG@10"]
    cards = card_values(at)
    rmg = compare.set_index("measure").loc["RMG"]
    assert rmg["after"] == cards["RMG"]  # the cards' after value, the same pairs
    assert rmg["more than resampling noise"] in ("yes", "no")
    lo, hi = (float(v) for v in re.findall(r"[-+]\d\.\d+", rmg["95% interval of the change"]))
    assert lo <= float(rmg["after − raw"]) <= hi
    # a percent measure's change in percentage points, as its values read (43.5% -> 47.7%)
    r5 = compare.set_index("measure").loc["R@5"]
    raw, after = (float(r5[c].rstrip("%")) for c in ("raw", "after"))
    assert r5["after − raw"].endswith(" pts")  # the shown values are rounded to 0.1 each
    assert abs(float(r5["after − raw"].removesuffix(" pts")) - (after - raw)) <= 0.11
    assert r5["95% interval of the change"].endswith("] pts")
    caption = next(c.value for c in at.caption if "percentile-bootstrap intervals" in c.value)
    assert "over the 2,500 scored pairs, 200 resamples (seed 0)" in caption
    assert "transductive: fitted on the 2,500 scored pairs" in caption
    assert "fit is held fixed" in caption


def test_tradeoff_is_computed_once_whatever_the_method(at, monkeypatch, assert_clean):
    calls = []
    original = closing_costs.tradeoff_point

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(closing_costs, "tradeoff_point", counted)
    at.toggle(key="anatomy_tradeoff").set_value(True).run()
    assert_clean(at, "trade-off")
    assert "anatomy_tradeoff_fig" in [c.key for c in at.get("plotly_chart")]
    runs = _frame(at, "neighbourhoods kept")
    assert "Spectral, k = 60" in list(runs["run"])
    procrustes = runs[runs["run"] == "Procrustes"].iloc[0]
    assert procrustes["protocol"] == "held-out, 5-fold cross-fit (seed 0)"
    assert procrustes["pairs scored"] == 2500 and procrustes["pairs fitted"] == 2000
    rmg_raw = at.session_state["workspace"].active.pairs
    from gapviz.anatomy import relative_modality_gap

    rmg_raw = relative_modality_gap(rmg_raw.image_embeddings, rmg_raw.text_embeddings)
    for closed, after in zip(runs["gap closed"], runs["RMG after"]):  # percent
        assert math.isclose(closed, 100 * (1 - after / rmg_raw), rel_tol=1e-6)
    before = len(calls)
    # each point once (or none: another test of this process may have stored them)
    assert before in (0, len(runs))
    for method in ("center", "spectral"):
        at.selectbox(key="anatomy_method").set_value(method).run()
        assert_clean(at, method)
        assert "anatomy_tradeoff_fig" in [c.key for c in at.get("plotly_chart")]
    assert len(calls) == before  # a method change never recomputes the trade-off


def test_another_method_under_another_protocol(at, assert_clean, card_values):
    at.selectbox(key="anatomy_method").set_value("center").run()
    at.selectbox(key="anatomy_protocol_center").set_value("held-out").run()
    assert_clean(at, "center, held-out")
    assert any("held-out: 5-fold cross-fit" in c.value for c in at.caption)
    table = _frame(at, "anatomy_clusters")
    assert "RMG · Mean-centering" in table.columns
    caption = next(c.value for c in at.caption if c.value.startswith("Clusters from"))
    assert "held-out: 5-fold cross-fit" in caption
    # intervals of a held-out run: on the scored pairs as the cross-fit transformed them
    at.button(key="anatomy_ci_go").click().run()
    assert_clean(at, "intervals, held-out")
    caption = next(c.value for c in at.caption if "percentile-bootstrap intervals" in c.value)
    assert "after = Mean-centering, held-out: 5-fold cross-fit (seed 0)" in caption
    compare = _frame(at, "more than resampling noise").set_index("measure")
    assert compare.loc["RMG", "after"] == card_values(at)["RMG"]
