"""What closing buys: each gain against an independent computation (scikit-learn recomputed
directly, a dense float64 brute force with planted ties), the bootstrap's resampled values
against scikit-learn on the resampled items, a planted gap whose closing raises the V-measure
and empties the one-modality clusters, and the CLI's JSON and text."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn import metrics
from sklearn.linear_model import LogisticRegression

from gapviz import closing_gains as cg
from gapviz.closing_costs import pair_labels
from gapviz.intervals import gain_intervals, gain_measures_from_weights, resample_weights
from gapviz.measures import TIE_TOL_FLOAT64 as TOL
from gapviz.simulate import simulate_pairs
from reference import planted_ties

#: A gap that is a pure shift between strong concept clusters: centering closes it.
SHIFT_ONLY = dict(style=0.0, anisotropy=0.0, noise=0.3, detail=0.5, shift=1.5,
                  shift_spread_image=0.0, shift_spread_text=0.0, mispair=0.0)


# ---------------------------------------------------------------------------------------------
# dense float64 references, straight from the definitions
# ---------------------------------------------------------------------------------------------
def _pool_cosines(X, Y):
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    Z = np.vstack([X / np.linalg.norm(X, axis=1, keepdims=True),
                   Y / np.linalg.norm(Y, axis=1, keepdims=True)])
    return Z @ Z.T


def brute_requested(X, Y, k=10):
    """Per query, the share of the other modality in its top k of the mixed pool: all other
    items sorted by cosine, an own-modality item first among equal cosines (within TOL)."""
    n = len(X)
    S = _pool_cosines(X, Y)
    is_text = np.r_[np.zeros(n, bool), np.ones(n, bool)]
    k = min(k, 2 * n - 1)
    out = np.zeros(2 * n)
    for q in range(2 * n):
        others = [j for j in range(2 * n) if j != q]
        cos = S[q, others]
        other = is_text[others] != is_text[q]
        # equal within TOL = the same value: group cosines that close together
        level = np.empty(len(cos))
        order = np.argsort(-cos, kind="stable")
        current, start = 0, cos[order[0]]
        for j in order:
            if start - cos[j] > TOL:
                current += 1
                start = cos[j]
            level[j] = current
        ranked = sorted(range(len(cos)), key=lambda j: (level[j], other[j]))
        out[q] = np.count_nonzero(other[ranked[:k]]) / k
    return out[:n], out[n:]


def brute_substitution(X, Y, classes):
    """Per query, whether every other-modality item tied (within TOL) for nearest has its class."""
    n = len(X)
    S = _pool_cosines(X, Y)
    cls = np.r_[classes, classes]
    hits = np.zeros(2 * n, bool)
    for q in range(2 * n):
        cand = np.arange(n, 2 * n) if q < n else np.arange(n)
        cos = S[q, cand]
        tied = cand[cos >= cos.max() - TOL]
        hits[q] = bool(np.all(cls[tied] == cls[q]))
    return hits[:n], hits[n:]


def tied_grid(n, d, seed):
    """Pairs on a coarse integer grid: many exactly equal cosines, across and within modalities."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 2, size=(n, d)).astype(np.float64)
    Y = rng.integers(0, 2, size=(n, d)).astype(np.float64)
    X[~X.any(1), 0] = 1.0
    Y[~Y.any(1), 1] = 1.0
    return X, Y


CASES = [("gaussian", None), ("grid 3", 3), ("grid 5", 5), ("ties", "planted")]


def _case(kind, n, seed):
    if kind == "planted":
        got = planted_ties(n, 16, seed, -7.0, n_dup=n // 3, f64=True)
        assert got is not None
        return got
    if kind is None:
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(n, 24)) + 0.4
        return X.astype(np.float32), (X + rng.normal(size=(n, 24))).astype(np.float32)
    return tied_grid(n, kind, seed)


@pytest.mark.parametrize("name,kind", CASES)
@pytest.mark.parametrize("n,seed", [(7, 0), (40, 1), (90, 2)])
def test_requested_modality_and_substitution_equal_the_float64_brute_force(name, kind, n, seed):
    X, Y = _case(kind, n, seed)
    classes = np.random.default_rng(seed).integers(0, 3, n)
    got = cg.mixed_pool_search(X, Y, classes=classes, k=10)
    want_i, want_t = brute_requested(X, Y, 10)
    np.testing.assert_array_equal(got["requested_i2t"], want_i)
    np.testing.assert_array_equal(got["requested_t2i"], want_t)
    sub_i, sub_t = brute_substitution(X, Y, classes)
    np.testing.assert_array_equal(got["substitution_i2t"], sub_i)
    np.testing.assert_array_equal(got["substitution_t2i"], sub_t)
    if kind == 3 and n > 10:
        assert got["fallback_queries"] > 0  # the grid's ties go past the kept lists


