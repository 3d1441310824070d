"""How a number was obtained: fit/score protocols, their provenance, chance levels, a null control.

A gap-closing method is *fitted* on some pairs and its measures are *scored* on some pairs.
gapviz names three protocols (:data:`PROTOCOLS`):

``"transductive"``
    Fitted on the very pairs that are scored. Legitimate for a method that never reads the
    pairing (spectral, OT, Sinkhorn, centering, standardisation, PCA: they see two clouds, not
    which image goes with which text). A method that reads the pairing (Procrustes, VLAP) can
    memorise its fit pairs: on pairs with no signal at all, Procrustes scored on its own fit
    pairs (N = 500, d = 64) reaches a mixed-pool R@20 of 0.63-0.67 where chance is 0.02 (held
    out: 0.02). Such a method is refused here unless the caller passes
    ``allow_pairing_leak=True``, and the provenance then carries a warning. Even a pairing-free
    OT plan between the very two sets it scores can recover pairs from similarity alone, so
    its transductive scores are an upper bound.
``"held-out"``
    Every scored pair is transformed by a fit that never saw it, by K-fold *cross-fitting*: the
    N pairs are split into K seeded folds; for each fold, a fresh copy of the method is fitted
    on the other K - 1 folds and transforms that fold's images and texts (out-of-sample path).
    The N transformed pairs are then scored together, in the same mixed pool of 2N items as
    a transductive score (see "Why cross-fitting" below).
``"fit-on"``
    Fitted on another set of pairs (the paper fits OT on 5,000 COCO pairs and scores 2,500
    others), then transforms the scored pairs out-of-sample.

Default protocols (each method's ``default_protocol``)
----------------------------------------------------
Held-out for the methods that read the pairing (Procrustes, VLAP) and for OT and Sinkhorn (the
paper fits OT on pairs other than those it scores); transductive for spectral (the paper's
setting: the embedding of the scored pairs is the eigenvectors of their own graph) and for the
baselines that only estimate per-modality statistics (centering, standardisation, PCA): they
read no pairing, and their means, spreads and pooled axes are estimated as well from the
scored pairs as from any other N pairs, which is how they are used on a new collection.

Why cross-fitting rather than one split
---------------------------------------
The mixed-pool measures depend on the pool: a partner's rank is counted among the 2N - 1 other
items, so the chance level of R@K is about K / (2N - 1), and ITR, TMR, IMR scale with N too.
A split (fit on 80 %, score 20 %) scores a pool five times smaller: its R@K has a chance level
five times higher and a standard error more than twice as large, and it cannot be set beside
the original embeddings or a transductive method scored on all N pairs. Cross-fitting scores
all N pairs, in the full pool of 2N, so every row of a comparison shares one pool, one chance
level (:func:`chance_recall`) and one set of queries, and no pair is scored by a fit that saw
it. Its price is K fits (each on about (K - 1) N / K pairs) instead of one, and one caveat:
items of different folds come from different fits. Methods that read the pairing map the
images into the texts' own space (Procrustes, VLAP), so their folds share that space up to
estimation noise. Methods that do not read the pairing may have an arbitrary output basis
(spectral eigenvectors, PCA axes): such a fold's output is rotated onto the first fold's frame
by an orthogonal Procrustes fit between the two fits' outputs *for the same items* (item to
itself, never image to text, so no pairing is read), when that rotation removes most of their
disagreement; a rotation keeps every similarity within a fold. ``aligned`` and
``alignment_residual`` in the provenance say whether it was needed and how well the frames
matched.

Chance and a null control
-------------------------
:func:`chance_recall` gives the chance level of R@K for the scored pool and its standard error
(a random ranking puts the partner uniformly among the 2N - 1 other items); tables show it
next to R@K. :func:`shuffle_pairs` permutes the captions (a seeded derangement: no pair keeps
its own text), and ``fit_and_score(..., shuffled=True)`` runs the whole protocol on such pairs:
every honest protocol then falls to chance, and a number that does not is a leak. One real
effect remains on data made of semantic clusters: a permuted caption still shares its image's
cluster with probability about 1/C (C clusters), so a method that gathers each cluster keeps a
little recall above chance (Sinkhorn on the 20-cluster demo, N = 400: R@20 0.045 where chance
is 0.025, standard error 0.008).
"""

from __future__ import annotations

import hashlib
import math
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
from scipy import linalg
from sklearn.base import clone

from .config import RECALL_KS
from .embeddings import check_pair_arrays
from .measures import GapReport, measure_gap, one_row_per_image, rows_of_images
from .methods.base import GapMethod, ProgressCallback
from .score_terms import ScoreTerms
from .threads import one_blas_thread

#: The protocols, by the names every output uses.
PROTOCOLS: tuple[str, ...] = ("transductive", "held-out", "fit-on")
#: Folds of held-out cross-fitting (each fit sees 80 % of the pairs).
DEFAULT_FOLDS = 5
#: Seed of the folds and of the shuffled control.
DEFAULT_SEED = 0
#: Items of each modality used to align held-out folds' output frames (a sample when N is larger).
ALIGNMENT_ITEMS = 1024
#: A fold is rotated onto the first fold's frame only when the rotation leaves less than this
#: share of their disagreement (a change of basis, not the fits' own variability).
ALIGNMENT_GAIN = 0.75


