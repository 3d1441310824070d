"""Links and recipes: every page's state in its URL, and a "Save recipe" download.

A page writes its :class:`gapviz.recipes.Recipe` into the URL's query string with Streamlit's
public ``st.query_params`` once it has drawn its numbers; opening that URL (on this server or
a fresh one) puts the same choices back before the page draws its widgets. Data is named by
its content hash: the built-in demo is in every session; other data is found in this
session's workspace or among the data recently loaded on this server (shared by content
hash, in memory); otherwise the page says which file to load. A link never names a path.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from gapviz.config import RECALL_KS
from gapviz.exports import slug
from gapviz.methods import METHODS
from gapviz.recipes import Recipe, RecipeError, demo_of
from gapviz.runs import LRUStore, RunSpec
from gapviz.safety import plain_text
from gapviz.workspace import Active

from .state import set_kept, workspace

#: Data sets recently loaded on this server, by content hash, that a link may reopen.
SHARED_DATA_ENTRIES = 8
#: The query string this session last applied or wrote (so a page does not re-apply its own).
APPLIED_KEY = "_link_applied"


@st.cache_resource
def _shared_data() -> LRUStore:
    return LRUStore(SHARED_DATA_ENTRIES)


def share_loaded_data() -> None:
    """Offer this session's loaded data to links opened in other sessions (by content hash;
    the arrays are shared, not copied)."""
    store = _shared_data()
    for ds in workspace().datasets.values():
        for model, key in ds.hashes.items():
            if key not in store:
                store.put(key, (ds.models[model], ds.source, ds.name, model))


def _find(key: str) -> tuple[str, str] | None:
    """``(dataset, model)`` holding the data with content hash ``key`` in this session,
    after adding it from the server's shared data if another session loaded it."""
    ws = workspace()
    for ds in ws.datasets.values():
        for model, h in ds.hashes.items():
            if h == key:
                return ds.name, model
    shared = _shared_data().get(key)
    if shared is None:
        return None
    pairs, source, dataset, model = shared
    try:
        return ws.add(pairs, source=source, dataset=dataset, model=model, activate=False)
    except ValueError:  # a dataset of that name holds other pairs here: a name of its own
        return ws.add(pairs, source=source, model=model, activate=False)


def _query() -> dict[str, str]:
    return {k: st.query_params[k] for k in st.query_params}


def restore(page: str) -> None:
    """Put a link's state back before the page draws its widgets (once per link)."""
    query = _query()
    if not query or "data" not in query:
        return
    marker = (page, tuple(sorted(query.items())))
    if st.session_state.get(APPLIED_KEY) == marker:
        return
    st.session_state[APPLIED_KEY] = marker
    try:
        recipe = Recipe.from_query(page, query)
    except RecipeError as err:
        st.warning(f"This link could not be opened: {plain_text(str(err), None)}",
                   icon=":material/link_off:")
        return
    if recipe is not None:
        apply(recipe)


def _choose_fit_set(prefix: str, content_hash: str) -> None:
    """Choose the loaded data with ``content_hash`` in the page's "Fit on" menu, or say it is
    not loaded (the menu then offers what is)."""
    from .scoring import fit_on_choices

    for name, other in fit_on_choices(workspace().active).items():
        if other.key == content_hash:
            set_kept(f"{prefix}_fit_on", name)
            return
    st.warning(f"This link fits on other data (content hash `{content_hash[:12]}…`), which is "
               "not loaded on this server: load that file on **Data**, then open the link "
               "again. Meanwhile the page fits on the data loaded here, if any.",
               icon=":material/link_off:")


