"""The measures follow their reference definitions, checked against independent float64
reimplementations written here from the references (never against gapviz's own functions):

- RMG: Schrodi et al.'s ``compute_rmg`` (``lmb-freiburg/two-effects-one-trigger``,
  ``analysis/gap_precompute.py``): only a mean paired distance m <= 0 is replaced by 1e-3.
- NDCG@10 under MixBench's protocol (``yuhui-zh15/MixedModalitySearch``,
  ``src/retrieval_mixbench.py``), beside MixBench's formula on the paper's pool.
- The Fréchet distance on raw rows: pytorch-fid's ``calculate_frechet_distance``
  (``mseitzer/pytorch-fid``, ``src/pytorch_fid/fid_score.py``: ``np.cov`` statistics and
  ``scipy.linalg.sqrtm``).
- Hubness indices: scikit-hubness's Robin Hood index, anti-hub and hub occurrence
  (``VarIr/scikit-hubness``, ``skhubness/analysis/estimation.py``; k = 10, hub_size = 2).
- ITR as an odds, and the tie rule's worked example in the README.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import linalg, stats

from gapviz import measure_info as mi
from gapviz.anatomy import (ablation_curve, antihub_occurrence, cluster_gaps, gap_anatomy,
                            hub_occurrence, mixbench_ndcg, mixbench_search, raw_frechet_distance,
                            relative_modality_gap, robin_hood_index)
from gapviz.intervals import bootstrap_ci, pair_outcomes
from gapviz.measures import frechet_distance, measure_gap

README = Path(__file__).resolve().parents[1] / "README.md"


def unit64(A):
    A = np.asarray(A, dtype=np.float64)
    return A / np.linalg.norm(A, axis=1, keepdims=True)


def on_circle(degrees):
    a = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.c_[np.cos(a), np.sin(a)]


# ---------------------------------------------------------------------------------------------
# RMG: Schrodi et al.'s compute_rmg
# ---------------------------------------------------------------------------------------------
def reference_rmg(X, Y):
    """compute_rmg for one caption per image, in float64 with full N x N matrices."""
    X, Y = unit64(X), unit64(Y)
    m = np.sum(X * Y, axis=1).mean()
    m = 1 - (m + 1) / 2
    m = m if m > 0 else 1e-3  # torch.where(m > 0, m, 1e-3)
    n = X.shape[0]
    ixi = X @ X.T
    np.fill_diagonal(ixi, 0)
    w_x = 1 - (ixi.sum() / (n * n - n) + 1) / 2
    txt = Y @ Y.T
    np.fill_diagonal(txt, 0)
    w_y = 1 - (txt.sum() / (n * n - n) + 1) / 2
    return m / (m + (w_x + w_y) / 2)


def near_coincident_pairs(n=60, d=16, noise=0.004, seed=0):
    rng = np.random.default_rng(seed)
    X = unit64(rng.standard_normal((n, d)))
    Y = unit64(X + noise * rng.standard_normal((n, d)))
    return X, Y


def test_rmg_keeps_a_small_positive_paired_distance():
    X, Y = near_coincident_pairs()
    assert np.mean(np.sum(X * Y, axis=1)) > 0.998  # the case the old floor overstated
    ref = reference_rmg(X, Y)
    assert ref < 3e-4
    assert relative_modality_gap(X, Y) == pytest.approx(ref, rel=1e-6)
    # the floor of every m below 1e-3 would have given about ten times more
    w_x, w_y = ((1 - (np.sum(A @ A.T) - 60) / (60 * 59)) / 2 for A in (X, Y))
    w = (w_x + w_y) / 2
    assert 1e-3 / (1e-3 + w) > 8 * ref


def test_rmg_replaces_only_a_zero_paired_distance():
    # rows of +-1/2 in 4-D have exact unit norms in float32 and float64: pairs that coincide
    # give m = 0 exactly, which the reference (and gapviz) replace by 1e-3
    rng = np.random.default_rng(1)
    X = rng.choice([-0.5, 0.5], size=(30, 4))
    ref = reference_rmg(X, X)
    w = (1 - (np.sum(X @ X.T) - 30) / (30 * 29)) / 2
    assert ref == pytest.approx(1e-3 / (1e-3 + w), rel=1e-12)
    assert relative_modality_gap(X, X) == pytest.approx(ref, rel=1e-9)


def test_every_rmg_in_gapviz_follows_the_reference():
    X, Y = near_coincident_pairs(n=80, seed=2)
    ref = reference_rmg(X, Y)
    # the ablation curve's first point (nothing removed) and the bootstrap's estimate
    assert ablation_curve(X, Y, 2).rmg[0] == pytest.approx(ref, rel=1e-5)
    est = bootstrap_ci(pair_outcomes(X, Y, hubness=False), n_resamples=10).estimate["RMG"]
    assert est == pytest.approx(ref, rel=1e-5)
    # the anatomy and a cluster's row
    assert gap_anatomy(X, Y, clusters=False, intervals=False).metrics["RMG"] == pytest.approx(ref, rel=1e-5)
    rows = cluster_gaps(X, Y, labels=["a"] * 40 + ["b"] * 40).rows
    assert rows[0]["RMG"] == pytest.approx(reference_rmg(X[:40], Y[:40]), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# NDCG@10: MixBench's formula on the paper's pool vs MixBench's protocol
# ---------------------------------------------------------------------------------------------
def reference_mixbench(X, Y, *, seed=0, renderings=("text", "image", "mixed"), alpha=0.5, k=10):
    """MixBench's protocol as documented by gapviz, written from scratch in float64: the deal
    of renderings, the corpus, the queries, ranks with a tie against the query, the gains."""
    X, Y = unit64(X), unit64(Y)
    n = X.shape[0]
    perm = np.random.default_rng(seed).permutation(n)
    mode = np.empty(n, dtype=object)
    for i in range(n):
        mode[perm[i]] = renderings[i % len(renderings)]
    D = np.empty_like(X)
    for j in range(n):
        if mode[j] == "image":
            D[j] = X[j]
        elif mode[j] == "text":
            D[j] = Y[j]
        else:
            v = alpha * Y[j] + (1 - alpha) * X[j]
            D[j] = v / max(np.linalg.norm(v), 1e-12)  # torch's normalize: 0 stays 0
    queries = [q for q in range(n) if mode[q] == "image"]
    ranks = []
    for q in queries:
        s = D @ Y[q]
        others = np.delete(s, q)
        ranks.append(1 + int(np.sum(others >= s[q] - 1e-12)))
    ranks = np.array(ranks)
    gains = np.where(ranks <= k, 1 / np.log2(1 + ranks), 0.0)
    return mode, np.array(queries), ranks, gains.mean(), D


def test_mixbench_protocol_matches_a_float64_reimplementation():
    rng = np.random.default_rng(3)
    n, d = 90, 12
    X = rng.standard_normal((n, d)) + 2.0
    Y = rng.standard_normal((n, d)) - 1.0 + 0.5 * X
    mode, queries, ranks, ndcg, _ = reference_mixbench(X, Y, seed=7)
    got = mixbench_search(X, Y, seed=7)
    assert list(got.renderings) == list(mode)
    assert np.array_equal(got.queries, queries)
    assert np.array_equal(got.ranks, ranks)
    assert got.ndcg(10) == pytest.approx(ndcg, abs=1e-12)
    assert mixbench_ndcg(X, Y, seed=7) == pytest.approx(ndcg, abs=1e-12)
    small = mixbench_search(X, Y, seed=7, block_values=4 * n)  # many panels of 4 queries
    assert np.array_equal(small.ranks, ranks)
    assert got.describe()["renderings"] == {"image": 30, "mixed": 30, "text": 30}


def test_mixbench_equals_its_reference_ndcg_score_without_ties():
    # MixBench scores each query by sklearn's ndcg_score of the top 10 documents; with one
    # relevant document and no exact ties that is 1 / log2(1 + rank) or 0
    from sklearn.metrics import ndcg_score

    rng = np.random.default_rng(4)
    X, Y = rng.standard_normal((60, 8)), rng.standard_normal((60, 8))
    Y = 0.6 * X + Y
    mode, queries, _, _, D = reference_mixbench(X, Y)
    Yn = unit64(Y)
    scores = []
    for q in queries:
        sims = D @ Yn[q]
        top = np.argsort(-sims)[:10]
        rel = [1 if j == q else 0 for j in top]
        scores.append(ndcg_score([rel], [sims[top]], k=10) if any(rel) else 0.0)
    assert mixbench_ndcg(X, Y) == pytest.approx(np.mean(scores), abs=1e-12)


def test_mixbench_ties_count_against_the_query():
    # rows of +-1/2 in 4-D: cosines are exact (0, +-1/2, +-1) and many documents tie
    rng = np.random.default_rng(5)
    X = rng.choice([-0.5, 0.5], size=(40, 4))
    Y = rng.choice([-0.5, 0.5], size=(40, 4))
    Y[:10] = X[:10]  # some captions coincide with their image
    for renderings in (("text", "image", "mixed"), ("image", "text")):
        _, queries, ranks, ndcg, _ = reference_mixbench(X, Y, seed=1, renderings=renderings)
        got = mixbench_search(X, Y, seed=1, renderings=renderings)
        assert np.array_equal(got.queries, queries) and np.array_equal(got.ranks, ranks)
        assert got.ndcg() == pytest.approx(ndcg, abs=1e-12)
    assert ranks.max() > 1 and len(set(ranks)) > 2


def test_mixbench_is_not_the_pool_measure_and_checks_its_options():
    rng = np.random.default_rng(6)
    X, Y = rng.standard_normal((50, 6)) + 3, rng.standard_normal((50, 6)) - 3
    a = gap_anatomy(X, Y, clusters=False, intervals=False)
    assert a.metrics["NDCG@10_mixbench"] == pytest.approx(reference_mixbench(X, Y)[3], abs=1e-12)
    pool = measure_gap(X, Y).i2t_rank  # the paper's pool: image queries, 2N items
    assert a.metrics["NDCG@10"] == pytest.approx(np.mean(np.where(pool <= 10, 1 / np.log2(1 + pool), 0)))
    with pytest.raises(ValueError, match="must include 'image'"):
        mixbench_search(X, Y, renderings=("text", "mixed"))
    with pytest.raises(ValueError, match="non-empty sequence"):
        mixbench_search(X, Y, renderings=("image", "video"))
    with pytest.raises(ValueError, match="alpha must be between 0 and 1"):
        mixbench_search(X, Y, alpha=1.5)
    # no gap at all: every caption finds its image first
    assert mixbench_ndcg(X, X) == 1.0


# ---------------------------------------------------------------------------------------------
# Fréchet distance on raw rows: pytorch-fid
# ---------------------------------------------------------------------------------------------
def pytorch_fid_distance(A, B):
    """pytorch-fid's statistics (np.mean, np.cov) and calculate_frechet_distance (sqrtm of the
    covariance product, real part), in float64."""
    mu1, mu2 = A.mean(axis=0), B.mean(axis=0)
    s1, s2 = np.cov(A, rowvar=False), np.cov(B, rowvar=False)
    covmean = linalg.sqrtm(s1.dot(s2))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("n, d", [(400, 12), (300, 40)])
def test_raw_frechet_matches_pytorch_fid_in_float64(n, d):
    rng = np.random.default_rng(n + d)
    X = 4.0 * rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) / np.sqrt(d) + 3.0
    Y = 2.0 * rng.standard_normal((n, d)) - 1.0
    ref = pytorch_fid_distance(X, Y)
    assert raw_frechet_distance(X, Y) == pytest.approx(ref, rel=1e-9)
    # the normalised rows give a much smaller number: the two keys are not the same measure
    assert frechet_distance(unit64(X), unit64(Y)) < ref / 10


def test_raw_frechet_is_absent_for_unit_rows_and_reported_by_the_anatomy():
    rng = np.random.default_rng(8)
    X, Y = 5 * rng.standard_normal((120, 6)) + 2, 3 * rng.standard_normal((120, 6))
    assert raw_frechet_distance(unit64(X), unit64(Y)) is None
    a = gap_anatomy(X, Y, clusters=False, intervals=False, raw=(X, Y))
    assert a.metrics["frechet_raw"] == pytest.approx(pytorch_fid_distance(X, Y), rel=1e-9)
    # pairs reordered within a modality (a shuffled control): each Gaussian is unchanged
    perm = rng.permutation(120)
    assert raw_frechet_distance(X, Y[perm]) == pytest.approx(a.metrics["frechet_raw"], rel=1e-9)
    assert "frechet_raw" not in gap_anatomy(X, Y, clusters=False, intervals=False).metrics
    assert "frechet_raw" not in measure_gap(X, Y).metrics  # not on the hot path


def test_cli_anatomy_reports_the_raw_frechet_distance(tmp_path, capsys):
    from gapviz.cli import main
    from gapviz.embeddings import PairedEmbeddings, save_embeddings

    rng = np.random.default_rng(9)
    X = (6 * rng.standard_normal((150, 8)) + 4).astype(np.float32)
    Y = (2 * rng.standard_normal((150, 8)) - 1).astype(np.float32)
    path = tmp_path / "raw.npz"
    save_embeddings(PairedEmbeddings(X, Y, model="raw rows"), path)
    assert main(["evaluate", str(path), "--anatomy", "--resamples", "0", "--clusters", "2",
                 "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    metrics = data["metrics"]
    ref = pytorch_fid_distance(X.astype(np.float64), Y.astype(np.float64))
    assert metrics["frechet_raw"] == pytest.approx(ref, rel=1e-4)  # float32 covariance products
    assert metrics["frechet"] < metrics["frechet_raw"] / 10
    for key in ("NDCG@10_mixbench", "robinhood", "antihub_occurrence", "hub_occurrence"):
        assert key in metrics, key
    assert data["anatomy"]["ndcg_mixbench"]["queries"] == 50
    assert data["anatomy"]["hubness"] == {"k": 10, "hub_size": 2.0, "items": 300,
                                          "definitions": "scikit-hubness (skhubness.analysis.Hubness)"}
    assert main(["evaluate", str(path), "--anatomy", "--resamples", "0", "--clusters", "2"]) == 0
    out = capsys.readouterr().out
    assert "under MixBench's protocol (50 caption queries, 150 documents" in out
    assert "Robin Hood" in out and "Fréchet on the file's raw rows (not normalised)" in out


# ---------------------------------------------------------------------------------------------
# hubness indices: scikit-hubness
# ---------------------------------------------------------------------------------------------
def skhubness_indices(k_occurrence, k, n_test, hub_size=2.0):
    """scikit-hubness's formulas (Hubness._calc_*), on a k-occurrence array."""
    c = np.asarray(k_occurrence)
    robinhood = 0.5 * float(np.sum(np.abs(c - c.mean()))) / float(np.sum(c))
    antihubs = np.argwhere(c == 0).ravel()
    hubs = np.argwhere(c >= hub_size * k).ravel()
    return {"hubness": stats.skew(c), "robinhood": robinhood,
            "antihub_occurrence": antihubs.size / c.size,
            "hub_occurrence": c[hubs].sum() / k / n_test}


