"""What closing the gap buys: grouping, transfer and search in the modality asked for.

:mod:`gapviz.closing_costs` says what a method loses; this module says what it gains, on the
same pairs before and after the method (the run's scored pairs, under its protocol). Recent
work finds the payoff of a closed gap mostly outside cross-modal R@1: clustering a mixed
image + text pool by meaning, classifiers that carry over from one modality to the other, and
searches that return the modality they asked for.

Notation as in :mod:`gapviz.measures`: N pairs, ``X`` (N, d) images, ``Y`` (N, d) texts, rows
L2-normalised here, similarity cosine; the mixed pool is ``Z = [X; Y]`` (2N items). Each item
takes its pair's label (the file's ``labels``, or the simulated demo's concept clusters:
:func:`gapviz.closing_costs.pair_labels`).

Measures
--------
- **Grouping on the mixed pool**: seeded k-means (:func:`gapviz.anatomy._kmeans`, k-means++
  starts, 3 of them, on the first 50 principal components of the 2N items) with k = the number
  of label classes; without labels, k is chosen once on the raw pairs by the per-cluster
  gap's rule (best silhouette of k-means on the joint embedding [x_i, y_i], k in 2 .. 30;
  :func:`gapviz.anatomy.cluster_pairs`) and kept for every method. With labels: ``kmeans_ari``
  (adjusted Rand index, Hubert & Arabie 1985), ``kmeans_nmi`` (normalised mutual information
  with the geometric mean of the entropies, Strehl & Ghosh 2002) and ``kmeans_v_measure``
  (Rosenberg & Hirschberg 2007; equal to NMI normalised by the arithmetic mean), as
  :mod:`sklearn.metrics` computes them. Always: ``modality_purity``, the share of (non-empty)
  clusters whose items are more than 90 % one modality. A pool that k-means splits by modality
  rather than by meaning is the gap seen as clusters (ModGap, ICLR 2026, reports V-measure
  gains of 10-17 points from closing it).
- **Cross-modal transfer** (with labels): ``probe_i2t``, the accuracy on the N texts of a
  linear probe (:class:`sklearn.linear_model.LogisticRegression`, C = 1, on the unit rows)
  fitted on the N images, and ``probe_t2i`` the reverse; ``substitution_i2t``, the share of
  image queries whose nearest text shares their label (their own caption counts: it always
  does), and ``substitution_t2i`` for text queries. A tie for the nearest item counts against
  the query: it is a hit only if every text tied for nearest shares the label.
- **Requested-modality rate**: ``requested_modality_i2t``, for an image query asking for
  texts, the share of texts among its top K = 10 in the mixed pool (the query left out);
  ``requested_modality_t2i``, for a text query asking for images, the share of images (as
  MMEB-V3 checks that a result is in the modality asked for). A tie between an item of the
  query's own modality and one of the other counts against the query: the own-modality item
  takes the place.

Exactness and cost
------------------
The two searches are one pass over the upper triangle of the pool's float32 similarities
(the panels and worker threads of :mod:`gapviz.anatomy`'s hubness pass: about 2 N^2 d
multiply-adds, as much as :func:`gapviz.measures.measure_gap`, memory O(N k + panel)), keeping
each item's 16 nearest pool items and its 6 nearest of the other modality. Every float32 cosine
is within h = :func:`gapviz.measures.float32_cosine_bound` of the exact one, so every item whose
exact cosine can reach a query's top K (its nearest other-modality item) is among those whose
float32 cosine is at least the K-th (first) float32 value less 2 h. When the kept list holds all
of them, their cosines are recomputed from the input rows in float64 and ranked with gapviz's
tie rule (equal within :data:`gapviz.measures.TIE_TOL_FLOAT64`); when it does not (many items
tied within 2 h, e.g. duplicated points), the query is compared in float64 with every item.
So both measures equal a dense float64 computation. k-means and the probe are O(N k 50 t) and
one logistic regression per direction.

Intervals
---------
:func:`gapviz.intervals.gain_intervals` resamples pairs (the same B seeded resamples of
:func:`gapviz.intervals.resample_weights` before and after). The search measures resample the
queries with the pool kept whole, as every mixed-pool measure does; the probe's accuracy
resamples the scored items with the probe held fixed; the grouping measures resample the
pairs (an image and its text together) with the partition held fixed: k-means is not rerun per
resample (200 reruns would take minutes), so the intervals leave out k-means' own variability,
as the method's intervals leave out the fit's. The ARI leaves out the pairs of an item and its
own repeat; NMI and V-measure get basic (bias-corrected) intervals, which lie below an
estimate that is mostly the plug-in bias of a sparse classes x clusters table.

HDBSCAN is not offered: on the demo it took 1-1.5 s per embedding on 2 cores (longer than the
rest of the gains together) and its clusters hinge on a minimum cluster size with no natural
default for a pool of 2N items.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numba
import numpy as np

from .anatomy import (KMEANS_COMPONENTS, KMEANS_MIN_PAIRS, _kmeans, _panel_loop, _push,
                      _randomized_pca, _TopK, _workers, cluster_pairs)
from .config import BLOCK_VALUES
from .score_terms import ScoreTerms
from .measures import (TIE_TOL_FLOAT64, _dot64, _exact_source, _unit_rows,
                       float32_cosine_bound, normalize_rows)
from .threads import one_blas_thread

#: Results per query of the requested-modality rate.
REQUESTED_K = 10
#: A cluster is of one modality when more than this share of its items are.
PURITY_THRESHOLD = 0.9
#: Starts of the mixed pool's k-means (the lowest inertia kept).
KMEANS_STARTS = 3
#: C of the transfer probe's logistic regression (scikit-learn's default).
PROBE_C = 1.0
PROBE_MAX_ITER = 1000
#: Kept per item by the search pass: pool neighbours beyond K and nearest other-modality items,
#: so that the float32 band of a query's K-th (first) value is almost always held whole.
POOL_EXTRA = 6
CROSS_KEPT = 6

#: Every gain, in the order tables list them (without labels: purity and the requested rate).
GAIN_KEYS: tuple[str, ...] = ("kmeans_v_measure", "kmeans_ari", "kmeans_nmi", "modality_purity",
                              "probe_i2t", "probe_t2i", "substitution_i2t", "substitution_t2i",
                              "requested_modality_i2t", "requested_modality_t2i")


# ---------------------------------------------------------------------------------------------
# per-pair outcomes
# ---------------------------------------------------------------------------------------------
@dataclass
class GainOutcomes:
    """What closing buys, per pair, for one embedding of N pairs (:func:`gain_outcomes`).

    Attributes
    ----------
    requested_i2t, requested_t2i : ndarray of shape (N,)
        Per image (text) query, the share of texts (images) among its top ``k_requested``.
    cluster_image, cluster_text : ndarray of shape (N,), int
        k-means cluster of each image and each text of the mixed pool.
    n_clusters : int
        k of k-means.
    classes : ndarray of shape (N,), int, or None
        Each pair's label as an index into ``class_names`` (None without labels).
    class_names : list of str
        The distinct labels, sorted.
    substitution_i2t, substitution_t2i : ndarray of shape (N,), bool, or None
        Whether the query's nearest item of the other modality shares its label.
    probe_i2t : ndarray of shape (N,), bool, or None
        Whether text i gets its label from the probe fitted on the images.
    probe_t2i : ndarray of shape (N,), bool, or None
        Whether image i gets its label from the probe fitted on the texts.
    k_requested : int
        K of the requested-modality rate (at most 2N - 1).
    fallback_queries : int
        Queries compared with every item in float64 (their float32 band was not held whole).
    seconds : dict
        Wall time of each part.
    """

    requested_i2t: np.ndarray
    requested_t2i: np.ndarray
    cluster_image: np.ndarray
    cluster_text: np.ndarray
    n_clusters: int
    classes: np.ndarray | None = None
    class_names: list[str] = field(default_factory=list)
    substitution_i2t: np.ndarray | None = None
    substitution_t2i: np.ndarray | None = None
    probe_i2t: np.ndarray | None = None
    probe_t2i: np.ndarray | None = None
    k_requested: int = REQUESTED_K
    fallback_queries: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.requested_i2t.shape[0])

    @property
    def has_labels(self) -> bool:
        return self.classes is not None

    def estimates(self) -> dict[str, float]:
        """Each gain on all pairs: the keys of :data:`GAIN_KEYS` this embedding has (the label
        ones only with labels; the probes only with at least two classes)."""
        from sklearn import metrics

        clusters = np.r_[self.cluster_image, self.cluster_text]
        out = {"modality_purity": modality_purity(self.cluster_image, self.cluster_text),
               "requested_modality_i2t": float(self.requested_i2t.mean()),
               "requested_modality_t2i": float(self.requested_t2i.mean())}
        if self.classes is not None:
            truth = np.r_[self.classes, self.classes]
            out["kmeans_ari"] = float(metrics.adjusted_rand_score(truth, clusters))
            out["kmeans_nmi"] = float(metrics.normalized_mutual_info_score(
                truth, clusters, average_method="geometric"))
            out["kmeans_v_measure"] = float(metrics.v_measure_score(truth, clusters))
            out["substitution_i2t"] = float(self.substitution_i2t.mean())
            out["substitution_t2i"] = float(self.substitution_t2i.mean())
            if self.probe_i2t is not None:
                out["probe_i2t"] = float(self.probe_i2t.mean())
                out["probe_t2i"] = float(self.probe_t2i.mean())
        return {k: out[k] for k in GAIN_KEYS if k in out}


def gain_outcomes(X: np.ndarray, Y: np.ndarray, *, labels: Sequence[str] | None = None,
                  n_clusters: int | None = None, seed: int = 0, k: int = REQUESTED_K,
                  block_values: int = BLOCK_VALUES,
                  scores: ScoreTerms | None = None) -> GainOutcomes:
    """Every gain of N pairs, per pair (resampled by :func:`gapviz.intervals.gain_intervals`).

    Parameters
    ----------
    X, Y : ndarray of shape (N, d)
        Image and text embeddings (normalised here), e.g. a run's scored pairs.
    labels : sequence of N str, optional
        Each pair's class; the label-based gains are measured when given.
    n_clusters : int, optional
        k of k-means. Default: the number of classes with labels; without them it must be
        given (:func:`pool_k` chooses it once on the raw pairs).
    seed : int
        Seed of the PCA and of k-means' starts.
    k : int
        K of the requested-modality rate.
    block_values : int
        Upper bound on the float32 values of one similarity panel.
    scores : ScoreTerms, optional
        A score correction's terms of these pairs: the searches (requested-modality rate,
        substitution) rank on the corrected scores (:func:`gapviz.score_search.pool_search`);
        grouping and the probes read the embeddings, which a correction does not move.

    Returns
    -------
    GainOutcomes
    """
    seconds: dict[str, float] = {}
    X, Y = np.asarray(X), np.asarray(Y)
    if X.ndim != 2 or X.shape != Y.shape:
        raise ValueError(f"X and Y must be (N, d) arrays of the same shape, got {X.shape} and "
                         f"{Y.shape}.")
    n = X.shape[0]
    if n < 2:
        raise ValueError("the gains need at least 2 pairs.")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    classes, names = None, []
    if labels is not None:
        labels = [str(v) for v in labels]
        if len(labels) != n:
            raise ValueError(f"{len(labels)} labels for {n} pairs; give one label per pair.")
        uniq, classes = np.unique(np.asarray(labels), return_inverse=True)
        names = [str(v) for v in uniq]
    if n_clusters is None:
        if classes is None:
            raise ValueError("give n_clusters (k of k-means) or labels; pool_k chooses k on the "
                             "raw pairs.")
        n_clusters = len(names)
    if not 1 <= n_clusters <= 2 * n:
        raise ValueError(f"n_clusters must be in 1 .. {2 * n} (the items of the pool), got "
                         f"{n_clusters}.")

    t = time.perf_counter()
    if scores is None:
        search = mixed_pool_search(X, Y, classes=classes, k=k, block_values=block_values)
    else:
        from .score_search import pool_search

        search = {**pool_search(X, Y, scores, k_requested=k, classes=classes),
                  "fallback_queries": 0}
    seconds["search"] = time.perf_counter() - t
    t = time.perf_counter()
    clusters = pool_clusters(X, Y, n_clusters, seed=seed)
    seconds["kmeans"] = time.perf_counter() - t
    out = GainOutcomes(search["requested_i2t"], search["requested_t2i"], clusters[:n],
                       clusters[n:], int(n_clusters), classes, names,
                       search.get("substitution_i2t"), search.get("substitution_t2i"),
                       k_requested=search["k"], fallback_queries=search["fallback_queries"],
                       seconds=seconds)
    if classes is not None and len(names) >= 2:
        t = time.perf_counter()
        out.probe_i2t, out.probe_t2i = transfer_probe(X, Y, classes)
        seconds["probe"] = time.perf_counter() - t
    return out


def pool_k(X: np.ndarray, Y: np.ndarray, *, labels: Sequence[str] | None = None,
           n_clusters: int | None = None, seed: int = 0) -> int:
    """k of the mixed pool's k-means, chosen once on the raw pairs and kept for every method.

    The number of label classes when there are labels; else ``n_clusters`` when given; else
    the per-cluster gap's choice on the raw pairs (best silhouette of k-means on [x_i, y_i],
    k in 2 .. 30, :func:`gapviz.anatomy.cluster_pairs`), or 2 with too few pairs to choose on.
    """
    if labels is not None:
        return len(set(str(v) for v in labels))
    if n_clusters is not None:
        return int(n_clusters)
    if np.asarray(X).shape[0] < KMEANS_MIN_PAIRS:
        return 2
    return cluster_pairs(X, Y, None, seed=seed)[1]


# ---------------------------------------------------------------------------------------------
# grouping
# ---------------------------------------------------------------------------------------------
def pool_clusters(X: np.ndarray, Y: np.ndarray, n_clusters: int, *, seed: int = 0) -> np.ndarray:
    """Seeded k-means on the 2N unit rows of the mixed pool.

    k-means++ starts (:data:`KMEANS_STARTS`, the lowest inertia kept) and Lloyd iterations on
    the first ``KMEANS_COMPONENTS`` principal components of the pool (seeded randomized PCA),
    as the per-cluster gap clusters pairs (:func:`gapviz.anatomy.cluster_pairs`).

    Returns
    -------
    ndarray of shape (2N,), int
        Cluster of each pool item: images first, then texts.
    """
    Z = np.vstack([normalize_rows(X), normalize_rows(Y)]).astype(np.float64)
    with one_blas_thread(2):
        p = min(KMEANS_COMPONENTS, Z.shape[1], Z.shape[0] - 1)
        if 1 <= p < Z.shape[1]:
            Z = _randomized_pca(Z, p, seed)
        return _kmeans(Z, int(n_clusters), seed, n_init=KMEANS_STARTS)


def modality_purity(cluster_image: np.ndarray, cluster_text: np.ndarray,
                    threshold: float = PURITY_THRESHOLD) -> float:
    """Share of the non-empty clusters whose items are more than ``threshold`` one modality.

    Parameters
    ----------
    cluster_image, cluster_text : ndarray of shape (N,), int
        Cluster of each image and each text of the mixed pool.
    """
    k = int(max(cluster_image.max(), cluster_text.max())) + 1
    images = np.bincount(cluster_image, minlength=k).astype(np.float64)
    texts = np.bincount(cluster_text, minlength=k).astype(np.float64)
    total = images + texts
    filled = total > 0
    pure = np.maximum(images, texts)[filled] > threshold * total[filled]
    return float(pure.mean())


# ---------------------------------------------------------------------------------------------
# transfer
# ---------------------------------------------------------------------------------------------
def transfer_probe(X: np.ndarray, Y: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A linear probe fitted on one modality and scored on the other, both ways.

    Multinomial logistic regression (scikit-learn's lbfgs, ``C`` = :data:`PROBE_C`) on the
    unit rows, fitted on all N images and scored on all N texts, then the reverse.

    Parameters
    ----------
    X, Y : ndarray of shape (N, d)
    classes : ndarray of shape (N,), int
        Each pair's class (at least two distinct).

    Returns
    -------
    correct_on_texts, correct_on_images : ndarray of shape (N,), bool
        Text i labelled right by the image-fitted probe; image i by the text-fitted probe.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    classes = np.asarray(classes)
    if np.unique(classes).size < 2:
        raise ValueError("a probe needs at least two classes.")
    Xn = normalize_rows(X).astype(np.float64)
    Yn = normalize_rows(Y).astype(np.float64)
    out = []
    with one_blas_thread(2), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for fit, score in ((Xn, Yn), (Yn, Xn)):
            probe = LogisticRegression(C=PROBE_C, max_iter=PROBE_MAX_ITER).fit(fit, classes)
            out.append(probe.predict(score) == classes)
    return out[0], out[1]


# ---------------------------------------------------------------------------------------------
# the search: requested-modality rate and substitution, exact
# ---------------------------------------------------------------------------------------------
def mixed_pool_search(X: np.ndarray, Y: np.ndarray, *, classes: np.ndarray | None = None,
                      k: int = REQUESTED_K, block_values: int = BLOCK_VALUES) -> dict[str, Any]:
    """Requested-modality rate and substitution of N pairs, exact (module docstring).

    Parameters
    ----------
    X, Y : ndarray of shape (N, d)
    classes : ndarray of shape (N,), int, optional
        Each pair's class: substitution is measured when given.
    k : int
        Results per query of the requested-modality rate (at most 2N - 1 are taken).

    Returns
    -------
    dict
        ``requested_i2t``, ``requested_t2i`` (N,) float: share of the other modality in each
        image (text) query's top k; ``substitution_i2t``, ``substitution_t2i`` (N,) bool with
        ``classes``; ``k`` as used; ``fallback_queries``: queries settled against every item.
    """
    Xr, Yr = _exact_source(np.asarray(X)), _exact_source(np.asarray(Y))
    Xn, ix = _unit_rows(Xr)
    Yn, iy = _unit_rows(Yr)
    n, d = Xn.shape
    k = min(int(k), 2 * n - 1)
    Zr = np.ascontiguousarray(np.vstack([Xr, Yr]))
    inv = np.r_[ix, iy]
    h = float32_cosine_bound(d)
    pool, cross = _search_pass(Xn, Yn, k + POOL_EXTRA, CROSS_KEPT, block_values)
    pool_idx, pool_val = pool
    fallback = np.zeros(2 * n, np.bool_)
    counts = np.zeros(2 * n, np.int64)
    _requested_counts(Zr, inv, n, pool_idx, pool_val, k, h, TIE_TOL_FLOAT64, counts, fallback)
    out: dict[str, Any] = {"requested_i2t": counts[:n] / k, "requested_t2i": counts[n:] / k, "k": k}
    if classes is not None:
        classes = np.asarray(classes, dtype=np.int64)
        if classes.shape != (n,):
            raise ValueError(f"classes must have one entry per pair ({n}), got shape {classes.shape}.")
        hits = np.zeros(2 * n, np.bool_)
        cross_idx, cross_val = cross
        _substitution_hits(Zr, inv, n, cross_idx, cross_val, np.r_[classes, classes], h,
                           TIE_TOL_FLOAT64, hits, fallback)
        out["substitution_i2t"], out["substitution_t2i"] = hits[:n], hits[n:]
    out["fallback_queries"] = int(fallback.sum())
    return out


def requested_modality(X: np.ndarray, Y: np.ndarray, k: int = REQUESTED_K) -> tuple[float, float]:
    """(image queries' share of texts, text queries' share of images) in their top ``k`` of the
    mixed pool, averaged over the queries; ties count against the query (module docstring)."""
    s = mixed_pool_search(X, Y, k=k)
    return float(s["requested_i2t"].mean()), float(s["requested_t2i"].mean())


def substitution(X: np.ndarray, Y: np.ndarray, labels: Sequence[str]) -> tuple[float, float]:
    """(image queries, text queries): share whose nearest item of the other modality has
    their pair's label; a tie for nearest is a hit only if every tied item has it."""
    _, classes = np.unique(np.asarray([str(v) for v in labels]), return_inverse=True)
    s = mixed_pool_search(X, Y, classes=classes)
    return float(s["substitution_i2t"].mean()), float(s["substitution_t2i"].mean())


