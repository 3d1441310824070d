"""Fit/score protocols: honest defaults on pairs with no signal, gains kept with a planted
signal, the shuffled control at chance, chance levels and the provenance record."""

import math

import numpy as np
import pytest

from gapviz.measures import measure_gap
from gapviz.methods import METHODS, make_method
from gapviz.protocols import (PROTOCOLS, Provenance, chance_levels, chance_recall,
                              default_protocol, fit_and_score, protocol_transform, shuffle_pairs)
from gapviz.simulate import simulate_pairs

#: The registry's defaults except where a method's default cannot run on 64-d data or is slow
#: on 2 shared cores (VLAP: fewer epochs; its transductive leak only grows with more).
FAST = {"vlap": {"epochs": 5}, "ot": {"max_iter": 5}}
N_NULL, D_NULL = 500, 64


@pytest.fixture(scope="module")
def null_pairs():
    """Independent random images and texts: nothing to find."""
    rng = np.random.default_rng(11)
    return rng.normal(size=(N_NULL, D_NULL)).astype(np.float32), rng.normal(size=(N_NULL, D_NULL)).astype(np.float32)


@pytest.fixture(scope="module")
def signal_pairs():
    p = simulate_pairs(300, 64, seed=3)
    return p.image_embeddings, p.text_embeddings


def bound(n, k):
    c = chance_recall(n, k)
    return c.level + 4 * c.se


# ---------------------------------------------------------------------------------------------
# chance levels and the shuffled control
# ---------------------------------------------------------------------------------------------
def test_chance_recall_exact_values():
    c = chance_recall(500, 20)
    assert c.level == pytest.approx(20 / 999)
    assert c.se == pytest.approx(math.sqrt(20 / 999 * (1 - 20 / 999) / 500))
    assert chance_recall(500, 20, pool="crossmodal").level == pytest.approx(20 / 500)
    assert chance_recall(5, 20) == (1.0, 0.0)  # K beyond the pool: always found
    levels = chance_levels(100, (5, 10))
    assert levels["R@5"] == levels["R@5_t2i"] == chance_recall(100, 5)
    assert levels["R@10_i2t_crossmodal"].level == pytest.approx(0.1)
    for bad in ({"n_scored": 0, "k": 5}, {"n_scored": 10, "k": 0}):
        with pytest.raises(ValueError):
            chance_recall(**bad)
    with pytest.raises(ValueError, match="pool"):
        chance_recall(10, 5, pool="images")


def test_chance_matches_a_random_ranking():
    """The formula against the measures of random pairs, averaged over seeds."""
    rng = np.random.default_rng(0)
    hits = [measure_gap(rng.normal(size=(200, 16)), rng.normal(size=(200, 16))).metrics["R@20"]
            for _ in range(8)]
    c = chance_recall(200, 20)
    assert abs(np.mean(hits) - c.level) < 4 * c.se / math.sqrt(8)


def test_shuffle_pairs_is_a_seeded_derangement():
    X = np.arange(40, dtype=np.float32).reshape(20, 2)
    Y = -X
    X2, Ys, perm = shuffle_pairs(X, Y, seed=4)
    assert np.array_equal(X2, X) and np.array_equal(Ys, Y[perm])
    assert sorted(perm) == list(range(20)) and np.all(perm != np.arange(20))
    assert np.array_equal(perm, shuffle_pairs(X, Y, seed=4)[2])
    assert not np.array_equal(perm, shuffle_pairs(X, Y, seed=5)[2])


# ---------------------------------------------------------------------------------------------
# honest defaults
# ---------------------------------------------------------------------------------------------
def test_each_method_declares_pairing_and_a_default_protocol():
    reads = {n for n, cls in METHODS.items() if cls.uses_pairing}
    # score corrections normalise by banks of their fit items: on those items each query's own
    # pair is in its bank, so they are held to the same rule
    assert reads == {"procrustes", "vlap", "score_zscore", "csls", "qb_norm", "dbnorm", "nnn"}
    for name, cls in METHODS.items():
        assert cls.default_protocol in PROTOCOLS and default_protocol(name) == cls.default_protocol
        if cls.uses_pairing:
            assert cls.default_protocol != "transductive"
    assert default_protocol("spectral") == "transductive"
    assert default_protocol("ot") == default_protocol("sinkhorn") == "held-out"


