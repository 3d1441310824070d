"""Explore past Plotly's limit: the pool in Apple's Embedding Atlas Streamlit component.

The atlas (``pip install "gapviz[atlas]"``) draws the table of :mod:`gapviz.figures.atlas`, in
which each point's partner is its one neighbour: clicking a point and asking for its nearest
neighbours shows its pair. Its selection (a rectangle or lasso, a chart filter) comes back
as an SQL predicate, evaluated on the same table into ``(row, modality)`` like the Plotly
lasso. The atlas renders with WebGPU (a browser with WebGPU and ``shader-f16``) and loads
DuckDB-WASM from cdn.jsdelivr.net, so a seeded Plotly sample stays one click away
(:data:`VIEWERS`). Without the package that sample is what Explore shows, and
:func:`install_note` says how to see all of the pool.
"""

from __future__ import annotations

import importlib.util

import streamlit as st

from gapviz import figures, hosting
from gapviz.figures import atlas as av
from gapviz.projection import Projection

from .state import keep

#: The viewers of a large pool: every point in the atlas, or a seeded sample in Plotly.
VIEWERS = ("Embedding Atlas", "Plotly (sample)")
VIEWER_HELP = (f"Embedding Atlas draws every point (up to {av.ATLAS_MAX_POINTS:,}) with WebGPU: "
               "a browser with WebGPU and 16-bit floats (Chrome or Edge on a machine with a "
               "GPU); it loads DuckDB-WASM from cdn.jsdelivr.net. Plotly draws a seeded sample "
               f"of {av.PLOTLY_MAX_POINTS:,} points in any browser.")


def atlas_installed() -> bool:
    """Whether the ``embedding-atlas`` package can be imported."""
    return importlib.util.find_spec("embedding_atlas") is not None


@st.cache_resource(max_entries=2, show_spinner="Preparing the atlas of the pool…")
def _table(key: str, method: str, _proj: Projection, _ids: tuple | list | None,
           _captions: tuple | list | None) -> av.AtlasTable:
    # Shared, not copied: the table of 200,000 points is tens of MB.
    return av.atlas_table(_proj, ids=_ids, captions=_captions)


def atlas_panel(key: str, proj: Projection, ids, captions) -> list[tuple[int, str]]:
    """Draw the atlas of the pool (``key``: its content hash) and return the selected
    ``(row, modality)``, rows of the whole pool."""
    from embedding_atlas.streamlit import embedding_atlas

    table = _table(key, proj.method, proj, ids, captions)
    st.caption(f"{table.sample.describe()} Drawn with Embedding Atlas: click a point and "
               "choose *Nearest Neighbors*, its one neighbour is its pair; shift-drag a "
               "rectangle (or click a bar of a chart) to list the pairs here.")
    value = embedding_atlas(table.frame, key=f"explore_atlas_{key[:12]}_{proj.method}",
                            x=av.X, y=av.Y, text=av.TEXT, neighbors=av.NEIGHBORS)
    predicate = value.get("predicate") if isinstance(value, dict) else None
    return av.rows_for_predicate(table, predicate)


def is_large(n_pairs: int) -> bool:
    """Whether a pool of ``n_pairs`` pairs has more points than Plotly draws smoothly."""
    return 2 * n_pairs > av.PLOTLY_MAX_POINTS


def large_pool_panel(key: str, proj: Projection, ids, captions, *, lines: bool,
                     height: int) -> list[tuple[int, str]]:
    """A pool past Plotly's limit: the atlas when installed, else a seeded sample in Plotly
    (said so, with the install command). A hosted demo shows the sample: the atlas's component
    loads code from a CDN, and a hosted page sends its visitors nowhere but this server.
    Returns the selected ``(row, modality)``."""
    if hosting.hosted():
        sample = plotly_sample(proj.n)
        st.caption(f"{sample.describe()} (Embedding Atlas, which loads code from a CDN, is not "
                   "offered on a hosted demo.)")
    elif atlas_installed():
        viewer = st.radio("Viewer", VIEWERS, horizontal=True, help=VIEWER_HELP,
                          **keep("explore_viewer", VIEWERS[0]))
        if viewer == VIEWERS[0]:
            return atlas_panel(key, proj, ids, captions)
        sample = plotly_sample(proj.n)
        st.caption(sample.describe())
    else:
        sample = plotly_sample(proj.n)
        install_note(sample)
    sub, sub_ids, sub_caps = subset(proj, ids, captions, sample)
    fig = figures.gap_scatter(sub, ids=sub_ids, captions=sub_caps, pair_lines=lines,
                              height=height)
    event = st.plotly_chart(fig, key=f"explore_scatter_{key[:12]}_sample", on_select="rerun",
                            selection_mode=("box", "lasso", "points"),
                            config={"displaylogo": False})
    return to_pool_rows(sample, figures.selected_rows(event.selection if event else None))


def plotly_sample(n_pairs: int) -> av.PoolSample:
    """The seeded sample of pairs the Plotly scatter shows of a pool past its limit."""
    return av.sample_pairs(n_pairs, av.PLOTLY_MAX_POINTS)


def subset(proj: Projection, ids, captions, sample: av.PoolSample):
    """The projection, ids and captions of the sampled pairs (row i = pair ``sample.rows[i]``)."""
    rows = sample.rows
    take = (lambda seq: [seq[int(r)] for r in rows]) if rows.size else (lambda seq: [])
    return (av.subset_projection(proj, rows), take(ids) if ids is not None else None,
            take(captions) if captions is not None else None)


def install_note(sample: av.PoolSample) -> None:
    """Say that the Plotly scatter is a sample, and how to see the whole pool."""
    st.info(f"{sample.describe()} Plotly draws up to {av.PLOTLY_MAX_POINTS:,} points; to see "
            f"up to {av.ATLAS_MAX_POINTS:,}, install Embedding Atlas: `{av.ATLAS_INSTALL}` "
            "(or `pip install embedding-atlas`) and restart the app.", icon=":material/info:")


def to_pool_rows(sample: av.PoolSample, rows: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """``(row, modality)`` of a sampled scatter mapped back to rows of the whole pool."""
    m = int(sample.rows.size)
    return [(int(sample.rows[r]), mod) for r, mod in rows if 0 <= r < m]
