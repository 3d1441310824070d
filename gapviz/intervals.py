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

What closing buys
-----------------
:func:`gain_intervals` gives the gains of :mod:`gapviz.closing_gains` intervals from the same
resamples: the requested-modality rate and substitution re-weight their per-query outcomes
(queries resampled, pool fixed), the probes' accuracy re-weights the scored items (each probe
held fixed), and ARI, NMI, V-measure and modality purity are recomputed from the weighted
table of classes against k-means clusters (the partition held fixed: k-means is not rerun per
resample). Two corrections keep repeated pairs from faking agreement: the ARI leaves out the
pairs formed by an item and its own repeat (they always agree), and NMI and V-measure, whose
plug-in mutual information a resample with repeats inflates, get basic bootstrap intervals
(the percentile interval reflected about the estimate; Davison & Hinkley 1997), clipped to
[0, 1].

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
from typing import Any, Mapping, Sequence

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
        if report.image_of is not None:
            raise ValueError(f"intervals resample pairs, one caption per image; these numbers "
                             f"use {report.convention}. Load the data with one caption per "
                             "image (the first or a random one) for intervals.")
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
             sb: dict[str, np.ndarray], names: Sequence[str], alpha: float,
             basic: Sequence[str] = ()) -> dict[str, dict[str, object]]:
    """:func:`paired_comparison`'s result from both sides' estimates and their resampled values
    (the same resamples of pairs, in the same order); measures in ``basic`` get the basic
    bootstrap interval of the difference (:func:`_basic_interval`)."""
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
            lo, hi = (_basic_interval(d, ds, alpha) if name in basic
                      else _percentile_interval(ds, alpha))
        out[name] = {"a": va, "b": vb, "difference": d, "scale": "log" if log else "linear",
                     "ci": [lo, hi], "p_value": float(p), "resamples_used": int(ds.size),
                     "significant": bool(math.isfinite(p) and p < alpha)}
    return out


def noise_verdict(entry: Mapping[str, Any]) -> str:
    """A paired comparison's entry (:func:`paired_comparison`, or one carrying its ``p_value``
    and ``significant``) in words: "beyond noise", "within noise", or "not tested" when its
    p-value is undefined (a ratio infinite on one side only, or no resample left to compare),
    which decides nothing either way."""
    if not math.isfinite(float(entry["p_value"])):
        return "not tested"
    return "beyond noise" if entry["significant"] else "within noise"


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
    return _before_after(before, after, measures_from_weights, n_resamples, level, seed,
                         measures)


def _before_after(before, after, measure, n_resamples: int, level: float, seed: int,
                  measures: Sequence[str] | None,
                  basic: dict[str, tuple[float, float]] | None = None) -> BeforeAfter:
    """Both sides' intervals and their comparison from one set of resamples; ``measure(o, W)``
    gives every measure of outcomes ``o`` for each row of weights ``W``. ``after`` None: the
    before side only (``after`` and ``comparison`` of the result are then empty). Measures in
    ``basic`` ({key: the range of its values}) get basic bootstrap intervals
    (:func:`_basic_interval`; their differences unclipped), the others percentile ones."""
    basic = basic or {}
    if after is not None and before.n != after.n:
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
        for o in (before, after) if after is not None else (before,):
            t_side = time.perf_counter()
            e = {k: float(v[0]) for k, v in measure(o, ones).items()}
            s = measure(o, W)
            ci = {k: (_basic_interval(e[k], v, alpha, basic[k]) if k in basic
                      else _percentile_interval(v, alpha)) for k, v in s.items()}
            reports.append(IntervalReport(e, ci, n_resamples, level, seed,
                                          time.perf_counter() - t_side))
            estimates.append(e)
            samples.append(s)
    if after is None:
        return BeforeAfter(reports[0], IntervalReport({}, {}, n_resamples, level, seed), {},
                           time.perf_counter() - t)
    names = ([k for k in estimates[1] if k in estimates[0]] if measures is None
             else [k for k in measures if k in estimates[0] and k in estimates[1]])
    comparison = _compare(estimates[1], estimates[0], samples[1], samples[0], names, alpha,
                          basic)
    return BeforeAfter(reports[0], reports[1], comparison, time.perf_counter() - t)


