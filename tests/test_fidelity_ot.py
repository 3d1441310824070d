"""OT and Sinkhorn faithful to POT in every direction and out-of-sample rule, and tuned as the
paper tunes them (grid search) without ever seeing a row outside the fit pairs."""

import argparse
import json

import numpy as np
import ot
import pytest

from gapviz.measures import measure_gap
from gapviz.methods import format_params, make_method
from gapviz.methods.base import l2_normalize
from gapviz.methods.ot import DIRECTIONS, OTGap, SinkhornGap
from methods_helpers import gap_pairs

pytestmark = pytest.mark.filterwarnings("ignore:Sinkhorn did not converge")

# The maps are float32 (every method's output), POT's float64: they agree to float32 round-off
# on rows of unit length; the couplings (float64 both) to round-off.
MAP_ATOL = 1e-6


def unit(A):
    # the methods' own normalisation (float32 rows), in float64 as they hand it to POT
    return l2_normalize(A).astype(np.float64)


def data(n=50, d=8):
    X, Y = gap_pairs(n=n, d=d)
    Xnew, Ynew = gap_pairs(n=13, d=d, seed=7)
    return X, Y, Xnew, Ynew


def pot_laplace(Xs, Xt, **params):
    return ot.da.EMDLaplaceTransport(max_iter=15, tol=1e-9, log=True, **params).fit(Xs=Xs, Xt=Xt)


LAPLACE_OPTIONS = [dict(reg_lap=1.0, reg_src=1.0), dict(reg_lap=0.5, reg_src=0.3),
                   dict(reg_lap=0.5, reg_src=0.5, reg_type="disp")]


def _ids(p):
    return ",".join(f"{k}={v}" for k, v in p.items())


# ---------------------------------------------------------------------------------------------
# directions against POT
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("params", LAPLACE_OPTIONS, ids=_ids)
def test_laplace_image_to_text_is_pots_emd_laplace_transport(params):
    X, Y, Xnew, Ynew = data()
    m = OTGap(max_iter=15, tol=1e-9, direction="image_to_text", **params).fit(X, Y)
    ref = pot_laplace(unit(X), unit(Y), **params)
    np.testing.assert_allclose(m.coupling_, ref.coupling_, atol=1e-12)
    np.testing.assert_allclose(m.barycentric_, ref.transform(Xs=unit(X)), atol=MAP_ATOL)
    np.testing.assert_allclose(m.transform_images(X), ref.transform(Xs=unit(X)), atol=MAP_ATOL)
    np.testing.assert_allclose(m.transform_images(Xnew), ref.transform(Xs=unit(Xnew)), atol=MAP_ATOL)
    # the target stays
    np.testing.assert_allclose(m.transform_texts(Ynew), unit(Ynew), atol=MAP_ATOL)
    assert m.inverse_barycentric_ is None


@pytest.mark.parametrize("params", LAPLACE_OPTIONS, ids=_ids)
def test_laplace_text_to_image_is_pot_with_source_and_target_swapped(params):
    X, Y, Xnew, Ynew = data()
    m = OTGap(max_iter=15, tol=1e-9, direction="text_to_image", **params).fit(X, Y)
    ref = pot_laplace(unit(Y), unit(X), **params)  # texts are POT's source
    np.testing.assert_allclose(m.coupling_, ref.coupling_, atol=1e-12)
    np.testing.assert_allclose(m.loss_, ref.log_["loss"], rtol=1e-10)
    np.testing.assert_allclose(m.barycentric_, ref.transform(Xs=unit(Y)), atol=MAP_ATOL)
    np.testing.assert_allclose(m.transform_texts(Y), ref.transform(Xs=unit(Y)), atol=MAP_ATOL)
    np.testing.assert_allclose(m.transform_texts(Ynew), ref.transform(Xs=unit(Ynew)), atol=MAP_ATOL)
    np.testing.assert_allclose(m.transform_images(X), unit(X), atol=MAP_ATOL)
    np.testing.assert_allclose(m.transform_images(Xnew), unit(Xnew), atol=MAP_ATOL)


