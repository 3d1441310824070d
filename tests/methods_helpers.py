"""Small data and dense references shared by the tests of gapviz.methods."""

import numpy as np
from scipy import linalg


def gap_pairs(n=80, d=12, seed=0, shift=1.5, noise=0.6):
    """Pairs sharing a latent, each modality pushed along its own direction (a gap)."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, d))
    mu_x = np.zeros(d)
    mu_y = np.zeros(d)
    mu_x[0], mu_y[1] = shift, shift
    X = latent + mu_x * np.sqrt(d) / 2 + noise * rng.normal(size=(n, d))
    Y = latent + mu_y * np.sqrt(d) / 2 + noise * rng.normal(size=(n, d))
    return X.astype(np.float32), Y.astype(np.float32)


def unit(A):
    A = np.asarray(A, dtype=np.float64)
    return A / np.linalg.norm(A, axis=1, keepdims=True)


def full_graph(sg, X, Y):
    """The 2N x 2N affinity matrix W a fitted SpectralGap built, dense float64 (for references)."""
    # the fitted (normalised, float32) rows, so the graph is bit-for-bit the one that was solved
    W = sg._graph_matrix(sg.X_fit_, sg.Y_fit_, np.random.default_rng(sg.random_state))
    W = W.toarray() if hasattr(W, "toarray") else np.asarray(W)
    W = W.astype(np.float64)
    n = X.shape[0]
    if W.shape[0] == n:  # the cross block S of [[0, S], [S^T, 0]]
        Z = np.zeros((n, n))
        W = np.block([[Z, W], [W.T, Z]])
    return W


def dense_reference(W, k, laplacian="normalized"):
    """``scipy.linalg.eigh`` on L = D - W: eigenvalues and eigenvectors 1..k+1 (trivial dropped)."""
    d = W.sum(1)
    L = np.diag(d) - W
    if laplacian == "normalized":
        lam, F = linalg.eigh(L, np.diag(d))
    else:
        lam, F = linalg.eigh(L)
    return lam[1:k + 1], F[:, 1:k + 1], lam


def max_angle(A, B):
    """Largest principal angle (radians) between the column spans of A and B."""
    return float(linalg.subspace_angles(np.asarray(A, np.float64), np.asarray(B, np.float64)).max())


def well_separated_ks(lam, candidates, rel_gap=1e-3):
    """Those k for which the k-th and (k+1)-th eigenvalues differ (the k-subspace is defined)."""
    scale = max(1.0, float(np.abs(lam).max()))
    return [k for k in candidates if k < len(lam) and lam[k] - lam[k - 1] > rel_gap * scale]
