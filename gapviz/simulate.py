"""The built-in demo: simulated image-text embeddings with a modality gap of several causes.

Nothing here is a real model's output. Each profile *imitates* the kind of gap that a real
model shows (paper Table 2 contrasts) and every set it makes is labelled
``meta["simulated"] = True`` with the model it imitates.

Generative model (row i, modality m in {image, text}; all vectors in R^d, then L2-normalised)::

    e_i^m = mu_m                      # modality centroid: the shift (Liang et al. 2022) and,
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
from .embeddings import PairedEmbeddings

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


@dataclass(frozen=True)
class Profile:
    """A simulated model: generator parameters and the real model it imitates."""

    name: str
    imitates: str
    description: str
    params: GapParams


#: Simulated model profiles over the same pairs (shaped after the paper's Table 2 contrasts).
PROFILES: dict[str, Profile] = {
    "clip": Profile("sim-CLIP", "OpenAI CLIP ViT-L/14",
                    "strong gap: narrow cones, far-apart centroids, ITR in the hundreds",
                    GapParams(shift_spread_image=0.6)),
    "siglip": Profile("sim-SigLIP", "SigLIP ViT-B/16",
                      "milder gap: smaller shift and style structure",
                      GapParams(shift=1.0, style=0.45, anisotropy=0.3)),
    "llm2clip": Profile("sim-LLM2CLIP", "LLM2CLIP ViT-L/14",
                        "weaker gap and better raw recall",
                        GapParams(shift=0.8, style=0.35, semantic=1.6, noise=0.6, mispair=0.03)),
}


def simulate_pairs(n_pairs: int = DEMO_N_PAIRS, dim: int = DEMO_DIM, *, profile: str = "clip",
                   seed: int = DEMO_SEED, n_clusters: int = 20, params: GapParams | None = None,
                   **overrides: float) -> PairedEmbeddings:
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
        Seed of everything.
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

    # Shared across profiles: the pairs' meaning, clusters, captions.
    shared = np.random.default_rng([seed, 0])
    cluster = shared.integers(0, n_clusters, n_pairs)
    centres = _unit(shared.normal(size=(n_clusters, dim)))
    detail = _unit(shared.normal(size=(n_pairs, dim)))
    meaning = _unit(centres[cluster] + p.detail * detail)
    scene = shared.integers(0, len(_SCENES), n_pairs)
    template = shared.integers(0, len(_TEMPLATES), n_pairs)
    wrong = shared.random(n_pairs) < p.mispair
    text_meaning = meaning.copy()
    text_meaning[wrong] = meaning[shared.integers(0, n_pairs, int(wrong.sum()))]

    # Profile-specific: how this simulated model embeds each modality.
    rng = np.random.default_rng([seed, 1 + sorted(PROFILES).index(profile)])
    basis = _unit(rng.normal(size=(2, dim)))
    mu = {"image": p.shift * basis[0], "text": p.shift * (basis[1] - (basis[1] @ basis[0]) * basis[0])}
    mu["text"] = p.shift * _unit(mu["text"][None])[0]
    out = {}
    for m, sem in (("image", meaning), ("text", text_meaning)):
        styles = p.style * _unit(rng.normal(size=(p.n_styles, dim)))
        g = template if m == "text" else rng.integers(0, p.n_styles, n_pairs)
        aniso_dirs = _unit(rng.normal(size=(p.n_aniso_dims, dim)))
        scales = p.anisotropy * rng.uniform(0.5, 1.5, p.n_aniso_dims)
        z = rng.normal(size=(n_pairs, p.n_aniso_dims)) * scales
        eps = rng.normal(size=(n_pairs, dim)) / np.sqrt(dim)
        spread = p.shift_spread_image if m == "image" else p.shift_spread_text
        shift = np.clip(1.0 + spread * rng.normal(size=(n_pairs, 1)), 0.0, None)
        out[m] = (shift * mu[m] + p.semantic * sem + styles[g % p.n_styles] + z @ aniso_dirs
                  + p.noise * eps)

    names = [CONCEPTS[k] if k < len(CONCEPTS) else f"concept {k}" for k in range(n_clusters)]
    captions = [_TEMPLATES[t].format(c=names[k], s=_SCENES[s])
                for k, s, t in zip(cluster, scene, template)]
    meta = {"simulated": True, "profile": profile, "imitates": prof.imitates,
            "description": prof.description, "seed": seed, "params": asdict(p),
            "cluster": cluster.tolist(), "cluster_names": names,
            "mispaired": np.flatnonzero(wrong).tolist()}
    return PairedEmbeddings(_unit(out["image"]), _unit(out["text"]),
                            ids=[f"sim-{i:05d}" for i in range(n_pairs)], captions=captions,
                            model=f"{prof.name} (simulated; imitates {prof.imitates})", meta=meta)


def demo_models(n_pairs: int = DEMO_N_PAIRS, dim: int = DEMO_DIM, seed: int = DEMO_SEED) -> dict[str, PairedEmbeddings]:
    """The same pairs under every simulated profile, keyed by profile name."""
    return {key: simulate_pairs(n_pairs, dim, profile=key, seed=seed) for key in PROFILES}


def _unit(A: np.ndarray) -> np.ndarray:
    from .measures import unit_rows

    return unit_rows(A)
