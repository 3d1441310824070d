"""The comparison of methods and models as a heatmap.

One row per run (a method, or a model / method), one column per measure of
:data:`gapviz.compare.COMPARE_KEYS` (the paper's Tables 2-5: ITR/TIR, IMR/TMR, Fréchet, mixed-pool
recall@5/10/20). Measures have different units and directions, so each column is coloured by
its own scale: 1 (dark) for the best run of that column, 0 (light) for the worst, following
each measure's direction and log scale in :mod:`gapviz.measure_info` (ITR and TIR are best at
1; an infinite ratio is the worst). The cell text is the value itself, the best one starred.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from . import measure_info
from .compare import COMPARE_KEYS
from .figures import FONT
from .measure_info import format_value
# the column titles and their tooltips, re-exported for the pages
from .measure_info import help_text as measure_help  # noqa: F401
from .tables import best_per_row

#: Light (worst) to dark green (best).
COLORSCALE = [[0.0, "#F8FAFC"], [0.5, "#A7F3D0"], [1.0, "#059669"]]


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
                    title: str | None = None, height: int | None = None) -> go.Figure:
    """Heatmap of runs (rows) by measures (columns), each column coloured best (dark) to worst.

    Parameters
    ----------
    columns : mapping of run label -> {measure: value}
        As :func:`gapviz.compare.rows_to_columns` returns it; rows keep this order.
    keys : sequence of str
        Measures to show, in order (those missing from every run are left out).

    Returns
    -------
    go.Figure
        ``customdata`` of each cell is ``[run label, measure key]``.
    """
    runs = list(columns)
    keys = [k for k in keys if any(k in columns[r] for r in runs)]
    best = best_per_row(columns, list(keys))
    z = np.full((len(runs), len(keys)), np.nan)
    text = [["" for _ in keys] for _ in runs]
    for j, k in enumerate(keys):
        scores = goodness([columns[r].get(k, math.nan) for r in runs], k)
        for i, r in enumerate(runs):
            if scores[i] is not None:
                z[i, j] = scores[i]
            value = format_value(columns[r].get(k), "display")
            text[i][j] = f"<b>★ {value}</b>" if r in best.get(k, ()) else value
    custom = np.empty((len(runs), len(keys), 2), dtype=object)
    for i, r in enumerate(runs):
        for j, k in enumerate(keys):
            custom[i, j] = (r, k)
    xlabels = [measure_label(k) for k in keys]
    fig = go.Figure(go.Heatmap(
        z=z, x=xlabels, y=runs, text=text, texttemplate="%{text}", textfont=dict(size=12),
        customdata=custom, colorscale=COLORSCALE, zmin=0, zmax=1, showscale=False, xgap=2, ygap=2,
        hovertemplate="<b>%{y}</b><br>%{x}: %{text}<extra></extra>"))
    fig.update_layout(
        template="plotly_white", font=FONT, height=height or 110 + 34 * len(runs),
        margin=dict(l=10, r=10, t=70 if title else 40, b=10),
        title=dict(text=title, x=0.0, font=dict(size=15)) if title else None,
        xaxis=dict(side="top", tickfont=dict(size=12), showgrid=False),
        yaxis=dict(autorange="reversed", tickfont=dict(size=12), showgrid=False, automargin=True),
        plot_bgcolor="white")
    return fig
