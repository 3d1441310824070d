"""Optimal-transport maps between images and texts (paper section 2.1).

Both methods fit a coupling ``G`` (uniform marginals 1/n) between the fitted rows of a *source*
modality and those of a *target* one, and map each fitted source row to its barycentre
``T(s_i) = sum_j G[i, j] t_j / sum_j G[i, j]`` (the barycentric mapping, Ferradans et al.
2014; POT's ``BaseTransport.transform``). The parameter ``direction`` says which side moves:

* ``"image_to_text"``: images are the source, texts the target and stay where they are: POT's
  ``ot.da.EMDLaplaceTransport`` / ``SinkhornTransport`` fitted with ``Xs`` = images,
  ``Xt`` = texts, images mapped by its ``transform``.
* ``"text_to_image"``: the same with the roles swapped: texts are POT's source (``Xs``),
  images its target, and stay.
* ``"both"`` (default): the coupling of ``"image_to_text"``; each side moves halfway along its
  transport, to the midpoint of McCann's displacement interpolation: an image ``x`` goes to
  ``(x + T(x)) / 2`` and a text ``y`` to ``(y + S(y)) / 2``, where
  ``S(y_j) = sum_i G[i, j] x_i / sum_i G[i, j]`` is the texts' barycentric map onto the
  images (POT's ``inverse_transform``). On the fitted rows the two centroids then coincide
  (each is the mean of the two modalities' centroids; G's marginals are uniform), and a
  pair that the coupling matches to each other lands on one point.

Why ``"both"`` is the default: mapping one side only leaves the other where it was, so its
queries keep their bias. On the simulated CLIP-like demo (2,500 pairs; fitted on a seeded half,
scored on the other half; raw ITR 178, TIR 155), Laplacian OT with ``"image_to_text"`` brings
ITR to 1.8 but leaves TIR at 7.7 (mixed-pool R@5 of image / text queries 0.53 / 0.23),
``"text_to_image"`` the mirror image (ITR 4.4, TIR 2.5), and ``"both"`` gives ITR 0.63, TIR
1.0 and R@5 0.69 / 0.62: both ratios low, the pattern the paper reports for OT (TIR 1.88,
IMR 3). Sinkhorn behaves alike.

* :class:`OTGap` (``"ot"``): Laplacian-regularised OT, POT's ``ot.da.EMDLaplaceTransport``
  (Flamary et al. 2014, "Optimal transport with Laplacian regularization"; Ferradans et al.
  2014): ``min_G <G, M> + reg_lap * Omega(G)``, where Omega asks source rows that are
  neighbours to stay neighbours after transport (``reg_src`` weighs the source graph against
  the target one).
* :class:`SinkhornGap` (``"sinkhorn"``): entropic OT, POT's ``ot.da.SinkhornTransport``
  (Cuturi 2013), the fast sibling.

Rows are L2-normalised first and the ground cost is POT's default squared Euclidean distance,
``2 - 2 cos`` on the sphere. Mapped rows are barycentres of unit rows (or midpoints) and are
not renormalised (they lie inside the sphere; the measures normalise rows).

Rows not seen in ``fit`` (out of sample)
----------------------------------------
The paper fits on one set of pairs and transforms another, which is this path. Both methods
offer POT's ``"ferradans"`` rule (``BaseTransport.transform``, Ferradans et al. 2014): the
nearest fitted row ``s_nn`` of the same modality plus its displacement,
``T(s_nn) + s - s_nn`` (and for the target side of ``"both"``, ``S(t_nn) + t - t_nn``, POT's
``inverse_transform``). Unlike POT, the barycentres are computed once per solution and reused
(POT recomputes the n x n x d product for each batch of 128 new rows), so transforming new
rows costs one nearest-neighbour search. :class:`SinkhornGap` also offers POT 0.9's
``"continuous"`` map (``SinkhornTransport(out_of_sample_map="continuous")``, Pooladian &
Niles-Weed 2021): the entropic map ``T(s) = sum_j exp((g_j - ||s - t_j||^2) / reg) t_j / sum_j
exp(...)`` with the target's fitted dual potential ``g`` (for the target side, the source's
``f``), which on the fitted rows equals the barycentric map.

Tuning the regularisation (``tune=True``)
-----------------------------------------
The paper tunes OT's regularisation "for each model using grid search". With ``tune=True``,
``fit`` does it inside the pairs it is given and nowhere else: a seeded split of them into
inner-train (80 %) and inner-validation (20 %) pairs; a fit on the inner-train pairs for each
grid point (``grid_reg_lap`` x ``grid_reg_src`` for ``"ot"``, ``grid_reg`` for
``"sinkhorn"``), scored on the inner-validation pairs by mixed-pool R@5 averaged over image
and text queries (:func:`gapviz.measures.measure_gap`; both sides, since a gain for one kind
of query can leave the other biased; ties go to the earlier grid point);
then the fit on all the given pairs at the best point (each inner fit, like the final one,
fits its coupling on at most ``fit_size`` of its pairs and maps the others out of sample, so
the grid is judged as the final fit is used). The method never sees other pairs, so
under any held-out protocol the tuning is nested in each fit and never sees a scored pair.
The grid, each point's inner scores and the chosen values are kept (``tune_results_``,
``tuned_params_``) and reported by :meth:`~_TransportGap.describe`. The chosen values replace
``reg_lap`` / ``reg_src`` / ``reg``, which the live sliders then cannot move (:meth:`refit`
refuses; :meth:`~_TransportGap.tuned_names` names them for a caller). Cost: one solve per
grid point on the inner pairs (the cost matrix and graphs computed once), then the final one;
on two shared CPUs a fit of 1,250 demo pairs with the default grids took 6-9 s (``"ot"``,
12 points) and 1-3 s (``"sinkhorn"``, 6 points), against 2 s and 0.5 s untuned.

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

import contextlib
import itertools
import numbers
import os
import sys
import threading
import time
import warnings
from collections import OrderedDict
from typing import Any, Hashable, Mapping, Sequence

import numba
import numpy as np
from scipy import sparse
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from ..config import BLOCK_VALUES
from ..threads import one_blas_thread
from .base import GapMethod, Param, ProgressCallback, Slider, _init_params, l2_normalize
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
#: Which side a transport moves (module docstring); the default moves both halfway.
DIRECTIONS = ("image_to_text", "text_to_image", "both")
DEFAULT_DIRECTION = "both"
#: Maps of rows not seen in fit: POT's nearest-neighbour displacement, and (Sinkhorn) POT's
#: entropic map.
OUT_OF_SAMPLE_MAPS = ("ferradans", "continuous")

#: ``tune=True``: the share of the fit pairs held out as inner validation, the fewest fit
#: pairs it accepts, the seed stream of its split (beside ``fit_size``'s subsample), the
#: recall depth of its criterion, and the default grids (the sliders' values).
TUNE_VALIDATION_SHARE = 0.2
TUNE_MIN_PAIRS = 10
_TUNE_STREAM = 11
TUNE_K = 5
TUNE_CRITERION = (f"mixed-pool R@{TUNE_K} of the inner-validation pairs, mean of image and text "
                  "queries (higher is better; ties to the earlier grid point)")
OT_TUNE_REG_LAP = (0.0, 10.0, 100.0, 1000.0)
OT_TUNE_REG_SRC = (0.0, 0.5, 1.0)
SINKHORN_TUNE_REG = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)

#: For each direction, the role of each modality: the source (mapped by T), the target (mapped
#: by S, only for "both") or None (stays).
_ROLES = {"image_to_text": {"image": "source", "text": None},
          "text_to_image": {"image": None, "text": "source"},
          "both": {"image": "source", "text": "target"}}


def _int_or_float(text: str) -> int | float:
    """A command-line number: ``3`` is a neighbour count (int), ``0.5`` a Gaussian sigma."""
    value = float(text)
    return int(value) if value.is_integer() else value


def _values_text(values: Mapping[str, float]) -> str:
    """``{"reg_lap": 10.0, "reg_src": 1.0}`` -> ``"reg_lap = 10, reg_src = 1"``."""
    return ", ".join(f"{k} = {float(v):g}" for k, v in values.items())


def float_grid(text: str) -> tuple[float, ...]:
    """A command-line grid of values: ``"0,10,100"`` -> ``(0.0, 10.0, 100.0)``."""
    return tuple(float(part) for part in text.replace(" ", "").split(",") if part)


#: Parameters both transport methods take: which side moves, tuning, the solver's stopping
#: rules and the fitted subsample.
_DIRECTION_PARAM = Param(
    "direction", "ot / sinkhorn: which side moves: image_to_text (images onto the texts, POT's "
    "source -> target), text_to_image, or both (each halfway along its transport; default)",
    flag="--direction", type=str, choices=DIRECTIONS, menu="Which side moves",
    labels=("images onto texts", "texts onto images", "both, halfway"))
_TUNE_PARAM = Param(
    "tune", "ot / sinkhorn: choose the regularisation by grid search inside the fit pairs "
    "(an inner train / validation split; the regularisation given, and its slider, are then "
    "unused)", flag="--tune", const=True)
_SOLVER_PARAMS = (
    Param("max_iter", "ot: conditional-gradient iterations (default 10); sinkhorn: "
          "iterations (default 1000)", flag="--max-iter", type=int),
    Param("tol", "ot / sinkhorn: stopping tolerance", flag="--tol", type=float),
    Param("fit_size", "ot / sinkhorn: pairs the coupling is fitted on (a seeded subsample; "
          "the others mapped out of sample; default 500 for ot, 1000 for sinkhorn)",
          flag="--fit-size", type=int, short="fit size"),
    Param("random_state", "random seed (spectral, vlap: initialisation; ot, sinkhorn: their "
          "fit_size subsample and tune's inner split; default 0)", flag="--seed", type=int,
          short="seed"),
)


class _Foreground:
    """The slider solves someone waits for, process-wide; solves ahead of time yield to them.

    A move solves the new value's couplings (one per fold) while the user waits;
    :meth:`_TransportGap.precompute` solves neighbouring values in the background meanwhile.
    On a busy machine both share a CPU or two, so a background solve pauses (between two
    solver iterations) while any foreground solve runs, unless a foreground move is waiting
    for that very solve (the value the user moved to, already under way). The memo and the
    in-flight solves are per fit; this only orders CPU time, never changes a result.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._wanted: set = set()

    @contextlib.contextmanager
    def solving(self):
        """A foreground solve runs in the block."""
        with self._cond:
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def awaiting(self, token: Hashable):
        """A foreground move waits in the block for the background solve ``token``."""
        with self._cond:
            self._wanted.add(token)
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._wanted.discard(token)

    def give_way(self, token: Hashable) -> None:
        """Called by the background solve ``token``: return once no foreground solve runs, or
        at once if a foreground move waits for this one."""
        with self._cond:
            self._cond.wait_for(lambda: self._active == 0 or token in self._wanted)


