"""Spectral method: equivalence with dense references, Nystrom, slicing, edge cases."""

import os
import warnings

import numpy as np
import pytest
from scipy import sparse
from sklearn.manifold import spectral_embedding

from gapviz.methods import spectral as spectral_mod
from gapviz.methods.spectral import SpectralGap
from methods_helpers import dense_reference, full_graph, gap_pairs, max_angle, unit, well_separated_ks

CONFIGS = [
    dict(),                                             # bipartite, shift, dense: low-rank path
    dict(knn=8),
    dict(affinity="heat", heat_scale=0.2),
    dict(affinity="clip", knn=15),
    dict(graph="joint"),
    dict(graph="joint", knn=6, within_weight=0.5),
    dict(laplacian="unnormalized"),
    dict(laplacian="unnormalized", knn=8),
    dict(graph="joint", laplacian="unnormalized", knn=8),
]


def _check_against_reference(sg, X, Y, k_max):
    W = full_graph(sg, X, Y)
    lam, F, lam_all = dense_reference(W, k_max, sg.laplacian)
    E = sg.embedding_.astype(np.float64)
    np.testing.assert_allclose(sg.eigenvalues_[:k_max], lam, atol=1e-7 * max(1.0, lam_all.max()))
    ks = well_separated_ks(lam_all[1:], [1, 2, 5, 10, k_max - 1])
    assert ks, "test data should have a spectral gap somewhere"
    for k in ks:
        assert max_angle(E[:, :k], F[:, :k]) < 1e-4, (k, sg.get_params())
    return W, ks


@pytest.mark.parametrize("params", CONFIGS, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()) or "default")
def test_eigenvectors_span_the_dense_reference(params):
    X, Y = gap_pairs(n=70, d=10)
    X = X + 0.8  # keeps cosines mostly positive, so 'clip' leaves no item without edges
    Y = Y + 0.8
    k_max = 9 if params == {} else 12  # the low-rank affinity has rank <= d + 1 = 11
    sg = SpectralGap(n_components=5, max_components=k_max, **params).fit(X, Y)
    W, ks = _check_against_reference(sg, X, Y, k_max)
    if sg.laplacian == "normalized":
        # scikit-learn's spectral_embedding returns the same random-walk eigenvectors.
        ref = spectral_embedding(W, n_components=k_max + 1, drop_first=True, random_state=0)
        for k in ks:
            assert max_angle(sg.embedding_[:, :k], ref[:, :k]) < 1e-3


@pytest.mark.parametrize("params", [dict(), dict(knn=10), dict(graph="joint", knn=6),
                                    dict(laplacian="unnormalized", knn=10)],
                         ids=["lowrank", "svds", "eigsh", "eigsh-shift-invert"])
def test_iterative_solvers_match_dense_reference(params, monkeypatch):
    # Force the ARPACK / PROPACK paths, normally used above 1,500 nodes, on a small graph.
    monkeypatch.setattr(spectral_mod, "_DENSE_NODES", 10)
    X, Y = gap_pairs(n=90, d=16, seed=3)
    sg = SpectralGap(n_components=5, max_components=12, **params).fit(X, Y)
    assert sg.solver_ in {"lowrank-svd", "svds", "eigsh"}
    _check_against_reference(sg, X, Y, 12)


