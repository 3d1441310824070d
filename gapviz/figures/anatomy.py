"""Figures of the gap's anatomy and of what closing it costs (pure functions -> go.Figure).

- :func:`dimension_figure`: the gap dimensions (bars: share of the squared centroid gap) and
  the ablation curve (cross-modal R@1 and RMG as the top-m dimensions are removed);
- :func:`split_figure`: the Fréchet distance split into centroid and distribution parts,
  one stacked bar per method;
- :func:`interval_figure`: measures with their bootstrap intervals as whiskers, one marker
  per run (e.g. raw and after a method) side by side;
- :func:`tradeoff_figure`: gap closed (x) against what is kept (y), one point per run;
- :func:`gap_intensity`: how dark a table cell is drawn, 0 (smallest gap) .. 1 (largest).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..measure_info import lookup
from . import palette
from .gap import FONT, hover_escape

#: Colours of the anatomy figures (blue: the gap; orange: what is kept).
GAP_COLOR = palette.GAP_COLOR
KEPT_COLOR = palette.KEPT_COLOR
SHAPE_COLOR = palette.SHAPE_COLOR
MUTED = palette.MUTED
#: Marker colours of the runs of :func:`interval_figure`, in order (raw first).
RUN_COLORS = palette.RUN_COLORS
#: Intensity of the largest finite gap when an infinite one shares its scale (one shade lighter).
LARGEST_FINITE_SHADE = 0.8


def _base(fig: go.Figure, height: int, title: str = "") -> go.Figure:
    fig.update_layout(font=FONT, height=height, plot_bgcolor="white", paper_bgcolor="white",
                      margin=dict(l=10, r=10, t=56 if title else 30, b=10),
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0.0),
                      title=dict(text=title, x=0.5, xanchor="center",
                                 font=dict(size=14, color=palette.TITLE)) if title else None)
    fig.update_xaxes(showgrid=True, gridcolor=palette.GRID, zeroline=False,
                     title_font=dict(size=12, color=MUTED))
    fig.update_yaxes(showgrid=True, gridcolor=palette.GRID, zeroline=False,
                     title_font=dict(size=12, color=MUTED))
    return fig


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]: steps of 1, 2, 2.5 or 5 times a power of ten,
    about ``target`` of them (``lo == hi`` gives a small interval around the value)."""
    lo, hi = float(min(lo, hi)), float(max(lo, hi))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi - lo < 1e-12:
        pad = max(abs(lo) * 0.01, 1e-3)
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(target - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(lo / step + 1e-9) * step
    last = math.ceil(hi / step - 1e-9) * step
    count = int(round((last - first) / step)) + 1
    return [round(first + i * step, 12) for i in range(count)]


def _tick_format(ticks: Sequence[float]) -> str:
    """Fewest decimals that tell ``ticks`` apart (at most 4)."""
    for decimals in range(0, 5):
        if len({round(t, decimals) for t in ticks}) == len(ticks):
            return f".{decimals}f"
    return ".4f"


def dimension_figure(dimensions: Sequence[Mapping[str, float]],
                     ablation: Sequence[Mapping[str, Any]], *, n_dimensions: int | None = None,
                     height: int = 360) -> go.Figure:
    """Left: the largest gap dimensions (``anatomy.dimensions``: index, gap, share), each bar
    its share of ||mean(X) - mean(Y)||², and their cumulative share (labelled where it ends:
    the top-n shown of ``n_dimensions``); right: the ablation curve (``anatomy.ablation``:
    removed, R@1_i2t_crossmodal, R@1_t2i_crossmodal, RMG) as the top-m are removed, RMG on a
    right axis with round ticks."""
    shown_n = len(dimensions)
    total = f" of {n_dimensions:,}" if n_dimensions else ""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.1,
                        subplot_titles=(f"Where the centroid gap lives (top {shown_n}{total} "
                                        "dimensions)",
                                        "Removing the top-m gap dimensions"),
                        specs=[[{}, {"secondary_y": True}]])
    labels = [f"d{int(d['index'])}" for d in dimensions]
    share = [float(d["share"]) for d in dimensions]
    fig.add_trace(go.Bar(x=labels, y=share, marker_color=GAP_COLOR, name="share of the gap²",
                         customdata=np.array([[int(d["index"]), float(d["gap"])]
                                              for d in dimensions]).reshape(-1, 2),
                         hovertemplate="dimension %{customdata[0]}<br>|Δmean| %{customdata[1]:.4f}"
                                       "<br>share %{y:.1%}<extra></extra>"), row=1, col=1)
    cumulative = np.cumsum(share)
    fig.add_trace(go.Scatter(x=labels, y=cumulative, mode="lines", line=dict(color=MUTED, dash="dot"),
                             name=f"cumulative share (top {shown_n}{total})",
                             customdata=np.arange(1, shown_n + 1),
                             hovertemplate="top %{customdata}: %{y:.1%}<extra></extra>"),
                  row=1, col=1)
    if shown_n:
        fig.add_annotation(x=labels[-1], y=float(cumulative[-1]), row=1, col=1,
                           text=f"top {shown_n}: {cumulative[-1]:.0%}", showarrow=False,
                           xanchor="right", yanchor="bottom", font=dict(size=11, color=MUTED))
    m = [int(p["removed"]) for p in ablation]
    fig.add_trace(go.Scatter(x=m, y=[float(p["R@1_i2t_crossmodal"]) for p in ablation],
                             mode="lines+markers", name="R@1 image→text", line=dict(color=KEPT_COLOR)),
                  row=1, col=2)
    fig.add_trace(go.Scatter(x=m, y=[float(p["R@1_t2i_crossmodal"]) for p in ablation],
                             mode="lines+markers", name="R@1 text→image",
                             line=dict(color=KEPT_COLOR, dash="dash")), row=1, col=2)
    rmg = [float(p["RMG"]) for p in ablation]
    fig.add_trace(go.Scatter(x=m, y=rmg, mode="lines+markers", name="RMG (right axis)",
                             line=dict(color=GAP_COLOR),
                             hovertemplate="m = %{x}<br>RMG %{y:.4f}<extra></extra>"),
                  row=1, col=2, secondary_y=True)
    fig.update_yaxes(title_text="share of ||Δmean||²", tickformat=".0%", row=1, col=1)
    fig.update_yaxes(title_text="cross-modal R@1", row=1, col=2)
    ticks = nice_ticks(min(rmg), max(rmg)) if rmg else []
    rmg_axis: dict[str, Any] = dict(title_text="RMG", showgrid=False)
    if ticks:
        rmg_axis.update(tickmode="array", tickvals=ticks, tickformat=_tick_format(ticks),
                        range=[ticks[0], ticks[-1]])
    fig.update_yaxes(row=1, col=2, secondary_y=True, **rmg_axis)
    fig.update_xaxes(title_text="gap dimension (largest first)", row=1, col=1)
    fig.update_xaxes(title_text="dimensions removed (m)", row=1, col=2)
    fig = _base(fig, height + 50)
    # The subplot titles sit above the panels: the legend goes below them.
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.3, x=0.0),
                      margin=dict(t=40, b=20))
    return fig