@pytest.mark.parametrize("params", LAPLACE_OPTIONS[:2], ids=_ids)
def test_laplace_both_moves_each_side_halfway_along_pots_maps(params):
    X, Y, Xnew, Ynew = data()
    m = OTGap(max_iter=15, tol=1e-9, direction="both", **params).fit(X, Y)
    ref = pot_laplace(unit(X), unit(Y), **params)  # the images-onto-texts coupling
    np.testing.assert_allclose(m.coupling_, ref.coupling_, atol=1e-12)
    G = ref.coupling_
    np.testing.assert_allclose(m.inverse_barycentric_, (G / G.sum(0)).T @ unit(X), atol=MAP_ATOL)
    for A, B in ((X, Y), (Xnew, Ynew)):
        np.testing.assert_allclose(m.transform_images(A), (unit(A) + ref.transform(Xs=unit(A))) / 2,
                                   atol=MAP_ATOL)
        np.testing.assert_allclose(m.transform_texts(B),
                                   (unit(B) + ref.inverse_transform(Xt=unit(B))) / 2, atol=MAP_ATOL)


def test_both_brings_the_two_centroids_together():
    # T moves the images' mean onto the texts' and S the texts' onto the images', so halfway
    # each fitted side's mean is the mean of the two.
    X, Y, _, _ = data(n=60)
    m = SinkhornGap(reg=0.1, direction="both").fit(X, Y)
    Xt, Yt = m.transform(X, Y)
    middle = (unit(X).mean(0) + unit(Y).mean(0)) / 2
    np.testing.assert_allclose(Xt.mean(0), middle, atol=1e-5)
    np.testing.assert_allclose(Yt.mean(0), middle, atol=1e-5)


def pot_sinkhorn(Xs, Xt, reg, rule, method):
    return ot.da.SinkhornTransport(reg_e=reg, method=method, out_of_sample_map=rule,
                                   tol=1e-8).fit(Xs=Xs, Xt=Xt)


@pytest.mark.parametrize("rule", ["ferradans", "continuous"])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_sinkhorn_every_direction_and_out_of_sample_rule_is_pots(direction, rule):
    # POT's continuous map runs the log-domain solver (it switches to it); so does this one
    X, Y, Xnew, Ynew = data()
    method = "sinkhorn_log" if rule == "continuous" else "sinkhorn"
    m = SinkhornGap(reg=0.05, direction=direction, out_of_sample=rule, method=method).fit(X, Y)
    src, tgt = (unit(Y), unit(X)) if direction == "text_to_image" else (unit(X), unit(Y))
    ref = pot_sinkhorn(src, tgt, 0.05, rule, method)
    np.testing.assert_allclose(m.coupling_, ref.coupling_, rtol=1e-8, atol=1e-14)
    for A, B in ((X, Y), (Xnew, Ynew)):
        Xt, Yt = m.transform(A, B)
        if direction == "image_to_text":
            np.testing.assert_allclose(Xt, ref.transform(Xs=unit(A)), atol=MAP_ATOL)
            np.testing.assert_allclose(Yt, unit(B), atol=MAP_ATOL)
        elif direction == "text_to_image":
            np.testing.assert_allclose(Yt, ref.transform(Xs=unit(B)), atol=MAP_ATOL)
            np.testing.assert_allclose(Xt, unit(A), atol=MAP_ATOL)
        else:
            np.testing.assert_allclose(Xt, (unit(A) + ref.transform(Xs=unit(A))) / 2, atol=MAP_ATOL)
            np.testing.assert_allclose(Yt, (unit(B) + ref.inverse_transform(Xt=unit(B))) / 2,
                                       atol=MAP_ATOL)


