"""Brute-force float64 reference of the mixed-pool measures: the whole 2N x 2N pool, no blocks.

Written for clarity, not speed, straight from the measures' definitions, as a user's own numpy
script would do it: the input rows widened to float64, normalised, all cosines from one float64
product. Tie rule as in gapviz.measures: an item whose cosine equals the target's (within
TIE_TOL_FLOAT64, float64 rounding: duplicated points) is ranked ahead of it.
"""

import numpy as np

from gapviz.measures import TIE_TOL_FLOAT64 as TOL


def brute_force_ranks(X, Y, terms=None):
    """Ranks of every query in the mixed pool; with ``terms`` (a ScoreTerms) on the corrected
    scores ``a (cos + lam w) + b`` of each (query, candidate) block, a tie being a score
    within ``a * TOL`` of the target's (TOL in the block's cosine scale)."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    Y = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    n = X.shape[0]
    Z = np.vstack([X, Y])
    S = Z @ Z.T
    tol = np.full((2 * n, 2 * n), TOL)
    if terms is not None:  # corrected scores, block by block
        for mq in (0, 1):
            for mc in (0, 1):
                q, c = slice(mq * n, (mq + 1) * n), slice(mc * n, (mc + 1) * n)
                S[q, c] = terms.score(mq, mc, S[q, c])
                tol[q, c] = TOL * terms.scale[mq, mc][:, None]
    return ranks_from_scores(S, tol)


def ranks_from_scores(S, tol):
    """Every rank of the mixed pool from its full 2N x 2N score matrix (images first; the
    diagonal is never read) and each entry's tie tolerance."""
    n = S.shape[0] // 2
    is_text = np.r_[np.zeros(n, bool), np.ones(n, bool)]
    out = {k: np.zeros(n, int) for k in ("best_text", "best_image", "i2t", "t2i", "i2t_x", "t2i_x")}
    for q in range(2 * n):
        others = np.delete(np.arange(2 * n), q)
        sims = S[q, others]
        tols = tol[q, others]
        other_mod = is_text[others] != is_text[q]
        best_other = sims[other_mod].max()
        # rank of the best other-modality item: 1 + same-modality items at least as close
        same = ~other_mod
        best_rank = 1 + np.count_nonzero(sims[same] >= best_other - tols[same])
        partner = q + n if q < n else q - n
        s_p = S[q, partner]
        pool_rank = np.count_nonzero(sims >= s_p - tols)  # the partner itself counts as 1
        cross_rank = np.count_nonzero(sims[other_mod] >= s_p - tols[other_mod])
        i = q % n
        if q < n:
            out["best_text"][i], out["i2t"][i], out["i2t_x"][i] = best_rank, pool_rank, cross_rank
        else:
            out["best_image"][i], out["t2i"][i], out["t2i_x"][i] = best_rank, pool_rank, cross_rank
    return out


def metrics_from_ranks(ref, ks=(5, 10, 20)):
    """ITR, TIR, TMR, IMR and mixed-pool / cross-modal R@K from :func:`brute_force_ranks`."""
    def ratio(a, b):
        return float("inf") if b == 0 and a > 0 else (float("nan") if b == 0 else a / b)

    bt, bi = ref["best_text"], ref["best_image"]
    m = {"ITR": ratio(np.count_nonzero(bt > 1), np.count_nonzero(bt == 1)),
         "TIR": ratio(np.count_nonzero(bi > 1), np.count_nonzero(bi == 1)),
         "TMR": float(bt.mean()), "IMR": float(bi.mean())}
    for k in ks:
        m[f"R@{k}"] = float(np.mean(ref["i2t"] <= k))
        m[f"R@{k}_t2i"] = float(np.mean(ref["t2i"] <= k))
        m[f"R@{k}_i2t_crossmodal"] = float(np.mean(ref["i2t_x"] <= k))
        m[f"R@{k}_t2i_crossmodal"] = float(np.mean(ref["t2i_x"] <= k))
    return m


#: (GapReport field, :func:`brute_force_ranks` key) of every rank array a report carries.
RANK_FIELDS = (("best_text_rank", "best_text"), ("best_image_rank", "best_image"),
               ("i2t_rank", "i2t"), ("t2i_rank", "t2i"),
               ("i2t_rank_crossmodal", "i2t_x"), ("t2i_rank_crossmodal", "t2i_x"))


def assert_report_is_float64(report, X, Y, terms=None):
    """Every rank array of ``report`` (``measure_gap`` on X, Y, any device; with score
    ``terms``, on the corrected scores) equals the float64 brute force on the same input, and
    so do the metrics read from the ranks."""
    ref = brute_force_ranks(X, Y, terms)
    for mine, theirs in RANK_FIELDS:
        np.testing.assert_array_equal(getattr(report, mine), ref[theirs], err_msg=mine)
    want = metrics_from_ranks(ref, report.ks)
    assert {k: report.metrics[k] for k in want} == want