#: The paper's setting: OT fitted on 5,000 pairs other than those it scores ...
PAPER_FIT_PAIRS = 5000
#: ... and, when one dataset is split for it, at least this many pairs left to score.
PAPER_MIN_SCORED = 500


class PaperSettingError(ValueError):
    """The data cannot give the paper's setting; the message says what to load instead."""


def paper_setting(pairs: Any, *, n_fit: int = PAPER_FIT_PAIRS, seed: int = DEFAULT_SEED
                  ) -> tuple[Any, Any, str]:
    """The paper's protocol for a method fitted on dedicated pairs: ``(fit, scored, how)``.

    The paper fits OT on 5,000 COCO pairs and scores 2,500 others. With ``pairs``
    (:class:`~gapviz.embeddings.PairedEmbeddings`):

    - simulated pairs: ``scored`` is ``pairs`` itself and ``fit`` is ``n_fit`` new pairs drawn
      from the same simulated model and concepts (another pair seed: no scored pair is in it);
    - real pairs with at least ``n_fit + PAPER_MIN_SCORED`` pairs: a seeded split, ``n_fit``
      pairs to fit on and every other pair to score (disjoint by row);
    - otherwise :class:`PaperSettingError`, saying to load another dataset of the same model
      and fit on it (protocol fit-on).

    ``how`` says which, for the provenance. The fit set is then used with protocol "fit-on".
    """
    from .simulate import GapParams, simulate_pairs

    n = pairs.n
    meta = pairs.meta or {}
    if pairs.is_simulated and meta.get("profile") and isinstance(meta.get("params"), dict):
        own = meta.get("pair_seed")
        fit = simulate_pairs(n_fit, pairs.dim, profile=meta["profile"], seed=int(meta["seed"]),
                             pair_seed=0 if own is None else int(own) + 1,
                             n_clusters=len(meta.get("cluster_names") or ()) or 20,
                             params=GapParams(**meta["params"]))
        return fit, pairs, (f"fitted on {n_fit:,} other pairs of the same simulated model, "
                            f"scored on these {n:,} (the paper's setting)")
    if n < n_fit + PAPER_MIN_SCORED:
        raise PaperSettingError(
            f"the paper's setting fits on {n_fit:,} pairs other than those it scores, and these "
            f"data have {n:,} pairs (a split needs at least {n_fit + PAPER_MIN_SCORED:,}). Load "
            "another dataset embedded with the same model and fit on it (protocol fit-on).")
    order = np.random.default_rng([seed, n]).permutation(n)
    fit_rows, scored_rows = np.sort(order[:n_fit]), np.sort(order[n_fit:])
    return (pairs.subset(fit_rows), pairs.subset(scored_rows),
            f"a seeded split (seed {seed}): fitted on {n_fit:,} pairs, scored on the other "
            f"{n - n_fit:,} (the paper's setting)")