def test_continuous_map_with_the_plain_solver_is_pots_to_its_tolerance():
    # The plain solver's coupling differs from the log solver's by the stopping tolerance only.
    X, Y, Xnew, _ = data()
    m = SinkhornGap(reg=0.1, direction="image_to_text", out_of_sample="continuous",
                    max_iter=20000, tol=1e-12).fit(X, Y)
    ref = ot.da.SinkhornTransport(reg_e=0.1, out_of_sample_map="continuous", max_iter=20000,
                                  tol=1e-12).fit(Xs=unit(X), Xt=unit(Y))
    np.testing.assert_allclose(m.transform_images(Xnew), ref.transform(Xs=unit(Xnew)), atol=1e-5)


def test_continuous_map_on_the_fitted_rows_is_the_barycentric_map():
    X, Y, _, _ = data()
    m = SinkhornGap(reg=0.05, direction="both", out_of_sample="continuous").fit(X, Y)
    # rows 0..49 given one by one: "out of sample" in form, the continuous formula applies
    for i in (0, 17, 49):
        np.testing.assert_allclose(m._map(l2_normalize(X[i:i + 1]), "source"), m.barycentric_[i:i + 1],
                                   atol=MAP_ATOL)
        np.testing.assert_allclose(m._map(l2_normalize(Y[i:i + 1]), "target"),
                                   m.inverse_barycentric_[i:i + 1], atol=MAP_ATOL)


def test_direction_and_rule_are_named_in_every_description():
    for cls in (OTGap, SinkhornGap):
        text = cls.format_params({})
        assert "direction = both" in text
    assert "out-of-sample = ferradans" in SinkhornGap.format_params({"reg": 0.1})
    assert "direction = text_to_image" in format_params("ot", {"direction": "text_to_image"})
    assert "continuous" in SinkhornGap.summary and "ferradans" in SinkhornGap.summary
    # menus of the Close the gap page, one label per choice
    for cls, name in ((OTGap, "direction"), (SinkhornGap, "direction"), (SinkhornGap, "out_of_sample")):
        info = cls.param_info(name)
        assert info.menu and len(info.labels) == len(info.choices)
    X, Y, _, _ = data(n=30)
    d = OTGap(direction="image_to_text").fit(X, Y).describe()
    assert d["params"]["direction"] == "image_to_text" and d["out_of_sample"] == "ferradans"
    d = SinkhornGap(out_of_sample="continuous").fit(X, Y).describe()
    assert d["params"]["direction"] == "both" and d["params"]["out_of_sample"] == "continuous"
    json.dumps(d)


def test_direction_and_rule_are_validated_and_fixed_at_fit():
    X, Y, _, _ = data(n=30)
    with pytest.raises(ValueError, match="direction must be one of"):
        OTGap(direction="images").fit(X, Y)
    with pytest.raises(ValueError, match="out_of_sample must be one of"):
        SinkhornGap(out_of_sample="nearest").fit(X, Y)
    m = SinkhornGap(direction="image_to_text").fit(X, Y)
    m.set_params(direction="both")
    with pytest.raises(ValueError, match="direction changed since fit"):
        m.refit(reg=0.1)


def test_command_line_offers_direction_rule_and_tuning():
    from gapviz.cli.method_options import add_method_arguments, method_from_args

    p = argparse.ArgumentParser()
    p.add_argument("file")
    add_method_arguments(p)
    m = method_from_args(p.parse_args(["f.npz", "--method", "sinkhorn", "--direction", "image_to_text",
                                       "--out-of-sample", "continuous", "--tune",
                                       "--grid-reg", "0.05,0.1"]))
    assert (m.direction, m.out_of_sample, m.tune, m.grid_reg) == ("image_to_text", "continuous",
                                                                  True, (0.05, 0.1))
    m = method_from_args(p.parse_args(["f.npz", "--method", "ot", "--direction", "text_to_image",
                                       "--tune", "--grid-reg-lap", "0,10", "--grid-reg-src", "1"]))
    assert (m.direction, m.tune, m.grid_reg_lap, m.grid_reg_src) == ("text_to_image", True,
                                                                     (0.0, 10.0), (1.0,))
    with pytest.raises(SystemExit):
        p.parse_args(["f.npz", "--method", "ot", "--direction", "sideways"])