def test_a_tie_at_the_kth_place_goes_to_the_query_own_modality():
    # image 0 = e1; images 1, 2 and texts 0, 1 all at the same cosine from it; with k = 2 the
    # two places go to the images, so image 0 sees no text in its top 2
    e = np.eye(4)
    X = np.array([e[0], e[0] + e[1], e[0] + e[2], e[3]])
    Y = np.array([e[0] - e[1], e[0] - e[2], e[3] + e[1], e[3] - e[1]])
    got = cg.mixed_pool_search(X, Y, k=2)
    assert got["requested_i2t"][0] == 0.0
    assert cg.mixed_pool_search(X, Y, k=3)["requested_i2t"][0] == pytest.approx(1 / 3)
    want_i, _ = brute_requested(X, Y, 2)
    assert want_i[0] == 0.0


def test_a_tie_for_nearest_counts_against_the_query():
    e = np.eye(3)
    X = np.array([e[0], e[1], e[2]])
    Y = np.array([e[0] + e[1], e[0] - e[1], e[2]])  # texts 0 and 1 tie for image 0
    i2t, _ = cg.substitution(X, Y, ["a", "b", "c"])
    hits = cg.mixed_pool_search(X, Y, classes=np.array([0, 1, 2]))["substitution_i2t"]
    assert not hits[0] and hits[2]
    assert cg.mixed_pool_search(X, Y, classes=np.array([0, 0, 2]))["substitution_i2t"][0]
    assert i2t == pytest.approx(float(hits.mean()))


def test_requested_modality_on_the_demo_equals_the_brute_force():
    p = simulate_pairs(300, 64)
    got = cg.mixed_pool_search(p.image_embeddings, p.text_embeddings, k=10)
    want_i, want_t = brute_requested(p.image_embeddings, p.text_embeddings, 10)
    np.testing.assert_array_equal(got["requested_i2t"], want_i)
    np.testing.assert_array_equal(got["requested_t2i"], want_t)
    assert cg.requested_modality(p.image_embeddings, p.text_embeddings) == (
        pytest.approx(want_i.mean()), pytest.approx(want_t.mean()))


# ---------------------------------------------------------------------------------------------
# grouping and transfer against scikit-learn
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_outcomes():
    p = simulate_pairs(400, 48, n_clusters=6)
    labels = pair_labels(p)
    return p, labels, cg.gain_outcomes(p.image_embeddings, p.text_embeddings, labels=labels, seed=3)


def test_grouping_scores_are_scikit_learn_on_the_pool(demo_outcomes):
    p, labels, o = demo_outcomes
    truth = np.r_[labels, labels]
    pred = np.r_[o.cluster_image, o.cluster_text]
    est = o.estimates()
    assert o.n_clusters == 6 and np.unique(pred).size <= 6
    assert est["kmeans_ari"] == pytest.approx(metrics.adjusted_rand_score(truth, pred), abs=1e-12)
    assert est["kmeans_nmi"] == pytest.approx(
        metrics.normalized_mutual_info_score(truth, pred, average_method="geometric"), abs=1e-12)
    assert est["kmeans_v_measure"] == pytest.approx(metrics.v_measure_score(truth, pred), abs=1e-12)
    modality = np.r_[np.zeros(p.n), np.ones(p.n)]
    shares = [modality[pred == c].mean() for c in np.unique(pred)]
    assert est["modality_purity"] == pytest.approx(np.mean([max(s, 1 - s) > 0.9 for s in shares]))


def test_the_pool_clusters_are_k_means_of_the_pool():
    # three tight groups of images and texts mixed: k-means finds them, whatever the modality
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:3] * 5
    cls = rng.integers(0, 3, 60)
    X = centres[cls] + 0.1 * rng.normal(size=(60, 8))
    Y = centres[cls] + 0.1 * rng.normal(size=(60, 8))
    clusters = cg.pool_clusters(X, Y, 3, seed=0)
    assert metrics.adjusted_rand_score(np.r_[cls, cls], clusters) == 1.0
    assert cg.modality_purity(clusters[:60], clusters[60:]) == 0.0
    assert cg.modality_purity(np.zeros(4, int), np.ones(4, int)) == 1.0
    # 9 images and 1 text in one cluster: 90% is not more than 90%
    assert cg.modality_purity(np.zeros(9, int), np.array([0])) == 0.0


