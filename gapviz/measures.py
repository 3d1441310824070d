"""Measures of the modality gap (Role et al. 2025, "Fill the Gap", section 2.2).

Notation: N pairs, ``X`` (N, d) image and ``Y`` (N, d) text embeddings, row i of each a pair.
Rows are L2-normalised here and similarity is cosine. The *mixed pool* is ``Z = [X; Y]``
(2N items); a query is never its own result; ranks are 1-based.

Ties and exact ranks
--------------------
Every rank (ITR, TIR, TMR, IMR, mixed-pool and cross-modal R@K) is the one a float64
computation on the same input gives: rows widened to float64, normalised, cosines compared in
float64. A tie never counts as a win for what a query is looking for: an item whose cosine
*equals* the target's is ranked ahead of it. So a degenerate embedding that maps everything to
one point gets the worst ranks, not the best, and the measures never overstate how far a gap is
closed. For example an image query whose best text is exactly as similar as its best other
image counts as "image first" (ITR) and its best text gets rank 2 (TMR). Equal means equal in
float64 up to :data:`TIE_TOL_FLOAT64` (1e-12, above the float64 rounding of a cosine):
duplicated points (identical vectors) tie; two cosines 1.5e-6 apart do not.

The similarity panels are float32 products (fast). Rows are normalised in float64 and rounded
once to float32, so each float32 cosine is within ``(d + 2) u`` of the exact one (u = 2^-24;
Higham's bound for a dot product of d terms in any summation order, the rows' absolute values
having a dot product <= 1). :func:`float32_cosine_bound` takes twice that, ``h = (d + 4) *
2^-23`` (6.2e-5 for d = 512). A comparison whose float32 cosine is more than ``h`` from its
float64 threshold (the partner's cosine, the best other-modality cosine) is decided by the
float32 value; the few within ``h`` are recomputed from the input rows in float64, one dot
product each. The best other-modality cosine of a query is itself exact: its argmax when no
other candidate is within ``2 h`` of the float32 maximum, else the float64 maximum over all
those that are.

Cost
----
Everything comes from one pass over similarity panels: the cross block ``X Y^T`` once (by
row panels), and each within-modality block ``X X^T``, ``Y Y^T`` once over its upper
triangle (it is symmetric; panel i0:i0+R against rows i0:), about ``2 N^2 d`` multiply-adds
in all. Reductions (maxima, counts above a per-query threshold) are fused into one sweep of
each panel by numba kernels while the panel is still in cache, so nothing of size N^2 is
ever held: memory is O(N d + block). One worker thread per CPU takes panels in turn, each
doing its own product (BLAS held to one thread) and sweep; the O(N d + d^3) measures
(Fréchet) run on a side thread meanwhile. The sweeps count each comparison against both ends
of its uncertainty band in SIMD and note the rare entries inside it; the float64 rechecks are
about three d-term dot products per query on the simulated demo (N = 5,000: some 31,000 in
all, 2% of the CPU time). Heavily tied data (many duplicates) costs more, never wrong ranks.

On a GPU
--------
``measure_gap(..., device=...)`` runs the same pass with torch (:mod:`gapviz.measures_torch`):
float32 panel products on the device with TF32 off, the same bands, and the close calls
settled on the CPU by the same float64 kernels, so the report equals this module's. By default
it is used when torch sees a CUDA GPU and N >= :data:`DEVICE_MIN_PAIRS`.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

import numba
import numpy as np
from scipy import linalg, stats

from .config import BLOCK_VALUES, RECALL_KS
from .embeddings import check_pair_arrays
from .score_terms import ScoreTerms
from .threads import one_blas_thread

# ---------------------------------------------------------------------------------------------
# numba kernels: one sweep of a similarity panel, every reduction at once
# ---------------------------------------------------------------------------------------------
#: Tolerance of the float32 similarities that gapviz.retrieval displays (a few float32 roundings
#: of a 512-d dot product). The measures do not use it: they settle close calls in float64.
TIE_TOL = 2e-6
#: Rows of one similarity panel. 512 rows x 5,000 columns (10 MB) stays in the last-level cache
#: between the product that writes it and the sweep that reads it; ``block_values`` caps it.
_PANEL_ROWS = 512
#: Pairs from which ``measure_gap(device="auto")`` moves the similarity pass to a CUDA GPU when
#: torch sees one; below it the CPU pass is as fast (the copy and launches dominate).
DEVICE_MIN_PAIRS = 20_000


# ---------------------------------------------------------------------------------------------
# exact float64 rechecks
# ---------------------------------------------------------------------------------------------
#: Two float64 cosines closer than this are a tie (duplicated points): the float64 rounding
#: of a cosine in d <= 4096 dimensions is below 5e-13.
TIE_TOL_FLOAT64 = 1e-12
_U32 = 2.0 ** -24  # unit roundoff of float32 (half its machine epsilon)


def float32_cosine_bound(d: int) -> float:
    """Bound on |float32 cosine - exact cosine| for the float32 unit rows measure_gap uses.

    Each row is normalised in float64 and rounded once to float32 (relative error <= u per
    coordinate, u = 2^-24), then a float32 dot product of d terms in any summation order
    (BLAS blocking, FMA) is within gamma_d = d u / (1 - d u) of the exact dot product of those
    rows (Higham, *Accuracy and Stability of Numerical Algorithms*, section 3.1; the absolute
    values of two unit rows have a dot product <= 1). Together at most about (d + 2) u; this
    returns twice that, (d + 4) eps32 with eps32 = 2^-23, as the safety margin.
    """
    return 2.0 * (d + 4) * _U32


@numba.njit(nogil=True, cache=True)
def _dot64(a, b):  # pragma: no cover
    """Float64 dot product in one fixed order (4 partial sums): bit-identical for identical
    rows and symmetric in a and b, so duplicated points give equal cosines."""
    d = a.shape[0]
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    k = 0
    while k + 4 <= d:
        s0 += np.float64(a[k]) * np.float64(b[k])
        s1 += np.float64(a[k + 1]) * np.float64(b[k + 1])
        s2 += np.float64(a[k + 2]) * np.float64(b[k + 2])
        s3 += np.float64(a[k + 3]) * np.float64(b[k + 3])
        k += 4
    while k < d:
        s0 += np.float64(a[k]) * np.float64(b[k])
        k += 1
    return (s0 + s1) + (s2 + s3)


@numba.njit(nogil=True, cache=True)
def _inv_norms64(A):  # pragma: no cover
    """1 / ||a_i|| in float64 (0 for a zero row)."""
    n = A.shape[0]
    out = np.empty(n, np.float64)
    for i in range(n):
        s = _dot64(A[i], A[i])
        out[i] = 1.0 / np.sqrt(s) if s > 0 else 0.0
    return out


@numba.njit(nogil=True, cache=True)
def _scale_rows32(A, inv, out):  # pragma: no cover
    """out[i] = float32(a_i * inv[i]), the product in float64: one rounding per coordinate."""
    n, d = A.shape
    for i in range(n):
        s = inv[i]
        for k in range(d):
            out[i, k] = np.float32(np.float64(A[i, k]) * s)


@numba.njit(nogil=True, cache=True)
def _pair_cos64(X, Y, ix, iy):  # pragma: no cover
    n = X.shape[0]
    out = np.empty(n, np.float64)
    for i in range(n):
        out[i] = _dot64(X[i], Y[i]) * (ix[i] * iy[i])
    return out


@numba.njit(nogil=True, cache=True)
def _count_at_least(Q, C, iq, ic, entries, thr, tol, counts, lam, off):  # pragma: no cover
    """For each (query, candidate) in ``entries``: counts[query] += s64 >= thr[query] - tol,
    with s64 the float64 shifted cosine ``cos64 + lam[query] * off[candidate]`` (the cosine
    itself when both are zero; :mod:`gapviz.score_terms`)."""
    for e in range(entries.shape[0]):
        q = entries[e, 0]
        c = entries[e, 1]
        s = _dot64(Q[q], C[c]) * (iq[q] * ic[c]) + lam[q] * off[c]
        if s >= thr[q] - tol:
            counts[q] += 1


@numba.njit(nogil=True, cache=True)
def _max_over(Q, C, iq, ic, entries, best, lam, off):  # pragma: no cover
    """best[query] = max(best[query], s64(query, candidate)) over ``entries`` (the float64
    shifted cosine of :func:`_count_at_least`)."""
    for e in range(entries.shape[0]):
        q = entries[e, 0]
        c = entries[e, 1]
        s = _dot64(Q[q], C[c]) * (iq[q] * ic[c]) + lam[q] * off[c]
        if s > best[q]:
            best[q] = s


#: Columns of one chunk of a panel row: a SIMD sweep counts the chunk's entries, and only a
#: chunk holding a close call is read again, one entry at a time, to note them. (The sweeps
#: index slices from 0 so that LLVM sees non-negative indices and vectorises them.)
_CHUNK = 256
#: No NaN or infinity ever reaches the sweeps (inputs and score terms are checked finite,
#: running maxima start at a finite value below every shifted cosine): lets LLVM vectorise the
#: maxima. (No "contract": a shifted cosine must round the same in every loop that reads it.)
_FASTMATH = {"nnan", "ninf", "nsz"}
#: A float32 below every cosine (running maxima of raw cosines start there).
_BELOW_COSINE = np.float32(-4.0)


@numba.njit(nogil=True, cache=True, fastmath=_FASTMATH)
def _cross_panel(S, i0, r_lo, r_hi, c_lo, c_hi, near, below, lam_r, off_c, lam_c, off_r,
                 row_sure, row_m1, row_near, row_arg, col_sure, col_m1, col_m2, col_arg,
                 buf_r, buf_c, found):  # pragma: no cover
    """One sweep of the cross panel ``S = X[i0:i0+R] @ Y.T`` (float32).

    Image row i (a query) reads each entry as ``S + lam_r[i] * off_c[j]``, text column j (a
    query) as ``S + lam_c[j] * off_r[i]``: the shifted cosines of a score correction
    (:mod:`gapviz.score_terms`; zero terms read the cosine itself). Per image row: how many
    texts are surely at least as close as its partner (``>= r_hi[i]``), the largest value, its
    index and how many values lie within ``near`` of it. Per text column, in the calling
    worker's own accumulators: the count against ``c_hi[j]``, the two largest values and the
    argmax. Entries in the band ``[lo, hi)`` of their query need float64: they are written as
    (query, candidate) to ``buf_r`` (image queries) / ``buf_c`` (text queries) while there is
    room (``found`` counts them all). A query's own partner(s) are counted like any other
    entry (they always fall in the band of their own threshold and are settled in float64);
    the caller takes them out. The block may be rectangular (images x captions). ``below`` is
    under every value.
    """
    n_rows, n_cols = S.shape
    # A row's maximum is kept per lane (lanes[t], over its chunks) and taken once at the row's
    # end: a running maximum in the sweep is a float reduction, which LLVM left scalar, and
    # the whole sweep with it (1.3-1.4x slower)
    lanes = np.empty(_CHUNK, np.float32)
    cap_r = buf_r.shape[0]
    cap_c = buf_c.shape[0]
    for r in range(n_rows):
        i = i0 + r
        lo = r_lo[i]
        hi = r_hi[i]
        lr = lam_r[i]
        orow = off_r[i]
        lanes[:] = below
        sure = 0
        for j0 in range(0, n_cols, _CHUNK):
            j1 = min(j0 + _CHUNK, n_cols)
            row = S[r, j0:j1]
            oc = off_c[j0:j1]
            lc = lam_c[j0:j1]
            clo = c_lo[j0:j1]
            chi = c_hi[j0:j1]
            csure = col_sure[j0:j1]
            cm1 = col_m1[j0:j1]
            cm2 = col_m2[j0:j1]
            carg = col_arg[j0:j1]
            band = 0
            for t in range(j1 - j0):
                v = row[t] + lr * oc[t]
                u = row[t] + lc[t] * orow
                up = np.int32(v >= hi)
                sure += up
                cu = np.int32(u >= chi[t])
                csure[t] += cu
                band += np.int32(v >= lo) - up + np.int32(u >= clo[t]) - cu
                lanes[t] = max(lanes[t], v)
                old = cm1[t]
                cm2[t] = max(cm2[t], min(old, u))
                carg[t] = i if u > old else carg[t]
                cm1[t] = max(old, u)
            if band:  # rare: note the close calls of this chunk
                for t in range(j1 - j0):
                    j = j0 + t
                    v = row[t] + lr * oc[t]
                    u = row[t] + lc[t] * orow
                    if lo <= v < hi:
                        if found[0] < cap_r:
                            buf_r[found[0], 0] = i
                            buf_r[found[0], 1] = j
                        found[0] += 1
                    if clo[t] <= u < chi[t]:
                        if found[1] < cap_c:
                            buf_c[found[1], 0] = j
                            buf_c[found[1], 1] = i
                        found[1] += 1
        m1 = below
        for t in range(_CHUNK):
            m1 = max(m1, lanes[t])
        # how many values lie within `near` of the maximum, and the maximum's first index:
        # found in the first chunk holding it
        top = m1 - near
        cnt = 0
        a = -1
        for j0 in range(0, n_cols, _CHUNK):
            j1 = min(j0 + _CHUNK, n_cols)
            seg = S[r, j0:j1]
            oc = off_c[j0:j1]
            c_top = 0
            c_max = 0
            for t in range(j1 - j0):
                v = seg[t] + lr * oc[t]
                c_top += np.int32(v >= top)
                c_max += np.int32(v >= m1)
            cnt += c_top
            if a < 0 and c_max > 0:
                for t in range(j1 - j0):
                    if seg[t] + lr * oc[t] >= m1:
                        a = j0 + t
                        break
        row_sure[i] = sure
        row_m1[i] = m1
        row_near[i] = max(cnt, 1)
        row_arg[i] = a


@numba.njit(nogil=True, cache=True, fastmath=_FASTMATH)
def _within_panel(S, i0, lo_a, hi_a, lo_b, hi_b, lam, off, sure_a, sure_b, buf_a, buf_b,
                  found):  # pragma: no cover
    """One sweep of the strict upper triangle of a symmetric panel ``A[i0:i0+R] @ A[i0:].T``.

    Entry (r, c), c > r, is the pair of items (p, q) = (i0 + r, i0 + c) and serves both: p reads
    it as ``S + lam[p] * off[q]`` and q as ``S + lam[q] * off[p]`` (the shifted cosines of a
    score correction; zero terms read the cosine), and each counts the other when surely at
    least as close as its threshold a (``>= hi_a``) and b. Entries in a band ``[lo, hi)`` need
    float64: they are written as (query, candidate) to ``buf_a`` / ``buf_b`` while there is
    room (``found`` counts them all). ``sure_a``, ``sure_b``: the calling worker's own
    accumulators.
    """
    n_rows, n_cols = S.shape
    cap_a = buf_a.shape[0]
    cap_b = buf_b.shape[0]
    for r in range(n_rows):
        gi = i0 + r
        la = lo_a[gi]
        ha = hi_a[gi]
        lb = lo_b[gi]
        hb = hi_b[gi]
        lq = lam[gi]
        oq = off[gi]
        sa = 0
        sb = 0
        for c0 in range(r + 1, n_cols, _CHUNK):
            c1 = min(c0 + _CHUNK, n_cols)
            row = S[r, c0:c1]
            oc = off[i0 + c0:i0 + c1]
            lc = lam[i0 + c0:i0 + c1]
            qla = lo_a[i0 + c0:i0 + c1]
            qha = hi_a[i0 + c0:i0 + c1]
            qlb = lo_b[i0 + c0:i0 + c1]
            qhb = hi_b[i0 + c0:i0 + c1]
            qsa = sure_a[i0 + c0:i0 + c1]
            qsb = sure_b[i0 + c0:i0 + c1]
            band = 0
            for t in range(c1 - c0):
                v = row[t] + lq * oc[t]
                w = row[t] + lc[t] * oq
                ua = np.int32(v >= ha)
                ub = np.int32(v >= hb)
                sa += ua
                sb += ub
                va = np.int32(w >= qha[t])
                vb = np.int32(w >= qhb[t])
                qsa[t] += va
                qsb[t] += vb
                band += (np.int32(v >= la) - ua + np.int32(v >= lb) - ub
                         + np.int32(w >= qla[t]) - va + np.int32(w >= qlb[t]) - vb)
            if band:  # rare: note the close calls of this chunk
                for t in range(c1 - c0):
                    gj = i0 + c0 + t
                    for side in range(2):
                        q = gi if side == 0 else gj
                        k = gj if side == 0 else gi
                        v = row[t] + lam[q] * off[k]
                        if lo_a[q] <= v < hi_a[q]:
                            if found[0] < cap_a:
                                buf_a[found[0], 0] = q
                                buf_a[found[0], 1] = k
                            found[0] += 1
                        if lo_b[q] <= v < hi_b[q]:
                            if found[1] < cap_b:
                                buf_b[found[1], 0] = q
                                buf_b[found[1], 1] = k
                            found[1] += 1
        sure_a[gi] += sa
        sure_b[gi] += sb


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------
@dataclass
class GapReport:
    """All measures of one embedding of N pairs.

    Ranks are exact: they equal a float64 computation on the same input (rows widened to
    float64 and normalised). An item whose cosine equals the target's, in float64 up to
    :data:`TIE_TOL_FLOAT64` (duplicated points), is ranked ahead of it: a tie is never a win.
    Near-ties are not ties: cosines 1.5e-6 apart are ordered as float64 orders them.

    Attributes
    ----------
    metrics : dict of str to float
        Scalar measures, keyed as in the CLI's JSON output (``ITR``, ``TIR``, ``IMR``, ``TMR``,
        ``R@5`` ... ; see :mod:`gapviz.measure_info`). Ratios may be ``inf``.
    paired_cosine : ndarray of shape (N,)
        cos(x_i, y_i), float64.
    best_text_rank : ndarray of shape (N,)
        Per image query, the mixed-pool rank of its best-ranked text (TMR averages it).
    best_image_rank : ndarray of shape (N,)
        Per text query, the mixed-pool rank of its best-ranked image (IMR averages it).
    i2t_rank, t2i_rank : ndarray of shape (N,)
        Mixed-pool rank of the paired item for each image / text query.
    i2t_rank_crossmodal, t2i_rank_crossmodal : ndarray of shape (N,)
        Rank of the paired item among the other modality only (classic retrieval).
    image_of : ndarray of shape (N,) or None
        With several captions per image: each pair's unique image (0 .. M - 1). The image
        queries' arrays (``best_text_rank``, ``i2t_rank``, ``i2t_rank_crossmodal``) then have
        M entries, one per image, and an image finds its pair when any caption is ranked.
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
    image_of: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.paired_cosine.shape[0])

    @property
    def n_images(self) -> int:
        return self.n if self.image_of is None else int(self.best_text_rank.shape[0])

    @property
    def convention(self) -> str:
        """How captions count ("1 caption per image", "all captions (5 per image), any
        counts"): :func:`caption_convention`."""
        return caption_convention(self.n, self.n_images)




