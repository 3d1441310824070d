"""Runs: one door for "method M with parameters P under protocol R on pairs D".

Every number gapviz shows after a method comes from a *run*. A :class:`RunSpec` names it (the
method, its parameters, the protocol with its folds and seed, the fit set's content hash for
"fit-on", the leak opt-in, the shuffled-pairs control); :meth:`Runner.run` obtains it for the
pairs ``D`` in one of three ways, and only here is that decided:

``slice``
    A parameter a fitted method applies without refitting (spectral k: eigenvectors are
    computed once for the largest k offered, every k is a slice of them). Transductive runs
    of such methods share one fit per data and fit parameters.
``refit``
    The same fits at a new slider value (OT's ``reg_lap`` / ``reg_src``, Sinkhorn's ``reg``):
    the fits' costs, graphs and recent solutions are reused. A refit starts cold, so it gives
    the coupling a fresh fit gives, bit for bit.
``protocol``
    :func:`gapviz.protocols.protocol_transform`: transductive, held-out cross-fitting or
    fit-on, as the spec says.

Whichever way, the transformed pairs equal the full protocol's at the same resolved
parameters (:meth:`Runner.resolved_params`), bit for bit; ``tests/test_runs.py`` checks it for
every method, slider moves back and forth included.

The runner is *given* its stores (:class:`RunMemory`), as scikit-learn's
``Pipeline(memory=)`` is given its cache: the app gives it process-wide stores shared by every
session, the command line a fresh one. A stored fit is never handed out to be changed: a
:class:`Run` carries :class:`FitView` objects that transform new rows (zero-shot prompts, a
typed query) and cannot fit or refit; for a method whose fits are refitted in place, a view
sets the fits to its run's slider values under their lock first.

The trade-off view (gap closed against what is kept) is computed here too, once per run
(:meth:`Runner.tradeoff`), whichever page asks for it.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .measures import (GapReport, MeasuresStopped, measure_gap, one_row_per_image,
                       stop_between_panels)
from .score_terms import ScoreTerms
from .protocols import (DEFAULT_FOLDS, DEFAULT_SEED, PROTOCOLS, Provenance, ProtocolResult,
                        fit_size, protocol_transform, refit_result)

ProgressCallback = Callable[[float, str], None]

#: Runs of the trade-off view: spectral at these k (slices of one fit), and these methods
#: under their default protocols.
TRADEOFF_KS = (5, 10, 20, 40, 60, 120, 200)
TRADEOFF_METHODS = ("center", "standardize", "sinkhorn", "procrustes")
#: The method shown when none is chosen (the Overview's "the gap closed").
DEFAULT_METHOD = "spectral"


# ---------------------------------------------------------------------------------------------
# stores
# ---------------------------------------------------------------------------------------------
class LRUStore:
    """A small thread-safe least-recently-used map (fits, runs, trade-off points)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


class InFlight:
    """Work under way, by key: a second caller asking for a key that another thread is
    computing waits for that result instead of computing it again.

    The app's sessions are threads of one process: two visitors opening the same page of the
    demo at once, or a page asking for a run the background is obtaining
    (:class:`RunsAhead`), share one computation. If the first caller fails or is stopped (a
    Streamlit rerun stops a script thread inside its work), a waiting caller computes the
    work itself, so it gets its own error or result, never another caller's interruption.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: dict[Hashable, Any] = {}
        self._waiting: dict[Hashable, int] = {}

    def once(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """``compute()``, unless another thread is computing ``key``: then its result."""
        from concurrent.futures import Future

        while True:
            with self._lock:
                future = self._futures.get(key)
                owner = future is None
                if owner:
                    future = self._futures[key] = Future()
                else:
                    self._waiting[key] = self._waiting.get(key, 0) + 1
            if owner:
                break
            try:
                return future.result()
            except BaseException:  # noqa: BLE001 - the other caller's failure or stop: do it here
                continue
            finally:
                with self._lock:
                    self._waiting[key] -= 1
                    if not self._waiting[key]:
                        del self._waiting[key]
        try:
            value = compute()
        except BaseException as err:
            future.set_exception(err)
            raise
        else:
            future.set_result(value)
            return value
        finally:
            with self._lock:
                del self._futures[key]

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._futures

    def awaited(self, key: Hashable) -> bool:
        """Whether another caller waits for ``key``'s result now."""
        with self._lock:
            return key in self._waiting


@dataclass
class RunMemory:
    """The stores a :class:`Runner` keeps its work in.

    Attributes
    ----------
    fits : LRUStore
        Fit sets by (data, method, fit parameters, protocol): one entry per set of fits, for
        slices (spectral) and refits (OT, Sinkhorn).
    runs : LRUStore
        Finished runs by (data, spec).
    points : LRUStore
        Trade-off points by (data, spec).
    under_way : InFlight
        Runs being computed now, by (data, spec): a second caller waits for them.
    """

    fits: LRUStore = field(default_factory=lambda: LRUStore(12))
    runs: LRUStore = field(default_factory=lambda: LRUStore(64))
    points: LRUStore = field(default_factory=lambda: LRUStore(256))
    under_way: "InFlight" = field(default_factory=lambda: InFlight())

    def clear(self) -> None:
        for store in (self.fits, self.runs, self.points):
            store.clear()


# ---------------------------------------------------------------------------------------------
# what a run is
# ---------------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """A parameter value as JSON and a cache key hold it (numpy scalars to Python)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):  # a grid: hashable, and the same after JSON
        return tuple(_plain(v) for v in value)
    return value


