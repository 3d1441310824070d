"""Each method as its authors define it, against independent float64 references.

* spectral with the paper's graph (edge weight = the cosine itself), dense and kNN-sparsified,
  against ``scipy.linalg.eigh`` of the generalised problem ``(D - W) f = lambda D f``;
* the default spectral embedding is one affine map per modality (fitted without the pairing);
* Liang et al. 2022's shift along the unit centroid-gap direction, against their rule
  (``move_features`` in github.com/Weixin-Liang/Modality-Gap) written out in float64;
* ``center`` and ``vlap`` say what they are.
"""

import argparse

import numpy as np
import pytest
from scipy import linalg

from gapviz.methods import METHODS, make_method, menu_order, method_label
from gapviz.methods.base import l2_normalize
from gapviz.methods.baselines import CenterGap, LiangShiftGap
from gapviz.methods.spectral import SpectralGap
from gapviz.methods.vlap import VLAPGap
from methods_helpers import gap_pairs, unit


def cone_pairs(n=60, d=12, seed=0, common=3.0, gap=1.5, noise=0.5):
    """Pairs in a shared cone (a common offset, as CLIP's): cross-modal cosines mostly > 0,
    every node's total cosine > 0, and a gap (each modality pushed along its own axis)."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, d))
    offset = np.zeros(d)
    offset[2] = common
    gx, gy = np.zeros(d), np.zeros(d)
    gx[0], gy[1] = gap, gap
    X = latent + offset + gx + noise * rng.normal(size=(n, d))
    Y = latent + offset + gy + noise * rng.normal(size=(n, d))
    return X.astype(np.float32), Y.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# independent references
# ---------------------------------------------------------------------------------------------
def knn_cross_block(Xn, Yn, k):
    """The kNN-sparsified cross block: edge (i, j) with weight cos(x_i, y_j) when text j is
    among image i's k most similar texts or image i among text j's k most similar images."""
    C = Xn @ Yn.T
    keep = np.zeros(C.shape, bool)
    rows = np.arange(C.shape[0])[:, None]
    keep[rows, np.argsort(-C, axis=1)[:, :k]] = True
    keep[np.argsort(-C, axis=0)[:k, :], np.arange(C.shape[1])[None, :]] = True
    return np.where(keep, C, 0.0)


def generalized_reference(S):
    """All eigenpairs of ``(D - W) f = lambda D f`` for ``W = [[0, S], [S^T, 0]]``, float64,
    with the trivial pair (eigenvalue 0, constant vector) removed. Vectors have ``F^T D F = I``."""
    n = S.shape[0]
    W = np.block([[np.zeros((n, n)), S], [S.T, np.zeros((n, n))]])
    deg = W.sum(1)
    assert (deg > 0).all()
    lam, F = linalg.eigh(np.diag(deg) - W, np.diag(deg))
    trivial = int(np.argmin(np.abs(lam)))
    assert abs(lam[trivial]) < 1e-10 and np.ptp(F[:, trivial]) < 1e-8 * np.abs(F[:, trivial]).max()
    keep = np.arange(lam.size) != trivial
    return lam[keep], F[:, keep]


def assert_same_eigenvectors(sg, lam_ref, F_ref, k, tol=1e-9):
    """Eigenvalues and random-walk eigenvectors (up to sign) of a fitted SpectralGap.

    ``tol``: 1e-9 where the method's weights are the float64 products of the fitted rows (the
    dense graph), 1e-6 where it stores them in float32 (an explicit kNN graph)."""
    gaps = np.diff(lam_ref[:k + 1])
    assert gaps.min() > 1e-4, "the reference has a (nearly) repeated eigenvalue among the first k"
    np.testing.assert_allclose(sg.eigenvalues_[:k], lam_ref[:k], rtol=0, atol=tol)
    E = sg.embedding_[:, :k]
    signs = np.sign(np.sum(E * F_ref[:, :k], axis=0))
    np.testing.assert_allclose(E, F_ref[:, :k] * signs, rtol=0, atol=10 * tol * np.abs(F_ref).max())
    n = E.shape[0] // 2
    Xt, Yt = sg.training_embedding(k)
    np.testing.assert_allclose(Xt, unit(F_ref[:n, :k] * signs), atol=2e-6)
    np.testing.assert_allclose(Yt, unit(F_ref[n:, :k] * signs), atol=2e-6)


# ---------------------------------------------------------------------------------------------
# spectral: the paper's graph (cosine weights)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,d", [(60, 12), (10, 12)])  # N > d + 1 (Gram factors), N <= d + 1 (span)
def test_cosine_graph_dense_matches_the_generalized_eigenproblem(n, d):
    X, Y = cone_pairs(n=n, d=d)
    k = 5 if n > 10 else 4
    sg = SpectralGap(n_components=k, max_components=k, affinity="cosine").fit(X, Y)
    assert sg.solver_ == "lowrank-svd"
    Xn, Yn = sg.X_fit_.astype(np.float64), sg.Y_fit_.astype(np.float64)
    lam, F = generalized_reference(Xn @ Yn.T)
    assert_same_eigenvectors(sg, lam, F, k)
    np.testing.assert_allclose(sg.degrees_, np.r_[(Xn @ Yn.T).sum(1), (Xn @ Yn.T).sum(0)],
                               rtol=1e-10)
    # dense bipartite graph: the Nystrom extension gives a fitted row back its own embedding
    Xt, Yt = sg.training_embedding()
    np.testing.assert_allclose(sg.transform_images(X), Xt, atol=2e-6)
    np.testing.assert_allclose(sg.transform_texts(Y), Yt, atol=2e-6)


@pytest.mark.parametrize("knn", [3, 8])
def test_cosine_graph_knn_matches_the_generalized_eigenproblem(knn):
    X, Y = cone_pairs(n=80, d=12, seed=1)
    sg = SpectralGap(n_components=6, max_components=6, affinity="cosine", knn=knn).fit(X, Y)
    Xn, Yn = sg.X_fit_.astype(np.float64), sg.Y_fit_.astype(np.float64)
    S = knn_cross_block(Xn, Yn, knn)
    lam, F = generalized_reference(S)
    assert_same_eigenvectors(sg, lam, F, 6, tol=1e-6)
    np.testing.assert_allclose(sg.degrees_, np.r_[S.sum(1), S.sum(0)], rtol=1e-6)
    # a new row links to its own knn most similar training items: the reference's formula
    Xq, _ = cone_pairs(n=7, d=12, seed=9)
    Q = unit(Xq)
    C = Q @ Yn.T
    Wq = np.where(C >= np.sort(C, axis=1)[:, [-knn]], C, 0.0)
    k = 6
    f_txt = sg.embedding_[80:, :k]
    expected = (Wq @ f_txt) / (Wq.sum(1)[:, None] * (1.0 - sg.eigenvalues_[:k])[None, :])
    np.testing.assert_allclose(sg.transform_images(Xq), unit(expected), atol=2e-6)


def test_signed_weights_keep_negative_eigenvalues_and_drop_only_the_trivial_one():
    # Cosines of both signs, every degree > 0: the normalised cross block has a singular value
    # above 1, i.e. a Laplacian eigenvalue below 0 before the trivial 0.
    X, Y = cone_pairs(n=30, d=6, seed=2, common=2.0, gap=0.5)
    Xn, Yn = unit(X), unit(Y)
    assert (Xn @ Yn.T < 0).any()
    for knn in (None, 30):  # the low-rank path and the explicit graph (knn = N: every edge)
        sg = SpectralGap(n_components=4, max_components=4, affinity="cosine", knn=knn).fit(X, Y)
        Xf, Yf = sg.X_fit_.astype(np.float64), sg.Y_fit_.astype(np.float64)
        S = Xf @ Yf.T if knn is None else knn_cross_block(Xf, Yf, knn)
        lam, F = generalized_reference(S)
        assert lam[0] < 0
        assert_same_eigenvectors(sg, lam, F, 4, tol=1e-9 if knn is None else 1e-6)


def test_cosine_graph_with_a_node_of_non_positive_degree_is_a_clear_error():
    X, Y = gap_pairs(n=60, d=12)  # no shared cone: many cross cosines are negative
    Xn, Yn = unit(X), unit(Y)
    C = Xn @ Yn.T
    bad = int((C.sum(1) <= 0).sum() + (C.sum(0) <= 0).sum())
    assert bad > 0
    with pytest.raises(ValueError, match=rf"{bad} of the 120 nodes of the bipartite graph .* total "
                                         r"edge weight <= 0 under affinity='cosine'.*knn=.*"
                                         r"affinity='shift'"):
        SpectralGap(n_components=4, affinity="cosine").fit(X, Y)
    # what the message suggests works: each item keeps its k most similar edges ...
    S = knn_cross_block(unit(SpectralGap._validate_pairs(X, Y)[0]),
                        unit(SpectralGap._validate_pairs(X, Y)[1]), 5)
    assert (S.sum(1) > 0).all() and (S.sum(0) > 0).all()
    Xt, _ = SpectralGap(n_components=4, affinity="cosine", knn=5).fit_transform(X, Y)
    assert np.isfinite(Xt).all()
    # ... or the shift affinity (always > 0)
    assert np.isfinite(SpectralGap(n_components=4).fit_transform(X, Y)[0]).all()


@pytest.mark.parametrize("knn", [None, 5])
def test_new_rows_of_non_positive_total_weight_are_a_clear_error(knn):
    X, Y = cone_pairs(n=60, d=12)
    sg = SpectralGap(n_components=4, affinity="cosine", knn=knn).fit(X, Y)
    away = -unit(Y).mean(0, keepdims=True)  # negative cosine with (nearly) every text
    assert (unit(away) @ unit(Y).T).sum() < 0
    Q = np.vstack([X[:2], away, away]).astype(np.float32)
    with pytest.raises(ValueError, match=r"2 of the 4 new image rows \(e\.g\. rows \[2, 3\]\) have a "
                                         r"total edge weight <= 0 .*Nystrom.*affinity='shift'"):
        sg.transform_images(Q)


def test_cosine_is_offered_on_the_command_line():
    from gapviz.cli.method_options import add_method_arguments, method_from_args

    parser = argparse.ArgumentParser()
    add_method_arguments(parser)
    args = parser.parse_args(["--method", "spectral", "--affinity", "cosine", "--knn", "10"])
    m = method_from_args(args)
    assert (m.affinity, m.knn) == ("cosine", 10)


# ---------------------------------------------------------------------------------------------
# spectral: with the dense graph it is one affine map per modality
# ---------------------------------------------------------------------------------------------
def affine_fit(sg, A, rows, exact_rows=True):
    """Least-squares ``[x_hat, 1] M`` of the eigen-equation's left side ``d_i f(x_i)`` (the
    embedding before the row normalisation removes the positive scale ``d_i``).

    ``x_hat``: the float32 unit rows the method saw (``exact_rows``), or the raw rows
    normalised here in float64 (they differ by float32 round-off)."""
    k = sg.n_components
    x_hat = l2_normalize(A).astype(np.float64) if exact_rows else unit(A)
    An = np.hstack([x_hat, np.ones((A.shape[0], 1))])
    T = sg.degrees_[rows, None] * sg.embedding_[rows, :k]
    M, *_ = np.linalg.lstsq(An, T, rcond=None)
    return M, float(np.linalg.norm(An @ M - T) / np.linalg.norm(T))


@pytest.mark.parametrize("affinity", ["shift", "cosine"])
def test_dense_spectral_is_one_affine_map_per_modality(affinity):
    X, Y = cone_pairs(n=300, d=24, seed=3, common=5.0)
    n = X.shape[0]
    sg = SpectralGap(n_components=10, max_components=10, affinity=affinity).fit(X, Y)
    Xq, Yq = cone_pairs(n=40, d=24, seed=4, common=5.0)
    Xt, Yt = sg.training_embedding()
    for A, rows, out, A_new, new_out in ((X, slice(0, n), Xt, Xq, sg.transform_images(Xq)),
                                         (Y, slice(n, 2 * n), Yt, Yq, sg.transform_texts(Yq))):
        M, residual = affine_fit(sg, A, rows)
        assert residual < 1e-10
        assert affine_fit(sg, A, rows, exact_rows=False)[1] < 1e-6
        if affinity == "cosine":  # weights b * cos, no constant: the map is linear
            assert np.abs(M[-1]).max() < 1e-10 * np.abs(M).max()
        # the same map gives the embedding of the fitted rows and of unseen rows
        apply = lambda B: unit(np.hstack([unit(B), np.ones((B.shape[0], 1))]) @ M)  # noqa: E731
        np.testing.assert_allclose(apply(A), out, atol=1e-6)
        np.testing.assert_allclose(apply(A_new), new_out, atol=1e-6)
    # fitted without the pairing: shuffling which text goes with which image changes nothing
    perm = np.random.default_rng(0).permutation(n)
    sg2 = SpectralGap(n_components=10, max_components=10, affinity=affinity).fit(X, Y[perm])
    np.testing.assert_allclose(np.abs(sg2.transform_images(Xq)), np.abs(sg.transform_images(Xq)),
                               atol=1e-5)


def test_knn_spectral_is_not_one_affine_map():
    X, Y = cone_pairs(n=300, d=24, seed=3)
    sg = SpectralGap(n_components=10, max_components=10, knn=10).fit(X, Y)
    _, residual = affine_fit(sg, X, slice(0, 300))
    assert residual > 1e-3


# ---------------------------------------------------------------------------------------------
# Liang et al. 2022's shift
# ---------------------------------------------------------------------------------------------
def liang_reference(X_fit, Y_fit, X, Y, lam):
    """``move_features`` of Liang et al. (train_clip.py) in float64: u from the L2-normalised
    fitted rows' means, image - lam/2 u, text + lam/2 u, renormalise."""
    gap = unit(X_fit).mean(0) - unit(Y_fit).mean(0)
    u = gap / np.linalg.norm(gap)
    return unit(unit(X) - 0.5 * lam * u), unit(unit(Y) + 0.5 * lam * u)


