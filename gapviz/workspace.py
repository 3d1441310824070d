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
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .embeddings import LoadReport, PairedEmbeddings

#: Name of the built-in demo dataset.
DEMO_DATASET = "Demo (simulated)"
#: Embeddings (models of datasets) a hosted session keeps besides the built-in demo.
MAX_SESSION_EMBEDDINGS = 4
MAX_SESSION_EMBEDDINGS_ENV = "GAPVIZ_MAX_SESSION_EMBEDDINGS"


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
    """

    def __init__(self, max_embeddings: int | None | str = "auto") -> None:
        if max_embeddings == "auto":
            max_embeddings = session_embeddings_limit()
        if max_embeddings is not None and (not isinstance(max_embeddings, int)
                                           or isinstance(max_embeddings, bool) or max_embeddings < 1):
            raise ValueError(f"max_embeddings must be None, 'auto' or an integer >= 1, got "
                             f"{max_embeddings!r}.")
        self.max_embeddings: int | None = max_embeddings
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
        self.datasets.pop(dataset, None)
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
        for store in (ds.models, ds.hashes, ds.reports):
            store.pop(model, None)
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
