"""gapviz.compare: protocols and provenance per row, and a method that cannot run does not
take the others down."""

import math

import numpy as np
import pytest

from gapviz.compare import COMPARE_KEYS, compare, failed_rows, rows_to_columns
from gapviz.measures import normalize_rows
from gapviz.protocols import fit_and_score
from gapviz.simulate import simulate_pairs

METHODS = ["orig", "center", "procrustes", "sinkhorn", "spectral"]


#: Spectral told k = 60 on d = 32, more than the d + 1 eigenvectors its graph has.
TOO_MANY = {"spectral": {"n_components": 60}}


@pytest.fixture(scope="module")
def pairs32():
    """d = 32: spectral's default k = 60 exceeds the d + 1 eigenvectors the graph has."""
    return simulate_pairs(120, 32, seed=1)


@pytest.fixture(scope="module")
def rows(pairs32):
    return compare({"a": pairs32}, METHODS, params=TOO_MANY)


def test_keeps_going_when_one_method_cannot_run(rows):
    assert [r.method for r in rows] == METHODS
    bad = failed_rows(rows)
    assert [r.method for r in bad] == ["spectral"]
    assert "n_components=60" in bad[0].error and bad[0].metrics == {} and not bad[0].ok
    assert bad[0].params["n_components"] == 60 and bad[0].protocol == "transductive"
    assert all(r.ok and set(COMPARE_KEYS) <= set(r.metrics) for r in rows if r.method != "spectral")
    assert list(rows_to_columns(rows)) == METHODS[:-1]
    with pytest.raises(ValueError, match="n_components"):
        compare({"a": simulate_pairs(120, 32, seed=1)}, ["spectral"], params=TOO_MANY,
                keep_going=False)


def test_a_size_left_at_its_default_is_lowered_to_the_fit_and_says_so(pairs32):
    """Defaults too big for the pairs each fit sees are lowered (a chosen value never is):
    spectral's k to d = 32 (transductive), VLAP's anchors to the 96 pairs
    of a 5-fold fit on 120."""
    from gapviz.methods import method_params

    rows = compare({"a": pairs32}, ["spectral", "vlap", "center"])
    spectral, vlap, center = rows
    assert all(r.ok for r in rows)
    assert method_params("spectral")["n_components"] == 60
    assert spectral.params["n_components"] == 32
    assert spectral.notes == ("n_components lowered from its default 60 to 32: each fit sees "
                              "120 pairs of dimension 32",)
    assert vlap.params["n_anchors"] == 96 == vlap.provenance["n_fit"]
    assert "n_anchors lowered from its default 256 to 96" in vlap.notes[0]
    assert center.notes == ()
    # the same measures as a fit told k = 32
    told = compare({"a": pairs32}, ["spectral"], params={"spectral": {"n_components": 32}})[0]
    assert told.metrics == spectral.metrics and told.notes == ()


def test_each_row_states_its_protocol_and_provenance(rows):
    expected = {"orig": "transductive", "center": "transductive", "procrustes": "held-out",
                "sinkhorn": "held-out"}
    for r in rows:
        if not r.ok:
            continue
        assert r.protocol == expected[r.method] == r.provenance["protocol"]
        assert r.provenance["n_scored"] == 120 and r.provenance["pool_size"] == 240
        assert r.provenance["n_fit"] == (96 if r.protocol == "held-out" else 120)
        assert r.warning is None


def test_row_measures_are_those_of_fit_and_score(rows, pairs32):
    row = next(r for r in rows if r.method == "procrustes")
    X, Y = normalize_rows(pairs32.image_embeddings), normalize_rows(pairs32.text_embeddings)
    direct = fit_and_score("procrustes", X, Y)
    assert row.metrics == direct.metrics and row.provenance == direct.provenance.to_dict()


def test_one_protocol_for_all_refuses_the_leak_per_row(pairs32):
    rows = compare({"a": pairs32}, ["center", "procrustes"], protocol="transductive")
    assert rows[0].ok and rows[0].protocol == "transductive"
    assert not rows[1].ok and "allow_pairing_leak" in rows[1].error
    leaky = compare({"a": pairs32}, ["procrustes"], protocol="transductive", allow_pairing_leak=True)[0]
    assert leaky.ok and leaky.protocol == "transductive" and "reads the pairing" in leaky.warning


def test_per_method_protocols_seed_folds_and_shuffled_control(pairs32):
    rows = compare({"a": pairs32}, ["center", "procrustes"], protocol={"center": "held-out"},
                   folds=3, seed=5, shuffled=True)
    assert [r.protocol for r in rows] == ["held-out", "held-out"]
    assert all(r.provenance["folds"] == 3 and r.provenance["seed"] == 5 and r.provenance["shuffled"]
               for r in rows)
    with pytest.raises(ValueError, match="unknown protocol"):
        compare({"a": pairs32}, ["center"], protocol="split")
    with pytest.raises(ValueError, match="unknown method"):
        compare({"a": pairs32}, ["center", "nope"])


