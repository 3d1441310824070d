"""The mixed pool as a table for a large-pool viewer (Apple's Embedding Atlas).

Plotly's WebGL scatter stays smooth up to about :data:`PLOTLY_MAX_POINTS` points. Past that
the app shows the pool with Embedding Atlas, which draws from a table: one row per point
with its 2-D coordinates, a text, and its precomputed neighbours. Here each point's only
neighbour is its *partner* (the image's caption, the caption's image), so the atlas's
"nearest neighbours" of a clicked point is its pair.

The table goes to the browser in one Streamlit message; :data:`ATLAS_MAX_POINTS` is the
largest pool the browser test opens whole (a generated 200,000-point pool: every row reaches
the atlas, and a chart filter lists the right pairs). Larger pools are shown as a seeded
sample of whole pairs (both points of a sampled pair are kept, so every shown point still has
its partner), and the sample is recorded; the browser test opens a 400,000-point pool so
sampled and checks the pairs a filter lists against the seeded sample. The atlas's point view
(a rectangle, a lasso, a click on a point) draws with WebGPU and 16-bit floats only, which
the test's headless browser lacks: those selections have not been run.

Nothing here imports Streamlit or the atlas package; :func:`rows_for_predicate` evaluates
the atlas's selection (an SQL predicate) with DuckDB, which the atlas package installs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..projection import Projection

#: Points (images + texts) Plotly's WebGL scatter draws smoothly; above, the atlas (or a
#: sample of this many points, when the atlas is not installed).
PLOTLY_MAX_POINTS = 100_000
#: Points sent to the atlas at most (the browser test opens 200,000 points whole and lists the
#: pairs of a chart filter); larger pools are sampled by pairs down to this.
ATLAS_MAX_POINTS = 200_000
#: Seed of every sample drawn here.
SAMPLE_SEED = 0
#: Characters of a caption kept in the atlas's text column (the table is one message).
ATLAS_TEXT_CHARS = 200
#: Bytes of the table (Arrow) sent at most: half of Streamlit's default message limit
#: (``server.maxMessageSize``, 200 MB); a pool of long captions is sampled down to fit.
ATLAS_MAX_BYTES = 100_000_000
#: The row id column the atlas's Streamlit component uses (it adds one if the table lacks it).
ROW_ID = "__row_index__"
#: Column names the atlas is told about.
X, Y, TEXT, NEIGHBORS = "x", "y", "text", "neighbors"
#: How to install the atlas (an extra of gapviz).
ATLAS_INSTALL = 'pip install "gapviz[atlas]"'


@dataclass(frozen=True)
class PoolSample:
    """Which pairs of a pool are shown.

    Attributes
    ----------
    rows : ndarray of shape (m,)
        Sorted pair rows shown (all of ``range(n_pairs)`` when nothing was sampled).
    n_pairs : int
        N, pairs in the whole pool.
    seed : int or None
        Seed of the sample; None when every pair is shown.
    """

    rows: np.ndarray
    n_pairs: int
    seed: int | None

    @property
    def sampled(self) -> bool:
        return self.seed is not None

    @property
    def shown_points(self) -> int:
        return 2 * int(self.rows.size)

    @property
    def total_points(self) -> int:
        return 2 * self.n_pairs

    def describe(self) -> str:
        """One line for the page: how many points are shown, of how many, and how chosen."""
        if not self.sampled:
            return f"All {self.total_points:,} points shown."
        return (f"Showing {self.shown_points:,} of {self.total_points:,} points: a random "
                f"sample of {self.rows.size:,} of {self.n_pairs:,} pairs (seed {self.seed}), "
                "both points of each.")


def sample_pairs(n_pairs: int, max_points: int, seed: int = SAMPLE_SEED) -> PoolSample:
    """A seeded sample of whole pairs with at most ``max_points`` points (2 per pair).

    Every pair is kept (``seed`` None) when ``2 * n_pairs <= max_points``.
    """
    if n_pairs < 0:
        raise ValueError(f"n_pairs must be >= 0, got {n_pairs}.")
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2 (one pair), got {max_points}.")
    keep = max_points // 2
    if n_pairs <= keep:
        return PoolSample(np.arange(n_pairs), n_pairs, None)
    rows = np.sort(np.random.default_rng(seed).choice(n_pairs, keep, replace=False))
    return PoolSample(rows, n_pairs, seed)


def subset_projection(proj: Projection, rows: np.ndarray) -> Projection:
    """The projection of the pairs ``rows`` only (row i of the result is pair ``rows[i]``)."""
    return Projection(proj.images[rows], proj.texts[rows], proj.method, proj.axis_titles,
                      {**proj.info, "rows": "subset"})


@dataclass(frozen=True)
class AtlasTable:
    """The atlas's table of a (sampled) pool and how its rows map back to pairs.

    ``frame`` has 2m rows: the m images of the shown pairs, then their m texts. Columns:
    ``__row_index__`` (0 .. 2m-1, the atlas's row id), ``x``, ``y`` (float32 coordinates),
    ``text`` (the caption, or for an image "image · id"), ``modality``
    ("image" / "text"), ``pair`` (the pair's row in the whole pool), ``pair_id`` and
    ``neighbors`` (``{"ids": [partner's row id], "distances": [2-D distance to it]}``).
    """

    frame: pd.DataFrame
    sample: PoolSample

    def pairs_of(self, row_ids: Sequence[int] | np.ndarray) -> list[tuple[int, str]]:
        """``(pair row, modality)`` of atlas rows, in the order given, duplicates dropped."""
        ids = np.asarray(row_ids, dtype=np.int64).ravel()
        m = int(self.sample.rows.size)
        ids = ids[(ids >= 0) & (ids < 2 * m)]
        out: list[tuple[int, str]] = []
        seen: set[tuple[int, str]] = set()
        for i in ids.tolist():
            item = (int(self.sample.rows[i % m]), "image" if i < m else "text")
            if item not in seen:
                seen.add(item)
                out.append(item)
        return out


def _caption(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= ATLAS_TEXT_CHARS else text[: ATLAS_TEXT_CHARS - 1] + "…"


def atlas_table(proj: Projection, *, ids: Sequence[str] | None = None,
                captions: Sequence[str] | None = None, max_points: int = ATLAS_MAX_POINTS,
                max_bytes: int | None = ATLAS_MAX_BYTES, seed: int = SAMPLE_SEED) -> AtlasTable:
    """The atlas's table of the pool, each point's partner as its one neighbour.

    Parameters
    ----------
    proj : Projection
        2-D coordinates of the N images and N texts (PCA or UMAP of the joint pool).
    ids, captions : sequence of str, optional
        Length N: pair ids (default "0", "1", ...) and captions (default empty).
    max_points : int
        Points shown at most; a larger pool is a seeded sample of whole pairs
        (:func:`sample_pairs`), recorded in ``AtlasTable.sample``.
    max_bytes : int or None
        Size of the table as Arrow at most (:func:`arrow_bytes`); a larger table is rebuilt
        from a smaller sample, in proportion. None: no byte limit.
    seed : int
        Seed of that sample.
    """
    n = proj.n
    if ids is not None and len(ids) != n:
        raise ValueError(f"ids has {len(ids)} entries for {n} pairs; give one id per pair.")
    if captions is not None and len(captions) != n:
        raise ValueError(f"captions has {len(captions)} entries for {n} pairs; "
                         "give one caption per pair.")
    table = _table(proj, ids, captions, sample_pairs(n, max_points, seed))
    if max_bytes is not None:
        size = arrow_bytes(table.frame)
        if size > max_bytes:
            shown = int(table.frame.shape[0] * max_bytes / size * 0.95)
            table = _table(proj, ids, captions, sample_pairs(n, max(shown, 2), seed))
    return table


def _table(proj: Projection, ids: Sequence[str] | None, captions: Sequence[str] | None,
           sample: PoolSample) -> AtlasTable:
    rows = sample.rows
    m = int(rows.size)
    pair_ids = (np.asarray([str(ids[r]) for r in rows], dtype=object) if ids is not None
                else rows.astype(str).astype(object))
    caps = [_caption(captions[r]) for r in rows] if captions is not None else [""] * m
    # An image's own text is its id only: its caption is one click away (its neighbour), and
    # repeating it would double the table's largest column.
    image_text = [f"image · {pid}" for pid in pair_ids]
    xy = np.vstack([proj.images[rows], proj.texts[rows]]).astype(np.float32)
    # Each point's partner: the image at i has its text at m + i, and back.
    own = np.arange(2 * m, dtype=np.int64)
    partner = np.concatenate([own[m:], own[:m]])
    gap = np.linalg.norm(xy[:m] - xy[m:], axis=1).astype(np.float32)
    dist = np.concatenate([gap, gap])
    neighbors = [{"ids": [int(p)], "distances": [float(d)]} for p, d in zip(partner, dist)]
    frame = pd.DataFrame({
        ROW_ID: own.astype(np.int32),
        X: xy[:, 0],
        Y: xy[:, 1],
        TEXT: image_text + caps,
        "modality": ["image"] * m + ["text"] * m,
        "pair": np.concatenate([rows, rows]).astype(np.int64),
        "pair_id": np.concatenate([pair_ids, pair_ids]),
        NEIGHBORS: neighbors,
    })
    return AtlasTable(frame, sample)


def rows_for_predicate(table: AtlasTable, predicate: str | None) -> list[tuple[int, str]]:
    """``(pair row, modality)`` of the points an atlas selection picks.

    ``predicate`` is the SQL expression the atlas's Streamlit component returns (a chart
    filter, tested in the browser; or a rectangle or lasso over ``x``/``y`` in its WebGPU
    point view, tested here as SQL only); it is evaluated by DuckDB on the same table the
    atlas was given, on a connection without file or network access.
    None or empty selects nothing.

    Raises
    ------
    ValueError
        When ``predicate`` is more than one SQL statement.
    """
    if not predicate:
        return []
    import duckdb

    frame = table.frame[[ROW_ID, X, Y, TEXT, "modality", "pair", "pair_id"]]
    # The predicate comes from the browser: run it where it can read nothing but this table
    # (no files, no extensions), as one statement only.
    con = duckdb.connect(config={"enable_external_access": False})
    try:
        con.register("dataframe", frame)
        sql = f"SELECT {ROW_ID} FROM dataframe WHERE ({predicate}) ORDER BY {ROW_ID}"
        try:
            statements = len(con.extract_statements(sql))
        except duckdb.Error as err:
            statements, cause = 0, err
        else:
            cause = None
        if statements != 1:
            raise ValueError("the atlas's selection is not a single SQL predicate; clear the "
                             "selection in the atlas and select again.") from cause
        found = con.execute(sql).fetchnumpy()[ROW_ID]
    finally:
        con.close()
    return table.pairs_of(found)


def arrow_bytes(frame: pd.DataFrame) -> int:
    """Size in bytes of ``frame`` as an Arrow IPC stream (how Streamlit sends it)."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    tbl = pa.Table.from_pandas(frame, preserve_index=False)
    with pa.ipc.new_stream(sink, tbl.schema) as writer:
        writer.write_table(tbl)
    return int(sink.getvalue().size)
