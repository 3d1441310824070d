"""The protocol picker every page that shows a method's numbers offers, and the line that
says how those numbers were obtained (``gapviz.protocols``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import streamlit as st

from gapviz.config import RECALL_KS
from gapviz.methods import method_class
from gapviz.protocols import DEFAULT_FOLDS, PROTOCOLS, Provenance, chance_recall
from gapviz.runs import needs_leak_consent
from gapviz.safety import plain_text
from gapviz.workspace import Active

from .components import NeedsChoice
from .state import keep, workspace

#: How the protocols read in menus.
PROTOCOL_LABELS = {
    "transductive": "Transductive (fit on the scored pairs)",
    "held-out": f"Held-out ({DEFAULT_FOLDS}-fold cross-fit)",
    "fit-on": "Fit on another dataset",
}
#: Why each method has the default it has (the app's help).
PROTOCOL_HELP = (
    "How the numbers are obtained. Transductive: the method is fitted on the very pairs it is "
    "scored on; fair for methods that never read which image goes with which text (spectral, "
    "OT, Sinkhorn, centering, standardisation, PCA), though an OT plan between the two scored "
    "sets is then an upper bound. Held-out: every pair is transformed by a fit that never saw "
    f"it ({DEFAULT_FOLDS}-fold cross-fitting, seeded), so all pairs are scored in the full "
    "mixed pool. Fit on another dataset: as the paper fits OT on separate COCO pairs. Defaults: "
    "spectral and the baselines transductive (the paper's setting); OT and Sinkhorn held-out "
    "(the paper fits OT on other pairs); Procrustes and VLAP, which learn from the pairing, "
    "held-out, and never scored on their own fit pairs unless you ask. Fit on another dataset "
    "is offered once another set of pairs embedded by the same model is loaded (Data: your "
    "pairs, or Demo: simulate another set).")
#: What a method that reads the pairing does when scored on its own fit pairs (measured on pairs
#: without any signal; the README's protocols section).
LEAK_EVIDENCE = ("on 500 pairs with no signal at all, Procrustes scored on its own fit pairs "
                 "reaches R@20 above 0.6 where chance is 0.02")


def fit_on_choices(act: Active) -> dict[str, Active]:
    """Other loaded datasets a method can be fitted on: same embedding dimension, and the same
    model name when the dataset has it."""
    ws = workspace()
    out = {}
    for name, ds in ws.datasets.items():
        if name == act.dataset.name:
            continue
        model = act.model if act.model in ds.models else next(iter(ds.models))
        pairs = ds.models[model]
        if pairs.dim == act.pairs.dim:
            out[f"{name} · {model}"] = Active(ds, model, pairs, ds.hashes[model])
    return out


def scoring_controls(prefix: str, act: Active, name: str, container: Any = None
                     ) -> tuple[dict[str, Any], Active | None]:
    """A protocol menu for method ``name`` (its default first chosen), and for a method that
    reads the pairing, an explicit opt-in to score it on its own fit pairs. Returns the run
    options (``protocol``, ``fit_on``: the fit set's content hash, ``allow_leak``; keywords
    of :func:`gapviz.runs.planned_spec`) and, for "fit-on", the loaded data to fit on.

    "Fit on another dataset" is offered only when one is loaded. The raw embeddings
    (``orig``) fit nothing and get no menu. Raises :class:`~ui.components.NeedsChoice`
    while a method that reads the pairing is set to be scored on its own fit pairs without
    the opt-in."""
    box = container if container is not None else st
    if name == "orig":
        return {"protocol": "transductive"}, None
    cls = method_class(name)
    default = cls.default_protocol
    choices = fit_on_choices(act)
    options = [p for p in PROTOCOLS if p != "fit-on" or choices]
    # fit-on kept from when another dataset was loaded goes back to the default
    protocol = box.selectbox("Protocol", options, format_func=PROTOCOL_LABELS.get,
                             help=PROTOCOL_HELP,
                             **keep(f"{prefix}_protocol_{name}", default, options=options))
    allow_leak = False
    fit_on = None
    label = cls.label or name
    if needs_leak_consent(name, protocol):
        allow_leak = box.checkbox(
            "Score it on its own fit pairs anyway", **keep(f"{prefix}_allow_leak", False),
            help=f"{label} learns from which image goes with which text; scored on the pairs "
                 f"it was fitted on it memorises them ({LEAK_EVIDENCE}). The numbers are then "
                 "marked with a warning.")
        if not allow_leak:
            raise NeedsChoice(
                f"{label} learns from which image goes with which text, so scored on the pairs "
                f"it was fitted on it memorises them ({LEAK_EVIDENCE}). Choose Held-out in "
                "the Protocol menu for a fair number, or tick \"Score it on its own fit pairs "
                "anyway\" to see the memorised one, marked with a warning.")
    if protocol == "fit-on":
        names = list(choices)
        source = box.selectbox("Fit on", names, **keep(f"{prefix}_fit_on", names[0], options=names))
        fit_on = choices[source]
    return ({"protocol": protocol, "fit_on": fit_on.key if fit_on is not None else None,
             "allow_leak": allow_leak}, fit_on)


def provenance_line(prov: Provenance, ks: tuple[int, ...] = RECALL_KS) -> str:
    """How the numbers were obtained, and the chance level of R@K in this pool (markdown)."""
    chance = ", ".join(f"R@{k} {chance_recall(prov.n_scored, k).level:.3f}" for k in ks)
    # The summary is gapviz's own text but for the fit set's name, which a user chose.
    shown = replace(prov, fit_source=plain_text(prov.fit_source) if prov.fit_source else None,
                    warning=None)
    return (f":material/rule: **How obtained**: {shown.summary()}. Mixed pool "
            f"of {prov.pool_size:,} items; chance level {chance}.")


def show_provenance(prov: Provenance, container: Any = None) -> None:
    """The provenance line, and the warning when a method was scored on its own fit pairs."""
    box = container if container is not None else st
    if prov.warning:
        box.warning(plain_text(prov.warning, None), icon=":material/warning:")
    box.caption(provenance_line(prov))
