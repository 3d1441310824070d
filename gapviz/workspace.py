"""The datasets a user has loaded, each embedded by one or more models, and which one is active.

Pure Python (the app keeps one :class:`Workspace` per browser session; a notebook can use it
too). A *dataset* is a set of pairs; a *model* of a dataset is one embedding of those pairs.
Loading pairs whose ids are exactly those of a loaded dataset adds a model to it (the same
pairs embedded by another model, or another embeddings file of them); anything else becomes
a new dataset. Each embedding's content hash is computed once, when it is added: every cache
of the app is keyed on it.

A hosted demo's session keeps a bounded number of embeddings besides the built-in demo
(:data:`MAX_SESSION_EMBEDDINGS`, ``$GAPVIZ_MAX_SESSION_EMBEDDINGS``): past it, the least
recently used one (added or selected) is dropped, with a notice, never the active one.

Workspaces of one process share their pools (:class:`SharedPools`, :data:`POOLS`): sessions
that load the same embeddings (an upload, a path, a COCO sample: the same content hash) hold
one copy of the arrays and lists, not one each, and the views drawn of a pool (a projection, a
viewer's table) are kept once, while a live workspace holds the pool, and released when the
last one lets it go or is dropped (its session ended).
"""

from __future__ import annotations

import copy
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .embeddings import LoadReport, PairedEmbeddings

T = TypeVar("T")

#: Name of the built-in demo dataset.
DEMO_DATASET = "Demo (simulated)"
#: Embeddings (models of datasets) a hosted session keeps besides the built-in demo.
MAX_SESSION_EMBEDDINGS = 4
MAX_SESSION_EMBEDDINGS_ENV = "GAPVIZ_MAX_SESSION_EMBEDDINGS"
#: Views of pools (projections, viewers' tables) :data:`POOLS` keeps at most.
MAX_POOL_VIEWS = 8


def session_embeddings_limit(hosted_mode: bool | None = None) -> int | None:
    """How many embeddings besides the demo one session keeps: None (no bound) unless hosted
    (``hosted_mode``, default :func:`gapviz.hosting.hosted`); hosted,
    ``$GAPVIZ_MAX_SESSION_EMBEDDINGS`` (a whole number >= 1) or :data:`MAX_SESSION_EMBEDDINGS`."""
    from . import hosting

    if not hosting.hosted(hosted_mode):
        return None
    raw = os.environ.get(MAX_SESSION_EMBEDDINGS_ENV, "").strip()
    if not raw:
        return MAX_SESSION_EMBEDDINGS
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (value >= 1 and value == int(value)):
        raise hosting.HostedRefusal(f"${MAX_SESSION_EMBEDDINGS_ENV}={raw!r} must be a whole number "
                                    ">= 1; set it to one or unset it.")
    return int(value)


def _equal(a: Any, b: Any) -> bool:
    """Whether two metadata values are equal (False where ``==`` cannot say: arrays)."""
    if a is b:
        return True
    try:
        return bool(a == b)
    except (ValueError, TypeError):
        return False


#: The fields of :class:`PairedEmbeddings` besides the arrays and ids (which the content hash
#: covers) that must match before two loads are the very same pool.
_OTHER_FIELDS = ("captions", "image_paths", "model", "meta", "labels")


