"""Plotly figures of the modality gap: pure functions from arrays to ``go.Figure``.

Every point of a scatter carries ``customdata = [row, modality]`` (row = index of the pair in
the :class:`~gapviz.embeddings.PairedEmbeddings`, modality 0 = image, 1 = text), its pair id
as ``text`` and its caption as ``hovertext``, so a selection in the browser maps back to pairs
(:func:`selected_rows`). The per-point data are numeric or fixed-width string arrays, never
Python objects: Plotly validates those in milliseconds, which keeps a slider move fast.
Scatters use WebGL (``Scattergl``) so that 10,000+ pairs (20,000+ points) stay smooth.
Variants share one trace builder and differ only by options.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from ..projection import Projection
from . import palette

#: One colour per modality, used by every figure (and by the app's badges).
MODALITY_COLORS = palette.MODALITY_COLORS
MODALITY_LABELS = {"image": "Images", "text": "Texts"}
#: Code of each modality in ``customdata[:, 1]``.
MODALITY_CODES = {"image": 0, "text": 1}
#: Faint colour of the lines joining the two items of a pair.
PAIR_LINE_COLOR = palette.PAIR_LINE
#: Colour of a highlighted query point.
QUERY_COLOR = palette.QUERY_EDGE
#: At most this many pair lines are drawn (a random, seeded subset): more is only ink.
MAX_PAIR_LINES = 1000
#: Captions are cut to this many characters in hover labels.
HOVER_CAPTION_CHARS = 90
#: Histogram bins over cosine distance [0, 2].
DISTANCE_BINS = 60
#: Colours of the two histogram series.
PAIRED_COLOR = palette.PAIRED
ALL_COLOR = palette.ALL_PAIRS
FONT = dict(family="Inter, 'Source Sans Pro', 'Helvetica Neue', Arial, sans-serif", size=13)


def marker_size(n_points: int) -> float:
    """A point size that keeps 200 points visible and 20,000 points from becoming a blot."""
    return float(np.clip(9.0 - 1.2 * np.log10(max(n_points, 1)), 3.0, 8.0))


def pair_line_rows(n_pairs: int, max_lines: int = MAX_PAIR_LINES, seed: int = 0) -> np.ndarray:
    """Rows whose pair lines are drawn: all when few, a seeded sorted subset otherwise."""
    if n_pairs <= max_lines:
        return np.arange(n_pairs)
    return np.sort(np.random.default_rng(seed).choice(n_pairs, max_lines, replace=False))


def hover_escape(text: Any) -> str:
    """``text`` as literal characters in a Plotly label (hover text, ``text`` or ``customdata``
    shown through a ``hovertemplate``): Plotly renders a subset of HTML there (``<b>``,
    ``<a href>``, ``<br>``, entities), so ``&``, ``<`` and ``>`` are escaped; line breaks
    become spaces."""
    return html.escape(" ".join(str(text).split()), quote=False)


def _short(text: str, limit: int = HOVER_CAPTION_CHARS) -> str:
    # Cut first, then escape: a cut must not split an entity such as "&amp;".
    text = " ".join(str(text).split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return hover_escape(text)


def hover_arrays(ids: Sequence[str] | None, captions: Sequence[str] | None,
                 n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pair ids and shortened captions, HTML-escaped (:func:`hover_escape`), as string arrays
    (for ``text`` / ``hovertext``)."""
    id_list = list(ids) if ids is not None else [str(i) for i in range(n)]
    id_arr = np.asarray([hover_escape(i) for i in id_list], dtype=str)
    caps = [_short(c) for c in captions] if captions is not None else [""] * n
    return id_arr, np.asarray(caps, dtype=str)


def _modality_traces(proj: Projection, *, ids: Sequence[str] | None,
                     captions: Sequence[str] | None, showlegend: bool = True,
                     size: float | None = None,
                     hover: tuple[np.ndarray, np.ndarray] | None = None) -> list[go.Scattergl]:
    n = proj.n
    id_arr, cap_arr = hover if hover is not None else hover_arrays(ids, captions, n)
    size = size or marker_size(2 * n)
    rows = np.arange(n)
    traces = []
    for modality, xy in (("image", proj.images), ("text", proj.texts)):
        custom = np.column_stack([rows, np.full(n, MODALITY_CODES[modality])])
        what = "Image" if modality == "image" else "Text"
        caption_line = ("caption of its pair: %{hovertext}" if modality == "image"
                        else "%{hovertext}")
        traces.append(go.Scattergl(
            x=xy[:, 0], y=xy[:, 1], mode="markers", name=MODALITY_LABELS[modality],
            legendgroup=modality, showlegend=showlegend,
            marker=dict(color=MODALITY_COLORS[modality], size=size, opacity=0.65,
                        line=dict(width=0)),
            customdata=custom, text=id_arr, hovertext=cap_arr,
            hovertemplate=f"<b>{what}</b> · pair %{{text}}<br>{caption_line}<extra></extra>",
        ))
    return traces


