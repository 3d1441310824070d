"""What the dashboard shows, computed without Streamlit: metric cards, deltas, the retrieval
example of the Overview, distance samples for the histograms, and the method runner that the
"Close the gap" page and the benchmark share.

Everything here is a pure function of arrays (or of a fitted method), so the app only caches
and renders, and the benchmark times exactly what the page does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .config import RECALL_KS, SPECTRAL_K, SPECTRAL_MAX_K
# the cards' labels, tooltips, colours and formats, re-exported for the pages
from .measure_info import card_label, delta_color, format_delta, format_metric  # noqa: F401
from .measure_info import help_text as card_help  # noqa: F401
from .measures import GapReport, measure_gap
from .projection import Projection, joint_pca

# ---------------------------------------------------------------------------------------------
# metric cards
# ---------------------------------------------------------------------------------------------
#: The four gap cards of the Overview (paper section 2.2).
GAP_CARDS: tuple[str, ...] = ("ITR", "TIR", "IMR", "TMR")
#: The cards of "Close the gap": the gap cards, mixed-pool recall, paired distance, Fréchet.
ALL_CARDS: tuple[str, ...] = (*GAP_CARDS, "R@{k}", "paired_cosine_distance", "frechet")

#: Default K of the recall card.
DEFAULT_RECALL_K = RECALL_KS[0]

#: The default gap-closing method of the Overview ("the gap closed") and its parameters.
DEFAULT_METHOD = "spectral"
DEFAULT_PARAMS: dict[str, Any] = {"n_components": SPECTRAL_K}
#: Eigenvectors computed once per embedding; the k slider slices them (k <= this).
SPECTRAL_SLIDER_MAX = SPECTRAL_MAX_K


def card_key(card: str, k: int = DEFAULT_RECALL_K) -> str:
    """The metric key of a card (``"R@{k}"`` becomes ``"R@5"`` for k = 5)."""
    return card.format(k=k)


def gap_sentence(metrics: dict[str, float]) -> str:
    """One plain-language line reading the ITR / TMR of a report, for non-specialists."""
    n = int(metrics.get("N", 0))
    itr, tmr = metrics.get("ITR", math.nan), metrics.get("TMR", math.nan)
    if math.isnan(itr) or n == 0:
        return ""
    if math.isinf(itr):
        first = "every image query sees another image before any text"
    else:
        first = f"{_share(itr / (1.0 + itr))} of image queries see an image before any text"
    return f"{first}; the nearest text ranks #{tmr:,.0f} on average (of {2 * n - 1:,})."


def _share(p: float) -> str:
    """A fraction as a percentage that reads 0 % or 100 % only when it is exactly that:
    0.997 is "99.7%", not "100%" (which the sentence keeps for "every")."""
    for decimals in range(4):
        text = f"{p:.{decimals}%}"
        if 0 < p < 1 and float(text[:-1]) in (0.0, 100.0):
            continue
        return text
    return text


# ---------------------------------------------------------------------------------------------
# distances for the histograms
# ---------------------------------------------------------------------------------------------
#: Image-text combinations sampled for the "all pairs" histogram.
ALL_PAIRS_SAMPLE = 20_000


def _unit(A: np.ndarray) -> np.ndarray:
    from .measures import unit_rows

    return unit_rows(A)


def paired_distances(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Cosine distance 1 - cos(x_i, y_i) of each pair, shape (N,)."""
    return 1.0 - np.einsum("ij,ij->i", _unit(X), _unit(Y))


def cross_distance_sample(X: np.ndarray, Y: np.ndarray, n_samples: int = ALL_PAIRS_SAMPLE,
                          seed: int = 0) -> np.ndarray:
    """Cosine distances of ``n_samples`` random image-text combinations (x_i, y_j), shape (M,).

    The paper's "all pairs" distribution (Figure 3) without an N x N matrix: when N^2 is at
    most ``n_samples`` every combination is used, otherwise a seeded uniform sample.
    """
    Xn, Yn = _unit(X), _unit(Y)
    n = Xn.shape[0]
    if n * n <= n_samples:
        return (1.0 - Xn @ Yn.T).ravel()
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, n_samples)
    j = rng.integers(0, n, n_samples)
    return 1.0 - np.einsum("ij,ij->i", Xn[i], Yn[j])


# ---------------------------------------------------------------------------------------------
# retrieval example (Overview, "the proof"; the query itself runs in gapviz.retrieval)
# ---------------------------------------------------------------------------------------------
def pick_example_query(raw: GapReport, closed: GapReport) -> int:
    """An image query that shows what closing the gap does (for the Overview's proof).

    The image whose paired text ranks best in the closed space, among those where the raw
    space ranks the nearest text worst; ties broken by the lowest row. Deterministic.
    """
    score = closed.i2t_rank.astype(np.float64) * (raw.n + 1) - raw.best_text_rank
    return int(np.argmin(score))


# ---------------------------------------------------------------------------------------------
# methods: one runner for the page and the benchmark
# ---------------------------------------------------------------------------------------------
@dataclass
class ClosedView:
    """Everything the "Close the gap" page draws for one method setting.

    Attributes
    ----------
    images, texts : ndarray of shape (N, k)
        Transformed embeddings.
    report : GapReport
        Measures of the transformed embeddings.
    projection : Projection
        Joint PCA of the transformed pool.
    paired : ndarray of shape (N,)
        Cosine distance of each pair.
    all_pairs : ndarray of shape (M,)
        Cosine distances of sampled image-text combinations.
    """

    images: np.ndarray
    texts: np.ndarray
    report: GapReport
    projection: Projection
    paired: np.ndarray
    all_pairs: np.ndarray