def test_the_probe_is_a_logistic_regression_fitted_on_the_other_modality(demo_outcomes):
    p, labels, o = demo_outcomes
    from gapviz.measures import normalize_rows

    X = normalize_rows(p.image_embeddings).astype(np.float64)
    Y = normalize_rows(p.text_embeddings).astype(np.float64)
    want_i2t = LogisticRegression(C=1.0, max_iter=1000).fit(X, labels).score(Y, labels)
    want_t2i = LogisticRegression(C=1.0, max_iter=1000).fit(Y, labels).score(X, labels)
    est = o.estimates()
    assert est["probe_i2t"] == pytest.approx(want_i2t, abs=1e-12)
    assert est["probe_t2i"] == pytest.approx(want_t2i, abs=1e-12)


def test_without_labels_only_the_label_free_gains(demo_outcomes):
    p, _, _ = demo_outcomes
    k = cg.pool_k(p.image_embeddings, p.text_embeddings)
    assert 2 <= k <= 30
    o = cg.gain_outcomes(p.image_embeddings, p.text_embeddings, n_clusters=k)
    assert set(o.estimates()) == {"modality_purity", "requested_modality_i2t",
                                  "requested_modality_t2i"}
    with pytest.raises(ValueError, match="n_clusters"):
        cg.gain_outcomes(p.image_embeddings, p.text_embeddings)
    with pytest.raises(ValueError, match="one label per pair"):
        cg.gain_outcomes(p.image_embeddings, p.text_embeddings, labels=["a"])


# ---------------------------------------------------------------------------------------------
# intervals
# ---------------------------------------------------------------------------------------------
def test_resampled_gains_are_the_gains_of_the_resampled_items(demo_outcomes):
    p, labels, o = demo_outcomes
    labels = np.asarray(labels)
    ones = gain_measures_from_weights(o, np.ones((1, o.n)))
    for key, value in o.estimates().items():
        assert ones[key][0] == pytest.approx(value, abs=1e-12), key
    # a subsample without repeats: exactly scikit-learn's values on those pairs
    rng = np.random.default_rng(5)
    keep = rng.random(o.n) < 0.6
    got = {k: v[0] for k, v in gain_measures_from_weights(o, keep[None].astype(float)).items()}
    truth = np.r_[labels[keep], labels[keep]]
    pred = np.r_[o.cluster_image[keep], o.cluster_text[keep]]
    assert got["kmeans_ari"] == pytest.approx(metrics.adjusted_rand_score(truth, pred), abs=1e-12)
    assert got["kmeans_v_measure"] == pytest.approx(metrics.v_measure_score(truth, pred), abs=1e-12)
    assert got["kmeans_nmi"] == pytest.approx(
        metrics.normalized_mutual_info_score(truth, pred, average_method="geometric"), abs=1e-12)
    assert got["requested_modality_i2t"] == pytest.approx(o.requested_i2t[keep].mean())
    assert got["probe_t2i"] == pytest.approx(o.probe_t2i[keep].mean())
    # with repeats: V-measure as scikit-learn on the repeated items; the ARI over pairs of two
    # different items (a pair and its own copy always agree: left out)
    w = resample_weights(o.n, 1, 2)[0]
    idx = np.repeat(np.arange(o.n), w.astype(int))
    got = {k: v[0] for k, v in gain_measures_from_weights(o, w[None]).items()}
    truth = np.r_[labels[idx], labels[idx]]
    pred = np.r_[o.cluster_image[idx], o.cluster_text[idx]]
    assert got["kmeans_v_measure"] == pytest.approx(metrics.v_measure_score(truth, pred), abs=1e-12)
    item = np.r_[idx, idx + o.n]  # which of the 2N pool items each draw is
    same_c = truth[:, None] == truth[None, :]
    same_k = pred[:, None] == pred[None, :]
    distinct = item[:, None] != item[None, :]
    tp = np.sum(same_c & same_k & distinct)
    fp = np.sum(~same_c & same_k & distinct)
    fn = np.sum(same_c & ~same_k & distinct)
    tn = np.sum(~same_c & ~same_k & distinct)
    want = 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))
    assert got["kmeans_ari"] == pytest.approx(want, rel=1e-9)