# ---------------------------------------------------------------------------------------------
# what closing buys (gapviz.closing_gains)
# ---------------------------------------------------------------------------------------------
#: Gains whose intervals are basic bootstrap intervals, with the range of their values: the
#: plug-in mutual information of a resample with repeated pairs sits above the sample's own
#: (on the simulated demo raw, 20 classes by 20 clusters, every resample's V-measure lay above
#: the estimate, 0.024-0.029 against 0.014), so a percentile interval would show that bias
#: rather than a range around the value. The basic interval corrects it, and so can lie below
#: a small estimate that is mostly bias.
BASIC_INTERVAL_GAINS = {"kmeans_nmi": (0.0, 1.0), "kmeans_v_measure": (0.0, 1.0)}


def gain_intervals(before, after=None, *, n_resamples: int = N_RESAMPLES, level: float = LEVEL,
                   seed: int = 0) -> BeforeAfter:
    """Intervals of what closing buys before and after a method, and their comparison.

    The same B seeded resamples of the N pairs (:func:`resample_weights`) for both sides, as
    :func:`before_after_intervals`. What a resample recomputes:

    - requested-modality rate and substitution: the per-query outcomes re-weighted (queries
      resampled, the pool searched kept whole, as for every mixed-pool measure);
    - the probes' accuracy: the scored items re-weighted, each probe held fixed (not refitted);
    - ARI, NMI, V-measure and modality purity: recomputed exactly from the contingency table of
      classes against clusters with each pair's image and text counted as often as the pair
      was drawn; the k-means partition is held fixed (rerunning k-means B times would take
      minutes), so the intervals leave out k-means' own variability.

    Parameters
    ----------
    before, after : gapviz.closing_gains.GainOutcomes
        The same N pairs before the method and as its protocol scored them; ``after`` None
        gives the before side only.
    """
    return _before_after(before, after, gain_measures_from_weights, n_resamples, level, seed,
                         None, BASIC_INTERVAL_GAINS)


def gain_measures_from_weights(o, W: np.ndarray) -> dict[str, np.ndarray]:
    """Every gain of :class:`gapviz.closing_gains.GainOutcomes` ``o`` for each row of pair
    weights ``W`` (B, N); all-ones gives :meth:`~gapviz.closing_gains.GainOutcomes.estimates`
    (up to rounding)."""
    W = np.atleast_2d(np.asarray(W, dtype=np.float64))
    tot = W.sum(1)
    columns = {"requested_modality_i2t": o.requested_i2t,
               "requested_modality_t2i": o.requested_t2i}
    if o.classes is not None:
        columns["substitution_i2t"] = o.substitution_i2t
        columns["substitution_t2i"] = o.substitution_t2i
        if o.probe_i2t is not None:
            columns["probe_i2t"] = o.probe_i2t
            columns["probe_t2i"] = o.probe_t2i
    V = np.column_stack([np.asarray(v, dtype=np.float64) for v in columns.values()])
    out = dict(zip(columns, ((W @ V) / tot[:, None]).T))

    k = o.n_clusters
    per_image = _one_hot(o.cluster_image, k)  # (N, k)
    per_text = _one_hot(o.cluster_text, k)
    images, texts = W @ per_image, W @ per_text  # (B, k) weighted items per cluster
    total = images + texts
    with np.errstate(invalid="ignore"):
        pure = np.where(total > 0, np.maximum(images, texts) > 0.9 * total, False)
        out["modality_purity"] = pure.sum(1) / (total > 0).sum(1)
    if o.classes is not None:
        c = len(o.class_names)
        cells = (_one_hot(o.classes * k + o.cluster_image, c * k)
                 + _one_hot(o.classes * k + o.cluster_text, c * k))
        tables = (W @ cells).reshape(-1, c, k)  # (B, classes, clusters)
        # ordered pairs of two draws of the same item (a pair drawn w times gives its image and
        # its text w (w - 1) each): always in agreement, they are left out of the ARI's pairs
        copies = 2.0 * (W * (W - 1.0)).sum(1)
        out.update(_agreement(tables, copies))
    return out


