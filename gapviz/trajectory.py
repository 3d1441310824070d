"""The gap over training: one dataset's pairs seen by a series of checkpoints of one model.

A *series* is an ordered list of models, the dataset's companions in the order given: open_clip
pretrained tags of one architecture (``laion400m_e31``, ``laion400m_e32``), local checkpoint
files of an open_clip training run (``epoch_1.pt``, ``epoch_2.pt``, ...), ``hf-hub:`` names, or
embeddings files (.npz / .parquet) of the same pairs computed elsewhere.

For each step :func:`measure_trajectory` gives

- every measure of :func:`gapviz.measures.measure_gap` plus RMG
  (:func:`gapviz.anatomy.relative_modality_gap`, Schrodi et al. 2025), each with the percentile
  bootstrap interval over pairs of :func:`gapviz.intervals.bootstrap_ci`;
- what the checkpoint itself says, read from its weights (the state dict): the learned
  temperature ``logit_scale`` (open_clip stores its log; reported as ``exp``, the factor on
  cosines) and ``logit_bias`` where the model has one (SigLIP);
- the margin they imply between a matched and an unmatched pair, in logits::

      margin = scale * (mean_i cos(x_i, y_i) - mean_{i != j} cos(x_i, y_j))

  the bias cancels in the difference; ``matched_logit = scale * mean paired cos + bias`` and
  ``unmatched_logit`` likewise (bias 0 for CLIP-style models). Liang et al. 2022 show the
  temperature keeps the gap born at initialisation; Bangachev et al. 2025 explain SigLIP's gap
  by its temperature and bias; Yaras et al. 2024 find it shrinks only slowly over training.

and for the series: one projection basis for all steps (:class:`SharedBasis`, a PCA fitted on
the mixed pool of the *last* step and applied to every step, so a pair's trail across steps
is drawn in one frame), and the pairs that moved most (largest displacement from the first
step to the last, in the embedding space of unit rows). :func:`close_series` adds the same
series after a gap-closing method (each step run under the method's protocol), the raw-vs-
method choice of the app.

Each model is embedded through the content-hashed cache (:func:`gapviz.encode.embed_pairs`):
a checkpoint is embedded once, and a rerun reads every step from the cache.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .embeddings import PairedEmbeddings
from .encode import ModelSpec

__all__ = ["EMBEDDINGS_SUFFIXES", "LogitParams", "SeriesItem", "SharedBasis", "Trajectory",
           "TrajectoryStep", "close_series", "embed_series", "measure_trajectory", "moved_most",
           "read_logit_params", "series_from_models", "trajectory"]

#: Files of a series that hold embeddings rather than weights.
EMBEDDINGS_SUFFIXES = (".npz", ".parquet")
#: Bootstrap resamples and level of the per-step intervals (the project's defaults).
N_RESAMPLES = 200
LEVEL = 0.95
#: How many of the pairs that moved most a result lists.
TOP_MOVED = 10
#: Measures a trajectory's table and curves show first (every measure is in ``metrics``).
HEADLINE = ("RMG", "centroid_gap", "paired_cosine_distance", "all_cosine_distance", "ITR", "TIR",
            "R@5", "R@5_i2t_crossmodal", "frechet")
_EPOCH = re.compile(r"epoch_(\d+)\.(?:pt|pth|bin|safetensors)$")


# ---------------------------------------------------------------------------------------------
# the series
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SeriesItem:
    """One step of a series: a model to embed with, or an embeddings file.

    Attributes
    ----------
    label : str
        How the step is named in tables (the checkpoint's file name, the tag, the file).
    spec : ModelSpec or None
        The model, None for an embeddings file.
    embeddings_file : str or None
    step : int or None
        The epoch of an open_clip ``epoch_N.pt`` file, else None (the series' order counts).
    """

    label: str
    spec: ModelSpec | None = None
    embeddings_file: str | None = None
    step: int | None = None

    @property
    def kind(self) -> str:
        """``checkpoint`` (a local file), ``pretrained`` (a tag or hub name), ``random`` or
        ``embeddings``."""
        if self.spec is None:
            return "embeddings"
        if self.spec.checkpoint is not None:
            return "checkpoint"
        return "random" if self.spec.random_weights else "pretrained"


def series_from_models(models: Sequence[str], *, arch: str | None = None, seed: int = 0,
                       tokenizer: str | None = None) -> list[SeriesItem]:
    """The series named by ``models``, in the order given.

    Parameters
    ----------
    models : sequence of str
        Each one of: an embeddings file (.npz / .parquet); a local checkpoint file or a
        pretrained tag of ``arch``; ``hf-hub:org/repo``. Embeddings files and models cannot be
        mixed (a file's embeddings come from a model gapviz cannot read weights from).
    arch : str, optional
        The one architecture of the series' checkpoints and tags: an open_clip name or a model
        config .json (see :class:`gapviz.encode.ModelSpec`). Required for them.
    seed, tokenizer : as in :class:`~gapviz.encode.ModelSpec`

    Raises
    ------
    ValueError
        Fewer than 2 models, a mixed series, a missing ``arch``, a file that does not exist.
    """
    models = [str(m).strip() for m in models if str(m).strip()]
    if len(models) < 2:
        raise ValueError(f"a series needs at least 2 models (checkpoints, tags or embeddings "
                         f"files), got {len(models)}.")
    files = [m.lower().endswith(EMBEDDINGS_SUFFIXES) for m in models]
    if any(files) and not all(files):
        raise ValueError("give either embeddings files (.npz/.parquet) or checkpoints/tags, not "
                         "both: a file's embeddings come from weights gapviz cannot read.")
    items = []
    for model in models:
        if model.lower().endswith(EMBEDDINGS_SUFFIXES):
            if not Path(model).expanduser().is_file():
                raise ValueError(f"embeddings file {model} not found.")
            items.append(SeriesItem(Path(model).name, embeddings_file=model))
            continue
        if model.startswith("hf-hub:"):
            spec = ModelSpec(model, seed=seed, tokenizer=tokenizer)
            items.append(SeriesItem(model, spec))
            continue
        if not arch:
            raise ValueError(f"{model}: give the series' architecture with arch= (--arch NAME: an "
                             "open_clip name such as ViT-B-32, or a model config .json).")
        looks_like_file = any(sep in model for sep in ("/", "\\")) or model.endswith(
            (".pt", ".pth", ".bin", ".safetensors"))
        if looks_like_file and not Path(model).expanduser().is_file():
            raise ValueError(f"checkpoint file {model} not found.")
        spec = ModelSpec(arch, model, seed=seed, tokenizer=tokenizer)
        match = _EPOCH.search(Path(model).name) if looks_like_file else None
        label = Path(model).name if looks_like_file else model
        items.append(SeriesItem(label, spec, step=int(match.group(1)) if match else None))
    labels = [i.label for i in items]
    if len(set(labels)) < len(labels):  # two runs' epoch_1.pt: name them by their folder too
        items = [SeriesItem(_long_label(i), i.spec, i.embeddings_file, i.step) for i in items]
    return items


def _long_label(item: SeriesItem) -> str:
    path = item.embeddings_file or (item.spec.pretrained if item.spec is not None else None)
    if path and Path(path).expanduser().is_file():
        p = Path(path).expanduser()
        return f"{p.parent.name}/{p.name}"
    return item.label


# ---------------------------------------------------------------------------------------------
# what the weights say
# ---------------------------------------------------------------------------------------------
@dataclass
class LogitParams:
    """The learned temperature and bias of one checkpoint, read from its weights.

    Attributes
    ----------
    scale : float or None
        ``exp(logit_scale)``: the factor on cosines in the contrastive logits. None when the
        weights are not available (an embeddings file).
    log_scale : float or None
        The stored parameter ``logit_scale`` (open_clip stores the log).
    bias : float or None
        ``logit_bias`` (SigLIP-style models); None when the model has none.
    source : str
        How they were obtained, e.g. ``"state dict of epoch_3.pt (torch.load, mmap)"``.
    """

    scale: float | None
    log_scale: float | None
    bias: float | None
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"logit_scale": self.scale, "logit_scale_log": self.log_scale,
                "logit_bias": self.bias, "source": self.source}


def _from_state_dict(state: Any, where: str) -> LogitParams:
    """``logit_scale`` / ``logit_bias`` of a state dict (open_clip's names, with or without the
    ``module.`` prefix of a DDP run)."""

    def value(name: str) -> float | None:
        for key in (name, f"module.{name}"):
            if key in state:
                return float(np.asarray(state[key].detach().float().cpu().numpy()
                                        if hasattr(state[key], "detach") else state[key]).reshape(-1)[0])
        return None

    log_scale = value("logit_scale")
    if log_scale is None:
        return LogitParams(None, None, None, f"{where}: no logit_scale in the state dict")
    return LogitParams(math.exp(log_scale), log_scale, value("logit_bias"), where)


def _weights_file(spec: ModelSpec, weights_dir: str | None = None) -> Path | None:
    """The local file holding ``spec``'s weights: its checkpoint, or a downloaded tag's copy."""
    if spec.checkpoint is not None:
        return spec.checkpoint
    if spec.random_weights or spec.pretrained is None and not spec.name.startswith("hf-hub:"):
        return None
    try:
        import open_clip

        from .encode import _local_weights

        if spec.name.startswith("hf-hub:"):
            cfg = {"hf_hub": spec.name.split(":", 1)[1].rstrip("/") + "/"}
        else:
            cfg = open_clip.get_pretrained_cfg(spec.architecture.replace("/", "-"), spec.pretrained)
        return _local_weights(cfg, weights_dir) if cfg else None
    except Exception:  # noqa: BLE001 - any failure only means "no local file found"
        return None


def read_logit_params(spec: ModelSpec, *, weights_dir: str | None = None) -> LogitParams:
    """The ``logit_scale`` and ``logit_bias`` of ``spec``'s weights, read from the state dict.

    A local weights file (a checkpoint, or the downloaded copy of a tag) is opened with
    ``torch.load(mmap=True, weights_only=True)`` (or ``safetensors``), so only the two
    parameters are read from disk, not the whole file; otherwise (random weights, a hub name
    without a local copy) the model is built and its ``state_dict()`` read. Weights that
    cannot be had (offline, embeddings read from the cache) give ``scale=None`` and a
    ``source`` that says why, not an error.
    """
    import torch

    path = _weights_file(spec, weights_dir)
    if path is not None:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                keys = set(f.keys())
                state = {k: f.get_tensor(k) for k in ("logit_scale", "logit_bias",
                                                      "module.logit_scale", "module.logit_bias")
                         if k in keys}
            return _from_state_dict(state, f"state dict of {path.name} (safetensors)")
        try:
            checkpoint = torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
        except (RuntimeError, ValueError):  # an old (non-zip) file cannot be memory-mapped
            checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
        if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
            checkpoint = checkpoint["state_dict"]  # open_clip's epoch_N.pt layout
        return _from_state_dict(checkpoint, f"state dict of {path.name} (torch.load, mmap)")
    from .encode import ModelLoadError, load_model

    try:
        loaded = load_model(spec, device="cpu", weights_dir=weights_dir)
    except ModelLoadError as err:  # embeddings from the cache, weights not on this machine
        return LogitParams(None, None, None, f"weights of {spec.label()} not available: {err}")
    return _from_state_dict(loaded.model.state_dict(), f"state dict of the built model {spec.label()}")


# ---------------------------------------------------------------------------------------------
# embedding a series
# ---------------------------------------------------------------------------------------------
@dataclass
class EmbeddedStep:
    """One step's embeddings and how they were had."""

    item: SeriesItem
    embeddings: PairedEmbeddings
    from_cache: bool
    seconds: float
    logits: LogitParams
    notes: list[str] = field(default_factory=list)


def embed_series(items: Sequence[SeriesItem], pairs: Sequence[Any] | None = None, *,
                 cache: Any = None, device: str | None = None, precision: str = "fp32",
                 weights_dir: str | None = None,
                 progress: Callable[[int, int, str], None] | None = None) -> list[EmbeddedStep]:
    """Embed ``pairs`` with every model of the series (or read its embeddings files).

    Parameters
    ----------
    items : sequence of SeriesItem
        From :func:`series_from_models`.
    pairs : sequence of gapviz.data.Pair, optional
        The dataset; required unless every item is an embeddings file.
    cache : gapviz.cache.EmbeddingCache, optional
        Each model's embeddings are keyed by the pairs' content and the model's identity
        (a checkpoint by path, size and modification time): a rerun embeds nothing.
    precision : {"fp32", "auto", "bf16", "fp16"}
        fp32 by default: steps are compared with each other, and reduced precision would add
        its own small differences to theirs.
    progress : callable(done, total, stage), optional
        Called once per step before it is embedded.
    """
    from .embeddings import load_embeddings
    from .encode import embed_pairs

    out = []
    for index, item in enumerate(items):
        if progress is not None:
            progress(index, len(items), f"step {index + 1}/{len(items)}: {item.label}")
        started = time.perf_counter()
        if item.spec is None:
            embeddings, report = load_embeddings(item.embeddings_file)
            logits = _logits_from_meta(embeddings.meta, item.label)
            out.append(EmbeddedStep(item, embeddings, False, time.perf_counter() - started, logits,
                                    list(report.warnings)))
            continue
        if pairs is None:
            raise ValueError(f"{item.label} is a model: give the image-caption pairs to embed.")
        result = embed_pairs(list(pairs), item.spec, cache=cache, device=device,
                             precision=precision, meta={"series_step": index})
        logits = read_logit_params(item.spec, weights_dir=weights_dir)
        out.append(EmbeddedStep(item, result.embeddings, result.from_cache, result.seconds,
                                logits, [*result.notes, *result.warnings]))
    if progress is not None:
        progress(len(items), len(items), "embedded")
    return out


def _logits_from_meta(meta: dict[str, Any], label: str) -> LogitParams:
    """An embeddings file's recorded ``logit_scale`` (exp) / ``logit_bias``, if any."""
    scale = meta.get("logit_scale")
    if isinstance(scale, (int, float)) and scale > 0:
        bias = meta.get("logit_bias")
        return LogitParams(float(scale), math.log(scale),
                           float(bias) if isinstance(bias, (int, float)) else None,
                           f"recorded in the meta of {label} (not read from weights)")
    return LogitParams(None, None, None, f"{label} is an embeddings file: no weights to read")


# ---------------------------------------------------------------------------------------------
# the shared basis and the pairs that moved
# ---------------------------------------------------------------------------------------------
class SharedBasis:
    """A PCA of one mixed pool, applied unchanged to others (one frame for every step).

    Parameters
    ----------
    n_components : int
        Axes kept (2 for the pictures).

    Attributes
    ----------
    mean_ : ndarray of shape (d,)
    components_ : ndarray of shape (n_components, d)
    explained_variance_ratio_ : ndarray of shape (n_components,)
        Of the pool it was fitted on.
    """

    def __init__(self, n_components: int = 2) -> None:
        self.n_components = n_components

    def fit(self, X: np.ndarray, Y: np.ndarray) -> "SharedBasis":
        """Fit on the mixed pool ``[X; Y]`` of unit rows (X, Y of shape (N, d)).

        Signs are fixed (largest-magnitude loading positive) so that the same pool always gives
        the same picture.
        """
        from .measures import normalize_rows

        if self.n_components < 1:
            raise ValueError(f"n_components must be at least 1, got {self.n_components}.")
        Z = np.vstack([normalize_rows(X), normalize_rows(Y)]).astype(np.float64)
        self.mean_ = Z.mean(0)
        Zc = Z - self.mean_
        C = Zc.T @ Zc
        w, V = np.linalg.eigh(C)
        order = np.argsort(w)[::-1][:self.n_components]
        V = V[:, order]
        signs = np.sign(V[np.abs(V).argmax(0), np.arange(V.shape[1])])
        self.components_ = (V * np.where(signs == 0, 1.0, signs)).T
        total = float(np.trace(C))
        self.explained_variance_ratio_ = (np.clip(w[order], 0, None) / total if total > 0
                                          else np.zeros(len(order)))
        return self

    def transform(self, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates of the unit rows of X and of Y, each of shape (N, n_components)."""
        from .measures import normalize_rows

        if not hasattr(self, "components_"):
            raise ValueError("SharedBasis is not fitted; call fit first.")
        if X.shape[1] != self.mean_.shape[0]:
            raise ValueError(f"this basis is of dimension {self.mean_.shape[0]}, the embeddings "
                             f"have {X.shape[1]}.")
        return tuple((normalize_rows(A).astype(np.float64) - self.mean_) @ self.components_.T
                     for A in (X, Y))


def moved_most(steps: Sequence[PairedEmbeddings], *, top: int = TOP_MOVED) -> list[dict[str, Any]]:
    """The pairs whose embeddings moved most from the first step to the last.

    A pair's displacement is ``||x_last - x_first|| + ||y_last - y_first||`` on unit rows (both
    at most 2); it compares coordinates across checkpoints, so it reads a series of one model
    trained on (whose space drifts continuously), not unrelated models. Also its path length
    (the sum of every step's displacement) and its paired cosine first and last.

    Returns
    -------
    list of dict
        ``top`` rows, largest displacement first: ``row``, ``id``, ``caption``,
        ``displacement``, ``image_displacement``, ``text_displacement``, ``path_length``,
        ``paired_cos_first``, ``paired_cos_last``.
    """
    from .measures import normalize_rows

    if len(steps) < 2:
        raise ValueError("moved_most needs at least 2 steps.")
    dims = {s.dim for s in steps}
    if len(dims) > 1:
        raise ValueError(f"the steps have different dimensions {sorted(dims)}: displacements "
                         "compare one model's space across training.")
    Xs = [normalize_rows(s.image_embeddings).astype(np.float64) for s in steps]
    Ys = [normalize_rows(s.text_embeddings).astype(np.float64) for s in steps]
    dx = np.linalg.norm(Xs[-1] - Xs[0], axis=1)
    dy = np.linalg.norm(Ys[-1] - Ys[0], axis=1)
    path = sum(np.linalg.norm(Xs[t] - Xs[t - 1], axis=1) + np.linalg.norm(Ys[t] - Ys[t - 1], axis=1)
               for t in range(1, len(steps)))
    total = dx + dy
    first = steps[0]
    order = np.argsort(-total, kind="stable")[:top]
    return [{"row": int(i), "id": first.ids[i] if first.ids else str(i),
             "caption": (first.captions or [""] * first.n)[i],
             "displacement": float(total[i]), "image_displacement": float(dx[i]),
             "text_displacement": float(dy[i]), "path_length": float(path[i]),
             "paired_cos_first": float(np.dot(Xs[0][i], Ys[0][i])),
             "paired_cos_last": float(np.dot(Xs[-1][i], Ys[-1][i]))} for i in order]


# ---------------------------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------------------------
@dataclass
class TrajectoryStep:
    """Every number of one step of the series.

    Attributes
    ----------
    index : int
        Position in the series (0-based).
    label, kind : str
        As :class:`SeriesItem`'s.
    step : int or None
        The epoch of an ``epoch_N.pt`` file.
    model : str
        The model's label (architecture and weights).
    n_pairs, dim : int
    metrics : dict of str to float
        :func:`~gapviz.measures.measure_gap`'s measures plus ``RMG``.
    intervals : dict of str to (float, float)
        Bootstrap interval of each measure that has one (see :mod:`gapviz.intervals`).
    logits : LogitParams
    mean_paired_cos, mean_unpaired_cos : float
        Over the N pairs and over the N (N - 1) image-text combinations i != j.
    margin : float or None
        ``scale * (mean_paired_cos - mean_unpaired_cos)``, in logits; None without a scale.
    margin_interval : (float, float) or None
        From the same bootstrap resamples (the scale is a fixed property of the weights).
    matched_logit, unmatched_logit : float or None
        ``scale * mean cos + bias`` (bias 0 when the model has none).
    from_cache : bool
    seconds : float
        Embedding (or cache read) time.
    notes : list of str
    """

    index: int
    label: str
    kind: str
    step: int | None
    model: str
    n_pairs: int
    dim: int
    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    logits: LogitParams
    mean_paired_cos: float
    mean_unpaired_cos: float
    margin: float | None
    margin_interval: tuple[float, float] | None
    matched_logit: float | None
    unmatched_logit: float | None
    from_cache: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def provenance(self, n_resamples: int, level: float, seed: int) -> dict[str, Any]:
        """How each number of this step was obtained (JSON-serialisable)."""
        how = {"embeddings": "embeddings file" if self.kind == "embeddings" else
               ("read from the cache (same pairs and weights)" if self.from_cache
                else "embedded now, then cached"),
               "measures": f"measure_gap + RMG on all {self.n_pairs} pairs (exact, mixed pool of "
                           f"{2 * self.n_pairs} items)",
               "intervals": f"percentile bootstrap over pairs, {n_resamples} resamples, level "
                            f"{level}, seed {seed} (mixed-pool measures: queries resampled, pool "
                            "fixed)",
               "logits": self.logits.source,
               "margin": "exp(logit_scale) * (mean paired cos - mean cos over i != j)",
               "pairs_scored": self.n_pairs}
        return how

    def to_dict(self, n_resamples: int = N_RESAMPLES, level: float = LEVEL,
                seed: int = 0) -> dict[str, Any]:
        return {"index": self.index, "label": self.label, "kind": self.kind, "step": self.step,
                "model": self.model, "n_pairs": self.n_pairs, "dim": self.dim,
                "metrics": dict(self.metrics),
                "intervals": {k: list(v) for k, v in self.intervals.items()},
                **self.logits.to_dict(),
                "mean_paired_cos": self.mean_paired_cos, "mean_unpaired_cos": self.mean_unpaired_cos,
                "margin": self.margin,
                "margin_interval": list(self.margin_interval) if self.margin_interval else None,
                "matched_logit": self.matched_logit, "unmatched_logit": self.unmatched_logit,
                "from_cache": self.from_cache, "seconds": self.seconds, "notes": list(self.notes),
                "provenance": self.provenance(n_resamples, level, seed)}


@dataclass
class Trajectory:
    """A series of checkpoints measured on one dataset's pairs.

    Attributes
    ----------
    steps : list of TrajectoryStep
        In the series' order.
    ids, captions : list of str
        The pairs (rows of every step's embeddings, in this order).
    basis : SharedBasis or None
        Fitted on the last step's mixed pool; None when the steps' dimensions differ.
    images_xy, texts_xy : ndarray of shape (T, N, 2) or None
        Every step's images and texts in that basis: row i over t is pair i's trail.
    moved : list of dict
        :func:`moved_most`'s rows (empty when the dimensions differ).
    n_resamples, level, seed : the intervals' settings
    notes : list of str
    embeddings : list of PairedEmbeddings
        Each step's embeddings (not in :meth:`to_dict`).
    """

    steps: list[TrajectoryStep]
    ids: list[str]
    captions: list[str]
    basis: SharedBasis | None
    images_xy: np.ndarray | None
    texts_xy: np.ndarray | None
    moved: list[dict[str, Any]]
    n_resamples: int = N_RESAMPLES
    level: float = LEVEL
    seed: int = 0
    notes: list[str] = field(default_factory=list)
    embeddings: list[PairedEmbeddings] = field(default_factory=list, repr=False)
    #: The same series after a gap-closing method (:func:`close_series`), or None.
    closed: "Trajectory | None" = None
    #: The closing run of each step: method, parameters, protocol (its one-line summary).
    closed_runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return [s.label for s in self.steps]

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(estimate, low, high)`` of measure ``key`` over the steps, shape (T,) each (NaN
        where a step has no interval)."""
        est = np.array([s.metrics.get(key, np.nan) for s in self.steps], dtype=float)
        lo = np.array([s.intervals.get(key, (np.nan, np.nan))[0] for s in self.steps], dtype=float)
        hi = np.array([s.intervals.get(key, (np.nan, np.nan))[1] for s in self.steps], dtype=float)
        return est, lo, hi

    def rows(self, keys: Sequence[str] = HEADLINE) -> list[dict[str, Any]]:
        """One flat row per step (CSV, tables): label, step, logits, margin, and each measure
        with its interval (``KEY``, ``KEY_low``, ``KEY_high``)."""
        out = []
        for s in self.steps:
            row: dict[str, Any] = {"index": s.index, "label": s.label, "step": s.step,
                                   "n_pairs": s.n_pairs, "logit_scale": s.logits.scale,
                                   "logit_bias": s.logits.bias, "margin": s.margin,
                                   "margin_low": s.margin_interval[0] if s.margin_interval else None,
                                   "margin_high": s.margin_interval[1] if s.margin_interval else None}
            for k in keys:
                row[k] = s.metrics.get(k)
                lo, hi = s.intervals.get(k, (None, None))
                row[f"{k}_low"], row[f"{k}_high"] = lo, hi
            row["from_cache"] = s.from_cache
            row["logits_source"] = s.logits.source
            out.append(row)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Everything but the embeddings, JSON-serialisable (infinite ratios stay ``inf``:
        ``json.dumps`` writes them as ``Infinity``, as the other commands do)."""
        basis = None
        if self.basis is not None:
            basis = {"method": "PCA of the last step's mixed pool, applied to every step",
                     "fitted_on": self.steps[-1].label,
                     "explained_variance_ratio": self.basis.explained_variance_ratio_.tolist()}
        return {"n_steps": len(self.steps), "n_pairs": len(self.ids),
                "intervals": {"method": "percentile bootstrap over pairs",
                              "n_resamples": self.n_resamples, "level": self.level, "seed": self.seed},
                "margin_definition": "exp(logit_scale) * (mean_i cos(x_i, y_i) - mean_{i != j} "
                                     "cos(x_i, y_j)); matched/unmatched logit = scale * mean cos "
                                     "+ logit_bias",
                "steps": [s.to_dict(self.n_resamples, self.level, self.seed) for s in self.steps],
                "basis": basis,
                "trails": None if self.images_xy is None else {
                    "ids": list(self.ids), "images": self.images_xy.tolist(),
                    "texts": self.texts_xy.tolist()},
                "moved_most": list(self.moved), "notes": list(self.notes),
                "closed": None if self.closed is None else {
                    "runs": list(self.closed_runs), **self.closed.to_dict()}}


def _aligned(steps: Sequence[EmbeddedStep]) -> tuple[list[PairedEmbeddings], list[str]]:
    """Every step's embeddings with its rows in the first step's order of ids; pairs missing
    from any step (an image one run failed to read) are dropped from all, with a note."""
    notes: list[str] = []
    first = steps[0].embeddings
    ids = list(first.ids or [str(i) for i in range(first.n)])
    common = set(ids)
    for s in steps[1:]:
        common &= set(s.embeddings.ids or [str(i) for i in range(s.embeddings.n)])
    if len(common) < 2:
        raise ValueError("the steps share fewer than 2 pairs (their ids differ): a series is "
                         "measured on the same pairs.")
    order = [i for i in ids if i in common]
    dropped = max(len(s.embeddings.ids or []) for s in steps) - len(order)
    if dropped > 0:
        notes.append(f"{dropped} pair(s) not in every step were left out of all steps")
    out = []
    for s in steps:
        e = s.embeddings
        where = {pid: r for r, pid in enumerate(e.ids or [str(i) for i in range(e.n)])}
        rows = [where[pid] for pid in order]
        out.append(e if rows == list(range(e.n)) else e.subset(rows))
    return out, notes


def measure_trajectory(steps: Sequence[EmbeddedStep], *, n_resamples: int = N_RESAMPLES,
                       level: float = LEVEL, seed: int = 0, hubness: bool = False,
                       top_moved: int = TOP_MOVED) -> Trajectory:
    """Measure every step of an embedded series (see the module docstring).

    Parameters
    ----------
    steps : sequence of EmbeddedStep
        From :func:`embed_series`, at least 2.
    n_resamples, level, seed : bootstrap settings of the intervals (seeded: the same steps give
        the same intervals).
    hubness : bool
        Also hubness and its interval (one more pass over each step's pool).
    top_moved : int
        Rows of :func:`moved_most`.
    """
    from .anatomy import relative_modality_gap
    from .intervals import bootstrap_ci, pair_outcomes
    from .measures import measure_gap

    if len(steps) < 2:
        raise ValueError(f"a series needs at least 2 steps, got {len(steps)}.")
    embeddings, notes = _aligned(steps)
    out: list[TrajectoryStep] = []
    for index, (s, e) in enumerate(zip(steps, embeddings)):
        X, Y = e.image_embeddings, e.text_embeddings
        report = measure_gap(X, Y)
        metrics = dict(report.metrics)
        metrics["RMG"] = relative_modality_gap(X, Y)
        outcomes = pair_outcomes(X, Y, report=report, hubness=hubness)
        ci = bootstrap_ci(outcomes, n_resamples=n_resamples, level=level, seed=seed,
                          keep_samples=True)
        for k, v in ci.estimate.items():  # hubness, NDCG@10, cross-modal R@1: estimates too
            metrics.setdefault(k, v)
        n = e.n
        paired = 1.0 - metrics["paired_cosine_distance"]
        all_cos = 1.0 - metrics["all_cosine_distance"]
        unpaired = (n * all_cos - paired) / (n - 1)  # the N^2 mean without its N diagonal terms
        scale, bias = s.logits.scale, s.logits.bias
        margin = margin_ci = matched = unmatched = None
        if scale is not None:
            margin = scale * (paired - unpaired)
            p_b = 1.0 - ci.samples["paired_cosine_distance"]
            a_b = 1.0 - ci.samples["all_cosine_distance"]
            m_b = scale * (p_b - (n * a_b - p_b) / (n - 1))
            alpha = (1.0 - level) / 2.0
            margin_ci = (float(np.quantile(m_b, alpha)), float(np.quantile(m_b, 1.0 - alpha)))
            matched = scale * paired + (bias or 0.0)
            unmatched = scale * unpaired + (bias or 0.0)
        out.append(TrajectoryStep(
            index, s.item.label, s.item.kind, s.item.step, e.model or s.item.label, n, e.dim,
            metrics, dict(ci.ci), s.logits, paired, unpaired, margin, margin_ci, matched,
            unmatched, s.from_cache, s.seconds, list(s.notes)))
    basis = images_xy = texts_xy = None
    moved: list[dict[str, Any]] = []
    if len({e.dim for e in embeddings}) == 1:
        last = embeddings[-1]
        basis = SharedBasis(2).fit(last.image_embeddings, last.text_embeddings)
        xy = [basis.transform(e.image_embeddings, e.text_embeddings) for e in embeddings]
        images_xy = np.stack([a for a, _ in xy])
        texts_xy = np.stack([b for _, b in xy])
        moved = moved_most(embeddings, top=top_moved)
    else:
        notes.append("the steps' dimensions differ: no shared projection or displacements "
                     "(they compare one model's space across training)")
    first = embeddings[0]
    return Trajectory(out, list(first.ids or [str(i) for i in range(first.n)]),
                      list(first.captions or [""] * first.n), basis, images_xy, texts_xy, moved,
                      n_resamples, level, seed, notes, list(embeddings))


def close_series(result: Trajectory, method: str, params: dict[str, Any] | None = None, *,
                 protocol: str | None = None, hubness: bool = False) -> Trajectory:
    """``result`` with :attr:`Trajectory.closed` set: every step's pairs after ``method``.

    Each step is run through :class:`gapviz.runs.Runner` under the method's default protocol
    (or ``protocol``): transductive for methods that never read the pairing (spectral, OT,
    centering), held-out cross-fitting for those that do (Procrustes), so no step is scored
    on the pairs a pairing-reading method memorised. The closed series is measured as the raw
    one (intervals, its own shared basis on the last step's closed pool); it has no logit
    scale (the weights' temperature applies to the raw cosines).
    """
    from .runs import Runner, RunData, planned_spec

    closed_steps, runs = [], []
    runner = Runner()  # a fresh memory: a trajectory's fits are not kept past it
    for s, e in zip(result.steps, result.embeddings):
        spec, notes = planned_spec(method, params, e.n, e.dim, protocol=protocol)
        run = runner.run(spec, RunData.of(e, label=s.label))
        summary = run.provenance.summary()
        runs.append({"step": s.label, "method": method, "params": spec.param_dict,
                     "protocol": spec.protocol, "provenance": summary, "notes": list(notes)})
        item = SeriesItem(s.label, None, None, s.step)
        logits = LogitParams(None, None, None, f"{method}-closed embeddings: the weights' "
                                               "scale applies to raw cosines")
        closed = e.with_embeddings(np.asarray(run.images), np.asarray(run.texts),
                                   method=method, params=spec.param_dict)
        closed_steps.append(EmbeddedStep(item, closed, s.from_cache, 0.0, logits,
                                         [summary, *notes]))
    result.closed = measure_trajectory(closed_steps, n_resamples=result.n_resamples,
                                       level=result.level, seed=result.seed, hubness=hubness)
    for raw, step in zip(result.steps, result.closed.steps):
        step.kind, step.model = f"closed ({method})", raw.model
    result.closed_runs = runs
    return result


def trajectory(models: Sequence[str], pairs: Sequence[Any] | None = None, *,
               arch: str | None = None, cache: Any = None, device: str | None = None,
               precision: str = "fp32", n_resamples: int = N_RESAMPLES, level: float = LEVEL,
               seed: int = 0, weights_seed: int = 0, tokenizer: str | None = None,
               weights_dir: str | None = None, hubness: bool = False,
               method: str | None = None, method_params: dict[str, Any] | None = None,
               progress: Callable[[int, int, str], None] | None = None) -> Trajectory:
    """The gap over training, in one call: :func:`series_from_models`, :func:`embed_series`,
    :func:`measure_trajectory`, and with ``method`` (a :data:`gapviz.methods.METHODS` name)
    :func:`close_series` too.

    Examples
    --------
    >>> from gapviz.cache import EmbeddingCache                      # doctest: +SKIP
    >>> from gapviz.data import load_folder
    >>> pairs, _ = load_folder("assets/sample_pairs.zip")
    >>> t = trajectory(["run/epoch_1.pt", "run/epoch_2.pt"], pairs, arch="ViT-B-32",
    ...                cache=EmbeddingCache())
    >>> [s.logits.scale for s in t.steps]
    """
    items = series_from_models(models, arch=arch, seed=weights_seed, tokenizer=tokenizer)
    embedded = embed_series(items, pairs, cache=cache, device=device, precision=precision,
                            weights_dir=weights_dir, progress=progress)
    result = measure_trajectory(embedded, n_resamples=n_resamples, level=level, seed=seed,
                                hubness=hubness)
    if method is not None and method != "orig":
        close_series(result, method, method_params, hubness=hubness)
    return result