class SharedPools:
    """One copy of each pool per content hash for every workspace of a process, and the views
    drawn of a pool while a workspace holds it.

    Pools are held weakly: a pool is freed once no workspace (nor anything else) refers to
    it. Views (:meth:`view`: a projection, a viewer's table) are held here while a live
    workspace holds their pool (:meth:`hold`), at most ``max_views`` of them (least recently
    used dropped first); they are released as soon as the last workspace holding the pool
    lets it go (:meth:`let_go`) or is garbage-collected (its session ended).

    Parameters
    ----------
    max_views : int, default=MAX_POOL_VIEWS
        Views kept at most, over all pools.
    """

    def __init__(self, max_views: int = MAX_POOL_VIEWS) -> None:
        if not isinstance(max_views, int) or isinstance(max_views, bool) or max_views < 1:
            raise ValueError(f"max_views must be an integer >= 1, got {max_views!r}.")
        self.max_views = max_views
        self._lock = threading.Lock()
        self._pools: weakref.WeakValueDictionary[str, PairedEmbeddings] = (
            weakref.WeakValueDictionary())
        self._holders: dict[str, weakref.WeakSet] = {}
        self._watched: weakref.WeakSet = weakref.WeakSet()
        self._views: OrderedDict[tuple[str, Hashable], Any] = OrderedDict()
        self._making: dict[tuple[str, Hashable], threading.Lock] = {}

    # -- pools --------------------------------------------------------------------------------
    def share(self, pairs: PairedEmbeddings, key: str) -> PairedEmbeddings:
        """The process's copy of ``pairs`` (content hash ``key``).

        The first pool with a content hash is kept (weakly) and returned as is. A later pool
        with the same hash gets that copy back when its captions, image paths, model, meta and
        labels match too; otherwise a pool of its own that shares the arrays, the ids and
        every list that matches, so only what differs is held twice.
        """
        with self._lock:
            known = self._pools.get(key)
            if known is None:
                self._pools[key] = pairs
                return pairs
        if known is pairs:
            return known
        if all(_equal(getattr(known, f), getattr(pairs, f)) for f in _OTHER_FIELDS):
            return known
        own = copy.copy(pairs)  # a shallow copy: nothing is converted or copied again
        own.image_embeddings, own.text_embeddings = known.image_embeddings, known.text_embeddings
        own.ids = known.ids
        for name in ("captions", "image_paths", "labels"):
            if _equal(getattr(known, name), getattr(pairs, name)):
                setattr(own, name, getattr(known, name))
        own.__dict__.pop("_simulated_verdict", None)
        return own

    def hold(self, key: str, owner: object) -> None:
        """``owner`` (a workspace) holds the pool ``key``: its views are kept while it does."""
        with self._lock:
            self._holders.setdefault(key, weakref.WeakSet()).add(owner)
            if owner not in self._watched:
                self._watched.add(owner)
                weakref.finalize(owner, self._owner_gone)

    def let_go(self, key: str, owner: object) -> None:
        """``owner`` no longer holds the pool ``key`` (its views go once nobody does)."""
        with self._lock:
            holders = self._holders.get(key)
            if holders is not None:
                holders.discard(owner)
            self._prune()

    def held(self, key: str) -> bool:
        """Whether a live workspace holds the pool ``key``."""
        with self._lock:
            self._prune()
            return key in self._holders

    # -- views --------------------------------------------------------------------------------
    def view(self, key: str, name: Hashable, make: Callable[[], T]) -> T:
        """The view ``name`` of the pool ``key``, made by ``make()`` once and kept while a
        workspace holds the pool (made each time, and not kept, when none does). Two callers
        asking for the same view at once wait for one ``make()``."""
        entry = (key, name)
        with self._lock:
            self._prune()
            if entry in self._views:
                self._views.move_to_end(entry)
                return self._views[entry]
            making = self._making.setdefault(entry, threading.Lock())
        with making:
            with self._lock:
                if entry in self._views:
                    return self._views[entry]
            value = make()
            with self._lock:
                self._making.pop(entry, None)
                self._prune()
                if key in self._holders:
                    self._views[entry] = value
                    while len(self._views) > self.max_views:
                        self._views.popitem(last=False)
        return value

    def has_view(self, key: str, name: Hashable) -> bool:
        """Whether the view ``name`` of the pool ``key`` is kept (no ``make()`` needed)."""
        with self._lock:
            self._prune()
            return (key, name) in self._views

    def stats(self) -> dict[str, int]:
        """Pools alive, pools held by a live workspace, and views kept (for tests and
        benchmarks)."""
        with self._lock:
            self._prune()
            return {"pools": len(self._pools), "held": len(self._holders),
                    "views": len(self._views)}

    def _owner_gone(self) -> None:
        # Called by the garbage collector, in whichever thread it runs: never wait for the
        # lock there (a busy lock leaves the pruning to the next call of this store).
        if self._lock.acquire(blocking=False):
            try:
                self._prune()
            finally:
                self._lock.release()

    def _prune(self) -> None:
        """Drop the views (and the bookkeeping) of pools no live workspace holds (a dead
        workspace has left its weak sets already)."""
        # Iterate, not len(): a weak set yields live members only, while its size may still
        # count a member whose weak reference's callback has not run yet.
        for key in [k for k, holders in self._holders.items() if not any(True for _ in holders)]:
            del self._holders[key]
        for entry in [e for e in self._views if e[0] not in self._holders]:
            del self._views[entry]


#: The pools and views shared by every workspace of this process (the app's sessions).
POOLS = SharedPools()


@dataclass
class Dataset:
    """One set of pairs and its embeddings by one or more models.

    Attributes
    ----------
    name : str
        Unique within the workspace.
    source : str
        Where the pairs came from, in words ("built-in demo", "embeddings file x.npz", ...).
    models : dict of str to PairedEmbeddings
        Model name -> embeddings of the same pairs (same ids, same order).
    hashes : dict of str to str
        Model name -> :meth:`PairedEmbeddings.content_hash` (computed once).
    reports : dict of str to LoadReport
        Model name -> what was kept and skipped when it was loaded.
    """

    name: str
    source: str
    models: dict[str, PairedEmbeddings] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)
    reports: dict[str, LoadReport] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        first = next(iter(self.models.values()))
        return list(first.ids or [])

    @property
    def n(self) -> int:
        return next(iter(self.models.values())).n

    @property
    def simulated(self) -> bool:
        return any(p.is_simulated for p in self.models.values())