# ---------------------------------------------------------------------------------------------
# provenance and results
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Provenance:
    """How one set of measures was obtained.

    Attributes
    ----------
    protocol : str
        One of :data:`PROTOCOLS`.
    method : str
        Registry name of the method.
    n_fit : int
        Pairs a fit saw. Held-out: the smallest training set of the K fits (about
        (K - 1) N / K).
    n_scored : int
        Pairs scored; the mixed pool has ``2 * n_scored`` items (:attr:`pool_size`).
    seed : int or None
        Seed of the folds (held-out), of the caption permutation (shuffled control) and of the
        fit sample (``max_fit``); None when nothing was drawn at random.
    folds : int or None
        K of held-out cross-fitting.
    fit_source : str or None
        Fit-on: what the method was fitted on (a file name, a dataset label).
    n_overlap : int or None
        Fit-on: scored pairs that also occur, identical, among the fit pairs.
    shuffled : bool
        The scored pairs' captions were permuted (null control): scores should be at chance.
    aligned : bool
        Held-out: some folds' outputs were rotated onto the first fold's frame (their fits
        differed by a change of basis, as spectral eigenvectors do).
    alignment_residual : float or None
        Held-out, pairing-free methods: largest relative Frobenius distance between a fold's
        output frame (after any rotation) and the first fold's, over a common sample of items
        (0 = identical frames).
    warning : str or None
        Set when a method that reads the pairing was scored on pairs it was fitted on, because
        the caller asked (``allow_pairing_leak=True``): every place showing the numbers shows it.
    n_images : int or None
        With several captions per image: the scored images (the pool holds them and the
        ``n_scored`` captions; held-out folds are of whole images). None: one caption each.
    """

    protocol: str
    method: str
    n_fit: int
    n_scored: int
    seed: int | None = None
    folds: int | None = None
    fit_source: str | None = None
    n_overlap: int | None = None
    shuffled: bool = False
    aligned: bool = False
    alignment_residual: float | None = None
    warning: str | None = None
    n_images: int | None = None

    @property
    def pool_size(self) -> int:
        """Items in the mixed pool the measures rank (2 * ``n_scored``; with several
        captions per image, the images and the captions)."""
        return self.n_scored + (self.n_scored if self.n_images is None else self.n_images)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable record (every field, plus ``pool_size``)."""
        return {**asdict(self), "pool_size": self.pool_size}

    def summary(self) -> str:
        """One line for a card, a table title or a report.

        e.g. ``"held-out: 5-fold cross-fit (seed 0), each fit on >= 400 pairs, 500 scored"``.
        """
        if self.method == "orig":
            text = f"no method: the raw embeddings, nothing fitted, {self.n_scored:,} pairs scored"
        elif self.protocol == "held-out":
            text = (f"held-out: {self.folds}-fold cross-fit (seed {self.seed}), each pair scored "
                    f"by a fit on >= {self.n_fit:,} other pairs, {self.n_scored:,} scored")
        elif self.protocol == "fit-on":
            text = (f"fit-on {self.fit_source or 'another set'}: fitted on {self.n_fit:,} pairs, "
                    f"{self.n_scored:,} scored")
        elif self.n_fit < self.n_scored:
            text = (f"transductive: fitted on {self.n_fit:,} of the {self.n_scored:,} scored "
                    "pairs (a seeded subsample), the others mapped out of sample")
        else:
            text = f"transductive: fitted on the {self.n_scored:,} scored pairs"
        if self.n_images is not None:
            text += (f" ({self.n_images:,} images, all their captions"
                     + ("; folds of whole images)" if self.protocol == "held-out" else ")"))
        if self.shuffled:
            text += f"; shuffled-pairs control (seed {self.seed})"
        if self.warning:
            text += f"; WARNING: {self.warning}"
        return text


class Chance(NamedTuple):
    """Chance level of a recall and its standard error over the queries."""

    level: float
    se: float


@dataclass
class ProtocolResult:
    """A method fitted and scored under one protocol.

    Attributes
    ----------
    image_embeddings, text_embeddings : ndarray of shape (n_scored, k)
        The scored pairs as the protocol transformed them (held-out: each fold by its own fit).
    provenance : Provenance
    fits : tuple of GapMethod
        The fitted methods (held-out: one per fold, in fold order; otherwise one).
    fold_of : ndarray of shape (n_scored,) or None
        Held-out: the fold of each scored pair.
    report : GapReport or None
        The measures (``fit_and_score`` fills it; ``protocol_transform`` leaves it None).
    scores : ScoreTerms or None
        A score correction's terms of the scored pairs (held-out: each fold's from its own
        fit's banks); the measures rank on the corrected scores. None for other methods.
    """

    image_embeddings: np.ndarray
    text_embeddings: np.ndarray
    provenance: Provenance
    fits: tuple[GapMethod, ...]
    fold_of: np.ndarray | None = None
    report: GapReport | None = None
    chance: dict[str, Chance] = field(default_factory=dict)
    scores: ScoreTerms | None = None

    @property
    def metrics(self) -> dict[str, float]:
        if self.report is None:
            raise ValueError("no measures yet: this result came from protocol_transform; "
                             "use fit_and_score for the measures.")
        return self.report.metrics


# ---------------------------------------------------------------------------------------------
# chance levels and the shuffled control
# ---------------------------------------------------------------------------------------------
def chance_recall(n_scored: int, k: int, *, pool: str = "mixed") -> Chance:
    """Chance level of recall@K for ``n_scored`` pairs, and its standard error.

    Parameters
    ----------
    n_scored : int
        N, pairs scored (one query per pair and modality).
    k : int
        K of recall@K.
    pool : {"mixed", "crossmodal"}
        ``"mixed"``: the partner is ranked among the 2N - 1 other items of the pool, so a random
        ranking finds it in the top K with probability K / (2N - 1).
        ``"crossmodal"``: among the N items of the other modality, K / N.

    Returns
    -------
    Chance
        ``level`` = that probability (at most 1); ``se`` = sqrt(level (1 - level) / N), the
        standard error of a recall averaged over N independent queries.
    """
    if not isinstance(n_scored, (int, np.integer)) or n_scored < 1:
        raise ValueError(f"n_scored must be an integer >= 1, got {n_scored!r}.")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}.")
    if pool == "mixed":
        candidates = 2 * n_scored - 1
    elif pool == "crossmodal":
        candidates = n_scored
    else:
        raise ValueError(f"pool must be 'mixed' or 'crossmodal', got {pool!r}.")
    level = min(1.0, k / max(candidates, 1))
    return Chance(level, math.sqrt(level * (1.0 - level) / n_scored))


def chance_levels(n_scored: int, ks: Sequence[int] = RECALL_KS) -> dict[str, Chance]:
    """Chance of every recall key :func:`gapviz.measures.measure_gap` reports, for N pairs.

    Returns
    -------
    dict
        ``{"R@5": Chance, "R@5_t2i": ..., "R@5_i2t_crossmodal": ..., "R@5_t2i_crossmodal": ...}``.
    """
    out: dict[str, Chance] = {}
    for k in ks:
        mixed, cross = chance_recall(n_scored, k), chance_recall(n_scored, k, pool="crossmodal")
        out[f"R@{k}"] = out[f"R@{k}_t2i"] = mixed
        out[f"R@{k}_i2t_crossmodal"] = out[f"R@{k}_t2i_crossmodal"] = cross
    return out


def shuffle_pairs(X: np.ndarray, Y: np.ndarray, *, seed: int = DEFAULT_SEED
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs with their captions permuted: the shuffled-pairs (null) control.

    Parameters
    ----------
    X : ndarray of shape (N, d)
    Y : ndarray of shape (N, d)
    seed : int

    Returns
    -------
    X : ndarray of shape (N, d)
        Unchanged.
    Y_shuffled : ndarray of shape (N, d)
        ``Y[perm]``: image i is now paired with text ``perm[i]``.
    perm : ndarray of shape (N,)
        A seeded derangement (``perm[i] != i`` for every i when N >= 2): no pair keeps its own
        caption, so nothing is left to find.
    """
    X, Y = np.asarray(X), np.asarray(Y)
    check_pair_arrays(X, Y, same_dim=False)
    n = X.shape[0]
    rng = np.random.default_rng([seed, 1])
    perm = rng.permutation(n)
    if n >= 2:
        # Rejection: a uniform permutation is a derangement with probability ~1/e.
        while np.any(perm == np.arange(n)):
            perm = rng.permutation(n)
    return X, Y[perm], perm


