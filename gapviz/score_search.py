"""Searches of the mixed pool on a score correction's corrected scores.

:func:`gapviz.measures.measure_gap` ranks the partners and best items on corrected scores in
its float32 pass; the searches that need each query's whole top of the pool (hubness's k
nearest, the requested-modality rate, substitution) take them here, from float64 panels of
the corrected scores (:class:`gapviz.score_terms.ScoreTerms`): each panel of queries against
the 2N pool items, never the N x N matrix. Being float64 they are the formula itself, with
the measures' tie rules (two scores within the block's ``scale * TIE_TOL_FLOAT64`` are equal):

- neighbours: the k best-scored other items, equal scores ordered by lower index (as the
  raw pool pass orders equal cosines);
- requested-modality rate: of a query's top K, how many are of the other modality, an
  own-modality item tied with one of the other taking the place;
- substitution: whether every other-modality item tied for the best score has the query's
  class.

Cost: ``(2N)^2 d`` float64 multiply-adds (a few seconds at N = 5,000 on two cores).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .measures import TIE_TOL_FLOAT64
from .score_terms import ScoreTerms

#: Queries of one float64 panel (memory: rows x 2N x 8 bytes).
_ROWS = 256


def corrected_scores(Z: np.ndarray, n: int, scores: ScoreTerms, queries: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Corrected scores of pool queries ``queries`` (indices into the 2N pool) against every
    pool item, float64, the query itself at -inf; and each entry's tie tolerance.

    ``Z`` is the pool's float64 unit rows ``[X; Y]``.
    """
    cos = Z[queries] @ Z.T
    out = np.empty_like(cos)
    tol = np.empty_like(cos)
    mq_of = (queries >= n).astype(int)
    row = queries % n
    for mq in (0, 1):
        sel = np.flatnonzero(mq_of == mq)
        if not sel.size:
            continue
        for mc in (0, 1):
            cols = slice(mc * n, (mc + 1) * n)
            out[sel, cols] = scores.score(mq, mc, cos[sel, cols], row[sel])
            tol[sel, cols] = TIE_TOL_FLOAT64 * scores.scale[mq, mc][row[sel]][:, None]
    out[np.arange(len(queries)), queries] = -np.inf
    return out, tol


def pool_search(X: np.ndarray, Y: np.ndarray, scores: ScoreTerms, *, k_neighbours: int = 0,
                k_requested: int = 0, classes: np.ndarray | None = None) -> dict[str, Any]:
    """Every search of the mixed pool of N pairs on corrected scores (module docstring).

    Parameters
    ----------
    X, Y : ndarray of shape (N, d)
    scores : ScoreTerms
        Of these N pairs.
    k_neighbours : int
        Neighbours per item (0: none).
    k_requested : int
        K of the requested-modality rate (0: not measured).
    classes : ndarray of shape (N,), int, optional
        Each pair's class: substitution is measured when given.

    Returns
    -------
    dict
        ``neighbours`` (2N, k) int; ``requested_i2t``, ``requested_t2i`` (N,) float shares
        and ``k``; ``substitution_i2t``, ``substitution_t2i`` (N,) bool.
    """
    from .methods.scores import unit64

    Z = np.vstack([unit64(X), unit64(Y)])
    n = Z.shape[0] // 2
    if scores.n != n:
        raise ValueError(f"the score terms are for {scores.n} pairs, the embeddings have {n}.")
    k_neighbours = min(int(k_neighbours), 2 * n - 1)
    k_requested = min(int(k_requested), 2 * n - 1)
    neighbours = np.empty((2 * n, k_neighbours), np.int64)
    requested = np.zeros(2 * n)
    hits = np.zeros(2 * n, bool)
    cls = None if classes is None else np.r_[classes, classes]
    for q0 in range(0, 2 * n, _ROWS):
        queries = np.arange(q0, min(2 * n, q0 + _ROWS))
        S, tol = corrected_scores(Z, n, scores, queries)
        if k_neighbours:
            order = np.argsort(-S, axis=1, kind="stable")  # equal scores: lower index first
            neighbours[queries] = order[:, :k_neighbours]
        for r, q in enumerate(queries):
            own = slice(0, n) if q < n else slice(n, 2 * n)
            other = slice(n, 2 * n) if q < n else slice(0, n)
            if k_requested:
                requested[q] = _requested(S[r, own], S[r, other], tol[r, own],
                                          k_requested) / k_requested
            if cls is not None:
                best = S[r, other].max()
                tied = np.flatnonzero(S[r, other] >= best - tol[r, other]) + other.start
                hits[q] = bool(np.all(cls[tied] == cls[q]))
    out: dict[str, Any] = {"neighbours": neighbours, "k": k_requested}
    if k_requested:
        out["requested_i2t"], out["requested_t2i"] = requested[:n], requested[n:]
    if cls is not None:
        out["substitution_i2t"], out["substitution_t2i"] = hits[:n], hits[n:]
    return out


def _requested(same: np.ndarray, other: np.ndarray, tol_same: np.ndarray, k: int) -> int:
    """How many of the top k are other-modality items: the m-th best of them is within the
    top k when m plus the own-modality items at least as good (within their tolerance) is at
    most k (the query itself, at -inf, is never among them)."""
    best = np.sort(other)[::-1][:k]
    shifted = np.sort(same + tol_same)  # an own item is ahead of v when same >= v - tol
    ahead = shifted.size - np.searchsorted(shifted, best, side="left")
    m = np.arange(1, best.size + 1)
    return int(np.count_nonzero(m + ahead <= k))
