"""2-D views of the mixed pool: one joint projection of images and texts together.

Both modalities are projected *jointly* (one PCA / one UMAP fitted on ``Z = [X; Y]``), so the
distance between the two clouds in the picture is a real property of the embedding: the gap
that PCA shows is the gap. Rows are L2-normalised first, as the measures do (cosine geometry).

PCA is exact and instant (a truncated SVD of a 2N x d matrix). UMAP (McInnes et al. 2018) is
slower; it runs on the top :data:`UMAP_PCA_DIMS` principal components of the joint pool (the
usual pre-reduction: it keeps the gap direction, which dominates the variance, and makes the
nearest-neighbour search cheap), on an exact neighbour graph, with a fixed seed, so the same
input gives the same picture.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import linalg

#: UMAP defaults: neighbourhood size, minimum distance in the layout, seed, and the number of
#: principal components UMAP sees (pre-reduction).
UMAP_N_NEIGHBORS = 15
UMAP_MIN_DIST = 0.1
UMAP_SEED = 0
UMAP_PCA_DIMS = 50
#: Optimisation epochs and initialisation: PCA init and 200 epochs are several times faster
#: than UMAP's spectral init with 500 epochs, and the layout of two clouds is as clear.
UMAP_EPOCHS = 200
UMAP_INIT = "pca"

#: Projection methods: :func:`joint_pca` and :func:`joint_umap`.
PROJECTIONS = ("pca", "umap")


@dataclass
class Projection:
    """2-D coordinates of every image and text of N pairs.

    Attributes
    ----------
    images : ndarray of shape (N, 2)
        Coordinates of the image rows (row i is the image of pair i).
    texts : ndarray of shape (N, 2)
        Coordinates of the text rows.
    method : str
        ``"pca"`` or ``"umap"``.
    axis_titles : tuple of str
        Axis labels, e.g. ``("PC 1 (41%)", "PC 2 (7%)")``.
    info : dict
        Method details: explained variance ratios (PCA), parameters (UMAP).
    """

    images: np.ndarray
    texts: np.ndarray
    method: str
    axis_titles: tuple[str, str] = ("", "")
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.images.shape[0])


def joint_pool(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """The mixed pool ``[X; Y]`` with L2-normalised rows, float32, shape (2N, d)."""
    X = np.asarray(X, dtype=np.float32)
    Y = np.asarray(Y, dtype=np.float32)
    if X.ndim != 2 or Y.ndim != 2 or X.shape != Y.shape:
        raise ValueError(f"need two arrays of the same shape (N, d), got {X.shape} and {Y.shape}.")
    if X.shape[0] < 2:
        raise ValueError(f"need at least 2 pairs to project, got {X.shape[0]}.")
    Z = np.vstack([X, Y])
    norms = np.linalg.norm(Z, axis=1, keepdims=True)
    return Z / np.where(norms > 0, norms, 1.0).astype(np.float32)


def _top_eigenpairs(S: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest eigenvalues of the symmetric matrix ``S`` (descending) and their
    eigenvectors. Only those are computed (LAPACK's ``syevr`` on an index range): at
    d = 512 the top two took 0.007 s against 0.019 s for every eigenpair, on one core."""
    n = S.shape[0]
    w, V = linalg.eigh(S, subset_by_index=[n - k, n - 1], driver="evr")
    return w[::-1], V[:, ::-1]