# ---------------------------------------------------------------------------------------------
# fitting under a protocol
# ---------------------------------------------------------------------------------------------
def fit_size(n_pairs: int, protocol: str, *, folds: int = DEFAULT_FOLDS,
             n_fit_pairs: int | None = None, max_fit: int | None = None) -> int:
    """Pairs each fit sees when ``n_pairs`` are scored under ``protocol``: all of them
    (transductive), the smallest training part of K-fold cross-fitting, N - ceil(N / K)
    (held-out), or the other set's size (fit-on, ``n_fit_pairs``); at most ``max_fit``.
    Size parameters (spectral k, VLAP anchors) must fit this, not N."""
    if protocol == "held-out":
        n = n_pairs - -(-n_pairs // folds)
    elif protocol == "fit-on":
        n = n_fit_pairs if n_fit_pairs is not None else n_pairs
    else:
        n = n_pairs
    return min(n, max_fit) if max_fit is not None else n


def resolve_method(method: str | GapMethod, params: Mapping[str, Any] | None = None) -> GapMethod:
    """An unfitted method: a registry name with ``params``, or a copy of a given method."""
    if isinstance(method, GapMethod):
        if params:
            raise ValueError("give params with a method name, not with a method object "
                             "(set them on the object instead).")
        return clone(method)
    from .methods import make_method

    return make_method(method, **dict(params or {}))


def default_protocol(method: str | GapMethod) -> str:
    """The protocol a method is scored under when none is asked for (its ``default_protocol``)."""
    if isinstance(method, GapMethod):
        return type(method).default_protocol
    from .methods import METHODS

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}.")
    return METHODS[method].default_protocol


