"""The one interface every gap-closing method shares.

A method is fitted on paired embeddings (row i of ``X`` and of ``Y`` are a pair) and then maps
each modality into a common output space, including rows never seen in ``fit``
(out-of-sample). Conventions follow scikit-learn: ``__init__`` only stores keyword arguments,
``fit`` validates, sets trailing-underscore attributes and returns ``self``; the transforms
check that the method is fitted.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, ClassVar

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from ..embeddings import check_pair_arrays
from ..threads import blas_for_a_busy_machine

#: ``progress(fraction, message)``: fraction in [0, 1] of the fit done, and what it is doing.
#: Slow fits (OT) call it along the way; the app wires it to a progress bar, the CLI prints it.
ProgressCallback = Callable[[float, str], None]


@dataclass(frozen=True)
class Slider:
    """How the app offers a parameter: a slider over ``options`` (values that matter by
    decades), or from ``lo`` to ``hi`` in ``step``s (``hi`` lowered to the parameter's cap on
    the data)."""

    label: str
    options: tuple[Any, ...] | None = None
    lo: float | None = None
    hi: float | None = None
    step: float | None = None
    help: str = ""
    #: Name of the widget (page-prefixed by the app); default: the parameter's short name.
    key: str = ""


@dataclass(frozen=True)
class Param:
    """One parameter of a method, as the app, the command line and the reports present it.

    ``name`` is the ``__init__`` keyword. ``short`` is how people write it ("k" for
    ``n_components``). ``flag`` is its command-line option (methods may share one: ``--k``
    is spectral's and PCA's ``n_components``); ``type`` parses the option's value, and a flag
    without a value sets ``const``. ``slider`` makes it a control of the Close the gap page.
    ``cap(n_pairs, dim)`` is the largest value that N pairs of dimension d allow (the app
    and ``gapviz compare`` lower a larger value to it). ``refits=False`` marks a parameter
    that a fitted method applies without fitting again (spectral k slices eigenvectors).
    ``menu`` (a label) makes a parameter with ``choices`` a menu of the Close the gap page
    (OT's direction, spectral's graph weights); ``labels`` names its choices there.
    """

    name: str
    help: str
    flag: str | None = None
    type: Callable[[str], Any] | None = None
    choices: tuple[Any, ...] | None = None
    const: Any = None
    short: str = ""
    slider: Slider | None = None
    cap: Callable[[int, int], int] | None = None
    refits: bool = True
    menu: str = ""
    labels: tuple[str, ...] = ()

    @property
    def shown(self) -> str:
        return self.short or self.name


class GapMethod(BaseEstimator):
    """Base class: fit on pairs, transform images and texts (also unseen ones).

    Subclasses implement :meth:`_fit`, :meth:`_transform_images` and :meth:`_transform_texts`,
    and may override :meth:`fit_transform` when the training rows have an exact (transductive)
    embedding that differs from the out-of-sample path (spectral).
    """

    #: Registry name used by the CLI (``--method NAME``) and the app.
    name: ClassVar[str] = ""
    #: One line for menus and the README.
    summary: ClassVar[str] = ""
    #: Whether the fit reads which image goes with which text (row i of X with row i of Y).
    #: Such a method can memorise its fit pairs, so it is never scored on them by default.
    uses_pairing: ClassVar[bool] = False
    #: Why such a method may not be scored on its fit pairs (the refusal's message).
    leak_reason: ClassVar[str] = (
        "reads the pairing, so scored on the pairs it was fitted on it memorises them (on pairs "
        "with no signal at all, transductive Procrustes reaches R@20 above 0.6 where chance is "
        "0.02)")
    #: Whether it changes similarity scores instead of embeddings (a score correction,
    #: :mod:`gapviz.methods.scores`): its runs carry score terms the measures rank on.
    corrects_scores: ClassVar[bool] = False
    #: Protocol a score uses when none is asked for (``gapviz.protocols.PROTOCOLS``):
    #: "held-out" for methods that use the pairing and for OT (the paper fits OT on other
    #: pairs); "transductive" for spectral (the paper's setting) and for the baselines that
    #: only estimate per-modality statistics (means, spreads, pooled axes), which need no
    #: pairing and are stable at any N worth measuring.
    default_protocol: ClassVar[str] = "transductive"
    #: Where the output lives: "input" when it is the input space itself, or a map into it
    #: (fits on different pairs share the frame); "own" when each fit picks its own basis
    #: (spectral eigenvectors, PCA axes), so held-out folds must be aligned.
    output_space: ClassVar[str] = "input"
    #: Name in the app's menus and reports.
    label: ClassVar[str] = ""
    #: Place in the app's method menus (lower first: the paper's methods, then baselines).
    menu_rank: ClassVar[int] = 50
    #: The parameters the app, the command line and the reports know about (see :class:`Param`).
    params_info: ClassVar[tuple[Param, ...]] = ()

    # -- public API -------------------------------------------------------------------------
    def fit(self, X: np.ndarray, Y: np.ndarray, *,
            progress: ProgressCallback | None = None) -> "GapMethod":
        """Fit on N pairs.

        Parameters
        ----------
        X : ndarray of shape (N, d)
            Image embeddings.
        Y : ndarray of shape (N, d)
            Text embeddings; row i pairs with row i of ``X``.
        progress : callable, optional
            ``progress(fraction, message)``, called during the fit and with 1.0 at its end.
        """
        X, Y = self._validate_pairs(X, Y)
        self._validate_parameters(X.shape[0], X.shape[1])
        report = progress if progress is not None else _no_progress
        with blas_for_a_busy_machine():
            self._fit(X, Y, report)
        self.n_features_in_ = X.shape[1]
        self.fitted_ = True
        report(1.0, "done")
        return self

    def transform_images(self, X: np.ndarray) -> np.ndarray:
        """Map image embeddings of shape (M, d) to the output space, shape (M, k)."""
        return self._transform_images(self._validate_rows(X))

    def transform_texts(self, Y: np.ndarray) -> np.ndarray:
        """Map text embeddings of shape (M, d) to the output space, shape (M, k)."""
        return self._transform_texts(self._validate_rows(Y))

    def transform(self, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Both modalities at once (out-of-sample path)."""
        return self.transform_images(X), self.transform_texts(Y)

    def fit_transform(self, X: np.ndarray, Y: np.ndarray, *,
                      progress: ProgressCallback | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Fit on the pairs and return their transformed embeddings ``(X_t, Y_t)``."""
        return self.fit(X, Y, progress=progress).transform(X, Y)

    def describe(self) -> dict[str, Any]:
        """Name and parameters, JSON-serialisable (recorded in exported files)."""
        return {"method": self.name, "params": {k: _jsonable(v) for k, v in self.get_params().items()}}

    # -- what the method says about itself -------------------------------------------------
    @classmethod
    def param_info(cls, name: str) -> Param | None:
        return next((p for p in cls.params_info if p.name == name), None)

    @classmethod
    def suited_params(cls, n_pairs: int, dim: int,
                      chosen: dict[str, Any] | None = None) -> dict[str, Any]:
        """``chosen`` with every size parameter N pairs of dimension d cannot take lowered to
        the largest value they can (never below 1). Other values are left for ``fit`` to
        check, with its own message."""
        params = dict(chosen or {})
        defaults = {k: v.default for k, v in _init_params(cls).items()}
        for info in cls.params_info:
            value = params.get(info.name, defaults.get(info.name))
            if info.cap is None or not isinstance(value, int) or isinstance(value, bool):
                continue
            cap = max(info.cap(n_pairs, dim), 1)
            if value > cap:
                params[info.name] = cap
        return params

    @classmethod
    def slider_range(cls, name: str, n_pairs: int, dim: int) -> tuple[float, float]:
        """``(lo, hi)`` of parameter ``name``'s slider on N pairs of dimension d: the slider's
        own range with ``hi`` lowered to the parameter's cap (never below 1, lo <= hi)."""
        info = cls.param_info(name)
        if info is None or info.slider is None or info.slider.hi is None:
            raise ValueError(f"{cls.name}: {name} has no slider range.")
        hi = info.slider.hi
        if info.cap is not None:
            hi = max(1, min(hi, info.cap(n_pairs, dim)))
        lo = info.slider.lo if info.slider.lo is not None else hi
        return min(lo, hi), hi

    @classmethod
    def split_params(cls, params: dict[str, Any], n_pairs: int, dim: int
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(fit_params, view_params)``: parameters that need a fit, and those a fitted
        method applies without one (:meth:`fitted_pairs`). By default every one refits."""
        return dict(params), {}

    def fitted_pairs(self, X: np.ndarray, Y: np.ndarray,
                     **view_params: Any) -> tuple[np.ndarray, np.ndarray]:
        """The transformed fit pairs ``(X_t, Y_t)`` under ``view_params`` (see
        :meth:`split_params`): by default ``transform(X, Y)``."""
        return self.transform(X, Y)

    @classmethod
    def format_params(cls, params: dict[str, Any]) -> str:
        """Parameters for people: "k = 60, graph = bipartite" (short names, compact numbers,
        in the order the method lists them, whatever the order given)."""
        order = {info.name: i for i, info in enumerate(cls.params_info)}
        parts = []
        for key, value in sorted(params.items(), key=lambda kv: order.get(kv[0], len(order))):
            info = cls.param_info(key)
            shown = info.shown if info else key
            parts.append(f"{shown} = {value:g}" if isinstance(value, float) else f"{shown} = {value}")
        return ", ".join(parts)

    # -- for subclasses ---------------------------------------------------------------------
    def _validate_parameters(self, n_pairs: int, dim: int) -> None:
        """Raise one precise ``ValueError`` per broken rule (override as needed)."""

    def _fit(self, X: np.ndarray, Y: np.ndarray, progress: ProgressCallback) -> None:
        raise NotImplementedError

    def _transform_images(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _transform_texts(self, Y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # -- helpers ----------------------------------------------------------------------------
    @staticmethod
    def _validate_pairs(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X = np.asarray(X, dtype=np.float32)
        Y = np.asarray(Y, dtype=np.float32)
        check_pair_arrays(X, Y)
        if not (np.isfinite(X).all() and np.isfinite(Y).all()):
            raise ValueError("embeddings contain NaN or inf; load them with gapviz.load_embeddings, "
                             "which skips and reports such rows.")
        return X, Y

    def _validate_rows(self, A: np.ndarray) -> np.ndarray:
        if not getattr(self, "fitted_", False):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(X, Y) first.")
        A = np.asarray(A, dtype=np.float32)
        if A.ndim != 2 or A.shape[1] != self.n_features_in_:
            raise ValueError(f"expected rows of dimension {self.n_features_in_} (as in fit), "
                             f"got shape {A.shape}.")
        return A


def l2_normalize(A: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, float32; zero rows stay zero (:func:`gapviz.measures.unit_rows`)."""
    from ..measures import unit_rows

    return unit_rows(A)


def require_finite(method: GapMethod, *names: str) -> None:
    """Raise one precise ``ValueError`` for the first of ``method``'s parameters ``names``
    that is not a finite real number (NaN, +-inf, a string, a boolean); ``None`` (an optional
    parameter left out) passes.

    Methods call it first in ``_validate_parameters`` for their numeric parameters: a
    non-finite value would otherwise be accepted silently (``reg=inf``) or fail later with a
    message about the input rows (``within_weight=inf`` makes the graph NaN).
    """
    defaults = {k: p.default for k, p in _init_params(type(method)).items()}
    for name in names:
        value = getattr(method, name)
        if value is None:
            continue
        default = defaults.get(name)
        hint = f" (default {default!r})" if isinstance(default, numbers.Real) else ""
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise ValueError(f"{method.name}: {name} must be a number, got {value!r} "
                             f"({type(value).__name__}); give a finite number{hint}.")
        if not math.isfinite(float(value)):
            raise ValueError(f"{method.name}: {name} must be a finite number, got "
                             f"{float(value)!r}; give a finite number{hint}.")


@functools.cache
def _init_params(cls: type) -> Mapping[str, Any]:
    """``__init__``'s keyword parameters of a method class (name -> inspect.Parameter), read
    once per class.

    A class without an ``__init__`` of its own has none; its signature is not asked for,
    because ``inspect`` reads a builtin's from text with :func:`ast.parse`, and on CPython
    3.11 two threads building ASTs at once can fail ("AST constructor recursion depth
    mismatch": seen when a background job asked while Streamlit parsed a page script)."""
    import inspect

    if cls.__init__ is object.__init__:
        return MappingProxyType({})
    return MappingProxyType({p.name: p for p in inspect.signature(cls.__init__).parameters.values()
                             if p.name != "self" and p.kind is not p.VAR_KEYWORD})


def _no_progress(fraction: float, message: str) -> None:
    """Default progress callback: report nothing."""


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return repr(v)
