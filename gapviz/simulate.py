"""The built-in demo: simulated image-text embeddings with a modality gap of several causes.

Nothing here is a real model's output. Each profile *imitates* the kind of gap that a real
model shows and every set it makes is labelled ``meta["simulated"] = True`` with the model it
imitates and what its statistics were matched to (:class:`Reference`). The ``clip`` profile is
matched to five statistics of real CLIP ViT-B/16 features on COCO (mean paired cosine 0.31,
mean image-text cosine over all pairs 0.16, image cone 0.53, text cone 0.52, centroid gap 0.85):
with unrelated images and texts at cosine 0.16, not 0, a graph whose weights are the cosines
has the positive degrees it has on real data. The other profiles keep the paper's Table 2
contrasts (a milder gap; a weaker gap with better raw recall); no published figures were found
for them, and their statistics are said to be unmatched wherever shown.

Generative model (row i, modality m in {image, text}; all vectors in R^d, then L2-normalised)::

    e_i^m = c                         # a direction shared by both modalities: every
                                      #   embedding of the model lies in one wide cone, so
                                      #   even unrelated images and texts have cosine > 0
          + mu_m                      # modality centroid: the shift (Liang et al. 2022) and,
                                      #   being large, the narrow cone of each modality
          + semantic * s_i            # shared meaning: cluster centre + the pair's own detail
          + style_m[g_i^m]            # modality-specific structure (photo styles / caption
                                      #   templates): makes same-modality items look alike
          + A_m z_i^m                 # anisotropic modality-specific noise: a few dimensions
                                      #   carry large, modality-dependent variance
          + noise * eps_i^m           # isotropic noise

and a fraction ``mispair`` of the texts describe another pair's meaning (noisy web pairs).
Mean-centering removes ``mu_m`` only; the style and anisotropy terms are what keep centering
helpful but not sufficient, so the methods can be told apart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from .config import DEMO_DIM, DEMO_N_PAIRS, DEMO_SEED
from .embeddings import PairedEmbeddings, record_simulation

#: Concepts of the semantic clusters; captions name them.
CONCEPTS = (
    "dog", "cat", "horse", "bird", "elephant", "giraffe", "zebra", "bear", "train", "bus",
    "airplane", "boat", "bicycle", "motorcycle", "pizza", "cake", "banana", "sandwich",
    "surfboard", "skateboard", "kite", "umbrella", "clock", "laptop", "teddy bear", "vase",
    "fire hydrant", "stop sign", "bench", "toilet",
)
_SCENES = ("on a street", "in a park", "near the water", "in a kitchen", "on a table",
           "in a field", "at night", "in the snow", "indoors", "next to a building")
_TEMPLATES = ("a photo of a {c} {s}", "a {c} {s}", "there is a {c} {s}",
              "a close-up of a {c} {s}", "an image showing a {c} {s}", "a blurry {c} {s}")


@dataclass(frozen=True)
class GapParams:
    """Knobs of the generator; each is one cause of the gap (see module docstring).

    Attributes
    ----------
    shift : float
        Norm of each modality's centroid ``mu_m`` (centroids are orthogonal between modalities).
    common : float
        Norm of the direction ``c`` both modalities share (orthogonal to both ``mu_m``): it sets
        the mean cosine of an unrelated image and text (0 without it).
    shift_spread_image, shift_spread_text : float
        Per-item relative spread of the shift (an item with a small shift sits near the other
        modality); unequal spreads make the bias asymmetric (paper: ITR 416 vs TIR 11).
    semantic : float
        Weight of the shared meaning.
    detail : float
        Within-cluster spread of the meaning relative to the cluster centre (pair identity).
    style : float
        Norm of the modality-specific style vectors.
    n_styles : int
        Number of styles (image) / templates (text).
    anisotropy : float
        Standard deviation along the few high-variance modality-specific dimensions.
    n_aniso_dims : int
        How many such dimensions per modality.
    noise : float
        Isotropic noise norm.
    mispair : float
        Fraction of texts that describe another pair.
    """

    shift: float = 1.3
    common: float = 0.0
    shift_spread_image: float = 0.3
    shift_spread_text: float = 0.6
    semantic: float = 1.3
    detail: float = 0.9
    style: float = 0.55
    n_styles: int = 6
    anisotropy: float = 0.35
    n_aniso_dims: int = 8
    noise: float = 0.75
    mispair: float = 0.05


#: The statistics a profile is matched to, in the order they are shown: key, label. All are
#: on L2-normalised rows; "all pairs" means every image against every text (N x N).
STATISTICS = (
    ("paired_cosine", "mean paired cosine"),
    ("all_cosine", "mean image-text cosine, all N x N pairs"),
    ("image_cone", "image cone: mean cosine of two different images"),
    ("text_cone", "text cone: mean cosine of two different texts"),
    ("centroid_gap", "centroid gap ||mean(X) - mean(Y)||"),
)


@dataclass(frozen=True)
class Reference:
    """What a profile's :data:`STATISTICS` were matched to.

    ``figures`` are the target values; ``measured`` says whether they were measured on a real
    model's embeddings (``source`` says where) or are a guess (``source`` says why).
    """

    model: str
    source: str
    figures: dict[str, float]
    measured: bool

    @property
    def sentence(self) -> str:
        """"simulated; statistics matched to ..." for the pages and reports."""
        if self.measured:
            return f"simulated; statistics matched to {self.model} ({self.source})"
        return f"simulated; statistics not matched to {self.model}: {self.source}"


@dataclass(frozen=True)
class Profile:
    """A simulated model: generator parameters and the real model it imitates."""

    name: str
    imitates: str
    description: str
    params: GapParams
    reference: Reference


def _unmatched(model: str, why: str) -> Reference:
    """A profile whose statistics were not matched to a real model (none published)."""
    return Reference(model, f"no published figures found: {why}", {}, measured=False)


#: Parameters every profile shares; each profile sets how strong each cause is.
_SHARED = dict(detail=2.0, shift_spread_image=0.47, shift_spread_text=0.63)

#: Simulated model profiles over the same pairs. ``clip`` is matched to statistics of real CLIP
#: features; the other two keep the paper's Table 2 contrasts (a milder gap, then a weaker gap
#: with better raw recall) and their statistics are guesses, said as such wherever shown.
PROFILES: dict[str, Profile] = {
    "clip": Profile(
        "sim-CLIP", "OpenAI CLIP ViT-B/16",
        "strong gap: narrow cones, far-apart centroids, ITR in the hundreds",
        GapParams(shift=1.67, common=1.06, semantic=1.04, style=0.67, anisotropy=0.28,
                  noise=0.7, **_SHARED),
        Reference("OpenAI CLIP ViT-B/16",
                  "public features of 500 COCO image-caption pairs",
                  {"paired_cosine": 0.31, "all_cosine": 0.16, "image_cone": 0.53,
                   "text_cone": 0.52, "centroid_gap": 0.85}, measured=True)),
    "siglip": Profile(
        "sim-SigLIP", "SigLIP ViT-B/16",
        "milder gap: smaller shift and style structure",
        GapParams(shift=1.25, common=0.9, semantic=1.1, style=0.55, anisotropy=0.25,
                  noise=0.75, **_SHARED),
        _unmatched("SigLIP ViT-B/16", "a milder gap than sim-CLIP's, by design")),
    "llm2clip": Profile(
        "sim-LLM2CLIP", "LLM2CLIP ViT-L/14",
        "weaker gap and better raw recall",
        GapParams(shift=1.15, common=0.9, semantic=1.4, style=0.45, anisotropy=0.25,
                  noise=0.6, mispair=0.03, **_SHARED),
        _unmatched("LLM2CLIP ViT-L/14", "a weaker gap than sim-SigLIP's, by design")),
}


def profile_statistics(X: np.ndarray, Y: np.ndarray) -> dict[str, float]:
    """:data:`STATISTICS` of paired embeddings (rows L2-normalised here).

    Exact, in O(N d): the mean cosine over all N x N image-text pairs is the dot product of
    the two mean unit rows; a cone is the mean over the N (N - 1) ordered pairs of different
    rows, ``(||sum||^2 - N) / (N (N - 1))``.
    """
    X = _unit(X).astype(np.float64)
    Y = _unit(Y).astype(np.float64)
    n = X.shape[0]
    if n < 2:
        raise ValueError(f"the statistics need at least 2 pairs, got {n}.")
    sx, sy = X.sum(0), Y.sum(0)
    return {"paired_cosine": float(np.einsum("ij,ij->i", X, Y).mean()),
            "all_cosine": float(sx @ sy / n ** 2),
            "image_cone": float((sx @ sx - n) / (n * (n - 1))),
            "text_cone": float((sy @ sy - n) / (n * (n - 1))),
            "centroid_gap": float(np.linalg.norm((sx - sy) / n))}


def statistics_rows(models: dict[str, PairedEmbeddings]) -> list[dict[str, object]]:
    """One row per :data:`STATISTICS` entry: each simulated set's measured value (column = the
    profile's name) and, beside each measured profile, its real model's figure ("<model>
    (real)"); for the page and reports that show the demo beside what it imitates."""
    measured = {key: profile_statistics(p.image_embeddings, p.text_embeddings)
                for key, p in models.items()}
    rows = []
    for stat, label in STATISTICS:
        row: dict[str, object] = {"statistic": label}
        for key in models:
            prof = PROFILES.get(models[key].meta.get("profile", key))
            row[prof.name if prof else key] = round(measured[key][stat], 3)
            if prof is not None and prof.reference.measured and stat in prof.reference.figures:
                row[f"{prof.reference.model} (real)"] = prof.reference.figures[stat]
        rows.append(row)
    return rows


def simulate_pairs(n_pairs: int = DEMO_N_PAIRS, dim: int = DEMO_DIM, *, profile: str = "clip",
                   seed: int = DEMO_SEED, pair_seed: int | None = None, n_clusters: int = 20,
                   params: GapParams | None = None, **overrides: float) -> PairedEmbeddings:
    """Deterministic simulated pairs with a known, multi-cause modality gap.

    Parameters
    ----------
    n_pairs : int
        N, number of pairs.
    dim : int
        d, embedding dimension.
    profile : str
        Key of :data:`PROFILES`; the same ``seed`` gives the same pairs (meaning, captions,
        ids) under every profile, only the modality-specific parts differ.
    seed : int
        Seed of everything: the concepts, the simulated model (its centroids, styles and
        anisotropic directions, drawn independently of N) and, unless ``pair_seed`` is given,
        the pairs.
    pair_seed : int, optional
        Draw other pairs from the same concepts and the same simulated model: a set to fit a
        method on, disjoint in its draws from the one it is scored on (the paper fits OT on
        5,000 pairs other than the 2,500 it scores). Ids then carry the pair seed.
    n_clusters : int
        Number of semantic clusters (concepts), at most ``len(CONCEPTS)`` names then numbered.
    params : GapParams, optional
        Replaces the profile's parameters.
    **overrides
        Individual :class:`GapParams` fields, e.g. ``shift=0.5``.

    Returns
    -------
    PairedEmbeddings
        ``model`` is the profile name; ``meta`` has ``simulated=True``, ``imitates``, the
        parameters, and ``cluster`` (per-pair cluster index).
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile '{profile}'; choose one of {sorted(PROFILES)}.")
    if n_pairs < 2 or dim < 2:
        raise ValueError(f"need n_pairs >= 2 and dim >= 2, got n_pairs={n_pairs}, dim={dim}.")
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be >= 1, got {n_clusters}.")
    prof = PROFILES[profile]
    p = replace(params or prof.params, **overrides)

    # The world and the model are drawn first, from seeds that do not depend on N, so every
    # set drawn with the same seed (any N, any pair_seed) is the same simulated model.
    world = np.random.default_rng([seed, 0])
    centres = _unit(world.normal(size=(n_clusters, dim)))
    model = np.random.default_rng([seed, 1 + sorted(PROFILES).index(profile)])
    basis = np.linalg.qr(model.normal(size=(dim, 3)))[0].T  # three orthonormal directions
    mu = {"image": p.shift * basis[0], "text": p.shift * basis[1]}
    common = p.common * basis[2]
    styles = {m: p.style * _unit(model.normal(size=(p.n_styles, dim))) for m in ("image", "text")}
    aniso_dirs = {m: _unit(model.normal(size=(p.n_aniso_dims, dim))) for m in ("image", "text")}
    scales = {m: p.anisotropy * model.uniform(0.5, 1.5, p.n_aniso_dims) for m in ("image", "text")}

    # The pairs: their meaning, clusters and captions (the same under every profile) ...
    draw = np.random.default_rng([seed, 0, 0 if pair_seed is None else 1 + pair_seed])
    cluster = draw.integers(0, n_clusters, n_pairs)
    detail = _unit(draw.normal(size=(n_pairs, dim)))
    meaning = _unit(centres[cluster] + p.detail * detail)
    scene = draw.integers(0, len(_SCENES), n_pairs)
    template = draw.integers(0, len(_TEMPLATES), n_pairs)
    wrong = draw.random(n_pairs) < p.mispair
    text_meaning = meaning.copy()
    text_meaning[wrong] = meaning[draw.integers(0, n_pairs, int(wrong.sum()))]

    # ... and how this simulated model embeds each of them.
    items = np.random.default_rng([seed, 1 + sorted(PROFILES).index(profile),
                                   0 if pair_seed is None else 1 + pair_seed])
    out = {}
    for m, sem in (("image", meaning), ("text", text_meaning)):
        g = template if m == "text" else items.integers(0, p.n_styles, n_pairs)
        z = items.normal(size=(n_pairs, p.n_aniso_dims)) * scales[m]
        eps = items.normal(size=(n_pairs, dim)) / np.sqrt(dim)
        spread = p.shift_spread_image if m == "image" else p.shift_spread_text
        shift = np.clip(1.0 + spread * items.normal(size=(n_pairs, 1)), 0.0, None)
        out[m] = (common + shift * mu[m] + p.semantic * sem + styles[m][g % p.n_styles]
                  + z @ aniso_dirs[m] + p.noise * eps)

    names = [CONCEPTS[k] if k < len(CONCEPTS) else f"concept {k}" for k in range(n_clusters)]
    captions = [_TEMPLATES[t].format(c=names[k], s=_SCENES[s])
                for k, s, t in zip(cluster, scene, template)]
    meta = {"simulated": True, "profile": profile, "imitates": prof.imitates,
            "description": prof.description, "reference": prof.reference.sentence, "seed": seed,
            "pair_seed": pair_seed, "params": asdict(p),
            "cluster": cluster.tolist(), "cluster_names": names,
            "mispaired": np.flatnonzero(wrong).tolist()}
    pairs = PairedEmbeddings(_unit(out["image"]), _unit(out["text"]),
                             ids=[f"sim-{i:05d}" if pair_seed is None else f"sim-p{pair_seed}-{i:05d}"
                                  for i in range(n_pairs)], captions=captions,
                             model=f"{prof.name} (simulated; imitates {prof.imitates})", meta=meta)
    # generated here: its "simulated" label needs no second draw to be believed
    record_simulation(pairs, {"profile": profile, "seed": seed, "pair_seed": pair_seed,
                              "params": p, "n_clusters": n_clusters})
    return pairs


def demo_models(n_pairs: int = DEMO_N_PAIRS, dim: int = DEMO_DIM, seed: int = DEMO_SEED) -> dict[str, PairedEmbeddings]:
    """The same pairs under every simulated profile, keyed by profile name."""
    return {key: simulate_pairs(n_pairs, dim, profile=key, seed=seed) for key in PROFILES}


def _unit(A: np.ndarray) -> np.ndarray:
    from .measures import unit_rows

    return unit_rows(A)
