"""Retrieval for one query in the mixed image+text pool (the paper's qualitative evidence).

The pool is ``Z = [X; Y]`` (2N items, rows L2-normalised, cosine similarity). A query from the
pool is never its own result. Ties rank ahead of the partner, as in :mod:`gapviz.measures`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .measures import TIE_TOL_FLOAT64, GapReport, image_groups_of
from .score_terms import ScoreTerms

IMAGE, TEXT = "image", "text"


@dataclass(frozen=True)
class Hit:
    """One result: pool item ``index`` (pair index) of ``modality`` at ``rank`` with ``similarity``."""

    rank: int
    modality: str
    index: int
    similarity: float
    is_partner: bool


@dataclass(frozen=True)
class QueryResult:
    """Top-K results of one query and where its true partner landed.

    Attributes
    ----------
    hits : list of Hit
        The top K of the mixed pool, best first.
    partner_rank : int or None
        Rank of the query's paired item in the whole pool (also beyond K); None for a free query.
    partner_similarity : float or None
    same_modality_in_top_k : int
        How many of the top K share the query's modality.
    """

    query_modality: str
    query_index: int | None
    hits: list[Hit]
    partner_rank: int | None
    partner_similarity: float | None
    same_modality_in_top_k: int


def retrieve(X: np.ndarray, Y: np.ndarray, modality: str, index: int, k: int = 10, *,
             scores: ScoreTerms | None = None, groups: np.ndarray | None = None) -> QueryResult:
    """Top-``k`` of the mixed pool for pool item ``index`` of ``modality`` ("image" or "text").

    Parameters
    ----------
    X, Y : ndarray of shape (N, d)
        Image and text embeddings (any method's output space).
    modality : {"image", "text"}
    index : int
        Pair index of the query, 0 <= index < N.
    k : int
        Number of results (capped at 2N - 1).
    scores : ScoreTerms, optional
        A score correction's terms of the N pairs: the pool is ranked on the corrected scores
        (a hit's ``similarity`` is its corrected score), ties within the block's tolerance.
    groups : ndarray of shape (N,), optional
        Image ids when images have several captions: the pool holds each image once (a hit's
        ``index`` is its first pair) and every caption; an image query's partner is the best
        of its captions (all of them marked as partners), a caption's is its image.
    """
    if modality not in (IMAGE, TEXT):
        raise ValueError(f"modality must be 'image' or 'text', got {modality!r}.")
    n = X.shape[0]
    if not 0 <= index < n:
        raise ValueError(f"query index {index} is out of range for {n} pairs.")
    grouping = None if groups is None else image_groups_of(groups)
    if grouping is not None:
        if scores is not None:
            raise ValueError("score corrections rank one caption per image for now.")
        return _grouped(X, Y, grouping, modality, index, k)
    if scores is not None:
        from .methods.scores import unit64
        from .score_search import corrected_scores

        own = index if modality == IMAGE else n + index
        sims, tol = corrected_scores(np.vstack([unit64(X), unit64(Y)]), n, scores,
                                     np.array([own]))
        return _ranked(sims[0], tol[0], n, k, modality, index)
    q = np.asarray((X if modality == IMAGE else Y)[index], dtype=np.float64)
    return _rank_pool(q, X, Y, k, modality, index)


def retrieve_vector(query: np.ndarray, X: np.ndarray, Y: np.ndarray, modality: str,
                    k: int = 10) -> QueryResult:
    """Top-``k`` for a query vector that is not in the pool (e.g. free text typed by a user,
    placed in the method's space through its out-of-sample path)."""
    q = np.asarray(query, dtype=np.float64).reshape(-1)
    if q.shape[0] != np.shape(X)[1]:
        raise ValueError(f"query has dimension {q.shape[0]}, the pool {np.shape(X)[1]}.")
    return _rank_pool(q, X, Y, k, modality, None)


#: Rows per chunk of the float64 cosines (bounds the float64 copy of the pool).
COSINE_CHUNK = 16_384


def _cosines(A: np.ndarray, q: np.ndarray) -> np.ndarray:
    """cos(a_i, q) for every row of ``A``, in float64 (as :mod:`gapviz.measures` ranks: the same
    input gives the same order, near-ties included); zero rows give 0."""
    qn = q / (np.linalg.norm(q) or 1.0)
    out = np.empty(A.shape[0])
    for start in range(0, A.shape[0], COSINE_CHUNK):
        block = np.asarray(A[start:start + COSINE_CHUNK], dtype=np.float64)
        norms = np.linalg.norm(block, axis=1)
        out[start:start + block.shape[0]] = (block @ qn) / np.where(norms > 0, norms, 1.0)
    return out


def _rank_pool(q: np.ndarray, X: np.ndarray, Y: np.ndarray, k: int, modality: str,
               index: int | None) -> QueryResult:
    n = X.shape[0]
    sims = np.concatenate([_cosines(X, q), _cosines(Y, q)])
    return _ranked(sims, np.full(2 * n, TIE_TOL_FLOAT64), n, k, modality, index)


def _ranked(sims: np.ndarray, tol: np.ndarray, n: int, k: int, modality: str,
            index: int | None) -> QueryResult:
    """The result of one query from its scores against the 2N pool items (and each item's
    tie tolerance)."""
    own = None if index is None else (index if modality == IMAGE else n + index)
    partners = [] if index is None else [n + index if modality == IMAGE else index]
    return _result(sims, tol, np.arange(n), k, modality, index, own, np.array(partners, int))


def _grouped(X: np.ndarray, Y: np.ndarray, grouping: tuple[np.ndarray, np.ndarray],
             modality: str, index: int, k: int) -> QueryResult:
    """:func:`retrieve` in a pool of the unique images and every caption."""
    image_of, first = grouping
    m = first.shape[0]
    q = np.asarray((X if modality == IMAGE else Y)[index], dtype=np.float64)
    sims = np.concatenate([_cosines(np.asarray(X)[first], q), _cosines(Y, q)])
    if modality == IMAGE:
        own = int(image_of[index])
        partners = m + np.flatnonzero(image_of == own)
    else:
        own = m + index
        partners = np.array([int(image_of[index])])
    return _result(sims, np.full(sims.shape[0], TIE_TOL_FLOAT64), first, k, modality, index,
                   own, partners)


def _result(sims: np.ndarray, tol: np.ndarray, image_rows: np.ndarray, k: int, modality: str,
            index: int | None, own: int | None, partners: np.ndarray) -> QueryResult:
    """The result of one query from its scores against the pool: the images first (shown as
    pair rows ``image_rows``), then the captions; ``own`` the query's own item, ``partners``
    its relevant items (the rank is the best one's: a tie ranks ahead of it)."""
    m = image_rows.shape[0]
    if own is not None:
        sims[own] = -np.inf  # a query is never its own result
    k = max(1, min(k, sims.shape[0] - (own is not None)))
    is_partner = np.zeros(sims.shape[0], bool)
    is_partner[partners] = True
    # Stable sort on (-similarity, partners last among ties): ties rank ahead of a partner.
    order = np.lexsort((is_partner, -sims))[:k]
    hits = [Hit(r + 1, IMAGE if j < m else TEXT, int(image_rows[j]) if j < m else int(j - m),
                float(sims[j]), bool(is_partner[j])) for r, j in enumerate(order)]
    partner_rank = partner_sim = None
    if partners.size:
        partner_sim = float(sims[partners].max())
        others = ~is_partner
        partner_rank = 1 + int(np.count_nonzero(sims[others] >= partner_sim - tol[others]))
    same = sum(h.modality == modality for h in hits)
    return QueryResult(modality, index, hits, partner_rank, partner_sim, same)


def pick_example_query(raw: GapReport, closed: GapReport) -> int:
    """An image query that shows what closing the gap does (for the Overview's proof), as a
    pair row.

    The image whose paired text ranks best in the closed space, among those where the raw
    space ranks the nearest text worst; ties broken by the lowest row. Deterministic. With
    several captions per image, the first pair of that image.
    """
    score = closed.i2t_rank.astype(np.float64) * (raw.n + 1) - raw.best_text_rank
    image = int(np.argmin(score))
    if raw.image_of is None:
        return image
    return int(np.flatnonzero(raw.image_of == image)[0])
