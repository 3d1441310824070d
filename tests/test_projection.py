"""Joint 2-D projections of the mixed pool (gapviz.projection)."""

from __future__ import annotations

import numpy as np
import pytest

from gapviz.projection import exact_knn, joint_pca, joint_pool, joint_umap


def _gap(n=120, d=16, shift=3.0, seed=0):
    """Two clouds offset along the first axis: the gap is e_0."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    Y = rng.normal(size=(n, d))
    X[:, 0] += shift
    Y[:, 0] -= shift
    return X, Y


def test_joint_pool_normalises_rows_images_first():
    X, Y = _gap(5, 4)
    Z = joint_pool(3.0 * X, Y)
    assert Z.shape == (10, 4) and Z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(Z[:5], X / np.linalg.norm(X, axis=1, keepdims=True), rtol=1e-5)


def test_pca_first_axis_is_the_gap_and_matches_a_reference_svd():
    X, Y = _gap()
    proj = joint_pca(X, Y)
    assert proj.images.shape == proj.texts.shape == (120, 2) and proj.method == "pca"
    # The modality offset dominates the variance, so PC 1 separates the two clouds.
    assert proj.images[:, 0].mean() * proj.texts[:, 0].mean() < 0
    assert min(abs(proj.images[:, 0].mean()), abs(proj.texts[:, 0].mean())) > 0.5
    ratio = proj.info["explained"]
    assert 1.0 >= ratio[0] >= ratio[1] >= 0 and "PC 1" in proj.axis_titles[0]
    # Same scores as an SVD of the centred pool, up to each axis' sign.
    Z = joint_pool(X, Y).astype(np.float64)
    Zc = Z - Z.mean(0)
    U, s, Vt = np.linalg.svd(Zc, full_matrices=False)
    ref = Zc @ Vt[:2].T
    got = np.vstack([proj.images, proj.texts])
    for j in range(2):
        assert min(np.abs(got[:, j] - ref[:, j]).max(), np.abs(got[:, j] + ref[:, j]).max()) < 1e-4
    np.testing.assert_allclose(ratio, (s[:2] ** 2) / (s ** 2).sum(), rtol=1e-4)


def test_pca_is_deterministic_and_scale_invariant_per_row():
    X, Y = _gap(seed=3)
    a = joint_pca(X, Y)
    b = joint_pca(X * np.arange(1, 121)[:, None], Y * 7.0)  # row scales do not matter
    np.testing.assert_allclose(a.images, b.images, atol=1e-5)
    np.testing.assert_allclose(a.texts, b.texts, atol=1e-5)


def test_pca_accepts_two_dimensional_input():
    X, Y = _gap(10, 2)
    proj = joint_pca(X, Y)
    assert proj.images.shape == (10, 2)


def test_exact_knn_matches_brute_force_and_puts_each_point_first():
    rng = np.random.default_rng(1)
    Z = rng.normal(size=(50, 5)).astype(np.float32)
    idx, dist = exact_knn(Z, 6, block=7)
    D = np.linalg.norm(Z[:, None] - Z[None], axis=2)
    assert (idx[:, 0] == np.arange(50)).all() and np.allclose(dist[:, 0], 0, atol=1e-3)
    np.testing.assert_allclose(dist, np.sort(D, axis=1)[:, :6], atol=1e-4)
    assert (np.diff(dist, axis=1) >= -1e-6).all()


def test_umap_is_deterministic_and_keeps_the_two_modalities_apart():
    X, Y = _gap(60, 12, shift=4.0)
    a = joint_umap(X, Y, n_neighbors=10)
    b = joint_umap(X, Y, n_neighbors=10)
    assert a.images.shape == (60, 2) and a.method == "umap"
    np.testing.assert_array_equal(a.images, b.images)
    # A wide gap stays visible: every image's nearest layout neighbour is an image.
    P = np.vstack([a.images, a.texts])
    d = np.linalg.norm(P[:, None] - P[None], axis=2)
    np.fill_diagonal(d, np.inf)
    nearest = d.argmin(1)
    assert ((nearest < 60) == (np.arange(120) < 60)).mean() > 0.95


def test_projections_reject_bad_input():
    X, Y = _gap(10, 4)
    with pytest.raises(ValueError, match="same shape"):
        joint_pca(X, Y[:, :3])
    with pytest.raises(ValueError, match="at least 2 pairs"):
        joint_pca(X[:1], Y[:1])
    with pytest.raises(ValueError, match="n_neighbors"):
        joint_umap(X, Y, n_neighbors=1)
    with pytest.raises(ValueError, match="min_dist"):
        joint_umap(X, Y, min_dist=2.0)


def test_a_pool_narrower_than_its_dimension_takes_the_gram_route_to_the_same_components():
    """Fewer items than dimensions: the (m x m) Gram route gives the principal components of
    the SVD (up to the fixed sign), and the same explained-variance ratios."""
    from gapviz.projection import _top_components

    Z = np.random.default_rng(0).normal(size=(120, 700)).astype(np.float32)
    scores, ratio = _top_components(Z, 2)
    Zc = (Z - Z.mean(0)).astype(np.float64)
    _, S, Vt = np.linalg.svd(Zc, full_matrices=False)
    np.testing.assert_allclose(np.abs(scores), np.abs(Zc @ Vt[:2].T), atol=1e-4)
    np.testing.assert_allclose(ratio, S[:2] ** 2 / np.sum(S ** 2), rtol=1e-5)
    V_sign = np.sign(Vt[:2][np.arange(2), np.abs(Vt[:2]).argmax(1)])
    np.testing.assert_allclose(scores, Zc @ (Vt[:2].T * V_sign), atol=1e-4)  # signs as svd_flip


def test_only_the_top_eigenpairs_are_computed_and_they_are_the_full_solvers():
    """The PCA's eigen-solve computes the k largest eigenpairs only; they equal those of a
    full ``numpy.linalg.eigh`` (vectors up to sign, which the PCA fixes afterwards)."""
    from gapviz.projection import _top_eigenpairs

    rng = np.random.default_rng(2)
    A = rng.normal(size=(300, 64))
    S = A.T @ A
    w_all, V_all = np.linalg.eigh(S)
    for k in (1, 2, 5):
        w, V = _top_eigenpairs(S, k)
        np.testing.assert_allclose(w, w_all[::-1][:k], rtol=1e-12)
        np.testing.assert_allclose(np.abs(V), np.abs(V_all[:, ::-1][:, :k]), atol=1e-10)
        assert np.all(np.diff(w) <= 0)  # descending
