"""The comparison of methods and models as a heatmap.

One row per run (a method, or a model / method), one column per measure of
:data:`gapviz.compare.COMPARE_KEYS` (the paper's Tables 2-5: ITR/TIR, IMR/TMR, Fréchet, mixed-pool
recall@5/10/20). Measures have different units and directions, so each column is coloured by
its own scale: 1 (dark) for the best run of that column, 0 (light) for the worst, following
each measure's direction and log scale in :mod:`gapviz.measure_info` (ITR and TIR are best at
1; an infinite ratio is the worst). The cell text is the value itself (:func:`gapviz.compare.format_cell`),
the best one starred, in white on dark cells and dark on light ones.

A shuffled-pairs control is a null check, not a ranking: drawn with ``rank=False``, its cells
are neither coloured best to worst nor starred; only the cells given as ``flagged`` (e.g. a
recall above chance) stand out.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from .. import measure_info
from ..compare import COMPARE_KEYS, format_cell
# the column titles and their tooltips, re-exported for the pages
from ..measure_info import help_text as measure_help  # noqa: F401
from ..tables import best_per_row
from . import palette
from .gap import FONT, hover_escape

#: Light (worst) to dark green (best). The dark end is dark enough for white text.
COLORSCALE = palette.HEATMAP_SCALE
#: Without a ranking (``rank=False``): plain cells, and amber for a flagged one.
UNRANKED_COLORSCALE = palette.UNRANKED_SCALE
#: Cell text on light cells and on dark ones (:func:`text_color`).
DARK_TEXT = palette.DARK_TEXT
LIGHT_TEXT = palette.LIGHT_TEXT
#: Cells darker than this relative luminance get white text: mid greens such as #059669 (0.23)
#: read better in white, as buttons of that colour are written. On either side of it the
#: WCAG 2 contrast ratio is at least 3.5 (white) and 5.8 (dark).
LIGHT_TEXT_BELOW = 0.25


def measure_label(key: str, arrow: bool = True) -> str:
    """Column title with its direction: "ITR →1" (best at 1), "TMR ↓" (lower is better), "R@5 ↑"."""
    return measure_info.label(key, arrow=arrow)


def goodness(values: Sequence[float | None], key: str) -> list[float | None]:
    """Each value's place between the worst (0) and the best (1) of its column.

    NaN (or None) gives None: no colour; so does every value of a measure with no better
    direction. An infinite ratio is the worst (0) and the finite values keep their spread above
    it; an all-equal column is all 1. A best-at-1 measure (ITR, TIR) is scored by its distance
    to 1 in log scale; a measure whose entry has ``log_scale`` (IMR, TMR) on a log10 axis.
    """
    rec = measure_info.info(key)
    if rec.direction is None:
        return [None for _ in values]
    log = rec.log_scale
    if rec.direction == "one":
        def distance(v: float | None) -> float | None:
            if v is None or math.isnan(v):
                return None
            return abs(math.log10(v)) if 0 < v < math.inf else math.inf
        values, log = [distance(v) for v in values], False  # already a log distance
    higher = rec.direction == "higher"
    vals = [math.nan if v is None else float(v) for v in values]

    def scale(v: float) -> float:
        return math.log10(max(v, 1e-12)) if log else v

    finite = [scale(v) for v in vals if math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 0.0)
    floor = 0.15 if any(math.isinf(v) and (v > 0) != higher for v in vals) else 0.0
    out: list[float | None] = []
    for v in vals:
        if math.isnan(v):
            out.append(None)
        elif math.isinf(v):
            out.append(1.0 if (v > 0) == higher else 0.0)
        elif hi == lo:
            out.append(1.0)
        else:
            s = (scale(v) - lo) / (hi - lo)
            out.append(floor + (1.0 - floor) * (s if higher else 1.0 - s))
    return out


def compare_heatmap(columns: Mapping[str, Mapping[str, float]], keys: Sequence[str] = COMPARE_KEYS, *,
                    title: str | None = None, subtitle: str | None = None,
                    height: int | None = None, rank: bool = True,
                    flagged: Collection[tuple[str, str]] = ()) -> go.Figure:
    """Heatmap of runs (rows) by measures (columns), each column coloured best (dark) to worst.

    Parameters
    ----------
    columns : mapping of run label -> {measure: value}
        As :func:`gapviz.compare.rows_to_columns` returns it; rows keep this order.
    keys : sequence of str
        Measures to show, in order (those missing from every run are left out).
    title, subtitle : str, optional
        Figure title and a smaller line under it (they travel with a PNG/SVG export: say
        what the runs are).
    rank : bool, default=True
        Colour each column best to worst and star its best value. False for a null check
        (shuffled-pairs control): plain cells, nothing starred.
    flagged : collection of (run label, measure key)
        Cells drawn in amber with a ⚠ (with ``rank=False``: e.g. a recall above chance).

    Returns
    -------
    go.Figure
        Trace 0, the heatmap: ``customdata`` of each cell is ``[run label, measure key]``,
        ``text`` the cell text (hover). Trace 1 writes the cell texts, each in the colour
        that contrasts most with its cell (``textfont.color``).
    """
    runs = list(columns)
    keys = [k for k in keys if any(k in columns[r] for r in runs)]
    best = best_per_row(columns, list(keys)) if rank else {}
    flagged = set(flagged)
    z = np.full((len(runs), len(keys)), np.nan)
    text = [["" for _ in keys] for _ in runs]
    for j, k in enumerate(keys):
        scores = (goodness([columns[r].get(k, math.nan) for r in runs], k) if rank
                  else [1.0 if (r, k) in flagged else 0.0 for r in runs])
        for i, r in enumerate(runs):
            if scores[i] is not None:
                z[i, j] = scores[i]
            value = format_cell(k, columns[r].get(k))
            if (r, k) in flagged:
                value = f"⚠ {value}"
            text[i][j] = f"<b>★ {value}</b>" if r in best.get(k, ()) else value
    custom = np.empty((len(runs), len(keys), 2), dtype=object)
    for i, r in enumerate(runs):
        for j, k in enumerate(keys):
            custom[i, j] = (r, k)
    scale = COLORSCALE if rank else UNRANKED_COLORSCALE
    xlabels = [measure_label(k) for k in keys]
    # run names hold model names from files: shown as text on the axis and in the hovers
    runs = [hover_escape(r) for r in runs]
    fig = go.Figure(go.Heatmap(
        z=z, x=xlabels, y=runs, text=text, customdata=custom, colorscale=scale, zmin=0, zmax=1,
        showscale=False, xgap=2, ygap=2,
        hovertemplate="<b>%{y}</b><br>%{x}: %{text}<extra></extra>"))
    cells = [(i, j) for i in range(len(runs)) for j in range(len(keys))]
    fig.add_trace(go.Scatter(
        x=[xlabels[j] for _, j in cells], y=[runs[i] for i, _ in cells],
        text=[text[i][j] for i, j in cells], mode="text", hoverinfo="skip", showlegend=False,
        textfont=dict(size=12, color=[text_color(cell_color(scale, z[i, j])) for i, j in cells])))
    fig.update_layout(
        template="plotly_white", font=FONT,
        height=height or (110 + 34 * len(runs) + (60 if title else 0)),
        margin=dict(l=10, r=10, t=100 if title else 40, b=10),
        title=dict(text=title, x=0.0, xanchor="left", yref="container", y=1.0, yanchor="top",
                   pad=dict(t=14), font=dict(size=15),
                   subtitle=dict(text=subtitle or "", font=dict(size=12, color=palette.SUBTITLE)))
        if title else None,
        xaxis=dict(side="top", tickfont=dict(size=12), showgrid=False, zeroline=False),
        yaxis=dict(autorange="reversed", tickfont=dict(size=12), showgrid=False, zeroline=False,
                   automargin=True),
        plot_bgcolor="white")
    return fig


def _rgb(color: str) -> tuple[int, int, int]:
    color = color.lstrip("#")
    return int(color[0:2], 16), int(color[2:4], 16), int(color[4:6], 16)


def cell_color(colorscale: Sequence[Sequence], z: float | None) -> tuple[int, int, int]:
    """The RGB colour Plotly paints a cell of value ``z`` (0..1) with ``colorscale`` (linear
    between its stops); white for a cell without a value (the plot's background)."""
    if z is None or not math.isfinite(z):
        return 255, 255, 255
    z = min(max(float(z), 0.0), 1.0)
    for (z0, c0), (z1, c1) in zip(colorscale, colorscale[1:]):
        if z <= z1:
            t = 0.0 if z1 == z0 else (z - z0) / (z1 - z0)
            a, b = _rgb(c0), _rgb(c1)
            return tuple(round(x + (y - x) * t) for x, y in zip(a, b))  # type: ignore[return-value]
    return _rgb(colorscale[-1][1])


def luminance(rgb: Sequence[float]) -> float:
    """WCAG 2 relative luminance of an sRGB colour (0 black .. 1 white)."""
    def channel(c: float) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def text_color(background: Sequence[float]) -> str:
    """:data:`LIGHT_TEXT` on a dark cell (relative luminance below :data:`LIGHT_TEXT_BELOW`),
    :data:`DARK_TEXT` on a light one."""
    return LIGHT_TEXT if luminance(background) < LIGHT_TEXT_BELOW else DARK_TEXT