def planted_ties(n: int, d: int, seed: int, log_eps: float, n_dup: int, f64: bool):
    """Pairs with planted near-duplicates (texts = permuted images moved by 10^log_eps) and
    ``n_dup`` exact duplicates, in float64 or float32; None when a row came out zero."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) + 0.3
    Y = X[rng.permutation(n)] + 10.0 ** log_eps * rng.normal(size=(n, d))
    for _ in range(n_dup):
        i, j = rng.integers(0, n, size=2)
        (X if rng.random() < 0.5 else Y)[i] = (X if rng.random() < 0.5 else Y)[j]
    if not f64:
        X, Y = X.astype(np.float32), Y.astype(np.float32)
    if np.any(np.linalg.norm(X, axis=1) == 0) or np.any(np.linalg.norm(Y, axis=1) == 0):
        return None
    return X, Y


def near_tie_pairs(gap: float, d: int, n: int = 40, seed: int = 0):
    """Image 0's best text and its best other image differ by ``gap`` in float64 cosine.

    Image 0 = e1; image 1 at cosine c from it; text 0 at cosine c + gap. Every other item is
    a random direction far from e1 (cosine ~ 0), so only these two compete for image 0.
    """
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    e1, e2, e3 = Q[:, 0], Q[:, 1], Q[:, 2]
    c = 0.8
    X = rng.normal(size=(n, d))
    Y = rng.normal(size=(n, d))
    X[0] = e1
    X[1] = c * e1 + np.sqrt(1 - c ** 2) * e2
    ct = c + gap
    Y[0] = ct * e1 + np.sqrt(1 - ct ** 2) * e3
    return X.astype(np.float32), Y.astype(np.float32)


def brute_force_group_ranks(X, Y, groups):
    """Ranks with several captions per image, from the definitions: the pool is the unique
    images (first row of each id, ids sorted) and every caption; an image query's relevant
    items are all its captions (its rank: 1 + the non-relevant items at least as close as its
    best caption), a caption's is its image; a tie is never a win."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    Y = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    ids, first, image_of = np.unique(np.asarray(groups), return_index=True, return_inverse=True)
    U = X[first]
    m, n = U.shape[0], Y.shape[0]
    SI, ST = U @ np.vstack([U, Y]).T, Y @ np.vstack([U, Y]).T  # queries against the pool
    out = {"best_text": np.zeros(m, int), "i2t": np.zeros(m, int), "i2t_x": np.zeros(m, int),
           "best_image": np.zeros(n, int), "t2i": np.zeros(n, int), "t2i_x": np.zeros(n, int)}
    for g in range(m):
        s = SI[g].copy()
        s[g] = -np.inf  # not its own result
        rel = m + np.flatnonzero(image_of == g)
        best = s[rel].max()
        nonrel = np.ones(m + n, bool)
        nonrel[rel] = False
        nonrel[g] = False
        out["i2t"][g] = 1 + np.count_nonzero(s[nonrel] >= best - TOL)
        out["i2t_x"][g] = 1 + np.count_nonzero(s[m:][nonrel[m:]] >= best - TOL)
        out["best_text"][g] = 1 + np.count_nonzero(s[:m] >= s[m:].max() - TOL)
    for t in range(n):
        s = ST[t].copy()
        s[m + t] = -np.inf
        target = s[image_of[t]]
        out["t2i"][t] = np.count_nonzero(s >= target - TOL)
        out["t2i_x"][t] = np.count_nonzero(s[:m] >= target - TOL)
        out["best_image"][t] = 1 + np.count_nonzero(s[m:] >= s[:m].max() - TOL)
    return out


def coco_style_groups(n_images: int, d: int, seed: int, captions: int = 5, f64: bool = False):
    """Pairs of ``n_images`` images with ``captions`` captions each (1 to ``captions`` when
    negative counts are drawn), image rows repeated per caption, a near-duplicate caption and
    an exact duplicate image planted; returns X, Y, groups (image ids as strings)."""
    rng = np.random.default_rng(seed)
    imgs = rng.normal(size=(n_images, d)) + 0.2
    per = np.full(n_images, captions) if captions > 0 else rng.integers(1, -captions + 1, n_images)
    rows = np.repeat(np.arange(n_images), per)
    Y = imgs[rows] * 0.3 + rng.normal(size=(rows.size, d))
    Y[1] = Y[0] + 1e-7 * rng.normal(size=d)      # a near-tie between two captions
    imgs[3] = imgs[2]                             # two images with the same embedding
    X = imgs[rows]
    if not f64:
        X, Y = X.astype(np.float32), Y.astype(np.float32)
    return X, Y, np.array([f"img{g:04d}" for g in rows])
