"""OT methods against POT itself: couplings, marginals, barycentric and out-of-sample maps."""

import numpy as np
import ot
import pytest

from gapviz.methods import make_method
from gapviz.methods.base import l2_normalize
from gapviz.methods.ot import OTGap, SinkhornGap
from methods_helpers import gap_pairs


def unit(A):
    # the methods' own normalisation (float32 rows), in float64 as they hand it to POT
    return l2_normalize(A).astype(np.float64)

POT_OPTIONS = [
    dict(reg_lap=1.0, reg_src=1.0),
    dict(reg_lap=0.5, reg_src=0.3),
    dict(reg_lap=0.5, reg_src=0.0),
    dict(reg_lap=0.5, reg_src=0.5, reg_type="disp"),
    dict(reg_lap=0.2, reg_src=0.7, similarity="gauss"),
    dict(reg_lap=0.3, reg_src=1.0, similarity="knn", similarity_param=5),
]


def _pot_reference(X, Y, **params):
    return ot.da.EMDLaplaceTransport(max_iter=15, tol=1e-9, log=True, **params).fit(
        Xs=unit(X), Xt=unit(Y))


@pytest.mark.parametrize("params", POT_OPTIONS, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()))
def test_coupling_is_pots_emd_laplace_transport(params):
    X, Y = gap_pairs(n=50, d=8)
    m = OTGap(max_iter=15, tol=1e-9, direction="image_to_text", **params).fit(X, Y)
    ref = _pot_reference(X, Y, **params)
    np.testing.assert_allclose(m.coupling_, ref.coupling_, atol=1e-12)
    np.testing.assert_allclose(m.loss_, ref.log_["loss"], rtol=1e-10)
    # the fitted images get POT's barycentric mapping; new images POT's out-of-sample map
    np.testing.assert_allclose(m.transform_images(X), ref.transform(Xs=unit(X)), atol=1e-6)
    Xnew = gap_pairs(n=9, d=8, seed=7)[0]
    np.testing.assert_allclose(m.transform_images(Xnew), ref.transform(Xs=unit(Xnew)), atol=1e-6)


@pytest.mark.parametrize("params", POT_OPTIONS[:3] + [dict(reg_lap=100.0, reg_src=1.0)],
                         ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()))
def test_assignment_step_gives_the_network_simplex_iterates(params):
    # Uniform marginals on as many images as texts, no duplicated point: the exact-OT step's
    # optimum is a unique permutation / N, found alike by both solvers, so every iterate is
    # the same, bit for bit.
    from gapviz.couplings import emd_laplace_factored, exact_ot_step
    from gapviz.methods.ot import laplace_graphs

    X, Y = gap_pairs(n=80, d=12, seed=4)
    xs, xt = unit(X), unit(Y)
    a = ot.unif(80)
    assert exact_ot_step(a, a, xs, xt) == "assignment"
    graphs = laplace_graphs(xs, xt)
    out = {}
    for lp in ("assignment", "emd"):
        out[lp] = emd_laplace_factored(a, a, xs, xt, ot.dist(xs, xt), eta=params["reg_lap"],
                                       alpha=params["reg_src"], numItermax=12, stopThr=1e-12,
                                       graphs=graphs, lp=lp)
    np.testing.assert_array_equal(out["assignment"][0], out["emd"][0])
    assert out["assignment"][1]["loss"] == out["emd"][1]["loss"]


def test_exact_ot_step_keeps_the_network_simplex_where_it_would_choose_between_ties():
    from gapviz.couplings import exact_ot_step

    X, Y = gap_pairs(n=30, d=6)
    xs, xt = unit(X), unit(Y)
    a = ot.unif(30)
    assert exact_ot_step(a, a, xs, xt) == "assignment"
    dup = xs.copy()
    dup[5] = dup[9]  # one image twice (two captions of it)
    assert exact_ot_step(a, a, dup, xt) == "emd"
    assert exact_ot_step(a, a, xs, np.vstack([xt[:29], xt[:1]])) == "emd"
    w = np.full(30, 1.0 / 30)
    w[:2] = [0.5 / 30, 1.5 / 30]
    assert exact_ot_step(w, a, xs, xt) == "emd"
    assert exact_ot_step(ot.unif(20), a, xs[:20], xt) == "emd"


