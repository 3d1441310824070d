"""Every method through the shared interface; the baselines pinned to exact values."""

import json
import warnings

import numpy as np
import pytest
from scipy.stats import special_ortho_group
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError

from gapviz.methods import METHODS, GapMethod, make_method, method_params
from gapviz.methods.vlap import _sinkhorn_codes
from methods_helpers import gap_pairs, unit

#: Small-data settings so every method runs in well under a second.
SMALL = {"spectral": dict(n_components=5, max_components=10), "pca": dict(n_components=5),
         "vlap": dict(n_anchors=8, epochs=3, batch_size=32), "ot": dict(reg_lap=10.0, max_iter=5),
         "sinkhorn": dict(reg=0.1, max_iter=5000)}


def small(name, **extra):
    return make_method(name, **{**SMALL.get(name, {}), **extra})


def test_registry_order_and_names():
    assert list(METHODS) == ["orig", "center", "liang_shift", "standardize", "pca", "procrustes",
                             "vlap", "sinkhorn", "ot", "spectral", "score_zscore", "csls",
                             "qb_norm", "dbnorm", "nnn"]
    for name, cls in METHODS.items():
        assert issubclass(cls, GapMethod) and cls.name == name and cls.summary


def test_make_method_errors_list_what_is_valid():
    with pytest.raises(ValueError, match="unknown method 'umap'; choose one of: orig, center"):
        make_method("umap")
    with pytest.raises(ValueError, match=r"does not take reg_lap; its parameters .* n_components=60"):
        make_method("spectral", reg_lap=1.0)
    assert method_params("ot")["reg_lap"] == 100.0
    assert make_method("spectral", n_components=20).n_components == 20


@pytest.mark.parametrize("name", list(METHODS))
def test_fit_transform_and_unseen_rows(name):
    X, Y = gap_pairs(n=60, d=12)
    Xnew, Ynew = gap_pairs(n=9, d=12, seed=11)
    m = small(name)
    with pytest.raises(NotFittedError):
        m.transform_images(X)
    calls = []
    assert m.fit(X, Y, progress=lambda f, msg: calls.append(f)) is m
    assert calls[-1] == 1.0
    Xt, Yt = m.transform(X, Y)
    Xn, Yn = m.transform(Xnew, Ynew)  # out-of-sample path
    k = Xt.shape[1]
    assert Xt.shape == Yt.shape == (60, k) and Xn.shape == Yn.shape == (9, k)
    for A in (Xt, Yt, Xn, Yn):
        assert A.dtype == np.float32 and np.isfinite(A).all()
    assert m.transform_images(Xnew[:1]).shape == (1, k)
    with pytest.raises(ValueError, match="expected rows of dimension 12"):
        m.transform_images(Xnew[:, :5])
    json.dumps(m.describe())
    # deterministic: a second fit gives the same output
    Xt2, _ = small(name).fit_transform(X, Y)
    Xt1, _ = small(name).fit_transform(X, Y)
    np.testing.assert_allclose(Xt1, Xt2, atol=1e-6)


@pytest.mark.parametrize("name,params,msg", [
    ("spectral", dict(n_components=60), "n_components=60 is more than"),
    ("pca", dict(n_components=60), "exceeds min"),
    ("vlap", dict(n_anchors=64), "n_anchors=64 exceeds"),
    ("ot", dict(similarity_param=25), "needs more points than neighbours"),
])
def test_too_few_pairs_for_k_is_a_clear_error(name, params, msg):
    X, Y = gap_pairs(n=20, d=24)
    with pytest.raises(ValueError, match=msg):
        make_method(name, **params).fit(X, Y)


@pytest.mark.parametrize("name", ["orig", "center", "standardize", "procrustes", "sinkhorn"])
def test_methods_without_k_run_on_two_pairs(name):
    X, Y = gap_pairs(n=2, d=6)
    Xt, Yt = make_method(name).fit_transform(X, Y)
    assert Xt.shape[0] == 2 and np.isfinite(Xt).all() and np.isfinite(Yt).all()


@pytest.mark.parametrize("name", list(METHODS))
def test_duplicated_points(name):
    X, Y = gap_pairs(n=40, d=10)
    X, Y = np.vstack([X, X[:5]]), np.vstack([Y, Y[:5]])
    Xt, Yt = small(name).fit_transform(X, Y)
    assert np.isfinite(Xt).all() and np.isfinite(Yt).all()
    # EMD may split a duplicated image's (or caption's) mass differently from its copy's, and
    # OT moves both sides by default (direction "both")
    if name != "ot":
        np.testing.assert_allclose(Xt[40:], Xt[:5], atol=1e-5)
        np.testing.assert_allclose(Yt[40:], Yt[:5], atol=1e-5)


