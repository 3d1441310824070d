"""Figures of the gap's anatomy and of what closing it costs (pure functions -> go.Figure).

- :func:`dimension_figure`: the gap dimensions (bars: share of the squared centroid gap) and
  the ablation curve (cross-modal R@1 and RMG as the top-m dimensions are removed);
- :func:`split_figure`: the Fréchet distance split into centroid and distribution parts,
  one stacked bar per method;
- :func:`interval_figure`: measures with their bootstrap intervals as whiskers;
- :func:`tradeoff_figure`: gap closed (x) against what is kept (y), one point per run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .figures import FONT

#: Colours of the anatomy figures (blue: the gap; orange: what is kept).
GAP_COLOR = "#2563EB"
KEPT_COLOR = "#EA580C"
SHAPE_COLOR = "#93C5FD"
MUTED = "#64748B"


def _base(fig: go.Figure, height: int, title: str = "") -> go.Figure:
    fig.update_layout(font=FONT, height=height, plot_bgcolor="white", paper_bgcolor="white",
                      margin=dict(l=10, r=10, t=56 if title else 30, b=10),
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0.0),
                      title=dict(text=title, x=0.5, xanchor="center",
                                 font=dict(size=14, color="#334155")) if title else None)
    fig.update_xaxes(showgrid=True, gridcolor="#EEF2F7", zeroline=False,
                     title_font=dict(size=12, color=MUTED))
    fig.update_yaxes(showgrid=True, gridcolor="#EEF2F7", zeroline=False,
                     title_font=dict(size=12, color=MUTED))
    return fig


def dimension_figure(dimensions: Sequence[Mapping[str, float]],
                     ablation: Sequence[Mapping[str, Any]], *, height: int = 360) -> go.Figure:
    """Left: the largest gap dimensions (``anatomy.dimensions``: index, gap, share), each bar
    its share of ||mean(X) - mean(Y)||²; right: the ablation curve (``anatomy.ablation``:
    removed, R@1_i2t_crossmodal, R@1_t2i_crossmodal, RMG) as the top-m are removed."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.1,
                        subplot_titles=("Where the centroid gap lives",
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
                             name="cumulative share", hovertemplate="top %{pointNumber} +1: "
                             "%{y:.1%}<extra></extra>"), row=1, col=1)
    m = [int(p["removed"]) for p in ablation]
    fig.add_trace(go.Scatter(x=m, y=[float(p["R@1_i2t_crossmodal"]) for p in ablation],
                             mode="lines+markers", name="R@1 image→text", line=dict(color=KEPT_COLOR)),
                  row=1, col=2)
    fig.add_trace(go.Scatter(x=m, y=[float(p["R@1_t2i_crossmodal"]) for p in ablation],
                             mode="lines+markers", name="R@1 text→image",
                             line=dict(color=KEPT_COLOR, dash="dash")), row=1, col=2)
    fig.add_trace(go.Scatter(x=m, y=[float(p["RMG"]) for p in ablation], mode="lines+markers",
                             name="RMG", line=dict(color=GAP_COLOR)), row=1, col=2,
                  secondary_y=True)
    fig.update_yaxes(title_text="share of ||Δmean||²", tickformat=".0%", row=1, col=1)
    fig.update_yaxes(title_text="cross-modal R@1", row=1, col=2)
    fig.update_yaxes(title_text="RMG", row=1, col=2, secondary_y=True, showgrid=False)
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


def interval_figure(estimates: Mapping[str, float], intervals: Mapping[str, Sequence[float]],
                    keys: Sequence[str], *, labels: Mapping[str, str] | None = None,
                    height: int = 280) -> go.Figure:
    """Each measure of ``keys`` as a point with its interval (whiskers), one small panel each
    (their scales differ)."""
    keys = [k for k in keys if k in estimates]
    fig = make_subplots(rows=1, cols=max(len(keys), 1), horizontal_spacing=0.06,
                        subplot_titles=[(labels or {}).get(k, k) for k in keys])
    for i, key in enumerate(keys, start=1):
        value = float(estimates[key])
        lo, hi = (float(v) for v in intervals.get(key, (value, value)))
        fig.add_trace(go.Scatter(
            x=[key], y=[value], mode="markers", marker=dict(size=10, color=GAP_COLOR),
            error_y=dict(type="data", symmetric=False, array=[max(hi - value, 0.0)],
                         arrayminus=[max(value - lo, 0.0)], color=MUTED, thickness=1.5, width=8),
            showlegend=False,
            hovertemplate=f"{key} %{{y:.4g}}<br>interval [{lo:.4g}, {hi:.4g}]<extra></extra>"),
            row=1, col=i)
        fig.update_xaxes(showticklabels=False, row=1, col=i)
    return _base(fig, height)


#: One colour per run of the trade-off figure (each dark enough for a white number on it).
TRADEOFF_COLORS = ("#2563EB", "#EA580C", "#059669", "#7C3AED", "#DB2777", "#0E7490",
                   "#A16207", "#475569", "#B91C1C", "#4D7C0F")
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
        name = f"{i} · {point['label']}"
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
                textfont=dict(size=10, color="#FFFFFF"), name=name, legendgroup=name,
                showlegend=j == 0, customdata=[[point["label"], what]],
                marker=dict(size=19, symbol=symbol, color=color,
                            line=dict(color="#FFFFFF", width=1)),
                hovertemplate=f"<b>{i} · %{{customdata[0]}}</b><br>{x_label} %{{x:.0%}}"
                              "<br>%{customdata[1]} %{y:.0%}<extra></extra>"))
    for j, (_, what) in enumerate(kept):  # what each symbol means, in the legend only
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=what,
                                 marker=dict(size=11, symbol=KEPT_SYMBOLS[j % len(KEPT_SYMBOLS)],
                                             color=MUTED), hoverinfo="skip"))
    fig.add_shape(type="line", xref="paper", x0=0, x1=1, y0=1, y1=1,
                  line=dict(color="#CBD5E1", dash="dot"))
    fig.update_xaxes(title_text=x_label, tickformat=".0%")
    fig.update_yaxes(title_text="share kept (100% = nothing lost)", tickformat=".0%")
    # The legend lists the runs beside the plot (a long list grows the figure, not the labels).
    fig = _base(fig, max(height, 120 + 22 * (len(runs) + len(kept))), title)
    fig.update_layout(legend=dict(orientation="v", yanchor="top", y=1.0, xanchor="left", x=1.02,
                                  font=dict(size=11), tracegroupgap=2),
                      margin=dict(r=10, b=10))
    return fig
