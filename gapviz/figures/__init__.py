"""What gapviz shows: Plotly figures, HTML snippets and the tables behind the app's views,
built without Streamlit, with every colour from one palette.

- :mod:`gapviz.figures.palette`: every colour of the project, named for its role (the two
  modalities, true pairs, best / warning / noise cells, neutral greys, the report's colours);
- :mod:`gapviz.figures.gap`: the gap itself, the scatter of the mixed pool and the histograms
  of cosine distance, and the selection of points (its public names are re-exported here, so
  ``from gapviz import figures; figures.gap_scatter(...)`` works);
- :mod:`gapviz.figures.anatomy`: the gap's anatomy and what closing it costs (gap dimensions
  and ablation, centroid vs distribution, intervals, the trade-off);
- :mod:`gapviz.figures.compare`: the comparison of methods and models as a heatmap;
- :mod:`gapviz.figures.retrieval`: the Retrieval page's query cards, per-query figure and CSV
  rows;
- :mod:`gapviz.figures.atlas`: the mixed pool as a table for the large-pool viewer
  (Embedding Atlas);
- :mod:`gapviz.figures.data`: the Data page's preview tiles and tables;
- :mod:`gapviz.figures.overview`: the Overview page's panel titles, pills and top hits;
- :mod:`gapviz.figures.html`: the style sheet of the exported HTML report
  (:mod:`gapviz.report`).

Only :mod:`~gapviz.figures.gap` (and the palette) load with the package; import the others
by name (``from gapviz.figures import anatomy``).
"""

from __future__ import annotations

from .gap import (
    ALL_COLOR,
    DISTANCE_BINS,
    FONT,
    HOVER_CAPTION_CHARS,
    MAX_PAIR_LINES,
    MODALITY_CODES,
    MODALITY_COLORS,
    MODALITY_LABELS,
    PAIR_LINE_COLOR,
    PAIRED_COLOR,
    QUERY_COLOR,
    distance_histogram,
    gap_scatter,
    hover_arrays,
    marker_size,
    pair_line_rows,
    selected_rows,
)

__all__ = [
    "ALL_COLOR", "DISTANCE_BINS", "FONT", "HOVER_CAPTION_CHARS", "MAX_PAIR_LINES",
    "MODALITY_CODES", "MODALITY_COLORS", "MODALITY_LABELS", "PAIR_LINE_COLOR", "PAIRED_COLOR",
    "QUERY_COLOR", "distance_histogram", "gap_scatter", "hover_arrays", "marker_size",
    "pair_line_rows", "selected_rows",
]
