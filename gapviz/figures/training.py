"""The gap over training (:class:`gapviz.trajectory.Trajectory`) as figures, without Streamlit.

- :func:`measure_curves`: one small panel per measure, its estimate over the steps with the
  bootstrap interval as a band;
- :func:`logit_curves`: the learned logit scale, the bias where the model has one, and the
  margin they imply (with its interval);
- :func:`trail_scatter`: the mixed pool at one step in the series' shared PCA basis, with
  the trails of chosen pairs across every step (``customdata`` = [row, modality code]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import palette
from .gap import FONT, MODALITY_CODES, MODALITY_COLORS, hover_escape, marker_size
from ..measure_info import label as measure_label

#: Colour of a curve and its band.
CURVE_COLOR = palette.TITLE
BAND_OPACITY = 0.18


def _x(labels: Sequence[str]) -> list[str]:
    return [str(label) for label in labels]


def _finite(values: np.ndarray) -> np.ndarray:
    """Infinite ratios (ITR when no query crosses) are not drawn: a curve cannot reach them."""
    out = np.asarray(values, dtype=float).copy()
    out[~np.isfinite(out)] = np.nan
    return out


def _band(fig: go.Figure, x: list[str], lo: np.ndarray, hi: np.ndarray, color: str,
          row: int | None = None, col: int | None = None) -> None:
    where = {} if row is None else {"row": row, "col": col}
    fig.add_trace(go.Scatter(x=x + x[::-1], y=list(_finite(hi)) + list(_finite(lo))[::-1],
                             fill="toself", fillcolor=color, opacity=BAND_OPACITY, mode="none",
                             hoverinfo="skip", showlegend=False), **where)


def measure_curves(trajectory, keys: Sequence[str], *, columns: int = 3,
                   height_per_row: int = 190) -> go.Figure:
    """Each measure of ``keys`` over the steps, with its interval as a band.

    Parameters
    ----------
    trajectory : gapviz.trajectory.Trajectory
    keys : sequence of str
        Measures (keys of each step's ``metrics``).
    """
    keys = [k for k in keys if k in trajectory.steps[0].metrics]
    if not keys:
        raise ValueError("no measure to draw: the keys are not measures of this series.")
    rows = math.ceil(len(keys) / columns)
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=[measure_label(k) for k in keys], horizontal_spacing=0.07,
                        vertical_spacing=0.16 if rows > 1 else 0.1)
    x = _x(trajectory.labels)
    for i, key in enumerate(keys):
        r, c = i // columns + 1, i % columns + 1
        est, lo, hi = trajectory.series(key)
        if np.isfinite(lo).any():
            _band(fig, x, lo, hi, CURVE_COLOR, r, c)
        text = [f"{v:.4g}" + (f" [{a:.4g}, {b:.4g}]" if np.isfinite(a) or np.isfinite(b) else "")
                for v, a, b in zip(est, lo, hi)]
        fig.add_trace(go.Scatter(x=x, y=_finite(est), mode="lines+markers", name=key,
                                 line=dict(color=CURVE_COLOR, width=2), text=text,
                                 hovertemplate="%{x}: %{text}<extra>" + hover_escape(key) + "</extra>",
                                 showlegend=False), row=r, col=c)
    fig.update_layout(height=height_per_row * rows + 40, margin=dict(l=40, r=10, t=40, b=30),
                      font=FONT, plot_bgcolor=palette.WHITE)
    fig.update_xaxes(showgrid=False, tickfont=dict(size=10))
    fig.update_yaxes(gridcolor=palette.GRID)
    return fig


def logit_curves(trajectory, *, height: int = 260) -> go.Figure:
    """The logit scale (exp of the stored ``logit_scale``), the bias where there is one, and
    the margin ``scale * (mean paired cos - mean unpaired cos)`` with its interval."""
    x = _x(trajectory.labels)
    steps = trajectory.steps
    has_bias = any(s.logits.bias is not None for s in steps)
    titles = ["logit scale (1 / temperature)", "margin, matched vs unmatched (logits)"]
    if has_bias:
        titles.append("logit bias")
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles, horizontal_spacing=0.08)
    nan = float("nan")
    scale = [s.logits.scale if s.logits.scale is not None else nan for s in steps]
    fig.add_trace(go.Scatter(x=x, y=scale, mode="lines+markers", name="logit scale",
                             line=dict(color=CURVE_COLOR, width=2), showlegend=False,
                             hovertemplate="%{x}: %{y:.4g}<extra>logit scale</extra>"), row=1, col=1)
    margin = np.array([s.margin if s.margin is not None else nan for s in steps], dtype=float)
    lo = np.array([s.margin_interval[0] if s.margin_interval else nan for s in steps], dtype=float)
    hi = np.array([s.margin_interval[1] if s.margin_interval else nan for s in steps], dtype=float)
    if np.isfinite(lo).any():
        _band(fig, x, lo, hi, palette.PAIRED, 1, 2)
    fig.add_trace(go.Scatter(x=x, y=margin, mode="lines+markers", name="margin",
                             line=dict(color=palette.PAIRED, width=2), showlegend=False,
                             hovertemplate="%{x}: %{y:.4g}<extra>margin</extra>"), row=1, col=2)
    if has_bias:
        bias = [s.logits.bias if s.logits.bias is not None else nan for s in steps]
        fig.add_trace(go.Scatter(x=x, y=bias, mode="lines+markers", name="logit bias",
                                 line=dict(color=palette.MUTED, width=2), showlegend=False),
                      row=1, col=3)
    fig.update_layout(height=height, margin=dict(l=40, r=10, t=40, b=30), font=FONT,
                      plot_bgcolor=palette.WHITE)
    fig.update_xaxes(showgrid=False, tickfont=dict(size=10))
    fig.update_yaxes(gridcolor=palette.GRID)
    return fig


def trail_scatter(trajectory, step: int, *, trail_rows: Sequence[int] = (),
                  height: int = 480) -> go.Figure:
    """The mixed pool at ``step`` in the shared basis, and the trails of ``trail_rows``.

    A trail joins a pair's image (and its text) over every step up to ``step``; the basis is
    the PCA of the last step, so every step is drawn in the same frame. Points carry
    ``customdata`` = [row, modality code] (0 image, 1 text), as :mod:`gapviz.figures.gap`'s.
    """
    if trajectory.images_xy is None:
        raise ValueError("this series has no shared basis (the steps' dimensions differ).")
    T = trajectory.images_xy.shape[0]
    if not 0 <= step < T:
        raise ValueError(f"step must be in 0..{T - 1}, got {step}.")
    fig = go.Figure()
    n = len(trajectory.ids)
    size = marker_size(2 * n)
    for modality, xy in (("image", trajectory.images_xy), ("text", trajectory.texts_xy)):
        for row in trail_rows:
            path = xy[:step + 1, row]
            fig.add_trace(go.Scatter(x=path[:, 0], y=path[:, 1], mode="lines+markers",
                                     line=dict(color=MODALITY_COLORS[modality], width=1.2),
                                     marker=dict(size=3), opacity=0.55, hoverinfo="skip",
                                     showlegend=False))
        rows = np.arange(n)
        custom = np.column_stack([rows, np.full(n, MODALITY_CODES[modality])])
        captions = [hover_escape(c)[:90] for c in trajectory.captions]
        fig.add_trace(go.Scatter(
            x=xy[step, :, 0], y=xy[step, :, 1], mode="markers",
            name=("Images" if modality == "image" else "Texts"),
            marker=dict(color=MODALITY_COLORS[modality], size=size, opacity=0.75),
            customdata=custom, text=[hover_escape(i) for i in trajectory.ids],
            hovertext=captions,
            hovertemplate="%{text}<br>%{hovertext}<extra>" + modality + "</extra>"))
    ev = trajectory.basis.explained_variance_ratio_
    fig.update_layout(
        height=height, font=FONT, plot_bgcolor=palette.WHITE,
        margin=dict(l=40, r=10, t=40, b=40),
        title=dict(text=f"{hover_escape(trajectory.labels[step])} · shared basis: PCA of "
                        f"{hover_escape(trajectory.labels[-1])}", font=dict(size=13)),
        xaxis=dict(title=f"PC 1 ({ev[0]:.0%} of the last step's variance)", gridcolor=palette.GRID),
        yaxis=dict(title=f"PC 2 ({ev[1]:.0%})", gridcolor=palette.GRID),
        legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"))
    # the same axis range at every step, so the slider moves points, not the frame
    allx = np.concatenate([trajectory.images_xy[..., 0].ravel(), trajectory.texts_xy[..., 0].ravel()])
    ally = np.concatenate([trajectory.images_xy[..., 1].ravel(), trajectory.texts_xy[..., 1].ravel()])
    pad = 0.05 * max(np.ptp(allx), np.ptp(ally), 1e-6)
    fig.update_xaxes(range=[float(allx.min() - pad), float(allx.max() + pad)])
    fig.update_yaxes(range=[float(ally.min() - pad), float(ally.max() + pad)])
    return fig