def _search_pass(Xn: np.ndarray, Yn: np.ndarray, k_pool: int, k_cross: int, block_values: int):
    """Each pool item's ``k_pool`` nearest pool items and ``k_cross`` nearest of the other
    modality, float32, most similar first (equal values by lower index), from one pass over
    the upper triangle of the pool's similarities: ((idx, val), (idx, val)) of shape
    (2N, k) each, cross indices into the pool."""
    n = Xn.shape[0]
    k_pool = min(k_pool, 2 * n - 1)
    k_cross = min(k_cross, n)
    workers = _workers()
    pool = _TopK(2 * n, k_pool, workers)
    cross = _TopK(2 * n, k_cross, workers)

    def sweep(S, i0, r0, r1, slot):
        _gains_upper(S, i0, r0, r1, n, pool.row_val, pool.row_idx, pool.row_worst,
                     pool.col_val[slot], pool.col_idx[slot], pool.col_worst[slot],
                     cross.row_val, cross.row_idx, cross.row_worst,
                     cross.col_val[slot], cross.col_idx[slot], cross.col_worst[slot])

    _panel_loop(np.vstack([Xn, Yn]), None, block_values, sweep)
    return pool.merged(values=True), cross.merged(values=True)


@numba.njit(nogil=True, cache=True)
def _gains_upper(S, i0, r0, r1, n, pv, pi, pw, qv, qi, qw, xv, xi, xw, yv, yi, yw):  # pragma: no cover
    """Top-k upkeep of one panel ``S = Z[i0:i0+R] @ Z[i0:].T`` for the pool lists (``p*``:
    shared rows, ``q*``: the thread's columns) and the other-modality lists (``x*`` rows,
    ``y*`` columns); an entry (r, c), c > r, is offered to both of its items, and to their
    other-modality lists when one is an image (index < n) and the other a text."""
    n_cols = S.shape[1]
    for r in range(r0, r1):
        gi = i0 + r
        for c in range(r + 1, n_cols):
            v = S[r, c]
            gj = i0 + c
            if v >= pw[gi]:
                _push(pv[gi], pi[gi], pw, gi, v, gj)
            if v >= qw[gj]:
                _push(qv[gj], qi[gj], qw, gj, v, gi)
            if gi < n and gj >= n:
                if v >= xw[gi]:
                    _push(xv[gi], xi[gi], xw, gi, v, gj)
                if v >= yw[gj]:
                    _push(yv[gj], yi[gj], yw, gj, v, gi)


