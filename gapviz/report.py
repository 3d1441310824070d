"""A one-page HTML report of a session: dataset, model, method, measures, figures.

Self-contained: plotly.js is inlined once, so the file opens in any browser with no network
and no app.
"""

from __future__ import annotations

import datetime as _dt
import html
from typing import Any, Mapping, Sequence

import plotly.graph_objects as go

from . import measure_info, tables
from .figures.html import REPORT_CSS


def html_report(*, title: str, dataset: Mapping[str, Any], columns: Mapping[str, Mapping[str, float]],
                figures: Sequence[tuple[str, go.Figure]] = (), method: Mapping[str, Any] | None = None,
                keys: list[str] | None = None, notes: Sequence[str] = (),
                mark_best: bool = True) -> str:
    """Render the report as one HTML string.

    Parameters
    ----------
    title : str
    dataset : mapping
        Shown as "key: value" lines (source, model, N, d, simulated, ...). ``simulated=True``
        adds a visible "simulated data" badge.
    columns : mapping of run name -> measures
        The measures table (one column per run: ORIG, a method, a model).
    figures : sequence of (caption, go.Figure)
    method : mapping, optional
        ``{"method": name, "params": {...}}`` of the method shown.
    keys : list of str, optional
        Measures to include (default: all present).
    notes : sequence of str
        Free lines (e.g. significance tests).
    mark_best : bool
        Bold each measure's best run (False for a shuffled control, where none can be best).
    """
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
             f"<style>{REPORT_CSS}</style></head><body>", f"<h1>{esc(title)}</h1>"]
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts.append(f"<p class='meta'>gapviz report, {stamp}</p>")
    if dataset.get("simulated"):
        parts.append("<p><span class='badge'>SIMULATED DATA</span> "
                     f"imitates {esc(str(dataset.get('imitates', 'a real model')))}; not that model's output.</p>")
    parts.append("<h2>Data</h2><ul>")
    parts += [f"<li><b>{esc(str(k))}</b>: {esc(str(v))}</li>" for k, v in dataset.items()]
    parts.append("</ul>")
    if method:
        params = ", ".join(f"{k}={v}" for k, v in method.get("params", {}).items())
        parts.append(f"<h2>Method</h2><p><b>{esc(str(method.get('method', '')))}</b>({esc(params)})</p>")
    keys = keys or tables.ordered_keys(columns)
    parts.append("<h2>Measures</h2>")
    parts.append(measures_table_html(columns, keys, mark_best=mark_best))
    parts += [f"<p class='note'>{esc(n)}</p>" for n in notes]
    for i, (caption, fig) in enumerate(figures):
        parts.append(f"<h2>{esc(caption)}</h2>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False,
                                 config={"displaylogo": False}))
    parts.append("<h2>What the measures mean</h2><ul>")
    parts += [f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in measure_info.glossary(keys).items()]
    parts.append("</ul></body></html>")
    return "\n".join(parts)


def measures_table_html(columns: Mapping[str, Mapping[str, float]], keys: list[str] | None = None,
                        *, mark_best: bool = True) -> str:
    """An HTML table of measures (rows) by run (columns), the best value per row in bold
    (unless ``mark_best`` is False)."""
    keys = keys or tables.ordered_keys(columns)
    best = tables.best_per_row(columns, keys) if mark_best else {}
    names = list(columns)
    rows = ["<table><tr><th>measure</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "</tr>"]
    for k in keys:
        cells = []
        for n in names:
            text = measure_info.format_value(columns[n].get(k), "display")
            cls = " class='best'" if n in best.get(k, ()) else ""
            cells.append(f"<td{cls}>{text}</td>")
        title = html.escape(measure_info.help_text(k))
        rows.append(f"<tr><td title='{title}'>{html.escape(k)}</td>{''.join(cells)}</tr>")
    rows.append("</table>")
    return "\n".join(rows)