def test_intervals_before_and_after_from_the_same_resamples(demo_outcomes):
    p, labels, o = demo_outcomes
    X, Y = p.image_embeddings, p.text_embeddings
    after = cg.gain_outcomes(X - X.mean(0), Y - Y.mean(0), labels=labels, seed=3)
    both = gain_intervals(o, after, n_resamples=50, seed=1)
    assert set(both.before.ci) == set(o.estimates())
    for key, (lo, hi) in both.after.ci.items():
        assert lo <= hi, key
    for key in ("requested_modality_i2t", "substitution_i2t", "probe_i2t", "kmeans_ari",
                "modality_purity"):
        lo, hi = both.before.ci[key]
        assert lo <= both.before.estimate[key] <= hi, key
    change = both.comparison["kmeans_v_measure"]
    assert change["difference"] == pytest.approx(after.estimates()["kmeans_v_measure"]
                                                 - o.estimates()["kmeans_v_measure"])
    # V-measure and NMI: basic intervals, the percentile interval reflected about the estimate
    from gapviz.intervals import _percentile_interval

    s = gain_measures_from_weights(o, resample_weights(o.n, 50, 1))["kmeans_v_measure"]
    plo, phi = _percentile_interval(s, 0.05)
    est = o.estimates()["kmeans_v_measure"]
    assert both.before.ci["kmeans_v_measure"] == pytest.approx(
        (max(0.0, 2 * est - phi), min(1.0, 2 * est - plo)))


# ---------------------------------------------------------------------------------------------
# closing the planted gap
# ---------------------------------------------------------------------------------------------
def test_closing_a_shift_raises_v_measure_and_empties_the_one_modality_clusters():
    p = simulate_pairs(300, 32, n_clusters=5, **SHIFT_ONLY)
    X, Y = p.image_embeddings, p.text_embeddings
    got = cg.closing_gains(X, Y, X - X.mean(0), Y - Y.mean(0), labels=pair_labels(p),
                           n_resamples=100)
    m = got["measures"]
    assert got["n_clusters"] == 5 and got["labels"] and got["k_requested"] == 10
    assert m["kmeans_v_measure"]["after"] > m["kmeans_v_measure"]["before"] + 0.3
    assert m["kmeans_v_measure"]["significant"] and m["kmeans_v_measure"]["ci_change"][0] > 0
    assert m["modality_purity"]["before"] == 1.0 and m["modality_purity"]["after"] == 0.0
    for key in ("probe_i2t", "substitution_i2t", "requested_modality_i2t", "kmeans_ari"):
        assert m[key]["after"] > m[key]["before"], key
        lo, hi = m[key]["ci_after"]
        assert lo <= m[key]["after"] <= hi
    json.dumps(got)  # JSON-serialisable as the CLI writes it


def test_gains_without_a_method_and_without_intervals():
    p = simulate_pairs(120, 16, n_clusters=4)
    got = cg.closing_gains(p.image_embeddings, p.text_embeddings, labels=pair_labels(p),
                           n_resamples=0)
    row = got["measures"]["kmeans_v_measure"]
    assert set(row) == {"before"} and "ci_method" not in got
    assert math.isfinite(row["before"])


def test_compare_rows_with_gains_are_each_runs_gains():
    from gapviz.compare import GAIN_COLUMNS, compare, with_gains
    from gapviz.embeddings import PairedEmbeddings

    p = simulate_pairs(150, 24, n_clusters=4, **SHIFT_ONLY)
    rows = with_gains(compare({"demo": p}, ["orig", "center"]), p, n_resamples=30)
    by = {r.method: r for r in rows}
    raw = cg.gain_outcomes(p.image_embeddings, p.text_embeddings, labels=pair_labels(p))
    for key in GAIN_COLUMNS:
        assert by["orig"].metrics[key] == pytest.approx(raw.estimates()[key]), key
        lo, hi = by["center"].ci[key]
        assert lo <= hi, key
    assert by["center"].metrics["kmeans_v_measure"] > by["orig"].metrics["kmeans_v_measure"]
    assert "kmeans_v_measure" not in by["orig"].run.metrics  # the run's own measures untouched
    bare = PairedEmbeddings(p.image_embeddings, p.text_embeddings)  # no labels
    rows = with_gains(compare({"bare": bare}, ["orig"]), {"bare": bare}, n_resamples=0,
                      n_clusters={"bare": 4})
    assert {k for k in GAIN_COLUMNS if k in rows[0].metrics} == {
        "modality_purity", "requested_modality_i2t", "requested_modality_t2i"}
    assert rows[0].ci == {}