# ---------------------------------------------------------------------------------------------
# tuning inside the fit pairs
# ---------------------------------------------------------------------------------------------
def _inner_score(method, X, Y, train, val, **values):
    """An independent fit at one grid point on the inner-train rows, scored on the
    inner-validation rows by the stated criterion."""
    fit = make_method(method.name, **{**method.get_params(), "tune": False, **values})
    fit.fit(X[train], Y[train])
    m = measure_gap(*fit.transform(X[val], Y[val]), ks=(5,)).metrics
    return (m["R@5"] + m["R@5_t2i"]) / 2


@pytest.mark.parametrize("name,params", [
    ("sinkhorn", dict(grid_reg=(0.02, 0.1, 0.5))),
    ("ot", dict(grid_reg_lap=(0.0, 100.0), grid_reg_src=(0.5, 1.0), fit_size=60)),
], ids=["sinkhorn", "ot"])
def test_tuning_picks_the_inner_validation_best_and_refits_on_all_given_pairs(name, params):
    X, Y = gap_pairs(n=100, d=10, seed=1)
    m = make_method(name, tune=True, **params).fit(X, Y)
    train, val = m.tune_index_
    assert train.size == 80 and val.size == 20
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(100))
    grid = m._grid()
    assert [{k: r[k] for k in grid[0]} for r in m.tune_results_] == grid
    scores = [_inner_score(m, X, Y, train, val, **g) for g in grid]
    assert [r["score"] for r in m.tune_results_] == scores  # bit for bit: refit == fresh fit
    best = grid[int(np.argmax(scores))]  # the first of equal bests
    assert m.tuned_params_ == best
    # then fitted on all the given pairs at the chosen values
    plain = make_method(name, **{**m.get_params(), "tune": False, **best}).fit(X, Y)
    np.testing.assert_array_equal(m.coupling_, plain.coupling_)
    np.testing.assert_array_equal(m.transform_images(X), plain.transform_images(X))
    # recorded for people and files
    d = m.describe()
    json.dumps(d)
    assert d["tuning"]["chosen"] == best and len(d["tuning"]["results"]) == len(grid)
    assert d["tuning"]["inner_train"] == 80 and "R@5" in d["tuning"]["criterion"]
    assert "tuned" in type(m).format_params(m.get_params())


def test_tuning_never_sees_rows_outside_the_fit_pairs():
    # Fit on the first 400 pairs; rows 400.. are planted with perfectly aligned pairs, which
    # would change every score if any of them were read.
    X, Y = gap_pairs(n=600, d=10, seed=2)
    planted_X = X.copy()
    planted_X[400:] = Y[400:]
    a = SinkhornGap(tune=True, grid_reg=(0.02, 0.1, 0.5)).fit(X[:400], Y[:400])
    b = SinkhornGap(tune=True, grid_reg=(0.02, 0.1, 0.5)).fit(planted_X[:400], Y[:400])
    assert a.tune_results_ == b.tune_results_
    assert np.concatenate(a.tune_index_).max() < 400
    np.testing.assert_array_equal(a.coupling_, b.coupling_)


def test_tuning_is_nested_in_each_fold_of_the_held_out_protocol():
    # Each fold's fit tunes on its own training pairs only: planting the pairs a fold scores
    # leaves that fold's tuning unchanged, and changes the others' (which train on them).
    from gapviz.protocols import protocol_transform

    X, Y = gap_pairs(n=150, d=10, seed=3)
    params = dict(tune=True, grid_reg=(0.02, 0.1, 0.5))
    base = protocol_transform("sinkhorn", X, Y, protocol="held-out", folds=3, params=params)
    for f in range(3):
        rows = base.fold_of == f
        Xp = X.copy()
        Xp[rows] = Y[rows]
        planted = protocol_transform("sinkhorn", Xp, Y, protocol="held-out", folds=3, params=params)
        for g in range(3):
            same = planted.fits[g].tune_results_ == base.fits[g].tune_results_
            assert same == (g == f)


