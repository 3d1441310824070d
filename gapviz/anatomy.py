"""Anatomy of the modality gap: where it lives and how it shapes search in the mixed pool.

Notation as in :mod:`gapviz.measures`: N pairs, ``X`` (N, d) images, ``Y`` (N, d) texts, rows
L2-normalised here, similarity cosine; the mixed pool is ``Z = [X; Y]`` (2N items) and a query
is never its own result.

Measures
--------
- **RMG**, the relative modality gap (Schrodi et al., ICLR 2025, "Two effects, one trigger"):
  with d(a, b) = (1 - cos(a, b)) / 2, m = mean of d over the pairs, w_x, w_y = mean of d over
  all distinct pairs of images, of texts; RMG = m / (m + (w_x + w_y) / 2). As in their
  ``compute_rmg`` (``analysis/gap_precompute.py``), m is replaced by 1e-3 only when m <= 0
  (pairs that coincide); any positive m, however small, is kept. Their L2M and L2I are
  gapviz's ``centroid_gap`` and ``paired_l2``.
- **Centroid vs distribution gap**: the Fréchet distance between Gaussians fitted to each
  modality splits exactly into ||mu_x - mu_y||^2 (what a mean shift explains) plus
  Tr(C_x + C_y - 2 (C_x C_y)^(1/2)), the Fréchet distance once each modality's mean is removed
  (the Bures term: shape and spread; Dowson & Landau 1982; Heusel et al. 2017). Both on the
  L2-normalised rows; ``frechet_raw`` is the same distance on the file's rows as given (not
  normalised), reported when those rows are not unit-norm.
- **Per-dimension gap**: |mean(X)_j - mean(Y)_j| ranked, each with its share of
  ||mean(X) - mean(Y)||^2; the ablation curve of Schrodi et al. removes the top-m gap
  dimensions, renormalises the rows and recomputes cross-modal R@1 and RMG (m = 0 .. M).
- **Per-cluster gap**: every measure of :func:`gapviz.measures.measure_gap` and RMG on the pairs
  of each cluster (the cluster's own pool), clusters from labels or seeded k-means on the
  leading principal components of [x_i, y_i] (k given, or chosen by silhouette).
- **NDCG@10** (``NDCG@10``): MixBench's formula on the paper's mixed pool. Image queries, the
  paired text the one relevant item, gain 1 / log2(1 + rank) when rank <= 10; ranks are
  :func:`~gapviz.measures.measure_gap`'s, so a tie never counts as a win.
- **NDCG@10 under MixBench's protocol** (``NDCG@10_mixbench``; Li et al. 2025, "Closing the
  Modality Gap for Mixed Modality Search", ``src/retrieval_mixbench.py``): text queries kept
  out of the corpus, each document once in one rendering, relevant in whatever rendering it
  has; see :func:`mixbench_search` for how one caption per image is adapted to it.
- **Hubness**: skewness of the k-occurrence counts N_k(z) = #{queries with z among their k
  nearest items} over the 2N items of the mixed pool (Radovanović et al., JMLR 2010), k = 10;
  beside it, as scikit-hubness defines them (``skhubness/analysis/estimation.py``), the Robin
  Hood index, the anti-hub occurrence and the hub occurrence (hubs: N_k >= 2 k).

Cost
----
The within-modality means over distinct pairs come from sums: for unit rows the mean of
cos(x_i, x_j) over i != j is (||sum_i x_i||^2 - N) / (N (N - 1)), so RMG is O(N d). Hubness and
the ablation curve share one pass over the upper triangle of the mixed pool's similarities
(about 2 N^2 d multiply-adds, as much as ``measure_gap``), by panels of rows: memory is
O(N (d + k + M) + panel), never 2N x 2N. One worker thread per CPU takes panels in turn,
each doing the panel's BLAS product (BLAS held to one thread) and its numba sweep (top-k
upkeep, the ablation's rank-one updates) while the panel is in cache, with its own column
accumulators. The ablation sweep is float32: a renormalised cosine is within about 1e-6 of
exact, inside the tie tolerance (``gapviz.measures.TIE_TOL``) it counts ties with, so only
near-exact ties can fall either way. MixBench's protocol is one more product, its queries
(N / 3 by default) against its N documents, with the ranks made exact in float64 as
``measure_gap``'s are.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numba
import numpy as np
from scipy import sparse, stats

from .config import BLOCK_VALUES, RECALL_KS
from .score_terms import ScoreTerms
from .measures import (TIE_TOL, TIE_TOL_FLOAT64, GapReport, _band32, _dot64, _exact_source,
                       _pair_cos64, _unit_rows, float32_cosine_bound, frechet_distance,
                       image_groups_of, measure_gap, normalize_rows)
from .threads import one_blas_thread

#: What replaces RMG's paired term m when m <= 0 (pairs that coincide), as Schrodi et al.'s
#: ``compute_rmg`` does: ``torch.where(m > 0, m, 1e-3)``. A positive m is never changed.
RMG_FLOOR = 1e-3
#: Rank cut-off of NDCG and the k of hubness's k-occurrence.
NDCG_K = 10
HUBNESS_K = 10
#: Hubs are items with k-occurrence >= HUB_SIZE * k (scikit-hubness's default ``hub_size``).
HUB_SIZE = 2.0
#: MixBench's renderings of a document, in the order its reference code deals them out
#: (``["text", "image", "mixed"][i % 3]`` over a seeded permutation: 1:1:1), and the weight of
#: the text in a fused ("mixed") document, ``alpha * text + (1 - alpha) * image``.
MIXBENCH_RENDERINGS = ("text", "image", "mixed")
MIXBENCH_ALPHA = 0.5
#: Rows whose L2 norms are all within this of 1 are unit rows: their raw Fréchet distance is
#: the normalised one, so ``frechet_raw`` is not reported.
UNIT_NORM_TOL = 1e-3
#: Ablation curve: top-m gap dimensions removed for m = 0 .. ABLATION_DIMS.
ABLATION_DIMS = 10
#: Dimensions listed in the JSON anatomy (all d are in :class:`DimensionGaps`).
DIMENSIONS_LISTED = 20
#: Candidate k of k-means when none is given, and the pairs it is chosen on.
KMEANS_K_RANGE = (2, 30)
KMEANS_SUBSAMPLE = 1000
#: Principal components of the joint embedding that k-means clusters in.
KMEANS_COMPONENTS = 50
#: Fewest pairs for which k is chosen (at least 5 pairs per cluster of the smallest k).
KMEANS_MIN_PAIRS = 5 * KMEANS_K_RANGE[0]
#: Rows of one similarity panel (capped by BLOCK_VALUES): 256 x 5,000 float32 (5 MB) stays in
#: the last-level cache between the product that writes it and the sweep that reads it.
_PANEL_ROWS = 256


# ---------------------------------------------------------------------------------------------
# RMG, centroid vs distribution
# ---------------------------------------------------------------------------------------------
def relative_modality_gap(X: np.ndarray, Y: np.ndarray, groups: np.ndarray | None = None) -> float:
    """RMG of N pairs (Schrodi et al., ICLR 2025), exact and O(N d).

    Parameters
    ----------
    X, Y : ndarray of shape (N, d)
        Image and text embeddings (normalised here); row i of each is a pair.
    groups : ndarray of shape (N,), optional
        Image ids when images have several captions: m averages over every (image, caption)
        pair, the image term over the distinct unique images and the text term over the
        captions (as on COCO's five captions).

    Returns
    -------
    float
        m / (m + (w_x + w_y) / 2) in [0, 1], m replaced by :data:`RMG_FLOOR` only when
        m <= 0; see the module docstring.
    """
    Xr, Yr = _exact_source(np.asarray(X)), _exact_source(np.asarray(Y))
    if Xr.ndim != 2 or Xr.shape != Yr.shape:
        raise ValueError(f"X and Y must be (N, d) arrays of the same shape, got {Xr.shape} and "
                         f"{Yr.shape}.")
    Xn, ix = _unit_rows(Xr)
    Yn, iy = _unit_rows(Yr)
    n = Xn.shape[0]
    if n < 2:
        raise ValueError("RMG needs at least 2 pairs (its within-modality terms are over distinct items).")
    # float64 cosines of the input rows, as measure_gap's: m may be tiny (pairs nearly
    # coincide), where a float32 dot product's rounding would be a large part of it
    cos_pair = _pair_cos64(Xr, Yr, ix, iy)
    grouping = None if groups is None else image_groups_of(groups)
    U = Xn if grouping is None else Xn[grouping[1]]
    sx = U.sum(0, dtype=np.float64)
    sy = Yn.sum(0, dtype=np.float64)
    m = U.shape[0]
    return rmg_from_sums(float(np.mean(cos_pair)), sx @ sx, sy @ sy, n, m, n,
                         n_images=m if grouping is not None else None)


def rmg_from_sums(mean_cos_pair: float, sx2: float, sy2: float, n: int, nx: float, ny: float,
                  *, n_images: int | None = None) -> float:
    """RMG from the mean paired cosine and the squared norms of the modality sums.

    ``sx2 = ||sum_i u_i||^2`` over the N image rows, of which ``nx`` have unit norm (the others
    zero); the mean cosine over the N (N - 1) ordered pairs of distinct items is then
    ``(sx2 - nx) / (N (N - 1))``. Same for texts. ``n_images``: the images are M unique rows
    (several captions each), their term over M (M - 1) ordered pairs.
    """
    pairs = n * (n - 1)
    m = (1.0 - mean_cos_pair) / 2.0
    if not m > 0:  # only m <= 0 is replaced, as in Schrodi et al.'s compute_rmg
        m = RMG_FLOOR
    pairs_x = pairs if n_images is None else n_images * (n_images - 1)
    w_x = (1.0 - (sx2 - nx) / pairs_x) / 2.0
    w_y = (1.0 - (sy2 - ny) / pairs) / 2.0
    return float(m / (m + (w_x + w_y) / 2.0))


def centroid_vs_distribution(X: np.ndarray, Y: np.ndarray, *, frechet: float | None = None) -> dict[str, float]:
    """Split the Fréchet distance between the modalities into a centroid and a distribution part.

    ``frechet = centroid + distribution`` with ``centroid = ||mu_x - mu_y||^2`` (squared centroid
    gap: what one shift of a modality by the other's mean removes) and ``distribution =
    Tr(C_x + C_y - 2 (C_x C_y)^(1/2))``, the Fréchet distance between the mean-removed
    modalities (Dowson & Landau 1982; covariances as in :func:`gapviz.measures.frechet_distance`).

    Parameters
    ----------
    X, Y : ndarray of shape (N, d)
        Normalised here.
    frechet : float, optional
        The Fréchet distance of these rows if already known (``GapReport.metrics["frechet"]``).

    Returns
    -------
    dict
        ``frechet``, ``centroid``, ``distribution`` (squared-distance units) and
        ``centroid_share`` = centroid / frechet (nan when frechet is 0).
    """
    Xn, Yn = normalize_rows(X), normalize_rows(Y)
    diff = Xn.mean(0, dtype=np.float64) - Yn.mean(0, dtype=np.float64)
    centroid = float(diff @ diff)
    total = frechet_distance(Xn, Yn) if frechet is None else float(frechet)
    distribution = max(total - centroid, 0.0)
    return {"frechet": total, "centroid": centroid, "distribution": distribution,
            "centroid_share": centroid / total if total > 0 else math.nan}


def unit_norm_rows(A: np.ndarray, tol: float = UNIT_NORM_TOL) -> bool:
    """Whether every row of ``A`` has an L2 norm within ``tol`` of 1 (norms in float64)."""
    A = np.asarray(A)
    norms = np.sqrt(np.einsum("ij,ij->i", A, A, dtype=np.float64))
    return bool(np.all(np.abs(norms - 1.0) <= tol))


def raw_frechet_distance(X: np.ndarray, Y: np.ndarray) -> float | None:
    """Fréchet distance between the modalities on the rows as given, not normalised.

    The same formula as :func:`gapviz.measures.frechet_distance` (means, covariances with the
    N - 1 denominator, ``||mu_x - mu_y||^2 + Tr(C_x + C_y - 2 (C_x C_y)^(1/2))``, as FID,
    Heusel et al. 2017), on the embeddings as the model or the file gives them: the scale of
    values such as the paper's Table 4 (hundreds for raw CLIP embeddings, where the
    normalised rows give at most a few units). Each modality is modelled on its own, so the
    pairing (and any reordering of the pairs) does not change it.

    Parameters
    ----------
    X, Y : ndarray of shape (N, d) and (M, d)
        The rows as given (float64 input is computed in float64 throughout).

    Returns
    -------
    float or None
        None when both modalities already have unit-norm rows (within :data:`UNIT_NORM_TOL`):
        the distance would be ``frechet`` on the normalised rows.
    """
    X, Y = np.asarray(X), np.asarray(Y)
    if unit_norm_rows(X) and unit_norm_rows(Y):
        return None
    return frechet_distance(X, Y)


def gap_removed(before: dict[str, float], after: dict[str, float]) -> dict[str, dict[str, float]]:
    """How much of each part of the gap a method removes.

    Parameters
    ----------
    before, after : dict
        :func:`centroid_vs_distribution` of the original and the transformed pairs. Both are
        in squared distances between unit rows, so they compare even when the method changes
        the dimension.

    Returns
    -------
    dict
        For ``frechet``, ``centroid`` and ``distribution``: ``before``, ``after``, ``removed``
        (before - after) and ``fraction_removed`` (removed / before; nan when before is 0;
        negative when the method widens that part).
    """
    out = {}
    for part in ("frechet", "centroid", "distribution"):
        b, a = float(before[part]), float(after[part])
        out[part] = {"before": b, "after": a, "removed": b - a,
                     "fraction_removed": (b - a) / b if b > 0 else math.nan}
    return out


# ---------------------------------------------------------------------------------------------
# per-dimension gap
# ---------------------------------------------------------------------------------------------
@dataclass
class DimensionGaps:
    """Per-dimension centroid gap, largest first.

    Attributes
    ----------
    order : ndarray of shape (d,)
        Dimension indices sorted by ``gap``, largest first (ties: lower index first).
    gap : ndarray of shape (d,)
        |mean(X)_j - mean(Y)_j| of the normalised rows, in ``order``.
    share : ndarray of shape (d,)
        gap_j^2 / ||mean(X) - mean(Y)||^2, in ``order`` (sums to 1).
    """

    order: np.ndarray
    gap: np.ndarray
    share: np.ndarray

    def to_list(self, top: int | None = None) -> list[dict[str, float]]:
        """``[{"index", "gap", "share"}, ...]``, largest first, the first ``top`` (all if None)."""
        top = len(self.order) if top is None else min(top, len(self.order))
        return [{"index": int(self.order[r]), "gap": float(self.gap[r]), "share": float(self.share[r])}
                for r in range(top)]


def dimension_gaps(X: np.ndarray, Y: np.ndarray) -> DimensionGaps:
    """Dimensions ranked by |mean(X)_j - mean(Y)_j| (Schrodi et al. 2025), with their shares."""
    Xn, Yn = normalize_rows(X), normalize_rows(Y)
    g = np.abs(Xn.mean(0, dtype=np.float64) - Yn.mean(0, dtype=np.float64))
    order = np.lexsort((np.arange(g.size), -g))
    total = float(g @ g)
    share = g[order] ** 2 / total if total > 0 else np.zeros(g.size)
    return DimensionGaps(order, g[order], share)


@dataclass
class AblationCurve:
    """Cross-modal R@1 and RMG after removing the top-m gap dimensions, m = 0 .. M.

    Attributes
    ----------
    removed : ndarray of shape (M + 1,)
        m, the number of dimensions removed.
    dims : ndarray of shape (M,)
        The dimensions removed, in order (the m-th curve point removes ``dims[:m]``).
    r1_i2t, r1_t2i : ndarray of shape (M + 1,)
        Classic retrieval R@1 (images against texts only, and the reverse).
    rmg : ndarray of shape (M + 1,)
    """

    removed: np.ndarray
    dims: np.ndarray
    r1_i2t: np.ndarray
    r1_t2i: np.ndarray
    rmg: np.ndarray

    def to_list(self) -> list[dict[str, float]]:
        return [{"removed": int(m), "dims": [int(j) for j in self.dims[:m]],
                 "R@1_i2t_crossmodal": float(a), "R@1_t2i_crossmodal": float(b), "RMG": float(r)}
                for m, a, b, r in zip(self.removed, self.r1_i2t, self.r1_t2i, self.rmg)]


def ablation_curve(X: np.ndarray, Y: np.ndarray, max_dims: int = ABLATION_DIMS, *,
                   dims: Sequence[int] | None = None, block_values: int = BLOCK_VALUES) -> AblationCurve:
    """The ablation curve of Schrodi et al. (their ``gap_ablate_dims``).

    Removing dimensions J and renormalising gives cos'(x, y) = (x.y - sum_J x_j y_j) /
    (||x_-J|| ||y_-J||), so one pass over ``X Y^T`` serves every m by rank-one updates:
    about N^2 (d + 4 M) operations, memory O(N M + panel).

    Parameters
    ----------
    X, Y : ndarray of shape (N, d)
    max_dims : int
        M; the curve has M + 1 points.
    dims : sequence of int, optional
        The dimensions to remove in order (default: :func:`dimension_gaps` order).
    """
    Xn, Yn = normalize_rows(X), normalize_rows(Y)
    _, curve = _pool_pass(Xn, Yn, hub_k=0, ablation=_ablation_plan(Xn, Yn, max_dims, dims),
                          block_values=block_values)
    return curve


def _ablation_plan(Xn, Yn, max_dims, dims):
    if dims is None:
        dims = dimension_gaps(Xn, Yn).order[:max_dims]
    dims = np.asarray(dims, dtype=np.int64)
    if dims.ndim != 1 or (dims.size and (dims.min() < 0 or dims.max() >= Xn.shape[1])):
        raise ValueError(f"ablation dims must be indices in 0 .. {Xn.shape[1] - 1}, got {dims.tolist()}.")
    if np.unique(dims).size != dims.size:
        raise ValueError("ablation dims must not repeat a dimension.")
    return dims


# ---------------------------------------------------------------------------------------------
# NDCG and hubness
# ---------------------------------------------------------------------------------------------
def ndcg_gains(ranks: np.ndarray, k: int = NDCG_K) -> np.ndarray:
    """Per-query gain 1 / log2(1 + rank) if rank <= k else 0 (one relevant item per query)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return np.where(ranks <= k, 1.0 / np.log2(1.0 + ranks), 0.0)


def mixed_pool_ndcg(X: np.ndarray, Y: np.ndarray, k: int = NDCG_K, *,
                    report: GapReport | None = None) -> float:
    """NDCG@k in the mixed pool: image queries, the paired text the one relevant item.

    Ranks are ``measure_gap``'s mixed-pool ranks of the partner (``GapReport.i2t_rank``), so
    the tie rule is gapviz's: an item tied with the partner is ranked ahead of it.
    Pass ``report`` (of these very X, Y) to reuse its ranks.
    """
    if report is None:
        report = measure_gap(X, Y)
    return float(ndcg_gains(report.i2t_rank, k).mean())


def grouped_ndcg(X: np.ndarray, Y: np.ndarray, groups: np.ndarray, k: int = NDCG_K, *,
                 block_values: int = BLOCK_VALUES) -> float:
    """NDCG@k of image queries in the mixed pool when images have several captions, every
    caption of the image relevant (gain 1 each).

    The pool is the M unique images and the N captions. For image i with captions R_i, a
    caption's rank is the number of pool items (the query left out) whose cosine is at least
    its own in float64 (within ``TIE_TOL_FLOAT64``: a tie is never a win, also between two of
    its captions); DCG sums 1 / log2(1 + rank) over its captions ranked within k, IDCG over
    the first min(|R_i|, k) ranks, and the result is the mean of DCG / IDCG over the images.

    Exact: each panel of image queries is compared in float32; an item can be within the top
    k only if its float32 cosine is at least the query's k-th largest less 2 h
    (:func:`gapviz.measures.float32_cosine_bound`), and those few are ranked in float64.
    """
    grouping = image_groups_of(groups)
    if grouping is None:
        return mixed_pool_ndcg(X, Y, k)
    image_of, first = grouping
    Xr, Yr = _exact_source(np.asarray(X)), _exact_source(np.asarray(Y))
    U = np.ascontiguousarray(Xr[first])
    Un, _ = _unit_rows(U)
    Yn, _ = _unit_rows(Yr)
    m, n = Un.shape[0], Yn.shape[0]
    pool32 = np.vstack([Un, Yn])
    pool64 = np.vstack([U, Yr]).astype(np.float64)
    pool64 /= np.linalg.norm(pool64, axis=1, keepdims=True)
    captions = np.bincount(image_of, minlength=m)  # relevant items of each image
    h = float32_cosine_bound(Un.shape[1])
    kk = min(k, m + n - 1)
    rows = max(1, min(_PANEL_ROWS, block_values // (m + n)))
    gains = np.empty(m)
    for i0 in range(0, m, rows):
        S = Un[i0:i0 + rows] @ pool32.T
        idx = np.arange(S.shape[0])
        S[idx, i0 + idx] = -np.inf  # the query is not its own result
        kth = -np.partition(-S, kk - 1, axis=1)[:, kk - 1]
        for r in range(S.shape[0]):
            q = i0 + r
            cand = np.flatnonzero(S[r] >= kth[r] - 2 * h)
            s64 = pool64[cand] @ pool64[q]
            dcg = 0.0
            relevant = cand >= m
            relevant[relevant] = image_of[cand[relevant] - m] == q
            for j in np.flatnonzero(relevant):
                rank = int(np.count_nonzero(s64 >= s64[j] - TIE_TOL_FLOAT64))
                if rank <= k:
                    dcg += 1.0 / math.log2(1.0 + rank)
            ideal = sum(1.0 / math.log2(1.0 + j) for j in range(1, min(int(captions[q]), k) + 1))
            gains[q] = dcg / ideal
    return float(gains.mean())


#: Codes of MixBench's renderings in :class:`MixBenchSearch` and the recheck kernel.
_RENDERING_CODES = {"image": 0, "text": 1, "mixed": 2}


@dataclass
class MixBenchSearch:
    """Search of N pairs under MixBench's protocol (:func:`mixbench_search`).

    Attributes
    ----------
    renderings : ndarray of shape (N,), str
        How document j is in the corpus: ``"image"`` (x_j), ``"text"`` (y_j) or ``"mixed"``
        (the unit vector of ``alpha * y_j + (1 - alpha) * x_j``, both unit rows first).
    queries : ndarray of shape (Q,), int
        The pairs whose caption y_q is a query: those whose document is rendered as its image.
    ranks : ndarray of shape (Q,), int
        Rank of each query's document among the N documents (1-based). A document whose cosine
        equals the relevant one's (in float64, within ``TIE_TOL_FLOAT64``) is ranked ahead of
        it: a tie never counts as a win, as in every gapviz rank.
    alpha : float
    seed : int
        Seed of the permutation that deals out the renderings.
    """

    renderings: np.ndarray
    queries: np.ndarray
    ranks: np.ndarray
    alpha: float
    seed: int

    def ndcg(self, k: int = NDCG_K) -> float:
        """Mean over the queries of 1 / log2(1 + rank) when rank <= k, else 0 (nan without
        queries). With one relevant document this equals MixBench's
        ``sklearn.metrics.ndcg_score`` of the top k."""
        if self.ranks.size == 0:
            return math.nan
        return float(ndcg_gains(self.ranks, k).mean())

    def describe(self) -> dict[str, Any]:
        """The protocol and its numbers, JSON-serialisable."""
        names, counts = np.unique(self.renderings, return_counts=True)
        return {"protocol": "MixBench (text queries out of the corpus, each document once, "
                            "relevant in any rendering)",
                "documents": int(self.renderings.size),
                "renderings": {str(a): int(b) for a, b in zip(names, counts)},
                "queries": int(self.queries.size), "alpha": self.alpha, "seed": self.seed,
                "query_source": "the captions of the pairs whose document is rendered as its "
                                "image"}


def mixbench_search(X: np.ndarray, Y: np.ndarray, *,
                    renderings: Sequence[str] = MIXBENCH_RENDERINGS, alpha: float = MIXBENCH_ALPHA,
                    seed: int = 0, block_values: int = BLOCK_VALUES) -> MixBenchSearch:
    """Mixed-modality search under MixBench's protocol, adapted to one caption per image.

    MixBench (Li et al. 2025, "Closing the Modality Gap for Mixed Modality Search";
    reference ``src/retrieval_mixbench.py`` of ``yuhui-zh15/MixedModalitySearch``) searches a
    corpus of documents with text queries that are not in the corpus; each document is in the
    corpus once, in one rendering dealt out by a seeded permutation (``i % 3`` over text,
    image and a fused image+text vector: 1:1:1), and a query's document is relevant whatever
    its rendering. gapviz's ``NDCG@10`` differs on each point: its queries are pool items
    (images), every pair is in the pool twice (image and text), and only the paired text is
    relevant.

    What is implemented, on N pairs with one caption each:

    - **corpus**: the N documents, document j in the rendering dealt to it: position i of a
      permutation of the pairs (``numpy.random.default_rng(seed)``) gets
      ``renderings[i % len(renderings)]``; ``"image"`` is x_j, ``"text"`` is y_j and
      ``"mixed"`` the unit vector of ``alpha * y_j + (1 - alpha) * x_j`` of the unit rows
      (MixBench's fusion, alpha = 0.5; an image and caption that cancel fuse to the zero
      vector, cosine 0 with every query, as MixBench's ``torch.nn.functional.normalize``
      leaves it). Repeating a name changes the proportions.
    - **queries**: the caption y_q of every pair whose document is rendered as its image. A
      document rendered as its own caption (or a fusion holding it) would contain the query
      itself, which MixBench's separate query captions never do; those documents are in the
      corpus for the other queries (they are relevant to no query). With the default deal,
      about N / 3 queries.
    - **relevance**: the query's own document (its image), the one relevant document.
    - **score**: cosine of unit rows, as MixBench; rank = 1 + the number of other documents
      at least as similar (a tie counts against the query; MixBench's ``torch.topk`` and
      ``sklearn.metrics.ndcg_score`` break or average ties instead, which differs only on
      exactly tied documents). NDCG@k = mean of 1 / log2(1 + rank) when rank <= k, else 0
      (:meth:`MixBenchSearch.ndcg`).

    Ranks are exact like ``measure_gap``'s: float32 products of the unit rows, and the
    comparisons within the float32 error bound of their threshold redone in float64 from the
    input rows. Cost: Q x N x d multiply-adds (Q queries) by panels of queries, one worker
    thread per CPU (each panel's product on one BLAS thread, then its numba sweep), memory
    O(N d + panel).

    Parameters
    ----------
    X, Y : ndarray of shape (N, d)
        Image and text embeddings (normalised here); row i of each is a pair.
    renderings : sequence of {"image", "text", "mixed"}
        Dealt out in turn over the permutation; must include ``"image"`` (the queries' documents).
    alpha : float in [0, 1]
        Weight of the text in a fused document.
    seed : int
    block_values : int
        Upper bound on the float32 values of one similarity panel.

    Returns
    -------
    MixBenchSearch
    """
    names = tuple(renderings)
    unknown = sorted(set(names) - set(_RENDERING_CODES))
    if not names or unknown:
        raise ValueError(f"renderings must be a non-empty sequence of 'image', 'text' and "
                         f"'mixed', got {list(names)}.")
    if "image" not in names:
        raise ValueError("renderings must include 'image': a query's document is rendered as "
                         "its image (its caption is the query).")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1 (the weight of the text in a fused "
                         f"document), got {alpha}.")
    X, Y = np.asarray(X), np.asarray(Y)
    if X.ndim != 2 or X.shape != Y.shape:
        raise ValueError(f"X and Y must be (N, d) arrays of the same shape, got {X.shape} and {Y.shape}.")
    Xr, Yr = _exact_source(X), _exact_source(Y)
    Xn, ix = _unit_rows(Xr)
    Yn, iy = _unit_rows(Yr)
    n, d = Xn.shape
    perm = np.random.default_rng(seed).permutation(n)
    code = np.empty(n, np.int8)
    dealt = np.array([_RENDERING_CODES[name] for name in names], np.int8)
    code[perm] = dealt[np.arange(n) % len(names)]
    s_pair = _pair_cos64(Xr, Yr, ix, iy)

    # the corpus as float32 unit rows; a fused document normalised in float64, then rounded
    D = np.where((code == 0)[:, None], Xn, Yn)
    mixed = np.flatnonzero(code == 2)
    a, b = float(alpha), 1.0 - float(alpha)
    norm2 = a * a + b * b + 2.0 * a * b * s_pair  # ||a v + b u||^2 of unit u, v
    im = np.where(norm2 > 0, 1.0 / np.sqrt(np.where(norm2 > 0, norm2, 1.0)), 0.0)
    if mixed.size:
        fused = (a * Yr[mixed].astype(np.float64) * iy[mixed, None]
                 + b * Xr[mixed].astype(np.float64) * ix[mixed, None]) * im[mixed, None]
        D[mixed] = fused.astype(np.float32)

    queries = np.flatnonzero(code == 0)
    counts = np.zeros(queries.size, np.int64)
    thr = s_pair[queries] - TIE_TOL_FLOAT64  # a document counts ahead when cos >= thr
    lo, hi = _band32(thr, float32_cosine_bound(d))
    if queries.size:
        def sweep(S, p0, r0, r1, slot):  # each panel's rows are its own queries: no sharing
            _mixbench_panel(S, p0, queries, lo, hi, thr, Yr, Xr, iy, ix, im, code, a, counts)

        _panel_loop(Yn[queries], D, block_values, sweep)
    return MixBenchSearch(np.array(sorted(_RENDERING_CODES, key=_RENDERING_CODES.get))[code],
                          queries, 1 + counts, float(alpha), int(seed))


@numba.njit(nogil=True, cache=True)
def _mixbench_panel(S, p0, queries, lo, hi, thr, Yr, Xr, iy, ix, im, code, alpha,
                    counts):  # pragma: no cover
    """Count, for queries p0 .. p0 + rows of panel ``S`` (float32 cosines to every document),
    the documents other than the query's own at least as similar as it: float32 values above
    ``hi[p]`` count, below ``lo[p]`` do not, and those between are decided in float64. Image and
    text documents as ``measure_gap``'s rechecks (one fixed-order dot product of the input
    rows); a fused document from the query's cosines to its image and caption:
    cos(q, (a v + b u) / ||a v + b u||) = (a cos(q, v) + b cos(q, u)) * im[j]."""
    for r in range(S.shape[0]):
        p = p0 + r
        q = queries[p]
        c = 0
        for j in range(S.shape[1]):
            s = S[r, j]
            if s < lo[p] or j == q:  # below the band, or the relevant document itself
                continue
            if s >= hi[p]:
                c += 1
                continue
            kind = code[j]
            if kind == 0:
                v = _dot64(Yr[q], Xr[j]) * (iy[q] * ix[j])
            elif kind == 1:
                v = _dot64(Yr[q], Yr[j]) * (iy[q] * iy[j])
            else:
                v = (alpha * (_dot64(Yr[q], Yr[j]) * (iy[q] * iy[j]))
                     + (1.0 - alpha) * (_dot64(Yr[q], Xr[j]) * (iy[q] * ix[j]))) * im[j]
            if v >= thr[p]:
                c += 1
        counts[p] += c


def mixbench_ndcg(X: np.ndarray, Y: np.ndarray, k: int = NDCG_K, **kwargs: Any) -> float:
    """NDCG@k under MixBench's protocol (:func:`mixbench_search`, whose keyword arguments it
    takes); nan when no document is rendered as its image."""
    return mixbench_search(X, Y, **kwargs).ndcg(k)


def k_occurrence(neighbours: np.ndarray, n_items: int) -> np.ndarray:
    """N_k(z): how many rows of ``neighbours`` (queries' k nearest items) contain item z."""
    return np.bincount(np.asarray(neighbours).ravel(), minlength=n_items)


def skewness(counts: np.ndarray) -> float:
    """Standardised third moment E[(c - mean)^3] / std^3 (0 for a constant: no hubs)."""
    c = np.asarray(counts, dtype=np.float64)
    if np.ptp(c) == 0:
        return 0.0
    return float(stats.skew(c, bias=True))


def robin_hood_index(counts: np.ndarray) -> float:
    """Robin Hood (Hoover) index of k-occurrence counts, as scikit-hubness defines it.

    ``0.5 * sum_z |N_k(z) - mean(N_k)| / sum_z N_k(z)``: the share of all neighbour slots that
    would have to move for every item to be a neighbour equally often (0 = no hubs;
    Feldbauer et al., ICBK 2018).
    """
    c = np.asarray(counts, dtype=np.float64)
    total = float(c.sum())
    if total == 0:
        return math.nan
    return 0.5 * float(np.abs(c - c.mean()).sum()) / total


def antihub_occurrence(counts: np.ndarray) -> float:
    """Share of items that are anti-hubs, never among any query's k nearest (N_k = 0), as
    scikit-hubness's ``antihub_occurrence``: anti-hubs / number of items."""
    c = np.asarray(counts)
    return float(np.count_nonzero(c == 0)) / c.size


def hub_occurrence(counts: np.ndarray, k: int, n_queries: int | None = None,
                   hub_size: float = HUB_SIZE) -> float:
    """Share of the k-nearest-neighbour slots taken by hubs, as scikit-hubness's
    ``hub_occurrence``: hubs are items with N_k >= ``hub_size`` * k (``>=`` as its code
    computes it; its docstring says ``>``), and the value is ``sum of their N_k / k / n_queries``.

    Parameters
    ----------
    counts : ndarray of shape (n_items,)
        k-occurrence counts.
    k : int
        Neighbours per query.
    n_queries : int, optional
        Number of queries (default ``counts.size``: every item queries, as in the mixed pool).
    hub_size : float
        scikit-hubness's default is 2.
    """
    c = np.asarray(counts, dtype=np.float64)
    n_queries = c.size if n_queries is None else n_queries
    return float(c[c >= hub_size * k].sum()) / k / n_queries


def hubness_indices(neighbours: np.ndarray, n_items: int) -> dict[str, float]:
    """Every hubness index of a k-nearest-neighbour table where each item is a query.

    Parameters
    ----------
    neighbours : ndarray of shape (n_items, k)
        Each item's k nearest other items.

    Returns
    -------
    dict
        ``hubness`` (skewness of N_k), ``robinhood``, ``antihub_occurrence``,
        ``hub_occurrence`` (hubs: N_k >= :data:`HUB_SIZE` * k).
    """
    counts = k_occurrence(neighbours, n_items)
    k = int(np.asarray(neighbours).shape[1])
    return {"hubness": skewness(counts), "robinhood": robin_hood_index(counts),
            "antihub_occurrence": antihub_occurrence(counts),
            "hub_occurrence": hub_occurrence(counts, k, np.asarray(neighbours).shape[0])}


def hubness(X: np.ndarray, Y: np.ndarray, k: int = HUBNESS_K, *,
            block_values: int = BLOCK_VALUES) -> float:
    """Skewness of the k-occurrence distribution over the 2N items of the mixed pool.

    Each item's k nearest other items (cosine; equal similarities ordered by lower index) are
    found by panels of the pool's upper triangle: memory O(N k + panel).
    """
    Xn, Yn = normalize_rows(X), normalize_rows(Y)
    top, _ = _pool_pass(Xn, Yn, hub_k=k, ablation=None, block_values=block_values)
    return skewness(k_occurrence(top, 2 * Xn.shape[0]))


def nearest_neighbours(A: np.ndarray, k: int = HUBNESS_K, *, block_values: int = BLOCK_VALUES) -> np.ndarray:
    """Each row's k most cosine-similar other rows of ``A``, most similar first.

    Returns
    -------
    ndarray of shape (M, min(k, M - 1)), int
        Equal similarities are ordered by lower index. Walks the upper triangle of ``A A^T``
        by panels: about M^2 d / 2 multiply-adds, memory O(M k + panel).
    """
    An = normalize_rows(A)
    return _topk_pass(An, k, block_values)


# ---------------------------------------------------------------------------------------------
# per-cluster gap
# ---------------------------------------------------------------------------------------------
@dataclass
class ClusterGaps:
    """Gap measures per cluster of pairs.

    Attributes
    ----------
    assignment : ndarray of shape (N,), int
        Cluster of each pair (index into ``names``).
    names : list of str
        Cluster names: the labels, or ``"cluster 0"`` ... for k-means.
    source : str
        ``"labels"`` or ``"kmeans"``.
    k : int
        Number of clusters.
    rows : list of dict
        Per cluster: ``cluster``, ``name``, ``n`` and, for clusters of at least 2 pairs, every
        metric of ``measure_gap`` on the cluster's own pairs (its own mixed pool) and ``RMG``.
    """

    assignment: np.ndarray
    names: list[str]
    source: str
    k: int
    rows: list[dict[str, Any]] = field(default_factory=list)

    def members(self, cluster: int) -> np.ndarray:
        """Indices of the pairs in ``cluster``."""
        return np.flatnonzero(self.assignment == cluster)


def cluster_pairs(X: np.ndarray, Y: np.ndarray, n_clusters: int | None = None, *,
                  seed: int = 0) -> tuple[np.ndarray, int]:
    """k-means on the joint embedding [x_i, y_i] of each pair (seeded).

    k-means (k-means++ starts, Lloyd iterations; Arthur & Vassilvitskii 2007) runs on the first
    ``KMEANS_COMPONENTS`` principal components of the joint embedding (seeded randomized PCA;
    Halko et al. 2011): the semantic structure that clusters follow lives in the leading
    components, and each iteration costs O(N k 50) instead of O(N k 2d). When ``n_clusters``
    is None, k is chosen in ``KMEANS_K_RANGE`` by the best silhouette score on a seeded
    subsample of ``KMEANS_SUBSAMPLE`` pairs (one start per k); then k-means (3 starts, the
    lowest inertia kept) runs on all pairs. Plain numpy with BLAS on one thread: no OpenMP
    pool to spin against a busy machine.

    Returns
    -------
    assignment : ndarray of shape (N,)
    k : int
    """
    from sklearn.metrics import silhouette_score

    Xn, Yn = normalize_rows(X), normalize_rows(Y)
    J = np.hstack([Xn, Yn]).astype(np.float64)
    n = J.shape[0]
    with one_blas_thread(2):
        p = min(KMEANS_COMPONENTS, J.shape[1], n - 1)
        if 1 <= p < J.shape[1]:
            J = _randomized_pca(J, p, seed)
        if n_clusters is None:
            rng = np.random.default_rng(seed)
            sub = J[rng.choice(n, min(n, KMEANS_SUBSAMPLE), replace=False)]
            hi = min(KMEANS_K_RANGE[1], sub.shape[0] // (KMEANS_MIN_PAIRS // KMEANS_K_RANGE[0]))
            if hi < KMEANS_K_RANGE[0]:
                raise ValueError(f"too few pairs ({n}) to choose k; give n_clusters.")
            scores = {}
            for k in range(KMEANS_K_RANGE[0], hi + 1):
                lab = _kmeans(sub, k, seed, n_init=1)
                scores[k] = silhouette_score(sub, lab) if np.unique(lab).size > 1 else -1.0
            n_clusters = max(scores, key=scores.get)
        if not 1 <= n_clusters <= n:
            raise ValueError(f"n_clusters must be in 1 .. {n} (the number of pairs), got {n_clusters}.")
        return _kmeans(J, n_clusters, seed, n_init=3), int(n_clusters)


def _randomized_pca(A: np.ndarray, p: int, seed: int, power: int = 2) -> np.ndarray:
    """Scores of ``A`` on its first p principal components (randomized range finder)."""
    Ac = A - A.mean(0)
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(Ac @ rng.standard_normal((Ac.shape[1], min(p + 10, Ac.shape[1]))))[0]
    for _ in range(power):
        Q = np.linalg.qr(Ac @ np.linalg.qr(Ac.T @ Q)[0])[0]
    _, _, Vt = np.linalg.svd(Q.T @ Ac, full_matrices=False)
    return Ac @ Vt[:p].T


def _kmeans(A: np.ndarray, k: int, seed: int, *, n_init: int, max_iter: int = 100) -> np.ndarray:
    """Seeded k-means (k-means++ starts, Lloyd iterations); the labels of the best start."""
    n = A.shape[0]
    rng = np.random.default_rng(seed)
    sq = np.einsum("ij,ij->i", A, A)
    best, best_inertia = None, np.inf
    for _ in range(n_init):
        C = np.empty((k, A.shape[1]))
        C[0] = A[rng.integers(n)]
        d2 = np.maximum(sq - 2 * A @ C[0] + C[0] @ C[0], 0)
        for j in range(1, k):
            total = d2.sum()
            C[j] = A[rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)]
            d2 = np.minimum(d2, np.maximum(sq - 2 * A @ C[j] + C[j] @ C[j], 0))
        labels = np.full(n, -1)
        for _ in range(max_iter):
            D = sq[:, None] - 2 * A @ C.T + np.einsum("ij,ij->i", C, C)[None, :]
            new = D.argmin(axis=1)
            if np.array_equal(new, labels):
                break
            labels = new
            counts = np.bincount(labels, minlength=k)
            members = sparse.csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(k, n))
            sums = members @ A
            filled = counts > 0
            C[filled] = sums[filled] / counts[filled, None]
        inertia = float(np.maximum(D[np.arange(n), labels], 0).sum())
        if inertia < best_inertia:
            best, best_inertia = labels, inertia
    # clusters numbered by first appearance: the same partition always reads the same
    present, first = np.unique(best, return_index=True)
    rank = np.argsort(np.argsort(first))
    return rank[np.searchsorted(present, best)].astype(np.int64)


def cluster_gaps(X: np.ndarray, Y: np.ndarray, *, labels: Sequence[str] | None = None,
                 n_clusters: int | None = None, seed: int = 0,
                 ks: tuple[int, ...] = RECALL_KS, like: ClusterGaps | None = None,
                 scores: ScoreTerms | None = None) -> ClusterGaps:
    """Gap measures per cluster: ITR, R@K, paired distance, RMG, ... of each cluster's pairs.

    Parameters
    ----------
    X, Y : ndarray of shape (N, d)
    labels : sequence of N str, optional
        Use these as the clusters (e.g. the file's ``labels``); else k-means (:func:`cluster_pairs`).
    n_clusters : int, optional
        k of k-means (chosen by silhouette when None).
    seed : int
    ks : tuple of int
        K of R@K, passed to ``measure_gap``.
    like : ClusterGaps, optional
        Measure these clusters (their assignment, names and source) instead of choosing any:
        the same pairs after a method, cluster by cluster beside the raw embeddings (k-means
        on the transformed pairs would group them differently).
    scores : ScoreTerms, optional
        A score correction's terms of the N pairs: each cluster ranks on its pairs' terms (the
        run's, as fitted; the cluster is the pool).
    """
    Xn, Yn = normalize_rows(X), normalize_rows(Y)
    n = Xn.shape[0]
    if like is not None:
        if like.assignment.shape[0] != n:
            raise ValueError(f"the clusters given are of {like.assignment.shape[0]} pairs, X has "
                             f"{n}: pass the clusters of these pairs.")
        out = ClusterGaps(like.assignment.copy(), list(like.names), like.source, like.k)
        with one_blas_thread(2):
            _measure_clusters(out, Xn, Yn, ks, scores)
        return out
    if labels is not None:
        labels = [str(v) for v in labels]
        if len(labels) != n:
            raise ValueError(f"{len(labels)} labels for {n} pairs; give one label per pair.")
        names, assignment = np.unique(np.asarray(labels), return_inverse=True)
        names, source = [str(v) for v in names], "labels"
        k = len(names)
    else:
        assignment, k = cluster_pairs(Xn, Yn, n_clusters, seed=seed)
        names, source = [f"cluster {c}" for c in range(k)], "kmeans"
    out = ClusterGaps(np.asarray(assignment, dtype=np.int64), names, source, k)
    with one_blas_thread(2):  # many small solves: a BLAS thread pool only spins on them
        _measure_clusters(out, Xn, Yn, ks, scores)
    return out


def _measure_clusters(out: ClusterGaps, Xn: np.ndarray, Yn: np.ndarray, ks: tuple[int, ...],
                      scores: ScoreTerms | None = None) -> None:
    """One row of measures per cluster, in cluster order. Clusters are measured side by side,
    one per CPU: each is small (its similarity pass is one panel, its span a thin QR), so one
    cluster cannot keep two cores busy."""
    from concurrent.futures import ThreadPoolExecutor

    def one(c: int) -> dict[str, Any]:
        idx = out.members(c)
        row: dict[str, Any] = {"cluster": c, "name": out.names[c], "n": int(idx.size)}
        if idx.size >= 2:
            Xc, Yc = Xn[idx], Yn[idx]
            r = measure_gap(Xc, Yc, ks=ks,
                            scores=None if scores is None else scores.subset(idx))
            row.update({key: v for key, v in r.metrics.items() if key != "N"})
            row["RMG"] = relative_modality_gap(Xc, Yc)
            row["NDCG@10"] = float(ndcg_gains(r.i2t_rank).mean())
        return row

    workers = min(_workers(), len(out.names))
    if workers <= 1:
        out.rows.extend(one(c) for c in range(len(out.names)))
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="gapviz-clusters") as pool:
        out.rows.extend(pool.map(one, range(len(out.names))))


# ---------------------------------------------------------------------------------------------
# the whole anatomy
# ---------------------------------------------------------------------------------------------
@dataclass
class GapAnatomy:
    """Everything :func:`gap_anatomy` measured on one embedding of N pairs.

    Attributes
    ----------
    metrics : dict
        ``RMG``, ``NDCG@10`` (MixBench's formula on the paper's pool), ``NDCG@10_mixbench``
        (MixBench's protocol), ``hubness`` (skewness of N_10), ``robinhood``,
        ``antihub_occurrence``, ``hub_occurrence`` and, when raw rows not of unit norm were
        given, ``frechet_raw``.
    report : GapReport
        The plain measures of the same pairs.
    dimensions : DimensionGaps
    ablation : AblationCurve
    clusters : ClusterGaps or None
    split : dict
        :func:`centroid_vs_distribution`.
    neighbours : ndarray of shape (2N, k)
        Each pool item's k nearest items (rows 0..N-1 images, N..2N-1 texts).
    intervals : IntervalReport or None
        Bootstrap intervals (:mod:`gapviz.intervals`), when asked for.
    seconds : dict
        Wall time of each part.
    mixbench : MixBenchSearch or None
        The search behind ``NDCG@10_mixbench``.
    """

    metrics: dict[str, float]
    report: GapReport
    dimensions: DimensionGaps
    ablation: AblationCurve
    clusters: ClusterGaps | None
    split: dict[str, float]
    neighbours: np.ndarray
    intervals: Any = None
    seconds: dict[str, float] = field(default_factory=dict)
    mixbench: MixBenchSearch | None = None

    def outcomes(self, Xn: np.ndarray, Yn: np.ndarray):
        """The per-pair outcomes the bootstrap resamples (:class:`gapviz.intervals.PairOutcomes`)."""
        from .intervals import PairOutcomes

        return PairOutcomes.from_report(self.report, Xn, Yn, neighbours=self.neighbours)

    def to_json(self, *, dims_listed: int = DIMENSIONS_LISTED) -> dict[str, Any]:
        """One JSON-serialisable dict (ratios may be ``inf``: ``json.dumps`` writes Infinity)::

            {"metrics": {"RMG", "NDCG@10", "NDCG@10_mixbench", "hubness", "robinhood",
                         "antihub_occurrence", "hub_occurrence", ["frechet_raw"]},
             "anatomy": {"dimensions": [{"index", "gap", "share"}, ...],   # largest first
                         "ablation": [{"removed", "dims", "R@1_i2t_crossmodal", ...}, ...],
                         "clusters": [{"cluster", "name", "n", "ITR", "R@5", ..., "RMG"}, ...],
                         "centroid_vs_distribution": {...},
                         "hubness": {"k", "hub_size", "items"},
                         "ndcg_mixbench": {"documents", "renderings", "queries", ...}},
             "ci": {measure: [low, high]}, "ci_method": {...}, "seconds": {...}}
        """
        anatomy = {
            "dimensions": self.dimensions.to_list(dims_listed),
            "n_dimensions": int(self.dimensions.order.size),
            "ablation": self.ablation.to_list(),
            "clusters": [] if self.clusters is None else self.clusters.rows,
            "cluster_source": None if self.clusters is None else self.clusters.source,
            "centroid_vs_distribution": dict(self.split),
            "hubness": {"k": int(self.neighbours.shape[1]), "hub_size": HUB_SIZE,
                        "items": int(self.neighbours.shape[0]),
                        "definitions": "scikit-hubness (skhubness.analysis.Hubness)"},
        }
        if self.mixbench is not None:
            anatomy["ndcg_mixbench"] = self.mixbench.describe()
        out: dict[str, Any] = {"metrics": dict(self.metrics), "anatomy": anatomy}
        if self.intervals is not None:
            out["ci"] = {k: [float(lo), float(hi)] for k, (lo, hi) in self.intervals.ci.items()}
            out["ci_method"] = self.intervals.describe()
        out["seconds"] = dict(self.seconds)
        return out


def gap_anatomy(X: np.ndarray, Y: np.ndarray, *, report: GapReport | None = None,
                labels: Sequence[str] | None = None, n_clusters: int | None = None,
                clusters: bool = True, cluster_like: ClusterGaps | None = None,
                ablation_dims: int = ABLATION_DIMS, intervals: bool = True, n_resamples: int = 200, level: float = 0.95,
                seed: int = 0, raw: tuple[np.ndarray, np.ndarray] | None = None,
                block_values: int = BLOCK_VALUES, scores: ScoreTerms | None = None) -> GapAnatomy:
    """The whole anatomy of the gap of N pairs, optionally with bootstrap intervals.

    Parameters
    ----------
    X, Y : ndarray of shape (N, d)
        Image and text embeddings (normalised here).
    report : GapReport, optional
        ``measure_gap(X, Y)`` if already computed (saves its time).
    labels : sequence of N str, optional
        Per-pair class labels: the clusters when given.
    n_clusters : int, optional
        k of k-means when there are no labels (chosen by silhouette when None).
    clusters : bool
        Compute the per-cluster gap (skipped, ``clusters`` None, when there are neither labels
        nor ``n_clusters`` and fewer than ``KMEANS_MIN_PAIRS`` pairs to choose k on).
    cluster_like : ClusterGaps, optional
        Measure the clusters of another anatomy of the same pairs (e.g. the raw embeddings'
        when these are the pairs after a method): :func:`cluster_gaps` ``like``.
    ablation_dims : int
        M of the ablation curve.
    intervals : bool
        Percentile-bootstrap intervals over pairs for every scalar measure
        (:func:`gapviz.intervals.bootstrap_ci`, ``n_resamples`` resamples, ``seed``).
    seed : int
        Seed of k-means, of the bootstrap and of the renderings dealt out by MixBench's
        protocol (:func:`mixbench_search`).
    raw : (ndarray, ndarray), optional
        The image and text rows as the file gives them, before any normalisation (the same
        pairs; each modality's rows in any order, as the Fréchet distance never reads the
        pairing). When given and not of unit norm, ``metrics`` gains ``frechet_raw``
        (:func:`raw_frechet_distance`).
    block_values : int
        Upper bound on the float32 values of one similarity panel.
    scores : ScoreTerms, optional
        A score correction's terms of these pairs: the measures that rank (NDCG@10, hubness,
        and ``report``'s, computed here when not given) take the corrected scores
        (:mod:`gapviz.score_search`); MixBench's NDCG, whose documents fuse an image with its
        caption, has no corrected score and is left out (nan). The geometry (RMG, dimensions,
        clusters) reads the embeddings, which a score correction does not move.

    Returns
    -------
    GapAnatomy
    """
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    Xn, Yn = normalize_rows(X), normalize_rows(Y)
    if report is None:
        report = measure_gap(Xn, Yn, scores=scores)
        seconds["measure_gap"] = time.perf_counter() - t
    elif report.n != Xn.shape[0]:
        raise ValueError(f"report is of {report.n} pairs but X has {Xn.shape[0]}: pass the report of these pairs.")
    if report.image_of is not None:
        raise ValueError(f"the anatomy measures one caption per image; these numbers use "
                         f"{report.convention}. Load the data with one caption per image (the "
                         "first or a random one) for the anatomy; the pool-size and caption "
                         "sweep compares the conventions.")

    t = time.perf_counter()
    dims = dimension_gaps(Xn, Yn)
    split = centroid_vs_distribution(Xn, Yn, frechet=report.metrics.get("frechet"))
    top, curve = _pool_pass(Xn, Yn, hub_k=HUBNESS_K,
                            ablation=_ablation_plan(Xn, Yn, ablation_dims, dims.order[:ablation_dims]),
                            block_values=block_values)
    n = Xn.shape[0]
    seconds["pool_pass"] = time.perf_counter() - t
    t = time.perf_counter()
    search = None
    if scores is None:
        search = mixbench_search(Xn, Yn, seed=seed, block_values=block_values)
    else:  # every pool item's neighbours on the corrected scores
        from .score_search import pool_search

        top = pool_search(X, Y, scores, k_neighbours=top.shape[1])["neighbours"]
    seconds["mixbench" if scores is None else "corrected_search"] = time.perf_counter() - t
    metrics = {
        "RMG": float(curve.rmg[0]),
        "NDCG@10": float(ndcg_gains(report.i2t_rank, NDCG_K).mean()),
        "NDCG@10_mixbench": search.ndcg(NDCG_K) if search is not None else math.nan,
        **hubness_indices(top, 2 * n),
    }
    if raw is not None:
        t = time.perf_counter()
        value = raw_frechet_distance(*raw)
        if value is not None:
            metrics["frechet_raw"] = value
        seconds["frechet_raw"] = time.perf_counter() - t

    groups = None
    if clusters and cluster_like is not None:
        t = time.perf_counter()
        groups = cluster_gaps(Xn, Yn, like=cluster_like, seed=seed, scores=scores)
        seconds["clusters"] = time.perf_counter() - t
        clusters = False
    if clusters and labels is None and n_clusters is None and n < KMEANS_MIN_PAIRS:
        clusters = False  # too few pairs to choose k; give n_clusters or labels
    if clusters:
        t = time.perf_counter()
        groups = cluster_gaps(Xn, Yn, labels=labels, n_clusters=n_clusters, seed=seed,
                              scores=scores)
        seconds["clusters"] = time.perf_counter() - t

    result = GapAnatomy(metrics, report, dims, curve, groups, split, top, seconds=seconds,
                        mixbench=search)
    if intervals:
        from .intervals import bootstrap_ci

        t = time.perf_counter()
        result.intervals = bootstrap_ci(result.outcomes(Xn, Yn), n_resamples=n_resamples,
                                        level=level, seed=seed)
        seconds["intervals"] = time.perf_counter() - t
    return result


def anatomy_json(X: np.ndarray, Y: np.ndarray, **kwargs: Any) -> dict[str, Any]:
    """:func:`gap_anatomy` as one JSON-serialisable dict (see :meth:`GapAnatomy.to_json`)."""
    return gap_anatomy(X, Y, **kwargs).to_json()


# ---------------------------------------------------------------------------------------------
# the pass over the mixed pool: numba sweeps of BLAS panels
# ---------------------------------------------------------------------------------------------
@numba.njit(nogil=True, cache=True, inline="always")
def _push(vals, idxs, worst, item, v, j):  # pragma: no cover
    """Offer candidate ``j`` with similarity ``v`` to ``item``'s top-k (vals, idxs rows).

    Order: higher similarity first, equal similarity -> lower index first. ``worst[item]`` is
    the k-th value, a quick filter for the caller.
    """
    k = vals.shape[0]
    w = 0
    for t in range(1, k):
        if vals[t] < vals[w] or (vals[t] == vals[w] and idxs[t] > idxs[w]):
            w = t
    if v > vals[w] or (v == vals[w] and j < idxs[w]):
        vals[w] = v
        idxs[w] = j
        m = vals[0]
        for t in range(1, k):
            m = min(m, vals[t])
        worst[item] = m


@numba.njit(nogil=True, cache=True)
def _topk_upper(S, i0, r0, r1, row_val, row_idx, row_worst, col_val, col_idx, col_worst):  # pragma: no cover
    """Top-k upkeep over the strict upper triangle of one panel ``S = A[i0:i0+R] @ A[i0:].T``.

    Rows r0:r1 of the panel; entry (r, c), c > r, is the pair of items (i0 + r, i0 + c) and is
    offered to both. Row items are only ever rows of this panel (one thread each): their lists
    are shared; column items get the calling thread's own lists (merged by the caller).
    """
    n_cols = S.shape[1]
    for r in range(r0, r1):
        gi = i0 + r
        for c in range(r + 1, n_cols):
            v = S[r, c]
            gj = i0 + c
            if v >= row_worst[gi]:
                _push(row_val[gi], row_idx[gi], row_worst, gi, v, gj)
            if v >= col_worst[gj]:
                _push(col_val[gj], col_idx[gj], col_worst, gj, v, gi)


@numba.njit(nogil=True, cache=True)
def _ablation_panel(S, i0, r0, r1, c_off, n, xa, yaT, inv_x, inv_yT, thr, thrT, cnt_x, cnt_yT,
                    acc):  # pragma: no cover
    """Cross-modal counts for every ablation level from one panel of image rows.

    ``S[r, c_off + j]`` = x_{i0+r} . y_j. For level m (top-m gap dims removed) the renormalised
    cosine is (s - sum_{l<m} xa[i,l] ya[j,l]) * inv_x[i,m] * inv_y[j,m]; image i counts the
    texts j != i with value >= thr[i, m] (its partner's, less the tie tolerance), text j the
    images i != j with value >= thr[j, m]. Level-major arrays (``yaT``, ``inv_yT``, ``thrT``,
    ``cnt_yT``: shape (levels, n)) keep the inner loop over j contiguous, so it vectorises.
    ``cnt_yT`` and ``acc`` are the calling thread's own. All float32 (SIMD lanes and memory
    traffic): a value is within about 1e-6 of its exact cosine, below the tie tolerance that
    the thresholds already leave, so only near-exact ties can fall either way.
    """
    levels = inv_x.shape[1]
    for r in range(r0, r1):
        i = i0 + r
        if i >= n:
            break
        for j in range(n):
            acc[j] = S[r, c_off + j]
        for m in range(levels):
            if m > 0:
                a = xa[i, m - 1]
                yl = yaT[m - 1]
                for j in range(n):
                    acc[j] -= a * yl[j]
            ix = inv_x[i, m]
            t = thr[i, m]
            iy = inv_yT[m]
            ty = thrT[m]
            cy = cnt_yT[m]
            c = 0
            for j in range(n):
                v = acc[j] * ix * iy[j]
                c += v >= t
                cy[j] += v >= ty[j]
            # the partner (j == i) was counted above like any text: take it back out
            v = acc[i] * ix * iy[i]
            c -= v >= t
            cy[i] -= v >= ty[i]
            cnt_x[i, m] += c


def _workers() -> int:
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class _TopK:
    """Row lists plus one column list per thread, merged at the end."""

    def __init__(self, n_items: int, k: int, threads: int) -> None:
        self.k = k
        self.row_val = np.full((n_items, k), -np.inf, np.float32)
        self.row_idx = np.full((n_items, k), np.iinfo(np.int32).max, np.int32)
        self.row_worst = np.full(n_items, -np.inf, np.float32)
        self.col_val = np.full((threads, n_items, k), -np.inf, np.float32)
        self.col_idx = np.full((threads, n_items, k), np.iinfo(np.int32).max, np.int32)
        self.col_worst = np.full((threads, n_items), -np.inf, np.float32)

    def sweep(self, S, i0, r0, r1, slot):
        _topk_upper(S, i0, r0, r1, self.row_val, self.row_idx, self.row_worst,
                    self.col_val[slot], self.col_idx[slot], self.col_worst[slot])

    def merged(self, values: bool = False):
        """Each item's k nearest (indices; with ``values``, also their float32 similarities),
        most similar first, equal values by lower index."""
        vals = np.concatenate([self.row_val, *self.col_val], axis=1)
        idxs = np.concatenate([self.row_idx, *self.col_idx], axis=1)
        order = np.lexsort((idxs, -vals), axis=1)[:, :self.k]
        top = np.take_along_axis(idxs, order, axis=1)
        return (top, np.take_along_axis(vals, order, axis=1)) if values else top


def _panel_loop(A: np.ndarray, B: np.ndarray | None, block_values: int, sweep) -> None:
    """Each row panel's product and sweep, one panel at a time per worker thread.

    ``B is None``: panels ``A[i0:i1] @ A[i0:].T`` (upper triangle); else ``A[i0:i1] @ B.T``.
    ``sweep(S, i0, 0, rows, slot)`` reads panel S while it is still in cache; ``slot`` is the
    worker's own accumulators. BLAS is held to one thread meanwhile (shared with
    ``measure_gap``'s passes, so concurrent callers restore it correctly): a BLAS pool beside
    the sweep threads would spin against them.
    """
    from .measures import _run_panels

    n = A.shape[0]
    workers = _workers()
    n_cols = n if B is None else B.shape[0]
    rows = max(1, min(_PANEL_ROWS, block_values // max(n_cols * workers, 1)))

    def work(slot: int, i0: int) -> None:
        i1 = min(n, i0 + rows)
        S = A[i0:i1] @ (A[i0:] if B is None else B).T
        sweep(S, i0, 0, i1 - i0, slot)

    with one_blas_thread(workers):
        # measure_gap's panel runner: each worker takes the next panel when it is free (in the
        # upper triangle the largest panels come first).
        _run_panels(work, list(range(0, n, rows)), workers)




def _topk_pass(An: np.ndarray, k: int, block_values: int) -> np.ndarray:
    m = An.shape[0]
    k = min(k, m - 1)
    if k < 1:
        raise ValueError("need at least 2 rows to find neighbours.")
    top = _TopK(m, k, _workers())
    _panel_loop(An, None, block_values, top.sweep)
    return top.merged()


def _pool_pass(Xn: np.ndarray, Yn: np.ndarray, *, hub_k: int, ablation: np.ndarray | None,
               block_values: int) -> tuple[np.ndarray | None, AblationCurve | None]:
    """One pass over the mixed pool (or over X Y^T alone when ``hub_k`` is 0).

    Returns the pool's k nearest items per item (hub_k > 0) and the ablation curve over the
    dimensions ``ablation`` (when given).
    """
    n = Xn.shape[0]
    workers = _workers()
    top = _TopK(2 * n, min(hub_k, 2 * n - 1), workers) if hub_k else None
    if ablation is not None:
        M = ablation.size
        xa = Xn[:, ablation].astype(np.float64)
        ya = Yn[:, ablation].astype(np.float64)  # float64 for the thresholds and RMG
        # squared norms left after removing the first m dims, m = 0..M
        nx2 = np.c_[np.einsum("ij,ij->i", Xn, Xn, dtype=np.float64)[:, None], np.zeros((n, M))]
        ny2 = np.c_[np.einsum("ij,ij->i", Yn, Yn, dtype=np.float64)[:, None], np.zeros((n, M))]
        nx2[:, 1:] = nx2[:, :1] - np.cumsum(xa ** 2, axis=1)
        ny2[:, 1:] = ny2[:, :1] - np.cumsum(ya ** 2, axis=1)
        inv_x = _inv_norm(nx2)
        inv_y = _inv_norm(ny2)
        s_pair = np.einsum("ij,ij->i", Xn, Yn, dtype=np.float64)
        cos_m = np.c_[s_pair[:, None], s_pair[:, None] - np.cumsum(xa * ya, axis=1)] * inv_x * inv_y
        thr = cos_m - TIE_TOL
        cnt_x = np.ones((n, M + 1), np.int64)  # the partner itself
        cnt_yT = np.zeros((workers, M + 1, n), np.int32)
        acc = np.empty((workers, n), np.float32)
        f32 = lambda A: np.ascontiguousarray(A, dtype=np.float32)  # noqa: E731
        xa32, yaT32, inv_x32, inv_yT32 = f32(xa), f32(ya.T), f32(inv_x), f32(inv_y.T)
        thr32, thrT32 = f32(thr), f32(thr.T)

        def ablate(S, i0, r0, r1, slot, c_off):
            _ablation_panel(S, i0, r0, r1, c_off, n, xa32, yaT32, inv_x32, inv_yT32, thr32, thrT32,
                            cnt_x, cnt_yT[slot], acc[slot])

    if top is not None:
        Z = np.vstack([Xn, Yn])

        def sweep(S, i0, r0, r1, slot):
            top.sweep(S, i0, r0, r1, slot)
            if ablation is not None and i0 < n:
                ablate(S, i0, r0, r1, slot, n - i0)

        _panel_loop(Z, None, block_values, sweep)
    elif ablation is not None:
        def sweep(S, i0, r0, r1, slot):
            ablate(S, i0, r0, r1, slot, 0)

        _panel_loop(Xn, Yn, block_values, sweep)

    curve = None
    if ablation is not None:
        rank_t2i = 1 + cnt_yT.sum(axis=0, dtype=np.int64).T
        rmg = np.empty(M + 1)
        SX = inv_x.T @ Xn.astype(np.float64)  # (M + 1, d): sums of the renormalised rows
        SY = inv_y.T @ Yn.astype(np.float64)
        for m in range(M + 1):
            sx, sy = SX[m], SY[m]
            sx[ablation[:m]] = 0.0
            sy[ablation[:m]] = 0.0
            rmg[m] = rmg_from_sums(float(cos_m[:, m].mean()), sx @ sx, sy @ sy, n,
                                   np.count_nonzero(inv_x[:, m]), np.count_nonzero(inv_y[:, m]))
        curve = AblationCurve(np.arange(M + 1), ablation.copy(), (cnt_x == 1).mean(axis=0),
                              (rank_t2i == 1).mean(axis=0), rmg)
    return (top.merged() if top is not None else None), curve


def _inv_norm(sq: np.ndarray) -> np.ndarray:
    """1 / sqrt(sq), and 0 where nothing is left (a row whose every coordinate was removed)."""
    out = np.zeros_like(sq)
    ok = sq > 1e-12
    out[ok] = 1.0 / np.sqrt(sq[ok])
    return out
