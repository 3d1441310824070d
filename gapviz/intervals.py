"""How sure a gap measure is: bootstrap intervals over pairs and paired comparisons.

Method
------
Percentile bootstrap over pairs (Efron & Tibshirani 1993, ch. 13): B resamples of the N pairs
drawn with replacement (seeded), every scalar measure recomputed on each, the interval is the
(alpha/2, 1 - alpha/2) order statistics of the B values. Default B = 200, level 95%.

What a resample recomputes, and the one approximation
-----------------------------------------------------
- Measures that are means over pairs or sums of rows are recomputed **exactly** for the
  resampled pairs, from weights w (how often each pair was drawn): paired distances, centroid
  gap, cones, pairs-vs-all, RMG (from the weighted sums of rows: O(B N d) in all), and,
  on request, the Fréchet distance and its centroid / distribution parts (a weighted
  covariance and an eigen-solve per resample: O(B (N d^2 + d^3)), seconds to minutes).
- Mixed-pool measures (ITR, TIR, IMR, TMR, R@K, NDCG@10, hubness) use **per-query outcomes
  computed once** on the full pool (top-1 modality, rank of the best other-modality item,
  rank of the partner, each query's k nearest items). A resample re-weights the *queries*;
  the pool they search stays the full set of 2N items. This is the usual way retrieval
  scores get intervals (queries are the sampling unit) and it costs O(B N); it leaves out
  the pool's own sampling noise (a resampled pool would hold duplicate items).
- ``separability`` (a classifier per resample), ``NDCG@10_mixbench`` (its own corpus and
  queries), ``frechet_raw`` and the Robin Hood, anti-hub and hub occurrence indices get no
  interval: resampled queries weigh the k-occurrence counts unevenly, which by itself makes
  the counts look more unequal (on 300 simulated pairs the Robin Hood index's 95 % interval
  lay wholly above its own estimate).

Paired comparison
-----------------
Two methods or models scored on the *same* pairs: the same resample of pairs is applied to
both and the difference recomputed; the p-value is the two-sided bootstrap test of a zero
difference by the recentred resampled differences (Hall & Wilson 1991):
p = (1 + #{|D*_b - D| >= |D|}) / (B + 1).
:func:`before_after_intervals` gives both sides' intervals and their comparison from one set of
resamples (the same pairs before a method and as its protocol scored them).
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import sparse

from .anatomy import NDCG_K, RMG_FLOOR, ndcg_gains
from .measures import GapReport, normalize_rows
from .threads import one_blas_thread

#: Cross-modal R@K always given intervals (what closing costs are read in), beside the report's K.
CROSSMODAL_KS = (1, 5)
#: Ratios (1 = no bias, heavy-tailed) are compared as log(a) - log(b).
RATIO_MEASURES = ("ITR", "TIR")
#: Default number of bootstrap resamples and interval level.
N_RESAMPLES = 200
LEVEL = 0.95


@dataclass
class PairOutcomes:
    """What the bootstrap needs of one embedding of N pairs, computed once.

    Attributes
    ----------
    Xn, Yn : ndarray of shape (N, d)
        Unit rows.
    paired_cos, paired_l2 : ndarray of shape (N,)
    best_text_rank, best_image_rank, i2t_rank, t2i_rank, i2t_rank_crossmodal,
    t2i_rank_crossmodal : ndarray of shape (N,)
        Per-query ranks from :class:`~gapviz.measures.GapReport`.
    ks : tuple of int
        K of the R@K measures.
    neighbours : ndarray of shape (2N, k), optional
        Each pool item's k nearest items (for hubness).
    """

    Xn: np.ndarray
    Yn: np.ndarray
    paired_cos: np.ndarray
    paired_l2: np.ndarray
    best_text_rank: np.ndarray
    best_image_rank: np.ndarray
    i2t_rank: np.ndarray
    t2i_rank: np.ndarray
    i2t_rank_crossmodal: np.ndarray
    t2i_rank_crossmodal: np.ndarray
    ks: tuple[int, ...] = ()
    neighbours: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.Xn.shape[0])

    @functools.cached_property
    def X64(self) -> np.ndarray:
        return self.Xn.astype(np.float64)

    @functools.cached_property
    def Y64(self) -> np.ndarray:
        return self.Yn.astype(np.float64)

    @classmethod
    def from_report(cls, report: GapReport, X: np.ndarray, Y: np.ndarray, *,
                    neighbours: np.ndarray | None = None) -> "PairOutcomes":
        """From ``measure_gap(X, Y)`` and the same X, Y (and, for hubness, the pool's neighbours)."""
        Xn, Yn = normalize_rows(X), normalize_rows(Y)
        if report.n != Xn.shape[0]:
            raise ValueError(f"report is of {report.n} pairs, X has {Xn.shape[0]}.")
        if neighbours is not None and neighbours.shape[0] != 2 * Xn.shape[0]:
            raise ValueError("neighbours must have one row per pool item (2N).")
        cos = np.asarray(report.paired_cosine, dtype=np.float64)  # float64, as the report's
        l2 = np.linalg.norm(Xn - Yn, axis=1).astype(np.float64)
        return cls(Xn, Yn, cos, l2, report.best_text_rank, report.best_image_rank, report.i2t_rank,
                   report.t2i_rank, report.i2t_rank_crossmodal, report.t2i_rank_crossmodal,
                   tuple(report.ks), neighbours)


def pair_outcomes(X: np.ndarray, Y: np.ndarray, *, report: GapReport | None = None,
                  hubness: bool = True) -> PairOutcomes:
    """The :class:`PairOutcomes` of N pairs, ready for :func:`bootstrap_ci` and
    :func:`paired_comparison` (e.g. one per column of a comparison).

    ``report``: ``measure_gap(X, Y)`` if already computed. ``hubness``: also find each pool
    item's 10 nearest items (one more pass over the mixed pool, about as long as
    ``measure_gap``); without it, hubness gets no interval.
    """
    from .anatomy import HUBNESS_K, nearest_neighbours
    from .measures import measure_gap

    Xn, Yn = normalize_rows(X), normalize_rows(Y)
    if report is None:
        report = measure_gap(Xn, Yn)
    neighbours = nearest_neighbours(np.vstack([Xn, Yn]), HUBNESS_K) if hubness else None
    return PairOutcomes.from_report(report, Xn, Yn, neighbours=neighbours)


def resample_weights(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """(B, N) counts: how often each pair is drawn in each of B resamples of N with replacement."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    flat = idx + (np.arange(n_resamples) * n)[:, None]
    return np.bincount(flat.ravel(), minlength=n_resamples * n).reshape(n_resamples, n).astype(np.float64)


def measures_from_weights(o: PairOutcomes, W: np.ndarray, *, frechet: bool = False) -> dict[str, np.ndarray]:
    """Every scalar measure for each row of weights ``W`` (B, N); all-ones gives the estimates.

    Keys as in ``GapReport.metrics`` plus cross-modal R@1 and R@5, ``RMG``, ``NDCG@10``,
    ``hubness`` (when the outcomes carry neighbours) and, with ``frechet``, ``frechet``,
    ``centroid``, ``distribution``.
    """
    W = np.atleast_2d(np.asarray(W, dtype=np.float64))
    tot = W.sum(1)

    # every mean over queries at once: one (B, N) @ (N, K) product
    columns: dict[str, np.ndarray] = {
        "_image_first": o.best_text_rank > 1,
        "_text_first": o.best_image_rank > 1,
        "IMR": o.best_image_rank,
        "TMR": o.best_text_rank,
    }
    for k in o.ks:
        columns[f"R@{k}"] = o.i2t_rank <= k
    for k in o.ks:
        columns[f"R@{k}_t2i"] = o.t2i_rank <= k
    for k in sorted(set(o.ks) | set(CROSSMODAL_KS)):
        columns[f"R@{k}_i2t_crossmodal"] = o.i2t_rank_crossmodal <= k
        columns[f"R@{k}_t2i_crossmodal"] = o.t2i_rank_crossmodal <= k
    columns["paired_cosine_distance"] = 1.0 - o.paired_cos
    columns["paired_l2"] = o.paired_l2
    columns["paired_l2_squared"] = o.paired_l2 ** 2
    columns["NDCG@10"] = ndcg_gains(o.i2t_rank, NDCG_K)
    V = np.column_stack([np.asarray(v, dtype=np.float64) for v in columns.values()])
    means = (W @ V) / tot[:, None]
    m_ = dict(zip(columns, means.T))

    out: dict[str, np.ndarray] = {
        "ITR": _ratio(m_.pop("_image_first")),
        "TIR": _ratio(m_.pop("_text_first")),
    }
    out.update(m_)
    # (B, d) weighted sums of rows. Resamples use a float32 product (twice as fast; relative
    # error about 1e-6, far inside any interval); the estimate (one row of weights) float64.
    if W.shape[0] == 1:
        SX, SY = W @ o.X64, W @ o.Y64
    else:
        W32 = W.astype(np.float32)
        SX = (W32 @ o.Xn).astype(np.float64)
        SY = (W32 @ o.Yn).astype(np.float64)
    out["all_cosine_distance"] = 1.0 - np.einsum("bj,bj->b", SX, SY) / tot ** 2
    out["centroid_gap"] = np.linalg.norm(SX - SY, axis=1) / tot
    pairs = tot * (tot - 1)
    cone_x = (np.einsum("bj,bj->b", SX, SX) - tot) / pairs
    cone_y = (np.einsum("bj,bj->b", SY, SY) - tot) / pairs
    out["image_cone"] = cone_x
    out["text_cone"] = cone_y
    m = out["paired_cosine_distance"] / 2.0
    m = np.where(m > 0, m, RMG_FLOOR)  # only m <= 0 is replaced, as in Schrodi et al.'s code
    out["RMG"] = m / (m + ((1.0 - cone_x) / 2.0 + (1.0 - cone_y) / 2.0) / 2.0)
    if o.neighbours is not None:
        out["hubness"] = _hubness_from_weights(o.neighbours, W)
    if frechet:
        out.update(_frechet_from_weights(o, W))
    return out


def _ratio(share_same: np.ndarray) -> np.ndarray:
    """same / other from the share of queries whose top-1 is of their own modality."""
    other = 1.0 - share_same
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(other > 0, share_same / np.where(other > 0, other, 1.0),
                        np.where(share_same > 0, np.inf, np.nan))


def _hubness_from_weights(neighbours: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Skewness of the k-occurrence counts with query q weighted by its pair's weight."""
    n2, k = neighbours.shape
    occ = sparse.csr_matrix((np.ones(n2 * k), neighbours.ravel(), np.arange(0, n2 * k + 1, k)),
                            shape=(n2, n2))
    Wq = np.hstack([W, W])  # pair i weights its image query (i) and its text query (N + i)
    counts = np.asarray((occ.T @ Wq.T).T)  # (B, 2N)
    dev = counts - counts.mean(axis=1, keepdims=True)
    m2 = np.mean(dev ** 2, axis=1)
    m3 = np.mean(dev ** 3, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(m2 > 0, m3 / np.where(m2 > 0, m2, 1.0) ** 1.5, 0.0)


def _frechet_from_weights(o: PairOutcomes, W: np.ndarray) -> dict[str, np.ndarray]:
    from scipy import linalg

    fr, cen = np.empty(W.shape[0]), np.empty(W.shape[0])
    for b, w in enumerate(W):
        stats = []
        for A in (o.X64, o.Y64):
            mu = w @ A / w.sum()
            C = A - mu
            cov = (C * w[:, None]).T @ C / (w.sum() - 1)
            stats.append((mu, cov))
        (mx, cx), (my, cy) = stats
        w_, V = linalg.eigh(cx)
        factor = V * np.sqrt(np.clip(w_, 0, None))
        tr = np.sqrt(np.clip(linalg.eigvalsh(factor.T @ cy @ factor), 0, None)).sum()
        cen[b] = float(np.sum((mx - my) ** 2))
        fr[b] = max(cen[b] + np.trace(cx) + np.trace(cy) - 2 * tr, 0.0)
    return {"frechet": fr, "centroid": cen, "distribution": np.maximum(fr - cen, 0.0)}


@dataclass
class IntervalReport:
    """Bootstrap intervals of every scalar measure.

    Attributes
    ----------
    estimate : dict of str to float
        Each measure on all pairs (unit weights).
    ci : dict of str to (float, float)
        Percentile interval at ``level``.
    n_resamples, level, seed : as passed
    seconds : float
        Wall time of the resampling.
    """

    estimate: dict[str, float]
    ci: dict[str, tuple[float, float]]
    n_resamples: int
    level: float
    seed: int
    seconds: float = 0.0
    samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def outside(self) -> list[str]:
        """Measures whose estimate lies outside its own interval.

        The percentile bootstrap assumes the resampled values scatter around the estimate.
        Statistics that resampling pushes one way (a norm of a mean near 0, such as a
        nearly closed centroid gap: duplicated pairs only add spread; hubness, whose duplicated
        queries add spread to the k-occurrence counts) can have every resample on one side;
        their interval then shows that bias and is not a range around the estimate.
        """
        return [k for k, (lo, hi) in self.ci.items()
                if not (lo <= self.estimate[k] <= hi) and not math.isnan(self.estimate[k])]

    def describe(self) -> dict[str, object]:
        """Method, resamples, level, seed and the measures whose estimate is outside its
        interval (:attr:`outside`), JSON-serialisable."""
        return {"method": "percentile bootstrap over pairs (mixed-pool measures: queries "
                          "resampled, pool fixed)",
                "n_resamples": self.n_resamples, "level": self.level, "seed": self.seed,
                "seconds": self.seconds, "estimate_outside": self.outside}


def bootstrap_ci(outcomes: PairOutcomes, *, n_resamples: int = N_RESAMPLES, level: float = LEVEL,
                 seed: int = 0, frechet: bool = False, keep_samples: bool = False) -> IntervalReport:
    """Seeded percentile-bootstrap intervals over pairs for every scalar measure.

    Parameters
    ----------
    outcomes : PairOutcomes
    n_resamples : int
        B. Cost O(B N d) for the row sums plus O(B N k) for hubness; at N = 10,000,
        d = 512, B = 200 about a second (see ``bench/bench_anatomy.py``).
    level : float
        Coverage of the interval, e.g. 0.95.
    seed : int
    frechet : bool
        Also the Fréchet distance and its centroid / distribution parts (slow: one weighted
        d x d covariance pair and eigen-solve per resample).
    keep_samples : bool
        Keep the B resampled values of each measure in ``samples``.
    """

    _check_bootstrap(n_resamples, level)
    t = time.perf_counter()
    n = outcomes.n
    with one_blas_thread(2):  # thin products: a BLAS thread pool would mostly spin
        estimate = {k: float(v[0]) for k, v in
                    measures_from_weights(outcomes, np.ones((1, n)), frechet=frechet).items()}
        samples = measures_from_weights(outcomes, resample_weights(n, n_resamples, seed), frechet=frechet)
    alpha = 1.0 - level
    ci = {k: _percentile_interval(v, alpha) for k, v in samples.items()}
    return IntervalReport(estimate, ci, n_resamples, level, seed, time.perf_counter() - t,
                          samples if keep_samples else {})


def paired_comparison(a: PairOutcomes, b: PairOutcomes, *, n_resamples: int = N_RESAMPLES,
                      alpha: float = 0.05, seed: int = 0,
                      measures: Sequence[str] | None = None) -> dict[str, dict[str, object]]:
    """Is measure(a) - measure(b) on the same pairs more than resampling noise?

    Parameters
    ----------
    a, b : PairOutcomes
        Two methods or models on the same N pairs (row i the same pair in both).
    n_resamples : int
        B resamples of pairs, the same resample applied to ``a`` and ``b``.
    alpha : float
        Significance level of ``significant`` and the interval's coverage 1 - alpha.
    measures : sequence of str, optional
        Which measures (default: every one both have).

    Returns
    -------
    dict
        measure -> ``{"a", "b", "difference", "scale", "ci": [low, high], "p_value",
        "resamples_used", "significant"}``. ITR and TIR are compared on a log scale
        (``difference`` = log(a / b)); resamples where a ratio is infinite are left out
        (``resamples_used``). ``p_value`` is nan (and ``significant`` False) when the
        difference itself is undefined (a ratio infinite on one side only). No correction for
        testing many measures at once.
    """
    if a.n != b.n:
        raise ValueError(f"a has {a.n} pairs, b has {b.n}: a paired comparison needs the same pairs.")
    _check_bootstrap(n_resamples, 1 - alpha)
    n = a.n

    W = resample_weights(n, n_resamples, seed)
    ones = np.ones((1, n))
    with one_blas_thread(2):
        ea, eb = measures_from_weights(a, ones), measures_from_weights(b, ones)
        sa, sb = measures_from_weights(a, W), measures_from_weights(b, W)
    names = [k for k in ea if k in eb] if measures is None else list(measures)
    return _compare({k: float(v[0]) for k, v in ea.items()},
                    {k: float(v[0]) for k, v in eb.items()}, sa, sb, names, alpha)


def _compare(ea: dict[str, float], eb: dict[str, float], sa: dict[str, np.ndarray],
             sb: dict[str, np.ndarray], names: Sequence[str], alpha: float) -> dict[str, dict[str, object]]:
    """:func:`paired_comparison`'s result from both sides' estimates and their resampled values
    (the same resamples of pairs, in the same order)."""
    out = {}
    for name in names:
        log = name in RATIO_MEASURES
        va, vb = float(ea[name]), float(eb[name])
        d = _difference(va, vb, log)
        ds = np.array([_difference(x, y, log) for x, y in zip(sa[name], sb[name])])
        ds = ds[np.isfinite(ds)]
        if not math.isfinite(d) or ds.size == 0:
            p, lo, hi = math.nan, math.nan, math.nan
        else:
            p = (1 + np.count_nonzero(np.abs(ds - d) >= abs(d))) / (ds.size + 1)
            lo, hi = _percentile_interval(ds, alpha)
        out[name] = {"a": va, "b": vb, "difference": d, "scale": "log" if log else "linear",
                     "ci": [lo, hi], "p_value": float(p), "resamples_used": int(ds.size),
                     "significant": bool(math.isfinite(p) and p < alpha)}
    return out


@dataclass
class BeforeAfter:
    """Bootstrap intervals of the same N pairs before and after a method, and their paired
    comparison (:func:`before_after_intervals`).

    Attributes
    ----------
    before, after : IntervalReport
        Each side's intervals, from the same resamples of pairs.
    comparison : dict
        measure -> :func:`paired_comparison`'s entry, ``a`` = after, ``b`` = before
        (``difference`` = after - before; log(after / before) for ITR and TIR).
    seconds : float
    """

    before: IntervalReport
    after: IntervalReport
    comparison: dict[str, dict[str, object]]
    seconds: float = 0.0


def before_after_intervals(before: PairOutcomes, after: PairOutcomes, *,
                           n_resamples: int = N_RESAMPLES, level: float = LEVEL, seed: int = 0,
                           measures: Sequence[str] | None = None) -> BeforeAfter:
    """Intervals of every measure before and after a method, and is the change more than noise?

    One set of B seeded resamples of the N pairs is drawn and applied to both sides, so each
    side's intervals are exactly :func:`bootstrap_ci`'s (same seed) and the comparison is
    :func:`paired_comparison`'s, from one pass instead of three.

    Parameters
    ----------
    before, after : PairOutcomes
        The same N pairs (row i the same pair) before the method and as the method's protocol
        scored them (held-out: each pair transformed by a fit that never saw it). The fit is
        held fixed: resampling the pairs does not refit the method, so the intervals leave out
        the fit's own variability.
    measures : sequence of str, optional
        Measures compared (default: every one both sides have); intervals cover every measure.
    """
    if before.n != after.n:
        raise ValueError(f"before has {before.n} pairs, after {after.n}: intervals before and "
                         "after a method need the same scored pairs.")

    _check_bootstrap(n_resamples, level)
    t = time.perf_counter()
    n = before.n
    W = resample_weights(n, n_resamples, seed)
    ones = np.ones((1, n))
    alpha = 1.0 - level
    reports, estimates, samples = [], [], []
    with one_blas_thread(2):
        for o in (before, after):
            t_side = time.perf_counter()
            e = {k: float(v[0]) for k, v in measures_from_weights(o, ones).items()}
            s = measures_from_weights(o, W)
            reports.append(IntervalReport(e, {k: _percentile_interval(v, alpha) for k, v in s.items()},
                                          n_resamples, level, seed, time.perf_counter() - t_side))
            estimates.append(e)
            samples.append(s)
    names = ([k for k in estimates[1] if k in estimates[0]] if measures is None
             else [k for k in measures if k in estimates[0] and k in estimates[1]])
    comparison = _compare(estimates[1], estimates[0], samples[1], samples[0], names, alpha)
    return BeforeAfter(reports[0], reports[1], comparison, time.perf_counter() - t)


def _difference(x: float, y: float, log: bool = False) -> float:
    if x == y:  # also inf == inf: no difference
        return 0.0
    if log:
        with np.errstate(divide="ignore"):
            return float(np.log(x) - np.log(y))  # inf when one side is inf or 0: left out
    return x - y


def _percentile_interval(values: np.ndarray, alpha: float) -> tuple[float, float]:
    """(alpha/2, 1 - alpha/2) order statistics, without interpolation (values may be inf)."""
    v = np.sort(np.asarray(values, dtype=np.float64)[~np.isnan(values)])
    if v.size == 0:
        return (math.nan, math.nan)
    lo = v[int(math.floor(alpha / 2 * v.size))]
    hi = v[min(v.size - 1, int(math.ceil((1 - alpha / 2) * v.size)) - 1)]
    return (float(lo), float(hi))


def _check_bootstrap(n_resamples: int, level: float) -> None:
    if n_resamples < 10:
        raise ValueError(f"n_resamples must be at least 10, got {n_resamples}.")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1 (e.g. 0.95), got {level}.")