@dataclass(frozen=True)
class Active:
    """The embedding every page shows: dataset, model, pairs and their content hash."""

    dataset: Dataset
    model: str
    pairs: PairedEmbeddings
    key: str

    @property
    def simulated(self) -> bool:
        return self.pairs.is_simulated


class Workspace:
    """Loaded datasets, the active dataset and model, and the chosen gap-closing method.

    Parameters
    ----------
    max_embeddings : int, None or "auto", default="auto"
        Most embeddings kept besides the built-in demo (:data:`DEMO_DATASET`); adding one
        more drops the least recently used (never the active one nor the one just added)
        and says so in :attr:`notices`. None: no bound. "auto":
        :func:`session_embeddings_limit` (bounded in a hosted demo only).
    pools : SharedPools or None, default=POOLS
        Where pools are shared with the other workspaces of the process (one copy per
        content hash) and their views kept while this workspace holds them. None: this
        workspace keeps what it is given and shares nothing.
    """

    def __init__(self, max_embeddings: int | None | str = "auto",
                 pools: SharedPools | None = POOLS) -> None:
        if max_embeddings == "auto":
            max_embeddings = session_embeddings_limit()
        if max_embeddings is not None and (not isinstance(max_embeddings, int)
                                           or isinstance(max_embeddings, bool) or max_embeddings < 1):
            raise ValueError(f"max_embeddings must be None, 'auto' or an integer >= 1, got "
                             f"{max_embeddings!r}.")
        self.max_embeddings: int | None = max_embeddings
        self.pools = pools
        #: Messages about embeddings dropped to keep within ``max_embeddings`` (the Data page
        #: shows and clears them).
        self.notices: list[str] = []
        #: (dataset, model) in order of use, least recent first.
        self._used: list[tuple[str, str]] = []
        self.datasets: dict[str, Dataset] = {}
        self.current_dataset: str | None = None
        self.current_model: dict[str, str] = {}
        #: Method chosen on the "Close the gap" page and its parameters (shown in the sidebar).
        self.method: str = "spectral"
        self.method_params: dict[str, Any] = {}
        #: The run "Close the gap" last showed (a ``gapviz.runs.RunSpec``), or None.
        self.last_spec: Any = None
        #: Messages of the last load, shown once by the Data page.
        self.last_load: dict[str, Any] | None = None

    def params_for(self, name: str) -> dict[str, Any] | None:
        """The parameters set on "Close the gap" for ``name`` when it is the chosen method,
        else None (its defaults): what every other page runs ``name`` with."""
        return dict(self.method_params) if name == self.method and self.method_params else None

    # -- adding -------------------------------------------------------------------------------
    def add(self, pairs: PairedEmbeddings, *, source: str, dataset: str | None = None,
            model: str | None = None, report: LoadReport | None = None,
            activate: bool = True) -> tuple[str, str]:
        """Add one embedding of a set of pairs; return its ``(dataset, model)`` names.

        Parameters
        ----------
        pairs : PairedEmbeddings
        source : str
            Where the pairs came from (shown to the user).
        dataset : str, optional
            Dataset to add to. If not given: the loaded dataset with exactly the same ids,
            else a new dataset named after ``source``. Giving the name of a dataset whose ids
            differ raises ``ValueError``.
        model : str, optional
            Model name; default ``pairs.model`` (or "embeddings"). Made unique in the dataset
            unless the content is identical to that model's (then it is the same entry).
        activate : bool
            Make the added embedding the active one.
        """
        key = pairs.content_hash()
        if dataset is None:
            dataset = self._dataset_with_ids(pairs.ids or []) or self._unique_name(source)
        ds = self.datasets.get(dataset)
        if ds is None:
            ds = self.datasets[dataset] = Dataset(dataset, source)
        elif ds.ids != list(pairs.ids or []):
            raise ValueError(f"dataset '{dataset}' holds other pairs ({ds.n} pairs); its models must "
                             "embed exactly the same pairs, in the same order.")
        name = model or pairs.model or "embeddings"
        for existing, h in ds.hashes.items():
            if h == key:  # the very same embedding: do not add it twice
                name = existing
                break
        else:
            base, i = name, 2
            while name in ds.models:
                name, i = f"{base} ({i})", i + 1
            if self.pools is not None:
                pairs = self.pools.share(pairs, key)
                self.pools.hold(key, self)
            ds.models[name] = pairs
            ds.hashes[name] = key
            if report is not None:
                ds.reports[name] = report
        if activate or self.current_dataset is None:
            self.select(dataset, name)
        else:
            self._touch(dataset, name)
        self._keep_within_limit(protect=(dataset, name))
        return dataset, name

    def remove(self, dataset: str) -> None:
        """Forget a dataset; the active one moves to the first remaining dataset."""
        ds = self.datasets.pop(dataset, None)
        if ds is not None:
            self._let_go(ds.hashes.values())
        self.current_model.pop(dataset, None)
        self._used = [u for u in self._used if u[0] != dataset]
        if self.current_dataset == dataset:
            self.current_dataset = next(iter(self.datasets), None)

    def drop_model(self, dataset: str, model: str) -> None:
        """Forget one embedding; a dataset left without models is removed. The active
        embedding moves to the dataset's other model, or to the first remaining dataset."""
        ds = self.datasets.get(dataset)
        if ds is None or model not in ds.models:
            return
        key = ds.hashes.get(model)
        for store in (ds.models, ds.hashes, ds.reports):
            store.pop(model, None)
        if key is not None:
            self._let_go([key])
        self._used = [u for u in self._used if u != (dataset, model)]
        if not ds.models:
            self.remove(dataset)
        elif self.current_model.get(dataset) == model:
            self.current_model[dataset] = next(iter(ds.models))

    def take_notices(self) -> list[str]:
        """The notices not shown yet (and forget them)."""
        notices, self.notices = self.notices, []
        return notices

    # -- choosing -----------------------------------------------------------------------------
    def select(self, dataset: str, model: str | None = None) -> None:
        """Make ``dataset`` (and ``model`` of it, default: its last chosen model) active."""
        if dataset not in self.datasets:
            raise KeyError(f"no dataset '{dataset}'; loaded: {sorted(self.datasets)}")
        ds = self.datasets[dataset]
        if model is None:
            model = self.current_model.get(dataset) or next(iter(ds.models))
        if model not in ds.models:
            raise KeyError(f"dataset '{dataset}' has no model '{model}'; it has {sorted(ds.models)}")
        self.current_dataset = dataset
        self.current_model[dataset] = model
        self._touch(dataset, model)

    @property
    def active(self) -> Active | None:
        """The active embedding, or None when nothing is loaded."""
        if self.current_dataset is None:
            return None
        ds = self.datasets[self.current_dataset]
        model = self.current_model.get(ds.name) or next(iter(ds.models))
        return Active(ds, model, ds.models[model], ds.hashes[model])

    # -- internals ----------------------------------------------------------------------------
    def _let_go(self, keys) -> None:
        """Tell the shared pools that this workspace no longer holds ``keys`` (those another
        of its entries still holds excepted)."""
        if self.pools is None:
            return
        still = {h for ds in self.datasets.values() for h in ds.hashes.values()}
        for key in set(keys) - still:
            self.pools.let_go(key, self)

    def _touch(self, dataset: str, model: str) -> None:
        entry = (dataset, model)
        if entry in self._used:
            self._used.remove(entry)
        self._used.append(entry)

    def _keep_within_limit(self, protect: tuple[str, str]) -> None:
        """Drop least recently used embeddings (not the demo's, the active one or
        ``protect``) until at most ``max_embeddings`` remain besides the demo."""
        if self.max_embeddings is None:
            return
        act = self.active
        keep = {protect} | ({(act.dataset.name, act.model)} if act is not None else set())
        order = {entry: i for i, entry in enumerate(self._used)}
        while True:
            loaded = [(d, m) for d, ds in self.datasets.items() if d != DEMO_DATASET
                      for m in ds.models]
            if len(loaded) <= self.max_embeddings:
                return
            candidates = [e for e in loaded if e not in keep]
            if not candidates:
                return
            dataset, model = min(candidates, key=lambda e: order.get(e, -1))
            self.drop_model(dataset, model)
            self.notices.append(
                f"Dropped '{model}' of '{dataset}', the least recently used: a session of "
                f"this demo keeps at most {self.max_embeddings} loaded embeddings besides the "
                "built-in demo. Load it again to use it.")
    def _dataset_with_ids(self, ids: list[str]) -> str | None:
        for name, ds in self.datasets.items():
            if ds.n == len(ids) and ds.ids == list(ids):
                return name
        return None

    def _unique_name(self, base: str) -> str:
        name, i = base, 2
        while name in self.datasets:
            name, i = f"{base} ({i})", i + 1
        return name
