"""Score corrections: fixes that change similarities, not embeddings (no re-embedding).

Each one leaves the embeddings as they are and gives every (query, candidate) of the mixed
pool a corrected score ``a(q) (cos(q, c) + lam(q) w(c)) + b(q)``
(:class:`gapviz.score_terms.ScoreTerms`); the measures then rank on the corrected scores,
exactly (``gapviz.measures.measure_gap(..., scores=)``). A retrieval system adopts one as a
configuration change. Every statistic a correction needs is taken against *banks*: the fit
pairs' images and texts, never the scored ones. For a query of modality ``mq`` and a candidate
of modality ``mc`` (the block):

* ``score_zscore``: ``(cos - mu_B) / sigma_B`` with the mean and standard deviation of the
  block's cosines among the fit items (per-modality standardised similarities: the image-image,
  text-text and image-text blocks put on one scale).
* ``csls``: ``2 cos - r_mc(q) - r_mq(c)``, ``r_M(x)`` the mean cosine of x to its k nearest
  items of modality M in the bank (Conneau et al. 2018, "Word translation without parallel
  data"; MUSE's ``get_nn_avg_dist``, k = 10).
* ``qb_norm``: the inverted softmax ``exp(beta cos(q, c)) / sum_{b in bank_mq} exp(beta
  cos(b, c))`` (ranked by its logarithm), applied, with ``dynamic`` on, only to queries whose
  nearest pool item is in the *activation set*: the pool items that are among the k nearest of
  some bank query; other queries keep the cosine (Bogolin et al. 2022, QB-Norm, "dynamic
  inverted softmax"; ``ioanacroi/qb-norm``, beta = 20, k = 1).
* ``dbnorm``: both banks: ``exp((beta1 + beta2) cos) / (sum_{b in bank_mq} exp(beta1
  cos(b, c)) * sum_{g in bank_mc} exp(beta2 cos(g, c)))`` (Wang et al. 2023, "Balance Act",
  DBNorm with the inverted softmax; ``yimuwangcs/Better_Cross_Modal_Retrieval``. That code
  passes the gallery bank's own similarities where the test ones belong, so this follows the
  formula, as ``ppanzx/DBSN`` corrects it. Defaults beta1 = 50, beta2 = 1: DBSN's runs on
  CLIP image-text; the official function's signature defaults, beta1 = 1 / 1.99 and
  beta2 = 3, let the gallery bank's density outweigh the query's cosine on the demo
  (cross-modal R@1 0.435 -> 0.100), and remain a slider away).
* ``nnn``: ``cos - alpha * mean of the k largest cos(b, c), b in bank_mq`` (Chowdhury et al.
  2024, Nearest Neighbor Normalization; ``multimodal-interpretability/nnn``, its README's
  alpha = 0.75, k = 128).

The statistics are float64 (the banks' rows widened and normalised, products in float64), so a
float64 computation of each formula gives the same ranks (tested).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from scipy.special import logsumexp

from ..measures import _exact_source, _inv_norms64
from ..score_terms import ScoreTerms
from .base import GapMethod, Param, ProgressCallback, Slider, l2_normalize, require_finite

#: Most bank items per modality (a seeded sample of the fit pairs beyond it): the corrections'
#: statistics cost (scored items) x (bank) products.
BANK_MAX = 10_000
#: Rows of one float64 block of similarities against a bank (memory: rows x bank x 8 bytes).
_ROWS = 1024


def unit64(A: np.ndarray) -> np.ndarray:
    """Rows widened to float64 and scaled to unit norm (the float64 measures' own rule)."""
    A = _exact_source(np.asarray(A))
    return np.asarray(A, dtype=np.float64) * _inv_norms64(A)[:, None]


def bank_reduce(A: np.ndarray, bank: np.ndarray, reduce) -> np.ndarray:
    """``reduce(A_block @ bank.T)`` (a row-wise reduction to a vector) over blocks of rows of
    ``A``: statistics of every row against a bank without the full matrix."""
    out = np.empty(A.shape[0])
    for i0 in range(0, A.shape[0], _ROWS):
        out[i0:i0 + _ROWS] = reduce(A[i0:i0 + _ROWS] @ bank.T)
    return out


def mean_top_k(k: int):
    """Row-wise mean of the k largest values (all of them when a row has fewer)."""
    def reduce(S: np.ndarray) -> np.ndarray:
        kk = min(k, S.shape[1])
        if not kk:
            return np.zeros(S.shape[0])
        return np.partition(S, S.shape[1] - kk, axis=1)[:, S.shape[1] - kk:].mean(axis=1)
    return reduce


def top_k_indices(S: np.ndarray, k: int) -> np.ndarray:
    """Each row's k largest entries' columns, equal values by lower column (as a stable sort
    of the whole row would give), without sorting the row."""
    if k == 1:
        return np.argmax(S, axis=1)[:, None]  # the first maximum
    kth = -np.partition(-S, k - 1, axis=1)[:, k - 1:k]  # the k-th largest value per row
    out = np.empty((S.shape[0], k), np.int64)
    for r in range(S.shape[0]):
        above = np.flatnonzero(S[r] > kth[r])
        tied = np.flatnonzero(S[r] == kth[r])[:k - above.size]
        cols = np.r_[above, tied]
        out[r] = cols[np.argsort(-S[r, cols], kind="stable")]
    return out


def _bank_top(B: np.ndarray, Z: np.ndarray, k: int) -> np.ndarray:
    """:func:`top_k_indices` of ``B @ Z.T`` (float64 unit rows). For k = 1 the products run in
    float32 and only rows with a rival within twice the float32 error of their maximum are
    settled in float64, so the result is the float64 one."""
    if k != 1:
        return top_k_indices(B @ Z.T, k)
    from ..measures import float32_cosine_bound

    S = B.astype(np.float32) @ Z.astype(np.float32).T
    best = S.max(axis=1, keepdims=True)
    out = np.argmax(S, axis=1)
    # rounding the float64 unit rows to float32 adds one more rounding per coordinate
    close = np.count_nonzero(S >= best - 4 * float32_cosine_bound(Z.shape[1]), axis=1) > 1
    for r in np.flatnonzero(close):
        out[r] = np.argmax(Z @ B[r])
    return out[:, None]


def log_sum_exp(beta: float):
    """Row-wise ``log sum exp(beta * value)`` (stable)."""
    return lambda S: logsumexp(beta * S, axis=1)


class ScoreCorrection(GapMethod):
    """Base of the score corrections: the fit keeps the banks, the embeddings pass unchanged,
    :meth:`score_terms` gives the corrected scores of a scored pool.

    Attributes
    ----------
    bank_images_, bank_texts_ : ndarray of shape (M, d), float64
        The fit pairs' unit rows (at most :data:`BANK_MAX`, a seeded sample beyond).
    """

    #: The embeddings do not move: only scores change.
    corrects_scores: ClassVar[bool] = True
    # A bank holding the scored items normalises a query by its own pair (inverted softmax
    # divides by it, CSLS and NNN average it in): scored on its fit pairs, it reads the pairing.
    uses_pairing = True
    leak_reason = ("normalises every score by statistics of its fit items, so scored on those "
                   "very items each query's own pair is in the bank it is normalised by")
    default_protocol = "held-out"
    menu_rank = 60

    def _fit(self, X: np.ndarray, Y: np.ndarray, progress: ProgressCallback) -> None:
        n = X.shape[0]
        keep = np.arange(n)
        if n > BANK_MAX:
            keep = np.sort(np.random.default_rng([n, 5]).choice(n, BANK_MAX, replace=False))
        self.bank_images_ = unit64(X[keep])
        self.bank_texts_ = unit64(Y[keep])
        self._fit_banks(progress)

    def _fit_banks(self, progress: ProgressCallback) -> None:
        """Statistics of the banks alone (override as needed)."""

    def _transform_images(self, X: np.ndarray) -> np.ndarray:
        return l2_normalize(X)

    def _transform_texts(self, Y: np.ndarray) -> np.ndarray:
        return l2_normalize(Y)

    def banks(self) -> tuple[np.ndarray, np.ndarray]:
        return self.bank_images_, self.bank_texts_

    def score_terms(self, X: np.ndarray, Y: np.ndarray,
                    rows: np.ndarray | None = None) -> ScoreTerms:
        """The corrected scores' terms of the pool of pairs ``(X, Y)``, for pairs ``rows``.

        Parameters
        ----------
        X, Y : ndarray of shape (N, d)
            The scored pairs (the pool; dynamic corrections read all of it).
        rows : ndarray of int, optional
            The pairs whose terms are wanted (default all): a held-out fold's.

        Returns
        -------
        ScoreTerms
            Of ``len(rows)`` pairs.
        """
        self._validate_rows(X)
        self._validate_rows(Y)
        Xq, Yq = unit64(X), unit64(Y)
        rows = np.arange(Xq.shape[0]) if rows is None else np.asarray(rows)
        terms = self._terms((Xq, Yq), rows)
        return ScoreTerms(*terms, name=self.describe_short())

    def describe_short(self) -> str:
        from . import describe_run

        return describe_run(self.name, {p.name: getattr(self, p.name) for p in self.params_info
                                        if p.slider is not None})

    def _terms(self, pool: tuple[np.ndarray, np.ndarray], rows: np.ndarray):
        """``(scale, lam, bias, offset)``, each of shape (2, 2, len(rows))."""
        raise NotImplementedError

    # -- helpers --------------------------------------------------------------------------
    @staticmethod
    def _blank(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return np.ones((2, 2, m)), np.zeros((2, 2, m)), np.zeros((2, 2, m)), np.zeros((2, 2, m))


class ZScoreScores(ScoreCorrection):
    """Per-modality standardised similarities: each block's cosines z-scored with the block's
    mean and standard deviation among the fit items (image-image and text-text without an
    item's similarity to itself). Ranks within a block do not change; the mixed pool compares
    an image's and a text's standing in their own blocks instead of their raw cosines.

    Attributes
    ----------
    block_mean_, block_std_ : ndarray of shape (2, 2)
        ``[query modality, candidate modality]``.
    """

    name = "score_zscore"
    label = "Z-scored similarities"
    summary = "z-score the image-image, text-text and image-text similarities (fit items' blocks)"

    def _fit_banks(self, progress: ProgressCallback) -> None:
        banks = self.banks()
        m = banks[0].shape[0]
        if m < 2:
            raise ValueError("score_zscore needs at least 2 fit pairs (a spread of similarities).")
        # Every block's sums without its m x m cosines: sum_ij a_i.b_j = (sum a).(sum b) and
        # sum_ij (a_i.b_j)^2 = <A^T A, B^T B>_F (d x d Gram matrices); a within block leaves
        # out its diagonal, m cosines of 1 (unit rows).
        sums = [A.sum(axis=0) for A in banks]
        grams = [A.T @ A for A in banks]
        mean, std = np.zeros((2, 2)), np.zeros((2, 2))
        for mq in (0, 1):
            for mc in (0, 1):
                total = float(sums[mq] @ sums[mc])
                total2 = float(np.sum(grams[mq] * grams[mc]))
                count = m * m
                if mq == mc:
                    total, total2, count = total - m, total2 - m, count - m
                mean[mq, mc] = total / count
                std[mq, mc] = np.sqrt(max(total2 / count - mean[mq, mc] ** 2, 0.0))
        if not (std > 0).all():
            raise ValueError("score_zscore: a block of the fit items' similarities has no spread "
                             "(all equal); there is nothing to standardise by.")
        self.block_mean_, self.block_std_ = mean, std

    def _terms(self, pool, rows):
        scale, lam, bias, offset = self._blank(len(rows))
        scale *= (1.0 / self.block_std_)[:, :, None]
        bias += (-self.block_mean_ / self.block_std_)[:, :, None]
        return scale, lam, bias, offset


class CSLSScores(ScoreCorrection):
    """Cross-domain similarity local scaling: ``2 cos(q, c) - r_mc(q) - r_mq(c)``, ``r_M(x)``
    the mean cosine of x to its k nearest bank items of modality M (Conneau et al. 2018).

    Parameters
    ----------
    k : int, default=10
        Neighbours in the bank (MUSE's ``csls_knn_10``).
    """

    name = "csls"
    label = "CSLS"
    summary = "2 cos - r(q) - r(c), r the mean cosine to k bank neighbours (Conneau et al. 2018)"
    params_info = (
        Param("k", "csls / nnn: neighbours in the bank (csls default 10, nnn 128); qb_norm: "
              "top-k of each bank query forming the activation set (default 1)",
              flag="--bank-k", type=int, short="k",
              slider=Slider("Bank neighbours k", lo=1, hi=200, step=1, key="bank_k",
                            help="How many nearest bank items each statistic averages.")),
    )

    def __init__(self, k: int = 10):
        self.k = k

    def _validate_parameters(self, n_pairs: int, dim: int) -> None:
        _check_k(self, n_pairs)

    def _terms(self, pool, rows):
        scale, lam, bias, offset = self._blank(len(rows))
        banks = self.banks()
        reduce = mean_top_k(int(self.k))
        for m in (0, 1):
            item = pool[m][rows]
            r = [bank_reduce(item, banks[other], reduce) for other in (0, 1)]  # r_M(item)
            for other in (0, 1):
                # item m as a query facing modality `other`: b = -r_other(q)
                bias[m, other] = -r[other]
                # item m as a candidate of a query of modality `other`: w = -r_other(c) / 2
                offset[other, m] = -r[other] / 2.0
        scale *= 2.0
        lam += 1.0
        return scale, lam, bias, offset


class QBNormScores(ScoreCorrection):
    """Querybank normalisation with the (dynamic) inverted softmax (Bogolin et al. 2022).

    A candidate c's score for a query q of modality mq is ``exp(beta cos(q, c)) / sum_{b in
    bank_mq} exp(beta cos(b, c))``; ranked by its logarithm, ``beta cos - LSE_b``. With
    ``dynamic``, only queries whose nearest pool item is in the activation set (every pool item
    among the k nearest of some bank query of the query's modality) are normalised; the others
    keep the cosine, as ``ioanacroi/qb-norm`` does.

    Parameters
    ----------
    beta : float, default=20
        Inverse temperature.
    k : int, default=1
        Each bank query's nearest pool items that join the activation set.
    dynamic : bool, default=True
        The dynamic inverted softmax (False: every query normalised).
    """

    name = "qb_norm"
    label = "QB-Norm"
    summary = ("querybank normalisation, dynamic inverted softmax (Bogolin et al. 2022): "
               "exp(beta cos) / sum over bank queries")
    params_info = (
        Param("beta", "qb_norm: inverse temperature of the inverted softmax (default 20)",
              flag="--beta", type=float, short="beta",
              slider=Slider("Inverse temperature beta", lo=1.0, hi=100.0, step=1.0,
                            key="qb_beta",
                            help="Larger: the bank's hubs are penalised harder.")),
        Param("k", CSLSScores.params_info[0].help, flag="--bank-k", type=int, short="k"),
        Param("dynamic", "qb_norm: normalise only queries whose nearest item is in the "
              "activation set (default on)", flag="--no-dynamic", const=False),
    )

    def __init__(self, beta: float = 20.0, k: int = 1, dynamic: bool = True):
        self.beta = beta
        self.k = k
        self.dynamic = dynamic

    def _validate_parameters(self, n_pairs: int, dim: int) -> None:
        require_finite(self, "beta")
        if not self.beta > 0:
            raise ValueError(f"qb_norm: beta must be positive, got {self.beta}.")
        _check_k(self, n_pairs)

    def _terms(self, pool, rows):
        scale, lam, bias, offset = self._blank(len(rows))
        banks = self.banks()
        beta = float(self.beta)
        for mc in (0, 1):
            item = pool[mc][rows]
            for mq in (0, 1):
                offset[mq, mc] = -bank_reduce(item, banks[mq], log_sum_exp(beta)) / beta
        gate = (self._gate(pool, rows) if self.dynamic
                else np.ones((2, len(rows)), bool))
        for mq in (0, 1):
            on = gate[mq][None, :]
            scale[mq] = np.where(on, beta, 1.0)
            lam[mq] = np.where(on, 1.0, 0.0)
        return scale, lam, bias, offset

    def _gate(self, pool, rows) -> np.ndarray:
        """(2, len(rows)) bool: whether each row's image (text) query is normalised."""
        Z = np.vstack(pool)
        n = pool[0].shape[0]
        k = min(int(self.k), Z.shape[0])
        gate = np.zeros((2, len(rows)), bool)
        for mq in (0, 1):
            active = np.zeros(Z.shape[0], bool)
            bank = self.banks()[mq]
            for i0 in range(0, bank.shape[0], _ROWS):
                active[_bank_top(bank[i0:i0 + _ROWS], Z, k).ravel()] = True
            queries = rows + mq * n
            for i0 in range(0, len(queries), _ROWS):
                q = queries[i0:i0 + _ROWS]
                S = Z[q] @ Z.T
                S[np.arange(len(q)), q] = -np.inf  # a query is not its own result
                gate[mq, i0:i0 + _ROWS] = active[np.argmax(S, axis=1)]
        return gate


class DBNormScores(ScoreCorrection):
    """Dual-bank normalisation (Wang et al. 2023, DBNorm with the inverted softmax):
    ``exp((beta1 + beta2) cos(q, c)) / (sum_{b in bank_mq} exp(beta1 cos(b, c)) * sum_{g in
    bank_mc} exp(beta2 cos(g, c)))``, ranked by its logarithm: the query bank (the query's
    modality) and the gallery bank (the candidate's own modality) both penalise hubs.

    Parameters
    ----------
    beta1 : float, default=50
        Inverse temperature of the query bank (DBSN's CLIP image-text run; the official
        code's signature default is 1 / 1.99).
    beta2 : float, default=1
        Inverse temperature of the gallery bank (DBSN's run; official signature: 3).
    """

    name = "dbnorm"
    label = "DBNorm"
    summary = "dual-bank inverted softmax over query and gallery banks (Wang et al. 2023)"
    params_info = (
        Param("beta1", "dbnorm: inverse temperature of the query bank (default 50)",
              flag="--beta1", type=float, short="beta1",
              slider=Slider("Query-bank beta1", lo=0.0, hi=100.0, step=0.5, key="db_beta1")),
        Param("beta2", "dbnorm: inverse temperature of the gallery bank (default 1)",
              flag="--beta2", type=float, short="beta2",
              slider=Slider("Gallery-bank beta2", lo=0.0, hi=100.0, step=0.5, key="db_beta2")),
    )

    def __init__(self, beta1: float = 50.0, beta2: float = 1.0):
        self.beta1 = beta1
        self.beta2 = beta2

    def _validate_parameters(self, n_pairs: int, dim: int) -> None:
        require_finite(self, "beta1", "beta2")
        if not (self.beta1 >= 0 and self.beta2 >= 0 and self.beta1 + self.beta2 > 0):
            raise ValueError(f"dbnorm: beta1 and beta2 must be >= 0 and not both 0, got "
                             f"{self.beta1} and {self.beta2}.")

    def _terms(self, pool, rows):
        scale, lam, bias, offset = self._blank(len(rows))
        banks = self.banks()
        b1, b2 = float(self.beta1), float(self.beta2)
        total = b1 + b2
        for mc in (0, 1):
            item = pool[mc][rows]
            gallery = bank_reduce(item, banks[mc], log_sum_exp(b2)) if b2 else 0.0
            for mq in (0, 1):
                query = bank_reduce(item, banks[mq], log_sum_exp(b1)) if b1 else 0.0
                offset[mq, mc] = -(query + gallery) / total
        scale *= total
        lam += 1.0
        return scale, lam, bias, offset


class NNNScores(ScoreCorrection):
    """Nearest neighbour normalisation (Chowdhury et al. 2024): ``cos(q, c) - alpha * b(c)``,
    ``b(c)`` the mean of the k largest cosines between c and the bank items of the query's
    modality.

    Parameters
    ----------
    alpha : float, default=0.75
    k : int, default=128
    """

    name = "nnn"
    label = "NNN"
    summary = "cos - alpha * mean of the k largest bank-query cosines (Chowdhury et al. 2024)"
    params_info = (
        Param("alpha", "nnn: weight of the bias (default 0.75)", flag="--alpha", type=float,
              short="alpha",
              slider=Slider("Bias weight alpha", lo=0.0, hi=1.0, step=0.05, key="nnn_alpha")),
        Param("k", CSLSScores.params_info[0].help, flag="--bank-k", type=int, short="k",
              slider=Slider("Bank neighbours k", lo=1, hi=256, step=1, key="nnn_k")),
    )

    def __init__(self, alpha: float = 0.75, k: int = 128):
        self.alpha = alpha
        self.k = k

    def _validate_parameters(self, n_pairs: int, dim: int) -> None:
        require_finite(self, "alpha")
        _check_k(self, n_pairs)

    def _terms(self, pool, rows):
        scale, lam, bias, offset = self._blank(len(rows))
        banks = self.banks()
        reduce = mean_top_k(int(self.k))
        for mc in (0, 1):
            item = pool[mc][rows]
            for mq in (0, 1):
                offset[mq, mc] = -float(self.alpha) * bank_reduce(item, banks[mq], reduce)
        lam += 1.0
        return scale, lam, bias, offset


def _check_k(method: GapMethod, n_pairs: int) -> None:
    k = method.k
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{method.name}: k must be an integer >= 1, got {k!r}.")


def is_score_correction(method: Any) -> bool:
    """Whether a method (class, instance or registry name) corrects scores, not embeddings."""
    if isinstance(method, str):
        from . import METHODS

        method = METHODS.get(method)
    cls = method if isinstance(method, type) else type(method)
    return bool(getattr(cls, "corrects_scores", False))
