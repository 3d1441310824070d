"""The one table of measure metadata: every measure has an entry, every reader follows it."""

from __future__ import annotations

import math

import pytest

from gapviz import measure_info as cards
from gapviz import measure_info as mi
from gapviz import tables
from gapviz.figures.compare import goodness, measure_help, measure_label
from gapviz.measures import measure_gap
from gapviz.report import html_report
from gapviz.simulate import simulate_pairs


@pytest.fixture(scope="module")
def metric_keys() -> list[str]:
    pairs = simulate_pairs(200, 32)
    return list(measure_gap(pairs.image_embeddings, pairs.text_embeddings, separability=True).metrics)


def test_every_key_measure_gap_returns_has_an_entry(metric_keys):
    assert "separability" in metric_keys and "R@5_t2i_crossmodal" in metric_keys
    missing = [k for k in metric_keys if mi.lookup(k) is None]
    assert missing == []


def test_entries_of_measures_announced_for_next():
    assert mi.lookup("RMG").direction == "lower"
    assert mi.lookup("NDCG@10").direction == "higher"
    assert mi.lookup("hubness").direction == "lower"
    assert mi.lookup("R@1_i2t_crossmodal").direction == "higher"  # cross-modal R@1: a pattern K


def test_table_keys_are_unique_and_exact_keys_come_before_patterns():
    keys = [e.key for e in mi.MEASURES]
    assert len(keys) == len(set(keys))
    assert mi.lookup("R@5").key == "R@5" and mi.lookup("R@5_t2i").key == "R@5_t2i"


def test_a_pattern_entry_is_filled_in_with_its_k():
    rec = mi.lookup("R@100_t2i")
    assert (rec.key, rec.label, rec.card_label) == ("R@100_t2i", "R@100 t→i", "Recall@100 t→i")
    assert "top 100" in rec.help and "{k}" not in rec.help
    assert mi.card_label("R@10") == "Recall@10"
    assert mi.lookup("R@x") is None and mi.lookup("R@5_other") is None
    plain = mi.info("not_a_measure")
    assert (plain.label, plain.help, plain.direction) == ("not_a_measure", "", None)


def test_order_follows_the_table_then_k_then_unknown_keys_alphabetically(metric_keys):
    assert tables.ordered_keys({"A": dict.fromkeys(metric_keys, 1.0)}) == [
        "ITR", "TIR", "IMR", "TMR", "R@5", "R@10", "R@20", "R@5_t2i", "R@10_t2i", "R@20_t2i",
        "R@5_i2t_crossmodal", "R@10_i2t_crossmodal", "R@20_i2t_crossmodal",
        "R@5_t2i_crossmodal", "R@10_t2i_crossmodal", "R@20_t2i_crossmodal",
        "paired_cosine_distance", "paired_l2", "paired_l2_squared", "all_cosine_distance",
        "frechet", "centroid_gap", "image_cone", "text_cone", "separability"]  # N left out
    assert mi.sort_keys(["zeta", "R@20", "alpha", "R@1", "ITR"]) == ["ITR", "R@1", "R@20", "alpha", "zeta"]


# a pair of values per direction, the first one better
BETTER_WORSE = {"lower": (0.5, 2.0), "higher": (2.0, 0.5), "one": (0.5, 3.0)}  # |ln 0.5| < ln 3


def _all_keys(metric_keys: list[str]) -> list[str]:
    return [*metric_keys, "RMG", "NDCG@10", "hubness", "R@1_i2t_crossmodal"]


def test_cards_tables_and_compare_read_one_direction(metric_keys):
    colour = {"lower": "inverse", "higher": "normal", "one": "inverse", None: "off"}
    arrow = {"lower": "↓", "higher": "↑", "one": "→1", None: ""}
    sentence = {"lower": "Lower is better.", "higher": "Higher is better.", "one": "Best at 1"}
    for key in _all_keys(metric_keys):
        d = mi.lookup(key).direction
        assert cards.delta_color(key) == colour[d], key
        assert measure_label(key) == f"{mi.label(key)} {arrow[d]}".strip(), key
        assert cards.help_text(key) == measure_help(key), key
        if d is None:
            assert not any(s in cards.help_text(key) for s in sentence.values()), key
            assert tables.best_per_row({"A": {key: 1.0}, "B": {key: 2.0}}, [key]) == {}
            assert goodness([1.0, 2.0], key) == [None, None]
            continue
        assert sentence[d] in cards.help_text(key), key
        good, bad = BETTER_WORSE[d]
        assert tables.best_per_row({"A": {key: bad}, "B": {key: good}}, [key]) == {key: {"B"}}, key
        assert goodness([bad, good], key) == [0.0, 1.0], key


