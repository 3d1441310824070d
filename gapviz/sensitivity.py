"""How much of a number is the model and how much the pool: sweeps over pool size and captions.

Mixed-pool measures move with the pool's size and make-up: ITR and R@K change with N by
construction, and Huh et al.'s mutual-kNN alignment falls as the pool grows ("Back into
Plato's Cave", arXiv 2604.18572, shows it from 1K to 15M items). A sweep measures every gap
measure on seeded subsamples of the pairs, from 250 up to all of them, several draws per size,
and (when images have several captions) with the first, a random or all captions per image, so
a reader sees which numbers belong to the model and which to the pool.

- **Pool-size sweep** (:func:`pool_size_sweep`): sizes double from ``SWEEP_START`` (250) up to
  N, the last being N itself (one draw: every draw of all pairs is the same); ``draws`` seeded
  subsamples per smaller size (with groups: of whole images, all their captions). Each draw is
  one :func:`gapviz.measures.measure_gap` (exact ranks) plus the mutual-kNN alignment. Per
  size: the mean and the range over the draws. A measure is flagged as *drifting with N* when
  the mean of its draws at the smallest size differs from its value on all pairs beyond
  sampling: a two-sided one-sample t-test over those draws at p < 0.05 (an unbiased measure,
  a mean over pairs, is flagged about 5% of the time by chance; one that moves with N, such
  as R@K or mutual kNN, every time).
- **Caption sweep** (:func:`caption_sweep`, pairs with several captions per image): every
  measure with the first caption of each image, one drawn at random (seeded), and all of them
  (any caption counts).
- **Mutual-kNN alignment** (:func:`mutual_knn_alignment`; Huh et al. 2024, "The Platonic
  Representation Hypothesis", ``AlignmentMetrics.mutual_knn`` of ``minyoungg/platonic-rep``):
  for each pair, the share of its image's k nearest images (cosine, itself left out) whose
  texts are among its text's k nearest texts, averaged; k = 10. With several captions per
  image it takes each image with its first caption.

Cost: sizes double, so the draws below N together cost about ``draws / 3`` of the full pass
(``sum_k 4^-k``): with 3 draws, the whole sweep is about 2x one measure pass plus the
alignment's two within-modality neighbour passes per draw.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .anatomy import relative_modality_gap
from .measures import image_groups_of, measure_gap, rows_of_images
from .score_terms import ScoreTerms

#: Smallest pool of a size sweep (pairs, or images with several captions each).
SWEEP_START = 250
#: Draws per size below all pairs.
SWEEP_DRAWS = 3
#: Significance of the drift flag's t-test (two-sided).
DRIFT_LEVEL = 0.05
#: k of the mutual-kNN alignment (Huh et al. use 10).
MUTUAL_K = 10
#: Measures a sweep reports (with ``mutual_knn``).
SWEEP_KEYS = ("ITR", "TIR", "IMR", "TMR", "R@1", "R@5", "R@5_t2i", "R@1_i2t_crossmodal",
              "R@5_i2t_crossmodal", "NDCG@10", "RMG", "centroid_gap", "frechet",
              "paired_cosine_distance", "mutual_knn")

Progress = Callable[[float, str], None]


def mutual_knn_alignment(X: np.ndarray, Y: np.ndarray, k: int = MUTUAL_K) -> float:
    """Mean over pairs of |kNN_images(i) ∩ kNN_texts(i)| / k (Huh et al. 2024).

    ``kNN_images(i)``: the k images most cosine-similar to image i (itself left out);
    ``kNN_texts(i)`` the same among texts; equal similarities ordered by lower index.
    """
    from .anatomy import nearest_neighbours

    n = np.asarray(X).shape[0]
    k = min(int(k), n - 1)
    if k < 1:
        return math.nan
    a = nearest_neighbours(X, k)
    b = nearest_neighbours(Y, k)
    shared = (a[:, :, None] == b[:, None, :]).any(axis=2).sum(axis=1)
    return float(shared.mean() / k)


@dataclass
class SweepResult:
    """A sweep's numbers: one row per (label, size, draw).

    Attributes
    ----------
    rows : list of dict
        ``label`` (which embeddings: "raw", a method), ``size`` (pairs, or images with several
        captions each), ``draw``, ``captions`` (the convention), and every measure of
        :data:`SWEEP_KEYS`.
    seconds : float
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    kind: str = "size"

    def summary(self) -> list[dict[str, Any]]:
        """Per (label, size or convention, measure): ``mean``, ``lo``, ``hi`` over the draws and
        ``draws``."""
        out = []
        by = "size" if self.kind == "size" else "captions"
        order = {"first": 0, "random": 1, "all": 2}
        keys = sorted({(r["label"], r[by]) for r in self.rows},
                      key=lambda t: (t[0] != "raw", t[0],
                                     t[1] if by == "size" else order.get(t[1], 3)))
        for label, x in keys:
            group = [r for r in self.rows if r["label"] == label and r[by] == x]
            for key in SWEEP_KEYS:
                values = np.array([r[key] for r in group if key in r], dtype=np.float64)
                if values.size:
                    out.append({"label": label, by: x, "measure": key, "draws": int(values.size),
                                "mean": float(values.mean()), "lo": float(values.min()),
                                "hi": float(values.max())})
        return out

    def drifting(self, level: float = DRIFT_LEVEL) -> dict[str, list[str]]:
        """Per label, the measures that drift with N: the mean of their draws at the smallest
        size differs from their value on all pairs by more than a two-sided one-sample t-test
        over those draws allows at ``level`` (module docstring). A measure whose draws are all
        equal drifts when that value is not the one on all pairs."""
        from scipy import stats

        if self.kind != "size":
            return {}
        out: dict[str, list[str]] = {}
        for label in dict.fromkeys(r["label"] for r in self.rows):
            rows = [r for r in self.rows if r["label"] == label]
            sizes = sorted({r["size"] for r in rows})
            if len(sizes) < 2:
                continue
            small = [r for r in rows if r["size"] == sizes[0]]
            full = next(r for r in rows if r["size"] == sizes[-1])
            keys = []
            for key in SWEEP_KEYS:
                values = np.array([r.get(key, math.nan) for r in small], dtype=np.float64)
                target = full.get(key, math.nan)
                if not (np.isfinite(values).all() and math.isfinite(target)) or values.size < 2:
                    continue
                spread = values.std(ddof=1) / math.sqrt(values.size)
                gap = abs(values.mean() - target)
                if spread == 0:
                    drifts = gap > 0
                else:
                    drifts = gap / spread > stats.t.ppf(1 - level / 2, values.size - 1)
                if drifts:
                    keys.append(key)
            out[label] = keys
        return out

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "rows": self.rows, "summary": self.summary(),
                "drifting": self.drifting(), "seconds": self.seconds}


