"""The transport couplings' solvers: numpy, scipy and numba only.

What :class:`gapviz.methods.ot.OTGap` and :class:`gapviz.methods.ot.SinkhornGap` solve, once
their data-only parts are computed (fitted rows, cost matrix, similarity graphs): the
Laplacian-regularised OT loop (:func:`emd_laplace_factored`) with its exact-OT step
(:func:`assignment_step`), Sinkhorn's iterations (:func:`sinkhorn_knopp`) and the
barycentric maps (:func:`barycentres`). A :class:`TransportProblem` holds one fit's data-only
parts and solves it for live values. This module imports neither POT nor scikit-learn (POT's
network simplex and its other Sinkhorn solvers are imported where they are used), so that a
solver process (:mod:`gapviz.solvers`) holds only what a solve needs.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
from scipy import sparse

#: Digest of this file as the process imported it: a solver process whose digest differs (the
#: file changed on disk since the server started) solves with other code, and is not used.
with open(__file__, "rb") as _source:
    SOURCE_DIGEST = hashlib.sha256(_source.read()).hexdigest()

__all__ = ["TransportProblem", "assignment_step", "barycentres", "emd_laplace_factored",
           "exact_ot_step", "sinkhorn_knopp", "squared_distances", "uniform"]


def uniform(n: int) -> np.ndarray:
    """POT's uniform marginal ``ot.unif(n)``: ``ones(n) / n``."""
    return np.ones((n,)) / n