def test_fit_on_rows_record_the_source(pairs32):
    fit = simulate_pairs(80, 32, seed=9)
    rows = compare({"a": pairs32}, ["center", "procrustes"], protocol="fit-on", fit_on=fit,
                   fit_source="fit.npz")
    for r in rows:
        assert r.ok and r.protocol == "fit-on"
        assert (r.provenance["fit_source"], r.provenance["n_fit"], r.provenance["n_scored"]) == ("fit.npz", 80, 120)
    missing = compare({"a": pairs32}, ["center"], protocol="fit-on")[0]
    assert not missing.ok and "fit pairs" in missing.error


def test_models_share_pairs_and_rows_are_labelled():
    a, b = simulate_pairs(60, 16, seed=2), simulate_pairs(60, 16, profile="siglip", seed=2)
    rows = compare({"clip": a, "siglip": b}, ["orig", "procrustes"])
    assert [r.label for r in rows] == ["clip / orig", "clip / procrustes", "siglip / orig",
                                       "siglip / procrustes"]
    assert np.isfinite(rows[1].metrics["R@5"])


def test_max_fit_applies_to_held_out_rows_only(pairs32):
    rows = compare({"a": pairs32}, ["center", "procrustes"], max_fit=40)
    assert [r.provenance["n_fit"] for r in rows] == [120, 40]


def test_progress_moves_forward_through_each_rows_fits(pairs32):
    seen = []
    compare({"a": pairs32}, ["center", "procrustes"], progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("procrustes: fold 3/5" in m for _, m in seen)


# ---------------------------------------------------------------------------------------------
# how a comparison reads: cells, parameters, pairs fitted, run names
# ---------------------------------------------------------------------------------------------
def test_magnitude_columns_keep_three_significant_figures_and_the_others_three_decimals():
    from gapviz.compare import format_cell

    # the ITR column the audit saw: 356.14, 0.767, 15.03, 2,499.0 -> one rule
    itr = [356.142857, 0.766784, 15.025641, 2499.0, 1.653928, math.inf]
    assert [format_cell("ITR", v) for v in itr] == ["356", "0.767", "15.0", "2,499", "1.65", "∞"]
    assert [format_cell("TMR", v) for v in (1076.5352, 9.9996, 99.96, 0.0512345)] == [
        "1,077", "10.0", "100", "0.0512"]
    assert [format_cell("R@5", v) for v in (0.0016, 0.5028, 0.0)] == ["0.002", "0.503", "0.000"]
    assert [format_cell("frechet", v) for v in (3.236, 0.30001)] == ["3.236", "0.300"]
    assert (format_cell("ITR", None), format_cell("ITR", math.nan)) == ("—", "nan")


def test_pairs_fitted_say_folds_and_subsamples():
    from gapviz.compare import fitted_text

    held_out = {"protocol": "held-out", "folds": 5, "n_scored": 2500}
    assert fitted_text({**held_out, "n_fit": 1000}) == "5 folds × 1,000 of 2,000"
    assert fitted_text({**held_out, "n_fit": 2000}) == "5 folds × 2,000"
    assert fitted_text({**held_out, "n_fit": 2001, "n_scored": 2502}) == "5 folds × 2,001–2,002"
    assert fitted_text({"protocol": "transductive", "n_fit": 1000, "n_scored": 2500}) == "1,000 of 2,500"
    assert fitted_text({"protocol": "transductive", "n_fit": 2500, "n_scored": 2500}) == "2,500"
    assert fitted_text({"protocol": "fit-on", "n_fit": 5000, "n_scored": 2500}) == "5,000"
    assert fitted_text({}) == "—"


def test_every_method_with_parameters_shows_them():
    from gapviz.compare import params_text, shown_params
    from gapviz.methods import METHODS, method_class, method_params

    for name in METHODS:
        text = params_text(name, method_params(name))
        assert bool(text) == bool(method_class(name).params_info), name
    assert params_text("sinkhorn", {"reg": 0.1}) == ("reg = 0.1, direction = both, "
                                                     "out-of-sample = ferradans, fit size = 1000")
    assert params_text("pca", {"n_components": 20}) == "k = 20"
    assert params_text("procrustes", {}) == "center = True"
    # a solver setting is shown once it is changed from its default
    assert shown_params("sinkhorn", {"max_iter": 50}) == {
        "reg": 0.05, "direction": "both", "out_of_sample": "ferradans", "max_iter": 50,
        "fit_size": 1000}
    assert params_text("orig", {}) == "" and params_text("center", {}) == ""


def test_the_table_and_run_names_say_protocol_folds_and_shuffled(pairs32):
    from gapviz.compare import comparison_table, run_title

    rows = compare({"a": pairs32}, ["orig", "sinkhorn", "center"], shuffled=True,
                   params={"sinkhorn": {"fit_size": 50}})
    table = comparison_table(rows, ["ITR", "R@5"])
    assert table.loc["sinkhorn", "fitted"] == "5 folds × 50 of 96"
    assert table.loc["sinkhorn", "parameters"] == ("reg = 0.05, direction = both, "
                                                   "out-of-sample = ferradans, fit size = 50")
    assert table.loc["sinkhorn", "protocol"] == "held-out, shuffled"
    assert table.loc["orig", "fitted"] == "—" and table.loc["orig", "protocol"] == "—, shuffled"
    assert [run_title(r, str.upper) for r in rows] == [
        "ORIG · raw, shuffled", "SINKHORN · held-out, shuffled", "CENTER · transductive, shuffled"]