def _one_hot(index: np.ndarray, width: int) -> sparse.csr_matrix:
    n = index.shape[0]
    return sparse.csr_matrix((np.ones(n), (np.arange(n), np.asarray(index))), shape=(n, width))


def _agreement(tables: np.ndarray, copies: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """ARI, NMI (geometric mean) and V-measure of each contingency table (B, classes,
    clusters), as scikit-learn computes them from the labels the table counts (its special
    cases included). ``copies`` (B,): ordered pairs of two copies of one item, left out of the
    ARI's agreeing pairs (0 for a table of distinct items: scikit-learn's value)."""
    n = tables.sum((1, 2))
    a = tables.sum(2)  # class sizes
    b = tables.sum(1)  # cluster sizes
    sq = (tables ** 2).sum((1, 2))
    # scikit-learn's pair confusion matrix (ordered pairs of distinct draws), less the copies
    c11 = sq - n - (0.0 if copies is None else copies)
    c01 = (b ** 2).sum(1) - sq
    c10 = (a ** 2).sum(1) - sq
    c00 = n ** 2 - c01 - c10 - sq
    tp, fp, fn, tn = c11, c01, c10, c00
    with np.errstate(divide="ignore", invalid="ignore"):
        ari = np.where((fn == 0) & (fp == 0), 1.0,
                       2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)))

        def entropy(sizes):
            p = sizes / n[:, None]
            return -np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(1)

        h_c, h_k = entropy(a), entropy(b)
        pij = tables / n[:, None, None]
        outer = (a[:, :, None] * b[:, None, :]) / (n ** 2)[:, None, None]
        filled = pij > 0
        mi = np.where(filled, pij * np.log(np.where(filled, pij, 1.0)
                                           / np.where(filled, outer, 1.0)), 0.0).sum((1, 2))
        mi = np.maximum(mi, 0.0)
        homogeneity = np.where(h_c > 0, mi / h_c, 1.0)
        completeness = np.where(h_k > 0, mi / h_k, 1.0)
        hc = homogeneity + completeness
        v = np.where(hc > 0, 2.0 * homogeneity * completeness / np.where(hc > 0, hc, 1.0), 0.0)
        single = ((a > 0).sum(1) == 1) & ((b > 0).sum(1) == 1)
        nmi = np.where(single, 1.0, np.where(mi > 0, mi / np.sqrt(h_c * h_k), 0.0))
    return {"kmeans_ari": ari, "kmeans_nmi": nmi, "kmeans_v_measure": v}


def _difference(x: float, y: float, log: bool = False) -> float:
    if x == y:  # also inf == inf: no difference
        return 0.0
    if log:
        with np.errstate(divide="ignore"):
            return float(np.log(x) - np.log(y))  # inf when one side is inf or 0: left out
    return x - y


def _basic_interval(estimate: float, values: np.ndarray, alpha: float,
                    bounds: tuple[float, float] = (-math.inf, math.inf)) -> tuple[float, float]:
    """Basic bootstrap interval (Davison & Hinkley 1997, section 5.2): the percentile
    interval reflected about the estimate, (2 t - q_hi, 2 t - q_lo), clipped to the range
    ``bounds`` the measure can take. It corrects a plug-in statistic's bias, which resampling
    repeats: the resampled values sit above (or below) the estimate by about as much as the
    estimate sits from the truth."""
    lo, hi = _percentile_interval(values, alpha)
    if not math.isfinite(estimate):
        return (math.nan, math.nan)
    return (float(np.clip(2.0 * estimate - hi, *bounds)),
            float(np.clip(2.0 * estimate - lo, *bounds)))


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