def _pair_lines_trace(proj: Projection, rows: np.ndarray, showlegend: bool = True,
                      panel: int = 1) -> go.Scattergl:
    # One trace, segments separated by NaN: a single WebGL draw call for all the lines.
    k = rows.size
    xs = np.full(3 * k, np.nan, np.float32)
    ys = np.full(3 * k, np.nan, np.float32)
    xs[0::3], xs[1::3] = proj.images[rows, 0], proj.texts[rows, 0]
    ys[0::3], ys[1::3] = proj.images[rows, 1], proj.texts[rows, 1]
    return go.Scattergl(x=xs, y=ys, mode="lines", name="pair links", legendgroup="lines",
                        showlegend=showlegend, hoverinfo="skip",
                        line=dict(color=PAIR_LINE_COLOR, width=1), **_axes_of(panel))


def _query_trace(proj: Projection, row: int, modality: str, showlegend: bool = True,
                 panel: int = 1) -> go.Scattergl:
    xy = (proj.images if modality == "image" else proj.texts)[row]
    return go.Scattergl(x=[xy[0]], y=[xy[1]], mode="markers", name="query", legendgroup="query",
                        showlegend=showlegend, hoverinfo="skip",
                        marker=dict(symbol="star", size=18, color=palette.QUERY_FILL,
                                    line=dict(color=QUERY_COLOR, width=1.5)), **_axes_of(panel))


# ---------------------------------------------------------------------------------------------
# layout: one dict built at once (many small update_* calls cost more than the data)
# ---------------------------------------------------------------------------------------------
def _axes_of(panel: int) -> dict[str, str]:
    suffix = "" if panel == 1 else str(panel)
    return {"xaxis": f"x{suffix}", "yaxis": f"y{suffix}"}


def _layout(*, height: int | None, title: str | None = None,
            panels: Sequence[tuple[str, str, str]] = (("", "", ""),),
            equal_axes: Sequence[bool] = (False,), tick_labels: bool = False,
            spacing: float = 0.05, dragmode: str = "lasso") -> dict[str, Any]:
    """Layout of 1..n side-by-side panels; ``panels`` = (panel title, x title, y title) each."""
    n = len(panels)
    width = (1.0 - spacing * (n - 1)) / n
    titled = n > 1 and any(p[0] for p in panels)
    top = 78 if titled else (56 if title else 30)
    # Panel titles sit just above the plots; the legend goes above them, not on top of them.
    legend_y = 1.0 + (30.0 / max((height or 450) - top - 10, 120) if titled else 0.0)
    axis_style = dict(showgrid=True, gridcolor=palette.GRID, zeroline=False,
                      showticklabels=tick_labels, title_font=dict(size=12, color=palette.MUTED))
    layout: dict[str, Any] = dict(
        font=FONT, height=height, plot_bgcolor="white", paper_bgcolor="white",
        margin=dict(l=10, r=10, t=top, b=10),
        # Top left: the top right is where Plotly's toolbar appears on hover.
        legend=dict(orientation="h", yanchor="bottom", y=legend_y, xanchor="left", x=0.0,
                    itemsizing="constant"),
        hoverlabel=dict(font_size=12), dragmode=dragmode, uirevision="keep", annotations=[],
    )
    if title:  # styled as the panel titles of the multi-panel figures
        layout["title"] = dict(text=title, x=0.5, xanchor="center", y=1.0, yanchor="top",
                               yref="container", pad=dict(t=8),
                               font=dict(size=14, color=palette.TITLE))
    for i, (panel_title, x_title, y_title) in enumerate(panels, start=1):
        suffix = "" if i == 1 else str(i)
        x0 = (i - 1) * (width + spacing)
        layout[f"xaxis{suffix}"] = dict(axis_style, domain=[x0, x0 + width], anchor=f"y{suffix}",
                                        title=dict(text=x_title))
        layout[f"yaxis{suffix}"] = dict(axis_style, anchor=f"x{suffix}", title=dict(text=y_title))
        if equal_axes[min(i - 1, len(equal_axes) - 1)]:
            layout[f"yaxis{suffix}"].update(scaleanchor=f"x{suffix}", scaleratio=1)
        if panel_title and n > 1:
            layout["annotations"].append(dict(
                text=panel_title, x=x0 + width / 2, y=1.0, xref="paper", yref="paper",
                xanchor="center", yanchor="bottom", yshift=6, showarrow=False,
                font=dict(size=14, color=palette.TITLE)))
    return layout