# ---------------------------------------------------------------------------------------------
# public functions
# ---------------------------------------------------------------------------------------------
def unit_rows(A: np.ndarray) -> np.ndarray:
    """``A`` with each row scaled to unit L2 norm, as C-contiguous float32: gapviz's one row
    normaliser (measures, methods, the demo, the app).

    The norm and the scaling are computed in float64 and each coordinate is rounded once to
    float32. A zero row has no direction and stays zero (:func:`normalize_rows` refuses it).
    """
    A = _exact_source(np.asarray(A))
    if A.ndim != 2:
        raise ValueError(f"expected a 2-D array of rows, got shape {A.shape}.")
    out = np.empty(A.shape, np.float32)
    _scale_rows32(A, _inv_norms64(A), out)
    return out


def normalize_rows(A: np.ndarray) -> np.ndarray:
    """``A`` with each row scaled to unit L2 norm, as C-contiguous float32; zero rows rejected.

    Norms and the scaling are computed in float64 and each coordinate is rounded once to
    float32.
    """
    return _unit_rows(_exact_source(np.asarray(A)))[0]


def image_groups(X: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(image_of, first)`` of pairs whose images have several captions, or None when every
    id is used once (one caption per image: nothing to group).

    ``groups`` holds each row's image id; ``image_of[r]`` is row r's unique image (ids in
    sorted order) and ``first[g]`` the first row of image g. Rows of one id must hold the same
    image embedding (ValueError naming the first that does not).
    """
    groups = np.asarray(groups)
    X = np.asarray(X)
    if groups.shape != (X.shape[0],):
        raise ValueError(f"groups must give one image id per pair ({X.shape[0]}), got shape "
                         f"{groups.shape}.")
    grouping = image_groups_of(groups)
    if grouping is None:
        return None
    image_of, first = grouping
    differ = np.flatnonzero(np.any(X != X[first[image_of]], axis=1))
    if differ.size:
        r = int(differ[0])
        raise ValueError(f"pairs {int(first[image_of[r]])} and {r} have the same image id "
                         f"{groups[r]!r} but different image embeddings; an image id must name "
                         "one image (give each image its own id).")
    return image_of, first


def one_row_per_image(A: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """``A`` (a method's output for the pairs' images) with each image's first row copied to
    its other rows: a method maps a repeated input row to the same point, but a matrix
    product may round it differently at another position in the batch, and the measures need
    one embedding per image. ``A`` itself when there are no groups."""
    grouping = None if groups is None else image_groups_of(groups)
    if grouping is None:
        return A
    image_of, first = grouping
    return np.ascontiguousarray(np.asarray(A)[first[image_of]])


def image_groups_of(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(image_of, first)`` of image ids alone (no embedding check), or None when each id is
    used once."""
    _, first, image_of = np.unique(np.asarray(groups), return_index=True, return_inverse=True)
    if first.shape[0] == image_of.shape[0]:
        return None
    return image_of.astype(np.int64), first.astype(np.int64)


def rows_of_images(image_of: np.ndarray) -> list[np.ndarray]:
    """The pair rows of each image (``image_of`` from :func:`image_groups_of`), each in row
    order."""
    counts = np.bincount(image_of)
    return np.split(np.argsort(image_of, kind="stable"), np.cumsum(counts)[:-1])


def caption_convention(n_pairs: int, n_images: int) -> str:
    """The caption convention of a number, for every output: "1 caption per image" or "all
    captions (5 per image), any counts"."""
    if n_images >= n_pairs:
        return "1 caption per image"
    per = n_pairs / max(n_images, 1)
    shown = f"{per:.0f}" if abs(per - round(per)) < 1e-9 else f"{per:.1f} on average"
    return f"all captions ({shown} per image), any counts"


def measure_gap(X: np.ndarray, Y: np.ndarray, *, ks: tuple[int, ...] = RECALL_KS,
                separability: bool = False, block_values: int | None = None,
                device: str = "auto", scores: ScoreTerms | None = None,
                groups: np.ndarray | None = None) -> GapReport:
    """Every gap measure of N paired embeddings (the paper's section 2.2, made precise).

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
    block_values : int, optional
        Upper bound on the float32 values of one similarity block (memory knob). Default:
        ``BLOCK_VALUES`` on the CPU; on a GPU a larger panel within its free memory.
    device : {"auto", "cpu", "cuda", "cuda:<index>", "torch"}
        Where the similarity panels are computed. ``"auto"``: a CUDA GPU when torch sees one
        and N >= :data:`DEVICE_MIN_PAIRS`, else the CPU. ``"cpu"``: this module's numba pass.
        ``"cuda"``: torch on that GPU. ``"torch"``: torch on a GPU if it sees one, else on its
        CPU device. Every device gives the same report (:mod:`gapviz.measures_torch`).
    scores : ScoreTerms, optional
        A score correction's terms (:mod:`gapviz.score_terms`): every rank is then taken on
        the corrected scores, exactly, in the same pass (one multiply-add more per compared
        pair; always on the CPU). The distances (Fréchet, centroid gap, ...) read the
        embeddings and do not change.
    groups : array of shape (N,), optional
        Several captions per image: row i's image id (rows of one id hold the same image
        embedding). The mixed pool is then the M unique images and the N captions; an image
        query finds its pair when *any* of its captions is at the rank (its best-ranked
        caption's rank, its other captions not competing), a caption query when its image
        is; ITR / TMR and R@K average over the M images, TIR / IMR and R@K_t2i over the N
        captions; the per-modality distances (centroid gap, cones, Fréchet) take each image
        once. Always on the CPU. Without it: one caption per image, the pairs as given.

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
    grouping = None if groups is None else image_groups(X, groups)
    if grouping is not None and scores is not None:
        raise ValueError("score corrections are not measured with several captions per image "
                         "yet; measure one caption per image (groups=None).")
    on_device = (_torch_device(device, X.shape[0]) if scores is None and grouping is None
                 else None)
    Xr, Yr = _exact_source(X), _exact_source(Y)
    Xn, ix = _unit_rows(Xr)
    Yn, iy = _unit_rows(Yr)
    n, d = Xn.shape
    s_pair = _pair_cos64(Xr, Yr, ix, iy)  # float64 cosine of each pair
    h = float32_cosine_bound(d)
    if scores is not None and scores.n != n:
        raise ValueError(f"the score terms are for {scores.n} pairs, the embeddings have {n}.")

    workers = _workers()
    # BLAS is held to one thread on either device, so the float32 sums of the distances
    # (Fréchet's covariances) are the same on both.
    with one_blas_thread(workers), ThreadPoolExecutor(1, "gapviz-distances") as side:
        # The O(N d + d^3) measures (Fréchet's eigen-solve above all) run beside the
        # similarity pass instead of after it.
        distances = side.submit(distance_measures, Xn, Yn, s_pair, normalized=True,
                                images=None if grouping is None else Xn[grouping[1]])
        if on_device is not None:  # the same pass on a torch device, the same counts
            from .measures_torch import similarity_pass

            (_, i2t_cross, _, t2i_cross, imgs_ge_best_text, imgs_ge_pair, txts_ge_best_img,
             txts_ge_pair) = similarity_pass(Xn, Yn, Xr, Yr, ix, iy, s_pair, h, block_values,
                                             on_device)
        else:
            (i2t_cross, imgs_ge_pair, imgs_ge_best_text, t2i_cross, txts_ge_pair,
             txts_ge_best_img) = _mixed_pool_counts(
                Xn, Yn, Xr, Yr, ix, iy, s_pair, h, scores,
                BLOCK_VALUES if block_values is None else block_values, workers, grouping)
        distances = distances.result()

    best_text_rank = 1 + imgs_ge_best_text
    best_image_rank = 1 + txts_ge_best_img
    i2t_mixed = i2t_cross + imgs_ge_pair
    t2i_mixed = t2i_cross + txts_ge_pair

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
    if grouping is not None:
        metrics["images"] = float(grouping[1].shape[0])
    if separability:
        metrics["separability"] = linear_separability(Xn, Yn)
    return GapReport(metrics, s_pair, best_text_rank, best_image_rank, i2t_mixed, t2i_mixed,
                     i2t_cross, t2i_cross, tuple(ks),
                     image_of=None if grouping is None else grouping[0])


def _mixed_pool_counts(Xn, Yn, Xr, Yr, ix, iy, s_pair, h, scores, block_values, workers,
                       groups=None):
    """The per-query counts of the mixed pool, on the cosine or on corrected scores.

    ``groups``: ``(image_of, first)`` when images have several captions: row r's image is
    unique image ``image_of[r]``, whose embedding is row ``first[image_of[r]]``; the pool is
    then the M unique images and the N captions. An image query's relevant texts are all its
    captions (its rank is that of the best of them, the others not competing); a caption's
    relevant image is its own. Without groups every image has one caption (M = N).

    An image query's partner and best text are corrected scores of block (image, text); the
    images ahead of them are counted in block (image, image), each threshold mapped into that
    block's shifted scale (:class:`gapviz.score_terms.ScoreTerms`). Text queries alike.

    Returns
    -------
    tuple of ndarray
        ``i2t_cross``, ``imgs_ge_pair``, ``imgs_ge_best_text`` (per image, M), ``t2i_cross``,
        ``txts_ge_pair``, ``txts_ge_best_img`` (per caption, N): cross-modal ranks of the
        relevant item and the same-modality items at least as close as it, and as the best
        item of the other modality.
    """
    n = Xn.shape[0]
    if groups is None:
        image_of, first = np.arange(n), np.arange(n)
        Xu, Xur, ixu = Xn, Xr, ix
    else:
        image_of, first = groups
        Xu, Xur, ixu = (np.ascontiguousarray(A[first]) for A in (Xn, Xr, ix))
    m = first.shape[0]
    if scores is None:
        plain_r, plain_c = _Shift.none(m, n, h), _Shift.none(n, m, h)
        shift = {(0, 0): _Shift.none(m, m, h), (0, 1): plain_r, (1, 0): plain_c,
                 (1, 1): _Shift.none(n, n, h)}
        pair_value = {(0, 1): s_pair, (1, 0): s_pair}
    else:
        shift = {(mq, mc): _Shift.of(scores.lam[mq, mc], scores.offset[mq, mc], h)
                 for mq in (0, 1) for mc in (0, 1)}
        # the partner's shifted value in the cross block of each query modality
        pair_value = {key: s_pair + scores.lam[key] * scores.offset[key]
                      for key in ((0, 1), (1, 0))}
    # An image's threshold: its best relevant caption. A caption's: its image.
    thr_r = np.full(m, -np.inf)
    np.maximum.at(thr_r, image_of, pair_value[0, 1])
    best_text, texts_ge, best_image, images_ge = _cross_stats(
        Xu, Yn, Xur, Yr, ixu, iy, thr_r, pair_value[1, 0], shift[0, 1], shift[1, 0],
        block_values, workers)
    # the relevant captions at the threshold are not competitors: take them out, keep one
    relevant = np.bincount(image_of, weights=pair_value[0, 1] >= thr_r[image_of] - TIE_TOL_FLOAT64,
                           minlength=m).astype(np.int64)
    i2t_cross = texts_ge - relevant + 1
    t2i_cross = images_ge  # its own image counts once: rank = 1 + the images ahead
    if scores is None:
        within = {0: (best_text, thr_r), 1: (best_image, pair_value[1, 0])}
    else:  # the best and the partner as corrected scores, then in the within block's scale
        within = {k: tuple(scores.to_shifted(k, k, scores.from_shifted(k, 1 - k, value))
                           for value in (best, thr))
                  for k, best, thr in ((0, best_text, thr_r), (1, best_image, pair_value[1, 0]))}
    imgs_ge_best_text, imgs_ge_pair = _within_counts(Xu, Xur, ixu, *within[0], shift[0, 0],
                                                     block_values, workers)
    txts_ge_best_img, txts_ge_pair = _within_counts(Yn, Yr, iy, *within[1], shift[1, 1],
                                                    block_values, workers)
    return (i2t_cross, imgs_ge_pair, imgs_ge_best_text, t2i_cross, txts_ge_pair,
            txts_ge_best_img)


def distance_measures(X: np.ndarray, Y: np.ndarray, s_pair: np.ndarray | None = None, *,
                      normalized: bool = False, images: np.ndarray | None = None
                      ) -> dict[str, float]:
    """Paired distances, pairs-vs-all, centroid gap, cone means and Fréchet distance.

    All O(N d + d^3): the mean over all image-text cosines is
    ``(sum_i x_i) . (sum_j y_j) / (M N)``, no M x N matrix needed. ``images``: the M unique
    image rows when an image has several captions (rows of X repeat it): the per-modality
    measures then take each image once, the paired ones each pair.
    """
    if not normalized:
        X, Y = normalize_rows(X), normalize_rows(Y)
    n = Y.shape[0]
    if s_pair is None:
        s_pair = np.einsum("ij,ij->i", X, Y)
    diff = np.linalg.norm(X - Y, axis=1).astype(np.float64)
    U = X if images is None else (images if normalized else normalize_rows(images))
    m = U.shape[0]
    sx = U.sum(0, dtype=np.float64)
    sy = Y.sum(0, dtype=np.float64)
    return {
        "paired_cosine_distance": float(np.mean(1.0 - s_pair.astype(np.float64))),
        "paired_l2": float(diff.mean()),
        "paired_l2_squared": float(np.mean(diff ** 2)),
        "all_cosine_distance": float(1.0 - sx @ sy / (m * n)),
        "centroid_gap": float(np.linalg.norm(sx / m - sy / n)),
        # mean over i != j of x_i . x_j for unit rows: (|sum x|^2 - N) / (N (N - 1))
        "image_cone": float((sx @ sx - m) / (m * (m - 1))) if m > 1 else math.nan,
        "text_cone": float((sy @ sy - n) / (n * (n - 1))),
        "frechet": frechet_distance(U, Y),  # on the L2-normalised rows
    }


def frechet_distance(X: np.ndarray, Y: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the rows of ``X`` and of ``Y``.

    ``||mu_x - mu_y||^2 + Tr(C_x + C_y - 2 (C_x C_y)^(1/2))`` with covariances of denominator
    N - 1 (as ``np.cov`` and the reference FID code, Heusel et al. 2017; pytorch-fid's
    ``calculate_frechet_distance``). The rows are read as given, never normalised here: the
    ``frechet`` measure is this on the L2-normalised rows (:func:`distance_measures`), and
    ``frechet_raw`` (:func:`gapviz.anatomy.raw_frechet_distance`) on the file's raw rows. ``C_x C_y`` has the
    spectrum of the symmetric PSD matrix ``L^T C_y L`` for any factor ``C_x = L L^T``, so the
    trace of the square root is the sum of square roots of that matrix's eigenvalues: no
    non-symmetric ``sqrtm``. ``L`` is the Cholesky factor (one cheap factorisation); a
    singular ``C_x`` (fewer rows than dimensions, a flat direction) takes its eigen-factor.
    """
    X, Y = np.asarray(X), np.asarray(Y)
    if X.shape[0] == Y.shape[0] and X.shape[0] < X.shape[1]:
        return _frechet_few_rows(X, Y)
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


def _frechet_few_rows(X: np.ndarray, Y: np.ndarray) -> float:
    """:func:`frechet_distance` for n rows of each when n < d, in n x n instead of d x d.

    With centred rows A, B (n x d), C_x = A^T A / (n - 1) and C_y = B^T B / (n - 1): the
    non-zero eigenvalues of C_x C_y are those of (B A^T)(B A^T)^T / (n - 1)^2, so
    Tr (C_x C_y)^(1/2) is the sum of the singular values of B A^T over n - 1, and the traces
    of C_x, C_y are the squared norms of A, B over n - 1."""
    A = np.asarray(X, dtype=np.float64)
    B = np.asarray(Y, dtype=np.float64)
    mu_x, mu_y = A.mean(0), B.mean(0)
    A, B = A - mu_x, B - mu_y
    m = A.shape[0] - 1
    tr_sqrt = linalg.svdvals(B @ A.T).sum() / m
    value = float(np.sum((mu_x - mu_y) ** 2) + (np.sum(A * A) + np.sum(B * B)) / m - 2.0 * tr_sqrt)
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


def _torch_device(device: str, n: int):
    """The torch device of the similarity pass, or None for this module's CPU pass.

    Torch is imported only here, and under ``"auto"`` only from :data:`DEVICE_MIN_PAIRS`
    pairs on: ``import gapviz.measures`` never imports it.
    """
    name = str(device).lower()
    if name == "cpu":
        return None
    if name == "auto":
        if n < DEVICE_MIN_PAIRS:
            return None
        if ("torch" not in sys.modules and sys.platform.startswith("linux")
                and not any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg"))):
            return None  # no GPU driver on this Linux: spare the CPU pass torch's import (~2 s)
        try:
            import torch
        except ImportError:
            return None
        return torch.device("cuda") if torch.cuda.is_available() else None
    if name != "torch" and not (name == "cuda" or name.startswith("cuda:")):
        raise ValueError(f"device={device!r} is not one of 'auto', 'cpu', 'cuda', 'cuda:<index>', "
                         "'torch'.")
    try:
        import torch
    except ImportError:
        raise ValueError(f"device={device!r} needs PyTorch, which is not installed; use "
                         "device='cpu' or install torch.") from None
    if name == "torch":
        from .measures_torch import default_device

        return default_device()
    if not torch.cuda.is_available():
        raise ValueError(f"device={device!r}: torch sees no CUDA GPU here; use device='auto' "
                         "(the CPU when there is none) or device='cpu'.")
    return torch.device(name)


def _panel_rows(n_cols: int, block_values: int, workers: int) -> int:
    """Rows of a similarity panel with ``n_cols`` columns; all workers' panels together hold
    at most ``block_values`` values."""
    return max(1, min(_PANEL_ROWS, block_values // (n_cols * workers)))


class MeasuresStopped(Exception):
    """The measures were stopped between two panels (:func:`stop_between_panels`)."""


_STOP = threading.local()


@contextlib.contextmanager
def stop_between_panels(check: Callable[[], bool] | None) -> Iterator[None]:
    """Within the block, the similarity passes that the calling thread starts ask ``check()``
    before each panel and raise :class:`MeasuresStopped` when it says so (``check`` None:
    no check, as outside any block). This is how work
    done ahead of time gives way (``gapviz.runs``): a pass is 2N^2 d multiply-adds, and a
    panel is at most 512 rows of it. Nothing is kept of a stopped pass."""
    before = getattr(_STOP, "check", None)
    _STOP.check = check
    try:
        yield
    finally:
        _STOP.check = before


def _run_panels(work, starts: list[int], workers: int) -> None:
    """Call ``work(slot, i0)`` for every panel start, on ``workers`` threads.

    Each thread takes the next panel when it is free (the machine may be shared) and owns
    accumulator ``slot``. Run it under :func:`gapviz.threads.one_blas_thread`. One panel (a
    small set) runs on the calling thread: starting threads would cost more than it. Under
    :func:`stop_between_panels` (in the calling thread) each panel is preceded by the check.
    """
    check = getattr(_STOP, "check", None)

    def run(slot: int, i0: int) -> None:
        if check is not None and check():
            raise MeasuresStopped()
        work(slot, i0)

    if workers == 1 or len(starts) == 1:
        for i0 in starts:
            run(0, i0)
        return
    pending = iter(starts)
    lock = threading.Lock()

    def worker(slot: int) -> None:
        while True:
            with lock:
                i0 = next(pending, None)
            if i0 is None:
                return
            run(slot, i0)

    with ThreadPoolExecutor(workers, thread_name_prefix="gapviz-panel") as pool:
        for future in [pool.submit(worker, slot) for slot in range(workers)]:
            future.result()


def _exact_source(A: np.ndarray) -> np.ndarray:
    """The input rows as the float64 rechecks read them: float32/float64 kept as given (no
    copy when contiguous), anything else widened to float64."""
    if A.dtype in (np.float32, np.float64):
        return np.ascontiguousarray(A)
    return np.ascontiguousarray(A, dtype=np.float64)


def _unit_rows(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float32 unit rows, float64 inverse norms) of ``A`` (already an exact source)."""
    inv = _inv_norms64(A)
    if not np.all(inv > 0):
        bad = np.flatnonzero(~(inv > 0))[:5].tolist()
        raise ValueError(f"rows {bad} are zero vectors and have no direction; drop them first "
                         "(gapviz.embeddings.clean_pairs finds and reports them).")
    out = np.empty(A.shape, np.float32)
    _scale_rows32(A, inv, out)
    return out, inv


def _band32(thr: np.ndarray, h: float) -> tuple[np.ndarray, np.ndarray]:
    """float32 ``lo <= thr - h`` and ``hi >= thr + h`` (rounded outwards)."""
    lo = np.nextafter((thr - h).astype(np.float32), np.float32(-np.inf))
    hi = np.nextafter((thr + h).astype(np.float32), np.float32(np.inf))
    return lo, hi


def _stack(parts: list[np.ndarray]) -> np.ndarray:
    parts = [p for p in parts if p.shape[0]]
    return np.concatenate(parts) if parts else np.empty((0, 2), np.int32)


class _Shift(NamedTuple):
    """The shifted cosine ``cos + lam[query] * off[candidate]`` of one block (zeros: the
    cosine), in float64 for the rechecks and rounded once to float32 for the sweeps, with the
    float32 band ``h`` of its comparisons."""

    lam: np.ndarray
    off: np.ndarray
    lam32: np.ndarray
    off32: np.ndarray
    h: float

    @classmethod
    def of(cls, lam: np.ndarray, off: np.ndarray, h: float) -> "_Shift":
        """The shift of queries' ``lam`` and candidates' ``off``, with the band of the float32
        cosines, ``h``, widened by the rounding of the shift: each of ``lam * off`` (stored
        rounded, multiplied) and the sum rounds once in float32, at most ``u * (1 + 3 |lam
        off|)`` with u = 2^-24 beyond the cosine's own error; this takes eight times that."""
        lam = np.ascontiguousarray(lam, dtype=np.float64)
        off = np.ascontiguousarray(off, dtype=np.float64)
        spread = float(np.abs(lam).max(initial=0.0) * np.abs(off).max(initial=0.0))
        if spread:
            h = h + 8.0 * _U32 * (2.0 + 4.0 * spread)
        return cls(lam, off, lam.astype(np.float32), off.astype(np.float32), h)

    @classmethod
    def none(cls, n_queries: int, n_candidates: int, h: float) -> "_Shift":
        return cls.of(np.zeros(n_queries), np.zeros(n_candidates), h)

    @property
    def below(self) -> float:
        """A float32 value under every shifted cosine."""
        return -4.0 - float(np.abs(self.lam).max(initial=0.0) * np.abs(self.off).max(initial=0.0))


def _cross_stats(Xn: np.ndarray, Yn: np.ndarray, Xr: np.ndarray, Yr: np.ndarray, ix: np.ndarray,
                 iy: np.ndarray, thr_r: np.ndarray, thr_c: np.ndarray, shift_r: _Shift,
                 shift_c: _Shift, block_values: int,
                 workers: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One pass over ``X Y^T`` (M images x N texts) by row panels, close calls settled in
    float64.

    Image query i reads text j as the shifted cosine ``cos + shift_r.lam[i] shift_r.off[j]``
    and text query j reads image i as ``cos + shift_c.lam[j] shift_c.off[i]`` (both the
    cosine for the raw measures). Returns best_text_sim, texts_ge (per image query, M),
    best_image_sim, images_ge (per text query, N): the exact float64 best shifted value of the
    other modality, and how many of the other modality are at least ``thr_r[i]`` /
    ``thr_c[j]``, the query's own partner(s) included.
    """
    m, n = Xn.shape[0], Yn.shape[0]
    rows = _panel_rows(n, block_values, workers)
    lo_r, hi_r = _band32(thr_r, shift_r.h)
    lo_c, hi_c = _band32(thr_c, shift_c.h)
    # two float32 values each within h of their exact values
    near = np.float32(2 * max(shift_r.h, shift_c.h))
    below = np.float32(min(shift_r.below, shift_c.below))
    row_sure = np.zeros(m, np.int32)
    row_m1 = np.empty(m, np.float32)
    row_near = np.empty(m, np.int32)
    row_arg = np.zeros(m, np.int64)
    col_sure = np.zeros((workers, n), np.int32)
    col_m1 = np.full((workers, n), below, np.float32)
    col_m2 = np.full((workers, n), below, np.float32)
    col_arg = np.zeros((workers, n), np.int64)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    terms = (shift_r.lam32, shift_r.off32, shift_c.lam32, shift_c.off32)

    def panel(slot: int, i0: int) -> None:
        i1 = min(m, i0 + rows)
        S = Xn[i0:i1] @ Yn.T
        cap = 8 * (i1 - i0) + 2 * n // max(1, m // max(1, i1 - i0)) + 256
        acc = (col_sure[slot], col_m1[slot], col_m2[slot], col_arg[slot])
        while True:
            buf_r = np.empty((cap, 2), np.int32)
            buf_c = np.empty((cap, 2), np.int32)
            count = np.zeros(2, np.int64)
            _cross_panel(S, i0, lo_r, hi_r, lo_c, hi_c, near, below, *terms, row_sure, row_m1,
                         row_near, row_arg, *acc, buf_r, buf_c, count)
            if count.max() <= cap:
                break
            # heavily tied data: more close calls than the buffers held; run again into
            # bigger ones, the column accumulators into scratch (they are in already)
            cap = int(count.max())
            acc = (np.zeros(n, np.int32), np.full(n, below, np.float32),
                   np.full(n, below, np.float32), np.zeros(n, np.int64))
        # rows whose best text is not unique within `near`: all near-maximum texts
        tied = [np.c_[np.full(j.size, i0 + r, np.int32), j.astype(np.int32)]
                for r in np.flatnonzero(row_near[i0:i1] > 1)
                for j in [np.flatnonzero(S[r] + shift_r.lam32[i0 + r] * shift_r.off32
                                         >= row_m1[i0 + r] - near)]]
        found.append((buf_r[:count[0]], buf_c[:count[1]], _stack(tied)))

    _run_panels(panel, list(range(0, m, rows)), workers)

    # Counts: the sure ones plus the band entries that float64 puts at least as close.
    texts_ge = row_sure.astype(np.int64)
    images_ge = col_sure.sum(axis=0, dtype=np.int64)
    _count_at_least(Xr, Yr, ix, iy, _stack([f[0] for f in found]), thr_r, TIE_TOL_FLOAT64,
                    texts_ge, shift_r.lam, shift_r.off)
    _count_at_least(Yr, Xr, iy, ix, _stack([f[1] for f in found]), thr_c, TIE_TOL_FLOAT64,
                    images_ge, shift_c.lam, shift_c.off)

    # Best text per image: the argmax when no other text is within `near` of it, else every
    # near-maximum text, in float64.
    idx_r = np.arange(m, dtype=np.int32)
    unique = row_near == 1
    entries = np.concatenate([np.c_[idx_r[unique], row_arg[unique].astype(np.int32)],
                              _stack([f[2] for f in found])])
    best_text = np.full(m, -np.inf)
    _max_over(Xr, Yr, ix, iy, np.ascontiguousarray(entries, dtype=np.int32), best_text,
              shift_r.lam, shift_r.off)

    # Best image per text: the workers' top-2 merged; a maximum that is not unique within
    # `near` (duplicated images above all) takes those texts' columns again, as rows.
    idx = np.arange(n, dtype=np.int32)
    w_star = col_m1.argmax(axis=0)
    m1 = col_m1[w_star, idx]
    others = col_m1.copy()
    others[w_star, idx] = below
    m2 = np.maximum(col_m2.max(axis=0), others.max(axis=0))
    unique = m2 < m1 - near
    parts = [np.c_[idx[unique], col_arg[w_star, idx][unique].astype(np.int32)]]
    again = idx[~unique]
    step = max(1, block_values // m)
    for j0 in range(0, again.size, step):
        cols = again[j0:j0 + step]
        S = Yn[cols] @ Xn.T + shift_c.lam32[cols, None] * shift_c.off32[None, :]
        r, c = np.nonzero(S >= (S.max(axis=1) - near)[:, None])
        parts.append(np.c_[cols[r], c.astype(np.int32)])
    best_image = np.full(n, -np.inf)
    _max_over(Yr, Xr, iy, ix, np.ascontiguousarray(np.concatenate(parts), dtype=np.int32),
              best_image, shift_c.lam, shift_c.off)
    return best_text, texts_ge, best_image, images_ge


def _within_counts(An: np.ndarray, Ar: np.ndarray, ia: np.ndarray, thr_a: np.ndarray,
                   thr_b: np.ndarray, shift: _Shift, block_values: int,
                   workers: int) -> tuple[np.ndarray, np.ndarray]:
    """For each row i: #{j != i : s64(i, j) >= thr_a[i]} and the same for thr_b, with s64 the
    float64 shifted cosine ``cos(a_i, a_j) + shift.lam[i] shift.off[j]`` (the cosine for the
    raw measures).

    Walks the upper triangle of ``An An^T`` (float32 unit rows) by row panels (panel i0:i1
    against rows i0:), so each product is computed once and serves both i and j: about
    N^2 d / 2 multiply-adds, and an item is never compared with itself. Entries within
    ``shift.h`` of a threshold are recomputed from ``Ar`` (the input rows, inverse norms
    ``ia``) in float64.
    """
    n = An.shape[0]
    rows = _panel_rows(n, block_values, workers)
    lo_a, hi_a = _band32(thr_a, shift.h)
    lo_b, hi_b = _band32(thr_b, shift.h)
    sure_a = np.zeros((workers, n), np.int32)
    sure_b = np.zeros((workers, n), np.int32)
    found: list[tuple[np.ndarray, np.ndarray]] = []

    def panel(slot: int, i0: int) -> None:
        S = An[i0:i0 + rows] @ An[i0:].T
        cap = 8 * S.shape[0] + 256
        acc = (sure_a[slot], sure_b[slot])
        while True:
            buf_a = np.empty((cap, 2), np.int32)
            buf_b = np.empty((cap, 2), np.int32)
            count = np.zeros(2, np.int64)
            _within_panel(S, i0, lo_a, hi_a, lo_b, hi_b, shift.lam32, shift.off32, *acc,
                          buf_a, buf_b, count)
            if count.max() <= cap:
                break
            # heavily tied data: more close calls than the buffers held; run again into
            # bigger ones, counting into scratch (the sure counts are in already)
            cap = int(count.max())
            acc = (np.zeros(n, np.int32), np.zeros(n, np.int32))
        found.append((buf_a[:count[0]], buf_b[:count[1]]))

    _run_panels(panel, list(range(0, n, rows)), workers)  # the largest panels first
    cnt_a = sure_a.sum(axis=0, dtype=np.int64)
    cnt_b = sure_b.sum(axis=0, dtype=np.int64)
    _count_at_least(Ar, Ar, ia, ia, _stack([f[0] for f in found]), thr_a, TIE_TOL_FLOAT64, cnt_a,
                    shift.lam, shift.off)
    _count_at_least(Ar, Ar, ia, ia, _stack([f[1] for f in found]), thr_b, TIE_TOL_FLOAT64, cnt_b,
                    shift.lam, shift.off)
    return cnt_a, cnt_b