@numba.njit(nogil=True, cache=True)
def _cos64(Zr, inv, q, j):  # pragma: no cover
    """Float64 cosine of pool items q and j from the input rows (as measure_gap's rechecks)."""
    return _dot64(Zr[q], Zr[j]) * (inv[q] * inv[j])


@numba.njit(nogil=True, cache=True)
def _band_candidates(Zr, inv, q, idx, val, ref, lo_item, hi_item, h, tol, fallback):  # pragma: no cover
    """Float64 cosines of query q's candidates: the kept items whose float32 value is within
    2 h (and the tie tolerance) of ``ref``, or, when the kept list does not hold that band
    whole, every item in ``lo_item .. hi_item`` but q. Returns (items, cosines)."""
    low = np.float64(ref) - 2.0 * h - 4.0 * tol
    m = idx.shape[0]
    whole = m >= (hi_item - lo_item) - (1 if lo_item <= q < hi_item else 0)
    if whole or np.float64(val[m - 1]) < low:
        count = 0
        for t in range(m):
            if np.float64(val[t]) >= low:
                count += 1
        items = np.empty(count, np.int64)
        cos = np.empty(count, np.float64)
        c = 0
        for t in range(m):
            if np.float64(val[t]) >= low:
                items[c] = idx[t]
                cos[c] = _cos64(Zr, inv, q, idx[t])
                c += 1
        return items, cos
    fallback[q] = True
    size = hi_item - lo_item - (1 if lo_item <= q < hi_item else 0)
    items = np.empty(size, np.int64)
    cos = np.empty(size, np.float64)
    c = 0
    for j in range(lo_item, hi_item):
        if j != q:
            items[c] = j
            cos[c] = _cos64(Zr, inv, q, j)
            c += 1
    return items, cos


