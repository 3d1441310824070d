"""Gap-closing methods: one interface (:class:`GapMethod`), one registry (:data:`METHODS`).

>>> from gapviz.methods import make_method
>>> m = make_method("spectral", n_components=60)           # doctest: +SKIP
>>> X_t, Y_t = m.fit_transform(X, Y)                       # the fitted pairs
>>> X_new_t = m.transform_images(X_new)                    # unseen images (out-of-sample)
"""

from __future__ import annotations

from typing import Any

from .base import GapMethod, Param, ProgressCallback, Slider, _init_params, l2_normalize
from .baselines import CenterGap, LiangShiftGap, OrigGap, PCAGap, ProcrustesGap, StandardizeGap
from .ot import OTGap, SinkhornGap
from .scores import (CSLSScores, DBNormScores, NNNScores, QBNormScores, ScoreCorrection,
                     ZScoreScores, is_score_correction)
from .spectral import SpectralGap
from .vlap import VLAPGap

#: Every method by its registry name, in the command line's order: the reference, the
#: baselines from the simplest up, the paper's methods (section 2.1), then the score
#: corrections (which change similarities, not embeddings). Each class
#: describes itself (label, summary, parameters with their sliders, command-line flags and
#: caps, whether it uses the pairing): adding a method is its module and one entry here.
METHODS: dict[str, type[GapMethod]] = {
    cls.name: cls
    for cls in (OrigGap, CenterGap, LiangShiftGap, StandardizeGap, PCAGap, ProcrustesGap, VLAPGap,
                SinkhornGap, OTGap, SpectralGap, ZScoreScores, CSLSScores, QBNormScores,
                DBNormScores, NNNScores)
}


def method_class(name: str) -> type[GapMethod]:
    """The class registered as ``name`` (ValueError listing the valid names otherwise)."""
    return _lookup(name)


def menu_order() -> list[str]:
    """Registry names in the app's menu order (the paper's methods first)."""
    return sorted(METHODS, key=lambda n: (METHODS[n].menu_rank, list(METHODS).index(n)))


def method_label(name: str) -> str:
    """A method's name in menus and reports ("Spectral"); unknown names are shown as given."""
    cls = METHODS.get(name)
    return (cls.label or cls.name) if cls is not None else name


def suited_params(name: str, n_pairs: int, dim: int,
                  chosen: dict[str, Any] | None = None) -> dict[str, Any]:
    """The parameters method ``name`` runs with on N pairs of dimension d.

    ``chosen`` (what the user set) over the method's defaults, with every size parameter the
    data cannot take (spectral k > min(N - 1, d), PCA k > min(2N, d), anchors > N) lowered to
    the largest value it can. Parameters a fitted method applies without refitting (spectral
    k) are always given explicitly, so a page and ``gapviz compare --set`` state them. The
    Retrieval and Compare pages run every method on whatever data is loaded through this, and
    the command they show passes the same values.
    """
    cls = _lookup(name)
    defaults = method_params(name)
    params = {p.name: defaults[p.name] for p in cls.params_info
              if not p.refits and p.name in defaults}
    params.update(chosen or {})
    return cls.suited_params(n_pairs, dim, params)


def offered_params(name: str, chosen: dict[str, Any] | None = None) -> dict[str, Any]:
    """The parameters a user sets for method ``name`` (its sliders and menus, and the tuning
    toggle), at ``chosen`` over the defaults; not those a tuned fit chooses itself. A run
    states them all (:func:`gapviz.runs.planned_spec`), so that the same run has one key
    whichever page or command asks for it, with its sliders touched or not."""
    cls = _lookup(name)
    defaults = method_params(name)
    values = {**defaults, **(chosen or {})}
    tunes = "tune" in defaults
    tuned = cls.tuned_names(values) if tunes else ()
    names = (["tune"] if tunes else []) + [
        p.name for p in cls.params_info
        if (p.slider is not None or (p.menu and p.choices)) and p.name not in tuned]
    return {n: values[n] for n in names if n in defaults}


def format_params(name: str, params: dict[str, Any]) -> str:
    """Parameters for people: "k = 60", "reg_lap = 100, reg_src = 1" (empty when none)."""
    cls = METHODS.get(name)
    return cls.format_params(params) if cls is not None else GapMethod.format_params(params)


def describe_run(name: str, params: dict[str, Any]) -> str:
    """A method with its parameters for titles: "Spectral, k = 60"."""
    shown = format_params(name, params)
    return f"{method_label(name)}, {shown}" if shown else method_label(name)


def method_params(name: str) -> dict[str, Any]:
    """The parameters of method ``name`` and their defaults (what ``make_method`` accepts)."""
    return {k: p.default for k, p in _init_params(_lookup(name)).items()}


def make_method(name: str, **params: Any) -> GapMethod:
    """A new, unfitted method by registry name.

    Parameters
    ----------
    name : str
        A key of :data:`METHODS`.
    **params
        The method's parameters (see :func:`method_params`).

    Raises
    ------
    ValueError
        Unknown name (the message lists the valid ones) or a parameter the method does not take
        (the message lists the ones it does).
    """
    cls = _lookup(name)
    valid = method_params(name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        listing = ", ".join(f"{k}={v!r}" for k, v in valid.items()) or "none"
        raise ValueError(f"method {name!r} does not take {', '.join(unknown)}; its parameters "
                         f"(with defaults) are: {listing}.")
    return cls(**params)


def _lookup(name: str) -> type[GapMethod]:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}.") from None


__all__ = ["METHODS", "CSLSScores", "CenterGap", "DBNormScores", "NNNScores", "QBNormScores",
           "ScoreCorrection", "ZScoreScores", "is_score_correction", "GapMethod", "LiangShiftGap", "OTGap", "OrigGap", "PCAGap",
           "Param", "ProcrustesGap", "ProgressCallback", "SinkhornGap", "Slider", "SpectralGap",
           "StandardizeGap", "VLAPGap", "describe_run", "format_params", "l2_normalize",
           "make_method", "menu_order", "method_class", "method_label", "method_params",
           "offered_params", "suited_params"]
