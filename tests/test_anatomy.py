"""Gap anatomy, intervals and closing costs: hand-worked values, planted structure, invariants,
brute-force references, the bootstrap's behaviour and the paired test's false-positive rate."""

import json
import math

import numpy as np
import pytest

from gapviz.runs import RunData, Runner, RunSpec, tradeoff_specs
from scipy import stats

from gapviz import anatomy, closing_costs, intervals
from gapviz.anatomy import (ablation_curve, anatomy_json, centroid_vs_distribution, cluster_gaps,
                            dimension_gaps, gap_anatomy, gap_removed, hubness, mixed_pool_ndcg,
                            ndcg_gains, nearest_neighbours, relative_modality_gap)
from gapviz.embeddings import EmbeddingsFileError, PairedEmbeddings, load_embeddings, save_embeddings
from gapviz.intervals import PairOutcomes, bootstrap_ci, measures_from_weights, paired_comparison
from gapviz.measures import frechet_distance, measure_gap, normalize_rows
from gapviz.simulate import simulate_pairs


def on_circle(degrees):
    a = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.c_[np.cos(a), np.sin(a)].astype(np.float32)


def unit(A):
    return A / np.linalg.norm(A, axis=1, keepdims=True)


def gaussian_pairs(n, d, seed, shift=0.0, noise=0.5):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, d))
    X = base + noise * rng.normal(size=(n, d))
    Y = base + noise * rng.normal(size=(n, d))
    Y[:, 0] += shift
    return X.astype(np.float32), Y.astype(np.float32)


def random_rotation(d, seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q * np.sign(np.diag(r))


# ---------------------------------------------------------------------------------------------
# RMG
# ---------------------------------------------------------------------------------------------
# Images at 0, 10, 25 degrees; texts at 80, 100, 130 (pair i = image i, text i), as in
# test_measures. Worked by hand, d = (1 - cos) / 2:
#   pairs at 80, 90, 105 degrees: cos .173648, 0, -.258819 -> d .413176, .5, .629410; m = .514195
#   images 10, 25, 15 degrees apart: cos .984808, .906308, .965926 -> mean .952347; w_x = .023826
#   texts 20, 50, 30 degrees apart:  cos .939693, .642788, .866025 -> mean .816169; w_y = .091916
#   RMG = .514195 / (.514195 + (.023826 + .091916) / 2) = .514195 / .572066 = .898840
HAND_X = on_circle([0, 10, 25])
HAND_Y = on_circle([80, 100, 130])


def test_rmg_hand_worked():
    assert relative_modality_gap(HAND_X, HAND_Y) == pytest.approx(0.898840, abs=2e-6)


def test_rmg_paired_term_is_floored():
    # identical modalities: m = 0 is replaced by 1e-3, so RMG = 1e-3 / (1e-3 + w)
    X = on_circle([0, 90, 180])  # cos 0, -1, 0 between distinct items: mean -1/3, w = 2/3
    assert relative_modality_gap(X, X) == pytest.approx(1e-3 / (1e-3 + 2 / 3))


def test_rmg_from_sums_equals_all_distinct_pairs():
    X, Y = gaussian_pairs(40, 6, seed=1, shift=1.0)
    Xn, Yn = unit(X.astype(np.float64)), unit(Y.astype(np.float64))
    d = lambda A, B: (1 - A @ B.T) / 2  # noqa: E731
    off = ~np.eye(40, dtype=bool)
    m = np.mean(np.diag(d(Xn, Yn)))
    m = m if m > 0 else 1e-3  # Schrodi et al.'s compute_rmg: only m <= 0 is replaced
    expected = m / (m + (d(Xn, Xn)[off].mean() + d(Yn, Yn)[off].mean()) / 2)
    assert relative_modality_gap(X, Y) == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# NDCG and hubness
# ---------------------------------------------------------------------------------------------
def test_ndcg_hand_worked():
    # HAND case: the partner's mixed-pool ranks are 3, 4, 5 (test_measures):
    # gains 1/log2(4) = .5, 1/log2(5) = .430677, 1/log2(6) = .386853 -> NDCG@10 = .439177
    assert mixed_pool_ndcg(HAND_X, HAND_Y) == pytest.approx(0.439177, abs=1e-6)
    assert ndcg_gains([1, 10, 11]).tolist() == pytest.approx([1.0, 1 / math.log2(11), 0.0])


def test_ndcg_tie_never_counts_as_a_win():
    # image 0 at 0 deg: image 1 and its partner text 0 both at 30 deg (an exact tie) -> rank 2,
    #   gain 1/log2(3) = .630930
    # image 1 at 30 deg: partner at 200 (170 apart, cos -.985) is last of 5 others -> gain .386853
    # image 2 at 120 deg: partner at 250 (130 apart, cos -.643) after text 1 (80 apart),
    #   image 1, text 0 (90 apart) and image 0 (120 apart) -> rank 5, gain .386853
    X = on_circle([0, 30, 120])
    Y = on_circle([30, 200, 250])
    r = measure_gap(X, Y)
    assert r.i2t_rank.tolist() == [2, 5, 5]
    assert mixed_pool_ndcg(X, Y, report=r) == pytest.approx((0.630930 + 2 * 0.386853) / 3, abs=1e-6)


def brute_force_neighbours(A, k):
    An = unit(np.asarray(A, dtype=np.float64))
    S = An @ An.T
    np.fill_diagonal(S, -np.inf)
    return np.argsort(-S, axis=1, kind="stable")[:, :k]  # equal similarity: lower index first


def test_hubness_matches_brute_force():
    X, Y = gaussian_pairs(70, 8, seed=2, shift=1.5)
    Z = np.vstack([X, Y])
    expected_top = brute_force_neighbours(Z, 10)
    top = nearest_neighbours(Z, 10, block_values=7 * 140)  # many small panels
    assert np.array_equal(top, expected_top)
    counts = np.bincount(expected_top.ravel(), minlength=140)
    assert hubness(X, Y) == pytest.approx(stats.skew(counts))
    assert hubness(X, Y, block_values=5 * 140) == pytest.approx(stats.skew(counts))


def test_nearest_neighbours_ties_by_lower_index():
    A = on_circle([0, 10, 10, 10, 50])  # rows 1, 2, 3 coincide
    top = nearest_neighbours(A, 2)
    assert top[0].tolist() == [1, 2]
    assert top[3].tolist() == [1, 2]
    assert top[4].tolist() == [1, 2]


def test_rotation_leaves_rmg_ndcg_hubness_unchanged():
    X, Y = gaussian_pairs(150, 12, seed=3, shift=2.0)
    Q = random_rotation(12, seed=4)
    Xr, Yr = (X @ Q).astype(np.float32), (Y @ Q).astype(np.float32)
    assert relative_modality_gap(Xr, Yr) == pytest.approx(relative_modality_gap(X, Y), rel=1e-5)
    assert mixed_pool_ndcg(Xr, Yr) == pytest.approx(mixed_pool_ndcg(X, Y), rel=1e-9)
    assert hubness(Xr, Yr) == pytest.approx(hubness(X, Y), rel=1e-9)


# ---------------------------------------------------------------------------------------------
# per-dimension gap and ablation
# ---------------------------------------------------------------------------------------------
def planted_dimension(n=300, d=16, dim=7, seed=5):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, d))
    X = base + 0.4 * rng.normal(size=(n, d))
    Y = base + 0.4 * rng.normal(size=(n, d))
    X[:, dim] += 2.5  # the gap lives in one dimension
    return X.astype(np.float32), Y.astype(np.float32)