def principal_axes(Zc: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top-k principal axes of the centred rows ``Zc`` (m, d) and each one's share of the
    total variance, largest first.

    Products in ``Zc``'s dtype, eigen-solves in float64 (:func:`_top_eigenpairs`): with at
    least as many rows as dimensions from the (d x d) covariance, which is much cheaper than
    an SVD of ``Zc`` (scikit-learn's ``covariance_eigh`` solver; 5,000 x 512 rows: about
    0.1 s against 0.75 s for ``scipy.linalg.svd``), else from the (m x m) Gram matrix,
    O(m^2 d), not O(d^3) (300 pairs of d = 8,192: under a second instead of minutes). An
    axis of zero variance on the Gram route is a zero vector. Signs are fixed (each axis's
    largest-magnitude loading positive, as scikit-learn's ``svd_flip``) so the same input
    always gives the same axes, not mirrored ones.

    Returns
    -------
    axes : ndarray of shape (d, k), float64
    ratio : ndarray of shape (k,)
    """
    k = min(k, *Zc.shape)
    if Zc.shape[0] < Zc.shape[1]:
        G = (Zc @ Zc.T).astype(np.float64)
        w, U = _top_eigenpairs(G, k)
        V = (Zc.T.astype(np.float64) @ U) / np.sqrt(np.where(w > 0, w, 1.0))
        total = float(np.trace(G))
    else:
        C = (Zc.T @ Zc).astype(np.float64)
        w, V = _top_eigenpairs(C, k)
        total = float(np.trace(C))
    signs = np.sign(V[np.abs(V).argmax(0), np.arange(V.shape[1])])
    V = V * np.where(signs == 0, 1.0, signs)
    ratio = np.clip(w, 0, None) / total if total > 0 else np.zeros_like(w)
    return V, ratio


def _top_components(Z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the float32 rows ``Z`` on their top-k principal components
    (:func:`principal_axes`) and the components' explained variance ratios."""
    Zc = Z - Z.mean(0, dtype=np.float64).astype(np.float32)
    V, ratio = principal_axes(Zc, k)
    return (Zc @ V.astype(np.float32)), ratio


def joint_pca(X: np.ndarray, Y: np.ndarray) -> Projection:
    """PCA of the mixed pool to 2-D.

    Parameters
    ----------
    X, Y : ndarray of shape (N, d)
        Image and text embeddings (any d >= 2; normalised here).

    Returns
    -------
    Projection
        ``info["explained"]``: fraction of the pool's variance on each axis.
    """
    Z = joint_pool(X, Y)
    n = X.shape[0]
    scores, ratio = _top_components(Z, 2)
    if scores.shape[1] < 2:  # d == 1 cannot happen (checked), but keep the shape promise
        scores = np.hstack([scores, np.zeros((scores.shape[0], 2 - scores.shape[1]), np.float32)])
        ratio = np.r_[ratio, np.zeros(2 - ratio.size)]
    titles = (f"PC 1 ({ratio[0]:.0%} of variance)", f"PC 2 ({ratio[1]:.0%})")
    return Projection(scores[:n], scores[n:], "pca", titles, {"explained": ratio.tolist()})


def exact_knn(Z: np.ndarray, k: int, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours (Euclidean) of every row of ``Z``, itself included first.

    Blocked matrix products, O(n^2 d) time and O(block n) memory. For the pools shown here
    (up to a few 10^4 points in 50 dimensions) this takes seconds and, unlike UMAP's own
    approximate search, needs no just-in-time compilation (about a minute on a small CPU).

    Returns
    -------
    indices : ndarray of shape (n, k), int64
    distances : ndarray of shape (n, k), float32, ascending per row
    """
    Z = np.asarray(Z, dtype=np.float32)
    n = Z.shape[0]
    k = min(k, n)
    sq = np.einsum("ij,ij->i", Z, Z)
    indices = np.empty((n, k), np.int64)
    distances = np.empty((n, k), np.float32)
    for i0 in range(0, n, block):
        i1 = min(n, i0 + block)
        D = sq[i0:i1, None] + sq[None, :] - 2.0 * (Z[i0:i1] @ Z.T)
        D[np.arange(i1 - i0), np.arange(i0, i1)] = -1.0  # itself first, whatever rounding says
        part = np.argpartition(D, k - 1, axis=1)[:, :k]
        d = np.take_along_axis(D, part, 1)
        order = np.argsort(d, axis=1, kind="stable")
        indices[i0:i1] = np.take_along_axis(part, order, 1)
        distances[i0:i1] = np.sqrt(np.clip(np.take_along_axis(d, order, 1), 0.0, None))
    return indices, distances


def joint_umap(X: np.ndarray, Y: np.ndarray, *, n_neighbors: int = UMAP_N_NEIGHBORS,
               min_dist: float = UMAP_MIN_DIST, seed: int = UMAP_SEED,
               pca_dims: int = UMAP_PCA_DIMS) -> Projection:
    """UMAP of the mixed pool to 2-D, with a fixed seed (deterministic).

    Parameters
    ----------
    X, Y : ndarray of shape (N, d)
        Image and text embeddings (normalised here).
    n_neighbors : int
        UMAP neighbourhood size (>= 2).
    min_dist : float
        UMAP minimum distance between points in the layout, in [0, 1].
    seed : int
        Random state; UMAP is single-threaded when seeded (reproducible).
    pca_dims : int
        Principal components of the joint pool given to UMAP (0 = use all d dimensions).

    Notes
    -----
    The neighbour graph is exact (:func:`exact_knn`) and handed to UMAP as
    ``precomputed_knn``; the layout is initialised from PCA and optimised for
    :data:`UMAP_EPOCHS` epochs.
    """
    if n_neighbors < 2:
        raise ValueError(f"n_neighbors must be >= 2, got {n_neighbors}.")
    if not 0.0 <= min_dist <= 1.0:
        raise ValueError(f"min_dist must be in [0, 1], got {min_dist}.")
    Z = joint_pool(X, Y)
    n = X.shape[0]
    if pca_dims and Z.shape[1] > pca_dims:
        Z, _ = _top_components(Z, pca_dims)
    k = min(n_neighbors, 2 * n - 1)
    if k < 2:
        raise ValueError(f"UMAP needs at least 3 points; got {2 * n}.")
    knn = exact_knn(Z, k)
    import umap  # slow import (numba, pynndescent): only when UMAP is asked for

    reducer = umap.UMAP(n_components=2, n_neighbors=k, min_dist=min_dist, random_state=seed,
                        metric="euclidean", init=UMAP_INIT if 2 * n > k + 2 else "random",
                        n_epochs=UMAP_EPOCHS, precomputed_knn=(knn[0], knn[1], None))
    with warnings.catch_warnings():
        # "n_jobs overridden to 1 by setting random_state": wanted (reproducible layout).
        warnings.simplefilter("ignore")
        emb = reducer.fit_transform(Z).astype(np.float32)
    info = {"n_neighbors": k, "min_dist": min_dist, "seed": seed, "pca_dims": pca_dims,
            "epochs": UMAP_EPOCHS}
    return Projection(emb[:n], emb[n:], "umap", ("UMAP 1", "UMAP 2"), info)


def warm_up_umap() -> None:
    """Compile UMAP's numba code once, on a throw-away pool of 200 points.

    The first UMAP of a process pays for just-in-time compilation (tens of seconds on a small
    CPU); running this in the background before the user asks for UMAP hides that cost.
    """
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 8)).astype(np.float32)
    joint_umap(X, X + rng.normal(size=X.shape).astype(np.float32))


class LayoutJobs:
    """UMAP layouts computed in the background, one job per data hash and parameters.

    Parameters
    ----------
    store : gapviz.runs.LRUStore
        Where the jobs (``concurrent.futures.Future``) are kept: given, so the app can share
        one store between sessions.
    workers : int, default=1
        Background threads. One: UMAP is CPU-bound, two layouts at once only halve each
        other's speed.
    """

    def __init__(self, store: Any, workers: int = 1) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gapviz-umap")

    def submit(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` on the layout worker (e.g. :func:`warm_up_umap`)."""
        return self._pool.submit(fn, *args, **kwargs)

    def job(self, key: str, X: np.ndarray, Y: np.ndarray, **params: Any) -> Any:
        """The layout job of pairs with content hash ``key`` (started once per parameters)."""
        name = (key, tuple(sorted(params.items())))
        job = self.store.get(name)
        if job is None or job.cancelled():
            job = self._pool.submit(joint_umap, X, Y, **params)
            self.store.put(name, job)
        return job

    def ready(self, key: str, X: np.ndarray, Y: np.ndarray, **params: Any) -> Projection | None:
        """The finished layout, or None while it runs (raises the job's error, if any)."""
        job = self.job(key, X, Y, **params)
        return job.result() if job.done() else None