def protocol_transform(method: str | GapMethod, X: np.ndarray, Y: np.ndarray, *,
                       protocol: str | None = None, params: Mapping[str, Any] | None = None,
                       folds: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED,
                       fit_pairs: tuple[np.ndarray, np.ndarray] | None = None,
                       fit_source: str | None = None, allow_pairing_leak: bool = False,
                       shuffled: bool = False, max_fit: int | None = None,
                       groups: np.ndarray | None = None,
                       progress: ProgressCallback | None = None) -> ProtocolResult:
    """Fit ``method`` and transform the pairs ``(X, Y)`` under a protocol (no measures).

    What :func:`fit_and_score` does before measuring; the app calls it to cache transformed
    embeddings and measure them itself.

    Parameters
    ----------
    method : str or GapMethod
        Registry name (with ``params``) or an unfitted method (copied, never fitted in place).
    X : ndarray of shape (N, d)
        Image embeddings of the pairs to score.
    Y : ndarray of shape (N, d)
        Text embeddings; row i pairs with row i of ``X``.
    protocol : {"transductive", "held-out", "fit-on"}, optional
        Default: the method's ``default_protocol``.
    params : mapping, optional
        The method's parameters (with a registry name).
    folds : int, default=5
        K of held-out cross-fitting, 2 <= K <= N.
    seed : int, default=0
        Seed of the folds and of the shuffled control.
    fit_pairs : (X_fit, Y_fit), optional
        Fit-on: the pairs to fit on, shapes (M, d). Required for "fit-on", refused otherwise.
    fit_source : str, optional
        Fit-on: a name for ``fit_pairs`` recorded in the provenance.
    allow_pairing_leak : bool, default=False
        Let a method that reads the pairing be scored on pairs it was fitted on (transductive,
        or fit-on with shared pairs). Its scores then carry a warning.
    shuffled : bool, default=False
        Run on the pairs with their captions permuted (:func:`shuffle_pairs`; for fit-on only
        the scored pairs are permuted): the null control.
    max_fit : int, optional
        Held-out and fit-on: fit on at most this many pairs, a seeded sample of those the
        protocol allows (a slow fit such as OT's costs far more than the out-of-sample map);
        ``n_fit`` in the provenance is the size used.
    groups : ndarray of shape (N,), optional
        Each pair's image id when images have several captions: held-out folds take whole
        images, so no caption of an image is fitted in one fold and scored in another;
        methods fit on every caption, and each image keeps one output row
        (:func:`gapviz.measures.one_row_per_image`).
    progress : callable(fraction, message), optional

    Returns
    -------
    ProtocolResult
        Without ``report``.

    Raises
    ------
    ValueError
        Unknown protocol; a pairing-reading method on its own fit pairs without
        ``allow_pairing_leak``; missing or misshaped ``fit_pairs``; folds out of range; or the
        method's own refusal of its parameters on the fit size (the message says the fit size).
    """
    model = resolve_method(method, params)
    name = type(model).name or type(model).__name__
    protocol = type(model).default_protocol if protocol is None else protocol
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}.")
    X, Y = np.asarray(X, dtype=np.float32), np.asarray(Y, dtype=np.float32)
    check_pair_arrays(X, Y)
    if fit_pairs is not None and protocol != "fit-on":
        raise ValueError(f"fit_pairs are only used by protocol 'fit-on', not {protocol!r}.")
    if shuffled:
        X, Y, _ = shuffle_pairs(X, Y, seed=seed)
    report = progress if progress is not None else _no_progress
    reads_pairing = bool(type(model).uses_pairing)
    if max_fit is not None:
        if protocol == "transductive":
            raise ValueError("max_fit applies to 'held-out' and 'fit-on'; a transductive fit is on "
                             "the scored pairs, all of them.")
        if not isinstance(max_fit, (int, np.integer)) or isinstance(max_fit, bool) or max_fit < 2:
            raise ValueError(f"max_fit must be an integer >= 2, got {max_fit!r}.")

    if protocol == "transductive":
        warning = None
        if reads_pairing:
            if not allow_pairing_leak:
                raise ValueError(
                    f"method {name!r} {type(model).leak_reason}. Use protocol 'held-out' or "
                    "'fit-on', or "
                    "pass allow_pairing_leak=True (command line: --allow-pairing-leak) to see the "
                    "leaky number with a warning.")
            warning = _leak_warning(name, X.shape[0])
        Xt, Yt = model.fit_transform(X, Y, progress=report)
        Xt = one_row_per_image(Xt, groups)
        prov = Provenance("transductive", name, _pairs_fitted(model, X.shape[0]), X.shape[0],
                          seed=seed if shuffled else None, shuffled=shuffled, warning=warning,
                          n_images=_n_images(groups))
        return ProtocolResult(Xt, Yt, prov, (model,), scores=_score_terms(model, X, Y))

    if protocol == "fit-on":
        if fit_pairs is None:
            raise ValueError("protocol 'fit-on' needs fit_pairs=(X_fit, Y_fit): the pairs to fit on "
                             "(embedded by the same model as the scored pairs).")
        Xf, Yf = (np.asarray(a, dtype=np.float32) for a in fit_pairs)
        check_pair_arrays(Xf, Yf)
        if Xf.shape[1] != X.shape[1]:
            raise ValueError(f"the fit pairs have dimension {Xf.shape[1]} but the scored pairs "
                             f"{X.shape[1]}; fit on embeddings of the same model.")
        sampled = max_fit is not None and Xf.shape[0] > max_fit
        if sampled:
            keep = np.sort(np.random.default_rng([seed, 3]).choice(Xf.shape[0], max_fit, replace=False))
            Xf, Yf = Xf[keep], Yf[keep]
        overlap = _shared_pairs(Xf, Yf, X, Y)
        warning = None
        if reads_pairing and overlap:
            if not allow_pairing_leak:
                raise ValueError(
                    f"{overlap} of the {X.shape[0]} scored pairs are also among the fit pairs, and "
                    f"method {name!r} reads the pairing: it would be scored on pairs it memorised. "
                    "Fit on other pairs, or pass allow_pairing_leak=True (command line: "
                    "--allow-pairing-leak) to see the number with a warning.")
            warning = _leak_warning(name, overlap)
        _fit_or_explain(lambda: model.fit(Xf, Yf, progress=report), "fit-on", Xf.shape[0], X.shape[0])
        Xt, Yt = model.transform(X, Y)
        Xt = one_row_per_image(Xt, groups)
        prov = Provenance("fit-on", name, _pairs_fitted(model, Xf.shape[0]), X.shape[0],
                          seed=seed if shuffled or sampled else None,
                          fit_source=fit_source, n_overlap=overlap, shuffled=shuffled, warning=warning,
                          n_images=_n_images(groups))
        return ProtocolResult(Xt, Yt, prov, (model,), scores=_score_terms(model, X, Y))

    return _cross_fit(model, name, X, Y, folds, seed, shuffled, max_fit, report, groups)