def test_a_best_at_one_card_colours_by_distance_to_one():
    assert cards.delta_color("ITR", 400.0, 2.0) == "inverse"  # down toward 1: a drop is green
    assert cards.delta_color("ITR", 0.01, 0.5) == "normal"    # up toward 1: a rise is green
    assert cards.delta_color("TIR", 2.0, 0.01) == "normal"    # down past 1 and away: the drop is red
    assert cards.delta_color("ITR", math.inf, 3.0) == "inverse"
    assert cards.delta_color("ITR") == "inverse"               # no values: a ratio above 1 coming down


def test_cell_styles():
    assert [mi.format_value(v) for v in (2474.0, 12.345, 0.4, math.inf, -math.inf, math.nan, None)] == [
        "2,474.0", "12.35", "0.400", "inf", "-inf", "nan", "-"]
    assert mi.format_value(math.inf, "display") == "∞" and mi.format_value(3.5, "display") == "3.500"
    assert [mi.format_value(v, "readme") for v in (415.66, 12.34, 3.456, 0.4321, math.inf)] == [
        "416", "12.3", "3.46", "0.432", "∞"]
    assert tables.format_value is mi.format_value
    with pytest.raises(ValueError, match="cell style"):
        mi.format_value(1.0, "latex")


def test_card_formats_follow_the_number_format_of_the_entry():
    assert mi.format_metric("R@1_t2i_crossmodal", 0.5) == "50.0%"
    assert mi.format_metric("N", 2500.0) == "2,500"
    assert mi.format_metric("NDCG@10", 0.51234) == "0.512"
    assert mi.format_delta("IMR", 1500.0, 20.0) == "-1.5k"
    assert mi.format_delta("R@20_t2i", 0.25, 0.5) == "+25.0 pts"


def test_changes_in_tables_read_in_the_measures_own_unit():
    """A change and its interval in the unit the measure's values read in: a percent measure
    (43.5% -> 47.7%) changes by "+4.2 pts", not "+0.042"; a decimal one keeps three decimals."""
    assert mi.format_change("R@1_i2t_crossmodal", 0.477 - 0.435) == "+4.2 pts"
    assert mi.format_change_interval("R@5", -0.0123, 0.064) == "[-1.2, +6.4] pts"
    assert mi.format_change("NDCG@10", -0.0123) == "-0.012"
    assert mi.format_change_interval("paired_cosine_distance", -0.0123, 0.004) == "[-0.012, +0.004]"
    assert mi.format_change_interval("R@5", -math.inf, 0.1) == "—"
    assert mi.format_delta("R@5", 0.435, 0.477) == mi.format_change("R@5", 0.477 - 0.435)


def test_a_new_entry_reaches_cards_tables_and_compare_without_other_edits(monkeypatch):
    new = mi.MeasureInfo("widgetness@{k}", "Widgets@{k}", "Widgetness@{k}",
                         "share of widgets among the top {k}", "higher", "percent")
    monkeypatch.setattr(mi, "MEASURES", (*mi.MEASURES, new))
    assert cards.card_label("widgetness@3") == "Widgetness@3"
    assert cards.help_text("widgetness@3") == "share of widgets among the top 3. Higher is better."
    assert cards.format_metric("widgetness@3", 0.25) == "25.0%"
    assert cards.delta_color("widgetness@3") == "normal"
    assert measure_label("widgetness@3") == "Widgets@3 ↑"
    columns = {"A": {"aaa": 1.0, "widgetness@3": 0.2, "widgetness@1": 0.1, "ITR": 2.0},
               "B": {"aaa": 2.0, "widgetness@3": 0.4, "widgetness@1": 0.3, "ITR": 9.0}}
    assert tables.ordered_keys(columns) == ["ITR", "widgetness@1", "widgetness@3", "aaa"]
    assert tables.best_per_row(columns, tables.ordered_keys(columns)) == {
        "ITR": {"A"}, "widgetness@1": {"B"}, "widgetness@3": {"B"}}
    assert mi.glossary(["widgetness@3"]) == {
        "widgetness@K": "share of widgets among the top K. Higher is better."}


def test_report_explains_the_measures_it_shows_once_per_entry():
    columns = {"ORIG": {"ITR": 9.0, "R@5": 0.1, "R@10": 0.2}, "X": {"ITR": 2.0, "R@5": 0.3, "R@10": 0.4}}
    page = html_report(title="t", dataset={"source": "demo"}, columns=columns)
    assert page.count("<li><b>R@K</b>") == 1 and "<li><b>ITR</b>" in page
    assert "Best at 1" in page and "RMG" not in page