@pytest.mark.parametrize("name", list(METHODS))
def test_no_signal_every_method_stays_at_chance_under_its_default(null_pairs, name):
    X, Y = null_pairs
    res = fit_and_score(name, X, Y, params=FAST.get(name))
    assert res.provenance.protocol == METHODS[name].default_protocol
    assert res.provenance.n_scored == N_NULL and res.chance["R@20"] == chance_recall(N_NULL, 20)
    for key in ("R@5", "R@20", "R@20_t2i"):
        k = int(key[2:].split("_")[0])
        assert res.metrics[key] <= bound(N_NULL, k), (name, key, res.metrics[key])


def test_procrustes_on_its_own_fit_pairs_is_refused_then_warned(null_pairs):
    X, Y = null_pairs
    with pytest.raises(ValueError, match="allow_pairing_leak"):
        fit_and_score("procrustes", X, Y, protocol="transductive")
    leaky = fit_and_score("procrustes", X, Y, protocol="transductive", allow_pairing_leak=True)
    # the memorised pairing: far above chance on pairs with nothing to find
    assert leaky.metrics["R@20"] > 10 * chance_recall(N_NULL, 20).level
    assert "reads the pairing" in leaky.provenance.warning
    assert "WARNING" in leaky.provenance.summary()
    honest = fit_and_score("procrustes", X, Y)
    assert honest.provenance.warning is None and honest.metrics["R@20"] <= bound(N_NULL, 20)


def test_pairing_free_method_runs_transductive_without_warning(null_pairs):
    res = fit_and_score("center", *null_pairs, protocol="transductive")
    assert res.provenance.warning is None and res.provenance.n_fit == N_NULL


# ---------------------------------------------------------------------------------------------
# planted signal
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,params", [("procrustes", {}), ("sinkhorn", {}),
                                         ("spectral", {"n_components": 20}),
                                         ("vlap", {"n_anchors": 32, "epochs": 30, "batch_size": 64})])
def test_planted_signal_held_out_gain_remains_and_shuffled_falls_to_chance(signal_pairs, name, params):
    X, Y = signal_pairs
    n = X.shape[0]
    orig = measure_gap(X, Y).metrics
    held = fit_and_score(name, X, Y, protocol="held-out", params=params, folds=3)
    assert held.metrics["R@5"] > orig["R@5"] + 0.1, (held.metrics["R@5"], orig["R@5"])
    assert held.metrics["ITR"] < orig["ITR"]
    null = fit_and_score(name, X, Y, protocol="held-out", params=params, folds=3, shuffled=True)
    assert null.provenance.shuffled and "shuffled" in null.provenance.summary()
    # R@5: a shuffled caption shares its image's cluster 1 time in 20, which lifts R@20 (not
    # R@5) a little above chance for methods that gather clusters (a real effect, see module).
    assert null.metrics["R@5"] <= bound(n, 5) and null.metrics["R@5_t2i"] <= bound(n, 5)
    assert null.metrics["R@20"] < held.metrics["R@20"] / 3


def test_transductive_spectral_with_signal_and_its_shuffled_control(signal_pairs):
    X, Y = signal_pairs
    res = fit_and_score("spectral", X, Y, params={"n_components": 20})
    null = fit_and_score("spectral", X, Y, params={"n_components": 20}, shuffled=True)
    assert res.metrics["R@5"] > 0.2 and null.metrics["R@5"] <= bound(X.shape[0], 5)


# ---------------------------------------------------------------------------------------------
# held-out cross-fitting
# ---------------------------------------------------------------------------------------------
def test_held_out_scores_each_pair_by_a_fit_that_never_saw_it(signal_pairs):
    X, Y = signal_pairs
    n = X.shape[0]
    res = protocol_transform("procrustes", X, Y, folds=4, seed=7)
    prov = res.provenance
    assert (prov.protocol, prov.folds, prov.seed, prov.n_scored, prov.pool_size) == ("held-out", 4, 7, n, 2 * n)
    assert prov.n_fit == n - math.ceil(n / 4) and len(res.fits) == 4
    assert sorted(np.bincount(res.fold_of)) == [75] * 4
    for f in range(4):
        rows = res.fold_of == f
        by_hand = make_method("procrustes").fit(X[~rows], Y[~rows])
        np.testing.assert_allclose(res.image_embeddings[rows], by_hand.transform_images(X[rows]), atol=1e-6)
        np.testing.assert_allclose(res.text_embeddings[rows], by_hand.transform_texts(Y[rows]), atol=1e-6)
    again = protocol_transform("procrustes", X, Y, folds=4, seed=7)
    assert np.array_equal(again.image_embeddings, res.image_embeddings)
    assert not np.array_equal(protocol_transform("procrustes", X, Y, folds=4, seed=8).fold_of, res.fold_of)
    assert res.report is None
    with pytest.raises(ValueError, match="protocol_transform"):
        res.metrics