def fit_and_score(method: str | GapMethod, X: np.ndarray, Y: np.ndarray, *,
                  protocol: str | None = None, params: Mapping[str, Any] | None = None,
                  folds: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED,
                  fit_pairs: tuple[np.ndarray, np.ndarray] | None = None,
                  fit_source: str | None = None, allow_pairing_leak: bool = False,
                  shuffled: bool = False, max_fit: int | None = None,
                  ks: tuple[int, ...] = RECALL_KS,
                  separability: bool = False,
                  progress: ProgressCallback | None = None) -> ProtocolResult:
    """Fit ``method``, transform and measure the pairs under a protocol, with provenance.

    Parameters are those of :func:`protocol_transform`, plus ``ks`` and ``separability`` of
    :func:`gapviz.measures.measure_gap`.

    Returns
    -------
    ProtocolResult
        ``report`` holds the measures of the scored pairs (mixed pool of ``2 * n_scored``),
        ``chance`` the chance level of each recall for that pool (:func:`chance_levels`),
        ``provenance`` how they were obtained.

    Examples
    --------
    >>> res = fit_and_score("procrustes", X, Y)                  # doctest: +SKIP
    >>> res.provenance.summary()                                 # doctest: +SKIP
    'held-out: 5-fold cross-fit (seed 0), each pair scored by a fit on >= 400 other pairs, 500 scored'
    >>> res.metrics["R@20"], res.chance["R@20"]                  # doctest: +SKIP
    """
    result = protocol_transform(method, X, Y, protocol=protocol, params=params, folds=folds,
                                seed=seed, fit_pairs=fit_pairs, fit_source=fit_source,
                                allow_pairing_leak=allow_pairing_leak, shuffled=shuffled,
                                max_fit=max_fit, progress=progress)
    result.report = measure_gap(result.image_embeddings, result.text_embeddings, ks=ks,
                                separability=separability, scores=result.scores)
    result.chance = chance_levels(result.provenance.n_scored, ks)
    return result


# ---------------------------------------------------------------------------------------------
# internals
# ---------------------------------------------------------------------------------------------
def _cross_fit(model: GapMethod, name: str, X: np.ndarray, Y: np.ndarray, folds: int, seed: int,
               shuffled: bool, max_fit: int | None, progress: ProgressCallback,
               groups: np.ndarray | None = None) -> ProtocolResult:
    """Held-out by K-fold cross-fitting (module docstring); with ``groups``, folds of whole
    images."""
    n = X.shape[0]
    if groups is None:
        units, unit_of = n, np.arange(n)
    else:
        _, unit_of = np.unique(np.asarray(groups), return_inverse=True)
        units = int(unit_of.max()) + 1
    if not isinstance(folds, (int, np.integer)) or isinstance(folds, bool) or not 2 <= folds <= units:
        what = f"N = {n}" if groups is None else f"the {units} images"
        raise ValueError(f"folds must be an integer with 2 <= folds <= {what}, got {folds!r}.")
    order = np.random.default_rng([seed, 0]).permutation(units)
    parts = np.array_split(order, folds)  # units (pairs, or images) of each fold
    if groups is not None:  # an image's rows all go where the image goes
        rows_of = rows_of_images(unit_of)
        parts = [np.concatenate([rows_of[u] for u in chosen]) for chosen in parts]
    fold_of = np.empty(n, np.int64)
    for f, rows in enumerate(parts):
        fold_of[rows] = f
    n_fit = n - max(len(p) for p in parts)
    if max_fit is not None:
        n_fit = min(n_fit, max_fit)

    # The folds' fits are independent. Methods whose fits are small and hold BLAS to one thread
    # (OT, Sinkhorn on their fit_size subsample) run side by side, one per CPU; the others one
    # after the other, each with the whole BLAS. Progress is reported from the calling thread
    # only (a caller's progress bar may belong to it).
    workers = (max(1, min(folds, os.cpu_count() or 1))
               if getattr(model, "fit_size", None) is not None else 1)

    def fit_fold(f: int):
        rows = parts[f]
        train = np.flatnonzero(fold_of != f)
        if max_fit is not None and len(train) > max_fit:
            train = np.sort(np.random.default_rng([seed, 3, f]).choice(train, max_fit, replace=False))
        fitted = clone(model)

        def sub_progress(fraction: float, message: str) -> None:
            if workers == 1:
                progress((f + fraction) / (folds + 1), f"fold {f + 1}/{folds}: {message}")

        _fit_or_explain(lambda: fitted.fit(X[train], Y[train], progress=sub_progress), "held-out",
                        len(train), n, folds)
        return fitted, fitted.transform_images(X[rows]), fitted.transform_texts(Y[rows])

    if workers == 1:
        done = [fit_fold(f) for f in range(folds)]
    else:
        # BLAS on one thread while the folds run side by side: each fit's own products (the
        # cost matrix, the out-of-sample maps) would otherwise start a BLAS pool per fold,
        # whose spinning threads fight the other fold for the cores. On 2 CPUs, Laplace OT's
        # five folds on the demo took 1.6-1.9 s that way against 0.83-0.86 s.
        with one_blas_thread(workers), \
                ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gapviz-fold") as pool:
            futures = [pool.submit(fit_fold, f) for f in range(folds)]
            try:
                for finished, future in enumerate(as_completed(futures), start=1):
                    future.result()  # a fold that failed stops the others
                    progress(finished / (folds + 1), f"{finished} of {folds} folds fitted")
            except BaseException:
                # the caller stops here (a failed fold, or work ahead giving way to a user's
                # between two folds): the folds not yet started are dropped, so leaving the
                # pool waits for those under way only, not for every fold
                for future in futures:
                    future.cancel()
                raise
            done = [future.result() for future in futures]
    fits = [d[0] for d in done]
    out_x = [d[1] for d in done]
    out_y = [d[2] for d in done]

    residual, aligned = None, False
    if type(model).output_space == "own":  # each fit has its own basis: align the folds
        progress(folds / (folds + 1), "aligning the folds' output frames")
        out_x, out_y, residual, aligned = _align_frames(fits, out_x, out_y, X, Y, seed)
    n_fit = min(n_fit, *(_pairs_fitted(fit, n_fit) for fit in fits))

    k = out_x[0].shape[1]
    Xt = np.empty((n, k), np.float32)
    Yt = np.empty((n, k), np.float32)
    for rows, xs, ys in zip(parts, out_x, out_y):
        Xt[rows], Yt[rows] = xs, ys
    progress(1.0, "done")
    prov = Provenance("held-out", name, n_fit, n, seed=seed, folds=folds, shuffled=shuffled,
                      aligned=aligned, alignment_residual=residual, n_images=_n_images(groups))
    scores = None
    if type(model).corrects_scores:  # each fold's pairs scored against its own fit's banks
        scores = ScoreTerms.stack([(rows, fit.score_terms(X, Y, rows))
                                   for rows, fit in zip(parts, fits)], n)
    if groups is not None:
        Xt = one_row_per_image(Xt, groups)
    return ProtocolResult(Xt, Yt, prov, tuple(fits), fold_of, scores=scores)


