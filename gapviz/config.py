"""Constants and defaults shared by the library, the CLI and the app (one place for them)."""

from __future__ import annotations

#: K values of mixed-pool recall reported everywhere (paper Table 5).
RECALL_KS: tuple[int, ...] = (5, 10, 20)

#: Default number of pairs and dimension of the simulated demo (paper: N = 2500).
DEMO_N_PAIRS = 2500
DEMO_DIM = 512
DEMO_SEED = 0

#: Similarity blocks are cut so that one block holds at most this many float32 values
#: (16M values = 64 MiB); this bounds the measures' memory whatever N is.
BLOCK_VALUES = 16 * 1024 * 1024

#: Spectral defaults (paper: k = 20, 60, 120).
SPECTRAL_K = 60
SPECTRAL_MAX_K = 200

#: Keys of the embeddings file format (.npz); the parquet columns are listed in embeddings.py.
NPZ_REQUIRED_KEYS = ("image_embeddings", "text_embeddings")
NPZ_OPTIONAL_KEYS = ("ids", "captions", "image_paths", "labels", "groups", "model", "meta")
