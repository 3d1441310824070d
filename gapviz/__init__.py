"""gapviz: measure and close the modality gap between image and text embeddings.

The names below are loaded on first use (PEP 562; a name is never also a submodule's, whose
attribute it would replace), so importing a light part of the library
(``gapviz.data``, ``gapviz.embeddings``) does not pay for numba and scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    "EmbeddingsFileError": "embeddings", "LoadReport": "embeddings",
    "PairedEmbeddings": "embeddings", "load_embeddings": "embeddings",
    "save_embeddings": "embeddings",
    "GapReport": "measures", "measure_gap": "measures", "paired_significance": "measures",
    "METHODS": "methods", "make_method": "methods",
    "simulate_pairs": "simulate",
    "PROTOCOLS": "protocols", "Provenance": "protocols", "fit_and_score": "protocols",
    "protocol_transform": "protocols", "chance_recall": "protocols",
    "gap_anatomy": "anatomy", "relative_modality_gap": "anatomy",
    "bootstrap_ci": "intervals", "paired_comparison": "intervals", "pair_outcomes": "intervals",
}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gapviz' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