def _score_terms(model: GapMethod, X: np.ndarray, Y: np.ndarray) -> ScoreTerms | None:
    """A score correction's terms of the scored pairs (None for a method that moves
    embeddings)."""
    return model.score_terms(X, Y) if type(model).corrects_scores else None


def _n_images(groups: np.ndarray | None) -> int | None:
    """Images of grouped pairs (None when there are no groups or each id is used once)."""
    if groups is None:
        return None
    m = int(np.unique(np.asarray(groups)).shape[0])
    return m if m < len(groups) else None


def _pairs_fitted(fit: GapMethod, given: int) -> int:
    """Pairs a fitted method actually fitted on: ``given``, or fewer when it fitted a
    subsample of them (OT's ``fit_size``: ``fit_index_``)."""
    index = getattr(fit, "fit_index_", None)
    return min(given, int(np.size(index))) if index is not None else given


def refit_result(result: ProtocolResult, X: np.ndarray, Y: np.ndarray, *,
                 progress: ProgressCallback | None = None, **params: Any) -> ProtocolResult:
    """``result`` with its fits refitted to new slider values ``params`` (a method's
    ``refit``: OT's ``reg_lap`` / ``reg_src``, Sinkhorn's ``reg``) and the scored pairs ``X, Y``
    (the same as for ``result``) transformed again; every fit keeps its own pairs, so the
    protocol and provenance are unchanged. What makes a slider live: the fits' costs, graphs
    and recent solutions are reused instead of fitting from scratch.

    The fits are changed in place; callers sharing ``result`` between threads hold a lock.
    """
    report = progress if progress is not None else _no_progress
    if result.provenance.aligned:
        raise ValueError("the folds of this result were aligned (a method with its own output "
                         "basis); refit it with protocol_transform instead.")
    if not all(hasattr(fit, "refit") for fit in result.fits):
        raise ValueError(f"method {result.provenance.method!r} has no refit; use protocol_transform.")
    X, Y = np.asarray(X, dtype=np.float32), np.asarray(Y, dtype=np.float32)
    if result.provenance.shuffled:
        X, Y, _ = shuffle_pairs(X, Y, seed=result.provenance.seed)
    k = len(result.fits)

    def one(f: int):
        fit = result.fits[f]
        fit.refit(**params)
        rows = (np.flatnonzero(result.fold_of == f) if result.fold_of is not None
                else np.arange(X.shape[0]))
        return rows, fit.transform_images(X[rows]), fit.transform_texts(Y[rows])

    # The folds' fits are independent: refit them side by side (their solvers release the GIL
    # in their compiled parts), one worker per CPU, BLAS on one thread (as in the cross-fit).
    workers = max(1, min(k, os.cpu_count() or 1))
    with one_blas_thread(workers), \
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gapviz-refit") as pool:
        outs = list(pool.map(one, range(k)))
    report(k / (k + 1), f"refitted {k} fit(s)")
    width = outs[0][1].shape[1]
    Xt = np.empty((X.shape[0], width), np.float32)
    Yt = np.empty((X.shape[0], width), np.float32)
    for rows, xs, ys in outs:
        Xt[rows], Yt[rows] = xs, ys
    report(1.0, "done")
    return ProtocolResult(Xt, Yt, result.provenance, result.fits, result.fold_of)