@pytest.mark.parametrize("name", list(METHODS))
def test_two_disconnected_groups(name):
    # Two groups of pairs in orthogonal subspaces (no cross-group similarity at all).
    rng = np.random.default_rng(4)
    X = np.zeros((60, 12), np.float32)
    Y = np.zeros((60, 12), np.float32)
    for g, cols in ((slice(0, 30), slice(0, 6)), (slice(30, 60), slice(6, 12))):
        base = rng.normal(size=(30, 6)) + 2
        X[g, cols] = base + 0.3 * rng.normal(size=(30, 6))
        Y[g, cols] = base + 0.3 * rng.normal(size=(30, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # spectral warns that its graph is disconnected
        Xt, Yt = small(name, **({"affinity": "clip"} if name == "spectral" else {})).fit_transform(X, Y)
    assert np.isfinite(Xt).all() and np.isfinite(Yt).all()


# -- baselines, exact values ------------------------------------------------------------------
def test_orig_is_the_identity():
    X, Y = gap_pairs(n=10, d=4)
    Xt, Yt = make_method("orig").fit_transform(X, Y)
    np.testing.assert_array_equal(Xt, X)
    np.testing.assert_array_equal(Yt, Y)


def test_center_removes_each_modality_mean():
    # Unit images at 0 and 90 degrees (mean (.5, .5)); texts at 180 and 270 (mean (-.5, -.5)).
    X = np.array([[1, 0], [0, 1]], np.float32)
    Y = np.array([[-1, 0], [0, -1]], np.float32)
    Xt, Yt = make_method("center").fit_transform(X, Y)
    s = np.sqrt(0.5)
    np.testing.assert_allclose(Xt, [[s, -s], [-s, s]], atol=1e-6)
    np.testing.assert_allclose(Yt, [[-s, s], [s, -s]], atol=1e-6)
    # unseen rows are centred with the fitted means: (1, .2) -> unit -> minus (.5, .5) -> unit
    p = np.array([[1.0, 0.2]]) / np.hypot(1.0, 0.2)
    expected = (p - 0.5) / np.linalg.norm(p - 0.5)
    np.testing.assert_allclose(make_method("center").fit(X, Y).transform_images(np.array([[1.0, 0.2]])),
                               expected, atol=1e-6)


def test_standardize_is_per_modality_z_scores():
    X, Y = gap_pairs(n=50, d=6)
    m = make_method("standardize").fit(X, Y)
    Xn = unit(X)
    expected = (Xn - Xn.mean(0)) / Xn.std(0)
    np.testing.assert_allclose(m.transform_images(X), unit(expected), atol=1e-5)
    # a constant dimension is only centred (std 0 -> 1)
    X2 = np.hstack([X, np.ones((50, 1), np.float32)])
    Y2 = np.hstack([Y, np.ones((50, 1), np.float32)])
    assert np.isfinite(make_method("standardize").fit_transform(X2, Y2)[0]).all()


@pytest.mark.parametrize("center", [True, False])
def test_procrustes_recovers_a_rotation(center):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 8)) + (1.0 if center else 0.0)
    X = unit(X)
    R = special_ortho_group.rvs(8, random_state=1)
    Y = X @ R  # unit rows, and mean(Y) = mean(X) R: the centred problem is exact too
    m = make_method("procrustes", center=center).fit(X, Y)
    if not center:
        np.testing.assert_allclose(m.rotation_, R, atol=1e-5)
    Xt, Yt = m.transform(X, Y)
    np.testing.assert_allclose(np.sum(Xt * Yt, 1), 1.0, atol=1e-5)  # every pair coincides


@pytest.mark.parametrize("n, d", [(50, 10), (6, 40)], ids=["covariance route", "svd route"])
def test_pca_projects_both_modalities_on_pooled_axes(n, d):
    """As scikit-learn's PCA, on a pool taller than wide (the covariance's eigenpairs) and
    on one wider than tall (a thin SVD)."""
    X, Y = gap_pairs(n=n, d=d)
    m = make_method("pca", n_components=4).fit(X, Y)
    Z = np.vstack([unit(X), unit(Y)])
    ref = PCA(4).fit(Z)
    for a, b in zip(m.components_, ref.components_):
        assert abs(abs(float(a @ b)) - 1) < 1e-5
    np.testing.assert_allclose(np.abs(m.transform_images(X)), np.abs(ref.transform(unit(X))), atol=1e-5)
    np.testing.assert_allclose(m.explained_variance_ratio_, ref.explained_variance_ratio_, atol=1e-6)


def test_vlap_trains_the_layer_towards_the_texts():
    X, Y = gap_pairs(n=200, d=16, shift=2.0)
    m = make_method("vlap", n_anchors=16, epochs=15, batch_size=64, lr=3e-3).fit(X, Y)
    assert m.loss_curve_[-1] < m.loss_curve_[0]
    assert m.weight_.shape == (16, 16) and m.anchors_.shape == (16, 16)
    np.testing.assert_allclose(m.anchor_marginal_.sum(), 1.0)
    before = np.mean(np.sum(unit(X) * unit(Y), 1))
    Xt, Yt = m.transform(X, Y)
    assert np.mean(np.sum(Xt * Yt, 1)) > before + 0.1


def test_sinkhorn_codes_are_balanced_assignments():
    import torch

    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.normal(size=(64, 8)).astype(np.float32) * 5)
    marg = torch.full((8,), 1 / 8)
    q = _sinkhorn_codes(logits, torch.log(marg), 50)
    np.testing.assert_allclose(q.sum(1).numpy(), 1.0, atol=1e-5)
    np.testing.assert_allclose(q.sum(0).numpy(), 64 / 8, rtol=1e-3)


def test_a_methods_parameters_are_read_without_parsing_text(monkeypatch):
    """Every method's parameters come without :func:`ast.parse` (a class without an
    ``__init__`` of its own has none; inspect would parse a builtin's signature from text,
    which on CPython 3.11 can fail while another thread builds an AST: a page script parsed
    by Streamlit as a background job reads a method's parameters)."""
    import ast

    from gapviz.methods import base

    def refuse(*args, **kwargs):
        raise AssertionError("ast.parse called")

    getattr(base._init_params, "cache_clear", lambda: None)()  # read again below
    monkeypatch.setattr(ast, "parse", refuse)
    params = {name: method_params(name) for name in METHODS}
    assert params["spectral"]["n_components"] == 60 and params["center"] == {}