def test_low_rank_path_never_builds_the_affinity(monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("the dense shift affinity must not be formed")

    monkeypatch.setattr(SpectralGap, "_graph_matrix", forbidden)
    X, Y = gap_pairs(n=60, d=8)
    sg = SpectralGap(n_components=4, max_components=8).fit(X, Y)
    assert sg.solver_ == "lowrank-svd"


@pytest.mark.parametrize("params", [dict(), dict(affinity="heat"), dict(affinity="clip")])
def test_nystrom_gives_training_points_their_own_embedding(params):
    X, Y = gap_pairs(n=60, d=10)
    X, Y = X + 0.8, Y + 0.8
    sg = SpectralGap(n_components=6, max_components=8, **params)
    Xt, Yt = sg.fit_transform(X, Y)
    np.testing.assert_allclose(sg.transform_images(X), Xt, atol=2e-5)
    np.testing.assert_allclose(sg.transform_texts(Y), Yt, atol=2e-5)


def test_nystrom_identity_holds_for_the_unnormalized_laplacian():
    # f_i = sum_j W_ij f_j / (d_i - lambda): exact in float64 on the training graph. (End to end
    # it is ill-conditioned: small eigenvalues of D - W sit near low degrees, so d_i - lambda
    # can be ~1e-4 d_i and float32 affinities lose digits; see the module docstring.)
    X, Y = gap_pairs(n=60, d=10)
    sg = SpectralGap(n_components=6, max_components=8, laplacian="unnormalized").fit(X, Y)
    W = full_graph(sg, X, Y)
    E = sg.embedding_[:, :6]
    rebuilt = (W @ E) / (W.sum(1)[:, None] - sg.eigenvalues_[:6])
    np.testing.assert_allclose(rebuilt, E, atol=1e-6 * np.abs(E).max())
    Xnew = gap_pairs(n=5, d=10, seed=9)[0]
    assert np.isfinite(sg.transform_images(Xnew)).all()


def test_nystrom_identity_holds_for_knn_graph_rows():
    # With kNN a training point's row also holds the edges of items that chose it; with that
    # row the Nystrom formula gives its embedding back exactly (the eigen-equation).
    X, Y = gap_pairs(n=80, d=10)
    sg = SpectralGap(n_components=6, max_components=8, knn=7).fit(X, Y)
    W = full_graph(sg, X, Y)
    n = X.shape[0]
    E = sg.embedding_.astype(np.float64)
    d = W.sum(1)
    rebuilt = (W @ E[:, :6]) / d[:, None] / (1 - sg.eigenvalues_[:6])
    np.testing.assert_allclose(rebuilt, E[:, :6], atol=1e-4 * np.abs(E[:, :6]).max())
    assert np.count_nonzero(W[:n, n:].sum(0)) == n


def test_nystrom_on_unseen_rows_follows_the_formula():
    X, Y = gap_pairs(n=80, d=10)
    Xnew, Ynew = gap_pairs(n=7, d=10, seed=42)
    for params in (dict(), dict(knn=5), dict(affinity="heat")):
        sg = SpectralGap(n_components=5, max_components=8, **params).fit(X, Y)
        n = X.shape[0]
        E = sg.embedding_.astype(np.float64)
        C = unit(Xnew) @ unit(Y).T
        A = {"shift": (1 + C) / 2, "heat": np.exp((C - 1) / sg.heat_scale)}[sg.affinity]
        if sg.knn:
            keep = np.argsort(-C, axis=1)[:, :sg.knn]
            mask = np.zeros_like(A, bool)
            np.put_along_axis(mask, keep, True, axis=1)
            A = np.where(mask, A, 0)
        expected = (A / A.sum(1, keepdims=True)) @ E[n:, :5] / (1 - sg.eigenvalues_[:5])
        got = sg.transform_images(Xnew)
        assert got.shape == (7, 5) and np.isfinite(got).all()
        np.testing.assert_allclose(got, unit(expected), atol=1e-4)


def test_slider_slices_without_a_new_eigen_solve(monkeypatch):
    X, Y = gap_pairs(n=120, d=24)
    sg = SpectralGap(n_components=10, max_components=20)
    Xt10, _ = sg.fit_transform(X, Y)
    assert sg.n_components_max_ == 20

    def no_solve(*a, **k):
        raise AssertionError("a k change must not re-solve")

    monkeypatch.setattr(spectral_mod, "_lowrank_svd", no_solve)
    monkeypatch.setattr(SpectralGap, "_solve", no_solve)
    for k in (2, 7, 20):
        Xk, Yk = sg.training_embedding(k)
        assert Xk.shape == (120, k)
        np.testing.assert_allclose(Xk, unit(sg.embedding_[:120, :k]), atol=1e-6)
    # set_params + fit_transform on the same pairs reuses the eigenvectors too
    Xt5, Yt5 = sg.set_params(n_components=5).fit_transform(X, Y)
    np.testing.assert_allclose(Xt5, unit(Xt10[:, :5] / np.linalg.norm(Xt10[:, :5], axis=1, keepdims=True)), atol=1e-6)
    assert sg.transform_images(X[:3]).shape == (3, 5)
    with pytest.raises(ValueError, match="only 20 eigenvectors"):
        sg.training_embedding(21)
    # ... but a change of graph or of data does need a new solve
    with pytest.raises(AssertionError, match="re-solve"):
        sg.set_params(knn=5).fit(X, Y)
    with pytest.raises(AssertionError, match="re-solve"):
        SpectralGap(n_components=5, max_components=20).fit(X, Y[::-1].copy())


def test_too_few_pairs_for_k_is_a_clear_error():
    X, Y = gap_pairs(n=30, d=64)
    with pytest.raises(ValueError, match=r"n_components=60 is more than the 29 non-trivial"):
        SpectralGap(n_components=60).fit(X, Y)
    with pytest.raises(ValueError, match=r"rank <= d \+ 1"):
        SpectralGap(n_components=20).fit(*gap_pairs(n=100, d=10))
    # max_components is only capped, never an error
    sg = SpectralGap(n_components=5, max_components=200).fit(X, Y)
    assert sg.n_components_max_ == 29
    with pytest.raises(ValueError, match="knn=31 exceeds"):
        SpectralGap(n_components=5, knn=31).fit(X, Y)


def test_duplicated_points_get_identical_embeddings():
    X, Y = gap_pairs(n=50, d=10)
    X = np.vstack([X, X[:5]])
    Y = np.vstack([Y, Y[:5]])
    for params in (dict(), dict(affinity="heat")):
        sg = SpectralGap(n_components=6, max_components=8, **params)
        Xt, Yt = sg.fit_transform(X, Y)
        assert np.isfinite(Xt).all() and np.isfinite(Yt).all()
        np.testing.assert_allclose(Xt[50:], Xt[:5], atol=1e-5)
        np.testing.assert_allclose(Yt[50:], Yt[:5], atol=1e-5)
    # kNN breaks ties by index, so an item may keep one copy of a duplicate and not the other:
    # duplicates then differ slightly, and remain each other's nearest neighbours.
    Xt, Yt = SpectralGap(n_components=6, max_components=8, knn=6).fit_transform(X, Y)
    S = Xt @ Xt.T
    np.fill_diagonal(S, -np.inf)
    assert S[50:].argmax(1).tolist() == [0, 1, 2, 3, 4]
    assert (Xt[50:] * Xt[:5]).sum(1).min() > 0.9


def test_rank_deficient_data_caps_the_components():
    # 40 pairs that are copies of 4 distinct ones: the affinity has rank 4, so 3 informative
    # eigenvectors beyond the trivial one; asking for more is a clear error, not noise.
    X, Y = gap_pairs(n=4, d=10)
    X, Y = np.tile(X, (10, 1)), np.tile(Y, (10, 1))
    sg = SpectralGap(n_components=2, max_components=10).fit(X, Y)
    assert sg.n_components_max_ == 3
    with pytest.raises(ValueError, match="informative eigenvectors"):
        SpectralGap(n_components=5).fit(X, Y)


def test_disconnected_graph_warns_and_keeps_component_indicators():
    # Two groups of pairs in orthogonal subspaces: under 'clip' no edge joins them.
    rng = np.random.default_rng(0)
    a = np.abs(rng.normal(size=(30, 4))) + 0.5
    b = np.abs(rng.normal(size=(30, 4))) + 0.5
    X = np.zeros((60, 8), np.float32)
    Y = np.zeros((60, 8), np.float32)
    X[:30, :4], X[30:, 4:] = a, b
    Y[:30, :4], Y[30:, 4:] = a + 0.3 * rng.random((30, 4)), b + 0.3 * rng.random((30, 4))
    sg = SpectralGap(n_components=3, max_components=6, affinity="clip")
    with pytest.warns(RuntimeWarning, match="2 connected components"):
        sg.fit(X, Y)
    assert sg.n_connected_components_ == 2
    assert abs(sg.eigenvalues_[0]) < 1e-10  # the component indicator (eigenvalue 0) is kept
    first = sg.embedding_[:, 0]
    groups = np.r_[np.arange(60) < 30, np.arange(60) < 30]
    assert np.all(np.sign(first[groups]) == np.sign(first[groups][0]))
    assert np.all(np.sign(first[~groups]) == -np.sign(first[groups][0]))
    # the span of [constant, embedding] is the reference's eigenspace
    W = full_graph(sg, X, Y)
    lam, F, lam_all = dense_reference(W, 6, "normalized")
    ones = np.ones((120, 1))
    k = well_separated_ks(lam_all[1:], [1, 2, 3, 4, 5])[-1]
    all_ref = np.hstack([ones, F[:, :k]])
    assert max_angle(np.hstack([ones, sg.embedding_[:, :k]]), all_ref) < 1e-4


def test_item_without_edges_is_a_clear_error():
    X, Y = gap_pairs(n=20, d=6)
    X[0] = -np.abs(Y).mean(0) * 10  # negative cosine with every text: no edge under 'clip'
    Y = np.abs(Y)
    with pytest.raises(ValueError, match="have no edge"):
        SpectralGap(n_components=2, affinity="clip").fit(X, np.abs(Y))


def test_bipartite_embedding_has_no_modality_coordinate_joint_one_does():
    # Why the bipartite graph closes the gap: the modality indicator s (+1 images, -1 texts)
    # solves L s = 2 D s, the largest eigenvalue, so every kept eigenvector is D-orthogonal to it.
    X, Y = gap_pairs(n=100, d=16, shift=3.0)
    sg = SpectralGap(n_components=10, max_components=10).fit(X, Y)
    s = np.r_[np.ones(100), -np.ones(100)]
    proj = (sg.degrees_ * s) @ sg.embedding_.astype(np.float64)
    assert np.abs(proj).max() < 1e-5 * np.abs(sg.embedding_).max() * sg.degrees_.sum()
    # With within-modality edges the first eigenvector is (almost) the modality indicator.
    joint = SpectralGap(n_components=10, max_components=10, graph="joint").fit(X, Y)
    assert abs(np.corrcoef(joint.embedding_[:, 0], s)[0, 1]) > 0.95


def test_exact_knn_graph_matches_brute_force():
    X, Y = gap_pairs(n=90, d=12)
    Xn, Yn = unit(X).astype(np.float32), unit(Y).astype(np.float32)
    rows, cols, cos = spectral_mod._bipartite_knn(Xn, Yn, 5, False, np.random.default_rng(0))
    C = Xn.astype(np.float64) @ Yn.T.astype(np.float64)
    row_nn = np.argsort(-C, axis=1)[:, :5]
    col_nn = np.argsort(-C, axis=0)[:5].T
    expected = {(i, j) for i in range(90) for j in row_nn[i]} | {(i, j) for j in range(90) for i in col_nn[j]}
    assert set(zip(rows.tolist(), cols.tolist())) == expected
    np.testing.assert_allclose(cos, C[rows, cols], atol=1e-6)
    S = sparse.csr_matrix((cos, (rows, cols)), shape=(90, 90))
    assert S.nnz == len(expected)


def test_parameters_are_validated_with_precise_messages():
    X, Y = gap_pairs(n=40, d=8)
    for params, msg in [(dict(graph="full"), "graph must be one of"),
                        (dict(affinity="rbf"), "affinity must be one of"),
                        (dict(laplacian="sym"), "laplacian must be one of"),
                        (dict(n_components=0), "n_components must be an integer >= 1"),
                        (dict(knn=0), "knn must be None"),
                        (dict(approximate_knn=True), "approximate_knn=True needs knn"),
                        (dict(heat_scale=0), "heat_scale must be > 0"),
                        (dict(graph="joint", within_weight=0), "within_weight must be > 0")]:
        with pytest.raises(ValueError, match=msg):
            SpectralGap(**{"n_components": 3, **params}).fit(X, Y)


@pytest.mark.skipif(not os.environ.get("GAPVIZ_SLOW_TESTS"),
                    reason="pynndescent compiles for about a minute; set GAPVIZ_SLOW_TESTS=1")
def test_approximate_knn_keeps_most_exact_neighbours():
    X, Y = gap_pairs(n=300, d=16)
    Xn, Yn = unit(X).astype(np.float32), unit(Y).astype(np.float32)
    rng = np.random.default_rng(0)
    exact = spectral_mod._bipartite_knn(Xn, Yn, 8, False, rng)
    approx = spectral_mod._bipartite_knn(Xn, Yn, 8, True, rng)
    e = set(zip(exact[0].tolist(), exact[1].tolist()))
    a = set(zip(approx[0].tolist(), approx[1].tolist()))
    assert len(e & a) / len(e) > 0.9
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Xt, _ = SpectralGap(n_components=5, knn=8, approximate_knn=True).fit_transform(X, Y)
    assert np.isfinite(Xt).all()