_FOREGROUND = _Foreground()


#: POT's switches for its optional array backends (``ot.backend``), read once, at its import.
POT_BACKEND_SWITCHES = ("POT_BACKEND_DISABLE_PYTORCH", "POT_BACKEND_DISABLE_JAX",
                        "POT_BACKEND_DISABLE_CUPY", "POT_BACKEND_DISABLE_TENSORFLOW")


def pot_numpy_backend_only() -> None:
    """Have POT, once imported, register its numpy backend only.

    POT's import otherwise imports every array library it finds installed (torch, jax, cupy,
    tensorflow) to register a backend for it: with torch installed beside it that is most of
    the 1.8 s POT takes to import on a 2-core machine, against 0.2 s without, and the first OT
    or Sinkhorn fit of a process waits for it. gapviz hands POT numpy arrays only, so the
    processes gapviz owns (the app's server, the command line) call this at their start. A
    program that imports gapviz and also gives POT torch tensors should not. A switch already
    set in the environment is kept; after POT's import this changes nothing.
    """
    if "ot" not in sys.modules:
        for key in POT_BACKEND_SWITCHES:
            os.environ.setdefault(key, "1")


def foreground():
    """Context manager: work a user waits for runs in the block (a page's measures of a moved
    slider's run), so the OT solves of :meth:`_TransportGap.precompute` pause meanwhile."""
    return _FOREGROUND.solving()