def squared_distances(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """POT's ground cost ``ot.dist(X, Y)`` (squared Euclidean distances) on numpy arrays, bit
    for bit: the same operations in the same order as POT 0.9's ``euclidean_distances`` with
    its numpy backend (row norms by ``einsum``, ``-2 X Y^T``, the norms added, negatives
    clipped to 0; ``X is Y`` gets a zero diagonal). Computed here because importing POT pulls
    in every array library it finds (torch: seconds), which a fit should not wait for."""
    a2 = np.einsum("ij,ij->i", X, X)
    b2 = np.einsum("ij,ij->i", Y, Y)
    c = -2 * np.dot(X, np.transpose(Y))
    c += a2[:, None]
    c += b2[None, :]
    c = np.maximum(c, 0)
    if X is Y:
        c = c * (1 - np.eye(X.shape[0], dtype=c.dtype))
    return c


def barycentres(G: np.ndarray, xs: np.ndarray, xt: np.ndarray,
                both: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``(T(s_i), S(t_j))`` for the fitted rows under coupling G, float32 (n_fit, d): the
    source rows' barycentres over the targets, and with ``both`` the target rows' over the
    sources (POT's ``transform`` and ``inverse_transform`` on the fitted samples), else None."""
    # Once per solution, in float32 like every output. A Laplacian-OT coupling is a mix of
    # at most max_iter + 1 exact-OT vertices (a few non-zeros per row): a sparse product.
    dense = np.count_nonzero(G) >= G.size // 8

    def over(P, rows_of):
        with np.errstate(divide="ignore", invalid="ignore"):
            transp = np.nan_to_num(P / P.sum(1)[:, None], nan=0.0, posinf=0.0, neginf=0.0)
        if not dense:
            return np.asarray(sparse.csr_matrix(transp) @ rows_of).astype(np.float32)
        return transp.astype(np.float32) @ rows_of.astype(np.float32)

    return over(G, xt), (over(G.T, xs) if both else None)


@dataclass
class TransportProblem:
    """One fit's data-only parts, solved for live values.

    Parameters
    ----------
    kind : {"laplace", "sinkhorn"}
        Laplacian-regularised OT (live values ``reg_lap``, ``reg_src``) or entropic OT
        (``reg``).
    settings : dict
        The solver's other parameters: ``reg_type``, ``similarity``, ``similarity_param``,
        ``max_iter``, ``tol``, ``max_inner_iter``, ``inner_tol`` ("laplace"); ``method``,
        ``max_iter``, ``tol`` ("sinkhorn").
    cache : dict
        ``xs``, ``xt`` (fitted source and target rows, float64), ``M`` (the cost) and, for
        "laplace", ``("graphs", similarity, similarity_param)`` (:func:`laplace_graphs`),
        ``lp``, ``duals`` and ``grams`` (:meth:`gapviz.methods.ot.OTGap._prepare`).
    both : bool
        Whether the target rows' barycentres are wanted too (``direction="both"``).
    """

    kind: str
    settings: dict = field(default_factory=dict)
    cache: dict = field(default_factory=dict)
    both: bool = False

    def solve(self, values: Mapping[str, Any], start: Mapping[str, Any] | None = None,
              progress: Callable[[float, str], None] | None = None):
        """``(coupling, warm-start state, attributes to set)`` for the live ``values``, from
        ``start`` (a kept solution: ``{"G": ..., "state": ...}``) or cold."""
        report = progress if progress is not None else (lambda f, m: None)
        if self.kind == "laplace":
            return _solve_laplace(self.cache, self.settings, values, start, report)
        if self.kind == "sinkhorn":
            return _solve_sinkhorn(self.cache, self.settings, values, start, report)
        raise ValueError(f"unknown transport problem {self.kind!r}; use 'laplace' or 'sinkhorn'.")

    def barycentres(self, G: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """:func:`barycentres` of the fitted rows under ``G``."""
        return barycentres(G, self.cache["xs"], self.cache["xt"], self.both)


def warm_up() -> None:
    """Run each compiled step once on a tiny problem (numba loads its compiled code, and the
    line search its module, on first use: a few hundred milliseconds a process spends here
    rather than in its first solve)."""
    from scipy.optimize._linesearch import scalar_search_armijo  # noqa: F401

    n = 4
    x = np.eye(n)
    cost = 2.0 - 2.0 * (x @ x.T) + np.arange(n * n).reshape(n, n) * 1e-3
    lap = sparse.csr_matrix(np.eye(n) * 2.0 - np.roll(np.eye(n), 1, axis=1)
                            - np.roll(np.eye(n), -1, axis=1))
    problem = TransportProblem("laplace", {"reg_type": "pos", "similarity": "knn",
                                           "similarity_param": None, "max_iter": 2, "tol": 0.0,
                                           "max_inner_iter": 100, "inner_tol": 0.0},
                               {"xs": x, "xt": x, "M": cost,
                                ("graphs", "knn", None): (lap, lap, lap + lap.T, lap + lap.T),
                                "lp": "assignment", "duals": None, "grams": (x @ x.T, x @ x.T)},
                               both=True)
    problem.barycentres(problem.solve({"reg_lap": 1.0, "reg_src": 0.5})[0])
    sinkhorn_knopp(uniform(n), uniform(n), cost, 1.0, numItermax=2)


def _solve_laplace(cache, settings, values, start, progress):
    xs, xt = cache["xs"], cache["xt"]
    s = settings
    G, log = emd_laplace_factored(
        uniform(xs.shape[0]), uniform(xt.shape[0]), xs, xt, cache["M"], sim=s["similarity"],
        sim_param=s["similarity_param"], reg=s["reg_type"], eta=values["reg_lap"],
        alpha=values["reg_src"], numItermax=s["max_iter"], stopThr=s["tol"],
        numInnerItermax=s["max_inner_iter"], stopInnerThr=s["inner_tol"], progress=progress,
        G0=None if start is None else start["G"],
        graphs=cache[("graphs", s["similarity"], s["similarity_param"])], lp=cache["lp"],
        duals=cache["duals"], grams=cache["grams"])
    loss = [float(v) for v in log["loss"]]
    return G, None, {"loss_": loss, "n_iter_": len(loss) - 1}


def _solve_sinkhorn(cache, settings, values, start, progress):
    reg = float(values["reg"])
    M = cache["M"]
    method = settings["method"]
    a, b = uniform(M.shape[0]), uniform(M.shape[1])
    warm = None
    if start is not None and start["state"] is not None:
        f, g = start["state"]  # dual potentials, in the cost's units
        # the plain and log solvers start from log-scalings f / reg; the stabilised one
        # from the potentials themselves
        warm = (f, g) if method == "sinkhorn_stabilized" else (f / reg, g / reg)
    progress(0.0, "Sinkhorn iterations")
    if method == "sinkhorn":
        G, log = sinkhorn_knopp(a, b, M, reg, numItermax=settings["max_iter"],
                                stopThr=settings["tol"], warmstart=warm)
    else:
        import ot  # POT's other solvers (imported here only: a solver process has no POT)

        G, log = ot.sinkhorn(a, b, M, reg, method=method, numItermax=settings["max_iter"],
                             stopThr=settings["tol"], log=True, warmstart=warm)
    if "logu" in log:  # stabilised: absorbed potentials plus the last scalings
        lu, lv = log["logu"], log["logv"]
    elif "log_u" in log:
        lu, lv = log["log_u"], log["log_v"]
    else:
        with np.errstate(divide="ignore"):
            lu, lv = np.log(log["u"]), np.log(log["v"])
    state = (reg * lu, reg * lv) if np.isfinite(lu).all() and np.isfinite(lv).all() else None
    return np.asarray(G), state, {"n_iter_": int(log.get("niter", log.get("n_iter", -1)))}


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
    cols, ok = _augmenting_paths(C, v, duals is not None)
    if not ok:
        raise ValueError("the assignment cost has no finite optimum (infinite or NaN costs).")
    return np.arange(n), cols, v


@numba.njit(nogil=True, cache=True)
def _augmenting_paths(C, v, reduce_rows):  # pragma: no cover - compiled
    """scipy's ``solve`` / ``augmenting_path`` (rectangular_lsap.cpp) on a square ``C``, from
    column duals ``v`` (updated in place); with ``reduce_rows``, Jonker and Volgenant's
    augmenting row reduction first (:func:`_reduce_rows`), and the paths only for the rows it
    left free. Returns (column of each row, whether it is finite)."""
    n = C.shape[0]
    u = np.zeros(n)
    col4row = np.full(n, -1, np.int64)
    row4col = np.full(n, -1, np.int64)
    path = np.full(n, -1, np.int64)
    dist = np.empty(n)  # shortest path costs
    seen_row = np.zeros(n, np.bool_)
    seen_col = np.zeros(n, np.bool_)
    remaining = np.empty(n, np.int64)
    free = np.arange(n)
    n_free = n
    if reduce_rows:
        for i in range(n):
            for j in range(n):
                if not np.isfinite(C[i, j]):
                    return col4row, False
        n_free = _reduce_rows(C, v, col4row, row4col, free)
        for i in range(n):  # the assigned rows' duals: tight on their column
            if col4row[i] >= 0:
                u[i] = C[i, col4row[i]] - v[col4row[i]]
    for f in range(n_free):
        cur = free[f]
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

@numba.njit(nogil=True, cache=True)
def _reduce_rows(C, v, col4row, row4col, free):  # pragma: no cover - compiled
    """Jonker and Volgenant's augmenting row reduction (1987, two passes), from column duals
    ``v``: each free row takes its cheapest column in reduced cost ``C[i, j] - v[j]``, lowering
    that column's dual to the row's second cheapest (so the row stays tight on it and every
    other row's reduced costs only grow), and a row it displaces looks again at once. Assigned
    rows stay tight and dual feasible. Fills ``col4row``, ``row4col`` and the free rows left
    (``free``, from the start); returns how many."""
    n = C.shape[0]
    n_free = n
    for _ in range(2):
        k = 0
        before = n_free
        n_free = 0
        steps = 0  # a displaced row looks again at once, at most 4 n times a pass (in floating
        while k < before:  # point two rows can take a column from each other for ever)
            i = free[k]
            k += 1
            steps += 1
            lowest, j1 = C[i, 0] - v[0], 0
            second, j2 = np.inf, -1
            for j in range(1, n):
                h = C[i, j] - v[j]
                if h < second:
                    if h >= lowest:
                        second, j2 = h, j
                    else:
                        second, j2 = lowest, j1
                        lowest, j1 = h, j
            i0 = row4col[j1]
            if lowest < second:
                v[j1] -= second - lowest
            elif i0 >= 0:
                j1 = j2
                i0 = row4col[j2]
            row4col[j1] = i
            col4row[i] = j1
            if i0 >= 0:
                col4row[i0] = -1
                if lowest < second and steps < 4 * n:
                    k -= 1
                    free[k] = i0
                else:
                    free[n_free] = i0
                    n_free += 1
    return n_free


@numba.njit(nogil=True, cache=True)
def _linearised_cost(M, eta, alpha, use_s, s_ptr, s_idx, s_val, Us, use_t, t_ptr, t_idx, t_val,
                     Ut, G_start, Mi):  # pragma: no cover - compiled
    """``Mi = M + eta * (alpha * L2s @ Us + (1 - alpha) * Ut @ L2t^T)`` in one pass over rows
    (``L2s``, ``L2t`` in CSR arrays; a term not used is skipped); returns ``<G_start, Mi>``."""
    n, m = Mi.shape
    row = np.empty(m)
    total = 0.0
    for i in range(n):
        for j in range(m):
            row[j] = 0.0
        if use_s:
            for p in range(s_ptr[i], s_ptr[i + 1]):
                k = s_idx[p]
                w = s_val[p]
                for j in range(m):
                    row[j] += w * Us[k, j]
            for j in range(m):
                row[j] *= alpha
        if use_t:
            for j in range(m):
                acc = 0.0
                for p in range(t_ptr[j], t_ptr[j + 1]):
                    acc += t_val[p] * Ut[i, t_idx[p]]
                row[j] += (1.0 - alpha) * acc
        for j in range(m):
            x = M[i, j] + eta * row[j]
            Mi[i, j] = x
            total += G_start[i, j] * x
    return total


@numba.njit(nogil=True, cache=True)
def _carry_grams(step, cols, mass, use_s, Us, Kt, use_t, Ut, Ks):  # pragma: no cover - compiled
    """Move ``Us = G Kt`` and ``Ut = Ks G`` along ``G <- (1 - step) G + step P`` for the
    assignment vertex ``P[i, cols[i]] = mass[i]``, in place."""
    n = cols.shape[0]
    keep = 1.0 - step
    if use_s:
        for i in range(n):
            c = cols[i]
            w = step * mass[i]
            for j in range(Us.shape[1]):
                Us[i, j] = keep * Us[i, j] + w * Kt[c, j]
    if use_t:
        for r in range(Ut.shape[0]):
            for i in range(n):
                c = cols[i]
                Ut[r, c] = keep * Ut[r, c] + step * mass[i] * Ks[r, i]


def emd_laplace_factored(a, b, xs, xt, M, *, sim="knn", sim_param=None, reg="pos", eta=1.0,
                         alpha=0.5, numItermax=100, stopThr=1e-9, numInnerItermax=100000,
                         stopInnerThr=1e-9, progress: Callable[[float, str], None] | None = None,
                         G0=None, graphs=None, lp: str = "auto", duals=None, grams=None):
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

    * the gradient, which the exact-OT step needs as an N x N cost, is
      ``(L_s + L_s^T) U_s + U_t (L_t + L_t^T)`` with ``U_s = G (X_t X_t^T)`` and
      ``U_t = (X_s X_s^T) G``: the Gram matrices are data only (``grams``, computed once per
      fit), and ``U_s``, ``U_t`` move along the segment with G, O(N^2) per iteration for an
      assignment vertex. The gradient is then sparse products only, formed in one compiled
      pass with the cost (O(nnz(L) N) instead of an O(N^2 d) product per iteration: a solve
      at N = 500, d = 512 took 20% less on one core, 0.096 s against 0.120 s on the
      demo's folds).

    Couplings and losses are POT's up to round-off (tested against ``EMDLaplaceTransport``).

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
    grams : tuple of ndarray, optional
        ``(xt xt^T, xs xs^T)`` computed beforehand (they depend on the rows only); computed
        here when None.

    Returns
    -------
    G : ndarray of shape (ns, nt)
    log : dict
        POT's log (``loss`` per iteration; with ``"emd"``, the last inner EMD log).
    """
    from scipy.optimize._linesearch import scalar_search_armijo  # POT's line search uses it

    if lp == "auto":
        lp = exact_ot_step(a, b, xs, xt)
    if lp not in ("assignment", "emd"):
        raise ValueError(f"lp must be 'auto', 'assignment' or 'emd', got {lp!r}.")

    if graphs is None:
        from .methods.ot import laplace_graphs

        graphs = laplace_graphs(xs, xt, sim=sim, sim_param=sim_param)
    lS, lT, ls2, lt2 = graphs

    # A term whose weight is 0 (reg_src = 1 keeps the source graph only, the default) is
    # skipped: POT computes it and multiplies by 0.
    use_s, use_t = alpha != 0, alpha != 1

    if reg == "disp":
        Cs = -eta * alpha / xs.shape[0] * (np.asarray(ls2 @ xs) @ xt.T)
        Ct = -eta * (1 - alpha) / xt.shape[0] * (xs @ np.asarray(lt2 @ xt).T)
        M = M + Cs + Ct
    M = np.ascontiguousarray(M, dtype=np.float64)

    def quadratic(T, LT, dT, LdT):
        # (T + t dT)^T L (T + t dT) = A + t B + t^2 C (traces), for any step t
        return np.array([np.vdot(T, LT), np.vdot(T, LdT) + np.vdot(dT, LT), np.vdot(dT, LdT)])

    # The coupling is kept as a combination c0 G0 + sum_k c_k P_k of the start G0 and the
    # exact-OT vertices P_k (sparse: (rows, cols, mass)); what the loop reads of it is carried
    # along and updated in O(N^2) per iteration, each along the same segment as G:
    # <M, G>, the products T_s = G xt and T_t = G^T xs, their Laplacians lS T_s and lT T_t
    # (the line search's quadratic), and the gradient's dense factors
    # U_s = T_s xt^T = G (xt xt^T) and U_t = xs T_t^T = (xs xs^T) G, so that the gradient
    # alpha (lS + lS^T) U_s + (1 - alpha) U_t (lT + lT^T) takes sparse products only. G itself
    # is formed once, at the end.
    G_start = np.outer(a, b) if G0 is None else np.array(G0, dtype=np.float64)
    c0 = 1.0
    vertices: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    coefs: list[float] = []
    Kt, Ks = grams if grams is not None else (xt @ xt.T, xs @ xs.T)
    Ts = LTs = Us = Tt = LTt = Ut = None
    unused = np.zeros((0, 0))
    omega_G = 0.0
    # POT's start, the product of the marginals a b^T, is rank one: its products are outer
    # products (O(N d) and O(N^2) instead of O(N^2 d) and O(N^3))
    def times(G_right):  # G_start @ right
        return np.outer(a, b @ G_right) if G0 is None else np.asarray(G_start @ G_right)

    def times_t(G_right):  # G_start^T @ right
        return np.outer(b, a @ G_right) if G0 is None else np.asarray(G_start.T @ G_right)

    if use_s:
        Ts = times(xt)
        LTs = np.asarray(lS @ Ts)
        Us = np.ascontiguousarray(times(Kt))
        omega_G += alpha * np.vdot(Ts, LTs)
    if use_t:
        Tt = times_t(xs)
        LTt = np.asarray(lT @ Tt)
        Ut = np.ascontiguousarray(times_t(Ks.T).T)  # Ks G_start = (G_start^T Ks^T)^T
        omega_G += (1 - alpha) * np.vdot(Tt, LTt)
    l2s, l2t = sparse.csr_matrix(ls2), sparse.csr_matrix(lt2)
    mG = float(np.vdot(M, G_start))
    cost_G = mG + eta * omega_G
    losses = [cost_G]
    Mi = np.empty_like(M)
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
        # alpha (lS + lS^T) G xt xt^T + (1 - alpha) xs xs^T G (lT + lT^T)
        iG_start = _linearised_cost(
            M, float(eta), float(alpha), use_s, l2s.indptr, l2s.indices, l2s.data,
            Us if use_s else unused, use_t, l2t.indptr, l2t.indices, l2t.data,
            Ut if use_t else unused, G_start, Mi)
        # the exact-OT step
        if lp == "assignment":
            # warm: the last step's column duals (the next Mi differs little from this one)
            rows, cols, duals = assignment_step(Mi, duals)
            mass = a[rows]
        else:
            import ot  # POT's network simplex (imported here only: a solver process has no POT)

            Gc, inner_log = ot.emd(a, b, Mi, numInnerItermax, log=True)
            rows, cols = np.nonzero(Gc)
            mass = Gc[rows, cols]
        # POT's line_search_armijo (scipy's scalar_search_armijo, c1 = 1e-4, first trial step
        # 0.99, steps clipped at 0) on cost(G + t (P - G)); Omega along the segment is a
        # quadratic in t, the transport term linear.
        q = np.zeros(3)
        P = None if lp == "assignment" else sparse.csr_matrix((mass, (rows, cols)), M.shape)
        if use_s:  # P xt - T_s; an assignment's rows are distinct: P xt is rows of xt
            if P is None:
                dTs = -Ts
                dTs[rows] += mass[:, None] * xt[cols]
            else:
                dTs = np.asarray(P @ xt) - Ts
            LdTs = np.asarray(lS @ dTs)
            q += alpha * quadratic(Ts, LTs, dTs, LdTs)
        if use_t:
            if P is None:
                dTt = -Tt
                dTt[cols] += mass[:, None] * xs[rows]
            else:
                dTt = np.asarray(P.T @ xs) - Tt
            LdTt = np.asarray(lT @ dTt)
            q += (1 - alpha) * quadratic(Tt, LTt, dTt, LdTt)
        mP = float(np.dot(mass, M[rows, cols]))
        iP = float(np.dot(mass, Mi[rows, cols]))
        iG = c0 * iG_start + sum(
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
        # G <- G + step (P - G), and what is carried along with it
        c0 *= 1.0 - step
        coefs = [c * (1.0 - step) for c in coefs] + [step]
        vertices.append((rows, cols, mass))
        mG = mG + step * mD
        if use_s:
            Ts += step * dTs
            LTs += step * LdTs
        if use_t:
            Tt += step * dTt
            LTt += step * LdTt
        if P is None:
            _carry_grams(step, cols, mass, use_s, Us if use_s else unused, Kt, use_t,
                         Ut if use_t else unused, Ks)
        else:  # the same roundings as _carry_grams (for a vertex that is an assignment)
            stepped = P * step
            if use_s:
                Us *= 1.0 - step
                Us += np.asarray(stepped @ Kt)
            if use_t:
                Ut *= 1.0 - step
                Ut += np.asarray(stepped.T @ Ks.T).T
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
