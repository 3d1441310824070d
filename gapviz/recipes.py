"""Recipes: the state of a view as a small record, in a link and as a JSON file.

A *recipe* says what a page showed and how to get it again: the data (its content hash, and
for the built-in demo how to regenerate it), the run (:class:`gapviz.runs.RunSpec`: method,
parameters, protocol, folds, seed) and the view's own choices (Recall@K, the selected query,
the methods and models of a comparison). The app writes it into the page's URL (so a link
reopens the exact view on any server that holds the same data) and offers it as a download;
``gapviz evaluate SOURCE --recipe FILE`` and ``gapviz compare SOURCE ... --recipe FILE``
replay it to the numbers the page showed, after checking that SOURCE is the same data (its
content hash): other data is a clear error, never a silent rerun.

A link never names a server path: data is named by its content hash (and, for people, the
dataset's name).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from .runs import RunData, Runner, RunSpec

#: The pages a recipe can reopen (the app's page files, without ``.py``).
PAGES = ("overview", "data", "explore", "close_gap", "anatomy", "retrieval", "compare")
#: Recipe format version (bumped when a field changes meaning).
FORMAT = 1
#: A content hash: SHA-1 in hex.
_HASH = re.compile(r"^[0-9a-f]{40}$")
#: Longest text field a link or recipe may carry (names, method lists).
MAX_TEXT = 200


class RecipeError(ValueError):
    """A recipe or link that cannot be used, with what is wrong and what to do."""


@dataclass(frozen=True)
class Recipe:
    """What a page showed, enough to show it again.

    Attributes
    ----------
    page : str
        One of :data:`PAGES`.
    data : str
        Content hash of the pairs (``PairedEmbeddings.content_hash``).
    dataset, model : str
        Their names in the app (for people; the hash decides).
    demo : dict or None
        Built-in simulated data: ``{"profile", "n", "dim", "seed"}``, enough to regenerate it.
    run : RunSpec or None
        The page's run (Close the gap, Anatomy, Retrieval).
    view : dict
        The page's own choices: ``recall_k``, ``query`` ("ROW:image|text"), for Compare
        ``methods``, ``models``, ``protocol`` ("default" or a protocol), ``allow_leak``,
        ``shuffled``, ``params`` ({method: {param: value}}).
    """

    page: str
    data: str
    dataset: str = ""
    model: str = ""
    demo: dict[str, Any] | None = None
    run: RunSpec | None = None
    view: dict[str, Any] = field(default_factory=dict)

    # -- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        from . import __version__

        return {"gapviz": __version__, "format": FORMAT, "page": self.page,
                "data": {"hash": self.data, "dataset": self.dataset, "model": self.model,
                         **({"demo": self.demo} if self.demo else {})},
                "run": self.run.to_dict() if self.run is not None else None,
                "view": self.view}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, record: Any) -> "Recipe":
        """The recipe a :meth:`to_dict` record describes (:class:`RecipeError` naming what is
        wrong otherwise)."""
        if not isinstance(record, Mapping):
            raise RecipeError("a recipe is a JSON object; save one with the page's "
                              "\"Save recipe\" button.")
        page = record.get("page")
        if page not in PAGES:
            raise RecipeError(f"the recipe's page {page!r} is not one of: {', '.join(PAGES)}.")
        data = record.get("data")
        if not isinstance(data, Mapping) or not _HASH.match(str(data.get("hash", ""))):
            raise RecipeError("the recipe has no data hash (data.hash, 40 hex digits): it "
                              "cannot say which data its numbers belong to.")
        demo = data.get("demo")
        if demo is not None:
            demo = _demo_record(demo)
        run = None
        if record.get("run") is not None:
            try:
                run = RunSpec.from_dict(record["run"])
            except ValueError as err:
                raise RecipeError(f"the recipe's run: {err}") from None
        view = record.get("view") or {}
        if not isinstance(view, Mapping):
            raise RecipeError("the recipe's view must be an object.")
        return cls(page, data["hash"], _text(data.get("dataset", "")), _text(data.get("model", "")),
                   demo, run, dict(view))

    @classmethod
    def from_json(cls, text: str) -> "Recipe":
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            raise RecipeError(f"the recipe is not valid JSON ({err.msg}, line {err.lineno}).") from None
        return cls.from_dict(record)

    # -- a link's query string ---------------------------------------------------------------
    def to_query(self) -> dict[str, str]:
        """The recipe as URL query parameters (strings), for ``st.query_params``."""
        q: dict[str, str] = {"data": self.data}
        if self.dataset:
            q["dataset"] = self.dataset
        if self.model:
            q["model"] = self.model
        if self.run is not None:
            r = self.run
            q["method"] = r.method
            q["protocol"] = r.protocol
            for name, value in r.params:
                q[f"p.{name}"] = json.dumps(value)
            if r.folds != RunSpec.folds:
                q["folds"] = str(r.folds)
            if r.seed != RunSpec.seed:
                q["seed"] = str(r.seed)
            if r.fit_on:
                q["fit_on"] = r.fit_on
            if r.allow_leak:
                q["leak"] = "1"
            if r.shuffled:
                q["shuffled"] = "1"
        for key, value in self.view.items():
            q[f"v.{key}"] = json.dumps(value)
        return q

    @classmethod
    def from_query(cls, page: str, query: Mapping[str, str]) -> "Recipe | None":
        """The recipe a page's URL carries, or None when it carries none (no ``data``)."""
        if "data" not in query:
            return None
        data = str(query["data"])
        if not _HASH.match(data):
            raise RecipeError("this link's data is not a content hash (40 hex digits); copy the "
                              "link again from the page.")
        run = None
        if "method" in query:
            params = {k[2:]: _json_value(v, k) for k, v in query.items() if k.startswith("p.")}
            options: dict[str, Any] = {}
            for key, name in (("folds", "folds"), ("seed", "seed")):
                if key in query:
                    try:
                        options[name] = int(query[key])
                    except ValueError:
                        raise RecipeError(f"this link's {key} {query[key]!r} is not an integer.") from None
            try:
                run = RunSpec.make(str(query["method"]), params, query.get("protocol") or None,
                                   fit_on=query.get("fit_on") or None,
                                   allow_leak=query.get("leak") == "1",
                                   shuffled=query.get("shuffled") == "1", **options)
            except ValueError as err:
                raise RecipeError(f"this link's run: {err}") from None
        view = {k[2:]: _json_value(v, k) for k, v in query.items() if k.startswith("v.")}
        return cls(page, data, _text(query.get("dataset", "")), _text(query.get("model", "")),
                   None, run, view)


