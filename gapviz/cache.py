"""gapviz's disk cache: where it lives, and the embedding cache keyed by content.

Location: the ``cache_dir`` argument, else ``$GAPVIZ_CACHE_DIR``, else ``~/.cache/gapviz``.
Inside: ``downloads/`` (fetched files), ``extracted/`` (archives), ``embeddings/`` (this module).

An embedding entry is keyed by a hash of everything that determines the numbers: each pair's
id, caption and image *bytes* (not its path, so a moved folder still hits), the model's
identity (name, weights tag or checkpoint, random-weight seed, open_clip version) and the image
pipeline. Entries are ordinary ``.npz`` embeddings files written atomically (temporary name,
then rename), so an interrupted run never leaves a corrupt entry; one that is unreadable anyway
(a full disk, a manual edit) counts as a miss and is replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .data.defaults import cache_root
from .embeddings import EmbeddingsFileError, PairedEmbeddings, load_embeddings, save_embeddings

#: Bumped when the key's recipe changes, so old entries are not read with a new meaning.
KEY_VERSION = "gapviz-embed-cache-v1"


def file_digest(path: str | os.PathLike) -> str:
    """BLAKE2b of a file's bytes (hex, 40 characters)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=20)).hexdigest()


class EmbeddingCache:
    """Embeddings of pair sets on disk, keyed by content (see the module docstring).

    Parameters
    ----------
    cache_dir : path, optional
        Cache root; entries go to ``<root>/embeddings``.
    workers : int
        Threads hashing image files (hashing releases the GIL).
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None, workers: int = 4) -> None:
        self.cache_dir = cache_dir
        self.workers = workers

    @property
    def folder(self) -> Path:
        return cache_root(self.cache_dir) / "embeddings"

    def key(self, pairs: Sequence[Any], model_identity: Mapping[str, Any]) -> str:
        """Content key of embedding ``pairs`` (objects with ``id``, ``caption``, ``image_path``)
        with the model described by ``model_identity`` (JSON-serialisable)."""
        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            digests = list(pool.map(file_digest, [p.image_path for p in pairs]))
        h = hashlib.blake2b(digest_size=20)
        h.update(KEY_VERSION.encode())
        h.update(json.dumps(dict(model_identity), sort_keys=True, default=str).encode())
        for pair, digest in zip(pairs, digests):
            # Unit separators keep ("ab", "c") and ("a", "bc") apart.
            h.update(f"\x1e{pair.id}\x1f{pair.caption}\x1f{digest}".encode("utf-8", "surrogatepass"))
        return h.hexdigest()

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.npz"

    def load(self, key: str) -> PairedEmbeddings | None:
        """The cached embeddings for ``key``, or None (a missing or unreadable entry)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            embeddings, _ = load_embeddings(path)
        except (EmbeddingsFileError, OSError):
            path.unlink(missing_ok=True)
            return None
        return embeddings

    def save(self, key: str, embeddings: PairedEmbeddings) -> Path:
        """Store ``embeddings`` under ``key`` (atomic; replaces an existing entry)."""
        return save_embeddings(embeddings, self.path(key), overwrite=True)

    def clear(self) -> int:
        """Delete every embedding entry; returns how many were removed."""
        removed = 0
        if self.folder.is_dir():
            for entry in self.folder.glob("*.npz"):
                entry.unlink(missing_ok=True)
                removed += 1
        return removed