def _align_frames(fits, out_x, out_y, X, Y, seed):
    """Rotate a fold's outputs onto fold 0's frame when the two differ by a change of basis.

    ``A_f`` stacks fit f's outputs for a common sample of images and texts (each item against
    itself: no pairing is read). The rotation ``Q = argmin ||A_f Q - A_0||_F`` (orthogonal
    Procrustes) is applied only when it removes most of the disagreement
    (``||A_f Q - A_0|| < ALIGNMENT_GAIN ||A_f - A_0||``): that is a basis ambiguity (spectral
    eigenvectors, PCA axes; residual falls 2-7 fold on the demo). Methods whose output stays in
    the input's or the texts' own space (centering, OT, Sinkhorn) disagree between folds by the
    fits' own variability, which a rotation would only blur, so they are left as they are.

    Returns
    -------
    out_x, out_y : list of ndarray
    residual : float
        Largest relative residual ``||A_f R - A_0|| / ||A_0||`` over folds, R the rotation
        applied (or identity).
    aligned : bool
        Whether any fold was rotated.
    """
    n = X.shape[0]
    rng = np.random.default_rng([seed, 2])
    take = np.sort(rng.choice(n, min(n, ALIGNMENT_ITEMS), replace=False))

    def frame(fit: GapMethod) -> np.ndarray:
        return np.vstack([fit.transform_images(X[take]), fit.transform_texts(Y[take])]).astype(np.float64)

    ref = frame(fits[0])
    ref_norm = float(np.linalg.norm(ref)) or 1.0
    worst, aligned = 0.0, False
    for f in range(1, len(fits)):
        A = frame(fits[f])
        as_is = float(np.linalg.norm(A - ref))
        Q, _ = linalg.orthogonal_procrustes(A, ref)
        rotated = float(np.linalg.norm(A @ Q - ref))
        if rotated < ALIGNMENT_GAIN * as_is:
            Q32 = Q.astype(np.float32)
            out_x[f], out_y[f] = out_x[f] @ Q32, out_y[f] @ Q32
            aligned = True
            worst = max(worst, rotated / ref_norm)
        else:
            worst = max(worst, as_is / ref_norm)
    return out_x, out_y, worst, aligned


def _fit_or_explain(run, protocol: str, n_fit: int, n_scored: int, folds: int | None = None):
    """Run a fit; a refusal of the method's parameters says how many pairs the fit had."""
    try:
        return run()
    except ValueError as err:
        if protocol == "held-out":
            where = (f"under held-out ({folds}-fold cross-fitting) each fit sees {n_fit} of the "
                     f"{n_scored} pairs")
        else:
            where = f"under fit-on the fit sees {n_fit} pairs"
        raise ValueError(f"{where}: {err}") from err


def _leak_warning(name: str, n_shared: int) -> str:
    from .methods import method_label

    return (f"{method_label(name)} reads the pairing and was scored on {n_shared:,} pairs it was "
            "fitted on: it can memorise them, so these scores overstate it (held-out scores are "
            "the honest ones)")


def _pair_digests(X: np.ndarray, Y: np.ndarray) -> list[bytes]:
    """One digest per pair (row of X and row of Y together), for exact-match lookups."""
    out = []
    for x, y in zip(X, Y):
        d = hashlib.blake2b(digest_size=16)
        d.update(x.tobytes())
        d.update(y.tobytes())
        out.append(d.digest())
    return out


def _shared_pairs(Xf: np.ndarray, Yf: np.ndarray, X: np.ndarray, Y: np.ndarray) -> int:
    """Scored pairs (x, y) that also occur, bit for bit, among the fit pairs."""
    fit_keys = set(_pair_digests(Xf, Yf))
    return sum(key in fit_keys for key in _pair_digests(X, Y))


def _no_progress(fraction: float, message: str) -> None:
    """Default progress callback: report nothing."""


__all__ = ["ALIGNMENT_ITEMS", "Chance", "DEFAULT_FOLDS", "DEFAULT_SEED", "PROTOCOLS", "Provenance",
           "ProtocolResult", "chance_levels", "chance_recall", "default_protocol", "fit_and_score",
           "protocol_transform", "resolve_method", "shuffle_pairs"]