@numba.njit(nogil=True, cache=True)
def _requested_counts(Zr, inv, n, idx, val, k, h, tol, counts, fallback):  # pragma: no cover
    """Per query, how many of its top k pool items are of the other modality.

    With t_1 >= t_2 >= ... the float64 cosines of the other-modality candidates and I(v) the
    own-modality items (the query left out) with cosine >= v - tol, the m-th best
    other-modality item is within the top k when m + I(t_m) <= k (own-modality items take
    tied places); the count is the largest such m.
    """
    for q in range(2 * n):
        items, cos = _band_candidates(Zr, inv, q, idx[q], val[q], val[q, k - 1], 0, 2 * n, h,
                                      tol, fallback)
        own = q < n
        other = np.sort(cos[(items < n) != own])[::-1]
        same = cos[(items < n) == own]
        got = 0
        for m in range(other.shape[0]):
            ahead = 0
            for s in same:
                if s >= other[m] - tol:
                    ahead += 1
            if m + 1 + ahead <= k:
                got = m + 1
            else:
                break
        counts[q] = got


@numba.njit(nogil=True, cache=True)
def _substitution_hits(Zr, inv, n, idx, val, cls, h, tol, hits, fallback):  # pragma: no cover
    """Per query, whether every other-modality item tied for nearest (float64 cosine within
    tol of the best) has the query's class."""
    for q in range(2 * n):
        lo, hi = (n, 2 * n) if q < n else (0, n)
        items, cos = _band_candidates(Zr, inv, q, idx[q], val[q], val[q, 0], lo, hi, h, tol,
                                      fallback)
        best = cos.max()
        ok = True
        for t in range(items.shape[0]):
            if cos[t] >= best - tol and cls[items[t]] != cls[q]:
                ok = False
        hits[q] = ok


