"""Measures pinned to hand-worked values, invariants, and a brute-force reference."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import linalg

from gapviz import measures
from gapviz.measures import (distance_measures, frechet_distance, linear_separability,
                             measure_gap, paired_significance)
from reference import (assert_report_is_float64, near_tie_pairs,
                       planted_ties)


def on_circle(degrees):
    a = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.c_[np.cos(a), np.sin(a)].astype(np.float32)


# Images at 0, 10, 25 degrees; texts at 80, 100, 130 degrees (pair i = image i, text i).
# Worked by hand from the cosines of the angle differences:
#   image 0: img1 .985, img2 .906 | txt0 .174, txt1 -.174, txt2 -.643 -> best text rank 3, partner rank 3 (cross 1)
#   image 1: img0 .985, img2 .966 | txt0 .342, txt1 .000, txt2 -.500 -> best text rank 3, partner rank 4 (cross 2)
#   image 2: img1 .966, img0 .906 | txt0 .574, txt1 .259, txt2 -.259 -> best text rank 3, partner rank 5 (cross 3)
#   text 0:  txt1 .940, txt2 .643 | img2 .574, img1 .342, img0 .174 -> best image rank 3, partner rank 5 (cross 3)
#   text 1:  txt0 .940, txt2 .866 | img2 .259, img1 .000, img0 -.174 -> best image rank 3, partner rank 4 (cross 2)
#   text 2:  txt1 .866, txt0 .643 | img2 -.259, img1 -.500, img0 -.643 -> best image rank 3, partner rank 3 (cross 1)
HAND_X = on_circle([0, 10, 25])
HAND_Y = on_circle([80, 100, 130])


def test_hand_worked_ranks_and_recall():
    r = measure_gap(HAND_X, HAND_Y, ks=(1, 3, 4))
    assert r.best_text_rank.tolist() == [3, 3, 3]
    assert r.best_image_rank.tolist() == [3, 3, 3]
    assert r.i2t_rank.tolist() == [3, 4, 5]
    assert r.t2i_rank.tolist() == [5, 4, 3]
    assert r.i2t_rank_crossmodal.tolist() == [1, 2, 3]
    assert r.t2i_rank_crossmodal.tolist() == [3, 2, 1]
    m = r.metrics
    assert m["TMR"] == 3 and m["IMR"] == 3
    assert m["ITR"] == math.inf and m["TIR"] == math.inf  # no query ever gets the other modality first
    assert m["R@1"] == 0 and m["R@3"] == pytest.approx(1 / 3) and m["R@4"] == pytest.approx(2 / 3)
    assert m["R@3_t2i"] == pytest.approx(1 / 3)
    assert m["R@1_i2t_crossmodal"] == pytest.approx(1 / 3)
    assert m["R@1_t2i_crossmodal"] == pytest.approx(1 / 3)


def test_text_first_when_partner_is_closest():
    # Move text 0 to 5 degrees. image 0: txt0 (cos 5 = .996) before img1 (cos 10 = .985);
    # image 1: txt0 (cos 5 = .996) before img0 (.985); image 2: img1 (cos 15 = .966) before
    # txt0 (cos 20 = .940). Two text-first, one image-first: ITR = 1 / 2.
    Y = on_circle([5, 100, 130])
    r = measure_gap(HAND_X, Y)
    assert r.best_text_rank.tolist() == [1, 1, 2]
    assert r.i2t_rank[0] == 1
    assert r.metrics["ITR"] == pytest.approx(1 / 2)


def test_itr_2494_over_6():
    """2500 image queries of which 6 get a text first: ITR = 2494 / 6 = 415.67 (paper: 415.66)."""
    rng = np.random.default_rng(0)
    n, d = 2500, 16
    e1, e2 = np.eye(d)[0], np.eye(d)[1]
    X = e1 + 0.05 * rng.normal(size=(n, d))        # a narrow image cone around e1
    Y = e2 + 0.05 * rng.normal(size=(n, d))        # a narrow text cone around e2
    Y[:6] = X[:6]                                   # six captions coincide with their image
    r = measure_gap(X, Y)
    assert r.metrics["ITR"] == pytest.approx(2494 / 6)
    assert round(r.metrics["ITR"], 2) == 415.67
    assert np.flatnonzero(r.best_text_rank == 1).tolist() == [0, 1, 2, 3, 4, 5]


def test_ties_never_count_as_a_win():
    """Everything collapsed to one point: every other item ties, and ties rank ahead."""
    n = 5
    X = np.ones((n, 3))
    Y = np.ones((n, 3))
    r = measure_gap(X, Y)
    assert r.best_text_rank.tolist() == [n] * n      # all n-1 other images tie ahead
    assert r.i2t_rank.tolist() == [2 * n - 1] * n    # every other item ties ahead of the partner
    assert r.metrics["ITR"] == math.inf and r.metrics["R@5"] == 0.0


def test_paired_and_global_distances_by_hand():
    X = np.array([[1.0, 0.0], [0.0, 1.0]])
    Y = np.array([[0.0, 1.0], [0.0, 1.0]])
    m = distance_measures(X, Y)
    assert m["paired_cosine_distance"] == pytest.approx(0.5)        # (1 + 0) / 2
    assert m["paired_l2"] == pytest.approx(math.sqrt(2) / 2)        # (sqrt2 + 0) / 2
    assert m["paired_l2_squared"] == pytest.approx(1.0)             # (2 + 0) / 2
    assert m["all_cosine_distance"] == pytest.approx(0.5)           # cosines 0, 0, 1, 1
    assert m["centroid_gap"] == pytest.approx(math.sqrt(0.5))       # (.5,.5) - (0,1)
    assert m["image_cone"] == pytest.approx(0.0)
    assert m["text_cone"] == pytest.approx(1.0)


def test_unnormalised_input_is_normalised():
    X = np.array([[3.0, 0.0], [0.0, 0.5]])
    Y = np.array([[0.0, 7.0], [0.0, 2.0]])
    assert distance_measures(X, Y)["paired_cosine_distance"] == pytest.approx(0.5)


def test_frechet_by_hand():
    Z = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], dtype=float)  # cov = (4/3) I (N-1 denominator)
    # X = Z * [2, 1]: cov diag(16/3, 4/3); Y = Z: diag(4/3, 4/3); same mean.
    # (sqrt(16/3) - sqrt(4/3))^2 = (2/sqrt3)^2 = 4/3
    assert frechet_distance(Z * [2.0, 1.0], Z) == pytest.approx(4 / 3)
    t = np.array([0.3, -0.4])
    assert frechet_distance(Z + t, Z) == pytest.approx(0.25)  # a pure shift: ||t||^2
    assert frechet_distance(Z, Z) == pytest.approx(0.0, abs=1e-12)


def test_frechet_matches_sqrtm_formula():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6))
    Y = rng.normal(size=(150, 6)) + 0.5
    cx, cy = np.cov(X, rowvar=False), np.cov(Y, rowvar=False)
    ref = np.sum((X.mean(0) - Y.mean(0)) ** 2) + np.trace(cx + cy - 2 * linalg.sqrtm(cx @ cy).real)
    assert frechet_distance(X, Y) == pytest.approx(ref, rel=1e-9)


def test_frechet_singular_covariance():
    # 6 rows in 10 dimensions: C_x has rank 5, Cholesky fails, the eigen-factor takes over.
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(6, 10)), rng.normal(size=(40, 10)) + 0.2
    cx, cy = np.cov(X, rowvar=False), np.cov(Y, rowvar=False)
    with pytest.raises(linalg.LinAlgError):
        linalg.cholesky(cx)
    # spectrum of C_x C_y is real and >= 0 (similar to a PSD matrix); reference from it
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvals(cx @ cy).real, 0, None)).sum()
    ref = np.sum((X.mean(0) - Y.mean(0)) ** 2) + np.trace(cx) + np.trace(cy) - 2 * tr_sqrt
    assert frechet_distance(X, Y) == pytest.approx(ref, rel=1e-7)


def test_frechet_of_fewer_pairs_than_dimensions_takes_the_small_product():
    """n pairs in d > n dimensions (a small cluster): the n x n path equals the d x d formula
    (by hand: a pure shift; and the spectrum of C_x C_y, as above)."""
    rng = np.random.default_rng(5)
    X, Y = rng.normal(size=(12, 40)), rng.normal(size=(12, 40)) * 0.5 + 0.3
    cx, cy = np.cov(X, rowvar=False), np.cov(Y, rowvar=False)
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvals(cx @ cy).real, 0, None)).sum()
    ref = np.sum((X.mean(0) - Y.mean(0)) ** 2) + np.trace(cx) + np.trace(cy) - 2 * tr_sqrt
    # the reference sums square roots of 29 round-off eigenvalues near 0 (about 1e-8 each)
    assert frechet_distance(X, Y) == pytest.approx(ref, rel=1e-7)
    t = rng.normal(size=40)
    assert frechet_distance(X + t, X) == pytest.approx(float(t @ t), rel=1e-9)
    assert frechet_distance(X, X) == pytest.approx(0.0, abs=1e-9)


def test_concurrent_passes_agree_and_restore_blas_threads():
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_info

    rng = np.random.default_rng(5)
    sets = [(rng.normal(size=(300, 16)) + 0.5, rng.normal(size=(300, 16)) - 0.5) for _ in range(4)]
    serial = [measure_gap(X, Y).metrics for X, Y in sets]
    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    with ThreadPoolExecutor(4) as pool:  # like four app sessions at once
        together = list(pool.map(lambda xy: measure_gap(*xy).metrics, sets))
    after = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    assert after == before
    for a, b in zip(serial, together):
        assert rank_keys(a) == rank_keys(b)
        assert a["frechet"] == pytest.approx(b["frechet"], rel=1e-9)


@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("n,d,block", [(40, 6, 10 ** 6), (97, 5, 300), (64, 12, 64)])
def test_blocked_pass_equals_brute_force(n, d, block, workers, monkeypatch):
    monkeypatch.setattr(measures, "_workers", lambda: workers)  # 3 panel threads on any machine
    rng = np.random.default_rng(n)
    X = np.round(rng.normal(size=(n, d)) + 0.8, 1)   # rounding makes exact ties
    Y = np.round(rng.normal(size=(n, d)) - 0.3, 1)
    X[3] = X[5]                                       # duplicated points
    Y[7] = X[7]
    assert_ranks_are_float64(X, Y, block_values=block)  # the same input, in float64


def rank_keys(metrics):
    return {k: v for k, v in metrics.items() if k in ("ITR", "TIR", "IMR", "TMR") or k.startswith("R@")}


@settings(max_examples=25, deadline=None)
@given(n=st.integers(3, 40), d=st.integers(2, 12), seed=st.integers(0, 10 ** 6),
       shift=st.floats(0.0, 2.0))
def test_rotation_invariance(n, d, seed, shift):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) + shift
    Y = rng.normal(size=(n, d)) - shift
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    a = measure_gap(X, Y).metrics
    b = measure_gap(X @ Q, Y @ Q).metrics
    assert rank_keys(a) == rank_keys(b)
    for k in ("paired_cosine_distance", "centroid_gap", "frechet", "all_cosine_distance"):
        assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-5)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(3, 40), d=st.integers(2, 12), seed=st.integers(0, 10 ** 6))
def test_swapping_modalities_swaps_directions(n, d, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) + 1.0
    Y = rng.normal(size=(n, d))
    a = measure_gap(X, Y)
    b = measure_gap(Y, X)
    assert (a.metrics["ITR"], a.metrics["TMR"]) == (b.metrics["TIR"], b.metrics["IMR"])
    assert (a.metrics["TIR"], a.metrics["IMR"]) == (b.metrics["ITR"], b.metrics["TMR"])
    assert np.array_equal(a.i2t_rank, b.t2i_rank)
    assert a.metrics["R@5"] == b.metrics["R@5_t2i"]


def test_paired_significance():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 8))
    Y = X + rng.normal(size=(200, 8))
    same = paired_significance(X, Y, X, Y)
    assert all(t.t_pvalue == 1.0 and t.wilcoxon_pvalue == 1.0 for t in same)
    closer = paired_significance(X, Y, X, X + 0.1 * (Y - X))  # every pair moves closer
    cos = closer[0]
    assert cos.distance == "cosine" and cos.mean_after < cos.mean_before
    d0 = 1 - np.einsum("ij,ij->i", *(A / np.linalg.norm(A, axis=1, keepdims=True) for A in (X, Y)))
    assert cos.mean_before == pytest.approx(d0.mean(), rel=1e-5)
    assert cos.t_pvalue < 1e-10 and cos.wilcoxon_pvalue < 1e-10
    with pytest.raises(ValueError, match="same pairs"):
        paired_significance(X, Y, X[:10], Y[:10])


def test_linear_separability():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5)) + [4, 0, 0, 0, 0]
    Y = rng.normal(size=(300, 5)) - [4, 0, 0, 0, 0]
    assert linear_separability(X, Y) == 1.0
    same = linear_separability(rng.normal(size=(300, 5)), rng.normal(size=(300, 5)))
    assert 0.35 < same < 0.65


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="zero vector"):
        measure_gap(np.array([[1.0, 0.0], [0.0, 0.0]]), np.ones((2, 2)))
    with pytest.raises(ValueError, match="NaN or inf"):
        measure_gap(np.array([[1.0, np.nan], [0.0, 1.0]]), np.ones((2, 2)))
    with pytest.raises(ValueError, match="same number of rows"):
        measure_gap(np.ones((3, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="at least 2"):
        measure_gap(np.ones((1, 2)), np.ones((1, 2)))
    with pytest.raises(ValueError, match="same space"):
        measure_gap(np.ones((3, 2)), np.ones((3, 4)))


def test_smallest_case_two_pairs():
    r = measure_gap(np.eye(2), np.eye(2))
    # image 0: img1 cos 0, txt0 cos 1 (its partner, first), txt1 cos 0 ties img1 -> partner rank 1
    assert r.i2t_rank.tolist() == [1, 1] and r.metrics["ITR"] == 0.0 and r.metrics["TMR"] == 1.0


# ---------------------------------------------------------------------------------------------
# exact ranks: near-ties and duplicates against the float64 brute force
# ---------------------------------------------------------------------------------------------
def assert_ranks_are_float64(X, Y, **kw):
    r = measure_gap(X, Y, **kw)
    assert_report_is_float64(r, X, Y)
    return r


@pytest.mark.parametrize("gap", [1.5e-6, -1.5e-6, 2e-7, -2e-7, 3e-5, -3e-5])
def test_near_tie_is_ordered_as_float64_orders_it(gap):
    X, Y = near_tie_pairs(gap, d=512)
    r = assert_ranks_are_float64(X, Y)
    Xd, Yd = X.astype(np.float64), Y.astype(np.float64)
    cos = lambda a, b: a @ b / np.linalg.norm(a) / np.linalg.norm(b)  # noqa: E731
    text_first = cos(Xd[0], Yd[0]) > cos(Xd[0], Xd[1])
    assert text_first == (gap > 0)  # the float32 input keeps the order of the construction
    assert r.best_text_rank[0] == (1 if text_first else 2)


def test_near_ties_at_scale_match_float64():
    # 600 pairs in 512 dimensions, every text a slightly moved copy of its image or of another
    # image (moves of 1e-7 .. 1e-4 in cosine), so many comparisons fall inside the float32
    # error band; exact duplicates as well.
    rng = np.random.default_rng(11)
    n, d = 600, 512
    X = rng.normal(size=(n, d)).astype(np.float32)
    src = rng.integers(0, n, size=n)
    scale = 10.0 ** rng.uniform(-7, -3.5, size=(n, 1))
    Y = (X[src] + scale * rng.normal(size=(n, d))).astype(np.float32)
    X[10:20] = X[0]            # duplicated images
    Y[30:35] = Y[29]           # duplicated texts
    X[40] = X[41] + np.float32(1e-6) * rng.normal(size=d).astype(np.float32)  # near-duplicate
    assert_ranks_are_float64(X, Y, block_values=50_000)


def test_duplicates_tie_in_high_dimensions():
    # identical float32 vectors sitting in different panels and panel positions still tie
    rng = np.random.default_rng(2)
    n, d = 300, 768
    X = rng.normal(size=(n, d)).astype(np.float32)
    Y = (X + 0.5 * rng.normal(size=(n, d))).astype(np.float32)
    X[::7] = X[3]
    Y[::11] = Y[5]
    r = assert_ranks_are_float64(X, Y, block_values=20_000)
    # an image duplicated k times: its own duplicates rank ahead of any text (cosine 1)
    assert (r.best_text_rank[::7] >= len(range(0, n, 7))).all()


def test_everything_tied_overflows_the_close_call_buffers():
    # 300 identical pairs: every comparison is a close call, far more than the per-panel
    # buffers hold at first; the rerun path must still give the all-tied ranks.
    X = np.tile(np.float32([0.3, -1.2, 0.5, 2.0]), (300, 1))
    r = assert_ranks_are_float64(X, X.copy())
    assert r.best_text_rank.tolist() == [300] * 300
    assert r.i2t_rank.tolist() == [599] * 300


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 30), d=st.integers(1, 40), seed=st.integers(0, 10 ** 6),
       log_eps=st.floats(-9, -3), n_dup=st.integers(0, 4), f64=st.booleans())
def test_ranks_equal_float64_brute_force(n, d, seed, log_eps, n_dup, f64):
    """Planted near-duplicates (moved by 10^log_eps) and exact duplicates, float32 or float64
    input: every rank equals the float64 brute force."""
    pairs = planted_ties(n, d, seed, log_eps, n_dup, f64)
    if pairs is None:
        return
    X, Y = pairs
    assert_ranks_are_float64(X, Y, block_values=max(1, n * 3))


def test_float32_cosine_bound_holds_with_room():
    # the worst observed float32 error is well inside the documented bound h (which is twice
    # the worst-case bound): in 512 dims h = 6.2e-5, observed errors are ~1e-7
    rng = np.random.default_rng(4)
    A = rng.normal(size=(400, 512))
    B = A[::-1] + 0.1 * rng.normal(size=(400, 512))
    An, Bn = measures.normalize_rows(A), measures.normalize_rows(B)
    exact = (A / np.linalg.norm(A, axis=1, keepdims=True)) @ (B / np.linalg.norm(B, axis=1, keepdims=True)).T
    err = np.abs((An @ Bn.T).astype(np.float64) - exact).max()
    assert err < measures.float32_cosine_bound(512) / 2
    assert measures.float32_cosine_bound(512) == pytest.approx(516 * 2.0 ** -23)


def test_a_vlap_fit_beside_a_measure_pass_leaves_every_thread_setting_as_it_was():
    """VLAP holds BLAS, OpenMP and torch to one thread through the shared settings: fits and
    passes running at once restore what the process had."""
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from threadpoolctl import threadpool_info

    from gapviz.methods import make_method
    from gapviz.simulate import simulate_pairs

    p = simulate_pairs(200, 16, seed=0)
    def settings():
        return sorted((i["filepath"], i["num_threads"]) for i in threadpool_info()), \
            torch.get_num_threads()

    before = settings()
    with ThreadPoolExecutor(3) as pool:
        jobs = [pool.submit(make_method("vlap", n_anchors=16, epochs=2).fit, p.image_embeddings,
                            p.text_embeddings),
                pool.submit(measure_gap, p.image_embeddings, p.text_embeddings),
                pool.submit(make_method("vlap", n_anchors=16, epochs=2).fit, p.image_embeddings,
                            p.text_embeddings)]
        [j.result() for j in jobs]
    assert settings() == before