def test_held_out_aligns_arbitrary_bases_only(signal_pairs):
    X, Y = signal_pairs
    spectral = protocol_transform("spectral", X, Y, protocol="held-out", params={"n_components": 10})
    assert spectral.provenance.aligned and spectral.provenance.alignment_residual < 0.5
    orig = protocol_transform("orig", X, Y, protocol="held-out")
    # Outputs in the input space share one frame by construction: nothing to align or check.
    assert not orig.provenance.aligned and orig.provenance.alignment_residual is None
    sink = protocol_transform("sinkhorn", X, Y)  # stays in the texts' space: never rotated
    assert not sink.provenance.aligned
    # rotating a fold keeps every similarity within it
    f = spectral.fold_of == 1
    fit1 = spectral.fits[1]
    raw = fit1.transform_images(X[f]) @ fit1.transform_texts(Y[f]).T
    np.testing.assert_allclose(spectral.image_embeddings[f] @ spectral.text_embeddings[f].T, raw, atol=1e-4)


def test_held_out_says_the_fit_size_when_a_parameter_does_not_fit():
    p = simulate_pairs(50, 16, seed=1)
    with pytest.raises(ValueError, match="each fit sees 40 of the 50 pairs: n_anchors=45"):
        fit_and_score("vlap", p.image_embeddings, p.text_embeddings, params={"n_anchors": 45})
    with pytest.raises(ValueError, match="folds"):
        fit_and_score("center", p.image_embeddings, p.text_embeddings, protocol="held-out", folds=1)
    with pytest.raises(ValueError, match="unknown protocol"):
        fit_and_score("center", p.image_embeddings, p.text_embeddings, protocol="leave-one-out")


# ---------------------------------------------------------------------------------------------
# fit-on
# ---------------------------------------------------------------------------------------------
def test_fit_on_another_set(signal_pairs):
    X, Y = signal_pairs
    fit = simulate_pairs(200, 64, seed=9)
    res = fit_and_score("procrustes", X, Y, protocol="fit-on", fit_source="other.npz",
                        fit_pairs=(fit.image_embeddings, fit.text_embeddings))
    prov = res.provenance
    assert (prov.protocol, prov.n_fit, prov.n_scored, prov.fit_source, prov.n_overlap, prov.warning) == \
        ("fit-on", 200, 300, "other.npz", 0, None)
    by_hand = make_method("procrustes").fit(fit.image_embeddings, fit.text_embeddings)
    np.testing.assert_allclose(res.image_embeddings, by_hand.transform_images(X), atol=1e-6)
    assert "fit-on other.npz: fitted on 200 pairs, 300 scored" in prov.summary()
    d = prov.to_dict()
    assert d["pool_size"] == 600 and d["fit_source"] == "other.npz"


def test_fit_on_shared_pairs_is_a_leak_for_pairing_methods(signal_pairs):
    X, Y = signal_pairs
    fit = (np.vstack([X[:50], X[:50] * 0 + 1]), np.vstack([Y[:50], Y[:50]]))  # 50 scored pairs inside
    with pytest.raises(ValueError, match="50 of the 300 scored pairs"):
        fit_and_score("procrustes", X, Y, protocol="fit-on", fit_pairs=fit)
    res = fit_and_score("procrustes", X, Y, protocol="fit-on", fit_pairs=fit, allow_pairing_leak=True)
    assert res.provenance.n_overlap == 50 and res.provenance.warning
    ok = fit_and_score("center", X, Y, protocol="fit-on", fit_pairs=fit)
    assert ok.provenance.n_overlap == 50 and ok.provenance.warning is None
    with pytest.raises(ValueError, match="needs fit_pairs"):
        fit_and_score("center", X, Y, protocol="fit-on")
    with pytest.raises(ValueError, match="dimension"):
        fit_and_score("center", X, Y, protocol="fit-on", fit_pairs=(X[:, :8], Y[:, :8]))
    with pytest.raises(ValueError, match="only used by protocol 'fit-on'"):
        fit_and_score("center", X, Y, protocol="held-out", fit_pairs=fit)


def test_provenance_record_has_every_field():
    p = Provenance("held-out", "procrustes", 400, 500, seed=0, folds=5)
    assert set(p.to_dict()) == {"protocol", "method", "n_fit", "n_scored", "seed", "folds", "fit_source",
                                "n_overlap", "shuffled", "aligned", "alignment_residual", "warning",
                                "n_images", "pool_size"}
    assert p.summary().startswith("held-out: 5-fold cross-fit (seed 0)")