def test_planted_dimension_ranks_first():
    X, Y = planted_dimension()
    g = dimension_gaps(X, Y)
    assert g.order[0] == 7
    assert g.share[0] > 0.5
    assert g.share.sum() == pytest.approx(1.0)
    assert np.all(np.diff(g.gap) <= 0)  # largest first
    listed = g.to_list(3)
    assert listed[0]["index"] == 7 and listed[0]["share"] == pytest.approx(g.share[0])
    diff = normalize_rows(X).mean(0) - normalize_rows(Y).mean(0)
    assert listed[1]["gap"] == pytest.approx(abs(diff[listed[1]["index"]]), rel=1e-5)


def brute_force_ablation(X, Y, dims):
    r1_i2t, r1_t2i, rmg = [], [], []
    for m in range(len(dims) + 1):
        Xm, Ym = normalize_rows(X).astype(np.float64), normalize_rows(Y).astype(np.float64)
        Xm[:, dims[:m]] = 0
        Ym[:, dims[:m]] = 0
        rep = measure_gap(Xm, Ym)
        r1_i2t.append(np.mean(rep.i2t_rank_crossmodal == 1))
        r1_t2i.append(np.mean(rep.t2i_rank_crossmodal == 1))
        rmg.append(relative_modality_gap(Xm, Ym))
    return r1_i2t, r1_t2i, rmg


def test_ablation_curve_matches_removing_and_renormalising():
    X, Y = planted_dimension(n=120, d=10, dim=3)
    curve = ablation_curve(X, Y, max_dims=4, block_values=30 * 120)
    assert curve.dims[0] == 3
    r1_i2t, r1_t2i, rmg = brute_force_ablation(X, Y, curve.dims)
    assert curve.r1_i2t.tolist() == pytest.approx(r1_i2t)
    assert curve.r1_t2i.tolist() == pytest.approx(r1_t2i)
    assert curve.rmg.tolist() == pytest.approx(rmg, rel=1e-5)
    assert curve.rmg[1] < 0.5 * curve.rmg[0]  # the planted dimension held most of the gap
    rows = curve.to_list()
    assert [r["removed"] for r in rows] == [0, 1, 2, 3, 4] and rows[2]["dims"] == curve.dims[:2].tolist()


def test_ablation_dims_are_validated():
    X, Y = planted_dimension(n=20, d=4, dim=1)
    with pytest.raises(ValueError, match="indices in 0 .. 3"):
        ablation_curve(X, Y, dims=[0, 4])
    with pytest.raises(ValueError, match="repeat"):
        ablation_curve(X, Y, dims=[1, 1])


# ---------------------------------------------------------------------------------------------
# centroid vs distribution
# ---------------------------------------------------------------------------------------------
def test_centroid_plus_distribution_is_frechet():
    X, Y = gaussian_pairs(200, 6, seed=6, shift=1.0)
    split = centroid_vs_distribution(X, Y)
    Xn, Yn = normalize_rows(X).astype(np.float64), normalize_rows(Y).astype(np.float64)
    mu = Xn.mean(0) - Yn.mean(0)
    assert split["centroid"] == pytest.approx(mu @ mu, rel=1e-6)
    assert split["frechet"] == pytest.approx(frechet_distance(Xn, Yn), rel=1e-6)
    # the distribution part is the Fréchet distance once each modality's mean is removed
    assert split["distribution"] == pytest.approx(
        frechet_distance(Xn - Xn.mean(0), Yn - Yn.mean(0)), rel=1e-4, abs=1e-9)
    assert split["centroid_share"] == pytest.approx(split["centroid"] / split["frechet"])


def test_gap_removed_by_centering_is_mostly_the_centroid_part():
    from gapviz.methods import make_method

    pairs = simulate_pairs(400, 32, seed=3)
    X, Y = pairs.image_embeddings, pairs.text_embeddings
    before = centroid_vs_distribution(X, Y)
    after = centroid_vs_distribution(*make_method("center").fit_transform(X, Y))
    removed = gap_removed(before, after)
    assert removed["centroid"]["fraction_removed"] > 0.95
    assert removed["frechet"]["removed"] == pytest.approx(before["frechet"] - after["frechet"])
    assert gap_removed({"frechet": 0, "centroid": 0, "distribution": 0},
                       {"frechet": 1, "centroid": 1, "distribution": 0})["centroid"]["fraction_removed"] != 0