def apply(recipe: Recipe) -> bool:
    """Select the recipe's data and set the page's widgets to its choices; False (with a
    message saying which data to load) when the data is not on this server."""
    ws = workspace()
    found = _find(recipe.data)
    if found is None:
        name = (f"**{plain_text(recipe.dataset)}** · {plain_text(recipe.model)}"
                if recipe.dataset else "the data it was made on")
        st.warning(f"This link shows {name} (content hash `{recipe.data[:12]}…`), which is not "
                   "loaded on this server. Load the same file on **Data** (same embeddings, "
                   "same model), then open the link again.", icon=":material/link_off:")
        return False
    ws.select(*found)
    run, view, page = recipe.run, recipe.view, recipe.page
    if run is not None and run.method != "orig":
        ws.method, ws.method_params = run.method, run.param_dict
    if page in ("close_gap", "anatomy", "retrieval") and run is not None:
        prefix = {"close_gap": "close", "anatomy": "anatomy", "retrieval": "retrieval"}[page]
        set_kept(f"{prefix}_method", run.method)
        if run.method != "orig":
            set_kept(f"{prefix}_protocol_{run.method}", run.protocol)
            set_kept(f"{prefix}_allow_leak", run.allow_leak)
            if run.protocol == "fit-on" and run.fit_on:
                _choose_fit_set(prefix, run.fit_on)
        if page == "close_gap":
            _set_sliders(run)
    n = ws.active.pairs.n
    if page == "close_gap" and view.get("recall_k") in RECALL_KS:
        set_kept("close_recall_k", view["recall_k"])
    if page == "retrieval" and isinstance(view.get("query"), str):
        row, _, modality = view["query"].partition(":")
        if row.isdigit() and int(row) < n and modality in ("image", "text"):
            st.session_state["retrieval_for"] = recipe.data  # the query belongs to this data
            set_kept("retrieval_source", "pair")
            set_kept("retrieval_pair", int(row))
            set_kept("retrieval_modality", modality)
    if page == "retrieval" and isinstance(view.get("k"), int) and 1 <= view["k"] <= 2 * n:
        set_kept("retrieval_k", view["k"])
    if page == "compare":
        offered = {"methods": set(METHODS), "models": set(ws.active.dataset.models)}
        for key in ("methods", "models"):
            if isinstance(view.get(key), list):  # names this server knows, in the link's order
                set_kept(f"compare_{key}", [str(v) for v in view[key] if str(v) in offered[key]])
        if view.get("protocol") in ("default", "transductive", "held-out"):
            set_kept("compare_protocol", view["protocol"])
        set_kept("compare_allow_leak", bool(view.get("allow_leak")))
        set_kept("compare_shuffled", bool(view.get("shuffled")))
        chosen = view.get("chosen")
        if isinstance(chosen, dict) and isinstance(chosen.get("method"), str):
            ws.method = chosen["method"]
            ws.method_params = dict(chosen.get("params") or {})
    return True


def _set_sliders(run: RunSpec) -> None:
    """The Close the gap sliders of the run's method at the run's values (values a slider
    does not offer are left out: a link is typed by anyone)."""
    from gapviz.methods import method_class, method_params

    cls = method_class(run.method)
    params = run.param_dict
    defaults = method_params(run.method)
    for info in cls.params_info:
        value = params.get(info.name)
        slider = info.slider
        if slider is None or value is None or isinstance(value, (bool, str, list, dict)):
            continue
        if slider.options is not None and value not in slider.options:
            continue  # not a value the slider offers: it keeps its own
        if isinstance(defaults.get(info.name), int):
            if value != int(value):
                continue
            value = int(value)
        # a numeric value out of the slider's range is clipped by the slider's own bounds
        set_kept("close_" + (slider.key or info.shown).replace(" ", "_"), value)


def recipe_for(page: str, act: Active, run: RunSpec | None = None, **view: Any) -> Recipe:
    """The recipe of what ``page`` shows on the active data."""
    return Recipe(page, act.key, act.dataset.name, act.model, demo_of(act.pairs), run, view)


def write(recipe: Recipe) -> None:
    """Put the page's state into its URL (a link to it reopens this view)."""
    query = recipe.to_query()
    if _query() != query:
        st.query_params.from_dict(query)
    st.session_state[APPLIED_KEY] = (recipe.page, tuple(sorted(query.items())))


def save_button(recipe: Recipe, container: Any = None, *, key: str) -> None:
    """A "Save recipe" download: the page's state as JSON, with the data's content hash and
    the gapviz version; ``gapviz evaluate SOURCE --recipe FILE`` replays it."""
    box = container if container is not None else st
    box.download_button(
        "Save recipe", recipe.to_json(), file_name=f"gapviz-{recipe.page}-{slug(recipe.model)}.json",
        mime="application/json", key=key, icon=":material/receipt_long:",
        help="This view as a recipe: data hash, method, parameters, protocol, seed. "
             "`gapviz evaluate SOURCE --recipe FILE` prints the same numbers (`gapviz compare` "
             "for a Compare recipe). The page's URL holds the same state: share it as a link.")