def test_a_method_object_is_copied_not_fitted_in_place(signal_pairs):
    m = make_method("center")
    res = fit_and_score(m, *signal_pairs)
    assert not hasattr(m, "fitted_") and res.fits[0] is not m
    with pytest.raises(ValueError, match="params"):
        fit_and_score(m, *signal_pairs, params={"x": 1})


def test_max_fit_caps_each_fit_with_a_seeded_sample(signal_pairs):
    X, Y = signal_pairs
    res = protocol_transform("procrustes", X, Y, folds=3, max_fit=50, seed=2)
    assert res.provenance.n_fit == 50 and res.provenance.n_scored == 300
    assert all(np.abs(f.mean_image_).sum() > 0 for f in res.fits)
    again = protocol_transform("procrustes", X, Y, folds=3, max_fit=50, seed=2)
    assert np.array_equal(again.image_embeddings, res.image_embeddings)
    full = protocol_transform("procrustes", X, Y, folds=3, seed=2)
    assert not np.allclose(full.image_embeddings, res.image_embeddings)
    fit = simulate_pairs(200, 64, seed=9)
    on = protocol_transform("center", X, Y, protocol="fit-on", max_fit=80,
                            fit_pairs=(fit.image_embeddings, fit.text_embeddings))
    assert on.provenance.n_fit == 80 and on.provenance.seed == 0
    with pytest.raises(ValueError, match="max_fit applies"):
        protocol_transform("center", X, Y, protocol="transductive", max_fit=50)


@pytest.mark.parametrize("stop", ["progress", "fold"])
def test_folds_side_by_side_stop_with_their_caller(signal_pairs, monkeypatch, stop):
    """With folds fitted side by side (Sinkhorn on its fit_size subsample, two workers), a
    caller that stops at a fold's end (work ahead giving way: its progress callback raises)
    or a fold that fails leaves the folds not yet started unfitted, rather than waiting for
    every fold."""
    import threading
    import time

    import gapviz.protocols as protocols

    X, Y = signal_pairs
    monkeypatch.setattr(protocols.os, "cpu_count", lambda: 2)
    started, lock = [], threading.Lock()
    real = protocols._fit_or_explain

    def fit(call, *args):
        with lock:
            started.append(1)
            n = len(started)
        time.sleep(0.2)  # each fold takes a while, so the pool holds the others queued
        if stop == "fold" and n == 1:
            raise RuntimeError("fold 1 failed")
        return real(call, *args)

    def progress(fraction, message):
        if stop == "progress" and fraction > 0:
            raise KeyboardInterrupt  # as a caller's stop would (not an Exception)

    monkeypatch.setattr(protocols, "_fit_or_explain", fit)
    with pytest.raises(KeyboardInterrupt if stop == "progress" else RuntimeError):
        protocol_transform("sinkhorn", X, Y, protocol="held-out", folds=8,
                           params={"fit_size": 100}, progress=progress)
    assert 1 <= len(started) <= 4  # two under way when it stopped, maybe two more: not all 8


@pytest.mark.filterwarnings("ignore:Sinkhorn did not converge")  # at reg 0.01, as POT
def test_refit_result_equals_a_fresh_protocol_transform_at_the_new_value(signal_pairs):
    from gapviz.protocols import refit_result

    X, Y = signal_pairs
    first = protocol_transform("sinkhorn", X, Y, params={"reg": 0.05, "fit_size": 100})
    assert first.provenance.n_fit == 100  # each fold fits its seeded subsample, said so
    for reg in (0.1, 0.01):
        moved = refit_result(first, X, Y, reg=reg)
        fresh = protocol_transform("sinkhorn", X, Y, params={"reg": reg, "fit_size": 100})
        # the same fits, the same couplings: the same numbers, bit for bit
        np.testing.assert_array_equal(moved.image_embeddings, fresh.image_embeddings)
        np.testing.assert_array_equal(moved.text_embeddings, fresh.text_embeddings)
        assert moved.provenance == first.provenance
    first = protocol_transform("ot", X, Y, params={"reg_lap": 100.0, "fit_size": 100})
    moved = refit_result(first, X, Y, reg_lap=10.0, reg_src=0.5)
    fresh = protocol_transform("ot", X, Y, params={"reg_lap": 10.0, "reg_src": 0.5,
                                                   "fit_size": 100})
    np.testing.assert_array_equal(moved.image_embeddings, fresh.image_embeddings)
    with pytest.raises(ValueError, match="no refit"):
        refit_result(protocol_transform("center", X, Y, protocol="held-out"), X, Y)