# ---------------------------------------------------------------------------------------------
# per-cluster gap
# ---------------------------------------------------------------------------------------------
def planted_clusters(per=60, d=12, seed=7):
    """Three well-separated clusters; only cluster 'b' has a gap (its texts shifted)."""
    rng = np.random.default_rng(seed)
    centres = 6 * np.eye(3, d)
    labels = np.repeat(["a", "b", "c"], per)
    base = centres[np.repeat(np.arange(3), per)] + rng.normal(size=(3 * per, d))
    X = base + 0.3 * rng.normal(size=base.shape)
    Y = base + 0.3 * rng.normal(size=base.shape)
    Y[labels == "b", 5] += 4.0
    return X.astype(np.float32), Y.astype(np.float32), labels


def test_planted_cluster_has_its_own_gap():
    X, Y, labels = planted_clusters()
    groups = cluster_gaps(X, Y, labels=labels)
    assert groups.source == "labels" and groups.names == ["a", "b", "c"]
    rows = {r["name"]: r for r in groups.rows}
    assert all(r["n"] == 60 for r in rows.values())
    for other in ("a", "c"):
        assert rows["b"]["paired_cosine_distance"] > 3 * rows[other]["paired_cosine_distance"]
        assert rows["b"]["RMG"] > 2 * rows[other]["RMG"]
        assert rows["b"]["R@5"] < rows[other]["R@5"]
    idx = groups.members(1)
    assert rows["b"]["RMG"] == pytest.approx(relative_modality_gap(X[idx], Y[idx]))


def test_cluster_rows_are_measure_gap_of_the_clusters_pairs():
    # small clusters are measured in coordinates of their own span: an isometry, same numbers
    X, Y, labels = planted_clusters(per=8, d=40)
    groups = cluster_gaps(X, Y, labels=labels)
    for c, name in enumerate(groups.names):
        idx = groups.members(c)
        direct = measure_gap(X[idx], Y[idx]).metrics
        row = groups.rows[c]
        for key in ("ITR", "TIR", "IMR", "TMR", "R@5", "R@5_i2t_crossmodal"):
            assert row[key] == direct[key], (name, key)
        for key in ("paired_cosine_distance", "centroid_gap", "image_cone", "frechet"):
            assert row[key] == pytest.approx(direct[key], rel=1e-4, abs=1e-6), (name, key)


def test_kmeans_finds_the_planted_clusters():
    from sklearn.metrics import adjusted_rand_score

    X, Y, labels = planted_clusters()
    groups = cluster_gaps(X, Y, seed=0)  # k chosen by silhouette
    assert groups.source == "kmeans" and groups.k == 3
    assert adjusted_rand_score(labels, groups.assignment) == pytest.approx(1.0)
    fixed = cluster_gaps(X, Y, n_clusters=3, seed=0)
    assert np.array_equal(fixed.assignment, cluster_gaps(X, Y, n_clusters=3, seed=0).assignment)
    with pytest.raises(ValueError, match="one label per pair"):
        cluster_gaps(X, Y, labels=labels[:5])


# ---------------------------------------------------------------------------------------------
# intervals
# ---------------------------------------------------------------------------------------------
def outcomes_of(X, Y):
    a = gap_anatomy(X, Y, clusters=False, intervals=False, ablation_dims=2)
    return a.outcomes(normalize_rows(X), normalize_rows(Y)), a


def test_unit_weights_reproduce_every_measure():
    X, Y = gaussian_pairs(120, 8, seed=8, shift=1.5)
    o, a = outcomes_of(X, Y)
    est = {k: float(v[0]) for k, v in measures_from_weights(o, np.ones((1, o.n)), frechet=True).items()}
    for key, value in a.report.metrics.items():
        if key in ("N", "separability"):
            continue
        assert est[key] == pytest.approx(value, rel=1e-5, abs=1e-9), key
    assert est["RMG"] == pytest.approx(a.metrics["RMG"], rel=1e-6)
    assert est["NDCG@10"] == pytest.approx(a.metrics["NDCG@10"])
    assert est["hubness"] == pytest.approx(a.metrics["hubness"])
    assert est["centroid"] == pytest.approx(a.split["centroid"], rel=1e-5)
    assert est["distribution"] == pytest.approx(a.split["distribution"], rel=1e-4, abs=1e-9)


def test_weights_duplicate_pairs_exactly():
    # weight 2 on a pair = that pair twice: the mean-type and sum-type measures must agree
    X, Y = gaussian_pairs(30, 5, seed=9, shift=1.0)
    o, _ = outcomes_of(X, Y)
    w = np.ones(30)
    w[4] = 2
    w[7] = 0
    got = measures_from_weights(o, w[None])
    rows = np.r_[np.arange(30)[w > 0], 4]
    Xd, Yd = normalize_rows(X)[rows], normalize_rows(Y)[rows]
    assert got["paired_cosine_distance"][0] == pytest.approx(
        np.mean(1 - np.einsum("ij,ij->i", Xd, Yd)), rel=1e-6)
    # RMG over the resample (its duplicated item counts as a distinct item, cos 1 with its copy)
    assert got["RMG"][0] == pytest.approx(relative_modality_gap(Xd, Yd), rel=1e-5)