def _json_value(text: str, key: str) -> Any:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        raise RecipeError(f"this link's {key} is not a value ({str(text)[:40]!r}).") from None
    if isinstance(value, (dict, list)) and len(json.dumps(value)) > 20 * MAX_TEXT:
        raise RecipeError(f"this link's {key} is too long.")
    return value


def _text(value: Any) -> str:
    return str(value)[:MAX_TEXT]


def _demo_record(demo: Any) -> dict[str, Any]:
    from .simulate import PROFILES

    if not isinstance(demo, Mapping) or demo.get("profile") not in PROFILES:
        raise RecipeError(f"the recipe's demo profile is not one of: {', '.join(PROFILES)}.")
    out = {"profile": demo["profile"]}
    for key in ("n", "dim", "seed"):
        if not isinstance(demo.get(key), int) or isinstance(demo.get(key), bool):
            raise RecipeError(f"the recipe's demo {key} must be an integer.")
        out[key] = demo[key]
    return out


def demo_of(pairs: Any) -> dict[str, Any] | None:
    """How to regenerate simulated pairs (profile, N, d, seed), or None for other data."""
    meta = getattr(pairs, "meta", {}) or {}
    if not getattr(pairs, "is_simulated", False) or "profile" not in meta:
        return None
    return {"profile": meta["profile"], "n": int(pairs.n), "dim": int(pairs.dim),
            "seed": int(meta.get("seed", 0))}


def check_data(recipe: Recipe, pairs: Any, *, key: str | None = None) -> str:
    """The pairs' content hash, after checking it is the recipe's (RecipeError otherwise)."""
    key = key if key is not None else pairs.content_hash()
    if key != recipe.data:
        name = f" ({recipe.dataset} · {recipe.model})" if recipe.dataset else ""
        raise RecipeError(f"this data is not the data of the recipe{name}: its content hash is "
                          f"{key[:12]}…, the recipe's {recipe.data[:12]}…. Give the embeddings "
                          "the page showed (same file, same model), or save a new recipe.")
    return key


def replay(recipe: Recipe, pairs: Any, *, runner: Runner | None = None,
           fit_on: Any = None) -> dict[str, Any]:
    """The numbers a recipe's page showed, computed again on ``pairs`` (checked by hash).

    Returns
    -------
    dict
        ``raw``: the raw embeddings' measures; with a run, ``after``: the run's measures and
        ``provenance``: how they were obtained (:meth:`Provenance.to_dict`), ``run``: the spec's
        record and ``run_object``: the :class:`gapviz.runs.Run` itself.
    """
    key = check_data(recipe, pairs)
    runner = runner if runner is not None else Runner()
    data = RunData.of(pairs, key=key)
    raw = runner.run(RunSpec.make("orig"), data)
    out: dict[str, Any] = {"raw": raw.metrics}
    if recipe.run is not None and recipe.run.method != "orig":
        other = None
        if recipe.run.fit_on is not None:
            if fit_on is None:
                raise RecipeError("the recipe's run is fitted on other pairs: give them with "
                                  "--fit-on FILE.")
            other = RunData.of(fit_on)
        run = runner.run(recipe.run, data, fit_on=other)
        out["after"] = run.metrics
        out["provenance"] = run.provenance.to_dict()
        out["run"] = recipe.run.to_dict()
        out["run_object"] = run
    return out


__all__ = ["PAGES", "Recipe", "RecipeError", "check_data", "demo_of", "replay"]
