"""Corrected similarity scores: the per-item terms a score correction adds to the cosine.

A score correction (per-modality standardisation, CSLS, inverted softmax / QB-Norm, DBNorm,
NNN; :mod:`gapviz.methods.scores`) changes how a query scores its candidates, not the
embeddings. Every one of them gapviz offers scores query ``q`` (modality ``mq``, 0 = image,
1 = text) against candidate ``c`` (modality ``mc``) as

    score(q, c) = a(q) * (cos(q, c) + lam(q) * w(c)) + b(q)

with the query's terms ``a > 0``, ``lam``, ``b`` and the candidate's offset ``w`` all depending
on the block ``(mq, mc)``: an image query facing texts has other terms than one facing images.
For a fixed query and block the score is an increasing map of the *shifted cosine*
``cos + lam(q) w(c)``, so ranks within a block compare shifted cosines (what the similarity
pass sweeps: one extra multiply-add per entry), and ranks across blocks (the mixed pool)
compare the corrected scores, by mapping each threshold into the other block's shifted scale.

Ties follow the raw measures' rule, in the shifted scale: two shifted cosines within
``TIE_TOL_FLOAT64`` (1e-12) are equal, and a candidate that equals the target is ranked ahead
of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Modality indices of the blocks: 0 = images, 1 = texts.
IMAGES, TEXTS = 0, 1


@dataclass(frozen=True)
class ScoreTerms:
    """The terms of a corrected score for N scored pairs (module docstring).

    Attributes
    ----------
    scale, lam, bias : ndarray of shape (2, 2, N), float64
        ``[mq, mc, i]``: the terms of item i of modality ``mq`` as a query facing candidates of
        modality ``mc``; ``scale > 0``.
    offset : ndarray of shape (2, 2, N), float64
        ``[mq, mc, j]``: the offset ``w`` of item j of modality ``mc`` as a candidate of a
        query of modality ``mq``.
    name : str
        The correction, for reports ("CSLS, k = 10").
    """

    scale: np.ndarray
    lam: np.ndarray
    bias: np.ndarray
    offset: np.ndarray
    name: str = ""

    def __post_init__(self) -> None:
        shapes = {a.shape for a in (self.scale, self.lam, self.bias, self.offset)}
        if len(shapes) != 1 or len(next(iter(shapes))) != 3 or next(iter(shapes))[:2] != (2, 2):
            raise ValueError(f"score terms must all have shape (2, 2, N), got {sorted(shapes)}.")
        for name in ("scale", "lam", "bias", "offset"):
            value = np.ascontiguousarray(getattr(self, name), dtype=np.float64)
            value.flags.writeable = False
            if not np.isfinite(value).all():
                raise ValueError(f"score terms: {name} has NaN or infinite values.")
            object.__setattr__(self, name, value)
        if not (self.scale > 0).all():
            raise ValueError("score terms: every scale must be positive (a score must grow with "
                             "the cosine).")

    @property
    def n(self) -> int:
        return int(self.scale.shape[2])

    @classmethod
    def stack(cls, parts: list[tuple[np.ndarray, "ScoreTerms"]], n: int) -> "ScoreTerms":
        """Terms of N pairs assembled from ``(rows, terms of those rows)`` parts (held-out
        folds, each scored with its own fit's banks)."""
        arrays = {k: np.empty((2, 2, n)) for k in ("scale", "lam", "bias", "offset")}
        covered = np.zeros(n, bool)
        for rows, terms in parts:
            for key, out in arrays.items():
                out[:, :, rows] = getattr(terms, key)
            covered[rows] = True
        if not covered.all():
            raise ValueError("the parts do not cover every scored pair.")
        return cls(**arrays, name=parts[0][1].name if parts else "")

    def subset(self, rows: np.ndarray) -> "ScoreTerms":
        """The terms of pairs ``rows`` only (a subsample of the scored pairs)."""
        return ScoreTerms(self.scale[:, :, rows], self.lam[:, :, rows], self.bias[:, :, rows],
                          self.offset[:, :, rows], self.name)

    def score(self, mq: int, mc: int, cos: np.ndarray, queries: np.ndarray | slice = slice(None),
              candidates: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Corrected scores from cosines ``cos`` of shape (len(queries), len(candidates)),
        float64 (the dense reference of the pass; small blocks only)."""
        a = self.scale[mq, mc][queries][:, None]
        lam = self.lam[mq, mc][queries][:, None]
        b = self.bias[mq, mc][queries][:, None]
        return a * (np.asarray(cos, np.float64) + lam * self.offset[mq, mc][candidates][None, :]) + b

    def to_shifted(self, mq: int, mc: int, value: np.ndarray) -> np.ndarray:
        """A corrected score of each query (an array over the N queries of modality ``mq``)
        in block ``(mq, mc)``'s shifted-cosine scale: ``(value - b) / a``."""
        return (value - self.bias[mq, mc]) / self.scale[mq, mc]

    def from_shifted(self, mq: int, mc: int, shifted: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`to_shifted`: ``a * shifted + b``."""
        return self.scale[mq, mc] * shifted + self.bias[mq, mc]