@pytest.mark.parametrize("method", [OTGap(reg_lap=50.0), SinkhornGap(reg=0.1, max_iter=5000)],
                         ids=["ot", "sinkhorn"])
def test_coupling_marginals_are_uniform(method):
    X, Y = gap_pairs(n=60, d=10)
    method.fit(X, Y)
    G = method.coupling_
    assert G.shape == (60, 60) and (G >= 0).all()
    np.testing.assert_allclose(G.sum(1), np.full(60, 1 / 60), rtol=1e-6)
    np.testing.assert_allclose(G.sum(0), np.full(60, 1 / 60), rtol=1e-6)


def test_barycentric_mapping_definition_and_texts_unchanged():
    X, Y = gap_pairs(n=40, d=8)
    m = SinkhornGap(reg=0.1, direction="image_to_text").fit(X, Y)
    G = m.coupling_
    np.testing.assert_allclose(m.transform_images(X), (G / G.sum(1, keepdims=True)) @ unit(Y), atol=1e-6)
    np.testing.assert_allclose(m.transform_texts(Y), unit(Y), atol=1e-6)
    # a subset of the fitted images is out of sample in form, but its nearest fitted image is
    # itself, so the displacement is 0 and it gets its barycentre
    np.testing.assert_allclose(m.transform_images(X[3:8]), m.barycentric_[3:8], atol=1e-6)