def test_hub_indices_on_hand_made_counts():
    counts = np.array([20, 19, 0, 0, 1, 10, 30, 0])  # k = 10: hubs have >= 20 (20 and 30)
    ref = skhubness_indices(counts, 10, 8)
    assert robin_hood_index(counts) == pytest.approx(ref["robinhood"])
    assert antihub_occurrence(counts) == pytest.approx(3 / 8)
    assert hub_occurrence(counts, 10) == pytest.approx((20 + 30) / 10 / 8)
    assert hub_occurrence(counts, 10) == pytest.approx(ref["hub_occurrence"])


def test_hubness_indices_match_scikit_hubness_on_a_pool_with_ties():
    # rows of +-1/2 in 4-D: 16 directions for 80 items, so neighbours tie everywhere; float32
    # and float64 cosines are both exact, and ties go to the lower index in both
    rng = np.random.default_rng(13)
    X = rng.choice([-0.5, 0.5], size=(40, 4))
    Y = rng.choice([-0.5, 0.5], size=(40, 4))
    Z = np.vstack([X, Y])
    S = Z @ Z.T
    np.fill_diagonal(S, -np.inf)
    neighbours = np.argsort(-S, axis=1, kind="stable")[:, :10]
    counts = np.bincount(neighbours.ravel(), minlength=80)
    ref = skhubness_indices(counts, 10, 80)
    assert ref["antihub_occurrence"] > 0 and ref["hub_occurrence"] > 0  # both cases present
    a = gap_anatomy(X, Y, clusters=False, intervals=False)
    assert np.array_equal(a.neighbours, neighbours)
    for key, value in ref.items():
        assert a.metrics[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key
    assert a.to_json()["anatomy"]["hubness"]["hub_size"] == 2.0


# ---------------------------------------------------------------------------------------------
# ITR is an odds; the tie rule's worked example (README)
# ---------------------------------------------------------------------------------------------
TIE_X = on_circle([0, 0, 0, 90])   # three copies of one pair whose image and caption coincide,
TIE_Y = on_circle([0, 0, 0, 100])  # and one pair with its image at 90 deg, its caption at 100


def argmax_reading(X, Y, images_first: bool) -> tuple[float, float]:
    """ITR and TIR from np.argmax over the pool stacked [X; Y] or [Y; X] (float64)."""
    n = X.shape[0]
    Z = np.vstack([unit64(X), unit64(Y)] if images_first else [unit64(Y), unit64(X)])
    first, second = np.ones(n, bool), np.zeros(n, bool)
    image = np.r_[first, second] if images_first else np.r_[second, first]
    S = Z @ Z.T
    np.fill_diagonal(S, -np.inf)
    top_is_image = image[S.argmax(axis=1)]
    own_i, other_i = np.sum(top_is_image[image]), np.sum(~top_is_image[image])
    own_t, other_t = np.sum(~top_is_image[~image]), np.sum(top_is_image[~image])
    ratio = lambda a, b: math.inf if b == 0 else a / b  # noqa: E731
    return ratio(own_i, other_i), ratio(own_t, other_t)


def test_itr_is_the_odds_of_an_image_first():
    rng = np.random.default_rng(11)
    X, Y = rng.standard_normal((200, 8)) + 1.5, rng.standard_normal((200, 8))
    r = measure_gap(X, Y)
    p = np.mean(r.best_text_rank > 1)  # image queries that see an image first
    assert r.metrics["ITR"] == pytest.approx(p / (1 - p))
    assert "odds" in mi.help_text("ITR") and "p / (1 - p)" in mi.help_text("ITR")
    assert "2494 / 6 = 415.66" in mi.help_text("ITR")


def test_the_readme_tie_example_is_what_the_library_computes():
    r = measure_gap(TIE_X, TIE_Y)
    m = r.metrics
    assert (m["ITR"], m["TIR"], m["TMR"], m["IMR"]) == (3.0, 3.0, 2.5, 2.5)
    assert np.mean(r.i2t_rank == 1) == 0.25  # R@1: only the ordinary pair
    assert argmax_reading(TIE_X, TIE_Y, images_first=True) == (3.0, 0.0)
    assert argmax_reading(TIE_X, TIE_Y, images_first=False) == (0.0, 3.0)
    # the pool's order does not change gapviz's reading
    r2 = measure_gap(TIE_X[::-1].copy(), TIE_Y[::-1].copy())
    assert (r2.metrics["ITR"], r2.metrics["TIR"]) == (3.0, 3.0)
    text = " ".join(README.read_text(encoding="utf-8").split())
    for claim in ("gapviz reads ITR = TIR = 3", "TMR = IMR = 2.5 and R@1 = 0.25",
                  "ITR = 3 but TIR = 0", "it reads ITR = 0 and TIR = 3"):
        assert claim in text, claim


# ---------------------------------------------------------------------------------------------
# help texts say which number is which
# ---------------------------------------------------------------------------------------------
def test_help_texts_name_the_protocol_and_the_rows():
    assert "MixBench's formula on the paper's pool" in mi.help_text("NDCG@10")
    mix = mi.lookup("NDCG@10_mixbench")
    assert mix is not None and mix.direction == "higher" and "MixBench's protocol" in mix.help
    assert mi.lookup("NDCG@10").key == "NDCG@10"  # the pattern does not swallow the other key
    assert "on the L2-normalised rows" in mi.help_text("frechet")
    assert "on the file's raw rows" in mi.help_text("frechet_raw")
    for key in ("robinhood", "antihub_occurrence", "hub_occurrence"):
        assert "scikit-hubness" in mi.help_text(key) and mi.lookup(key).direction == "lower"
    assert "only when it is 0 or less" in mi.help_text("RMG")