@pytest.mark.parametrize("lam", [0.0, 0.25, 0.82, 1.7, -0.5, -5.0, 4.75])
def test_liang_shift_matches_their_rule(lam):
    X, Y = gap_pairs(n=80, d=12)
    Xq, Yq = gap_pairs(n=9, d=12, seed=11)
    m = make_method("liang_shift", lam=lam).fit(X, Y)
    for A, B in ((X, Y), (Xq, Yq)):  # fitted rows and unseen ones (same u, fitted once)
        Xr, Yr = liang_reference(X, Y, A, B, lam)
        np.testing.assert_allclose(m.transform_images(A), Xr, atol=1e-6)
        np.testing.assert_allclose(m.transform_texts(B), Yr, atol=1e-6)
    assert m.transform_images(X).dtype == np.float32
    gap = unit(X).mean(0) - unit(Y).mean(0)
    np.testing.assert_allclose(m.gap_norm_, np.linalg.norm(gap), rtol=1e-6)
    np.testing.assert_allclose(m.gap_direction_, gap / np.linalg.norm(gap), atol=1e-6)


def test_liang_shift_zero_is_the_raw_embeddings_and_the_sign_closes_the_gap():
    X, Y = gap_pairs(n=200, d=16)
    raw = np.linalg.norm(unit(X).mean(0) - unit(Y).mean(0))

    def gap_after(lam):
        Xt, Yt = make_method("liang_shift", lam=lam).fit_transform(X, Y)
        return np.linalg.norm(unit(Xt).mean(0) - unit(Yt).mean(0))

    Xt, Yt = make_method("liang_shift", lam=0.0).fit_transform(X, Y)
    np.testing.assert_allclose(Xt, unit(X), atol=1e-7)
    np.testing.assert_allclose(Yt, unit(Y), atol=1e-7)
    m = make_method("liang_shift").fit(X, Y)
    assert m.lam == 0.82
    assert gap_after(m.gap_norm_) < 0.25 * raw       # lambda = the gap: centroids (nearly) meet
    assert gap_after(0.5 * m.gap_norm_) < raw        # positive: towards each other
    assert gap_after(-0.5) > raw                     # negative: apart