# ---------------------------------------------------------------------------------------------
# before and after
# ---------------------------------------------------------------------------------------------
def closing_gains(X: np.ndarray, Y: np.ndarray, X_t: np.ndarray | None = None,
                  Y_t: np.ndarray | None = None, *, labels: Sequence[str] | None = None,
                  n_clusters: int | None = None, seed: int = 0, n_resamples: int = 200,
                  level: float = 0.95, before: GainOutcomes | None = None,
                  after: GainOutcomes | None = None) -> dict[str, Any]:
    """What a method buys: every gain before and after it, with bootstrap intervals.

    Parameters
    ----------
    X, Y : ndarray of shape (N, d)
        The pairs before the method (the raw embeddings).
    X_t, Y_t : ndarray of shape (N, k), optional
        The same pairs after it (a run's scored pairs, under its protocol); without them only
        the raw embeddings are measured.
    labels : sequence of N str, optional
        Class of each pair (:func:`gapviz.closing_costs.pair_labels`).
    n_clusters : int, optional
        k of the pool's k-means; default :func:`pool_k` on the raw pairs.
    seed : int
        Seed of k-means and of the bootstrap.
    n_resamples : int
        Bootstrap resamples (0: no intervals).
    before, after : GainOutcomes, optional
        :func:`gain_outcomes` of (X, Y) and (X_t, Y_t) if already computed (with the same k).

    Returns
    -------
    dict
        ``measures``: {key: {"before", "ci_before"} and, after a method, "after", "ci_after",
        "change", "ci_change", "p_value", "significant"}; ``n_clusters``, ``k_requested``,
        ``labels`` (whether the label gains were measured), ``n_classes``, ``ci_method`` and
        ``seconds``.
    """
    t0 = time.perf_counter()
    if before is None:
        k = pool_k(X, Y, labels=labels, n_clusters=n_clusters, seed=seed)
        before = gain_outcomes(X, Y, labels=labels, n_clusters=k, seed=seed)
    if after is None and X_t is not None:
        after = gain_outcomes(X_t, Y_t, labels=labels, n_clusters=before.n_clusters, seed=seed)
    return gains_report(before, after, n_resamples=n_resamples, level=level, seed=seed,
                        seconds=time.perf_counter() - t0)