def split_figure(splits: Mapping[str, Mapping[str, float]], *, height: int = 300) -> go.Figure:
    """One stacked horizontal bar per run: the Fréchet distance as ``centroid`` (the squared
    mean shift) plus ``distribution`` (the Fréchet distance once each mean is removed).
    ``splits`` maps a run's label to :func:`gapviz.anatomy.centroid_vs_distribution`."""
    runs = list(splits)
    centroid = [float(splits[r]["centroid"]) for r in runs]
    distribution = [float(splits[r]["distribution"]) for r in runs]
    fig = go.Figure([
        go.Bar(y=runs, x=centroid, orientation="h", name="centroid (mean shift)",
               marker_color=GAP_COLOR, hovertemplate="%{y}: centroid %{x:.4f}<extra></extra>"),
        go.Bar(y=runs, x=distribution, orientation="h", name="distribution (shape, spread)",
               marker_color=SHAPE_COLOR,
               hovertemplate="%{y}: distribution %{x:.4f}<extra></extra>"),
    ])
    fig.update_layout(barmode="stack")
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title_text="Fréchet distance = centroid + distribution")
    return _base(fig, height, "The gap: mean shift vs distribution")


def interval_figure(runs: Mapping[str, tuple[Mapping[str, float], Mapping[str, Sequence[float]]]],
                    keys: Sequence[str], *, labels: Mapping[str, str] | None = None,
                    height: int = 300) -> go.Figure:
    """Each measure of ``keys`` in its own small panel (their scales differ), one marker per run
    with its interval as whiskers, runs side by side in the order given.

    ``runs`` maps a run's label (e.g. "Raw", "Spectral, k = 60") to ``(estimates, intervals)``:
    measure -> value and measure -> (low, high), as in
    :class:`gapviz.intervals.IntervalReport`'s ``estimate`` and ``ci``.
    """
    keys = [k for k in keys if any(k in est for est, _ in runs.values())]
    fig = make_subplots(rows=1, cols=max(len(keys), 1), horizontal_spacing=0.07,
                        subplot_titles=[(labels or {}).get(k, k) for k in keys])
    names = list(runs)
    for r, run in enumerate(names):
        estimates, intervals = runs[run]
        color = RUN_COLORS[r % len(RUN_COLORS)]
        for i, key in enumerate(keys, start=1):
            if key not in estimates:
                continue
            value = float(estimates[key])
            lo, hi = (float(v) for v in intervals.get(key, (value, value)))
            fig.add_trace(go.Scatter(
                x=[run], y=[value], mode="markers", marker=dict(size=10, color=color),
                error_y=dict(type="data", symmetric=False, array=[max(hi - value, 0.0)],
                             arrayminus=[max(value - lo, 0.0)], color=color, thickness=1.5,
                             width=8),
                name=hover_escape(run), legendgroup=run, showlegend=i == 1,
                hovertemplate=f"{hover_escape(run)}<br>{key} %{{y:.4g}}<br>"
                              f"interval [{lo:.4g}, {hi:.4g}]"
                              "<extra></extra>"),
                row=1, col=i)
    for i in range(1, len(keys) + 1):
        fig.update_xaxes(showticklabels=False, range=[-0.6, len(names) - 0.4], row=1, col=i)
    fig = _base(fig, height)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.08, x=0.0),
                      margin=dict(t=40, b=10))
    return fig