def test_bootstrap_contains_estimate_and_narrows_as_one_over_sqrt_n():
    widths = {}
    for n in (300, 1200):
        pairs = simulate_pairs(n, 32, seed=11)
        o, a = outcomes_of(pairs.image_embeddings, pairs.text_embeddings)
        iv = bootstrap_ci(o, n_resamples=200, seed=0)
        assert iv.n_resamples == 200 and iv.level == 0.95
        for key, (lo, hi) in iv.ci.items():
            assert lo <= iv.estimate[key] <= hi, key
        widths[n] = {k: iv.ci[k][1] - iv.ci[k][0] for k in ("paired_cosine_distance", "RMG",
                                                             "R@5_i2t_crossmodal", "centroid_gap")}
    for key in widths[300]:
        ratio = widths[300][key] / widths[1200][key]
        assert 1.4 < ratio < 2.9, (key, ratio)  # sqrt(1200 / 300) = 2


def test_bootstrap_flags_an_estimate_that_resampling_biases():
    # no gap at all: the centroid gap is a norm of noise, and every resample (duplicated pairs
    # add spread) lands above the estimate; the report says so instead of passing it as a range
    rng = np.random.default_rng(26)
    X, Y = rng.normal(size=(400, 32)), rng.normal(size=(400, 32))
    o = intervals.pair_outcomes(X, Y, hubness=False)
    iv = bootstrap_ci(o, n_resamples=100)
    assert "centroid_gap" in iv.outside and iv.ci["centroid_gap"][0] > iv.estimate["centroid_gap"]
    assert iv.describe()["estimate_outside"] == iv.outside
    assert "paired_cosine_distance" not in iv.outside


def test_paired_comparison_of_ratios_is_on_a_log_scale():
    X, Y = gaussian_pairs(200, 8, seed=27, shift=1.0)
    a = intervals.pair_outcomes(X, Y, hubness=False)
    b = intervals.pair_outcomes(X, Y + 0.5, hubness=False)
    res = paired_comparison(a, b, n_resamples=100, measures=["ITR", "RMG"])
    assert res["ITR"]["scale"] == "log" and res["RMG"]["scale"] == "linear"
    assert res["ITR"]["difference"] == pytest.approx(math.log(res["ITR"]["a"] / res["ITR"]["b"]))
    assert 0 < res["ITR"]["resamples_used"] <= 100


def test_bootstrap_is_seeded():
    X, Y = gaussian_pairs(80, 6, seed=12, shift=1.0)
    o, _ = outcomes_of(X, Y)
    assert bootstrap_ci(o, n_resamples=50, seed=3).ci == bootstrap_ci(o, n_resamples=50, seed=3).ci
    assert bootstrap_ci(o, n_resamples=50, seed=3).ci != bootstrap_ci(o, n_resamples=50, seed=4).ci
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_ci(o, n_resamples=2)


def test_paired_comparison_identical_methods_never_significant():
    X, Y = gaussian_pairs(100, 6, seed=13, shift=1.0)
    o, _ = outcomes_of(X, Y)
    res = paired_comparison(o, o, n_resamples=100)
    assert all(r["p_value"] == 1.0 and not r["significant"] for r in res.values())


def test_a_ratio_infinite_on_one_side_is_not_tested_rather_than_called_noise():
    """ITR infinite for one run only (no image query ever sees a text first): the log ratio
    is undefined, so the comparison decides nothing (p nan, "not tested"), never "within
    noise"; a measure finite on both sides is tested as before."""
    from gapviz.intervals import noise_verdict

    X, Y = gaussian_pairs(100, 6, seed=16)
    X[:, 5], Y[:, 5] = 0.0, 8.0  # the texts far along an axis the images lack
    raw, _ = outcomes_of(X, Y)
    closed, _ = outcomes_of(X - X.mean(0), Y - Y.mean(0))
    res = paired_comparison(closed, raw, n_resamples=100)
    assert math.isinf(res["ITR"]["b"]) and math.isfinite(res["ITR"]["a"])
    assert math.isnan(res["ITR"]["p_value"]) and not res["ITR"]["significant"]
    assert noise_verdict(res["ITR"]) == "not tested"
    assert noise_verdict(res["paired_cosine_distance"]) == "beyond noise"
    same = paired_comparison(raw, raw, n_resamples=100)
    assert noise_verdict(same["paired_cosine_distance"]) == "within noise"


def test_paired_comparison_false_positive_rate_is_about_alpha():
    # Two exchangeable methods: the same pairs, each with its own independent noise of the same
    # size. Any difference is noise: the test may flag about alpha of the trials, not more.
    flagged, trials = {"paired_cosine_distance": 0, "R@1_i2t_crossmodal": 0, "RMG": 0}, 80
    for t in range(trials):
        rng = np.random.default_rng([14, t])
        core = rng.normal(size=(150, 8))
        X, Y = core + 0.5 * rng.normal(size=core.shape), core + 0.5 * rng.normal(size=core.shape)
        X2, Y2 = X + 0.3 * rng.normal(size=X.shape), Y + 0.3 * rng.normal(size=Y.shape)
        X3, Y3 = X + 0.3 * rng.normal(size=X.shape), Y + 0.3 * rng.normal(size=Y.shape)
        a = PairOutcomes.from_report(measure_gap(X2, Y2), X2, Y2)
        b = PairOutcomes.from_report(measure_gap(X3, Y3), X3, Y3)
        res = paired_comparison(a, b, n_resamples=200, seed=t, measures=list(flagged))
        for key in flagged:
            flagged[key] += res[key]["significant"]
    for key, count in flagged.items():
        # alpha = 0.05: 4 of 80 expected; 10 is beyond the binomial's 99th percentile
        assert count / trials <= 0.125, (key, count)