@pytest.mark.filterwarnings("ignore:Sinkhorn did not converge")  # the same iterates either way
def test_sinkhorn_is_pots_sinkhorn_transport_with_its_out_of_sample_map():
    X, Y = gap_pairs(n=50, d=8)
    Xnew = gap_pairs(n=11, d=8, seed=5)[0]
    m = SinkhornGap(reg=0.05, direction="image_to_text").fit(X, Y)
    ref = ot.da.SinkhornTransport(reg_e=0.05, method="sinkhorn", out_of_sample_map="ferradans").fit(
        Xs=unit(X), Xt=unit(Y))
    np.testing.assert_allclose(m.coupling_, ref.coupling_, rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(m.transform_images(X), ref.transform(Xs=unit(X)), atol=1e-6)
    np.testing.assert_allclose(m.transform_images(Xnew), ref.transform(Xs=unit(Xnew)), atol=1e-6)


def test_progress_reports_each_conditional_gradient_iteration():
    X, Y = gap_pairs(n=40, d=8)
    calls = []
    OTGap(reg_lap=10.0, max_iter=6, tol=0.0, inner_tol=0.0).fit(
        X, Y, progress=lambda f, msg: calls.append((f, msg)))
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert sum("iteration" in msg for _, msg in calls) == 6


def test_fit_on_some_pairs_transform_others():
    # The paper's protocol: fit on one set of pairs, transform another, never seen in fit.
    X, Y = gap_pairs(n=120, d=10)
    m = OTGap(reg_lap=20.0, direction="image_to_text").fit(X[:60], Y[:60])
    Xt, Yt = m.transform(X[60:], Y[60:])
    assert Xt.shape == (60, 10) and np.isfinite(Xt).all()
    np.testing.assert_allclose(Yt, unit(Y[60:]), atol=1e-6)
    # mapped images moved towards the texts: their mean cosine to the paired text went up
    before = np.mean(np.sum(unit(X[60:]) * unit(Y[60:]), 1))
    after = np.mean(np.sum(unit(Xt) * unit(Y[60:]), 1))
    assert after > before + 0.1


def test_duplicated_points_keep_uniform_marginals():
    X, Y = gap_pairs(n=40, d=8)
    X, Y = np.vstack([X, X[:6]]), np.vstack([Y, Y[:6]])
    for method in (OTGap(reg_lap=10.0), SinkhornGap(reg=0.1, max_iter=5000)):
        method.fit(X, Y)
        np.testing.assert_allclose(method.coupling_.sum(1), np.full(46, 1 / 46), rtol=1e-6)
        np.testing.assert_allclose(method.coupling_.sum(0), np.full(46, 1 / 46), rtol=1e-6)
        assert np.isfinite(method.transform_images(X)).all()


def test_disconnected_similarity_graph():
    # Two far-apart groups: each modality's kNN graph has two components; POT's problem is
    # still well posed and the coupling still matches POT's.
    rng = np.random.default_rng(1)
    X = np.vstack([rng.normal(size=(25, 6)) + 8, rng.normal(size=(25, 6)) - 8]).astype(np.float32)
    Y = X + rng.normal(size=X.shape).astype(np.float32)
    m = OTGap(reg_lap=5.0, max_iter=15, tol=1e-9).fit(X, Y)
    ref = _pot_reference(X, Y, reg_lap=5.0, reg_src=1.0)
    np.testing.assert_allclose(m.coupling_, ref.coupling_, atol=1e-12)
    # mass stays within each group (all but what is left of the uniform starting coupling,
    # which gives 0.25 to the cross-group block)
    assert m.coupling_[:25, 25:].sum() < 1e-6


def test_parameters_are_validated_with_precise_messages():
    X, Y = gap_pairs(n=20, d=6)
    for params, msg in [(dict(reg_lap=-1), "reg_lap must be >= 0"),
                        (dict(reg_src=1.5), r"reg_src must be in \[0, 1\]"),
                        (dict(reg_type="x"), "reg_type must be one of"),
                        (dict(similarity="cos"), "similarity must be one of"),
                        (dict(similarity_param=2.5), "whole number of neighbours"),
                        (dict(max_iter=0), "max_iter must be an integer >= 1")]:
        with pytest.raises(ValueError, match=msg):
            OTGap(**params).fit(X, Y)
    with pytest.raises(ValueError, match="needs more points than neighbours"):
        OTGap(similarity_param=5).fit(X[:5], Y[:5])
    with pytest.raises(ValueError, match="reg must be > 0"):
        SinkhornGap(reg=0).fit(X, Y)


# ---------------------------------------------------------------------------------------------
# live sliders: refit (cached data, warm starts, memo), fit_size subsample, precompute
# ---------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Sinkhorn did not converge")
def test_sinkhorn_warm_refit_equals_cold_fit():
    X, Y = gap_pairs(n=80, d=10)
    warm = SinkhornGap(reg=0.1, max_iter=20000, tol=1e-11).fit(X, Y)
    for reg in (0.2, 0.05, 0.5):
        warm.refit(reg=reg, warm_start=True)
        assert warm.warm_started_
        cold = SinkhornGap(reg=reg, max_iter=20000, tol=1e-11).fit(X, Y)
        np.testing.assert_allclose(warm.coupling_, cold.coupling_, rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(warm.transform_images(X), cold.transform_images(X), atol=1e-5)


def test_sinkhorn_warm_start_saves_iterations():
    X, Y = gap_pairs(n=80, d=10)
    m = SinkhornGap(reg=0.05, max_iter=20000, tol=1e-10).fit(X, Y)
    m.refit(reg=0.06, warm_start=True)
    warm_iters = m.n_iter_
    cold_iters = SinkhornGap(reg=0.06, max_iter=20000, tol=1e-10).fit(X, Y).n_iter_
    assert warm_iters < cold_iters


SINKHORN_CASES = [  # (reg, max_iter, tol): converged, and stopped at max_iter far from it
    (0.5, 1000, 1e-8), (0.05, 1000, 1e-8), (0.01, 1000, 1e-8), (0.005, 300, 1e-12),
]


@pytest.mark.filterwarnings("ignore:Sinkhorn did not converge")
@pytest.mark.parametrize("reg,max_iter,tol", SINKHORN_CASES)
def test_sinkhorn_knopp_is_pots_sinkhorn(reg, max_iter, tol):
    from gapviz.couplings import sinkhorn_knopp

    X, Y = gap_pairs(n=70, d=12, seed=3)
    M = ot.dist(unit(X), unit(Y))
    a, b = ot.unif(70), ot.unif(70)
    G, log = sinkhorn_knopp(a, b, M, reg, numItermax=max_iter, stopThr=tol)
    ref, ref_log = ot.sinkhorn(a, b, M, reg, numItermax=max_iter, stopThr=tol, log=True)
    # the same iterations (summation order aside: round-off), stopped at the same one
    assert log["niter"] == ref_log["niter"]
    np.testing.assert_allclose(log["err"], ref_log["err"], rtol=1e-6, atol=1e-15)
    np.testing.assert_allclose(G, ref, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(log["u"], ref_log["u"], rtol=1e-9)
    # a warm start from given log-scalings, as POT's warmstart
    start = (np.log(ref_log["u"]) + 0.1, np.log(ref_log["v"]) - 0.1)
    G, log = sinkhorn_knopp(a, b, M, reg, numItermax=max_iter, stopThr=tol, warmstart=start)
    ref, ref_log = ot.sinkhorn(a, b, M, reg, numItermax=max_iter, stopThr=tol, log=True,
                               warmstart=start)
    assert log["niter"] == ref_log["niter"]
    np.testing.assert_allclose(G, ref, rtol=1e-9, atol=1e-15)


def test_sinkhorn_knopp_warns_as_pot():
    from gapviz.couplings import sinkhorn_knopp

    X, Y = gap_pairs(n=30, d=6)
    M = ot.dist(unit(X), unit(Y))
    a = ot.unif(30)
    with pytest.warns(UserWarning, match="Sinkhorn did not converge"):
        sinkhorn_knopp(a, a, M, 0.01, numItermax=20, stopThr=1e-15)
    # a kernel that underflows to 0: POT stops at once and keeps the start
    with pytest.warns(UserWarning, match="numerical errors at iteration 0"):
        G, log = sinkhorn_knopp(a, a, M + 1e4, 1.0, numItermax=50)
    with pytest.warns(UserWarning, match="numerical errors at iteration 0"), \
            np.errstate(divide="ignore", invalid="ignore"):
        ref, ref_log = ot.sinkhorn(a, a, M + 1e4, 1.0, numItermax=50, log=True)
    assert log["niter"] == ref_log["niter"] == 0
    np.testing.assert_array_equal(log["u"], ref_log["u"])


def test_ot_cold_refit_is_pots_coupling_and_reuses_the_data_state():
    X, Y = gap_pairs(n=50, d=8)
    m = OTGap(reg_lap=1.0, max_iter=15, tol=1e-9, direction="image_to_text").fit(X, Y)
    graphs = next(v for k, v in m._cache.items() if isinstance(k, tuple) and k[0] == "graphs")
    cost = m._cache["M"]
    for params in (dict(reg_lap=0.5, reg_src=0.3), dict(reg_lap=0.2), dict(reg_src=1.0)):
        m.refit(**params)
        assert not m.warm_started_
        ref = _pot_reference(X, Y, reg_lap=m.reg_lap, reg_src=m.reg_src)
        np.testing.assert_allclose(m.coupling_, ref.coupling_, atol=1e-12)
        np.testing.assert_allclose(m.transform_images(X), ref.transform(Xs=unit(X)), atol=1e-6)
    # the cost matrix and the graphs were computed once, at fit
    assert m._cache["M"] is cost
    assert next(v for k, v in m._cache.items() if isinstance(k, tuple) and k[0] == "graphs") is graphs


def test_ot_warm_refit_reaches_the_cold_optimum():
    # Conditional gradient converges slowly; run long enough, warm and cold starts reach the
    # same objective (to 1e-4), and for reg_lap = 0 (exact OT, one iteration) the same coupling.
    X, Y = gap_pairs(n=40, d=8)
    m = OTGap(reg_lap=50.0, max_iter=400, tol=1e-13, inner_tol=0.0).fit(X, Y)
    m.refit(reg_lap=5.0, warm_start=True)
    assert m.warm_started_
    cold = OTGap(reg_lap=5.0, max_iter=400, tol=1e-13, inner_tol=0.0).fit(X, Y)
    assert m.loss_[-1] == pytest.approx(cold.loss_[-1], rel=1e-4)
    m.refit(reg_lap=0.0, warm_start=True)
    exact = OTGap(reg_lap=0.0).fit(X, Y)
    np.testing.assert_allclose(m.coupling_, exact.coupling_, atol=1e-12)


def test_refit_memo_makes_a_seen_value_free_and_identical():
    X, Y = gap_pairs(n=60, d=8)
    m = SinkhornGap(reg=0.1).fit(X, Y)
    G0 = m.coupling_.copy()
    m.refit(reg=0.3)
    assert m.fit_seconds_ > 0
    m.refit(reg=0.1)
    assert m.fit_seconds_ == 0.0
    np.testing.assert_array_equal(m.coupling_, G0)


def test_precompute_fills_the_memo_without_changing_the_model():
    X, Y = gap_pairs(n=60, d=8)
    m = OTGap(reg_lap=10.0).fit(X, Y)
    G, T = m.coupling_.copy(), m.transform_images(X)
    m.precompute([dict(reg_lap=1.0), dict(reg_lap=30.0, reg_src=0.5)])
    assert m.reg_lap == 10.0 and m.reg_src == 1.0
    np.testing.assert_array_equal(m.coupling_, G)
    np.testing.assert_array_equal(m.transform_images(X), T)
    m.refit(reg_lap=30.0, reg_src=0.5)
    assert m.fit_seconds_ == 0.0  # solved ahead
    cold = OTGap(reg_lap=30.0, reg_src=0.5).fit(X, Y)
    np.testing.assert_allclose(m.coupling_, cold.coupling_, atol=1e-12)


@pytest.mark.filterwarnings("ignore:Sinkhorn did not converge")
def test_refit_refuses_what_needs_a_new_fit():
    from sklearn.exceptions import NotFittedError

    X, Y = gap_pairs(n=40, d=8)
    with pytest.raises(NotFittedError):
        OTGap().refit(reg_lap=1.0)
    m = OTGap(reg_lap=10.0).fit(X, Y)
    with pytest.raises(ValueError, match="refit changes only reg_lap, reg_src; similarity"):
        m.refit(similarity="gauss")
    with pytest.raises(ValueError, match="reg_lap must be >= 0"):
        m.refit(reg_lap=-1.0)
    assert m.reg_lap == 10.0  # a refused value is not kept
    with pytest.raises(ValueError, match="refit changes only reg;"):
        SinkhornGap().fit(X, Y).refit(reg_lap=1.0)
    m.set_params(fit_size=20)
    with pytest.raises(ValueError, match="fit again"):
        m.refit(reg_lap=1.0)


@pytest.mark.filterwarnings("ignore:Sinkhorn did not converge")
@pytest.mark.parametrize("cls", [OTGap, SinkhornGap], ids=["ot", "sinkhorn"])
def test_fit_size_subsample_is_seeded_and_the_rest_is_out_of_sample(cls):
    X, Y = gap_pairs(n=90, d=8)
    a = cls(fit_size=30, random_state=3, direction="image_to_text").fit(X, Y)
    b = cls(fit_size=30, random_state=3, direction="image_to_text").fit(X, Y)
    c = cls(fit_size=30, random_state=4, direction="image_to_text").fit(X, Y)
    np.testing.assert_array_equal(a.fit_index_, b.fit_index_)
    assert a.fit_index_.size == 30 and np.all(np.diff(a.fit_index_) > 0)
    assert not np.array_equal(a.fit_index_, c.fit_index_)
    np.testing.assert_array_equal(a.coupling_, b.coupling_)
    assert a.coupling_.shape == (30, 30)
    # the coupling is the one fitted on those 30 pairs alone
    alone = cls(fit_size=None).fit(X[a.fit_index_], Y[a.fit_index_])
    np.testing.assert_allclose(a.coupling_, alone.coupling_, atol=1e-12)
    # transforming all 90: the fitted rows get their barycentres, the others the
    # out-of-sample map (nearest fitted image plus displacement)
    out = a.transform_images(X)
    np.testing.assert_allclose(out[a.fit_index_], a.barycentric_, atol=1e-6)
    rest = np.setdiff1d(np.arange(90), a.fit_index_)
    xs, xr = unit(X[a.fit_index_]), unit(X[rest])
    nn = np.argmax(xr @ xs.T, axis=1)
    np.testing.assert_allclose(out[rest], a.barycentric_[nn] + xr - xs[nn], atol=1e-5)
    np.testing.assert_allclose(a.transform_texts(Y), unit(Y), atol=1e-6)


@pytest.mark.filterwarnings("ignore:Sinkhorn did not converge")
def test_fit_size_is_validated():
    X, Y = gap_pairs(n=20, d=6)
    for bad in (1, 2.5, True, -3):
        with pytest.raises(ValueError, match="fit_size must be an integer >= 2"):
            OTGap(fit_size=bad).fit(X, Y)
    with pytest.raises(ValueError, match="needs more points than neighbours"):
        OTGap(fit_size=3).fit(X, Y)  # 3 fitted pairs cannot have 3 neighbours each
    assert SinkhornGap(fit_size=None).fit(X, Y).fit_index_.size == 20


@pytest.mark.filterwarnings("ignore:Sinkhorn did not converge")
@pytest.mark.parametrize("name,walk", [
    ("sinkhorn", [{"reg": 0.05}, {"reg": 0.01}, {"reg": 0.02}, {"reg": 0.2}, {"reg": 0.01}]),
    ("ot", [{"reg_lap": 1000.0}, {"reg_lap": 10.0}, {"reg_lap": 0.0}, {"reg_src": 0.7},
            {"reg_lap": 100.0, "reg_src": 1.0}]),
], ids=["sinkhorn", "ot"])
def test_refit_gives_the_fit_coupling_whatever_the_slider_history(name, walk):
    # A slider move (refit, or a value precomputed in the background) gives exactly the
    # coupling a fresh fit with those parameters gives, wherever the slider came from; at
    # reg 0.01-0.02 Sinkhorn stops at max_iter before converging, as does conditional
    # gradient at max_iter = 10, so a warm start would not.
    from gapviz.simulate import simulate_pairs

    p = simulate_pairs(300, 32, seed=2)
    X, Y = p.image_embeddings, p.text_embeddings
    model = make_method(name, fit_size=150).fit(X, Y)
    model.precompute([walk[2]])
    for step in walk:
        model.refit(**step)
        assert not model.warm_started_
        params = {k: getattr(model, k) for k in model._live_params}
        fresh = make_method(name, fit_size=150, **params).fit(X, Y)
        np.testing.assert_array_equal(model.coupling_, fresh.coupling_)
        np.testing.assert_array_equal(model.transform_images(X), fresh.transform_images(X))
    model.refit(**walk[2])
    assert model.fit_seconds_ == 0  # kept, not solved again