def _ndcg(X: np.ndarray, Y: np.ndarray, groups: np.ndarray | None, report: Any) -> float:
    """NDCG@10 of image queries: from the report's ranks (one caption per image, or a score
    correction's ranks), or with every caption relevant (:func:`gapviz.anatomy.grouped_ndcg`)."""
    from .anatomy import grouped_ndcg, ndcg_gains

    if report.image_of is None:
        return float(ndcg_gains(report.i2t_rank).mean())
    return grouped_ndcg(X, Y, groups)


def sweep_sizes(n: int, start: int = SWEEP_START) -> list[int]:
    """Pool sizes of a sweep: ``start``, doubling, below ``n``, then ``n`` itself."""
    sizes, s = [], start
    while s < n:
        sizes.append(s)
        s *= 2
    return sizes + [n]


def pool_size_sweep(embeddings: Sequence[tuple[str, np.ndarray, np.ndarray, ScoreTerms | None]],
                    *, groups: np.ndarray | None = None, sizes: Sequence[int] | None = None,
                    draws: int = SWEEP_DRAWS, seed: int = 0, k: int = MUTUAL_K,
                    reports: dict[str, Any] | None = None,
                    progress: Progress | None = None) -> SweepResult:
    """Every measure against pool size, for one or more embeddings of the same pairs.

    Parameters
    ----------
    embeddings : sequence of (label, X, Y, scores)
        The same N pairs as each embedding gives them: ``("raw", X, Y, None)`` and, say, a
        method's run (its images and texts under its protocol, and a score correction's terms).
        Every embedding is subsampled with the same rows.
    groups : ndarray of shape (N,), optional
        Image ids when images have several captions: sizes count images and a draw keeps all
        captions of the images it draws.
    sizes : sequence of int, optional
        Default :func:`sweep_sizes` of N (or of the images).
    draws : int
        Seeded subsamples per size below all of them.
    reports : dict of label to GapReport, optional
        ``measure_gap`` of all the pairs for some labels, already computed (the app's): the
        largest size reuses them instead of measuring again.
    """
    started = time.perf_counter()
    report = progress or (lambda fraction, message: None)
    n = np.asarray(embeddings[0][1]).shape[0]
    grouping = None if groups is None else image_groups_of(groups)
    units = n if grouping is None else grouping[1].shape[0]
    sizes = sorted({int(s) for s in (sizes or sweep_sizes(units)) if 2 <= int(s) <= units})
    if not sizes:
        raise ValueError(f"no pool size between 2 and {units} to sweep.")
    rows_of = None
    if grouping is not None:
        rows_of = rows_of_images(grouping[0])
    plan = [(s, d) for s in sizes for d in range(draws if s < units else 1)]
    # cost of a draw ~ size^2: report progress by work done
    weight = np.array([float(s) ** 2 for s, _ in plan])
    done = 0.0
    result = SweepResult(kind="size")
    for step, (s, d) in enumerate(plan):
        chosen = (np.arange(units) if s == units
                  else np.sort(np.random.default_rng([seed, s, d]).choice(units, s, replace=False)))
        rows = chosen if rows_of is None else np.concatenate([rows_of[u] for u in chosen])
        sub_groups = None if groups is None else np.asarray(groups)[rows]
        for label, X, Y, scores in embeddings:
            report(done / weight.sum(), f"{label}: {s:,} {'pairs' if grouping is None else 'images'}, "
                                        f"draw {d + 1}")
            Xs, Ys = np.asarray(X)[rows], np.asarray(Y)[rows]
            r = (reports or {}).get(label) if s == units else None
            if r is None or not {1, 5} <= set(r.ks):
                r = measure_gap(Xs, Ys, ks=(1, 5), groups=sub_groups,
                                scores=None if scores is None else scores.subset(rows))
            firsts = (np.arange(rows.size) if grouping is None
                      else np.unique(sub_groups, return_index=True)[1])
            row = {"label": label, "size": int(s), "draw": d, "captions": r.convention,
                   **{key: float(r.metrics[key]) for key in SWEEP_KEYS if key in r.metrics},
                   "RMG": relative_modality_gap(Xs, Ys, sub_groups),
                   "NDCG@10": _ndcg(Xs, Ys, sub_groups, r),
                   "mutual_knn": mutual_knn_alignment(Xs[firsts], Ys[firsts], k)}
            result.rows.append(row)
        done += weight[step]
    report(1.0, "done")
    result.seconds = time.perf_counter() - started
    return result