def test_paired_comparison_detects_a_real_difference():
    rng = np.random.default_rng(15)
    core = rng.normal(size=(300, 8))
    X, Y = core + 0.3 * rng.normal(size=core.shape), core + 0.3 * rng.normal(size=core.shape)
    Xb, Yb = X + 1.0 * rng.normal(size=X.shape), Y + 1.0 * rng.normal(size=Y.shape)  # much noisier
    a = PairOutcomes.from_report(measure_gap(X, Y), X, Y)
    b = PairOutcomes.from_report(measure_gap(Xb, Yb), Xb, Yb)
    res = paired_comparison(a, b, n_resamples=200)
    r = res["R@1_i2t_crossmodal"]
    assert r["significant"] and r["difference"] > 0 and r["ci"][0] > 0
    assert res["paired_cosine_distance"]["significant"]
    with pytest.raises(ValueError, match="same pairs"):
        paired_comparison(a, PairOutcomes.from_report(measure_gap(X[:50], Y[:50]), X[:50], Y[:50]))


# ---------------------------------------------------------------------------------------------
# the whole anatomy, JSON
# ---------------------------------------------------------------------------------------------
def test_anatomy_json_on_the_demo():
    pairs = simulate_pairs(300, 32, seed=16)
    labels = closing_costs.pair_labels(pairs)
    out = anatomy_json(pairs.image_embeddings, pairs.text_embeddings, labels=labels,
                       n_resamples=50, ablation_dims=3)
    text = json.dumps(out)  # serialisable
    assert set(out["metrics"]) == {"RMG", "NDCG@10", "NDCG@10_mixbench", "hubness", "robinhood",
                                   "antihub_occurrence", "hub_occurrence"}  # unit rows: no frechet_raw
    dims = out["anatomy"]["dimensions"]
    assert len(dims) == anatomy.DIMENSIONS_LISTED and dims[0]["gap"] >= dims[-1]["gap"]
    assert len(out["anatomy"]["ablation"]) == 4
    assert out["anatomy"]["cluster_source"] == "labels"
    assert {c["name"] for c in out["anatomy"]["clusters"]} == set(labels)
    assert set(out["anatomy"]["centroid_vs_distribution"]) >= {"centroid", "distribution", "frechet"}
    for key in ("RMG", "NDCG@10", "hubness", "ITR", "R@5", "paired_cosine_distance"):
        lo, hi = out["ci"][key]
        assert lo <= hi
    for key in ("RMG", "NDCG@10", "hubness"):
        assert out["ci"][key][0] <= out["metrics"][key] <= out["ci"][key][1]
    assert out["ci_method"]["n_resamples"] == 50
    assert json.loads(text)["metrics"] == out["metrics"]


def test_anatomy_of_very_few_pairs_skips_choosing_k():
    X, Y = gaussian_pairs(4, 6, seed=24)
    a = gap_anatomy(X, Y, n_resamples=20)
    assert a.clusters is None and a.to_json()["anatomy"]["clusters"] == []
    assert gap_anatomy(X, Y, n_clusters=2, intervals=False).clusters.k == 2
    assert 0 < a.metrics["RMG"] < 1


def test_pair_outcomes_match_the_anatomy():
    X, Y = gaussian_pairs(90, 8, seed=25, shift=1.0)
    o = intervals.pair_outcomes(X, Y)
    a = gap_anatomy(X, Y, clusters=False, intervals=False)
    assert np.array_equal(o.neighbours, a.neighbours)
    assert bootstrap_ci(o, n_resamples=30).estimate["hubness"] == pytest.approx(a.metrics["hubness"])
    assert "hubness" not in bootstrap_ci(intervals.pair_outcomes(X, Y, hubness=False), n_resamples=30).ci


def test_anatomy_reuses_a_report_and_checks_it():
    X, Y = gaussian_pairs(60, 6, seed=17, shift=1.0)
    r = measure_gap(X, Y)
    a = gap_anatomy(X, Y, report=r, clusters=False, intervals=False)
    assert a.report is r and "measure_gap" not in a.seconds
    assert a.metrics["RMG"] == pytest.approx(relative_modality_gap(X, Y))
    assert a.ablation.r1_i2t[0] == pytest.approx(np.mean(r.i2t_rank_crossmodal == 1))
    with pytest.raises(ValueError, match="report is of 60 pairs"):
        gap_anatomy(X[:30], Y[:30], report=r)


# ---------------------------------------------------------------------------------------------
# what closing costs
# ---------------------------------------------------------------------------------------------
def test_neighbourhood_preservation():
    X, _ = gaussian_pairs(80, 6, seed=18)
    Q = random_rotation(6, seed=19)
    assert closing_costs.neighbourhood_preservation(X, X @ Q).tolist() == [1.0] * 80
    shuffled = np.random.default_rng(20).permutation(X)
    assert closing_costs.neighbourhood_preservation(X, shuffled).mean() < 0.3
    # hand case: on a line of angles, item 0's 2 nearest are 1, 2 before; 1, 3 after -> 1/2
    before = on_circle([0, 10, 20, 40])
    after = on_circle([0, 10, 30, 15])
    assert closing_costs.neighbourhood_preservation(before, after, k=2)[0] == 0.5


def test_zero_shot_accuracy_hand_worked_and_ties():
    images = on_circle([0, 80, 50, 200])
    classes = ["cat", "dog"]
    protos = on_circle([10, 90])
    # image 0 -> cat, image 1 -> dog, image 2 is exactly between (tie: never a win), image 3 -> cat
    labels = ["cat", "dog", "cat", "dog"]
    # image 3 at 200 deg: cat (190 apart, cos -.985) vs dog (110 apart, cos -.342) -> dog: right
    assert closing_costs.zero_shot_accuracy(images, labels, classes, protos) == pytest.approx(3 / 4)
    assert closing_costs.zero_shot_accuracy(images, ["dog", "dog", "dog", "dog"], classes, protos) == 0.5
    with pytest.raises(ValueError, match="not among the classes"):
        closing_costs.zero_shot_accuracy(images, ["cow"] * 4, classes, protos)