def gap_scatter(proj: Projection, *, ids: Sequence[str] | None = None,
                captions: Sequence[str] | None = None, pair_lines: bool = False,
                max_lines: int = MAX_PAIR_LINES, query: tuple[str, int] | None = None,
                title: str | None = None, height: int | None = 520,
                equal_axes: bool | None = None) -> go.Figure:
    """Scatter of the mixed pool, one colour per modality.

    Parameters
    ----------
    proj : Projection
        2-D coordinates of the N images and N texts.
    ids, captions : sequence of str, optional
        Length N; shown on hover (pair id as ``text``, caption as ``hovertext``).
    pair_lines : bool
        Join each pair's image and text with a faint line (at most ``max_lines`` of them).
    query : (modality, row), optional
        Mark one item with a star (e.g. the query of a retrieval example).
    equal_axes : bool, optional
        Same scale on both axes (distances read true). Default: on for PCA, off for UMAP.
    """
    traces: list[go.Scattergl] = []
    if pair_lines:
        traces.append(_pair_lines_trace(proj, pair_line_rows(proj.n, max_lines)))
    traces += _modality_traces(proj, ids=ids, captions=captions)
    if query is not None:
        traces.append(_query_trace(proj, query[1], query[0]))
    equal = equal_axes if equal_axes is not None else proj.method == "pca"
    layout = _layout(height=height, title=title, panels=[("", *proj.axis_titles)],
                     equal_axes=[equal])
    return go.Figure(data=traces, layout=layout)


def distance_histogram(panels: Sequence[tuple[str, np.ndarray, np.ndarray]], *,
                       bins: int = DISTANCE_BINS, height: int | None = 300) -> go.Figure:
    """Histograms of cosine distance: true pairs vs all image-text combinations.

    Parameters
    ----------
    panels : sequence of (title, paired, all_pairs)
        One subplot per entry: ``paired`` (N,) cosine distances 1 - cos(x_i, y_i) and
        ``all_pairs`` (M,) distances of (sampled) combinations x_i, y_j (paper Figure 3).
        Densities are shown (bins computed here, so the browser gets 2 x ``bins`` bars per
        panel, not the samples), and a dotted line marks each series' mean.
    """
    edges = np.linspace(0.0, 2.0, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    traces: list[go.Bar] = []
    shapes: list[dict[str, Any]] = []
    for panel, (_, paired, all_pairs) in enumerate(panels, start=1):
        axes = _axes_of(panel)
        for name, values, color in (("true pairs", paired, PAIRED_COLOR),
                                    ("all image–text combinations", all_pairs, ALL_COLOR)):
            values = np.clip(np.asarray(values, dtype=np.float64), 0.0, 2.0)
            dens, _ = np.histogram(values, bins=edges, density=True)
            traces.append(go.Bar(
                x=centres, y=dens, width=edges[1] - edges[0], name=name, legendgroup=name,
                showlegend=panel == 1, opacity=0.7, marker=dict(color=color, line=dict(width=0)),
                hovertemplate=f"{name}<br>distance %{{x:.2f}}<br>density %{{y:.2f}}<extra></extra>",
                **axes))
            if values.size:
                mean = float(values.mean())
                shapes.append(dict(type="line", x0=mean, x1=mean, y0=0, y1=1,
                                   xref=axes["xaxis"], yref=f"{axes['yaxis']} domain",
                                   line=dict(color=color, width=2, dash="dot")))
    layout = _layout(height=height, panels=[(title, "cosine distance", "density")
                                            for title, _, _ in panels],
                     equal_axes=[False], tick_labels=True, spacing=0.06, dragmode="zoom")
    layout.update(barmode="overlay", bargap=0, shapes=shapes)
    for i in range(1, len(panels) + 1):
        layout[f"xaxis{'' if i == 1 else i}"]["range"] = [0, 2]
    return go.Figure(data=traces, layout=layout)


def selected_rows(selection: Mapping[str, Any] | None) -> list[tuple[int, str]]:
    """``(row, modality)`` of the points in a Plotly selection event (as Streamlit returns it).

    Reads each point's ``customdata`` (``[row, modality code]``, set by the scatters here);
    points of other traces (pair lines, query star) have none and are ignored. Order kept,
    duplicates dropped. Plotly.js reports a row of a typed (binary) array as an object
    ``{"0": row, "1": code}``; both forms are read.
    """
    if not selection:
        return []
    points: Iterable[Mapping[str, Any]] = selection.get("points", []) or []
    names = {code: name for name, code in MODALITY_CODES.items()}
    out: list[tuple[int, str]] = []
    seen = set()
    for p in points:
        custom = p.get("customdata")
        if isinstance(custom, Mapping):
            custom = [custom.get("0"), custom.get("1")]
        if custom is None or isinstance(custom, (str, bytes)) or len(custom) < 2:
            continue
        try:
            item = (int(custom[0]), names[int(custom[1])])
        except (KeyError, TypeError, ValueError):
            continue
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out
