"""What closing the gap costs: the model's other uses before and after a method.

- **Cross-modal retrieval** R@1 and R@5, images against texts only and texts against images
  only (classic retrieval; ranks of :func:`gapviz.measures.measure_gap`, so a tie never
  counts as a win). An independent replication of the spectral method on real data closed
  the gap but lost 19 points of CLIP's R@1: this is where such a loss shows.
- **Neighbourhood preservation** within each modality: the share of each item's k = 10
  nearest same-modality neighbours that are still among its 10 nearest after the method
  (1 = the modality's own geometry is kept; trustworthiness-style, Venna & Kaski 2001).
- **Zero-shot classification** accuracy when pairs have class labels: each image is given the
  class whose prompt "a photo of a {label}." is most similar (CLIP, Radford et al. 2021);
  after the method, the prompts go through the method's out-of-sample ``transform_texts``.
  The true class must be strictly the most similar (beyond the tie tolerance) to count.
  Without a text encoder (the simulated demo), each class is represented by the mean of its
  pairs' text embeddings instead of a prompt: :func:`class_text_centroids`.
- **One point of the trade-off view** (:func:`tradeoff_point`): gap closed against what a run
  kept; the runs and their points are obtained by :meth:`gapviz.runs.Runner.tradeoff`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from .anatomy import HUBNESS_K, nearest_neighbours
from .measures import TIE_TOL, GapReport, measure_gap, normalize_rows

#: Prompt of zero-shot classification (CLIP's standard template).
PROMPT_TEMPLATE = "a photo of a {label}."
#: Neighbours compared by neighbourhood preservation.
PRESERVATION_K = HUBNESS_K
#: K of the cross-modal recalls reported before/after.
COST_KS = (1, 5)
def crossmodal_recall(report: GapReport, ks: Sequence[int] = COST_KS) -> dict[str, float]:
    """``R@K_i2t_crossmodal`` and ``R@K_t2i_crossmodal`` for each K from a report's ranks."""
    out = {}
    for k in ks:
        out[f"R@{k}_i2t_crossmodal"] = float(np.mean(report.i2t_rank_crossmodal <= k))
        out[f"R@{k}_t2i_crossmodal"] = float(np.mean(report.t2i_rank_crossmodal <= k))
    return out


def neighbourhood_preservation(before: np.ndarray, after: np.ndarray, k: int = PRESERVATION_K) -> np.ndarray:
    """Per item, the share of its k nearest neighbours (cosine) kept after a method.

    Parameters
    ----------
    before : ndarray of shape (M, d)
        One modality's embeddings before the method.
    after : ndarray of shape (M, d')
        The same items after it (d' may differ).

    Returns
    -------
    ndarray of shape (M,)
        |kNN_before(i) & kNN_after(i)| / k, in [0, 1].
    """
    before = np.asarray(before)
    after = np.asarray(after)
    if before.shape[0] != after.shape[0]:
        raise ValueError(f"before has {before.shape[0]} rows, after {after.shape[0]}: give the same items.")
    nb = nearest_neighbours(before, k)
    na = nearest_neighbours(after, k)
    k = nb.shape[1]
    both = np.sort(np.concatenate([nb, na], axis=1), axis=1)
    return (both[:, 1:] == both[:, :-1]).sum(axis=1) / k