def test_closing_costs_with_a_method_and_a_prompt_encoder():
    from gapviz.methods import make_method

    pairs = simulate_pairs(300, 32, seed=21)
    X, Y = pairs.image_embeddings, pairs.text_embeddings
    labels = closing_costs.pair_labels(pairs)
    assert labels[0] == pairs.meta["cluster_names"][pairs.meta["cluster"][0]]
    method = make_method("center").fit(X, Y)
    Xt, Yt = method.transform(X, Y)
    seen = []
    centroids = {c: closing_costs.class_text_centroids(Y, labels, [c])[0] for c in set(labels)}

    def encode(prompts):  # a stand-in text encoder: the class's mean caption embedding
        seen.extend(prompts)
        return np.stack([centroids[p[len("a photo of a "):-1]] for p in prompts])

    out = closing_costs.closing_costs(X, Y, Xt, Yt, method=method, labels=labels, encode_texts=encode)
    assert seen == [f"a photo of a {c}." for c in sorted(set(labels))]
    assert out["zero_shot"]["prototype"].startswith("prompt")
    no_encoder = closing_costs.closing_costs(X, Y, Xt, Yt, method=method, labels=labels)
    assert no_encoder["zero_shot"]["before"] == pytest.approx(out["zero_shot"]["before"])
    assert no_encoder["zero_shot"]["after"] == pytest.approx(out["zero_shot"]["after"])
    before, after = measure_gap(X, Y), measure_gap(Xt, Yt)
    r = out["retrieval"]["R@1_i2t_crossmodal"]
    assert r["before"] == pytest.approx(np.mean(before.i2t_rank_crossmodal == 1))
    assert r["after"] == pytest.approx(np.mean(after.i2t_rank_crossmodal == 1))
    assert set(out["retrieval"]) == {"R@1_i2t_crossmodal", "R@1_t2i_crossmodal",
                                     "R@5_i2t_crossmodal", "R@5_t2i_crossmodal"}
    assert 0 <= out["neighbourhood"]["image"] <= 1 and out["neighbourhood"]["k"] == 10
    assert "zero_shot" not in closing_costs.closing_costs(X, Y, Xt, Yt)


# ---------------------------------------------------------------------------------------------
# labels in the file format
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", ["npz", "parquet"])
def test_labels_round_trip(tmp_path, ext):
    rng = np.random.default_rng(22)
    pairs = PairedEmbeddings(rng.normal(size=(4, 3)), rng.normal(size=(4, 3)),
                             labels=["cat", "dog", "cat", "bird"])
    loaded, report = load_embeddings(save_embeddings(pairs, tmp_path / f"p.{ext}"))
    assert loaded.labels == ["cat", "dog", "cat", "bird"] and not report.warnings
    assert closing_costs.pair_labels(loaded) == loaded.labels
    assert loaded.subset([1, 3]).labels == ["dog", "bird"]
    assert loaded.with_embeddings(loaded.image_embeddings, loaded.text_embeddings).labels == loaded.labels


def test_labels_integers_and_wrong_length(tmp_path):
    rng = np.random.default_rng(23)
    path = tmp_path / "ints.npz"
    np.savez(path, image_embeddings=rng.normal(size=(3, 2)), text_embeddings=rng.normal(size=(3, 2)),
             labels=np.array([3, 1, 3]))
    assert load_embeddings(path)[0].labels == ["3", "1", "3"]
    np.savez(path, image_embeddings=rng.normal(size=(3, 2)), text_embeddings=rng.normal(size=(3, 2)),
             labels=np.array(["a", "b"]))
    with pytest.raises(EmbeddingsFileError, match="'labels' has 2 entries"):
        load_embeddings(path)
    with pytest.raises(EmbeddingsFileError, match="one label per pair"):
        PairedEmbeddings(np.ones((3, 2)), np.ones((3, 2)), labels=["a"])
    assert closing_costs.pair_labels(PairedEmbeddings(np.ones((3, 2)), np.ones((3, 2)))) is None


# ---------------------------------------------------------------------------------------------
# the CLI: evaluate --anatomy
# ---------------------------------------------------------------------------------------------
CLI_SMALL = ["--n", "240", "--dim", "32", "--resamples", "40"]


def run_cli(capsys, *argv):
    from gapviz.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_anatomy_json(capsys):
    code, out, _ = run_cli(capsys, "evaluate", "demo", *CLI_SMALL, "--anatomy", "--format", "json")
    assert code == 0
    data = json.loads(out)
    pairs = simulate_pairs(240, 32)
    X, Y = pairs.image_embeddings, pairs.text_embeddings
    assert data["metrics"]["RMG"] == pytest.approx(relative_modality_gap(X, Y), rel=1e-6)
    assert data["metrics"]["NDCG@10"] == pytest.approx(mixed_pool_ndcg(X, Y))
    for key in ("NDCG@10", "hubness", "R@1_i2t_crossmodal", "ITR"):
        lo, hi = data["ci"][key]
        assert lo <= data["metrics"][key] <= hi, key
    assert data["ci_method"]["n_resamples"] == 40
    anat = data["anatomy"]
    assert anat["dimensions"][0]["index"] == int(dimension_gaps(X, Y).order[0])
    assert anat["cluster_source"] == "labels" and len(anat["clusters"]) == 20  # the demo's concepts
    assert [a["removed"] for a in anat["ablation"]] == list(range(anatomy.ABLATION_DIMS + 1))
    assert "closing_costs" not in data