class _TransportGap(GapMethod):
    """Shared part: normalise, tune, fit a coupling, barycentric maps, out-of-sample maps.

    Subclasses implement :meth:`_solve` (one coupling for the given live values, from the
    data-only state in ``_cache``, optionally warm-started), :meth:`_check_live` (the rules of
    the live values), name their slider parameters in ``_live_params`` and their grids in
    ``_grids``.

    Attributes
    ----------
    coupling_ : ndarray of shape (n_fit, n_fit)
        The fitted coupling, float64, as POT's ``coupling_``: rows are the fitted source rows
        (images, or texts for ``direction="text_to_image"``), columns the fitted target rows.
    barycentric_ : ndarray of shape (n_fit, d)
        ``T(s_i)``, the fitted source rows' barycentres over the target rows (float32).
    inverse_barycentric_ : ndarray of shape (n_fit, d) or None
        ``S(t_j)``, the fitted target rows' barycentres over the source rows (float32), for
        ``direction="both"``; None otherwise.
    fit_index_ : ndarray of shape (n_fit,)
        Rows of the ``fit`` input the coupling was fitted on (all of them, or a seeded
        subsample of ``fit_size``); the other rows take the out-of-sample map.
    tuned_params_ : dict or None
        ``tune=True``: the live values the grid search chose (used instead of the given ones);
        None otherwise.
    tune_results_ : list of dict or None
        ``tune=True``: one entry per grid point, in grid order: its values, ``score`` (the
        criterion, :data:`TUNE_CRITERION`) and the inner-validation ``R@5``, ``R@5_t2i``,
        ``ITR``, ``TIR``.
    tune_index_ : tuple of (ndarray, ndarray) or None
        ``tune=True``: the inner-train and inner-validation rows of the ``fit`` input.
    fit_seconds_ : float
        Wall time of the last coupling solve (0 when :meth:`refit` found it solved already).
    warm_started_ : bool
        Whether the last solve started from the previous parameters' solution.
    """

    #: Parameters :meth:`refit` changes without recomputing what depends on the data only.
    _live_params: tuple[str, ...] = ()
    #: Live parameter -> the parameter holding its tuning grid, and that grid's default.
    _grids: dict[str, tuple[str, tuple[float, ...]]] = {}
    #: Solutions kept per parameter values, so that a slider moved back is instant.
    _MEMO_SIZE = 8

    # -- what the method says about itself -------------------------------------------------
    @classmethod
    def tuned_names(cls, params: Mapping[str, Any] | None = None) -> tuple[str, ...]:
        """The parameters a fit with ``params`` chooses itself (so that no slider or refit
        can set them): the live ones (``reg_lap``, ``reg_src``; ``reg``) when ``params``
        turn ``tune`` on, none otherwise. Missing parameters take their defaults."""
        values = {k: p.default for k, p in _init_params(cls).items()}
        values.update(params or {})
        return tuple(cls._live_params) if values.get("tune") else ()

    def _out_of_sample_map(self) -> str:
        """The rule for rows not seen in ``fit`` ("ferradans" or "continuous")."""
        return getattr(self, "out_of_sample", "ferradans")

    def describe(self) -> dict[str, Any]:
        """Name and parameters (with the direction and the out-of-sample rule), and for a fit
        with ``tune=True`` the grid search: criterion, split sizes, each grid point's inner
        scores and the chosen values. JSON-serialisable."""
        out = super().describe()
        if "out_of_sample" not in out["params"]:
            out["out_of_sample"] = self._out_of_sample_map()
        results = getattr(self, "tune_results_", None)
        if results is not None:
            train, val = self.tune_index_
            out["tuning"] = {
                "criterion": TUNE_CRITERION,
                "inner_train": int(train.size), "inner_validation": int(val.size),
                "seed": None if self.random_state is None else int(self.random_state),
                "grid": {k: list(v) for k, v in self._grid_axes().items()},
                "results": [{k: float(v) for k, v in r.items()} for r in results],
                "chosen": {k: float(v) for k, v in self.tuned_params_.items()},
            }
        return out

    @classmethod
    def format_params(cls, params: dict[str, Any]) -> str:
        """Parameters for people, always naming the direction (and Sinkhorn's out-of-sample
        rule; their defaults when not given). With ``tune`` on, the live parameters read
        "tuned" (the given values are not used) and a given grid reads "0/10/100"; with it
        off, ``tune`` and the grids are left out (they do nothing)."""
        defaults = {k: p.default for k, p in _init_params(cls).items()}
        grids = {grid for grid, _ in cls._grids.values()}
        shown = dict(params)
        for key in ("direction", "out_of_sample"):
            if key in defaults and key not in shown:
                shown[key] = defaults[key]
        tuned = bool(shown.pop("tune", False))
        out: dict[str, Any] = {k: "tuned" for k in cls._live_params} if tuned else {}
        for key, value in shown.items():
            if key in out or (key in grids and (not tuned or value is None)):
                continue
            if key in grids:
                value = "/".join(f"{float(v):g}" for v in value)
            out[key] = value
        return super().format_params(out)

    # -- fitting ------------------------------------------------------------------------------
    def _fit(self, X: np.ndarray, Y: np.ndarray, progress: ProgressCallback) -> None:
        self.tuned_params_ = self.tune_results_ = self.tune_index_ = None
        if self.tune:
            self._tune(X, Y, lambda f, m: progress(0.8 * f, f"tuning: {m}"))
            report = lambda f, m: progress(0.8 + 0.2 * f, m)  # noqa: E731
        else:
            report = progress
        Xn, Yn = l2_normalize(X), l2_normalize(Y)
        n = Xn.shape[0]
        if self.fit_size is not None and n > self.fit_size:
            rng = np.random.default_rng(self.random_state)
            self.fit_index_ = np.sort(rng.choice(n, size=int(self.fit_size), replace=False))
        else:
            self.fit_index_ = np.arange(n)
        # POT's source and target: images onto texts, or texts onto images
        src, tgt = (Yn, Xn) if self.direction == "text_to_image" else (Xn, Yn)
        xs = src[self.fit_index_].astype(np.float64)
        xt = tgt[self.fit_index_].astype(np.float64)
        # What depends on the fitted rows only (cost matrix, graphs): computed once, reused by
        # every refit. Solutions per parameter values: a small memo.
        self._cache = {"xs": xs, "xt": xt}
        self._fitted_as = self._fit_settings()
        self.direction_ = self.direction
        self.out_of_sample_ = self._out_of_sample_map()
        self._memo: OrderedDict = OrderedDict()
        self._pending: dict = {}  # memo keys being solved -> set when they are in the memo
        self._lock = threading.Lock()
        self.xs_ = xs.astype(np.float32)
        self.xt_ = xt.astype(np.float32)
        self._solve_and_map(report, warm=False)

    def _fit_settings(self) -> dict[str, Any]:
        """What a fit fixed (the pairs, the roles, the tuning): a refit may not change it."""
        names = ("fit_size", "random_state", "direction", "tune", "out_of_sample",
                 *(grid for grid, _ in self._grids.values()))
        return {k: repr(getattr(self, k)) for k in names if hasattr(self, k)}

    def _grid_axes(self) -> dict[str, tuple[float, ...]]:
        """Each live parameter's tuning grid (given, or the default), as floats."""
        return {k: tuple(float(v) for v in (getattr(self, grid) if getattr(self, grid) is not None
                                            else default))
                for k, (grid, default) in self._grids.items()}

    def _grid(self) -> list[dict[str, float]]:
        """The grid points, in order (the last live parameter varying fastest)."""
        axes = self._grid_axes()
        return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]

    @staticmethod
    def _tune_split(n: int) -> tuple[int, int]:
        """(inner-train, inner-validation) sizes of ``tune``'s split of n fit pairs."""
        n_val = max(2, int(round(TUNE_VALIDATION_SHARE * n)))
        return n - n_val, n_val

    def _tune(self, X: np.ndarray, Y: np.ndarray, progress: ProgressCallback) -> None:
        """Grid search inside the fit pairs ``X, Y`` (module docstring): sets
        ``tuned_params_``, ``tune_results_`` and ``tune_index_``."""
        from ..measures import measure_gap

        n = X.shape[0]
        n_val = self._tune_split(n)[1]
        seed = None if self.random_state is None else [int(self.random_state), _TUNE_STREAM]
        order = np.random.default_rng(seed).permutation(n)
        val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
        grid = self._grid()
        # One inner fit on the inner-train pairs; each grid point is a cold refit of it, which
        # gives the coupling a fresh fit at that point gives, bit for bit, and reuses the cost
        # matrix and the graphs.
        inner = clone(self).set_params(tune=False, **grid[0])
        inner.fit(X[train], Y[train])
        results = []
        for i, values in enumerate(grid):
            progress(i / len(grid), "grid point " + _values_text(values))
            if i:
                inner.refit(**values)
            m = measure_gap(*inner.transform(X[val], Y[val]), ks=(TUNE_K,)).metrics
            i2t, t2i = m[f"R@{TUNE_K}"], m[f"R@{TUNE_K}_t2i"]
            results.append({**values, "score": (i2t + t2i) / 2, f"R@{TUNE_K}": i2t,
                            f"R@{TUNE_K}_t2i": t2i, "ITR": m["ITR"], "TIR": m["TIR"]})
        best = max(range(len(grid)), key=lambda i: (results[i]["score"], -i))
        self.tuned_params_ = dict(grid[best])
        self.tune_results_ = results
        self.tune_index_ = (train, val)
        progress(1.0, "chose " + _values_text(self.tuned_params_))

    def _live_values(self) -> dict[str, Any]:
        """The live values the coupling is solved with: the tuned ones, else the given ones."""
        tuned = getattr(self, "tuned_params_", None)
        if self.tune and tuned is not None:
            return dict(tuned)
        return {k: getattr(self, k) for k in self._live_params}

    def refit(self, *, warm_start: bool | None = None, progress: ProgressCallback | None = None,
              **params: Any) -> "_TransportGap":
        """Solve again for new slider values on the same fitted pairs; returns ``self``.

        Reuses everything that depends on the data only (the fit subsample, the cost matrix,
        the similarity graphs) and keeps the last few solutions, so a value seen before costs
        nothing. By default (a cold start) the result is the coupling ``fit`` would give with
        these parameters, bit for bit: same solver, same start, same stopping point.

        A fit with ``tune=True`` chose its live values itself: a refit to the values it was
        given does nothing (the tuned solution stays), and any other value is refused (fit
        with ``tune=False`` to set it).

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
        changed = sorted(k for k, v in self._fit_settings().items() if v != self._fitted_as.get(k))
        if changed:
            raise ValueError(f"{', '.join(changed)} changed since fit: they choose the fitted "
                             "pairs or how they are mapped, so fit again.")
        report = progress if progress is not None else (lambda f, m: None)
        if self.tune:
            moved = sorted(k for k, v in params.items() if v != getattr(self, k))
            if moved:
                raise ValueError(
                    f"this fit chose {', '.join(self._live_params)} by grid search on its fit "
                    f"pairs (tune=True chose {_values_text(self.tuned_params_)}); "
                    f"{', '.join(moved)} cannot be set on it: fit with tune=False to set them.")
            report(1.0, "done")
            return self
        old = {k: getattr(self, k) for k in params}
        for k, v in params.items():
            setattr(self, k, v)
        try:
            self._validate_parameters(self.fit_index_.size, self.xs_.shape[1])
        except ValueError:
            for k, v in old.items():
                setattr(self, k, v)
            raise
        self._solve_and_map(report, warm=bool(warm_start))
        report(1.0, "done")
        return self

    def precompute(self, param_sets: Sequence[dict[str, Any]]) -> None:
        """Solve for other slider values ahead of time (for a background thread).

        Each dict gives live parameter values; their solutions (cold starts: the couplings
        ``fit`` gives) go to the memo that :meth:`refit` reads. The method's own state
        (``coupling_``, ``barycentric_``, parameters) is not changed. Parameters missing from
        a dict keep their current value. These solves give way to the slider moves under way
        in the process (they pause between solver iterations while one solves), and a
        :meth:`refit` to a value solved here at that moment waits for it rather than solving
        it twice. A fit with ``tune=True`` takes no other values, so
        there is nothing to solve ahead: it returns at once.
        """
        if self.tune:
            return
        for params in param_sets:
            unknown = sorted(set(params) - set(self._live_params))
            if unknown:
                raise ValueError(f"precompute takes only {', '.join(self._live_params)}, "
                                 f"not {', '.join(unknown)}.")
            values = {k: params.get(k, getattr(self, k)) for k in self._live_params}
            key = self._key(values)
            with self._lock:
                if key in self._memo or key in self._pending:
                    continue
                done = self._pending[key] = threading.Event()
            token = (id(self), key)
            # a move the user waits for goes first: give way before and during the solve
            give_way = lambda f, m: _FOREGROUND.give_way(token)  # noqa: E731
            try:
                give_way(0.0, "")
                with one_blas_thread(2):  # one BLAS thread: see _solve_and_map
                    G, state, info = self._solve(values, None, give_way)
                    maps = self._barycentres(G)
                with self._lock:
                    self._remember(key, G, state, info, maps, 0.0)
            finally:
                with self._lock:
                    self._pending.pop(key, None)
                done.set()

    # -- validation ---------------------------------------------------------------------------
    def _validate_common(self, n_pairs: int) -> None:
        """The rules both methods share: direction, out-of-sample rule, fit_size, tuning."""
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}.")
        rule = self._out_of_sample_map()
        if rule not in OUT_OF_SAMPLE_MAPS:
            raise ValueError(f"out_of_sample must be one of {OUT_OF_SAMPLE_MAPS}, got {rule!r}.")
        self._validate_fit_size()
        if not isinstance(self.tune, (bool, np.bool_)):
            raise ValueError(f"tune must be True or False, got {self.tune!r}.")
        for live, (grid, _) in self._grids.items():
            values = getattr(self, grid)
            if values is None:
                continue
            if (isinstance(values, (str, bytes)) or not isinstance(values, Sequence)
                    or not len(values)):
                raise ValueError(f"{grid} must be a non-empty sequence of {live} values (or None "
                                 f"for the default grid), got {values!r}.")
            for v in values:
                if (isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real)
                        or not np.isfinite(float(v))):
                    raise ValueError(f"{grid} must hold finite numbers, got {v!r} in {values!r}.")
        if self.tune:
            if n_pairs < TUNE_MIN_PAIRS:
                raise ValueError(f"tune=True splits the fit pairs into inner-train and "
                                 f"inner-validation pairs: it needs at least {TUNE_MIN_PAIRS} "
                                 f"pairs, got {n_pairs}; fit on more pairs or set the "
                                 "regularisation yourself (tune=False).")
            for values in self._grid():
                self._check_live(values, grid=True)

    def _check_live(self, values: Mapping[str, Any], grid: bool = False) -> None:
        """Raise one precise ``ValueError`` for a live value out of range (``grid``: a value of
        the tuning grid)."""
        raise NotImplementedError

    def _validate_fit_size(self) -> None:
        fs = self.fit_size
        if fs is not None and (not isinstance(fs, (int, np.integer)) or isinstance(fs, bool) or fs < 2):
            raise ValueError(f"fit_size must be an integer >= 2 (pairs the coupling is fitted on) "
                             f"or None for all pairs, got {fs!r}.")

    # -- internals ---------------------------------------------------------------------------
    def _key(self, values: dict[str, Any] | None = None, warm: bool = False) -> tuple:
        """Memo key: the live values, every other parameter, and whether the solution was
        warm-started (it may then differ from the cold solve ``fit`` gives)."""
        values = values if values is not None else self._live_values()
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

    def _barycentres(self, G: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(T(s_i), S(t_j))`` for the fitted rows under coupling G, float32 (n_fit, d):
        the source rows' barycentres over the targets, and for ``direction="both"`` the
        target rows' over the sources (POT's ``transform`` and ``inverse_transform`` on the
        fitted samples), else None."""
        # Once per solution, in float32 like every output. A Laplacian-OT coupling is a mix of
        # at most max_iter + 1 exact-OT vertices (a few non-zeros per row): a sparse product.
        dense = np.count_nonzero(G) >= G.size // 8

        def barycentres(P, rows_of):
            with np.errstate(divide="ignore", invalid="ignore"):
                transp = np.nan_to_num(P / P.sum(1)[:, None], nan=0.0, posinf=0.0, neginf=0.0)
            if not dense:
                return np.asarray(sparse.csr_matrix(transp) @ rows_of).astype(np.float32)
            return transp.astype(np.float32) @ rows_of.astype(np.float32)

        forward = barycentres(G, self._cache["xt"])
        inverse = barycentres(G.T, self._cache["xs"]) if self.direction_ == "both" else None
        return forward, inverse

    def _remember(self, key, G, state, info, maps, seconds) -> None:
        self._memo[key] = {"G": G, "state": state, "info": info, "maps": maps, "seconds": seconds}
        self._memo.move_to_end(key)
        while len(self._memo) > self._MEMO_SIZE:
            self._memo.popitem(last=False)

    def _solve_and_map(self, progress: ProgressCallback, warm: bool) -> None:
        key = self._key(warm=warm)
        values = self._live_values()
        with self._lock:
            hit = self._memo.get(key)
            pending = self._pending.get(key) if hit is None else None
        if pending is not None:  # solved right now (ahead of time, or by another move): wait
            with _FOREGROUND.awaiting((id(self), key)):
                pending.wait()
            with self._lock:
                hit = self._memo.get(key)
        with self._lock:
            start = (self._memo.get(getattr(self, "_current", None)) or self._nearest(key)) if warm else None
            done = None
            if hit is None and key not in self._pending:
                done = self._pending[key] = threading.Event()
        self.warm_started_ = False
        if hit is None:
            try:
                with _FOREGROUND.solving():
                    hit = self._solve_now(key, values, start, progress)
            finally:
                if done is not None:
                    with self._lock:
                        self._pending.pop(key, None)
                    done.set()
        else:
            self.fit_seconds_ = 0.0
        self._current = key
        self.coupling_ = hit["G"]
        self.barycentric_, self.inverse_barycentric_ = hit["maps"]
        self._state = hit["state"]
        self._reg = values.get("reg")
        for k, v in hit["info"].items():
            setattr(self, k, v)

    def _solve_now(self, key, values, start, progress) -> dict:
        """Solve ``values`` (from ``start``, or cold) and map, keep it in the memo; its entry."""
        t0 = time.perf_counter()
        # BLAS on one thread for every solve and its barycentres. The products' rounding then
        # does not depend on the thread count, so a refit gives the coupling and the mapped
        # points of ``fit`` bit for bit whatever the load (a fit holds BLAS to one thread on a
        # busy machine); and up to 1,000 fitted pairs the products are small beside the
        # serial exact-OT and Sinkhorn steps: BLAS threads spinning beside them, and beside
        # the app's other threads, cost twice the time on two shared CPUs.
        with one_blas_thread(2):
            G, state, info = self._solve(values, start, progress)
            maps = self._barycentres(G)
        seconds = time.perf_counter() - t0
        with self._lock:
            self._remember(key, G, state, info, maps, seconds)
            hit = self._memo[key]
        self.warm_started_ = start is not None
        self.fit_seconds_ = seconds
        return hit

    def _solve(self, values: dict[str, Any], start, progress: ProgressCallback):
        """(coupling, warm-start state, attributes to set) for the live ``values``."""
        raise NotImplementedError

    def _cost(self) -> np.ndarray:
        """POT's cost (``BaseTransport.fit``: squared Euclidean distances), computed once."""
        if "M" not in self._cache:
            import ot  # POT's import pulls in every backend it finds (torch...): lazily

            self._cache["M"] = ot.dist(self._cache["xs"], self._cache["xt"])
        return self._cache["M"]

    # -- transforms ---------------------------------------------------------------------------
    def _transform_images(self, X: np.ndarray) -> np.ndarray:
        return self._move(l2_normalize(X), "image")

    def _transform_texts(self, Y: np.ndarray) -> np.ndarray:
        return self._move(l2_normalize(Y), "text")

    def _move(self, A: np.ndarray, modality: str) -> np.ndarray:
        """Unit rows ``A`` of one modality where the fitted transport puts them (float32)."""
        role = _ROLES[self.direction_][modality]
        if role is None:  # the target of a one-sided map stays where it is
            return A
        mapped = self._map(A, role)
        if self.direction_ == "both":
            # halfway along the transport: the midpoint of the displacement interpolation
            return (A + mapped) * np.float32(0.5)
        return mapped

    def _map(self, A: np.ndarray, role: str) -> np.ndarray:
        """The barycentric map of unit rows ``A`` of the ``role`` side ("source": T onto the
        targets; "target": S onto the sources), fitted rows exactly, others by the
        out-of-sample rule."""
        fitted, bary = ((self.xs_, self.barycentric_) if role == "source"
                        else (self.xt_, self.inverse_barycentric_))
        if A.shape == fitted.shape and np.array_equal(A, fitted):
            return bary.copy()
        if self.out_of_sample_ == "continuous":
            return self._continuous_map(A, role)
        # POT's BaseTransport.transform (inverse_transform for the target side): the nearest
        # fitted row plus its displacement. For unit rows the nearest in squared Euclidean
        # distance is the most cosine-similar. A fitted row (also within a larger input when
        # fit_size subsampled it) is its own nearest, with displacement 0: its barycentre.
        nn = np.empty(A.shape[0], np.int64)
        rows = max(1, BLOCK_VALUES // fitted.shape[0])
        for i0 in range(0, A.shape[0], rows):
            nn[i0:i0 + rows] = np.argmax(A[i0:i0 + rows] @ fitted.T, axis=1)
        return bary[nn] + A - fitted[nn]

    def _continuous_map(self, A: np.ndarray, role: str) -> np.ndarray:
        """POT 0.9's ``SinkhornTransport(out_of_sample_map="continuous")`` map of unit rows
        ``A`` (its ``transform`` for the source side, ``inverse_transform`` for the target
        side): ``sum_j exp(-||a - z_j||^2 / reg + h_j) z_j / sum_j exp(...)`` over the fitted
        rows ``z`` of the other side, with their log-scalings ``h`` (``log v`` for the source
        side, ``log u`` for the target side). Computed in float64 with each row's largest
        exponent taken out (the same ratio, without POT's overflow at small ``reg``)."""
        import ot

        if self._state is None:
            raise ValueError("the continuous out-of-sample map needs the fit's dual potentials, "
                             f"and at reg={self._reg:g} the {getattr(self, 'method', '')!r} "
                             "solver's scalings under- or overflowed; use "
                             "method='sinkhorn_log' or out_of_sample='ferradans'.")
        reg = float(self._reg)
        f, g = self._state
        other, log_scaling = ((self._cache["xt"], g / reg) if role == "source"
                              else (self._cache["xs"], f / reg))
        out = np.empty((A.shape[0], other.shape[1]), np.float32)
        rows = max(1, BLOCK_VALUES // other.shape[0])
        for i0 in range(0, A.shape[0], rows):
            a = A[i0:i0 + rows].astype(np.float64)
            z = -ot.dist(a, other) / reg + log_scaling[None, :]
            z -= z.max(axis=1, keepdims=True)
            w = np.exp(z)
            out[i0:i0 + rows] = (w @ other) / w.sum(axis=1)[:, None]
        return out


class OTGap(_TransportGap):
    """Laplacian-regularised optimal transport between images and texts (POT
    ``EMDLaplaceTransport``).

    Solves ``min_G <G, M> + reg_lap * Omega(G)`` over couplings with uniform marginals
    (Flamary et al. 2014; Ferradans et al. 2014), where ``M[i, j] = ||s_i - t_j||^2`` between
    the source rows ``s`` and the target rows ``t`` (``direction``: images onto texts, texts
    onto images, or the images-onto-texts coupling with both sides moving halfway) and, for
    ``reg_type="pos"``,
    ``Omega(G) = reg_src * tr(T_s^T L_s T_s) + (1 - reg_src) * tr(T_t^T L_t T_t)`` with
    ``T_s = G X_t`` and ``T_t = G^T X_s`` (POT's ``emd_laplace``; L_s, L_t are the Laplacians of
    the similarity graphs of the source and of the target rows). Parameters are POT's.

    Parameters
    ----------
    reg_lap : float, default=100.0
        Weight of the Laplacian term (POT's ``reg_lap``, ``eta``). The term scales like 1/N
        against the transport cost (G's entries are 1/N), so values of order 10-1000 matter at
        N in the thousands; 0 is plain exact OT.
    reg_src : float, default=1.0
        Share of the source graph in the regulariser, in [0, 1] (POT's ``reg_src``, ``alpha``):
        1 keeps source rows that are neighbours close after transport. The source is the
        images, or the texts for ``direction="text_to_image"``.
    direction : {"image_to_text", "text_to_image", "both"}, default="both"
        Which side moves (module docstring): images onto the texts (POT's source -> target,
        texts stay), texts onto the images (POT fitted with texts as its source), or both
        halfway along the images-onto-texts coupling (the default: ITR and TIR both low, as
        the paper reports; a one-sided map leaves the other side's queries biased).
    reg_type : {"pos", "disp"}, default="pos"
        Regularise positions (Flamary et al. 2014) or displacements (Ferradans et al. 2014).
    similarity : {"knn", "gauss"}, default="knn"
        Graph of each modality: symmetrised kNN connectivity or a Gaussian kernel.
    similarity_param : int or float, optional
        Neighbours for ``"knn"`` (POT default 3) or the Gaussian's sigma for ``"gauss"`` (POT
        default ``1 / (2 * mean(squared distance)^2)``).
    tune : bool, default=False
        Choose ``reg_lap`` and ``reg_src`` by grid search inside the fit pairs (module
        docstring); the given ``reg_lap``, ``reg_src`` are then not used.
    grid_reg_lap, grid_reg_src : sequence of float, optional
        The grid of ``tune`` (their product, ``reg_src`` varying fastest); default
        ``(0, 10, 100, 1000)`` x ``(0, 0.5, 1)``.
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
        Seed of the ``fit_size`` subsample and of ``tune``'s inner split.

    Attributes
    ----------
    n_iter_ : int
        Conditional-gradient iterations run.
    loss_ : list of float
        Objective after each iteration.
    (and those of the shared base: ``coupling_``, ``barycentric_``, ``tuned_params_``, ...)
    """

    name = "ot"
    label = "Laplace OT (EMD)"
    menu_rank = 10
    params_info = (
        Param("reg_lap", "ot: Laplacian regularisation weight (POT reg_lap; default 100)",
              flag="--reg-lap", type=float,
              slider=Slider("Laplacian regularisation (reg_lap)",
                            options=(0.0, 1.0, 10.0, 30.0, 100.0, 300.0, 1000.0),
                            help="Weight of the term that keeps neighbouring source rows "
                                 "neighbours after transport; 0 is plain exact OT.")),
        Param("reg_src", "ot: share of the source graph (images; texts for text_to_image) in "
              "the regulariser, 0..1 (default 1)",
              flag="--reg-src", type=float,
              slider=Slider("Source graph share (reg_src)", lo=0.0, hi=1.0, step=0.1,
                            help="1: regularise with the source graph only (the images; the "
                                 "texts when texts are mapped onto images); 0: the target "
                                 "graph only.")),
        _DIRECTION_PARAM,
        Param("reg_type", "ot: regularise positions (default) or displacements",
              flag="--reg-type", type=str, choices=("pos", "disp")),
        Param("similarity", "ot: similarity graph of each modality (default knn)",
              flag="--similarity", type=str, choices=("knn", "gauss")),
        Param("similarity_param", "ot: neighbours (knn, default 3) or Gaussian sigma",
              flag="--similarity-param", type=_int_or_float),
        _TUNE_PARAM,
        Param("grid_reg_lap", "ot --tune: reg_lap values to try, comma-separated (default "
              "0,10,100,1000)", flag="--grid-reg-lap", type=float_grid, short="reg_lap grid"),
        Param("grid_reg_src", "ot --tune: reg_src values to try, comma-separated (default "
              "0,0.5,1)", flag="--grid-reg-src", type=float_grid, short="reg_src grid"),
    ) + _SOLVER_PARAMS
    summary = ("Laplacian-regularised optimal transport between images and texts (POT "
               "EMDLaplaceTransport; by default both sides move halfway; unseen rows: nearest "
               "fitted row plus its displacement)")
    uses_pairing = False
    default_protocol = "held-out"
    _live_params = ("reg_lap", "reg_src")
    _grids = {"reg_lap": ("grid_reg_lap", OT_TUNE_REG_LAP),
              "reg_src": ("grid_reg_src", OT_TUNE_REG_SRC)}

    def __init__(self, reg_lap: float = 100.0, reg_src: float = 1.0, *,
                 direction: str = DEFAULT_DIRECTION, reg_type: str = "pos",
                 similarity: str = "knn", similarity_param: float | None = None,
                 tune: bool = False, grid_reg_lap: Sequence[float] | None = None,
                 grid_reg_src: Sequence[float] | None = None,
                 max_iter: int = 10, tol: float = 1e-6, max_inner_iter: int = 100000,
                 inner_tol: float = 1e-9, fit_size: int | None = OT_FIT_SIZE, random_state: int = 0):
        self.reg_lap = reg_lap
        self.reg_src = reg_src
        self.direction = direction
        self.reg_type = reg_type
        self.similarity = similarity
        self.similarity_param = similarity_param
        self.tune = tune
        self.grid_reg_lap = grid_reg_lap
        self.grid_reg_src = grid_reg_src
        self.max_iter = max_iter
        self.tol = tol
        self.max_inner_iter = max_inner_iter
        self.inner_tol = inner_tol
        self.fit_size = fit_size
        self.random_state = random_state

    def _check_live(self, values, grid=False):
        where = " in the tuning grid (grid_reg_lap)" if grid else ""
        if not values["reg_lap"] >= 0:
            raise ValueError(f"reg_lap must be >= 0, got {values['reg_lap']!r}{where}.")
        where = " in the tuning grid (grid_reg_src)" if grid else ""
        if not 0 <= values["reg_src"] <= 1:
            raise ValueError(f"reg_src must be in [0, 1] (the source graph's share), got "
                             f"{values['reg_src']!r}{where}.")

    def _validate_parameters(self, n_pairs: int, dim: int) -> None:
        require_finite(self, "reg_lap", "reg_src", "similarity_param", "tol", "inner_tol")
        self._validate_common(n_pairs)
        if self.tune:  # the inner fits see the inner-train pairs only
            n_pairs = self._tune_split(n_pairs)[0]
        if self.fit_size is not None:
            n_pairs = min(n_pairs, int(self.fit_size))
        self._check_live({"reg_lap": self.reg_lap, "reg_src": self.reg_src})
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
                inner = " (tune's inner-train pairs)" if self.tune else ""
                raise ValueError(f"the kNN similarity graph needs more points than neighbours: "
                                 f"similarity_param={k} with N={n_pairs} pairs{inner}; use "
                                 f"N > {k} or a smaller similarity_param.")
        for name in ("max_iter", "max_inner_iter"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}.")
        for name in ("tol", "inner_tol"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}.")

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
            # the first step's cost is M plus a nearly zero gradient: start it from the duals
            # of the assignment on M alone (data only, so a fit and every refit share them)
            self._cache["duals"] = (assignment_step(self._cost())[2]
                                    if self._cache["lp"] == "assignment" else None)
        G, log = emd_laplace_factored(
            a, b, xs, xt, self._cost(), sim=self.similarity, sim_param=self.similarity_param,
            reg=self.reg_type, eta=values["reg_lap"], alpha=values["reg_src"],
            numItermax=self.max_iter, stopThr=self.tol, numInnerItermax=self.max_inner_iter,
            stopInnerThr=self.inner_tol, progress=progress,
            G0=None if start is None else start["G"], graphs=self._cache[key],
            lp=self._cache["lp"], duals=self._cache["duals"])
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
    optimal vertices are the permutation matrices / N (Birkhoff), and shortest augmenting
    paths (:func:`assignment_step`, scipy's ``linear_sum_assignment`` algorithm) find one in
    a fraction of the network simplex's time at N = 500. Where the optimum is unique the two
    give the same coupling, bit for bit (tested).
    Duplicated points (an image with several captions) make ties, between which the two
    solvers choose differently; the network simplex then keeps POT's choice.
    """
    if not (a.shape == b.shape and np.all(a == a[0]) and np.all(b == a[0])):
        return "emd"
    distinct = (np.unique(xs, axis=0).shape[0] == xs.shape[0]
                and np.unique(xt, axis=0).shape[0] == xt.shape[0])
    return "assignment" if distinct else "emd"



def assignment_step(C, duals=None):
    """An optimal assignment of the square cost ``C``, by shortest augmenting paths started
    from the column duals ``duals``.

    scipy's ``linear_sum_assignment`` algorithm (Crouse 2016, "On implementing 2D rectangular
    assignment algorithms"; the same scan order and tie rule, so from zero duals it returns
    scipy's assignment, tested), compiled without the GIL and started from given column
    duals: the Jonker-Volgenant warm start (Jonker & Volgenant 1987). Rows are augmented one
    by one; each search starts with no row assigned, so any duals are a valid start, and
    near-optimal ones (the previous conditional-gradient step's: its cost differs little)
    send most rows straight to their column. The result is an optimal assignment whatever
    the start; where the optimum is unique it is the same one.

    Parameters
    ----------
    C : ndarray of shape (n, n)
        Finite costs.
    duals : ndarray of shape (n,), optional
        Column duals to start from; zeros when None.

    Returns
    -------
    rows, cols : ndarray of shape (n,)
        ``rows = arange(n)``, ``cols[i]`` the column assigned to row i.
    duals : ndarray of shape (n,)
        The optimal column duals (a start for a nearby cost).
    """
    C = np.ascontiguousarray(C, dtype=np.float64)
    if C.ndim != 2 or C.shape[0] != C.shape[1]:
        raise ValueError(f"assignment_step takes a square cost matrix, got shape {C.shape}.")
    n = C.shape[0]
    v = np.zeros(n) if duals is None else np.array(duals, dtype=np.float64)
    if v.shape != (n,):
        raise ValueError(f"duals must have shape ({n},), got {v.shape}.")
    cols, ok = _augmenting_paths(C, v)
    if not ok:
        raise ValueError("the assignment cost has no finite optimum (infinite or NaN costs).")
    return np.arange(n), cols, v


@numba.njit(nogil=True, cache=True)
def _augmenting_paths(C, v):  # pragma: no cover - compiled
    """scipy's ``solve`` / ``augmenting_path`` (rectangular_lsap.cpp) on a square ``C``, from
    column duals ``v`` (updated in place). Returns (column of each row, whether it is finite)."""
    n = C.shape[0]
    u = np.zeros(n)
    col4row = np.full(n, -1, np.int64)
    row4col = np.full(n, -1, np.int64)
    path = np.full(n, -1, np.int64)
    dist = np.empty(n)  # shortest path costs
    seen_row = np.zeros(n, np.bool_)
    seen_col = np.zeros(n, np.bool_)
    remaining = np.empty(n, np.int64)
    for cur in range(n):
        min_val = 0.0
        n_rem = n
        for k in range(n):
            remaining[k] = n - k - 1
            seen_row[k] = False
            seen_col[k] = False
            dist[k] = np.inf
        sink = -1
        i = cur
        while sink == -1:  # Dijkstra on the reduced costs, from row cur to a free column
            index = -1
            lowest = np.inf
            seen_row[i] = True
            ui = u[i]
            for k in range(n_rem):
                j = remaining[k]
                r = min_val + C[i, j] - ui - v[j]
                if r < dist[j]:
                    path[j] = i
                    dist[j] = r
                if dist[j] < lowest or (dist[j] == lowest and row4col[j] == -1):
                    lowest = dist[j]
                    index = k
            min_val = lowest
            if min_val == np.inf:
                return col4row, False
            j = remaining[index]
            if row4col[j] == -1:
                sink = j
            else:
                i = row4col[j]
            seen_col[j] = True
            n_rem -= 1
            remaining[index] = remaining[n_rem]
        u[cur] += min_val  # the duals stay feasible, tight on the assignment
        for i in range(n):
            if seen_row[i] and i != cur:
                u[i] += min_val - dist[col4row[i]]
        for j in range(n):
            if seen_col[j]:
                v[j] -= min_val - dist[j]
        j = sink  # augment along the path
        while True:
            i = path[j]
            row4col[j] = i
            k = col4row[i]
            col4row[i] = j
            j = k
            if i == cur:
                break
    return col4row, True

def emd_laplace_factored(a, b, xs, xt, M, *, sim="knn", sim_param=None, reg="pos", eta=1.0,
                         alpha=0.5, numItermax=100, stopThr=1e-9, numInnerItermax=100000,
                         stopInnerThr=1e-9, progress: ProgressCallback | None = None,
                         G0=None, graphs=None, lp: str = "auto", duals=None):
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
      distinct points (:func:`exact_ot_step`), solved by shortest augmenting paths started
      from the previous step's duals (:func:`assignment_step`): successive linearisations
      differ little, so most rows find their column at once (3-4x faster than a cold start
      at N = 500 on the demo).

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
        own), ``"assignment"`` shortest augmenting paths (:func:`assignment_step`; uniform
        marginals, ns = nt only), ``"auto"`` the one :func:`exact_ot_step` picks.
    duals : ndarray of shape (nt,), optional
        ``"assignment"``: column duals to start the first exact-OT step from (each later
        step starts from the step before's), e.g. those of the assignment on ``M`` alone:
        the first gradient is nearly zero, as the Laplacians annihilate the start's equal
        rows. Zeros when None. Any start gives an optimal assignment (the same one where
        the optimum is unique); the same start gives the same iterates, bit for bit.

    Returns
    -------
    G : ndarray of shape (ns, nt)
    log : dict
        POT's log (``loss`` per iteration; with ``"emd"``, the last inner EMD log).
    """
    import ot
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
    duals = None if duals is None else np.array(duals, dtype=np.float64)
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
            # warm: the last step's column duals (the next Mi differs little from this one)
            rows, cols, duals = assignment_step(Mi, duals)
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
    """Entropic optimal transport between images and texts (POT ``SinkhornTransport``,
    Cuturi 2013).

    ``min_G <G, M> - reg * H(G)`` over couplings with uniform marginals; the fast sibling of
    :class:`OTGap`: a few hundred matrix-vector products instead of exact OT solves.

    Parameters
    ----------
    reg : float, default=0.05
        Entropic regularisation (POT's ``reg_e``), in the cost's units (``2 - 2 cos``). Smaller
        is sharper and slower; much above 0.1 every row is mapped near the other side's mean.
    direction : {"image_to_text", "text_to_image", "both"}, default="both"
        Which side moves, as for :class:`OTGap` (module docstring).
    out_of_sample : {"ferradans", "continuous"}, default="ferradans"
        Map of rows not seen in ``fit``. ``"ferradans"``: the nearest fitted row of the same
        modality plus its displacement (POT's ``BaseTransport.transform``, the rule of every
        other POT transport and of :class:`OTGap`). ``"continuous"``: POT 0.9's entropic map
        (``SinkhornTransport``'s default, Pooladian & Niles-Weed 2021): a softmax of
        ``-||x - y_j||^2 / reg`` plus the fitted dual potential over the other side's fitted
        rows. Both give the barycentric map on the fitted rows. ``"ferradans"`` stays the
        default because held out it is far better: on the simulated CLIP-like demo (fitted on
        a seeded half of 2,500 pairs, scored on the other half, reg 0.05) mixed-pool R@5 is
        0.72 against 0.40 with ``direction="both"`` and 0.52 against 0.00 with
        ``"image_to_text"``, at every reg from 0.01 to 0.1 alike (fitted on 5,000 other
        pairs with ``fit_size=5000``: 0.71 against 0.33, 0.52 against 0.00). In 512
        dimensions a new image is far from every fitted one, and the continuous map, a
        softmax-weighted mean of fitted texts, sends nearly every new image to the same place
        (their mean pairwise cosine 0.97), where the displacement keeps what makes each new
        row differ from its nearest fitted one. POT's own ``SinkhornTransport`` gives the same
        map (tested).
    method : {"sinkhorn", "sinkhorn_log", "sinkhorn_stabilized"}, default="sinkhorn"
        POT's solver: plain matrix scaling is the fastest (run by :func:`sinkhorn_knopp`,
        POT's iterates in one sweep over the kernel per iteration); the log-domain one is
        stable for very small ``reg`` but several times slower (POT's ``"continuous"`` map
        always uses it; here any solver serves, as long as its scalings stay finite).
    tune : bool, default=False
        Choose ``reg`` by grid search inside the fit pairs (module docstring); the given
        ``reg`` is then not used.
    grid_reg : sequence of float, optional
        The grid of ``tune``; default ``(0.01, 0.02, 0.05, 0.1, 0.2, 0.5)``.
    max_iter : int, default=1000
        Sinkhorn iterations.
    tol : float, default=1e-8
        Stop when the marginal error is below this (POT's default).
    fit_size : int or None, default=1000
        Most pairs the coupling is fitted on (a seeded subsample; the other rows take the
        out-of-sample map); None fits on all.
    random_state : int, default=0
        Seed of the ``fit_size`` subsample and of ``tune``'s inner split.
    """

    name = "sinkhorn"
    label = "Sinkhorn OT"
    menu_rank = 15
    params_info = (
        Param("reg", "sinkhorn: entropic regularisation in units of 2 - 2 cos (default 0.05)",
              flag="--reg", type=float,
              slider=Slider("Entropic regularisation (reg)",
                            options=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
                            help="Smaller is sharper and slower; much above 0.1 every row "
                                 "lands near the other side's mean.")),
        _DIRECTION_PARAM,
        Param("out_of_sample", "sinkhorn: map of rows not fitted: ferradans (nearest fitted row "
              "plus its displacement; default) or continuous (POT's entropic map)",
              flag="--out-of-sample", type=str, choices=OUT_OF_SAMPLE_MAPS, short="out-of-sample",
              menu="Unseen rows", labels=("nearest fitted row + its displacement",
                                          "continuous entropic map")),
        Param("method", "sinkhorn: POT solver (default sinkhorn)", flag="--sinkhorn-method",
              type=str, choices=("sinkhorn", "sinkhorn_log", "sinkhorn_stabilized")),
        _TUNE_PARAM,
        Param("grid_reg", "sinkhorn --tune: reg values to try, comma-separated (default "
              "0.01,0.02,0.05,0.1,0.2,0.5)", flag="--grid-reg", type=float_grid,
              short="reg grid"),
    ) + _SOLVER_PARAMS
    summary = ("entropic optimal transport between images and texts (POT SinkhornTransport; by "
               "default both sides move halfway; unseen rows: nearest fitted row plus its "
               "displacement (ferradans), or POT's continuous entropic map)")
    uses_pairing = False
    default_protocol = "held-out"
    _live_params = ("reg",)
    _grids = {"reg": ("grid_reg", SINKHORN_TUNE_REG)}

    def __init__(self, reg: float = 0.05, *, direction: str = DEFAULT_DIRECTION,
                 out_of_sample: str = "ferradans", method: str = "sinkhorn",
                 tune: bool = False, grid_reg: Sequence[float] | None = None,
                 max_iter: int = 1000, tol: float = 1e-8,
                 fit_size: int | None = SINKHORN_FIT_SIZE, random_state: int = 0):
        self.reg = reg
        self.direction = direction
        self.out_of_sample = out_of_sample
        self.method = method
        self.tune = tune
        self.grid_reg = grid_reg
        self.max_iter = max_iter
        self.tol = tol
        self.fit_size = fit_size
        self.random_state = random_state

    def _check_live(self, values, grid=False):
        if not values["reg"] > 0:
            where = " in the tuning grid (grid_reg)" if grid else ""
            raise ValueError(f"reg must be > 0 (entropic OT), got {values['reg']!r}{where}; "
                             "for unregularised OT use method 'ot' with reg_lap=0.")

    def _validate_parameters(self, n_pairs: int, dim: int) -> None:
        require_finite(self, "reg", "tol")
        self._validate_common(n_pairs)
        self._check_live({"reg": self.reg})
        if self.method not in SINKHORN_METHODS:
            raise ValueError(f"method must be one of {SINKHORN_METHODS}, got {self.method!r}.")
        if not isinstance(self.max_iter, (int, np.integer)) or isinstance(self.max_iter, bool) or self.max_iter < 1:
            raise ValueError(f"max_iter must be an integer >= 1, got {self.max_iter!r}.")
        if not self.tol >= 0:
            raise ValueError(f"tol must be >= 0, got {self.tol!r}.")

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
