"""Baselines a fair comparison needs.

All of them are affine maps fitted once, so they transform unseen rows exactly as the fitted
ones. Inputs are L2-normalised first (cosine is the similarity everywhere in gapviz).

* ``orig``: no change.
* ``center``: remove each modality's mean, renormalise (the post-hoc rule of I0T and of
  GR-CLIP).
* ``liang_shift``: move images and texts half a step ``lambda / 2`` each along the unit
  centroid-gap direction, towards each other, renormalise (Liang et al. 2022, "Mind the Gap").
* ``standardize``: per-dimension, per-modality z-scores, renormalised.
* ``pca``: PCA of the pooled images and texts to k dimensions (paper Table 6: it does not close
  the gap, since the modality direction carries much of the pooled variance and is kept).
* ``procrustes``: the orthogonal map that best sends each image onto its paired text
  (Schoenemann 1966), after centring each modality.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg

from ..config import SPECTRAL_K
from ..projection import principal_axes
from .base import GapMethod, Param, ProgressCallback, Slider, l2_normalize, require_finite


class OrigGap(GapMethod):
    """No change: the embeddings as they are (float32), the reference every method is compared to."""

    name = "orig"
    summary = "no change (the original embeddings)"
    uses_pairing = False
    default_protocol = "transductive"
    label = "None (raw embeddings)"
    menu_rank = 90

    def _fit(self, X: np.ndarray, Y: np.ndarray, progress: ProgressCallback) -> None:
        pass

    def _transform_images(self, X: np.ndarray) -> np.ndarray:
        return np.array(X, dtype=np.float32)

    def _transform_texts(self, Y: np.ndarray) -> np.ndarray:
        return np.array(Y, dtype=np.float32)


class CenterGap(GapMethod):
    """Remove each modality's mean and renormalise (the post-hoc rule of I0T and of GR-CLIP).

    ``x -> normalize(normalize(x) - mean_x)``, ``y -> normalize(normalize(y) - mean_y)`` with the
    means of the fitted (normalised) rows.

    This is not Liang et al. 2022's shift (:class:`LiangShiftGap`), which moves both modalities
    along the one centroid-gap direction only. With ``lambda = ||mean_x - mean_y||`` their shift
    sends both centroids to the shared mean ``(mean_x + mean_y) / 2``; centering sends both to
    0, i.e. it also removes that shared mean, which changes every cosine after renormalising.

    Attributes
    ----------
    mean_image_, mean_text_ : ndarray of shape (d,)
    """

    name = "center"
    label = "Mean-centering"
    menu_rank = 20
    summary = "remove each modality's full mean, renormalise (I0T post-hoc, GR-CLIP)"
    uses_pairing = False
    default_protocol = "transductive"

    def _fit(self, X: np.ndarray, Y: np.ndarray, progress: ProgressCallback) -> None:
        self.mean_image_ = l2_normalize(X).mean(0, dtype=np.float64).astype(np.float32)
        self.mean_text_ = l2_normalize(Y).mean(0, dtype=np.float64).astype(np.float32)

    def _transform_images(self, X: np.ndarray) -> np.ndarray:
        return l2_normalize(l2_normalize(X) - self.mean_image_)

    def _transform_texts(self, Y: np.ndarray) -> np.ndarray:
        return l2_normalize(l2_normalize(Y) - self.mean_text_)


class LiangShiftGap(GapMethod):
    """Shift both modalities along the unit centroid-gap direction (Liang et al. 2022).

    Liang, Zhang, Kwon, Yeung & Zou, "Mind the Gap: Understanding the Modality Gap in
    Multi-modal Contrastive Representation Learning", NeurIPS 2022 (the gap-modifying
    experiment of their Table 1), as their code does it (``move_features`` in
    ``Table_1_Implications_CLIP_Zero_Shot/training/train_clip.py``, github.com/Weixin-Liang/
    Modality-Gap)::

        u = (mean(X) - mean(Y)) / ||mean(X) - mean(Y)||      (L2-normalised rows)
        x -> normalize(x - (lam / 2) u),   y -> normalize(y + (lam / 2) u)

    Images move towards the texts and texts towards the images, half of ``lam`` each, then
    every row is put back on the unit sphere. ``lam = 0`` gives the raw (normalised)
    embeddings; ``lam = ||mean(X) - mean(Y)||`` makes the two centroids meet at the shared mean
    before renormalising; a negative ``lam`` widens the gap (Liang et al. scan ``lam`` over
    ``-5, -4.75, ..., 4.75`` and widen the gap for their fairness experiment). Only the two
    centroids are estimated: the pairing is never read.

    Unlike :class:`CenterGap` it removes nothing but the gap direction: the mean the two
    modalities share, and every direction other than ``u``, are left as they are.

    Parameters
    ----------
    lam : float, default=0.82
        Length of the shift (Euclidean, in the embedding space, as the centroid gap
        ``||mean(X) - mean(Y)||`` is measured), half of it to each modality. The default is the gap Liang et al. report for CLIP (``||Delta_gap|| = 0.82``), so it
        closes a CLIP-sized gap on any data without being fitted to it (a default equal to each
        dataset's own gap would change with the data a setting is compared on).

    Attributes
    ----------
    mean_image_, mean_text_ : ndarray of shape (d,), float64
        The modalities' centroids (of the L2-normalised fitted rows).
    gap_norm_ : float
        ``||mean_image_ - mean_text_||``: the ``lam`` that makes the shifted centroids meet.
    gap_direction_ : ndarray of shape (d,), float64
        ``u``, unit length, pointing from the text centroid to the image centroid.
    """

    name = "liang_shift"
    label = "Liang shift"
    menu_rank = 25
    params_info = (
        Param("lam", "liang_shift: length of the shift along the unit centroid-gap direction, "
              "half to each modality (default 0.82, CLIP's gap; 0 = raw; < 0 widens the gap)",
              flag="--lambda", type=float, short="lambda",
              slider=Slider("Shift lambda (along the gap direction)", lo=-1.0, hi=2.0, step=0.02,
                            key="liang_lambda",
                            help="0: the raw embeddings. A value equal to the centroid gap "
                                 "||mean(X) - mean(Y)|| makes the two centroids meet; negative "
                                 "values widen the gap.")),
    )
    summary = ("shift images and texts by lambda / 2 each along the unit centroid-gap "
               "direction, renormalise (Liang et al. 2022)")
    uses_pairing = False
    default_protocol = "transductive"

    def __init__(self, lam: float = 0.82):
        self.lam = lam

    def _validate_parameters(self, n_pairs: int, dim: int) -> None:
        require_finite(self, "lam")

    def _fit(self, X: np.ndarray, Y: np.ndarray, progress: ProgressCallback) -> None:
        mx = l2_normalize(X).mean(0, dtype=np.float64)
        my = l2_normalize(Y).mean(0, dtype=np.float64)
        gap = mx - my
        norm = float(np.linalg.norm(gap))
        if not norm > 0:
            raise ValueError("liang_shift: the image and the text centroids coincide, so there is "
                             "no gap direction to shift along; the modalities have no centroid "
                             "gap to close (use orig).")
        self.mean_image_, self.mean_text_ = mx, my
        self.gap_norm_ = norm
        self.gap_direction_ = gap / norm

    def _shift(self, A: np.ndarray, sign: float) -> np.ndarray:
        step = (sign * 0.5 * float(self.lam)) * self.gap_direction_
        return l2_normalize(l2_normalize(A).astype(np.float64) + step)

    def _transform_images(self, X: np.ndarray) -> np.ndarray:
        return self._shift(X, -1.0)

    def _transform_texts(self, Y: np.ndarray) -> np.ndarray:
        return self._shift(Y, +1.0)


class StandardizeGap(GapMethod):
    """Per-dimension, per-modality standardisation, renormalised.

    ``x -> normalize((normalize(x) - mean_x) / std_x)`` (and the same for texts), with the
    per-dimension mean and standard deviation of each modality's fitted rows. A dimension that
    is constant in the fitted rows (std 0) is only centred.

    Attributes
    ----------
    mean_image_, std_image_, mean_text_, std_text_ : ndarray of shape (d,)
    """

    name = "standardize"
    label = "Standardisation"
    menu_rank = 30
    summary = "per-dimension, per-modality z-scores, renormalised"
    uses_pairing = False
    default_protocol = "transductive"

    def _fit(self, X: np.ndarray, Y: np.ndarray, progress: ProgressCallback) -> None:
        for tag, A in (("image", X), ("text", Y)):
            An = l2_normalize(A).astype(np.float64)
            std = An.std(0)
            setattr(self, f"mean_{tag}_", An.mean(0).astype(np.float32))
            setattr(self, f"std_{tag}_", np.where(std > 0, std, 1.0).astype(np.float32))

    def _transform_images(self, X: np.ndarray) -> np.ndarray:
        return l2_normalize((l2_normalize(X) - self.mean_image_) / self.std_image_)

    def _transform_texts(self, Y: np.ndarray) -> np.ndarray:
        return l2_normalize((l2_normalize(Y) - self.mean_text_) / self.std_text_)


class PCAGap(GapMethod):
    """PCA of the pooled images and texts, both projected to k dimensions (paper Table 6).

    One PCA is fitted on the 2N normalised rows ``[X; Y]`` (centred by the pooled mean), and
    both modalities are projected on its first k axes. It is the paper's "does not help"
    baseline: the difference between the modality means is among the pooled data's largest
    directions of variance, so the projection keeps it.

    Parameters
    ----------
    n_components : int, default=60
        k; at most ``min(2N, d)``.

    Attributes
    ----------
    components_ : ndarray of shape (k, d)
    mean_ : ndarray of shape (d,)
        Pooled mean.
    explained_variance_ratio_ : ndarray of shape (k,)
    """

    name = "pca"
    label = "PCA"
    output_space = "own"
    menu_rank = 70
    params_info = (
        Param("n_components", "components: spectral k (default 60; 2..200 typical) or PCA "
              "dimensions", flag="--k", type=int, short="k", cap=lambda n, d: min(2 * n, d),
              slider=Slider("PCA dimensions", lo=2, hi=200, key="pca_k")),
    )
    summary = "PCA of the pooled images and texts to k dimensions (paper: does not help)"
    uses_pairing = False
    default_protocol = "transductive"

    def __init__(self, n_components: int = SPECTRAL_K):
        self.n_components = n_components

    def _validate_parameters(self, n_pairs: int, dim: int) -> None:
        k = self.n_components
        require_finite(self, "n_components")
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise ValueError(f"n_components must be an integer >= 1, got {k!r}.")
        cap = min(2 * n_pairs, dim)
        if k > cap:
            raise ValueError(f"n_components={k} exceeds min(2N, d) = {cap} (N={n_pairs} pairs, d={dim}): "
                             f"PCA has no more axes; use n_components <= {cap}.")

    def _fit(self, X: np.ndarray, Y: np.ndarray, progress: ProgressCallback) -> None:
        Z = np.vstack([l2_normalize(X), l2_normalize(Y)]).astype(np.float64)
        self.mean_ = Z.mean(0)
        Zc = Z - self.mean_
        k = self.n_components
        if Zc.shape[0] >= Zc.shape[1]:
            # the (d x d) covariance's top k eigenpairs: at 2N = 5,000, d = 512 about 0.1 s
            # against 0.75 s for the thin SVD below
            V, ratio = principal_axes(Zc, k)
            self.components_ = V.T.astype(np.float32)
            self.explained_variance_ratio_ = ratio
        else:
            # fewer rows than dimensions: a thin SVD of the (2N x d) pool is cheap, and gives
            # unit axes even where the pool has no variance left (k = 2N)
            _, s, Vt = linalg.svd(Zc, full_matrices=False, check_finite=False)
            # Sign convention: largest-magnitude loading of each axis positive (deterministic).
            signs = np.sign(Vt[np.arange(k), np.argmax(np.abs(Vt[:k]), axis=1)])
            self.components_ = (Vt[:k] * signs[:, None]).astype(np.float32)
            var = s ** 2
            self.explained_variance_ratio_ = var[:k] / var.sum() if var.sum() > 0 else np.zeros(k)
        self.mean_ = self.mean_.astype(np.float32)

    def _transform_images(self, X: np.ndarray) -> np.ndarray:
        return (l2_normalize(X) - self.mean_) @ self.components_.T

    def _transform_texts(self, Y: np.ndarray) -> np.ndarray:
        return (l2_normalize(Y) - self.mean_) @ self.components_.T


class ProcrustesGap(GapMethod):
    """Orthogonal Procrustes on the pairs: the rotation sending images onto their texts.

    ``R = argmin_{R^T R = I} ||(X - mean_x) R - (Y - mean_y)||_F`` (Schoenemann 1966), solved by
    ``scipy.linalg.orthogonal_procrustes``. Images map to ``normalize((x - mean_x) R)``, texts to
    ``normalize(y - mean_y)``. With ``center=False`` no means are removed: ``x -> normalize(x R)``,
    texts unchanged.

    With fewer pairs than dimensions (2N < d) the fit works in the span of the 2N (centred)
    rows: with ``B`` (d x r, orthonormal, r <= 2N) a basis of that span from a thin QR, the
    r x r problem on ``(X - mean_x) B`` and ``(Y - mean_y) B`` gives ``W``, and
    ``R = B W B^T + (I - B B^T)`` (the identity on the rest). The objective only sees
    ``B^T R B``, a contraction maximised by W, so this R is an optimum of the full problem;
    it costs O(N^2 d) instead of an SVD of d x d (minutes at d = 8,192), and R is kept as
    its factors (``basis_``, ``core_``), never as a d x d matrix.

    Parameters
    ----------
    center : bool, default=True
        Remove each modality's mean before fitting and transforming.

    Attributes
    ----------
    rotation_ : ndarray of shape (d, d)
        R (formed from its factors when asked, in the span case).
    basis_ : ndarray of shape (d, r) or None
        B, in the span case (None when the d x d problem was solved).
    core_ : ndarray of shape (r, r) or None
        ``W - I``, in the span case, so that ``x R = x + (x B) core_ B^T``.
    mean_image_, mean_text_ : ndarray of shape (d,)
        Zeros when ``center=False``.
    """

    name = "procrustes"
    label = "Procrustes"
    menu_rank = 40
    params_info = (
        Param("center", "procrustes: do not remove each modality's mean", flag="--no-center",
              const=False),
    )
    summary = "orthogonal map fitted on the pairs (after centring each modality)"
    uses_pairing = True
    default_protocol = "held-out"

    def __init__(self, center: bool = True):
        self.center = center

    def _validate_parameters(self, n_pairs: int, dim: int) -> None:
        if not isinstance(self.center, (bool, np.bool_)):
            raise ValueError(f"procrustes: center must be True or False, got {self.center!r}.")

    def _fit(self, X: np.ndarray, Y: np.ndarray, progress: ProgressCallback) -> None:
        Xn, Yn = l2_normalize(X).astype(np.float64), l2_normalize(Y).astype(np.float64)
        mx = Xn.mean(0) if self.center else np.zeros(Xn.shape[1])
        my = Yn.mean(0) if self.center else np.zeros(Yn.shape[1])
        A, B = Xn - mx, Yn - my
        n, d = A.shape
        self._rotation = None
        self.basis_ = self.core_ = None
        if 2 * n < d:
            basis, _ = linalg.qr(np.vstack([A, B]).T, mode="economic", check_finite=False)
            W, _ = linalg.orthogonal_procrustes(A @ basis, B @ basis, check_finite=False)
            self.basis_ = basis.astype(np.float32)
            self.core_ = (W - np.eye(W.shape[0])).astype(np.float32)
        else:
            R, _ = linalg.orthogonal_procrustes(A, B, check_finite=False)
            self._rotation = R.astype(np.float32)
        self.mean_image_, self.mean_text_ = mx.astype(np.float32), my.astype(np.float32)

    @property
    def rotation_(self) -> np.ndarray:
        """R of shape (d, d); in the span case formed from ``basis_`` and ``core_`` on demand."""
        if self._rotation is None:
            if self.basis_ is None:
                raise AttributeError("rotation_: this ProcrustesGap is not fitted yet.")
            d = self.basis_.shape[0]
            return np.eye(d, dtype=np.float32) + (self.basis_ @ self.core_) @ self.basis_.T
        return self._rotation

    def _rotate(self, A: np.ndarray) -> np.ndarray:
        if self.basis_ is None:
            return A @ self._rotation
        return A + ((A @ self.basis_) @ self.core_) @ self.basis_.T

    def _transform_images(self, X: np.ndarray) -> np.ndarray:
        return l2_normalize(self._rotate(l2_normalize(X) - self.mean_image_))

    def _transform_texts(self, Y: np.ndarray) -> np.ndarray:
        return l2_normalize(l2_normalize(Y) - self.mean_text_)