def test_cli_anatomy_with_a_method_reports_costs_and_comparison(capsys):
    code, out, _ = run_cli(capsys, "evaluate", "demo", *CLI_SMALL, "--anatomy", "--method", "center",
                           "--clusters", "4", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["metrics_orig"]["RMG"] > data["metrics"]["RMG"]  # centering narrows the gap
    assert data["anatomy"]["cluster_source"] == "kmeans" and len(data["anatomy"]["clusters"]) == 4
    costs = data["closing_costs"]
    assert set(costs["retrieval"]) == {"R@1_i2t_crossmodal", "R@1_t2i_crossmodal",
                                       "R@5_i2t_crossmodal", "R@5_t2i_crossmodal"}
    assert costs["zero_shot"]["after"] is not None and costs["zero_shot"]["n_classes"] == 20
    assert data["gap_removed"]["centroid"]["fraction_removed"] > 0.9
    comp = data["comparison"]["measures"]["RMG"]
    assert comp["a"] == pytest.approx(data["metrics_orig"]["RMG"])
    assert comp["b"] == pytest.approx(data["metrics"]["RMG"])
    assert isinstance(comp["significant"], bool) and 0 < comp["p_value"] <= 1
    assert "ci_orig" in data and "anatomy_orig" in data


def test_cli_anatomy_held_out_zero_shot_uses_each_folds_fit(capsys):
    code, out, _ = run_cli(capsys, "evaluate", "demo", *CLI_SMALL, "--anatomy", "--method", "procrustes",
                           "--protocol", "held-out", "--folds", "3", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["protocol"]["protocol"] == "held-out"
    assert 0 <= data["closing_costs"]["zero_shot"]["after"] <= 1


def test_cli_anatomy_table_and_markdown_show_the_main_numbers(capsys):
    code, out, _ = run_cli(capsys, "evaluate", "demo", *CLI_SMALL, "--anatomy", "--method", "center")
    assert code == 0
    for text in ("gap anatomy (CENTER)", "RMG", "NDCG@10", "hubness", "top gap dimensions",
                 "what closing costs (ORIG -> CENTER)", "zero-shot accuracy", "ORIG vs CENTER"):
        assert text in out, text
    code, md, _ = run_cli(capsys, "evaluate", "demo", *CLI_SMALL, "--anatomy", "--format", "markdown")
    assert "### Gap anatomy" in md and "| RMG |" in md.replace("  ", " ")
    code, plain, _ = run_cli(capsys, "evaluate", "demo", "--n", "240", "--dim", "32")
    assert "gap anatomy" not in plain and "RMG" not in plain


@pytest.mark.parametrize("flags, message", [
    (["--resamples", "5"], "--resamples must be 0"),
    (["--clusters", "0"], "--clusters must be at least 1"),
    (["--ablation-dims", "-1"], "--ablation-dims must be 0 or more"),
])
def test_cli_anatomy_bad_options_exit_2(capsys, flags, message):
    code, _, err = run_cli(capsys, "evaluate", "demo", "--n", "100", "--dim", "16", "--anatomy", *flags)
    assert code == 2 and message in err


def test_cli_anatomy_without_intervals(capsys):
    code, out, _ = run_cli(capsys, "evaluate", "demo", "--n", "120", "--dim", "16", "--anatomy",
                           "--resamples", "0", "--format", "json")
    data = json.loads(out)
    assert code == 0 and "ci" not in data and "RMG" in data["metrics"]


# ---------------------------------------------------------------------------------------------
# raw and after a method side by side: intervals, clusters, the trade-off, figures
# ---------------------------------------------------------------------------------------------
def test_before_after_intervals_are_bootstrap_ci_and_paired_comparison_in_one_pass():
    from gapviz.intervals import before_after_intervals, pair_outcomes

    X, Y = gaussian_pairs(150, 12, seed=21, shift=1.5)
    Xt, Yt = X - X.mean(0), Y - Y.mean(0)
    raw, after = pair_outcomes(X, Y), pair_outcomes(Xt, Yt)
    both = before_after_intervals(raw, after, n_resamples=60, seed=4,
                                  measures=("RMG", "ITR", "hubness", "R@5"))
    for side, o in ((both.before, raw), (both.after, after)):
        alone = bootstrap_ci(o, n_resamples=60, seed=4)
        assert side.estimate == alone.estimate
        assert side.ci == alone.ci
    assert both.comparison == paired_comparison(after, raw, n_resamples=60, seed=4,
                                                measures=("RMG", "ITR", "hubness", "R@5"))
    # centering shrinks the relative gap of a shifted pair of clouds: more than noise
    rmg = both.comparison["RMG"]
    assert rmg["a"] < rmg["b"] and rmg["difference"] < 0 and rmg["significant"]
    assert both.comparison["ITR"]["scale"] == "log"


def test_before_after_intervals_need_the_same_pairs():
    from gapviz.intervals import before_after_intervals, pair_outcomes

    X, Y = gaussian_pairs(40, 6, seed=2)
    with pytest.raises(ValueError, match="same scored pairs"):
        before_after_intervals(pair_outcomes(X, Y), pair_outcomes(X[:30], Y[:30]))


def test_clusters_like_another_anatomy_keep_its_groups():
    pairs = simulate_pairs(300, 32, seed=16)
    X, Y = pairs.image_embeddings, pairs.text_embeddings
    raw = cluster_gaps(X, Y, n_clusters=4, seed=0)
    Xt, Yt = X - X.mean(0), Y - Y.mean(0)
    after = cluster_gaps(Xt, Yt, like=raw)
    assert np.array_equal(after.assignment, raw.assignment)
    assert after.names == raw.names and after.source == "kmeans" and after.k == 4
    for row in after.rows:
        idx = raw.members(row["cluster"])
        assert row["n"] == idx.size
        assert row["RMG"] == pytest.approx(relative_modality_gap(Xt[idx], Yt[idx]), abs=1e-9)
        assert row["ITR"] == pytest.approx(measure_gap(Xt[idx], Yt[idx]).metrics["ITR"])
    whole = gap_anatomy(Xt, Yt, cluster_like=raw, intervals=False)
    assert [r["RMG"] for r in whole.clusters.rows] == [r["RMG"] for r in after.rows]
    with pytest.raises(ValueError, match="clusters given are of 300 pairs"):
        cluster_gaps(Xt[:100], Yt[:100], like=raw)


def test_gap_intensity_shades_infinite_darkest_and_follows_each_direction():
    from gapviz.figures.anatomy import LARGEST_FINITE_SHADE, gap_intensity

    itr = gap_intensity([129.0, math.inf, 3.0, math.nan, 1.0, None], "ITR")
    assert itr[1] == 1.0 and itr[0] == LARGEST_FINITE_SHADE < 1.0
    assert itr[4] == 0.0 and itr[3] is None and itr[5] is None
    # ITR is read on a log scale around 1: 3 is log(3)/log(129) of the way
    assert itr[2] == pytest.approx(LARGEST_FINITE_SHADE * math.log(3) / math.log(129))
    assert gap_intensity([0.2, 0.6, 0.4], "R@5") == pytest.approx([1.0, 0.0, 0.5])  # lower recall
    assert gap_intensity([0.2, 0.6, 0.4], "RMG") == pytest.approx([0.0, 1.0, 0.5])
    assert gap_intensity([0.3, 0.3], "paired_cosine_distance") == [0.0, 0.0]


@pytest.mark.parametrize("lo, hi, expected", [
    (0.47667, 0.50253, [0.47, 0.48, 0.49, 0.5, 0.51]),
    (0.0, 1.0, [0.0, 0.25, 0.5, 0.75, 1.0]),
    (0.31, 0.31, [0.306, 0.308, 0.31, 0.312, 0.314]),  # one value: 1% either side
])
def test_nice_ticks_are_round(lo, hi, expected):
    from gapviz.figures.anatomy import nice_ticks

    assert nice_ticks(lo, hi) == pytest.approx(expected)


def test_dimension_figure_says_what_it_shows_and_ticks_rmg_roundly():
    from gapviz.figures.anatomy import dimension_figure

    X, Y = gaussian_pairs(200, 40, seed=5, shift=2.0)
    anat = gap_anatomy(X, Y, intervals=False, clusters=False, ablation_dims=8)
    fig = dimension_figure(anat.dimensions.to_list(30), anat.ablation.to_list(), n_dimensions=40)
    titles = [a.text for a in fig.layout.annotations]
    assert "Where the centroid gap lives (top 30 of 40 dimensions)" in titles
    share30 = sum(d["share"] for d in anat.dimensions.to_list(30))
    assert f"top 30: {share30:.0%}" in titles
    rmg_axis = next(ax for name, ax in fig.layout.to_plotly_json().items()
                    if name.startswith("yaxis") and ax.get("title", {}).get("text") == "RMG")
    ticks = rmg_axis["tickvals"]
    rmg = anat.ablation.rmg
    assert ticks[0] <= rmg.min() and ticks[-1] >= rmg.max()
    steps = np.round(np.diff(ticks), 12)
    assert np.allclose(steps, steps[0])
    mantissa = steps[0] / 10 ** math.floor(math.log10(steps[0]) + 1e-9)
    assert any(math.isclose(mantissa, m, rel_tol=1e-6) for m in (1, 2, 2.5, 5))
    assert rmg_axis["tickformat"] in (".0f", ".1f", ".2f", ".3f", ".4f")


def test_interval_figure_puts_runs_side_by_side():
    from gapviz.figures.anatomy import interval_figure

    runs = {"Raw": ({"RMG": 0.5, "R@5": 0.1}, {"RMG": (0.45, 0.55), "R@5": (0.05, 0.2)}),
            "Spectral, k = 60": ({"RMG": 0.3, "R@5": 0.4}, {"RMG": (0.28, 0.33), "R@5": (0.3, 0.5)})}
    fig = interval_figure(runs, ("RMG", "R@5", "hubness"))
    assert len(fig.data) == 4  # two measures (hubness is absent) x two runs
    rmg_after = next(t for t in fig.data if t.name == "Spectral, k = 60" and t.xaxis == "x")
    assert list(rmg_after.y) == [0.3]
    assert list(rmg_after.error_y.array) == pytest.approx([0.03])
    assert list(rmg_after.error_y.arrayminus) == pytest.approx([0.02])
    assert [t.showlegend for t in fig.data] == [True, False, True, False]


def test_tradeoff_points_say_how_each_run_was_obtained():
    pairs = simulate_pairs(240, 24, seed=9)
    X, Y = pairs.image_embeddings, pairs.text_embeddings
    seen = []
    data = RunData.of(pairs)
    specs = tradeoff_specs(data.n, data.dim, spectral_ks=(5, 20, 500),
                           methods=("center", "procrustes"))
    points = Runner().tradeoff(specs, data, progress=lambda f, m: seen.append((f, m)))
    assert [p["label"] for p in points] == ["spectral k=5", "spectral k=20", "Mean-centering",
                                            "Procrustes (held-out)"]
    assert [f for f, _ in seen] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # k = 500 is too large
    assert [p["protocol"] for p in points] == ["transductive", "transductive", "transductive",
                                               "held-out"]
    assert points[3]["n_fit"] == 240 - 240 // 5 and points[3]["n_scored"] == 240
    assert "5-fold cross-fit" in points[3]["how"]
    # spectral k = 20 is the slice of one fit: the same as a fit of its own at k = 20
    from gapviz.methods import make_method

    own = Runner.resolved_params(RunSpec.make("spectral", {"n_components": 20}), 240, 24)
    Xt, Yt = make_method("spectral", **own).fit_transform(X, Y)
    assert points[1]["rmg_after"] == pytest.approx(relative_modality_gap(Xt, Yt), rel=1e-6)
    rmg_raw = relative_modality_gap(X, Y)
    for p in points:
        assert p["rmg_before"] == pytest.approx(rmg_raw)
        assert p["gap_closed"] == pytest.approx(1 - p["rmg_after"] / rmg_raw)