@dataclass(frozen=True)
class RunSpec:
    """What a run is, independent of where it is computed (hashable; a cache key and a recipe).

    Attributes
    ----------
    method : str
        Registry name (``gapviz.methods.METHODS``); ``"orig"`` for the raw embeddings.
    params : tuple of (str, value)
        The method's parameters, sorted by name (:meth:`make` builds it from a dict).
    protocol : str
        One of :data:`gapviz.protocols.PROTOCOLS` (the raw embeddings: "transductive").
    folds, seed : int
        Held-out cross-fitting folds; seed of the folds, the shuffled control and fit samples.
    fit_on : str or None
        Fit-on: content hash of the fit pairs.
    allow_leak : bool
        Score a method that reads the pairing on its own fit pairs (its numbers then carry a
        warning).
    shuffled : bool
        The shuffled-pairs control (captions permuted).
    max_fit : int or None
        Held-out and fit-on: each fit takes at most this many pairs (a seeded sample).
    """

    method: str
    params: tuple = ()
    protocol: str = "transductive"
    folds: int = DEFAULT_FOLDS
    seed: int = DEFAULT_SEED
    fit_on: str | None = None
    allow_leak: bool = False
    shuffled: bool = False
    max_fit: int | None = None

    @classmethod
    def make(cls, method: str, params: Mapping[str, Any] | None = None,
             protocol: str | None = None, **options: Any) -> "RunSpec":
        """A spec from a parameter dict; ``protocol`` None is the method's default."""
        from .methods import method_class

        cls_ = method_class(method)
        if protocol is None or method == "orig":
            protocol = "transductive" if method == "orig" else cls_.default_protocol
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}.")
        items = tuple(sorted((str(k), _plain(v)) for k, v in dict(params or {}).items()))
        return cls(method, items, protocol, **options)

    @property
    def param_dict(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def is_raw(self) -> bool:
        return self.method == "orig" and not self.shuffled

    def with_params(self, **params: Any) -> "RunSpec":
        """The same run with some parameters changed (a slider move)."""
        return replace(self, params=tuple(sorted({**self.param_dict,
                                                  **{k: _plain(v) for k, v in params.items()}}.items())))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable record (a recipe's ``run``)."""
        return {"method": self.method, "params": self.param_dict, "protocol": self.protocol,
                "folds": self.folds, "seed": self.seed, "fit_on": self.fit_on,
                "allow_leak": self.allow_leak, "shuffled": self.shuffled,
                "max_fit": self.max_fit}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> "RunSpec":
        """The spec a :meth:`to_dict` record describes (ValueError naming a bad field)."""
        if not isinstance(record, Mapping) or not isinstance(record.get("method"), str):
            raise ValueError("a run record needs a 'method' (a method's registry name).")
        params = record.get("params") or {}
        if not isinstance(params, Mapping):
            raise ValueError("a run record's 'params' must be an object of name: value.")
        options: dict[str, Any] = {}
        for name, kind in (("folds", int), ("seed", int), ("allow_leak", bool), ("shuffled", bool)):
            if name in record and record[name] is not None:
                if not isinstance(record[name], kind) or (kind is int and isinstance(record[name], bool)):
                    raise ValueError(f"a run record's {name!r} must be {kind.__name__}, "
                                     f"got {record[name]!r}.")
                options[name] = record[name]
        if record.get("max_fit") is not None:
            if not isinstance(record["max_fit"], int) or isinstance(record["max_fit"], bool):
                raise ValueError(f"a run record's 'max_fit' must be int, got {record['max_fit']!r}.")
            options["max_fit"] = record["max_fit"]
        fit_on = record.get("fit_on")
        if fit_on is not None and not isinstance(fit_on, str):
            raise ValueError("a run record's 'fit_on' must be a content hash (a string).")
        return cls.make(record["method"], params, record.get("protocol"), fit_on=fit_on, **options)

    def digest(self) -> str:
        """A short stable digest of the spec (file names, cache keys across processes)."""
        text = json.dumps(self.to_dict(), sort_keys=True, default=repr)
        return hashlib.sha1(text.encode()).hexdigest()[:16]


def planned_spec(method: str, chosen: Mapping[str, Any] | None, n_pairs: int, dim: int, *,
                 protocol: str | None = None, n_fit_pairs: int | None = None,
                 max_fit: int | None = None, lower_chosen: bool = False,
                 **options: Any) -> tuple[RunSpec, tuple[str, ...]]:
    """The spec a page or the command line runs for ``chosen`` parameters on N pairs.

    ``chosen`` over the method's defaults, the parameters a user sets (sliders, menus:
    :func:`gapviz.methods.offered_params`) and those a fitted method applies without
    refitting (spectral k) stated explicitly, and each size parameter left at a default that
    the pairs each fit sees under the protocol cannot take (spectral k, VLAP anchors) lowered
    to the largest value they can, with a note saying so. A chosen value is kept as chosen (a
    run that cannot take it says why) unless ``lower_chosen``: the app's pages carry the
    values chosen on Close the gap to other data, where they are lowered the same way.

    Parameters
    ----------
    method : str
    chosen : mapping, optional
    n_pairs, dim : int
        Scored pairs and their dimension.
    protocol : str, optional
        Default: the method's own.
    n_fit_pairs : int, optional
        Fit-on: the size of the fit set.
    max_fit : int, optional
        Held-out and fit-on: the most pairs a fit takes.
    lower_chosen : bool, default=False
        Lower chosen size parameters too (with a note), not only defaults.
    **options
        ``folds``, ``seed``, ``fit_on``, ``allow_leak``, ``shuffled`` of :class:`RunSpec`.
    """
    from .methods import method_params, offered_params, suited_params

    spec = RunSpec.make(method, {}, protocol, **options)
    if method == "orig":
        return spec, ()
    if spec.protocol != "transductive":  # a transductive fit takes all the scored pairs
        spec = replace(spec, max_fit=max_fit)
    n_fit = fit_size(n_pairs, spec.protocol, folds=spec.folds, n_fit_pairs=n_fit_pairs,
                     max_fit=spec.max_fit)
    given = dict(chosen or {})
    suited = suited_params(method, n_fit, dim, given)
    defaults = method_params(method)
    kept = {} if lower_chosen else given
    notes = tuple(f"{k} lowered from {'its default ' if k not in given else ''}"
                  f"{given.get(k, defaults.get(k))} to {v}: each fit sees {n_fit:,} pairs of "
                  f"dimension {dim}"
                  for k, v in suited.items() if k not in kept and v != given.get(k, defaults.get(k)))
    params = {**offered_params(method, given), **suited, **kept}
    return replace(spec, params=tuple(sorted((k, _plain(v)) for k, v in params.items()))), notes


def needs_leak_consent(method: str, protocol: str) -> bool:
    """Whether a run would score a method that reads the pairing on pairs it was fitted on
    (transductive): it memorises them, so it runs only when the user asks (``allow_leak``)."""
    from .methods import method_class

    return protocol == "transductive" and method != "orig" and method_class(method).uses_pairing


def default_spec(n_pairs: int, dim: int) -> RunSpec:
    """The run shown when none is chosen (the Overview's "the gap closed"):
    :data:`DEFAULT_METHOD` with its defaults as N pairs of dimension d allow (spectral k = 60,
    lowered on fewer pairs), under its default protocol."""
    return planned_spec(DEFAULT_METHOD, None, n_pairs, dim)[0]


@dataclass(frozen=True)
class RunData:
    """The pairs a run is computed on, and their content hash (the cache key).

    Attributes
    ----------
    images, texts : ndarray of shape (N, d)
    key : str
        Content hash of the pairs (``PairedEmbeddings.content_hash``).
    label : str
        A name for people (a fit-on run's provenance names its fit set by it).
    groups : ndarray of shape (N,) or None
        Each pair's image id when images have several captions (None: one caption each):
        folds split by image, and the measures count any caption as the image's match.
    """

    images: np.ndarray
    texts: np.ndarray
    key: str
    label: str = ""
    groups: np.ndarray | None = None

    @classmethod
    def of(cls, pairs: Any, key: str | None = None, label: str = "") -> "RunData":
        """From a :class:`~gapviz.embeddings.PairedEmbeddings` (its hash computed if not given)."""
        return cls(pairs.image_embeddings, pairs.text_embeddings,
                   key if key is not None else pairs.content_hash(), label,
                   getattr(pairs, "group_ids", None))

    @classmethod
    def of_arrays(cls, X: np.ndarray, Y: np.ndarray, label: str = "",
                  groups: np.ndarray | None = None) -> "RunData":
        """From two arrays (their content hash computed, as ``PairedEmbeddings`` does; with
        ``groups``, the image id of each pair, as it hashes them)."""
        from .embeddings import content_hash

        ids = None
        if groups is not None:
            ids = [str(i) for i in range(X.shape[0])] + ["\x1egroups", *map(str, groups)]
        return cls(X, Y, content_hash(X, Y, ids), label, groups)

    @property
    def n(self) -> int:
        return int(self.images.shape[0])

    @property
    def dim(self) -> int:
        return int(self.images.shape[1])


class FitView:
    """A read-only handle on one fit of a run: transforms new rows, cannot fit or refit.

    ``transform_images`` / ``transform_texts`` apply the fit with the run's view parameters
    (spectral k) on a shallow copy, and, for a fit that is refitted in place by slider moves
    (OT, Sinkhorn), first set it to the run's slider values under the fit set's lock.
    """

    def __init__(self, fit: Any, view_params: Mapping[str, Any] | None = None,
                 sliders: Mapping[str, Any] | None = None, lock: Any = None) -> None:
        self._fit = fit
        self._view = dict(view_params or {})
        self._sliders = dict(sliders or {})
        self._lock = lock

    @property
    def name(self) -> str:
        return type(self._fit).name

    def describe(self) -> dict[str, Any]:
        out = self._fit.describe()
        out["params"] = {**out["params"], **self._view, **self._sliders}
        return out

    def _apply(self, which: str, A: np.ndarray) -> np.ndarray:
        if self._lock is not None:
            with self._lock:
                self._fit.refit(**self._sliders)
                return getattr(self._fit, which)(A)
        fit = self._fit
        if self._view:
            fit = copy.copy(fit)
            fit.set_params(**self._view)
        return getattr(fit, which)(A)

    def transform_images(self, X: np.ndarray) -> np.ndarray:
        """Image embeddings (M, d) -> the run's output space (M, k), out of sample."""
        return self._apply("transform_images", X)

    def transform_texts(self, Y: np.ndarray) -> np.ndarray:
        """Text embeddings (M, d) -> the run's output space (M, k), out of sample."""
        return self._apply("transform_texts", Y)


class Run:
    """One run's outcome: the transformed scored pairs, how they were obtained, its fits.

    Attributes
    ----------
    spec : RunSpec
    data_key : str
        Content hash of the scored pairs.
    images, texts : ndarray of shape (N, k)
        The scored pairs as the run transformed them (read-only).
    provenance : Provenance
    fits : tuple of FitView
        One per fit (held-out: per fold, in fold order); empty for the raw embeddings.
    fold_of : ndarray of shape (N,) or None
        Held-out: the fold of each scored pair.
    how : str
        "raw", "slice", "refit" or "protocol": the way the runner obtained it.
    scores : ScoreTerms or None
        A score correction's terms (its embeddings are the input's): every rank of
        :attr:`report` is on the corrected scores.
    groups : ndarray of shape (N,) or None
        The data's image ids when images have several captions (:class:`RunData`).
    """

    def __init__(self, spec: RunSpec, data_key: str, images: np.ndarray, texts: np.ndarray,
                 provenance: Provenance, fits: tuple = (), fold_of: np.ndarray | None = None,
                 how: str = "protocol", scores: ScoreTerms | None = None,
                 groups: np.ndarray | None = None) -> None:
        self.spec = spec
        self.data_key = data_key
        self.images = _read_only(one_row_per_image(images, groups))
        self.texts = _read_only(texts)
        self.provenance = provenance
        self.fits = tuple(fits)
        self.fold_of = fold_of
        self.how = how
        self.scores = scores
        self.groups = groups
        self._report: GapReport | None = None
        self._view = None
        self._lock = threading.Lock()
        self._callers = 0  # threads asking for the report or view now (one computes it)

    @property
    def key(self) -> str:
        """A stable string naming the run (data hash and spec digest): a cache key."""
        return f"{self.data_key}/{self.spec.digest()}"

    @property
    def report(self) -> GapReport:
        """The measures of the scored pairs (:func:`gapviz.measures.measure_gap`), once.

        The view of a neighbouring slider value made ahead of time (:class:`NeighbourSolves`)
        stops between two panels of the similarity pass once it is stale (``_AHEAD.stale``:
        the user moved elsewhere) and nobody else asks for this run's measures meanwhile:
        :class:`_GaveWay` is raised and nothing is kept. (Work ahead that is still wanted,
        :class:`RunsAhead`'s, gives way between folds only: stopped measures start over.)"""
        with self._asking():
            return self._measured()

    @property
    def view(self):
        """The measures, 2-D PCA and distance samples of the scored pairs
        (:func:`gapviz.views.view_of`: what a page draws), once; a caller asking while another
        computes it waits for that one. Stale work ahead stops as for :attr:`report`."""
        from .views import view_of

        with self._asking():
            report = self._measured()
            with self._lock:
                if self._view is None:
                    self._view = view_of(self.images, self.texts, report,
                                         between=self._give_way_if_asked)
                return self._view

    @contextlib.contextmanager
    def _asking(self):
        with _CALLERS_LOCK:
            self._callers += 1
        try:
            yield
        finally:
            with _CALLERS_LOCK:
                self._callers -= 1

    def _unwanted(self) -> Callable[[], bool] | None:
        """On a thread making work ahead that can go stale (``_AHEAD.stale``): whether it went
        stale and no other thread asks for this run's measures; elsewhere None."""
        stale = getattr(_AHEAD, "stale", None)
        return None if stale is None else (lambda: self._callers <= 1 and stale())

    def _give_way_if_asked(self) -> None:
        unwanted = self._unwanted()
        if unwanted is not None and unwanted():
            raise _GaveWay(self.key)

    def _measured(self) -> GapReport:
        with self._lock:
            if self._report is None:
                self._give_way_if_asked()
                try:
                    with stop_between_panels(self._unwanted()):
                        self._report = measure_gap(self.images, self.texts, scores=self.scores,
                                                   groups=self.groups)
                except MeasuresStopped:
                    raise _GaveWay(self.key) from None
            return self._report

    @property
    def metrics(self) -> dict[str, float]:
        return self.report.metrics


def _read_only(A: np.ndarray) -> np.ndarray:
    A = np.asarray(A)
    if A.flags.writeable:
        A = A.view()
        A.flags.writeable = False
    return A


@dataclass
class _FitSet:
    """Fits shared by the runs that slice or refit them, and the lock their refits take."""

    result: ProtocolResult
    lock: threading.Lock = field(default_factory=threading.Lock)


# ---------------------------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------------------------
class Runner:
    """Obtains runs: slice, refit or the full protocol (module docstring), kept in ``memory``.

    Parameters
    ----------
    memory : RunMemory, optional
        Where fits, runs and trade-off points are kept; a fresh one by default.
    """

    def __init__(self, memory: RunMemory | None = None) -> None:
        self.memory = memory if memory is not None else RunMemory()

    # -- what a spec resolves to ---------------------------------------------------------------
    @staticmethod
    def split(spec: RunSpec, n: int, dim: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """``(fit_params, view_params, slider_params)`` of a spec on N pairs of dimension d:
        what needs a fit, what a fit applies without one (sliced), what a refit changes."""
        from .methods import method_class

        cls = method_class(spec.method)
        params = spec.param_dict
        view: dict[str, Any] = {}
        if spec.protocol == "transductive" and not spec.shuffled and not cls.uses_pairing:
            params, view = cls.split_params(params, n, dim)
        sliders: dict[str, Any] = {}
        if hasattr(cls, "refit"):
            # every live value explicit: a refit sets each of them, never keeps a previous move's
            from .methods import method_params

            defaults = method_params(spec.method)
            # a grid search inside the fit chooses these itself: no slider moves them, and the
            # values given are not used (the fit records the ones it chose)
            tuned = set(cls.tuned_names({**defaults, **params})) if hasattr(cls, "tuned_names") else set()
            live = [p.name for p in cls.params_info if p.slider is not None and p.name not in tuned]
            sliders = {k: params.get(k, defaults[k]) for k in live}
            params = {k: v for k, v in params.items() if k not in sliders and k not in tuned}
        return params, view, sliders

    @classmethod
    def resolved_params(cls, spec: RunSpec, n: int, dim: int) -> dict[str, Any]:
        """The parameters the full protocol runs with to give this spec's pairs bit for bit."""
        fit, view, sliders = cls.split(spec, n, dim)
        return {**fit, **view, **sliders}

    # -- obtaining a run -------------------------------------------------------------------
    def run(self, spec: RunSpec, data: RunData, *, fit_on: RunData | None = None,
            progress: ProgressCallback | None = None) -> Run:
        """The run ``spec`` on ``data`` (``fit_on``: the fit pairs of protocol "fit-on")."""
        if spec.fit_on is not None and (fit_on is None or fit_on.key != spec.fit_on):
            raise ValueError("this run is fitted on other pairs (content hash "
                             f"{spec.fit_on[:12]}…): load them and pass them as fit_on.")
        if spec.fit_on is None and fit_on is not None:
            raise ValueError("fit pairs were given but the run's protocol is not 'fit-on'.")
        key = (data.key, spec)
        done = self.memory.runs.get(key)
        if done is not None:
            return done
        return self.memory.under_way.once(key, lambda: self._obtain(key, spec, data, fit_on,
                                                                    progress))

    def _obtain(self, key: tuple, spec: RunSpec, data: RunData, fit_on: RunData | None,
                progress: ProgressCallback | None) -> Run:
        done = self.memory.runs.get(key)  # finished while this caller waited for its turn
        if done is not None:
            return done
        if spec.is_raw:
            run = Run(spec, data.key, data.images, data.texts,
                      Provenance("transductive", "orig", data.n, data.n), (), None, "raw",
                      groups=data.groups)
        else:
            stop = getattr(_AHEAD, "should_stop", None)
            if progress is None and stop is not None:  # work ahead: it gives way between steps
                def progress(fraction: float, message: str) -> None:  # noqa: ARG001
                    if fraction < 1 and stop() and not self.memory.under_way.awaited(key):
                        raise _GaveWay(key)
            run = self._compute(spec, data, fit_on, progress)
        self.memory.runs.put(key, run)
        return run

    def _compute(self, spec: RunSpec, data: RunData, fit_on: RunData | None,
                 progress: ProgressCallback | None) -> Run:
        fit_params, view, sliders = self.split(spec, data.n, data.dim)
        base = replace(spec, params=tuple(sorted(fit_params.items())))
        fit_key = (data.key, base)
        entry: _FitSet | None = self.memory.fits.get(fit_key)
        if view:  # slice: one transductive fit per fit parameters, every view a slice of it
            if entry is None:
                result = self._protocol(base, fit_params, data, fit_on, progress)
                entry = _FitSet(result)
                self.memory.fits.put(fit_key, entry)
            fit = entry.result.fits[0]
            X, Y = fit.fitted_pairs(data.images, data.texts, **view)
            prov = entry.result.provenance
            return Run(spec, data.key, X, Y, prov, (FitView(fit, view),), None, "slice",
                       groups=data.groups)
        if sliders:  # refit: the same fits at new slider values
            if entry is None:
                result = self._protocol(spec, {**fit_params, **sliders}, data, fit_on, progress)
                if result.provenance.aligned:  # rotated folds cannot be refitted
                    return self._from_result(spec, data, result, None, {}, "protocol")
                entry = _FitSet(result)
                self.memory.fits.put(fit_key, entry)
                return self._from_result(spec, data, result, entry, sliders, "protocol")
            with entry.lock:
                out = refit_result(entry.result, data.images, data.texts, progress=progress,
                                   **sliders)
            return self._from_result(spec, data, out, entry, sliders, "refit")
        result = self._protocol(spec, fit_params, data, fit_on, progress)
        return self._from_result(spec, data, result, None, {}, "protocol")

    @staticmethod
    def _from_result(spec: RunSpec, data: RunData, result: ProtocolResult, entry: _FitSet | None,
                     sliders: dict[str, Any], how: str) -> Run:
        lock = entry.lock if entry is not None else None
        views = tuple(FitView(fit, None, sliders if lock is not None else None, lock)
                      for fit in result.fits)
        return Run(spec, data.key, result.image_embeddings, result.text_embeddings,
                   result.provenance, views, result.fold_of, how, result.scores, data.groups)

    @staticmethod
    def _protocol(spec: RunSpec, params: dict[str, Any], data: RunData, fit_on: RunData | None,
                  progress: ProgressCallback | None) -> ProtocolResult:
        return protocol_transform(
            spec.method, data.images, data.texts, protocol=spec.protocol, params=params,
            folds=spec.folds, seed=spec.seed,
            fit_pairs=None if fit_on is None else (fit_on.images, fit_on.texts),
            fit_source=None if fit_on is None else (fit_on.label or None),
            allow_pairing_leak=spec.allow_leak, shuffled=spec.shuffled, max_fit=spec.max_fit,
            groups=data.groups, progress=progress)

    # -- ahead of a slider move ------------------------------------------------------------
    def precompute(self, spec: RunSpec, data: RunData, values: Sequence[dict[str, Any]]) -> None:
        """Solve the slider ``values`` of a refit run's fits ahead of time (a background
        thread while the user looks); the fits' own state is not changed."""
        fit_params, _, sliders = self.split(spec, data.n, data.dim)
        if not sliders:
            return
        entry = self.memory.fits.get((data.key, replace(spec, params=tuple(sorted(fit_params.items())))))
        if entry is None:
            return
        from .methods.ot import solver_processes

        solvers = solver_processes()
        if solvers is None or len(entry.result.fits) < 2:
            for fit in entry.result.fits:
                fit.precompute(values)
            return
        # with solver processes the folds are solved side by side (these threads only wait)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, solvers.ready),
                                thread_name_prefix="gapviz-ahead-fold") as pool:
            for done in [pool.submit(fit.precompute, values) for fit in entry.result.fits]:
                done.result()

    def solve_ahead(self, spec: RunSpec, data: RunData, value: dict[str, Any]) -> Run:
        """The run of a refit ``spec`` moved to the slider ``value``, with its view, made ahead
        of the move exactly as the move would make it (its couplings first:
        :meth:`precompute`); work ahead of a first move (:func:`first_moves`)."""
        self.precompute(spec, data, [value])
        out = self.run(spec.with_params(**value), data)
        out.view  # noqa: B018 - made once per run, kept on it
        return out

    # -- the trade-off ---------------------------------------------------------------------
    def tradeoff(self, specs: Sequence[RunSpec], data: RunData, *,
                 labels: Sequence[str] | None = None, before: GapReport | None = None,
                 rmg_before: float | None = None, fit_on: RunData | None = None,
                 progress: ProgressCallback | None = None) -> list[dict[str, Any]]:
        """Gap closed against what is kept, one point per run (each kept once per data and spec).

        Each point is :func:`gapviz.closing_costs.tradeoff_point`'s plus how it was obtained:
        ``method``, ``params``, ``protocol``, ``how`` (the provenance in a sentence), ``n_fit``,
        ``n_scored``. ``labels`` name the points (default: the run described with its
        protocol when it is not transductive).
        """
        from .anatomy import relative_modality_gap
        from .closing_costs import tradeoff_point
        from .methods import describe_run, method_label

        raw = self.run(RunSpec.make("orig"), data)
        before = raw.report if before is None else before
        points = []
        for i, spec in enumerate(specs):
            key = (data.key, spec)
            point = self.memory.points.get(key)
            if point is None:
                if rmg_before is None:
                    rmg_before = relative_modality_gap(data.images, data.texts)
                run = self.run(spec, data, fit_on=fit_on if spec.fit_on else None)
                prov = run.provenance
                point = tradeoff_point("", data.images, data.texts, run.images, run.texts,
                                       before, run.report, rmg_before=rmg_before)
                point.update(method=spec.method, params=describe_run(spec.method, spec.param_dict),
                             protocol=prov.protocol, how=prov.summary(), n_fit=prov.n_fit,
                             n_scored=prov.n_scored)
                self.memory.points.put(key, point)
            if labels is not None:
                label = labels[i]
            elif spec.method == "spectral" and spec.protocol == "transductive":
                label = f"spectral k={spec.param_dict.get('n_components')}"
            else:
                label = method_label(spec.method) + ("" if spec.protocol == "transductive"
                                                     else f" ({spec.protocol})")
            points.append({**point, "label": label})
            if progress is not None:
                progress((i + 1) / max(len(specs), 1), label)
        return points


def tradeoff_specs(n: int, dim: int, *, spectral_ks: Sequence[int] = TRADEOFF_KS,
                   methods: Sequence[str] = TRADEOFF_METHODS, folds: int = DEFAULT_FOLDS,
                   seed: int = DEFAULT_SEED) -> list[RunSpec]:
    """The runs of the trade-off across methods: spectral at each k the data allows
    (transductive, slices of one fit), then each of ``methods`` under its default protocol
    with the parameters its fits' size allows."""
    from .methods import method_class

    hi = method_class("spectral").slider_range("n_components", n, dim)[1]
    specs = [RunSpec.make("spectral", {"n_components": int(k)}, "transductive", folds=folds,
                          seed=seed) for k in spectral_ks if k <= hi]
    for name in methods:
        specs.append(planned_spec(name, None, n, dim, folds=folds, seed=seed)[0])
    return specs


def setting_specs(spec: RunSpec, n: int, dim: int) -> list[RunSpec]:
    """A method's trade-off settings: spectral under the transductive protocol at each k of
    :data:`TRADEOFF_KS` the data allows (slices of one fit); any other run, itself."""
    from .methods import method_class

    if spec.method == "spectral" and spec.protocol == "transductive" and not spec.shuffled:
        lo, hi = method_class("spectral").slider_range("n_components", n, dim)
        return [spec.with_params(n_components=k) for k in TRADEOFF_KS if lo <= k <= hi]
    return [spec]


def neighbour_values(name: str, sliders: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The slider values one step away from ``sliders`` (one parameter moved at a time): where
    a user's next move most likely goes (what :meth:`Runner.precompute` is given)."""
    from .methods import method_class

    out = []
    for info in method_class(name).params_info:
        if info.slider is None or info.name not in sliders:
            continue
        value, sl = sliders[info.name], info.slider
        if sl.options is not None:
            options = list(sl.options)
            if value in options:
                i = options.index(value)
                steps = [options[j] for j in (i - 1, i + 1) if 0 <= j < len(options)]
            else:
                steps = []
        else:
            step = sl.step or 0.1
            steps = [round(v, 10) for v in (value - step, value + step)
                     if sl.lo is not None and sl.hi is not None and sl.lo <= v <= sl.hi]
        out += [{**dict(sliders), info.name: v} for v in steps]
    return out


def first_moves(spec: RunSpec) -> list[dict[str, Any]]:
    """The slider values a first move from ``spec`` most likely goes to: one step either way
    of its method's first live slider (the first group :class:`NeighbourSolves` obtains when
    no slider has moved yet); empty for a method without live sliders."""
    groups = _likeliest_first(spec, None) if slider_values(spec) else []
    return groups[0] if groups else []


def slider_values(spec: RunSpec) -> dict[str, Any]:
    """The spec's values of its method's live (refit) sliders."""
    from .methods import method_class

    if not hasattr(method_class(spec.method), "refit"):
        return {}
    return Runner.split(spec, 0, 0)[2]


__all__ = ["DEFAULT_METHOD", "FitView", "InFlight", "LRUStore", "Run", "RunData",
           "RunMemory", "RunSpec", "Runner", "RunsAhead", "TRADEOFF_KS", "TRADEOFF_METHODS", "default_spec", "first_moves",
           "needs_leak_consent", "neighbour_values", "planned_spec", "setting_specs", "slider_values",
           "tradeoff_specs"]


class _GaveWay(Exception):
    """Work ahead stopped between two of its steps (folds) for work a user waits for; it is
    asked for again afterwards."""


#: On :class:`RunsAhead`'s thread, ``should_stop()``: whether a run it obtains is to give way
#: (at its next step) unless someone waits for that run. On :class:`NeighbourSolves`' view
#: thread both it and ``stale()``: whether the value is no longer a neighbour (its run, and its
#: measures between two panels, then stop: :attr:`Run.report`).
_AHEAD = threading.local()
#: Guards every run's count of the threads asking for its measures (:attr:`Run.report`).
_CALLERS_LOCK = threading.Lock()


#: Seconds after the last slider request (:class:`NeighbourSolves`) during which work ahead
#: for other pages (:class:`RunsAhead`) does not start: a user moving a slider every few
#: seconds draws each move on CPUs that pages the user may open later do not take.
SLIDER_QUIET_S = 10.0


class _SliderWork:
    """Whether work ahead of a slider move runs or is asked for (:class:`NeighbourSolves`),
    process-wide: other background work (:class:`RunsAhead`, for a page the user may open
    next) waits for it and for :data:`SLIDER_QUIET_S` after the last request, and gives way
    to it between two steps, since the user is on the page with the slider.

    On a page bench at 1 runnable task per CPU (2 CPUs, chromium on the same CPUs), once the
    OT neighbours were done, the Sinkhorn first view and the Compare rows obtained ahead ran
    in the server during the next slider moves, and the fifth move of each run was the
    slowest (1.04-1.25 s, the others 0.51-0.87 s)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running = 0
        self._last = -math.inf  # time.monotonic() of the last request

    def begin(self) -> None:
        with self._cond:
            self._running += 1
            self._last = time.monotonic()

    def end(self) -> None:
        with self._cond:
            self._running -= 1
            self._cond.notify_all()

    def _quiet_in(self) -> float:
        """Seconds until the slider work is done and quiet (0: now); with the lock held."""
        if self._running > 0:
            return math.inf
        return max(0.0, self._last + SLIDER_QUIET_S - time.monotonic())

    def active(self) -> bool:
        with self._cond:
            return self._quiet_in() > 0

    def wait(self) -> None:
        with self._cond:
            while (left := self._quiet_in()) > 0:
                self._cond.wait(None if math.isinf(left) else left)


_SLIDER_WORK = _SliderWork()


class _OneWorker:
    """One background worker thread whose newest request wins: a request takes a token, and
    work done for an older token stops before its next step (the user moved on)."""

    def __init__(self, thread_name: str) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._latest = 0
        self._lock = threading.Lock()

    def _submit(self, work: Callable[..., Any], *args: Any) -> Any:
        """Run ``work(token, *args)`` on the worker as the newest request; its future. Call
        with ``self._lock`` held."""
        self._latest += 1
        return self._pool.submit(work, self._latest, *args)

    def _current(self, token: int) -> bool:
        return token == self._latest

    def cancel(self) -> None:
        """Let the running request go (it stops before its next step)."""
        with self._lock:
            self._latest += 1

    def wait(self) -> None:
        """Until the worker is idle."""
        self._pool.submit(lambda: None).result()


class NeighbourSolves(_OneWorker):
    """Obtains a refit run's neighbouring slider values in the background while the user looks,
    the values of the slider the user just moved first: their couplings
    (:meth:`Runner.precompute`), runs and views (:attr:`Run.view`: measures, PCA), so that a
    move to one of them finds it done.

    The couplings of one neighbouring value at a time, every fold of it before the next value
    (a move needs all of a value's folds), on one worker thread; a solve gives way to a move
    between two solver iterations. A value's run and view are made on a second thread as
    soon as its couplings are in, beside the next value's solves. They cannot pause midway,
    so each starts once no work a user waits for runs in the process
    (:func:`gapviz.methods.ot.foreground`). Nothing once a newer request came (the user moved
    on): stale work would only delay the new neighbours on a busy machine. Never a result for
    another value: a move reads the run of its own value, made exactly as the move would make
    it (:meth:`Runner.run`: a move asking while it is made waits for it).

    Parameters
    ----------
    runner : Runner
        Whose fits are solved ahead.
    """

    def __init__(self, runner: "Runner") -> None:
        from concurrent.futures import ThreadPoolExecutor

        super().__init__("gapviz-precompute")
        self.runner = runner
        self._asked: tuple | None = None
        self._views = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gapviz-view-ahead")

    def cancel(self) -> None:
        with self._lock:
            self._asked = None
        super().cancel()

    def request(self, spec: RunSpec, data: RunData) -> Any:
        """Obtain ``spec``'s neighbouring values from now on (older requests give way); the
        job's future, or None when the latest request was this one (a page shown again)."""
        with self._lock:
            if self._asked == (spec, data.key):
                return None
            before = self._asked
            self._asked = (spec, data.key)
            moved = (_moved_slider(before[0], spec)
                     if before is not None and before[1] == data.key else None)
            _SLIDER_WORK.begin()  # from the request on (the job ends it), so no work ahead
            return self._submit(self._solve, spec, data, moved)  # starts in between

    def _solve(self, token: int, spec: RunSpec, data: RunData, moved: str | None) -> None:
        try:
            for values in _likeliest_first(spec, moved):
                if not self._obtain(token, spec, data, values):
                    return
        finally:
            _SLIDER_WORK.end()

    def _obtain(self, token: int, spec: RunSpec, data: RunData, values: list[dict]) -> bool:
        """The values' couplings one after another; each value's run and view as soon as its
        couplings are in, on a second thread, while the next value's couplings are solved (in
        the solver processes, when the process has them). Whether to go on."""
        made = []
        try:
            for value in values:  # the couplings: they give way to a move within an iteration
                if not self._current(token):
                    break
                self.runner.precompute(spec, data, [value])
                made.append(self._views.submit(self._view, token, spec, data, value))
            return all([m.result() for m in made]) and len(made) == len(values)
        except Exception:  # noqa: BLE001 - ahead-of-time work; a failure shows on the real move
            logging.getLogger(__name__).debug("work ahead of a slider move failed", exc_info=True)
            for m in made:  # the views asked for end (at once when stale) before the next group
                m.exception()
            return False

    def _view(self, token: int, spec: RunSpec, data: RunData, value: dict) -> bool:
        """One value's run and view (measures, PCA), once no work a user waits for runs in the
        process; whether made. Not when the user moved on: a view under way then stops at its
        next panel (it would share the CPUs with the view of the value moved to), unless the
        page asks for this very run."""
        from .methods.ot import wait_for_foreground

        wait_for_foreground()
        if not self._current(token):
            return False
        _AHEAD.should_stop = _AHEAD.stale = lambda: not self._current(token)
        try:
            self.runner.run(spec.with_params(**value), data).view
        except _GaveWay:
            return False
        finally:
            _AHEAD.should_stop = _AHEAD.stale = None
        return True


def _moved_slider(before: RunSpec, now: RunSpec) -> str | None:
    """The one live slider whose value differs between two runs of a method, else None."""
    if before.method != now.method or replace(before, params=()) != replace(now, params=()):
        return None
    old, new = slider_values(before), slider_values(now)
    changed = [k for k in new if old.get(k) != new[k]]
    return changed[0] if len(changed) == 1 else None


def _likeliest_first(spec: RunSpec, moved: str | None) -> list[list[dict[str, Any]]]:
    """``spec``'s neighbouring slider values (:func:`neighbour_values`), one group per slider:
    the slider the user just moved first (the next move most likely moves it again), then the
    others in the method's order. Each group's runs and views are made before the next
    group's solves start (they would slow them down): on a busy machine the look between two
    moves is seldom long enough for all."""
    sliders = slider_values(spec)
    groups: dict[str, list[dict[str, Any]]] = {}
    for value in neighbour_values(spec.method, sliders):
        name = next(k for k in value if value[k] != sliders.get(k))
        groups.setdefault(name, []).append(value)
    order = sorted(groups, key=lambda name: name != moved)  # stable: the method's order else
    return [groups[name] for name in order]


class RunsAhead(_OneWorker):
    """Work a page will likely ask for next, done in the background on one worker thread while
    the user looks at another page: the Compare page's default rows, say, while the visitor
    reads the Overview. The page then finds its runs done, or under way (:meth:`Runner.run`
    waits for the run in flight rather than computing it again), and never a different
    result: a job computes exactly what the page would, through the same runner.

    One job at a time, in the order given, each started once no work a user waits for runs in
    the process (:func:`gapviz.methods.ot.foreground`: a slider move goes first) and no work
    ahead of a slider move (:class:`NeighbourSolves`). A run under way gives way to either
    between two of its steps (folds), unless that work waits for this very run, and is asked
    for again afterwards. A request is made once per name (the
    same rows of the same data are not queued twice). A newer request replaces what is left
    of older ones, so stale work does not crowd what the user asks for now; or, asked with
    ``first``, goes before it (what the page now shown offers next, ahead of what another
    page may ask for later), the job under way giving way at its next step. What is left of a
    ``lasting`` request (the server's warm-up: no user's request goes stale) is never
    replaced: it runs after the newer jobs.

    Parameters
    ----------
    max_jobs_per_request : int
        Jobs beyond this many in one request are dropped (a guard, not a tuning knob).
    """

    def __init__(self, max_jobs_per_request: int = 32) -> None:
        super().__init__("gapviz-ahead")
        self.max_jobs = max_jobs_per_request
        self._named: set[Hashable] = set()
        self._pending: deque[Callable[[], Any]] = deque()
        self._running: Callable[[], Any] | None = None
        self._lasting: list[Callable[[], Any]] = []  # jobs of lasting requests, until run

    def request(self, name: Hashable, jobs: Sequence[Callable[[], Any]], *,
                first: bool = False, lasting: bool = False) -> Any:
        """Do ``jobs`` from now on, unless ``name`` was requested before; the request's future
        (None when it was not made), whose result is how many jobs it ran (the jobs of older
        requests it carried on included). Older requests stop before their next job; with
        ``first``, the jobs they have left run after these, and without it those of lasting
        requests do. ``lasting``: no newer request replaces these jobs."""
        with self._lock:
            if name in self._named:
                return None
            self._named.add(name)
            jobs = list(jobs)[:self.max_jobs]
            if lasting:
                self._lasting += jobs
            if first:  # the job under way gives way at its next step and is asked for again
                jobs += ([self._running] if self._running is not None else []) + list(self._pending)
            else:  # a lasting job under way runs on (its request's loop ends after it)
                jobs += [j for j in self._pending if self._is_lasting(j) and j not in jobs]
            self._pending = deque(jobs)
            return self._submit(self._work, self._pending)

    def _is_lasting(self, job: Callable[[], Any]) -> bool:
        return any(job is j for j in self._lasting)

    def _carried_on(self) -> bool:
        """Whether a newer request carried the job under way on (``first``): it then gives way."""
        with self._lock:
            return self._running is not None and self._running in self._pending

    def _should_stop(self) -> bool:
        from .methods.ot import foreground_running

        return self._carried_on() or foreground_running() or _SLIDER_WORK.active()

    def _work(self, token: int, pending: deque) -> int:
        from .methods.ot import wait_for_foreground

        done = 0
        _AHEAD.should_stop = self._should_stop
        try:
            while True:
                wait_for_foreground()  # a page's work the user waits for (a slider move) first,
                _SLIDER_WORK.wait()  # and the work ahead of the user's next slider move
                with self._lock:
                    if not self._current(token) or not pending:
                        break
                    job = self._running = pending.popleft()
                finished = True
                try:
                    job()
                    done += 1
                except _GaveWay:  # asked for again: after the user's work, or the newer jobs
                    finished = False
                    with self._lock:
                        if self._current(token):
                            pending.appendleft(job)
                        elif self._is_lasting(job) and job not in self._pending:
                            self._pending.append(job)  # after the newer request's jobs
                except Exception:  # noqa: BLE001 - work ahead; a failure shows when asked for
                    logging.getLogger(__name__).debug("work ahead failed", exc_info=True)
                finally:
                    with self._lock:
                        self._running = None
                        if finished and job in self._pending:  # a newer request carried it on
                            self._pending.remove(job)
                        if finished:
                            self._lasting = [j for j in self._lasting if j is not job]
        finally:
            _AHEAD.should_stop = None
        return done