def test_tuning_is_deterministic_for_a_seed():
    X, Y = gap_pairs(n=80, d=8, seed=4)
    a = OTGap(tune=True, grid_reg_lap=(0.0, 50.0), grid_reg_src=(1.0,)).fit(X, Y)
    b = OTGap(tune=True, grid_reg_lap=(0.0, 50.0), grid_reg_src=(1.0,)).fit(X, Y)
    c = OTGap(tune=True, grid_reg_lap=(0.0, 50.0), grid_reg_src=(1.0,), random_state=5).fit(X, Y)
    assert a.tune_results_ == b.tune_results_ and a.tuned_params_ == b.tuned_params_
    for x, y in zip(a.tune_index_, b.tune_index_):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.coupling_, b.coupling_)
    assert not np.array_equal(a.tune_index_[1], c.tune_index_[1])


def test_a_tuned_fit_cannot_be_moved_by_a_slider():
    X, Y = gap_pairs(n=60, d=8)
    m = SinkhornGap(tune=True, grid_reg=(0.02, 0.5)).fit(X, Y)
    G = m.coupling_.copy()
    assert SinkhornGap.tuned_names({"tune": True}) == ("reg",)
    assert SinkhornGap.tuned_names({}) == () and OTGap.tuned_names({"tune": True}) == ("reg_lap", "reg_src")
    m.refit(reg=m.reg)  # the value it was given: nothing changes
    np.testing.assert_array_equal(m.coupling_, G)
    with pytest.raises(ValueError, match="grid search.*tune=False"):
        m.refit(reg=0.2)
    m.precompute([{"reg": 0.2}])  # nothing to solve ahead
    np.testing.assert_array_equal(m.coupling_, G)
    assert m.reg == 0.05 and m.tuned_params_["reg"] in (0.02, 0.5)


def test_tuning_parameters_are_validated():
    X, Y = gap_pairs(n=40, d=8)
    with pytest.raises(ValueError, match="at least 10 pairs"):
        SinkhornGap(tune=True).fit(X[:8], Y[:8])
    with pytest.raises(ValueError, match="reg must be > 0.*tuning grid"):
        SinkhornGap(tune=True, grid_reg=(0.1, 0.0)).fit(X, Y)
    with pytest.raises(ValueError, match=r"reg_src must be in \[0, 1\].*tuning grid"):
        OTGap(tune=True, grid_reg_src=(2.0,)).fit(X, Y)
    with pytest.raises(ValueError, match="non-empty sequence"):
        SinkhornGap(tune=True, grid_reg=()).fit(X, Y)
    with pytest.raises(ValueError, match="finite numbers"):
        SinkhornGap(tune=True, grid_reg=(0.1, float("nan"))).fit(X, Y)
    with pytest.raises(ValueError, match="tune must be True or False"):
        SinkhornGap(tune="yes").fit(X, Y)


def test_a_tuned_run_through_the_runner_keeps_the_tuned_values():
    # The runner's fit views transform new rows with the fit as tuned (no slider overrides it).
    from gapviz.runs import RunData, Runner, RunSpec

    X, Y = gap_pairs(n=90, d=8, seed=6)
    Xnew = gap_pairs(n=7, d=8, seed=9)[0]
    data_ = RunData.of_arrays(X, Y)
    spec = RunSpec.make("sinkhorn", {"tune": True, "grid_reg": (0.02, 0.5)}, "held-out", folds=3)
    run = Runner().run(spec, data_)
    for f, view in enumerate(run.fits):
        fit = view._fit
        chosen, G = dict(fit.tuned_params_), fit.coupling_.copy()
        out = view.transform_images(Xnew)  # sets the fit to the run's slider values first
        assert fit.tuned_params_ == chosen
        np.testing.assert_array_equal(fit.coupling_, G)
        train = np.flatnonzero(run.fold_of != f)
        plain = SinkhornGap(**{**fit.get_params(), "tune": False, **chosen}).fit(X[train], Y[train])
        np.testing.assert_array_equal(out, plain.transform_images(Xnew))