def test_liang_shift_reads_only_the_two_centroids():
    X, Y = gap_pairs(n=80, d=12)
    perm = np.random.default_rng(1).permutation(80)
    a = make_method("liang_shift", lam=0.6).fit(X, Y)
    b = make_method("liang_shift", lam=0.6).fit(X, Y[perm])
    np.testing.assert_allclose(a.transform_texts(Y), b.transform_texts(Y), atol=1e-7)
    cls = METHODS["liang_shift"]
    assert cls is LiangShiftGap and not cls.uses_pairing
    assert cls.default_protocol == CenterGap.default_protocol == "transductive"


def test_liang_shift_is_registered_next_to_centering_with_its_slider_and_flag():
    from gapviz.cli.method_options import add_method_arguments, method_from_args

    assert method_label("liang_shift") == "Liang shift"
    order = menu_order()
    assert order.index("liang_shift") == order.index("center") + 1
    info = LiangShiftGap.param_info("lam")
    lo, hi = LiangShiftGap.slider_range("lam", 100, 16)
    assert lo < 0 < 0.82 < hi and info.slider.step
    assert round((0.82 - lo) / info.slider.step, 9) % 1 == 0   # the default is a slider stop
    parser = argparse.ArgumentParser()
    add_method_arguments(parser)
    m = method_from_args(parser.parse_args(["--method", "liang_shift", "--lambda", "0.5"]))
    assert isinstance(m, LiangShiftGap) and m.lam == 0.5


