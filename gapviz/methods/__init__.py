"""Gap-closing methods: one interface (:class:`GapMethod`), one registry (:data:`METHODS`).

>>> from gapviz.methods import make_method
>>> m = make_method("spectral", n_components=60)           # doctest: +SKIP
>>> X_t, Y_t = m.fit_transform(X, Y)                       # the fitted pairs
>>> X_new_t = m.transform_images(X_new)                    # unseen images (out-of-sample)
"""

from __future__ import annotations

import inspect
from typing import Any

from .base import GapMethod, ProgressCallback, l2_normalize
from .baselines import CenterGap, OrigGap, PCAGap, ProcrustesGap, StandardizeGap
from .ot import OTGap, SinkhornGap
from .spectral import SpectralGap
from .vlap import VLAPGap

#: Every method by its registry name, in display order: the reference, the baselines from the
#: simplest up, then the paper's methods (section 2.1).
METHODS: dict[str, type[GapMethod]] = {
    cls.name: cls
    for cls in (OrigGap, CenterGap, StandardizeGap, PCAGap, ProcrustesGap, VLAPGap, SinkhornGap,
                OTGap, SpectralGap)
}


def method_params(name: str) -> dict[str, Any]:
    """The parameters of method ``name`` and their defaults (what ``make_method`` accepts)."""
    cls = _lookup(name)
    return {p.name: p.default for p in inspect.signature(cls.__init__).parameters.values()
            if p.name != "self" and p.kind is not p.VAR_KEYWORD}


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


__all__ = ["METHODS", "CenterGap", "GapMethod", "OTGap", "OrigGap", "PCAGap", "ProcrustesGap",
           "ProgressCallback", "SinkhornGap", "SpectralGap", "StandardizeGap", "VLAPGap",
           "l2_normalize", "make_method", "method_params"]
