"""Measures of the modality gap (Role et al. 2025, "Fill the Gap", section 2.2).

Notation: N pairs, ``X`` (N, d) image and ``Y`` (N, d) text embeddings, row i of each a pair.
Rows are L2-normalised here and similarity is cosine. The *mixed pool* is ``Z = [X; Y]``
(2N items); a query is never its own result; ranks are 1-based.

Ties
----
A tie never counts as a win for what a query is looking for: an item whose similarity *equals*
the target's is ranked ahead of it. So a degenerate embedding that maps everything to one
point gets the worst ranks, not the best, and the measures never overstate how far a gap
is closed. For example an image query whose best text is exactly as similar as its best
other image counts as "image first" (ITR) and its best text gets rank 2 (TMR).
Similarities within :data:`TIE_TOL` of each other count as tied: float32 products of the
same two vectors can differ in their last bits depending on where they sit in a block
(BLAS tiling), and a duplicated point must tie with its twin wherever it is.

Cost
----
Everything comes from one pass over similarity panels: the cross block ``X Y^T`` once (by
row panels), and each within-modality block ``X X^T``, ``Y Y^T`` once over its upper
triangle (it is symmetric; panel i0:i0+R against rows i0:), about ``2 N^2 d`` multiply-adds
in all. Reductions (maxima, counts above a per-query threshold) are fused into one sweep of
each panel by numba kernels while the panel is still in cache, so nothing of size N^2 is
ever held: memory is O(N d + block). One worker thread per CPU takes panels in turn, each
doing its own product (BLAS held to one thread) and sweep; the O(N d + d^3) measures
(Fréchet) run on a side thread meanwhile.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numba
import numpy as np
from scipy import linalg, stats

from .config import BLOCK_VALUES, RECALL_KS
from .embeddings import check_pair_arrays

# ---------------------------------------------------------------------------------------------
# numba kernels: one sweep of a similarity panel, every reduction at once
# ---------------------------------------------------------------------------------------------
#: Cosines closer than this are a tie (a few float32 roundings of a 512-d dot product).
TIE_TOL = 2e-6
#: Rows of one similarity panel. 512 rows x 5,000 columns (10 MB) stays in the last-level cache
#: between the product that writes it and the sweep that reads it; ``block_values`` caps it.
_PANEL_ROWS = 512


@numba.njit(nogil=True, cache=True)
def _cross_panel_stats(S, row_thr, col_thr, row_max, row_cnt, col_max, col_cnt):  # pragma: no cover
    """One read of ``S``: per row its max and count(>= row_thr); per column the same.

    ``col_max`` and ``col_cnt`` are the calling worker's own accumulators (reduced by the
    caller), so workers never write the same memory.
    """
    n_rows, n_cols = S.shape
    for r in range(n_rows):
        t = row_thr[r]
        m = np.float32(-np.inf)
        c = 0
        for j in range(n_cols):
            v = S[r, j]
            m = max(m, v)
            c += np.int32(v >= t)
            col_max[j] = max(col_max[j], v)
            col_cnt[j] += np.int32(v >= col_thr[j])
        row_max[r] = m
        row_cnt[r] = c


@numba.njit(nogil=True, cache=True)
def _upper_panel_counts(S, i0, thr_a, thr_b, cnt_a, cnt_b):  # pragma: no cover
    """Counts over the strict upper triangle of a symmetric similarity matrix, one panel.

    ``S = A[i0:i0 + R] @ A[i0:].T``: entry (r, c) is the pair of items (i0 + r, i0 + c), read
    only where c > r, and serves both items: item i counts the j with s_ij >= thr_a[i] (and
    thr_b[i]), item j the i with s_ij >= thr_a[j]. ``cnt_a``, ``cnt_b``: the worker's own.
    """
    n_rows, n_cols = S.shape
    for r in range(n_rows):
        gi = i0 + r
        ta = thr_a[gi]
        tb = thr_b[gi]
        ca = 0
        cb = 0
        for c in range(r + 1, n_cols):
            v = S[r, c]
            gj = i0 + c
            ca += np.int32(v >= ta)
            cb += np.int32(v >= tb)
            cnt_a[gj] += np.int32(v >= thr_a[gj])
            cnt_b[gj] += np.int32(v >= thr_b[gj])
        cnt_a[gi] += ca
        cnt_b[gi] += cb


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------
@dataclass
class GapReport:
    """All measures of one embedding of N pairs.

    Attributes
    ----------
    metrics : dict of str to float
        Scalar measures, keyed as in the CLI's JSON output (``ITR``, ``TIR``, ``IMR``, ``TMR``,
        ``R@5`` ... ; see :data:`METRIC_DESCRIPTIONS`). Ratios may be ``inf``.
    paired_cosine : ndarray of shape (N,)
        cos(x_i, y_i).
    best_text_rank : ndarray of shape (N,)
        Per image query, the mixed-pool rank of its best-ranked text (TMR averages it).
    best_image_rank : ndarray of shape (N,)
        Per text query, the mixed-pool rank of its best-ranked image (IMR averages it).
    i2t_rank, t2i_rank : ndarray of shape (N,)
        Mixed-pool rank of the paired item for each image / text query.
    i2t_rank_crossmodal, t2i_rank_crossmodal : ndarray of shape (N,)
        Rank of the paired item among the other modality only (classic retrieval).
    """

    metrics: dict[str, float]
    paired_cosine: np.ndarray
    best_text_rank: np.ndarray
    best_image_rank: np.ndarray
    i2t_rank: np.ndarray
    t2i_rank: np.ndarray
    i2t_rank_crossmodal: np.ndarray
    t2i_rank_crossmodal: np.ndarray
    ks: tuple[int, ...] = field(default=RECALL_KS)

    @property
    def n(self) -> int:
        return int(self.paired_cosine.shape[0])


#: One line per metric key: what it means (README, CLI table, app tooltips).
METRIC_DESCRIPTIONS: dict[str, str] = {
    "ITR": "image queries whose top-1 in the mixed pool is an image, divided by those whose top-1 is a text (1 = no bias; inf = never a text first)",
    "TIR": "the same for text queries: texts-first over images-first",
    "TMR": "mean rank of the best-ranked text for an image query (1 .. N+1; 1 = a text always comes first)",
    "IMR": "mean rank of the best-ranked image for a text query",
    "R@K": "image query -> its paired text within the top K of the mixed pool (fraction of queries)",
    "R@K_t2i": "text query -> its paired image within the top K of the mixed pool",
    "R@K_i2t_crossmodal": "classic retrieval: paired text within the top K among texts only",
    "R@K_t2i_crossmodal": "classic retrieval: paired image within the top K among images only",
    "paired_cosine_distance": "mean of 1 - cos(x_i, y_i) over the pairs",
    "paired_l2": "mean ||x_i - y_i|| over the pairs (rows L2-normalised)",
    "paired_l2_squared": "mean ||x_i - y_i||^2 over the pairs (rows L2-normalised)",
    "all_cosine_distance": "mean of 1 - cos(x_i, y_j) over all N x N image-text combinations",
    "frechet": "Frechet distance between Gaussians fitted to each modality (as FID)",
    "centroid_gap": "||mean(X) - mean(Y)|| of the L2-normalised rows (Liang et al. 2022)",
    "image_cone": "mean cosine between two different images (cone effect; 0 = spread out)",
    "text_cone": "mean cosine between two different texts",
    "separability": "held-out accuracy of a linear classifier telling images from texts (0.5 = inseparable)",
}


# ---------------------------------------------------------------------------------------------
# public functions
# ---------------------------------------------------------------------------------------------
def normalize_rows(A: np.ndarray) -> np.ndarray:
    """``A`` with each row scaled to unit L2 norm, as C-contiguous float32; zero rows rejected."""
    A = np.asarray(A, dtype=np.float32)
    norms = np.linalg.norm(A, axis=1, keepdims=True)
    if not np.all(norms > 0):
        bad = np.flatnonzero(norms[:, 0] <= 0)[:5].tolist()
        raise ValueError(f"rows {bad} are zero vectors and have no direction; drop them first "
                         "(gapviz.embeddings.clean_pairs finds and reports them).")
    return np.ascontiguousarray(A / norms)


def measure_gap(X: np.ndarray, Y: np.ndarray, *, ks: tuple[int, ...] = RECALL_KS,
                separability: bool = False, block_values: int = BLOCK_VALUES) -> GapReport:
    """Every gap measure of DESIGN.md "Measures" for N paired embeddings.

    Parameters
    ----------
    X : ndarray of shape (N, d)
        Image embeddings (normalised here).
    Y : ndarray of shape (N, d)
        Text embeddings; row i pairs with row i of ``X``.
    ks : tuple of int
        K values for recall@K.
    separability : bool
        Also fit a linear classifier (outside the similarity pass; slower).
    block_values : int
        Upper bound on the float32 values of one similarity block (memory knob).

    Returns
    -------
    GapReport
    """
    X = np.asarray(X)
    Y = np.asarray(Y)
    check_pair_arrays(X, Y)
    if not (np.isfinite(X).all() and np.isfinite(Y).all()):
        raise ValueError("embeddings contain NaN or inf; gapviz.embeddings.clean_pairs skips and "
                         "reports such rows.")
    Xn, Yn = normalize_rows(X), normalize_rows(Y)
    n = Xn.shape[0]
    s_pair = np.einsum("ij,ij->i", Xn, Yn)
    thr_pair = s_pair - np.float32(TIE_TOL)  # ">= threshold" then means "tied or closer"

    workers = _workers()
    with _one_blas_thread(workers), ThreadPoolExecutor(1, "gapviz-distances") as side:
        # The O(N d + d^3) measures (Fréchet's eigen-solve above all) run beside the
        # similarity pass instead of after it.
        distances = side.submit(distance_measures, Xn, Yn, s_pair, normalized=True)

        # Cross block X Y^T: per image query (rows) the best text and the texts at least as
        # close as its partner; per text query (columns) the same over images.
        best_text_sim, texts_ge_pair, best_image_sim, images_ge_pair = _cross_stats(
            Xn, Yn, s_pair, thr_pair, block_values, workers)

        # Within-modality blocks: how many same-modality items are at least as close as the
        # best other-modality item (-> ITR, TMR) and as the partner (-> mixed-pool rank of
        # the partner).
        tie = np.float32(TIE_TOL)
        imgs_ge_best_text, imgs_ge_pair = _within_counts(Xn, best_text_sim - tie, thr_pair,
                                                         block_values, workers)
        txts_ge_best_img, txts_ge_pair = _within_counts(Yn, best_image_sim - tie, thr_pair,
                                                        block_values, workers)
        distances = distances.result()

    best_text_rank = 1 + imgs_ge_best_text
    best_image_rank = 1 + txts_ge_best_img
    i2t_cross = texts_ge_pair
    t2i_cross = images_ge_pair
    i2t_mixed = texts_ge_pair + imgs_ge_pair
    t2i_mixed = images_ge_pair + txts_ge_pair

    metrics: dict[str, float] = {
        "N": float(n),
        "ITR": _ratio(np.count_nonzero(best_text_rank > 1), np.count_nonzero(best_text_rank == 1)),
        "TIR": _ratio(np.count_nonzero(best_image_rank > 1), np.count_nonzero(best_image_rank == 1)),
        "IMR": float(best_image_rank.mean()),
        "TMR": float(best_text_rank.mean()),
    }
    for k in ks:
        metrics[f"R@{k}"] = float(np.mean(i2t_mixed <= k))
    for k in ks:
        metrics[f"R@{k}_t2i"] = float(np.mean(t2i_mixed <= k))
    for k in ks:
        metrics[f"R@{k}_i2t_crossmodal"] = float(np.mean(i2t_cross <= k))
        metrics[f"R@{k}_t2i_crossmodal"] = float(np.mean(t2i_cross <= k))
    metrics.update(distances)
    if separability:
        metrics["separability"] = linear_separability(Xn, Yn)
    return GapReport(metrics, s_pair, best_text_rank, best_image_rank, i2t_mixed, t2i_mixed,
                     i2t_cross, t2i_cross, tuple(ks))


def distance_measures(X: np.ndarray, Y: np.ndarray, s_pair: np.ndarray | None = None, *,
                      normalized: bool = False) -> dict[str, float]:
    """Paired distances, pairs-vs-all, centroid gap, cone means and Fréchet distance.

    All O(N d + d^3): the mean over all N x N image-text cosines is
    ``(sum_i x_i) . (sum_j y_j) / N^2``, no N x N matrix needed.
    """
    if not normalized:
        X, Y = normalize_rows(X), normalize_rows(Y)
    n = X.shape[0]
    if s_pair is None:
        s_pair = np.einsum("ij,ij->i", X, Y)
    diff = np.linalg.norm(X - Y, axis=1).astype(np.float64)
    sx = X.sum(0, dtype=np.float64)
    sy = Y.sum(0, dtype=np.float64)
    return {
        "paired_cosine_distance": float(np.mean(1.0 - s_pair.astype(np.float64))),
        "paired_l2": float(diff.mean()),
        "paired_l2_squared": float(np.mean(diff ** 2)),
        "all_cosine_distance": float(1.0 - sx @ sy / n ** 2),
        "centroid_gap": float(np.linalg.norm(sx / n - sy / n)),
        # mean over i != j of x_i . x_j for unit rows: (|sum x|^2 - N) / (N (N - 1))
        "image_cone": float((sx @ sx - n) / (n * (n - 1))),
        "text_cone": float((sy @ sy - n) / (n * (n - 1))),
        "frechet": frechet_distance(X, Y),
    }


def frechet_distance(X: np.ndarray, Y: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the rows of ``X`` and of ``Y``.

    ``||mu_x - mu_y||^2 + Tr(C_x + C_y - 2 (C_x C_y)^(1/2))`` with covariances of denominator
    N - 1 (as ``np.cov`` and the reference FID code, Heusel et al. 2017). ``C_x C_y`` has the
    spectrum of the symmetric PSD matrix ``L^T C_y L`` for any factor ``C_x = L L^T``, so the
    trace of the square root is the sum of square roots of that matrix's eigenvalues: no
    non-symmetric ``sqrtm``. ``L`` is the Cholesky factor (one cheap factorisation); a
    singular ``C_x`` (fewer rows than dimensions, a flat direction) takes its eigen-factor.
    """
    mu_x, cx = _mean_cov(X)
    mu_y, cy = _mean_cov(Y)
    try:
        factor = linalg.cholesky(cx, lower=True)
    except linalg.LinAlgError:
        w, V = linalg.eigh(cx, driver="evd")
        factor = V * np.sqrt(np.clip(w, 0, None))
    m = factor.T @ cy @ factor
    tr_sqrt = np.sqrt(np.clip(linalg.eigvalsh(m, driver="evd"), 0, None)).sum()
    value = float(np.sum((mu_x - mu_y) ** 2) + np.trace(cx) + np.trace(cy) - 2.0 * tr_sqrt)
    return max(value, 0.0)


