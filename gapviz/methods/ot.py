"""Optimal-transport maps from images (source) onto texts (target) (paper section 2.1).

Both methods fit a coupling ``G`` (N x N, uniform marginals 1/N) between the fitted images and
texts, map each fitted image to its barycentre ``T(x_i) = sum_j G[i, j] y_j / sum_j G[i, j]``
(the barycentric mapping, Ferradans et al. 2014) and leave the texts as they are, so the images
move into the texts' region of the sphere.

* :class:`OTGap` (``"ot"``): Laplacian-regularised OT, POT's ``ot.da.EMDLaplaceTransport``
  (Flamary et al. 2014, "Optimal transport with Laplacian regularization"; Ferradans et al.
  2014): ``min_G <G, M> + reg_lap * Omega(G)``, where Omega asks images that are neighbours to
  stay neighbours after transport (``reg_src`` weighs the source graph against the target one).
* :class:`SinkhornGap` (``"sinkhorn"``): entropic OT, POT's ``ot.da.SinkhornTransport``
  (Cuturi 2013), the fast sibling.

Rows are L2-normalised first and the ground cost is POT's default squared Euclidean distance,
``2 - 2 cos`` on the sphere. Mapped images are barycentres of unit texts and are not
renormalised (they lie inside the sphere; the measures normalise rows).

Out-of-sample images (rows not seen in ``fit``) follow POT's ``BaseTransport.transform``:
the nearest fitted image ``x_nn`` plus its displacement, ``T(x_nn) + x - x_nn``. The paper fits
on one set of pairs and transforms another, which is this path. Unlike POT, the barycentres
are computed once at fit time and reused (POT recomputes the N x N x d product for each batch
of 128 new rows), so transforming new rows costs one nearest-neighbour search.

Speed of ``OTGap``
------------------
POT solves the problem by conditional gradient (``ot.optim.cg``): each iteration solves one
exact OT problem (network simplex, about a second at N = 2,500) and evaluates the gradient of
the Laplacian term. POT's ``emd_laplace`` forms that gradient as products of N x N matrices,
``(L_s + L_s^T) G (X_t X_t^T)``, O(N^3) per iteration. :class:`OTGap` keeps POT's algorithm,
graph, cost, marginals and stopping rules and only evaluates the same gradient and objective in
factored form, ``L_s (G X_t) X_t^T`` with a sparse kNN Laplacian, O(N^2 d), and its line
search from products that are linear in G (:func:`emd_laplace_factored`); with uniform
marginals on distinct points each exact-OT step is solved as the assignment problem it is
(:func:`exact_ot_step`). The couplings agree with ``EMDLaplaceTransport.fit`` to round-off
(tested), several times faster. A ``progress`` callback reports each conditional-gradient
iteration.

Speed of ``SinkhornGap``
------------------------
With POT's default solver (``method="sinkhorn"``) the iterations run in
:func:`sinkhorn_knopp`: POT's iterates and stopping rule, one compiled sweep over the kernel
per iteration instead of three, so about half the time at 1,000 fitted pairs (at reg <= 0.02
every fit runs the full ``max_iter`` = 1,000 iterations). The coupling equals POT's
``SinkhornTransport`` to round-off (tested).

Live sliders
------------
Three things make a change of ``reg_lap``, ``reg_src`` or ``reg`` cheap (measured in
``bench/bench_ot_live.py``):

* ``fit_size``: the coupling is fitted on at most that many pairs (a seeded subsample), the
  other rows take the out-of-sample map above. The solve cost grows like n^2 to n^3 in the
  fitted pairs, the quality of the map more slowly (the README's trade-off table).
* :meth:`~_TransportGap.refit`: what depends on the fitted rows only (the subsample, the cost
  matrix, the similarity graphs) is computed once at ``fit``; a refit only solves, from the
  solver's default start, so it gives the coupling ``fit`` gives with the same parameters,
  bit for bit. (Neither solver runs to its optimum within ``max_iter``, so a warm start,
  available on request, stops at a different coupling.) The last few solutions are kept:
  moving a slider back costs nothing.
* :meth:`~_TransportGap.precompute`: solves other slider values ahead (for a background
  thread) into that memo, without changing the fitted state.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections import OrderedDict
from typing import Any, Sequence

import numba
import numpy as np
from scipy import sparse
from sklearn.exceptions import NotFittedError

from ..config import BLOCK_VALUES
from ..threads import one_blas_thread
from .base import GapMethod, Param, ProgressCallback, Slider, l2_normalize
from .base import require_finite

#: Pairs a coupling is fitted on by default (a seeded subsample when there are more; the other
#: rows take the out-of-sample map), chosen so that a slider move stays under a second on two
#: CPUs, where the default protocol (held-out, 5 folds) solves five couplings per move: one
#: Laplacian-OT solve costs about 0.17 s of CPU at 500 pairs and 0.7 s at 1,000; one Sinkhorn
#: solve 0.01-0.15 s at 1,000 (the most at reg <= 0.02, 1,000 iterations). More pairs fit
#: better (bench/bench_ot_live.py prints the trade-off; the README quotes it);
#: ``fit_size=None`` fits on every pair.
OT_FIT_SIZE = 500
SINKHORN_FIT_SIZE = 1000

REG_TYPES = ("pos", "disp")
SIMILARITIES = ("knn", "gauss")
SINKHORN_METHODS = ("sinkhorn", "sinkhorn_log", "sinkhorn_stabilized")


def _int_or_float(text: str) -> int | float:
    """A command-line number: ``3`` is a neighbour count (int), ``0.5`` a Gaussian sigma."""
    value = float(text)
    return int(value) if value.is_integer() else value


#: Parameters both transport methods take: the solver's stopping rules and the fitted subsample.
_SOLVER_PARAMS = (
    Param("max_iter", "ot: conditional-gradient iterations (default 10); sinkhorn: "
          "iterations (default 1000)", flag="--max-iter", type=int),
    Param("tol", "ot / sinkhorn: stopping tolerance", flag="--tol", type=float),
    Param("fit_size", "ot / sinkhorn: pairs the coupling is fitted on (a seeded subsample; "
          "the others mapped out of sample; default 500 for ot, 1000 for sinkhorn)",
          flag="--fit-size", type=int, short="fit size"),
    Param("random_state", "random seed (spectral, vlap: initialisation; ot, sinkhorn: their "
          "fit_size subsample; default 0)", flag="--seed", type=int, short="seed"),
)


class _TransportGap(GapMethod):
    """Shared part: normalise, fit a coupling, barycentric map, out-of-sample displacement.

    Subclasses implement :meth:`_solve` (one coupling for the current parameters, from the
    data-only state in ``_cache``, optionally warm-started) and name their slider parameters
    in ``_live_params``.

    Attributes
    ----------
    coupling_ : ndarray of shape (n_fit, n_fit)
        The fitted coupling (rows: fitted images, columns: fitted texts), float64.
    barycentric_ : ndarray of shape (n_fit, d)
        ``T(x_i)``, the fitted images' barycentric images (float32).
    fit_index_ : ndarray of shape (n_fit,)
        Rows of the ``fit`` input the coupling was fitted on (all of them, or a seeded
        subsample of ``fit_size``); the other rows take the out-of-sample map.
    fit_seconds_ : float
        Wall time of the last coupling solve (0 when :meth:`refit` found it solved already).
    warm_started_ : bool
        Whether the last solve started from the previous parameters' solution.
    """

    #: Parameters :meth:`refit` changes without recomputing what depends on the data only.
    _live_params: tuple[str, ...] = ()
    #: Solutions kept per parameter values, so that a slider moved back is instant.
    _MEMO_SIZE = 8

    def _fit(self, X: np.ndarray, Y: np.ndarray, progress: ProgressCallback) -> None:
        Xn, Yn = l2_normalize(X), l2_normalize(Y)
        n = Xn.shape[0]
        if self.fit_size is not None and n > self.fit_size:
            rng = np.random.default_rng(self.random_state)
            self.fit_index_ = np.sort(rng.choice(n, size=int(self.fit_size), replace=False))
        else:
            self.fit_index_ = np.arange(n)
        xs = Xn[self.fit_index_].astype(np.float64)
        xt = Yn[self.fit_index_].astype(np.float64)
        # What depends on the fitted rows only (cost matrix, graphs): computed once, reused by
        # every refit. Solutions per parameter values: a small memo.
        self._cache = {"xs": xs, "xt": xt}
        self._fit_sample = (self.fit_size, self.random_state)
        self._memo: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.xs_ = xs.astype(np.float32)
        self._solve_and_map(progress, warm=False)

    def refit(self, *, warm_start: bool | None = None, progress: ProgressCallback | None = None,
              **params: Any) -> "_TransportGap":
        """Solve again for new slider values on the same fitted pairs; returns ``self``.

        Reuses everything that depends on the data only (the fit subsample, the cost matrix,
        the similarity graphs) and keeps the last few solutions, so a value seen before costs
        nothing. By default (a cold start) the result is the coupling ``fit`` would give with
        these parameters, bit for bit: same solver, same start, same stopping point.

        Parameters
        ----------
        warm_start : bool, optional
            Start the solver from the current solution (or the nearest kept one) instead of
            POT's default start. Default False, for both methods: each solver stops before its
            optimum (Laplacian OT after ``max_iter`` = 10 conditional-gradient iterations;
            Sinkhorn at ``max_iter`` = 1,000 iterations when ``reg`` <= 0.02 on the demo), so a
            warm start stops at a different coupling than ``fit`` and ``gapviz compare`` with
            the same parameters (on the demo: Sinkhorn at reg 0.01, ITR 1.203 warm from 0.05
            against 1.201 cold), and the numbers would depend on the slider's history.
        progress : callable(fraction, message), optional
        **params
            New values of the live parameters (``reg_lap``, ``reg_src`` for ``"ot"``;
            ``reg`` for ``"sinkhorn"``); any other name is refused (fit again instead).
        """
        if not getattr(self, "fitted_", False):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit first.")
        unknown = sorted(set(params) - set(self._live_params))
        if unknown:
            raise ValueError(f"refit changes only {', '.join(self._live_params)}; "
                             f"{', '.join(unknown)} need a new fit.")
        if (self.fit_size, self.random_state) != self._fit_sample:
            raise ValueError("fit_size or random_state changed since fit: they choose the fitted "
                             "pairs, so fit again.")
        old = {k: getattr(self, k) for k in params}
        for k, v in params.items():
            setattr(self, k, v)
        try:
            self._validate_parameters(self.fit_index_.size, self.xs_.shape[1])
        except ValueError:
            for k, v in old.items():
                setattr(self, k, v)
            raise
        report = progress if progress is not None else (lambda f, m: None)
        self._solve_and_map(report, warm=bool(warm_start))
        report(1.0, "done")
        return self

    def precompute(self, param_sets: Sequence[dict[str, Any]]) -> None:
        """Solve for other slider values ahead of time (for a background thread).

        Each dict gives live parameter values; their solutions (cold starts: the couplings
        ``fit`` gives) go to the memo that :meth:`refit` reads. The method's own state
        (``coupling_``, ``barycentric_``, parameters) is not changed. Parameters missing from
        a dict keep their current value.
        """
        for params in param_sets:
            unknown = sorted(set(params) - set(self._live_params))
            if unknown:
                raise ValueError(f"precompute takes only {', '.join(self._live_params)}, "
                                 f"not {', '.join(unknown)}.")
            values = {k: params.get(k, getattr(self, k)) for k in self._live_params}
            key = self._key(values)
            with self._lock:
                if key in self._memo:
                    continue
            with one_blas_thread(2):  # one BLAS thread: see _solve_and_map
                G, state, info = self._solve(values, None, lambda f, m: None)
                bary = self._barycentres(G)
            with self._lock:
                self._remember(key, G, state, info, bary, 0.0)

    # -- internals ---------------------------------------------------------------------------
    def _key(self, values: dict[str, Any] | None = None, warm: bool = False) -> tuple:
        """Memo key: the live values, every other parameter, and whether the solution was
        warm-started (it may then differ from the cold solve ``fit`` gives)."""
        values = values if values is not None else {k: getattr(self, k) for k in self._live_params}
        others = tuple(sorted((k, repr(v)) for k, v in self.get_params().items()
                              if k not in self._live_params))
        return (tuple(float(values[k]) for k in self._live_params), others, bool(warm))

    def _nearest(self, key: tuple):
        """The memo's solution at the nearest live values (log scale) among those solved with
        the same other parameters (a :meth:`_key`), or None."""
        same = [other for other in self._memo if other[1:] == key[1:]]
        if not same:
            return None

        def distance(other):
            return sum(abs(np.log1p(abs(a)) - np.log1p(abs(b))) for a, b in zip(key[0], other[0]))

        return self._memo[min(same, key=distance)]

    def _barycentres(self, G: np.ndarray) -> np.ndarray:
        """``T(x_i)`` for the fitted images under coupling G, float32 (n_fit, d)."""
        rows = G.sum(1)
        transp = np.nan_to_num(G / rows[:, None], nan=0.0, posinf=0.0, neginf=0.0)
        # POT's barycentric mapping (BaseTransport.transform on the fitted samples), once per
        # solution, in float32 like every output. A Laplacian-OT coupling is a mix of at most
        # max_iter + 1 exact-OT vertices (a few non-zeros per row): a sparse product then.
        if np.count_nonzero(transp) < transp.size // 8:
            bary = np.asarray(sparse.csr_matrix(transp) @ self._cache["xt"]).astype(np.float32)
        else:
            bary = transp.astype(np.float32) @ self._cache["xt"].astype(np.float32)
        return bary

    def _remember(self, key, G, state, info, bary, seconds) -> None:
        self._memo[key] = {"G": G, "state": state, "info": info, "bary": bary, "seconds": seconds}
        self._memo.move_to_end(key)
        while len(self._memo) > self._MEMO_SIZE:
            self._memo.popitem(last=False)

    def _solve_and_map(self, progress: ProgressCallback, warm: bool) -> None:
        key = self._key(warm=warm)
        values = {k: getattr(self, k) for k in self._live_params}
        with self._lock:
            hit = self._memo.get(key)
            start = (self._memo.get(getattr(self, "_current", None)) or self._nearest(key)) if warm else None
        self.warm_started_ = False
        if hit is None:
            t0 = time.perf_counter()
            # BLAS on one thread for every solve and its barycentres. The products' rounding
            # then does not depend on the thread count, so a refit gives the coupling and the
            # mapped points of ``fit`` bit for bit whatever the load (a fit holds BLAS to one
            # thread on a busy machine); and up to 1,000 fitted pairs the products are small
            # beside the serial exact-OT and Sinkhorn steps: BLAS threads spinning beside them,
            # and beside the app's other threads, cost twice the time on two shared CPUs.
            with one_blas_thread(2):
                G, state, info = self._solve(values, start, progress)
                bary = self._barycentres(G)
            seconds = time.perf_counter() - t0
            with self._lock:
                self._remember(key, G, state, info, bary, seconds)
                hit = self._memo[key]
            self.warm_started_ = start is not None
            self.fit_seconds_ = seconds
        else:
            self.fit_seconds_ = 0.0
        self._current = key
        self.coupling_ = hit["G"]
        self.barycentric_ = hit["bary"]
        for k, v in hit["info"].items():
            setattr(self, k, v)

    def _solve(self, values: dict[str, Any], start, progress: ProgressCallback):
        """(coupling, warm-start state, attributes to set) for the live ``values``."""
        raise NotImplementedError

    def _cost(self) -> np.ndarray:
        """POT's cost (``BaseTransport.fit``: squared Euclidean distances), computed once."""
        if "M" not in self._cache:
            import ot  # POT's import pulls in every backend it finds (torch...): lazily

            self._cache["M"] = ot.dist(self._cache["xs"], self._cache["xt"])
        return self._cache["M"]

    def _transform_images(self, X: np.ndarray) -> np.ndarray:
        Xn = l2_normalize(X)
        if Xn.shape == self.xs_.shape and np.array_equal(Xn, self.xs_):
            return self.barycentric_.copy()
        # Out of sample (POT's BaseTransport.transform): nearest fitted image plus displacement.
        # For unit rows the nearest in squared Euclidean distance is the most cosine-similar.
        # A fitted row (also within a larger input when fit_size subsampled it) is its own
        # nearest, with displacement 0: it gets its barycentre.
        nn = np.empty(Xn.shape[0], np.int64)
        rows = max(1, BLOCK_VALUES // self.xs_.shape[0])
        for i0 in range(0, Xn.shape[0], rows):
            nn[i0:i0 + rows] = np.argmax(Xn[i0:i0 + rows] @ self.xs_.T, axis=1)
        return self.barycentric_[nn] + Xn - self.xs_[nn]

    def _transform_texts(self, Y: np.ndarray) -> np.ndarray:
        # The texts are the target: they stay where they are.
        return l2_normalize(Y)

    def _validate_fit_size(self) -> None:
        fs = self.fit_size
        if fs is not None and (not isinstance(fs, (int, np.integer)) or isinstance(fs, bool) or fs < 2):
            raise ValueError(f"fit_size must be an integer >= 2 (pairs the coupling is fitted on) "
                             f"or None for all pairs, got {fs!r}.")


class OTGap(_TransportGap):
    """Laplacian-regularised optimal transport of images onto texts (POT ``EMDLaplaceTransport``).

    Solves ``min_G <G, M> + reg_lap * Omega(G)`` over couplings with uniform marginals
    (Flamary et al. 2014; Ferradans et al. 2014), where ``M[i, j] = ||x_i - y_j||^2`` and, for
    ``reg_type="pos"``,
    ``Omega(G) = reg_src * tr(T_s^T L_s T_s) + (1 - reg_src) * tr(T_t^T L_t T_t)`` with
    ``T_s = G X_t`` and ``T_t = G^T X_s`` (POT's ``emd_laplace``; L_s, L_t are the Laplacians of
    the similarity graphs of the images and of the texts). Parameters are POT's.

    Parameters
    ----------
    reg_lap : float, default=100.0
        Weight of the Laplacian term (POT's ``reg_lap``, ``eta``). The term scales like 1/N
        against the transport cost (G's entries are 1/N), so values of order 10-1000 matter at
        N in the thousands; 0 is plain exact OT.
    reg_src : float, default=1.0
        Share of the source (image) graph in the regulariser, in [0, 1] (POT's ``reg_src``,
        ``alpha``): 1 keeps images that are neighbours close after transport.
    reg_type : {"pos", "disp"}, default="pos"
        Regularise positions (Flamary et al. 2014) or displacements (Ferradans et al. 2014).
    similarity : {"knn", "gauss"}, default="knn"
        Graph of each modality: symmetrised kNN connectivity or a Gaussian kernel.
    similarity_param : int or float, optional
        Neighbours for ``"knn"`` (POT default 3) or the Gaussian's sigma for ``"gauss"`` (POT
        default ``1 / (2 * mean(squared distance)^2)``).
    max_iter : int, default=10
        Conditional-gradient iterations (POT default 100; each one solves an exact OT problem).
        On the demo the out-of-sample measures stop changing after 5-10 iterations.
    tol : float, default=1e-6
        Stop when the relative decrease of the objective is below this (POT default 1e-9).
    max_inner_iter : int, default=100000
        Network-simplex iterations per exact OT solve.
    inner_tol : float, default=1e-9
        Stop when the absolute decrease of the objective is below this.
    fit_size : int or None, default=500
        Most pairs the coupling is fitted on: with more, a seeded subsample of this many is
        fitted and the other rows take the out-of-sample map (the paper's protocol: OT
        fitted on some pairs maps others). None fits on all (O(N^2) memory, seconds per
        iteration at N = 2,500).
    random_state : int, default=0
        Seed of the ``fit_size`` subsample.

    Attributes
    ----------
    n_iter_ : int
        Conditional-gradient iterations run.
    loss_ : list of float
        Objective after each iteration.
    """

    name = "ot"
    label = "Laplace OT (EMD)"
    menu_rank = 10
    params_info = (
        Param("reg_lap", "ot: Laplacian regularisation weight (POT reg_lap; default 100)",
              flag="--reg-lap", type=float,
              slider=Slider("Laplacian regularisation (reg_lap)",
                            options=(0.0, 1.0, 10.0, 30.0, 100.0, 300.0, 1000.0),
                            help="Weight of the term that keeps neighbouring images neighbours "
                                 "after transport; 0 is plain exact OT.")),
        Param("reg_src", "ot: share of the image graph in the regulariser, 0..1 (default 1)",
              flag="--reg-src", type=float,
              slider=Slider("Source graph share (reg_src)", lo=0.0, hi=1.0, step=0.1,
                            help="1: regularise with the image graph only; 0: the text graph "
                                 "only.")),
        Param("reg_type", "ot: regularise positions (default) or displacements",
              flag="--reg-type", type=str, choices=("pos", "disp")),
        Param("similarity", "ot: similarity graph of each modality (default knn)",
              flag="--similarity", type=str, choices=("knn", "gauss")),
        Param("similarity_param", "ot: neighbours (knn, default 3) or Gaussian sigma",
              flag="--similarity-param", type=_int_or_float),
    ) + _SOLVER_PARAMS
    summary = "Laplacian-regularised optimal transport of images onto texts (POT EMDLaplaceTransport)"
    uses_pairing = False
    default_protocol = "held-out"

    def __init__(self, reg_lap: float = 100.0, reg_src: float = 1.0, *, reg_type: str = "pos",
                 similarity: str = "knn", similarity_param: float | None = None,
                 max_iter: int = 10, tol: float = 1e-6, max_inner_iter: int = 100000,
                 inner_tol: float = 1e-9, fit_size: int | None = OT_FIT_SIZE, random_state: int = 0):
        self.reg_lap = reg_lap
        self.reg_src = reg_src
        self.reg_type = reg_type
        self.similarity = similarity
        self.similarity_param = similarity_param
        self.max_iter = max_iter
        self.tol = tol
        self.max_inner_iter = max_inner_iter
        self.inner_tol = inner_tol
        self.fit_size = fit_size
        self.random_state = random_state

    def _validate_parameters(self, n_pairs: int, dim: int) -> None:
        require_finite(self, "reg_lap", "reg_src", "similarity_param", "tol", "inner_tol")
        self._validate_fit_size()
        if self.fit_size is not None:
            n_pairs = min(n_pairs, int(self.fit_size))
        if not self.reg_lap >= 0:
            raise ValueError(f"reg_lap must be >= 0, got {self.reg_lap!r}.")
        if not 0 <= self.reg_src <= 1:
            raise ValueError(f"reg_src must be in [0, 1] (the source graph's share), got {self.reg_src!r}.")
        if self.reg_type not in REG_TYPES:
            raise ValueError(f"reg_type must be one of {REG_TYPES}, got {self.reg_type!r}.")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {self.similarity!r}.")
        if self.similarity == "knn" and self.similarity_param is not None:
            k = self.similarity_param
            if float(k) != int(k) or k < 1:
                raise ValueError(f"similarity_param must be a whole number of neighbours >= 1 for "
                                 f"similarity='knn', got {k!r}.")
        if self.similarity == "gauss" and self.similarity_param is not None and not self.similarity_param > 0:
            raise ValueError(f"similarity_param (the Gaussian's sigma) must be > 0, got {self.similarity_param!r}.")
        if self.similarity == "knn":
            k = 3 if self.similarity_param is None else int(self.similarity_param)
            if k >= n_pairs:
                raise ValueError(f"the kNN similarity graph needs more points than neighbours: "
                                 f"similarity_param={k} with N={n_pairs} pairs; use N > {k} "
                                 "or a smaller similarity_param.")
        for name in ("max_iter", "max_inner_iter"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}.")
        for name in ("tol", "inner_tol"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}.")

    _live_params = ("reg_lap", "reg_src")

    def _solve(self, values, start, progress):
        import ot

        xs, xt = self._cache["xs"], self._cache["xt"]
        key = ("graphs", self.similarity, self.similarity_param)
        if key not in self._cache:  # the Laplacians depend on the fitted rows only
            self._cache[key] = laplace_graphs(xs, xt, sim=self.similarity,
                                              sim_param=self.similarity_param)
        a = ot.unif(xs.shape[0])  # POT's uniform marginals (distribution_estimation_uniform)
        b = ot.unif(xt.shape[0])
        if "lp" not in self._cache:  # the exact-OT solver depends on the fitted rows only
            self._cache["lp"] = exact_ot_step(a, b, xs, xt)
        G, log = emd_laplace_factored(
            a, b, xs, xt, self._cost(), sim=self.similarity, sim_param=self.similarity_param,
            reg=self.reg_type, eta=values["reg_lap"], alpha=values["reg_src"],
            numItermax=self.max_iter, stopThr=self.tol, numInnerItermax=self.max_inner_iter,
            stopInnerThr=self.inner_tol, progress=progress,
            G0=None if start is None else start["G"], graphs=self._cache[key],
            lp=self._cache["lp"])
        loss = [float(v) for v in log["loss"]]
        return G, None, {"loss_": loss, "n_iter_": len(loss) - 1}


def laplace_graphs(xs, xt, *, sim="knn", sim_param=None):
    """Laplacians of the source and target similarity graphs, as POT's ``emd_laplace`` builds
    them: ``(lS, lT, lS + lS^T, lT + lT^T)`` (sparse for ``"knn"``)."""
    import ot

    if sim == "gauss":
        if sim_param is None:
            sim_param = 1 / (2 * (np.mean(ot.dist(xs, xs, "sqeuclidean")) ** 2))
        sS = ot.utils.kernel(xs, xs, method=sim, sigma=sim_param)
        sT = ot.utils.kernel(xt, xt, method=sim, sigma=sim_param)
        lS = np.diag(sS.sum(0)) - sS
        lT = np.diag(sT.sum(0)) - sT
    elif sim == "knn":
        from sklearn.neighbors import kneighbors_graph

        k = 3 if sim_param is None else int(sim_param)
        sS = kneighbors_graph(xs, n_neighbors=k)
        sS = (sS + sS.T) / 2
        sT = kneighbors_graph(xt, n_neighbors=k)
        sT = (sT + sT.T) / 2
        lS = (sparse.diags(np.asarray(sS.sum(0)).ravel()) - sS).tocsr()
        lT = (sparse.diags(np.asarray(sT.sum(0)).ravel()) - sT).tocsr()
    else:
        raise ValueError(f"unknown similarity {sim!r}; use 'knn' or 'gauss'.")
    return lS, lT, lS + lS.T, lT + lT.T


def exact_ot_step(a, b, xs, xt) -> str:
    """Which solver :func:`emd_laplace_factored` uses for its exact-OT steps: ``"assignment"``
    when the marginals are uniform on as many sources as targets and no two sources, and no
    two targets, are the same point; ``"emd"`` (POT's network simplex) otherwise.

    With uniform marginals on N = N points an exact-OT problem is an assignment problem: its
    optimal vertices are the permutation matrices / N (Birkhoff), and scipy's
    ``linear_sum_assignment`` finds one in about two thirds of the network simplex's time at
    N = 500. Where the optimum is unique the two give the same coupling, bit for bit (tested).
    Duplicated points (an image with several captions) make ties, between which the two
    solvers choose differently; the network simplex then keeps POT's choice.
    """
    if not (a.shape == b.shape and np.all(a == a[0]) and np.all(b == a[0])):
        return "emd"
    distinct = (np.unique(xs, axis=0).shape[0] == xs.shape[0]
                and np.unique(xt, axis=0).shape[0] == xt.shape[0])
    return "assignment" if distinct else "emd"


def emd_laplace_factored(a, b, xs, xt, M, *, sim="knn", sim_param=None, reg="pos", eta=1.0,
                         alpha=0.5, numItermax=100, stopThr=1e-9, numInnerItermax=100000,
                         stopInnerThr=1e-9, progress: ProgressCallback | None = None,
                         G0=None, graphs=None, lp: str = "auto"):
    """POT's ``ot.da.emd_laplace`` with the objective and gradient in factored form.

    Same problem, graph construction, algorithm and stopping rules as POT 0.9's
    ``emd_laplace``: the loop of ``ot.optim.cg`` / ``generic_conditional_gradient`` (start at
    ``G0``, linearise, exact-OT step, POT's Armijo step on the segment, stop after
    ``numItermax`` iterations or when the objective's relative change is below ``stopThr`` or
    its absolute change below ``stopInnerThr``, one loss per iteration). What differs is how
    each quantity is computed:

    * the regulariser depends on G through ``T_s = G X_t`` and ``T_t = G^T X_s`` only
      (O(N^2 d + nnz(L) d) instead of POT's O(N^3) products; the kNN Laplacians stay sparse);
    * those are linear in G, so along the segment ``G + t (P - G)`` to the exact-OT vertex P
      (at most ns + nt - 1 non-zeros) the regulariser is a quadratic in t: three coefficients
      per iteration, then O(1) per trial step, and the accepted step's products carry over;
    * G is kept as the combination of its start and the vertices, and formed once at the end;
      ``<M, G>`` and ``<Mi, G>`` are read from it in O(N) per vertex;
    * the exact-OT step is an assignment problem when the marginals are uniform on N = N
      distinct points (:func:`exact_ot_step`).

    The one O(N^2 d) product left per iteration is the gradient, which the exact-OT step needs
    as an N x N cost. Couplings and losses are POT's up to round-off (tested against
    ``EMDLaplaceTransport``).

    Parameters
    ----------
    a, b : ndarray of shape (ns,), (nt,)
        Marginals.
    xs, xt : ndarray of shape (ns, d), (nt, d)
        Source and target samples.
    M : ndarray of shape (ns, nt)
        Ground cost.
    sim, sim_param, reg, eta, alpha, numItermax, stopThr, numInnerItermax, stopInnerThr
        As in ``ot.da.emd_laplace``.
    progress : callable, optional
        ``progress(fraction, message)`` once per conditional-gradient iteration.
    G0 : ndarray of shape (ns, nt), optional
        Starting coupling (a warm start: the solution for neighbouring ``eta``, ``alpha``);
        POT's default (the product of the marginals) when None.
    graphs : tuple, optional
        :func:`laplace_graphs` of ``xs``, ``xt`` computed beforehand (they do not depend on
        ``eta`` or ``alpha``).
    lp : {"auto", "assignment", "emd"}, default="auto"
        Solver of the exact-OT step: ``"emd"`` is POT's network simplex (``ot.optim.cg``'s
        own), ``"assignment"`` scipy's ``linear_sum_assignment`` (uniform marginals,
        ns = nt only), ``"auto"`` the one :func:`exact_ot_step` picks.

    Returns
    -------
    G : ndarray of shape (ns, nt)
    log : dict
        POT's log (``loss`` per iteration; with ``"emd"``, the last inner EMD log).
    """
    import ot
    from scipy.optimize import linear_sum_assignment
    from scipy.optimize._linesearch import scalar_search_armijo  # POT's line search uses it

    if lp == "auto":
        lp = exact_ot_step(a, b, xs, xt)
    if lp not in ("assignment", "emd"):
        raise ValueError(f"lp must be 'auto', 'assignment' or 'emd', got {lp!r}.")

    lS, lT, ls2, lt2 = graphs if graphs is not None else laplace_graphs(xs, xt, sim=sim,
                                                                        sim_param=sim_param)

    # A term whose weight is 0 (reg_src = 1 keeps the source graph only, the default) is
    # skipped: POT computes it and multiplies by 0.
    use_s, use_t = alpha != 0, alpha != 1

    if reg == "disp":
        Cs = -eta * alpha / xs.shape[0] * (np.asarray(ls2 @ xs) @ xt.T)
        Ct = -eta * (1 - alpha) / xt.shape[0] * (xs @ np.asarray(lt2 @ xt).T)
        M = M + Cs + Ct
    M = np.ascontiguousarray(M, dtype=np.float64)

    def quadratic(L, T, dT):
        # (T + t dT)^T L (T + t dT) = A + t B + t^2 C (traces), for any step t
        LT, LdT = L @ T, L @ dT
        return np.array([np.vdot(T, LT), np.vdot(T, LdT) + np.vdot(dT, LT), np.vdot(dT, LdT)])

    def omega(Ts, Tt):
        # alpha tr(xt^T G^T lS G xt) + (1 - alpha) tr(xs^T G lT G^T xs)
        value = 0.0
        if use_s:
            value += alpha * np.vdot(Ts, lS @ Ts)
        if use_t:
            value += (1 - alpha) * np.vdot(Tt, lT @ Tt)
        return value

    # The coupling is kept as a combination c0 G0 + sum_k c_k P_k of the start G0 and the
    # exact-OT vertices P_k (sparse: (rows, cols, mass)); what the loop reads of it, <M, G>,
    # <Mi, G> and the products T_s, T_t, is carried along. G itself is formed once, at the end.
    G_start = np.outer(a, b) if G0 is None else np.array(G0, dtype=np.float64)
    c0 = 1.0
    vertices: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    coefs: list[float] = []
    Ts = np.asarray(G_start @ xt) if use_s else None
    Tt = np.asarray(G_start.T @ xs) if use_t else None
    mG = float(np.vdot(M, G_start))
    cost_G = mG + eta * omega(Ts, Tt)
    losses = [cost_G]
    Mi = np.empty_like(M)
    term = np.empty_like(M) if use_s and use_t else None
    inner_log: dict = {}
    t0 = time.perf_counter()
    it = 0
    while True:
        if progress is not None:
            progress(it / numItermax, f"conditional gradient iteration {it + 1}/{numItermax} "
                                      f"({time.perf_counter() - t0:.0f} s so far)")
        it += 1
        old_cost = cost_G
        # problem linearisation: Mi = M + eta * grad Omega(G), the gradient
        # alpha (lS + lS^T) G xt xt^T + (1 - alpha) xs xs^T G (lT + lT^T), right to left,
        # in place (the same roundings as POT's M + reg * (alpha * ... + (1 - alpha) * ...))
        if use_s:
            np.matmul(np.asarray(ls2 @ Ts), xt.T, out=Mi)
            Mi *= alpha
        if use_t:
            target = term if use_s else Mi
            np.matmul(xs, np.asarray(lt2 @ Tt).T, out=target)
            target *= 1 - alpha
            if use_s:
                Mi += term
        Mi *= eta
        Mi += M
        # the exact-OT step
        if lp == "assignment":
            rows, cols = linear_sum_assignment(Mi)
            mass = a[rows]
        else:
            Gc, inner_log = ot.emd(a, b, Mi, numInnerItermax, log=True)
            rows, cols = np.nonzero(Gc)
            mass = Gc[rows, cols]
        # POT's line_search_armijo (scipy's scalar_search_armijo, c1 = 1e-4, first trial step
        # 0.99, steps clipped at 0) on cost(G + t (P - G)); Omega along the segment is a
        # quadratic in t, the transport term linear.
        dTs = dTt = None
        q = np.zeros(3)
        P = None if lp == "assignment" else sparse.csr_matrix((mass, (rows, cols)), M.shape)
        if use_s:  # P xt - T_s; an assignment's rows are distinct: P xt is rows of xt
            if P is None:
                dTs = -Ts
                dTs[rows] += mass[:, None] * xt[cols]
            else:
                dTs = np.asarray(P @ xt) - Ts
            q += alpha * quadratic(lS, Ts, dTs)
        if use_t:
            if P is None:
                dTt = -Tt
                dTt[cols] += mass[:, None] * xs[rows]
            else:
                dTt = np.asarray(P.T @ xs) - Tt
            q += (1 - alpha) * quadratic(lT, Tt, dTt)
        mP = float(np.dot(mass, M[rows, cols]))
        iP = float(np.dot(mass, Mi[rows, cols]))
        iG = c0 * float(np.vdot(G_start, Mi)) + sum(
            c * float(np.dot(m_, Mi[r_, c_])) for c, (r_, c_, m_) in zip(coefs, vertices))
        mD = mP - mG
        calls = [0]

        def phi(t):
            t = max(float(t), 0.0)
            calls[0] += 1
            return mG + t * mD + eta * (q[0] + t * q[1] + t * t * q[2])

        step, phi1 = scalar_search_armijo(phi, cost_G, iP - iG, c1=1e-4, alpha0=0.99,
                                          amin=0.0)
        if step is None:
            step = 0.0
        else:
            step = max(float(step), 0.0)
            cost_G = phi1
        # G <- G + step (P - G)
        c0 *= 1.0 - step
        coefs = [c * (1.0 - step) for c in coefs] + [step]
        vertices.append((rows, cols, mass))
        mG = mG + step * mD
        if use_s:
            Ts = Ts + step * dTs
        if use_t:
            Tt = Tt + step * dTt
        # POT's stopping rules (ot.optim.generic_conditional_gradient)
        stop = it >= numItermax
        abs_delta = abs(cost_G - old_cost)
        rel_delta = abs_delta / abs(cost_G) if cost_G != 0.0 else np.nan
        if rel_delta < stopThr or abs_delta < stopInnerThr:
            stop = True
        losses.append(cost_G)
        if stop:
            break

    G = G_start * c0
    for c, (r_, c_, m_) in zip(coefs, vertices):  # (r_, c_) pairs are distinct in a vertex
        G[r_, c_] += c * m_
    return G, {"loss": losses, **inner_log}


class SinkhornGap(_TransportGap):
    """Entropic optimal transport of images onto texts (POT ``SinkhornTransport``, Cuturi 2013).

    ``min_G <G, M> - reg * H(G)`` over couplings with uniform marginals; the fast sibling of
    :class:`OTGap`: a few hundred matrix-vector products instead of exact OT solves.

    Parameters
    ----------
    reg : float, default=0.05
        Entropic regularisation (POT's ``reg_e``), in the cost's units (``2 - 2 cos``). Smaller
        is sharper and slower; much above 0.1 every image is mapped near the texts' mean.
    method : {"sinkhorn", "sinkhorn_log", "sinkhorn_stabilized"}, default="sinkhorn"
        POT's solver: plain matrix scaling is the fastest (run by :func:`sinkhorn_knopp`,
        POT's iterates in one sweep over the kernel per iteration); the log-domain one is
        stable for very small ``reg`` but several times slower.
    max_iter : int, default=1000
        Sinkhorn iterations.
    tol : float, default=1e-8
        Stop when the marginal error is below this (POT's default).
    fit_size : int or None, default=1000
        Most pairs the coupling is fitted on (a seeded subsample; the other rows take the
        out-of-sample map); None fits on all.
    random_state : int, default=0
        Seed of the ``fit_size`` subsample.
    """

    name = "sinkhorn"
    label = "Sinkhorn OT"
    menu_rank = 15
    params_info = (
        Param("reg", "sinkhorn: entropic regularisation in units of 2 - 2 cos (default 0.05)",
              flag="--reg", type=float,
              slider=Slider("Entropic regularisation (reg)",
                            options=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
                            help="Smaller is sharper and slower; much above 0.1 every image "
                                 "lands near the texts' mean.")),
        Param("method", "sinkhorn: POT solver (default sinkhorn)", flag="--sinkhorn-method",
              type=str, choices=("sinkhorn", "sinkhorn_log", "sinkhorn_stabilized")),
    ) + _SOLVER_PARAMS
    summary = "entropic optimal transport of images onto texts (POT SinkhornTransport)"
    uses_pairing = False
    default_protocol = "held-out"

    def __init__(self, reg: float = 0.05, *, method: str = "sinkhorn", max_iter: int = 1000,
                 tol: float = 1e-8, fit_size: int | None = SINKHORN_FIT_SIZE,
                 random_state: int = 0):
        self.reg = reg
        self.method = method
        self.max_iter = max_iter
        self.tol = tol
        self.fit_size = fit_size
        self.random_state = random_state

    def _validate_parameters(self, n_pairs: int, dim: int) -> None:
        require_finite(self, "reg", "tol")
        self._validate_fit_size()
        if not self.reg > 0:
            raise ValueError(f"reg must be > 0 (entropic OT), got {self.reg!r}; "
                             "for unregularised OT use method 'ot' with reg_lap=0.")
        if self.method not in SINKHORN_METHODS:
            raise ValueError(f"method must be one of {SINKHORN_METHODS}, got {self.method!r}.")
        if not isinstance(self.max_iter, (int, np.integer)) or isinstance(self.max_iter, bool) or self.max_iter < 1:
            raise ValueError(f"max_iter must be an integer >= 1, got {self.max_iter!r}.")
        if not self.tol >= 0:
            raise ValueError(f"tol must be >= 0, got {self.tol!r}.")

    _live_params = ("reg",)

    def _solve(self, values, start, progress):
        import ot

        reg = float(values["reg"])
        M = self._cost()
        a = ot.unif(M.shape[0])  # POT's uniform marginals (distribution_estimation_uniform)
        b = ot.unif(M.shape[1])
        warm = None
        if start is not None and start["state"] is not None:
            f, g = start["state"]  # dual potentials, in the cost's units
            # the plain and log solvers start from log-scalings f / reg; the stabilised one
            # from the potentials themselves
            warm = (f, g) if self.method == "sinkhorn_stabilized" else (f / reg, g / reg)
        progress(0.0, "Sinkhorn iterations")
        if self.method == "sinkhorn":
            G, log = sinkhorn_knopp(a, b, M, reg, numItermax=self.max_iter, stopThr=self.tol,
                                    warmstart=warm)
        else:
            G, log = ot.sinkhorn(a, b, M, reg, method=self.method, numItermax=self.max_iter,
                                 stopThr=self.tol, log=True, warmstart=warm)
        if "logu" in log:  # stabilised: absorbed potentials plus the last scalings
            lu, lv = log["logu"], log["logv"]
        elif "log_u" in log:
            lu, lv = log["log_u"], log["log_v"]
        else:
            with np.errstate(divide="ignore"):
                lu, lv = np.log(log["u"]), np.log(log["v"])
        state = (reg * lu, reg * lv) if np.isfinite(lu).all() and np.isfinite(lv).all() else None
        return np.asarray(G), state, {"n_iter_": int(log.get("niter", log.get("n_iter", -1)))}


def sinkhorn_knopp(a, b, M, reg, *, numItermax=1000, stopThr=1e-9, warmstart=None):
    """POT's ``ot.sinkhorn(..., method="sinkhorn", log=True)`` (Cuturi 2013), one pass over the
    kernel per iteration.

    The same iterates, start, stopping rule and warnings as POT 0.9's ``sinkhorn_knopp``:
    ``v = b / (K^T u)``, ``u = a / (K v)`` with ``K = exp(-M / reg)``; every 10th iteration
    (0, 10, 20, ...) it stops when ``||v * (K^T u) - b||_2 < stopThr`` (the violation of the
    column marginal); at a zero, NaN or infinite scaling it returns the previous iteration's.
    POT multiplies by K twice per iteration (``K^T u``, then ``K v``) and reads K a third time
    for the marginal check; here one sweep over K's rows computes ``K v`` row by row, the new
    ``u``, and ``K^T u`` for the next iteration and the check, so K (8 MB at 1,000 x 1,000) is
    read once per iteration, in a compiled loop that releases the GIL. Sums are reassociated
    by the compiler, so the coupling equals POT's to round-off (tested), not bit for bit.

    Parameters
    ----------
    a, b : ndarray of shape (ns,), (nt,)
        Marginals.
    M : ndarray of shape (ns, nt)
        Ground cost.
    reg : float
        Entropic regularisation.
    numItermax : int
    stopThr : float
    warmstart : (ndarray of shape (ns,), ndarray of shape (nt,)), optional
        Log-scalings to start from (POT's ``warmstart``); ``1 / ns``, ``1 / nt`` when None.

    Returns
    -------
    G : ndarray of shape (ns, nt)
    log : dict
        ``err`` (the checked marginal errors), ``niter`` (the last iteration's index, as
        POT), ``u``, ``v``.
    """
    a = np.ascontiguousarray(a, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    K = np.exp(np.asarray(M, dtype=np.float64) / (-reg))
    if warmstart is None:
        u = np.ones(a.size) / a.size
        v = np.ones(b.size) / b.size
    else:
        u = np.exp(np.asarray(warmstart[0], dtype=np.float64))
        v = np.exp(np.asarray(warmstart[1], dtype=np.float64))
    errs = np.zeros(numItermax // 10 + 1)
    ii, n_err, status = _sinkhorn_sweeps(K, a, b, u, v, int(numItermax), float(stopThr), errs)
    if status == _NUMERICAL_ERROR:
        warnings.warn("Warning: numerical errors at iteration %d" % ii)
    elif status == _MAX_ITER:
        warnings.warn("Sinkhorn did not converge. You might want to increase the number of "
                      "iterations `numItermax` or the regularization parameter `reg`.")
    log = {"err": list(errs[:n_err]), "niter": ii, "u": u, "v": v}
    return u.reshape((-1, 1)) * K * v.reshape((1, -1)), log


_CONVERGED, _NUMERICAL_ERROR, _MAX_ITER = 0, 1, 2


@numba.njit(nogil=True, cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _sinkhorn_sweeps(K, a, b, u, v, n_iter, stop, errs):  # pragma: no cover - compiled
    """Sinkhorn iterations on ``u``, ``v`` in place (see :func:`sinkhorn_knopp`).

    Returns (last iteration index, number of errors written to ``errs``, status)."""
    n, m = K.shape
    ktu = np.zeros(m)  # K^T u for the current u
    for i in range(n):
        ui = u[i]
        for j in range(m):
            ktu[j] += K[i, j] * ui
    u_prev = np.empty(n)
    v_prev = np.empty(m)
    n_err = 0
    ii = 0
    for ii in range(n_iter):
        u_prev[:] = u
        v_prev[:] = v
        zero = False
        for j in range(m):
            if ktu[j] == 0.0:
                zero = True
            v[j] = b[j] / ktu[j]
            ktu[j] = 0.0
        bad = zero
        for j in range(m):
            if not np.isfinite(v[j]):
                bad = True
        for i in range(n):
            s = 0.0
            for j in range(m):
                s += K[i, j] * v[j]
            ui = a[i] / s
            u[i] = ui
            if not np.isfinite(ui):
                bad = True
            for j in range(m):
                ktu[j] += K[i, j] * ui
        if bad:  # machine precision reached: back to the previous scalings
            u[:] = u_prev
            v[:] = v_prev
            return ii, n_err, 1
        if ii % 10 == 0:
            e = 0.0
            for j in range(m):
                d = v[j] * ktu[j] - b[j]
                e += d * d
            errs[n_err] = np.sqrt(e)
            n_err += 1
            if errs[n_err - 1] < stop:
                return ii, n_err, 0
    return ii, n_err, 2