def test_liang_shift_errors():
    X, Y = gap_pairs(n=20, d=6)
    with pytest.raises(ValueError, match="lam must be a finite number"):
        make_method("liang_shift", lam=float("nan")).fit(X, Y)
    with pytest.raises(ValueError, match="centroids coincide"):
        make_method("liang_shift").fit(X, X)


# ---------------------------------------------------------------------------------------------
# what center and vlap say they are
# ---------------------------------------------------------------------------------------------
def test_center_is_not_credited_to_liang_and_vlap_names_its_anchors():
    assert "Liang" not in CenterGap.summary and "I0T" in CenterGap.summary
    assert "Liang" not in CenterGap.__doc__.split("\n")[0]
    assert "k-means" in VLAPGap.summary and "LLM" in VLAPGap.summary
    doc = " ".join(VLAPGap.__doc__.split())
    assert "k-means centroids of the fitted texts" in doc and "LLM's word embeddings" in doc


def test_center_differs_from_liang_by_the_shared_mean():
    # With lambda = the gap, Liang's shift moves both centroids to the shared mean; centering
    # moves them to 0. The two agree exactly when the shared mean is 0.
    X, Y = gap_pairs(n=80, d=12)
    liang = make_method("liang_shift")
    liang.set_params(lam=liang.fit(X, Y).gap_norm_)
    Xl, _ = liang.fit_transform(X, Y)
    Xc, _ = make_method("center").fit_transform(X, Y)
    assert np.abs(Xl - Xc).max() > 1e-2
    shared = (unit(X).mean(0) + unit(Y).mean(0)) / 2
    np.testing.assert_allclose(Xl, unit(unit(X) - unit(X).mean(0) + shared), atol=1e-6)