def gap_intensity(values: Sequence[float | None], key: str) -> list[float | None]:
    """How large each value's gap is on the values' own range: 0 (smallest) .. 1 (largest).

    The measure's direction (:mod:`gapviz.measure_info`) says what a larger gap is: a larger
    distance or RMG, a lower recall, a ratio (ITR, TIR) further from 1 on a log scale. An
    infinite ITR is the largest gap there is (1; the largest finite one is then drawn at
    ``LARGEST_FINITE_SHADE``); a missing or NaN value gets None. Give every
    column that should share a scale (e.g. one measure raw and after a method) at once.
    """
    entry = lookup(key)

    def badness(v: float | None) -> float:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return math.nan
        return entry.badness(float(v)) if entry is not None else float(v)

    bad = [badness(v) for v in values]
    finite = [b for b in bad if math.isfinite(b)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 0.0)
    # with an infinite gap on the scale, the largest finite one stays a shade lighter than it
    top = LARGEST_FINITE_SHADE if math.inf in bad else 1.0
    out: list[float | None] = []
    for b in bad:
        if math.isnan(b):
            out.append(None)
        elif b == math.inf:
            out.append(1.0)
        elif b == -math.inf:
            out.append(0.0)
        elif hi > lo:
            out.append(top * (b - lo) / (hi - lo))
        else:  # every finite value equal: the smallest gap shown (an infinite one is larger)
            out.append(0.0)
    return out


#: One colour per run of the trade-off figure (each dark enough for a white number on it).
TRADEOFF_COLORS = palette.TRADEOFF_COLORS
#: Marker symbol of each kept quantity, in the order of ``kept``.
KEPT_SYMBOLS = ("circle", "diamond", "square", "triangle-up")