def caption_sweep(embeddings: Sequence[tuple[str, np.ndarray, np.ndarray, ScoreTerms | None]],
                  groups: np.ndarray, *, seed: int = 0, k: int = MUTUAL_K,
                  progress: Progress | None = None) -> SweepResult:
    """Every measure with the first caption of each image, one at random (seeded) and all of
    them (any counts), for each embedding of the same pairs (``groups``: image ids)."""
    started = time.perf_counter()
    report = progress or (lambda fraction, message: None)
    grouping = image_groups_of(groups)
    if grouping is None:
        raise ValueError("every image has one caption here: there is no caption choice to sweep "
                         "(load the data with all captions, --caption all).")
    image_of, first = grouping
    rng = np.random.default_rng([seed, 11])
    random_rows = np.array([rows[rng.integers(rows.size)] for rows in rows_of_images(image_of)])
    choices = [("first", np.sort(first), None), ("random", np.sort(random_rows), None),
               ("all", np.arange(image_of.size), np.asarray(groups))]
    result = SweepResult(kind="captions")
    for i, (name, rows, sub_groups) in enumerate(choices):
        for label, X, Y, scores in embeddings:
            report(i / 3, f"{label}: {name} caption(s)")
            if scores is not None and sub_groups is not None:
                continue  # score corrections: one caption per image only
            Xs, Ys = np.asarray(X)[rows], np.asarray(Y)[rows]
            r = measure_gap(Xs, Ys, ks=(1, 5), groups=sub_groups,
                            scores=None if scores is None else scores.subset(rows))
            firsts = np.sort(first) if sub_groups is not None else np.arange(rows.size)
            base = np.asarray(X)[firsts] if sub_groups is not None else Xs
            texts = np.asarray(Y)[firsts] if sub_groups is not None else Ys
            result.rows.append({"label": label, "size": int(first.size), "draw": 0,
                                "captions": name, "convention": r.convention,
                                **{key: float(r.metrics[key]) for key in SWEEP_KEYS
                                   if key in r.metrics},
                                "RMG": relative_modality_gap(Xs, Ys, sub_groups),
                                "NDCG@10": _ndcg(Xs, Ys, sub_groups, r),
                                "mutual_knn": mutual_knn_alignment(base, texts, k)})
    report(1.0, "done")
    result.seconds = time.perf_counter() - started
    return result



class SweepJobs:
    """Sweeps computed in the background, one worker, each started once per key; each job's
    progress (fraction, message) is readable while it runs (the app polls it).

    Parameters
    ----------
    store : gapviz.runs.LRUStore
        Where the jobs are kept (given, so the app shares one store between sessions).
    """

    def __init__(self, store: Any) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gapviz-sweep")

    def job(self, key: Any, kind: str, embeddings: Sequence[tuple], groups: np.ndarray | None,
            *, draws: int = SWEEP_DRAWS, reports: dict[str, Any] | None = None) -> "SweepJob":
        """The sweep job of ``key`` (started on first request)."""
        job = self.store.get((key, kind, draws))
        if job is None or job.future.cancelled():
            job = SweepJob()

            def work() -> SweepResult:
                if kind == "captions":
                    return caption_sweep(embeddings, groups, progress=job.report)
                return pool_size_sweep(embeddings, groups=groups, draws=draws, reports=reports,
                                       progress=job.report)

            job.future = self._pool.submit(work)
            self.store.put((key, kind, draws), job)
        return job


@dataclass
class SweepJob:
    """One background sweep: its future and its latest progress."""

    future: Any = None
    fraction: float = 0.0
    message: str = "queued"

    def report(self, fraction: float, message: str) -> None:
        self.fraction, self.message = float(fraction), message

    def done(self) -> bool:
        return self.future is not None and self.future.done()
