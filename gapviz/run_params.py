"""The parameters a method runs with on given data: its defaults, clipped to what the data allows.

A method's defaults suit the paper's setting (N = 2,500 pairs, d = 512 or more): spectral and
PCA keep k = 60 components, the VLAP map 256 anchors. On a user's small zip (a few dozen pairs)
or low-dimensional embeddings those defaults are impossible and the method would refuse to fit.
The Retrieval and Compare pages run every method on whatever data is loaded, so they use
:func:`suited_params`; what it changes is shown to the user and written into the
``python -m gapviz compare`` command (``--set``), so the app and the CLI stay in agreement.
"""

from __future__ import annotations

from typing import Any, Mapping

from .config import SPECTRAL_K

#: Parameter caps of each method as functions of (N pairs, d dimensions).
_CAPS = {
    "spectral": {"n_components": lambda n, d: min(n - 1, d)},
    "pca": {"n_components": lambda n, d: min(2 * n, d)},
    "vlap": {"n_anchors": lambda n, d: n},
}
#: Parameters a page sets even when the method's default would do (spectral's k is the page's).
_PAGE_DEFAULTS = {"spectral": {"n_components": SPECTRAL_K}}


def suited_params(name: str, n_pairs: int, dim: int,
                  chosen: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Parameters of method ``name`` for N pairs of dimension d.

    Parameters
    ----------
    name : str
        Registry name.
    n_pairs, dim : int
    chosen : mapping, optional
        Parameters the user set (e.g. on the Close the gap page, perhaps for another dataset).

    Returns
    -------
    dict
        ``chosen`` over the page defaults (spectral's k = 60); any size parameter the data
        cannot take (k > min(N - 1, d), PCA k > min(2N, d), anchors > N) lowered to the largest
        value it can, never below 1 (2 for anchors). Other values are left for the method to
        check, with its own message.
    """
    from .methods import method_params

    params = {**_PAGE_DEFAULTS.get(name, {}), **dict(chosen or {})}
    try:
        defaults = method_params(name)
    except ValueError:
        return params
    for key, cap_of in _CAPS.get(name, {}).items():
        value = params.get(key, defaults.get(key))
        cap = max(cap_of(n_pairs, dim), 2 if key == "n_anchors" else 1)
        if isinstance(value, int) and not isinstance(value, bool) and value > cap:
            params[key] = cap
    return params


def params_text(params: Mapping[str, Any]) -> str:
    """Parameters for people: "k = 60" (``n_components``, the paper's k), "reg = 0.05"."""
    parts = []
    for key, value in params.items():
        shown = "k" if key == "n_components" else key
        parts.append(f"{shown} = {value:g}" if isinstance(value, float) else f"{shown} = {value}")
    return ", ".join(parts)