def gains_report(before: GainOutcomes, after: GainOutcomes | None = None, *,
                 n_resamples: int = 200, level: float = 0.95, seed: int = 0,
                 seconds: float | None = None) -> dict[str, Any]:
    """:func:`closing_gains`'s dict from outcomes already computed (JSON-serialisable)."""
    from .intervals import gain_intervals

    eb = before.estimates()
    ea = after.estimates() if after is not None else None
    both = (gain_intervals(before, after, n_resamples=n_resamples, level=level, seed=seed)
            if n_resamples else None)
    measures: dict[str, dict[str, Any]] = {}
    for key in GAIN_KEYS:
        if key not in eb or (ea is not None and key not in ea):
            continue
        row: dict[str, Any] = {"before": eb[key]}
        if both is not None:
            row["ci_before"] = list(both.before.ci[key])
        if ea is not None:
            row.update(after=ea[key], change=ea[key] - eb[key])
            if both is not None:
                c = both.comparison[key]
                row.update(ci_after=list(both.after.ci[key]), ci_change=list(c["ci"]),
                           p_value=c["p_value"], significant=c["significant"])
        measures[key] = row
    out: dict[str, Any] = {
        "measures": measures, "n_clusters": before.n_clusters, "k_requested": before.k_requested,
        "labels": before.has_labels, "n_classes": len(before.class_names),
        "purity_threshold": PURITY_THRESHOLD,
        "seconds": {"before": dict(before.seconds),
                    **({"after": dict(after.seconds)} if after is not None else {})},
    }
    if both is not None:
        out["ci_method"] = {
            "method": "percentile bootstrap over pairs, the same resamples before and after "
                      "(search measures: queries resampled, pool fixed; probe: held fixed; "
                      "k-means: partition held fixed, not rerun per resample)",
            "n_resamples": n_resamples, "level": level, "seed": seed,
            "seconds": both.seconds}
    if seconds is not None:
        out["seconds"]["total"] = seconds
    return out