def prompt_embeddings(classes: Sequence[str], encode_texts: Callable[[list[str]], np.ndarray],
                      template: str = PROMPT_TEMPLATE) -> np.ndarray:
    """Embed one prompt per class with a text encoder (e.g. the loaded model's).

    Returns
    -------
    ndarray of shape (C, d)
    """
    emb = np.asarray(encode_texts([template.format(label=c) for c in classes]), dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(classes):
        raise ValueError(f"the text encoder returned shape {emb.shape} for {len(classes)} prompts; "
                         "it must return one row per prompt.")
    return emb


def class_text_centroids(Y: np.ndarray, labels: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """Mean of each class's (normalised) text embeddings: the class prototype when there is no
    text encoder to embed a prompt (the simulated demo). Shape (C, d)."""
    Yn = normalize_rows(Y)
    labels = np.asarray([str(v) for v in labels])
    out = np.empty((len(classes), Yn.shape[1]), np.float32)
    for c, name in enumerate(classes):
        rows = labels == name
        if not rows.any():
            raise ValueError(f"class {name!r} has no pairs to average.")
        out[c] = Yn[rows].mean(0)
    return out


def zero_shot_accuracy(images: np.ndarray, labels: Sequence[str], classes: Sequence[str],
                       class_embeddings: np.ndarray) -> float:
    """Share of images whose own class is strictly the most similar class embedding.

    Parameters
    ----------
    images : ndarray of shape (N, d)
    labels : sequence of N str
    classes : sequence of C str
        Row c of ``class_embeddings`` represents ``classes[c]``.
    class_embeddings : ndarray of shape (C, d)
    """
    Xn, Cn = normalize_rows(images), normalize_rows(class_embeddings)
    index = {c: i for i, c in enumerate(classes)}
    try:
        truth = np.array([index[str(v)] for v in labels])
    except KeyError as err:
        raise ValueError(f"label {err} is not among the classes.") from None
    S = Xn @ Cn.T
    s_true = S[np.arange(S.shape[0]), truth]
    # a tie never counts as a win: no other class may come within the tie tolerance
    rivals = (S >= (s_true - TIE_TOL)[:, None]).sum(axis=1) - 1
    return float(np.mean(rivals == 0))


def closing_costs(X: np.ndarray, Y: np.ndarray, X_t: np.ndarray, Y_t: np.ndarray, *,
                  method: Any = None, fold_of: np.ndarray | None = None,
                  labels: Sequence[str] | None = None,
                  encode_texts: Callable[[list[str]], np.ndarray] | None = None,
                  before: GapReport | None = None, after: GapReport | None = None,
                  k: int = PRESERVATION_K) -> dict[str, Any]:
    """What a method keeps of cross-modal retrieval, each modality's neighbourhoods and zero-shot.

    Parameters
    ----------
    X, Y : ndarray of shape (N, d)
        The pairs before the method.
    X_t, Y_t : ndarray of shape (N, k)
        The same pairs after it.
    method : fitted GapMethod or sequence of them, optional
        Needed for zero-shot after the method: class embeddings go through
        ``method.transform_texts`` (out of sample). Held-out cross-fitting: one fit per fold
        (``ProtocolResult.fits``) with ``fold_of``; each fold's images are classified against the
        class embeddings of the fit that transformed them.
    fold_of : ndarray of shape (N,), optional
        Fold of each pair, indexing ``method`` (``ProtocolResult.fold_of``).
    labels : sequence of N str, optional
        Class of each pair; zero-shot is measured when given.
    encode_texts : callable, optional
        ``encode_texts(list of str) -> (C, d)`` embeds the prompts; without it, the class
        prototypes are :func:`class_text_centroids` (stated in ``zero_shot["prototype"]``).
    before, after : GapReport, optional
        ``measure_gap`` of (X, Y) and (X_t, Y_t) if already computed.
    k : int
        Neighbours compared by neighbourhood preservation.

    Returns
    -------
    dict
        ``retrieval``: {metric: {"before", "after", "change"}} for R@1, R@5 both directions;
        ``neighbourhood``: {"image", "text"}: mean share kept; ``zero_shot`` (with labels):
        {"before", "after", "change", "prototype", "n_classes"} (``after`` None without
        ``method``).
    """
    before = measure_gap(X, Y) if before is None else before
    after = measure_gap(X_t, Y_t) if after is None else after
    rb, ra = crossmodal_recall(before), crossmodal_recall(after)
    out: dict[str, Any] = {
        "retrieval": {key: {"before": rb[key], "after": ra[key], "change": ra[key] - rb[key]} for key in rb},
        "neighbourhood": {"image": float(neighbourhood_preservation(X, X_t, k).mean()),
                          "text": float(neighbourhood_preservation(Y, Y_t, k).mean()),
                          "k": k},
    }
    if labels is not None:
        labels = [str(v) for v in labels]
        if len(labels) != X.shape[0]:
            raise ValueError(f"{len(labels)} labels for {X.shape[0]} pairs; give one per pair.")
        classes = sorted(set(labels))
        if encode_texts is not None:
            protos, kind = prompt_embeddings(classes, encode_texts), f"prompt '{PROMPT_TEMPLATE}'"
        else:
            protos, kind = class_text_centroids(Y, labels, classes), "mean text embedding of the class"
        acc_b = zero_shot_accuracy(X, labels, classes, protos)
        acc_a = None
        if method is not None and fold_of is None:
            fit = method[0] if isinstance(method, (list, tuple)) else method
            acc_a = zero_shot_accuracy(X_t, labels, classes, fit.transform_texts(protos))
        elif method is not None:
            fold_of = np.asarray(fold_of)
            hits = 0.0
            for f, fit in enumerate(method):
                rows = np.flatnonzero(fold_of == f)
                if rows.size:
                    hits += rows.size * zero_shot_accuracy(
                        np.asarray(X_t)[rows], [labels[i] for i in rows], classes,
                        fit.transform_texts(protos))
            acc_a = hits / len(labels)
        out["zero_shot"] = {"before": acc_b, "after": acc_a,
                            "change": None if acc_a is None else acc_a - acc_b,
                            "prototype": kind, "n_classes": len(classes)}
    return out


def pair_labels(pairs: Any) -> list[str] | None:
    """Class labels of a :class:`~gapviz.embeddings.PairedEmbeddings`, if it has any.

    The file's ``labels`` when present; on the simulated demo, the cluster names
    (``meta["cluster"]`` indexes ``meta["cluster_names"]``); else None.
    """
    labels = getattr(pairs, "labels", None)
    if labels is not None:
        return list(labels)
    meta = getattr(pairs, "meta", {}) or {}
    if meta.get("simulated") and "cluster" in meta and "cluster_names" in meta:
        names = meta["cluster_names"]
        return [str(names[c]) for c in meta["cluster"]]
    return None


def label_source(pairs: Any) -> str | None:
    """Where :func:`pair_labels` takes the labels of these pairs from, in words (None: no labels)."""
    if getattr(pairs, "labels", None) is not None:
        return "the file's labels column"
    if pair_labels(pairs) is not None:
        return "the simulated demo's concept clusters (each pair's cluster name)"
    return None


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