def _mean_cov(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (N - 1 denominator, as ``np.cov``), both float64.

    The d x d product runs in the input's precision (float32 embeddings: a float32 BLAS
    product, twice as fast; float64 input keeps float64), then is widened for the eigen-solves.
    """
    A = np.asarray(A)
    if A.dtype not in (np.float32, np.float64):
        A = A.astype(np.float64)
    mu = A.mean(0, dtype=np.float64)
    centred = A - mu.astype(A.dtype)
    return mu, (centred.T @ centred).astype(np.float64) / (A.shape[0] - 1)


def linear_separability(X: np.ndarray, Y: np.ndarray, *, test_size: float = 0.3,
                        seed: int = 0) -> float:
    """Held-out accuracy of a logistic regression telling image rows from text rows.

    Pairs are split, not rows, so a pair's image and text are both in train or both in test.
    0.5 means the modalities are linearly inseparable; 1.0 that a hyperplane splits them.
    """
    from sklearn.linear_model import LogisticRegression

    n = X.shape[0]
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_test = max(1, int(round(test_size * n)))
    test, train = order[:n_test], order[n_test:]
    if train.size == 0:
        raise ValueError("too few pairs to hold out a test split for separability.")

    def stack(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.vstack([X[idx], Y[idx]]), np.r_[np.zeros(idx.size), np.ones(idx.size)]

    clf = LogisticRegression(max_iter=2000).fit(*stack(train))
    Zt, lt = stack(test)
    return float(clf.score(Zt, lt))


@dataclass
class PairedTest:
    """ORIG vs transformed paired distances of the same pairs, with significance tests."""

    distance: str
    mean_before: float
    mean_after: float
    t_statistic: float
    t_pvalue: float
    wilcoxon_statistic: float
    wilcoxon_pvalue: float


def paired_significance(X0: np.ndarray, Y0: np.ndarray, X1: np.ndarray, Y1: np.ndarray) -> list[PairedTest]:
    """Paired t-test and Wilcoxon signed-rank test of per-pair distances, before vs after.

    Distances are scale-comparable (rows L2-normalised): cosine distance and L2. The two
    embeddings may have different dimensions (e.g. a spectral embedding with k columns).
    """
    X0, Y0, X1, Y1 = (normalize_rows(A) for A in (X0, Y0, X1, Y1))
    if X0.shape[0] != X1.shape[0]:
        raise ValueError(f"before has {X0.shape[0]} pairs, after {X1.shape[0]}: compare the same pairs.")
    out = []
    for name, fn in (("cosine", lambda a, b: 1.0 - np.einsum("ij,ij->i", a, b)),
                     ("l2", lambda a, b: np.linalg.norm(a - b, axis=1))):
        d0 = fn(X0, Y0).astype(np.float64)
        d1 = fn(X1, Y1).astype(np.float64)
        diff = d0 - d1
        if np.allclose(diff, 0):
            t = (0.0, 1.0)
            w = (0.0, 1.0)
        else:
            t = stats.ttest_rel(d0, d1)
            w = stats.wilcoxon(d0, d1)
        out.append(PairedTest(name, float(d0.mean()), float(d1.mean()), float(t[0]), float(t[1]),
                              float(w[0]), float(w[1])))
    return out


# ---------------------------------------------------------------------------------------------
# internals
# ---------------------------------------------------------------------------------------------
def _ratio(num: int, den: int) -> float:
    if den == 0:
        return math.inf if num > 0 else math.nan
    return float(num) / float(den)


def _workers() -> int:
    """CPUs this process may run on: one panel worker each."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _panel_rows(n_cols: int, block_values: int, workers: int) -> int:
    """Rows of a similarity panel with ``n_cols`` columns; all workers' panels together hold
    at most ``block_values`` values."""
    return max(1, min(_PANEL_ROWS, block_values // (n_cols * workers)))


def _run_panels(work, starts: list[int], workers: int) -> None:
    """Call ``work(slot, i0)`` for every panel start, on ``workers`` threads.

    Each thread takes the next panel when it is free (the machine may be shared) and owns
    accumulator ``slot``. Run it under ``_one_blas_thread``.
    """
    if workers == 1:
        for i0 in starts:
            work(0, i0)
        return
    pending = iter(starts)
    lock = threading.Lock()

    def worker(slot: int) -> None:
        while True:
            with lock:
                i0 = next(pending, None)
            if i0 is None:
                return
            work(slot, i0)

    with ThreadPoolExecutor(workers, thread_name_prefix="gapviz-panel") as pool:
        for future in [pool.submit(worker, slot) for slot in range(workers)]:
            future.result()


class _OneBlasThread:
    """Holds BLAS to one thread while any measure pass runs; shared by concurrent callers.

    A worker's product and its numba sweep then run back to back on one core. Left to
    themselves, BLAS's thread pool and a second pool for the sweeps spin against each other
    on the same cores, which cost about 40% on 2 cores. The first caller in sets the limit and
    the last one out restores it, so concurrent passes (app sessions are threads) never
    leave the process with a wrong BLAS setting.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._limiter = None
        self._controller = None  # made on first use: it lists the BLAS libraries loaded then

    @contextlib.contextmanager
    def __call__(self, workers: int):
        if workers == 1:  # nothing runs beside BLAS: leave it alone
            yield
            return
        with self._lock:
            if self._users == 0:
                if self._controller is None:
                    from threadpoolctl import ThreadpoolController

                    self._controller = ThreadpoolController()
                self._limiter = self._controller.limit(limits=1, user_api="blas")
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    self._limiter.restore_original_limits()
                    self._limiter = None


_one_blas_thread = _OneBlasThread()


def _cross_stats(X: np.ndarray, Y: np.ndarray, s_pair: np.ndarray, thr_pair: np.ndarray,
                 block_values: int, workers: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One pass over ``X Y^T`` by row panels: row and column maxima and counts >= thr_pair.

    Returns best_text_sim, texts_ge_pair (per image), best_image_sim, images_ge_pair (per
    text); the counts include the partner itself.
    """
    n = X.shape[0]
    rows = _panel_rows(n, block_values, workers)
    row_max = np.empty(n, np.float32)
    row_cnt = np.empty(n, np.int32)
    col_max = np.full((workers, n), -np.inf, np.float32)
    col_cnt = np.zeros((workers, n), np.int32)

    def panel(slot: int, i0: int) -> None:
        i1 = min(n, i0 + rows)
        S = X[i0:i1] @ Y.T
        # The pair's own entry is pinned to s_pair (BLAS and einsum may differ in the last
        # bit), so "at least as close as the partner" compares one value everywhere.
        S[np.arange(i1 - i0), np.arange(i0, i1)] = s_pair[i0:i1]
        _cross_panel_stats(S, thr_pair[i0:i1], thr_pair, row_max[i0:i1], row_cnt[i0:i1],
                           col_max[slot], col_cnt[slot])

    _run_panels(panel, list(range(0, n, rows)), workers)
    return (row_max, row_cnt.astype(np.int64), col_max.max(axis=0),
            col_cnt.sum(axis=0, dtype=np.int64))


def _within_counts(A: np.ndarray, thr_a: np.ndarray, thr_b: np.ndarray,
                   block_values: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """For each row i of unit-norm ``A``: #{j != i : a_i . a_j >= thr_a[i]} and the same for thr_b.

    Walks the upper triangle of ``A A^T`` by row panels (panel i0:i1 against rows i0:), so
    each product a_i . a_j is computed once and serves both i and j: about N^2 d / 2
    multiply-adds, and an item is never compared with itself.
    """
    n = A.shape[0]
    rows = _panel_rows(n, block_values, workers)
    cnt_a = np.zeros((workers, n), np.int32)
    cnt_b = np.zeros((workers, n), np.int32)

    def panel(slot: int, i0: int) -> None:
        S = A[i0:i0 + rows] @ A[i0:].T
        _upper_panel_counts(S, i0, thr_a, thr_b, cnt_a[slot], cnt_b[slot])

    _run_panels(panel, list(range(0, n, rows)), workers)  # the largest panels first
    return cnt_a.sum(axis=0, dtype=np.int64), cnt_b.sum(axis=0, dtype=np.int64)