# ---------------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------------
def test_evaluate_anatomy_json_has_the_gains_with_intervals(capsys):
    from gapviz.cli import main

    assert main(["evaluate", "demo", "--n", "300", "--dim", "32", "--method", "center",
                 "--anatomy", "--resamples", "20", "--ablation-dims", "2", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    gains = out["closing_gains"]
    assert gains["labels"] and gains["n_clusters"] == 20
    assert "concept clusters" in gains["labels_from"]
    for key in cg.GAIN_KEYS:
        row = gains["measures"][key]
        assert {"before", "after", "change", "ci_before", "ci_after", "ci_change",
                "p_value"} <= set(row), key
        assert len(row["ci_after"]) == 2
        assert out["metrics"][key] == pytest.approx(row["after"])
        assert out["metrics_orig"][key] == pytest.approx(row["before"])
    assert gains["ci_method"]["n_resamples"] == 20


def test_evaluate_anatomy_text_shows_what_closing_buys(capsys):
    from gapviz.cli import main

    assert main(["evaluate", "demo", "--n", "200", "--dim", "32", "--method", "center",
                 "--anatomy", "--resamples", "20", "--ablation-dims", "2"]) == 0
    text = capsys.readouterr().out
    assert "what closing buys (ORIG -> CENTER" in text
    assert "V-measure (pool)" in text and "Requested i→t" in text


# ---------------------------------------------------------------------------------------------
# the app: the Anatomy page's tab and Compare's columns
# ---------------------------------------------------------------------------------------------
def _table(at, column):
    """The first table with this column (non-selectable tables carry no key in AppTest)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def test_anatomy_shows_what_closing_buys_raw_and_after(app_session, assert_clean):
    from gapviz.measure_info import format_metric, info

    at = app_session("pages/anatomy.py")
    assert_clean(at, "Anatomy")
    gains = _table(at, "gain").set_index("gain")
    assert list(gains.columns) == ["raw", "raw 95%", "after", "after 95%", "after − raw",
                                   "change 95%", "more than noise", "definition"]
    assert [info(k).label for k in cg.GAIN_KEYS] == list(gains.index)
    pairs = at.session_state["workspace"].active.pairs
    raw = cg.gain_outcomes(pairs.image_embeddings, pairs.text_embeddings,
                           labels=pair_labels(pairs), n_clusters=20).estimates()
    for key in ("kmeans_v_measure", "modality_purity", "requested_modality_i2t", "probe_i2t"):
        assert gains.loc[info(key).label, "raw"] == format_metric(key, raw[key]), key
        assert gains.loc[info(key).label, "raw 95%"].startswith("[")
        assert gains.loc[info(key).label, "definition"] == info(key).help
    # spectral (the page's default method) groups the pool by meaning: every cluster mixed
    assert gains.loc["Modality purity", "after"] == "0.0%"
    v_measure = gains.loc["V-measure (pool)"]
    assert float(v_measure["after"]) > 0.5 > float(v_measure["raw"])
    caption = next(c.value for c in at.caption if "Grouping: seeded k-means (k = 20" in c.value)
    assert "concept clusters" in caption and "transductive" in caption
    at.selectbox(key="anatomy_method").set_value("center").run()
    assert_clean(at, "center")
    after = _table(at, "gain").set_index("gain")
    assert list(after["raw"]) == list(gains["raw"])  # the raw side is the same, cached
    assert after.loc["Requested i→t", "after"] != gains.loc["Requested i→t", "after"]


def test_compare_has_the_gain_columns(app_session, assert_clean, simulated_workspace):
    from gapviz.compare import GAIN_COLUMNS

    at = app_session("pages/compare.py",
                     workspace=simulated_workspace(120, 32, "Small", profiles=["clip"]))
    assert_clean(at, "Compare")
    assert not set(GAIN_COLUMNS) & set(at.dataframe[0].value.columns)  # on request only
    at.toggle(key="compare_gains").set_value(True).run()
    assert_clean(at, "Compare with gains")
    table = at.dataframe[0].value
    assert set(GAIN_COLUMNS) <= set(table.columns)
    assert table.loc["spectral", "modality_purity"] < table.loc["orig", "modality_purity"]
    cis = _table(at, "V-measure (pool)")
    assert len(cis) == len(table)
    assert all(re_ci(v) for v in cis["V-measure (pool)"])
    assert any("What closing buys, each run's scored pairs" in c.value for c in at.caption)


def re_ci(text):
    import re

    return re.fullmatch(r"-?[\d.]+ \[-?[\d.]+, -?[\d.]+\]", text) is not None