def tradeoff_figure(points: Sequence[Mapping[str, Any]], *, x_label: str = "gap closed",
                    kept: Sequence[tuple[str, str]] = (("r1_kept", "cross-modal R@1 kept"),
                                                       ("neighbours_kept", "neighbourhoods kept")),
                    height: int = 380, title: str = "What closing the gap costs") -> go.Figure:
    """Gap closed (x) against what is kept (y): one numbered colour per run, one marker
    symbol per kept quantity.

    ``points``: dicts with ``label`` (run), ``gap_closed`` (share of the raw gap removed, 0..1;
    1 = closed) and the keys of ``kept`` (shares kept, 1 = nothing lost). The ideal run sits
    top right.

    Labels are never written on the plot, where close runs would overlap: run i's markers
    carry its number i, the legend beside the plot says "i · label" (a click hides the run),
    and the hover text says everything. A run's markers share its x (the gap it closed) and are
    joined by a thin line. Both axes are shares, in percent.
    """
    fig = go.Figure()
    runs = [p for p in points if p.get("gap_closed") is not None]
    for i, point in enumerate(runs, start=1):
        color = TRADEOFF_COLORS[(i - 1) % len(TRADEOFF_COLORS)]
        name = f"{i} · {hover_escape(point['label'])}"  # run labels hold model names
        shown = [(key, what, KEPT_SYMBOLS[j % len(KEPT_SYMBOLS)])
                 for j, (key, what) in enumerate(kept) if point.get(key) is not None]
        x = float(point["gap_closed"])
        ys = [float(point[key]) for key, _, _ in shown]
        if len(ys) > 1:  # the run's kept quantities, joined at its x
            fig.add_trace(go.Scatter(x=[x, x], y=[min(ys), max(ys)], mode="lines",
                                     line=dict(color=color, width=1.5), opacity=0.5,
                                     legendgroup=name, showlegend=False, hoverinfo="skip"))
        for j, ((key, what, symbol), y) in enumerate(zip(shown, ys)):
            fig.add_trace(go.Scatter(
                x=[x], y=[y], mode="markers+text", text=[str(i)], textposition="middle center",
                textfont=dict(size=10, color=palette.WHITE), name=name, legendgroup=name,
                showlegend=j == 0, customdata=[[hover_escape(point["label"]), what]],
                marker=dict(size=19, symbol=symbol, color=color,
                            line=dict(color=palette.WHITE, width=1)),
                hovertemplate=f"<b>{i} · %{{customdata[0]}}</b><br>{x_label} %{{x:.0%}}"
                              "<br>%{customdata[1]} %{y:.0%}<extra></extra>"))
    for j, (_, what) in enumerate(kept):  # what each symbol means, in the legend only
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=what,
                                 marker=dict(size=11, symbol=KEPT_SYMBOLS[j % len(KEPT_SYMBOLS)],
                                             color=MUTED), hoverinfo="skip"))
    fig.add_shape(type="line", xref="paper", x0=0, x1=1, y0=1, y1=1,
                  line=dict(color=palette.RULE, dash="dot"))
    fig.update_xaxes(title_text=x_label, tickformat=".0%")
    fig.update_yaxes(title_text="share kept (100% = nothing lost)", tickformat=".0%")
    # The legend lists the runs beside the plot (a long list grows the figure, not the labels).
    fig = _base(fig, max(height, 120 + 22 * (len(runs) + len(kept))), title)
    fig.update_layout(legend=dict(orientation="v", yanchor="top", y=1.0, xanchor="left", x=1.02,
                                  font=dict(size=11), tracegroupgap=2),
                      margin=dict(r=10, b=10))
    return fig


def sweep_figure(summary: Sequence[Mapping[str, Any]], keys: Sequence[str], *,
                 by: str = "size", labels: Mapping[str, str] | None = None,
                 drifting: Mapping[str, Sequence[str]] | None = None,
                 height: int = 320) -> go.Figure:
    """Each measure of ``keys`` against pool size (``by="size"``, a log axis) or the caption
    choice (``by="captions"``), one line per embedding (raw, a method) with the range over the
    draws as whiskers; a measure that drifts with N has "(drifts)" in its title.

    ``summary`` is :meth:`gapviz.sensitivity.SweepResult.summary`.
    """
    keys = [k for k in keys if any(s["measure"] == k for s in summary)]
    drift = {k for ks in (drifting or {}).values() for k in ks}
    titles = [((labels or {}).get(k, k)) + (" (drifts)" if k in drift else "") for k in keys]
    cols = min(len(keys), 4) or 1
    rows = max(1, math.ceil(len(keys) / cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.06,
                        vertical_spacing=0.14)
    names = list(dict.fromkeys(s["label"] for s in summary))
    for r, name in enumerate(names):
        color = RUN_COLORS[r % len(RUN_COLORS)]
        for i, key in enumerate(keys):
            points = [s for s in summary if s["label"] == name and s["measure"] == key]
            if not points:
                continue
            x = [p[by] for p in points]
            y = [p["mean"] for p in points]
            fig.add_trace(go.Scatter(
                x=x, y=y, mode="lines+markers", line=dict(color=color, width=1.5),
                marker=dict(size=6, color=color),
                error_y=dict(type="data", symmetric=False,
                             array=[max(p["hi"] - p["mean"], 0.0) for p in points],
                             arrayminus=[max(p["mean"] - p["lo"], 0.0) for p in points],
                             color=color, thickness=1, width=4),
                name=hover_escape(name), legendgroup=name, showlegend=i == 0,
                hovertemplate=f"{hover_escape(name)}<br>{key} %{{y:.4g}} at %{{x}}<extra></extra>"),
                row=i // cols + 1, col=i % cols + 1)
            if by == "size":
                fig.update_xaxes(type="log", row=i // cols + 1, col=i % cols + 1)
    return _base(fig, height * rows)