def view_of(X: np.ndarray, Y: np.ndarray) -> ClosedView:
    """Measures, 2-D PCA and distance samples of one embedding (raw or transformed)."""
    return ClosedView(X, Y, measure_gap(X, Y), joint_pca(X, Y), paired_distances(X, Y),
                      cross_distance_sample(X, Y))


def method_registry() -> dict[str, Any]:
    """``gapviz.methods.METHODS`` (name -> class) in the app's menu order."""
    from .methods import METHODS, menu_order

    return {name: METHODS[name] for name in menu_order()}


def default_params(n_pairs: int, dim: int) -> dict[str, Any]:
    """The parameters of :data:`DEFAULT_METHOD` that N pairs of dimension d allow."""
    from .methods import suited_params

    return suited_params(DEFAULT_METHOD, n_pairs, dim, DEFAULT_PARAMS)


def split_params(name: str, params: dict[str, Any], n_pairs: int, dim: int
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(fit_params, view_params)`` of method ``name``: those that need a fit and those a
    fitted method applies without one (spectral k slices eigenvectors computed once), so a
    slider over a view parameter never refits (``GapMethod.split_params``)."""
    from .methods import method_class

    return method_class(name).split_params(params, n_pairs, dim)


def fit_method(name: str, X: np.ndarray, Y: np.ndarray, fit_params: dict[str, Any], *,
               progress: Callable[[float, str], None] | None = None) -> Any:
    """A :class:`~gapviz.methods.base.GapMethod` ``name`` with ``fit_params``, fitted on (X, Y).

    ``progress(fraction, message)`` is called during the fit (OT reports along the way).
    """
    from .methods import make_method

    return make_method(name, **fit_params).fit(X, Y, progress=progress)


def transformed(method: Any, X: np.ndarray, Y: np.ndarray,
                view_params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The transformed fit pairs of a fitted method under ``view_params``
    (``GapMethod.fitted_pairs``: spectral slices its exact training embedding, no eigen-solve;
    the others transform the pairs)."""
    return method.fitted_pairs(X, Y, **view_params)


# ---------------------------------------------------------------------------------------------
# pairs -> embeddings, with one report of what was kept and skipped
# ---------------------------------------------------------------------------------------------
def embed_loaded_pairs(pairs: list[Any], report: Any, model: Any, *, cache: Any = None,
                       meta: dict[str, Any] | None = None,
                       progress: Callable[[int, int, str], None] | None = None) -> tuple[Any, Any]:
    """Embed loaded pairs and fold the embedding step's skips into the loader's report.

    Parameters
    ----------
    pairs : list of gapviz.data.Pair
        What a loader kept.
    report : gapviz.data.DataReport
        The loader's report; updated in place (images that failed while embedding are
        subtracted from the kept count and named in a warning).
    model : gapviz.encode.ModelSpec or LoadedModel
    cache : gapviz.cache.EmbeddingCache, optional

    Returns
    -------
    (PairedEmbeddings, DataReport)

    Raises
    ------
    gapviz.data.DataError
        Fewer than 2 pairs left to embed.
    """
    from .data import DataError
    from .encode import embed_pairs

    if len(pairs) < 2:
        detail = " ".join(line.strip() for line in report.lines()[1:])
        raise DataError(f"only {len(pairs)} usable pair(s) found, at least 2 are needed. "
                        f"{report.summary()}. {detail}".strip())
    result = embed_pairs(pairs, model, cache=cache, meta=meta, progress=progress)
    for reason, ids in result.skipped.items():
        report.n_kept -= len(ids)
        shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
        report.warnings.append(f"{len(ids)} image(s) failed while embedding: {reason} ({shown})")
    if result.from_cache:
        report.notes.append("embeddings read from the cache (same images, captions and model)")
    report.notes.extend(getattr(result, "notes", None) or [])  # precision and its self-check
    if result.embeddings.n < 2:
        raise DataError("fewer than 2 pairs could be embedded; " + "; ".join(report.warnings))
    return result.embeddings, report


# ---------------------------------------------------------------------------------------------
# what closing the gap costs: one point of the trade-off view
# ---------------------------------------------------------------------------------------------
def tradeoff_point(label: str, X: np.ndarray, Y: np.ndarray, X_t: np.ndarray, Y_t: np.ndarray,
                   before: GapReport, after: GapReport, *, rmg_before: float | None = None,
                   neighbours: bool = True) -> dict[str, Any]:
    """How much of the gap a run closed and what it kept, for the trade-off figure.

    ``gap_closed`` = 1 - RMG(after) / RMG(before) (relative modality gap, Schrodi et al. 2025;
    negative when the gap grew); ``r1_kept`` = cross-modal R@1 image→text after / before;
    ``neighbours_kept`` = share of each item's 10 nearest same-modality neighbours kept (mean
    over images and texts; O(N² d), skipped when ``neighbours`` is False).
    """
    from .anatomy import relative_modality_gap
    from .closing_costs import crossmodal_recall, neighbourhood_preservation

    rb = relative_modality_gap(X, Y) if rmg_before is None else rmg_before
    ra = relative_modality_gap(X_t, Y_t)
    r1_before = crossmodal_recall(before, (1,))["R@1_i2t_crossmodal"]
    r1_after = crossmodal_recall(after, (1,))["R@1_i2t_crossmodal"]
    point: dict[str, Any] = {
        "label": label, "rmg_before": rb, "rmg_after": ra,
        "gap_closed": 1.0 - ra / rb if rb > 0 else math.nan,
        "r1_before": r1_before, "r1_after": r1_after,
        "r1_kept": r1_after / r1_before if r1_before > 0 else None,
    }
    if neighbours:
        point["neighbours_kept"] = float(np.mean([neighbourhood_preservation(X, X_t).mean(),
                                                  neighbourhood_preservation(Y, Y_t).mean()]))
    return point
