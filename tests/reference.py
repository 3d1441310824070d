"""Brute-force reference of the mixed-pool measures: the whole 2N x 2N pool, no blocks.

Written for clarity, not speed, straight from DESIGN.md's definitions and the tie rule in
gapviz.measures (an item tied with the target, within TIE_TOL, is ranked ahead of it).
"""

import numpy as np

from gapviz.measures import TIE_TOL


def brute_force_ranks(X, Y):
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    Y = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    n = X.shape[0]
    Z = np.vstack([X, Y]).astype(np.float64)
    S = Z @ Z.T
    is_text = np.r_[np.zeros(n, bool), np.ones(n, bool)]
    out = {k: np.zeros(n, int) for k in ("best_text", "best_image", "i2t", "t2i", "i2t_x", "t2i_x")}
    for q in range(2 * n):
        others = np.delete(np.arange(2 * n), q)
        sims = S[q, others]
        other_mod = is_text[others] != is_text[q]
        best_other = sims[other_mod].max()
        # rank of the best other-modality item: 1 + same-modality items at least as close
        best_rank = 1 + np.count_nonzero(sims[~other_mod] >= best_other - TIE_TOL)
        partner = q + n if q < n else q - n
        s_p = S[q, partner]
        pool_rank = np.count_nonzero(sims >= s_p - TIE_TOL)  # the partner itself counts as 1
        cross_rank = np.count_nonzero(sims[other_mod] >= s_p - TIE_TOL)
        i = q % n
        if q < n:
            out["best_text"][i], out["i2t"][i], out["i2t_x"][i] = best_rank, pool_rank, cross_rank
        else:
            out["best_image"][i], out["t2i"][i], out["t2i_x"][i] = best_rank, pool_rank, cross_rank
    return out
