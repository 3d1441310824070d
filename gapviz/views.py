"""What a page draws for one embedding (raw, or the output of a run): its measures, a 2-D PCA
of the mixed pool and the distance samples of the histograms (paper Figure 3).

Pure functions of arrays; the app caches a view per run key and renders it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .config import BLOCK_VALUES
from .measures import GapReport, measure_gap, unit_rows
from .projection import Projection, joint_pca
from .threads import blas_for_a_busy_machine

#: Image-text combinations sampled for the "all pairs" histogram.
ALL_PAIRS_SAMPLE = 20_000
#: Sampled combinations gathered at a time (two 512 KB buffers at d = 512).
SAMPLE_BLOCK = 256


def paired_distances(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Cosine distance 1 - cos(x_i, y_i) of each pair, shape (N,)."""
    return 1.0 - np.einsum("ij,ij->i", unit_rows(X), unit_rows(Y))


def cross_distance_sample(X: np.ndarray, Y: np.ndarray, n_samples: int = ALL_PAIRS_SAMPLE,
                          seed: int = 0) -> np.ndarray:
    """Cosine distances of ``n_samples`` random image-text combinations (x_i, y_j), shape (M,).

    The paper's "all pairs" distribution (Figure 3) without an N x N matrix: when N^2 is at
    most ``n_samples`` every combination is used, otherwise a seeded uniform sample. The
    sampled rows are gathered :data:`SAMPLE_BLOCK` at a time into two buffers made once, so
    memory stays small whatever N and d are, and nothing large is allocated per call. Fresh
    gathers of the whole sample (two 33 MB arrays at d = 512) made this 0.03 s call take up to
    1.0 s beside five busy processes on 2 CPUs (0.4-2.8 s in the app server's views at 2.5
    busy tasks per CPU); gathered in blocks it took 0.04-0.06 s beside the same five
    processes, with the same values bit for bit.
    """
    Xn, Yn = unit_rows(X), unit_rows(Y)
    n, d = Xn.shape
    if n * n <= n_samples:
        return (1.0 - Xn @ Yn.T).ravel()
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, n_samples)
    j = rng.integers(0, n, n_samples)
    out = np.empty(n_samples, dtype=np.result_type(Xn, Yn))
    step = max(1, min(SAMPLE_BLOCK, BLOCK_VALUES // (2 * d)))
    rows_x, rows_y = np.empty((step, d), Xn.dtype), np.empty((step, d), Yn.dtype)
    for s in range(0, n_samples, step):
        m = min(step, n_samples - s)
        np.take(Xn, i[s:s + m], axis=0, out=rows_x[:m])
        np.take(Yn, j[s:s + m], axis=0, out=rows_y[:m])
        np.einsum("ij,ij->i", rows_x[:m], rows_y[:m], out=out[s:s + m])
    return np.subtract(1.0, out, out=out)


@dataclass
class EmbeddingView:
    """Everything a page draws for one embedding (raw, or a run's output).

    Attributes
    ----------
    images, texts : ndarray of shape (N, k)
        Transformed embeddings.
    report : GapReport
        Measures of the transformed embeddings.
    projection : Projection
        Joint PCA of the transformed pool.
    paired : ndarray of shape (N,)
        Cosine distance of each pair.
    all_pairs : ndarray of shape (M,)
        Cosine distances of sampled image-text combinations.
    """

    images: np.ndarray
    texts: np.ndarray
    report: GapReport
    projection: Projection
    paired: np.ndarray
    all_pairs: np.ndarray


def view_of(X: np.ndarray, Y: np.ndarray, report: GapReport | None = None, *,
            between: Callable[[], None] | None = None) -> EmbeddingView:
    """Measures (``report`` if already computed), 2-D PCA and distance samples of one embedding.
    ``between()``, if given, is called before each of the three parts (work done ahead of
    time raises there to give way: ``gapviz.runs``).

    On a busy machine BLAS is held to one thread (:func:`gapviz.threads.blas_for_a_busy_machine`):
    with BLAS's spinning thread pool, the PCA and distance samples took 0.3-2.3 s on 2 CPUs
    with two busy processes beside them (2,500 pairs, d = 512), on one thread 0.15-0.27 s."""
    step = between if between is not None else (lambda: None)
    step()
    report = measure_gap(X, Y) if report is None else report
    with blas_for_a_busy_machine():
        step()
        projection = joint_pca(X, Y)
        step()
        paired = paired_distances(X, Y)
        step()
        return EmbeddingView(X, Y, report, projection, paired, cross_distance_sample(X, Y))
