"""Tables of measures: one column per run (ORIG, a method, a model), one row per measure.

Rendered as a fixed-width text table (the CLI's default, laid out like the paper's tables),
markdown, CSV or JSON. Infinite ratios print as ``inf`` (``Infinity`` in JSON, ``∞`` in
markdown); an undefined ratio (0/0) as ``nan`` (``NaN`` in JSON). CSV text cells that a
spreadsheet would run as formulas get a leading ``'`` (:func:`gapviz.safety.csv_cell`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any, Mapping

from . import measure_info
from .safety import csv_rows
# the cell format, re-exported for the pages
from .measure_info import format_value  # noqa: F401


def ordered_keys(columns: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Measure keys present in any column, in the order of :data:`gapviz.measure_info.MEASURES`
    (then any keys it does not know, alphabetically); the pair count ``N`` left out."""
    return measure_info.sort_keys({k for col in columns.values() for k in col})


def render(columns: Mapping[str, Mapping[str, float]], fmt: str = "table", *,
           keys: list[str] | None = None, title: str = "", extra: Mapping[str, Any] | None = None,
           transpose: bool = False) -> str:
    """Render measure columns as ``table`` | ``markdown`` | ``csv`` | ``json``.

    Parameters
    ----------
    columns : mapping of run name -> {measure key: value}
        One entry per run (ORIG, a method, a model).
    fmt : str
    keys : list of str, optional
        Measures to show (default: :func:`ordered_keys`).
    title : str
        First line of the text table (ignored by the other formats).
    extra : mapping, optional
        JSON only: merged at the top level beside ``columns``.
    transpose : bool
        False: one row per measure, one column per run. True: one row per run, one column per
        measure (the paper's layout for comparing methods).
    """
    keys = keys or ordered_keys(columns)
    names = list(columns)
    if fmt == "json":
        return json.dumps({**(extra or {}), "columns": {n: dict(columns[n]) for n in names}},
                          indent=2, default=str)
    if fmt not in ("csv", "markdown", "table"):
        raise ValueError(f"unknown format '{fmt}'; choose table, markdown, csv or json.")
    best = best_per_row(columns, keys)
    if fmt == "csv":
        cell = lambda n, k: repr(float(columns[n][k])) if k in columns[n] else ""  # noqa: E731
    elif fmt == "markdown":
        def cell(n: str, k: str) -> str:
            text = format_value(columns[n].get(k), "display")
            return f"**{text}**" if n in best.get(k, ()) else text
    else:
        cell = lambda n, k: format_value(columns[n].get(k))  # noqa: E731
    if transpose:
        header = ["run", *keys]
        rows = [[n, *(cell(n, k) for k in keys)] for n in names]
    else:
        header = ["measure", *names]
        rows = [[k, *(cell(n, k) for n in names)] for k in keys]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerows(csv_rows([header, *rows]))  # run names may come from uploaded files
        return buf.getvalue()
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))

    out = ([title] if title else []) + [line(header), "  ".join("-" * w for w in widths)]
    return "\n".join(out + [line(r) for r in rows]) + "\n"


def best_per_row(columns: Mapping[str, Mapping[str, float]], keys: list[str]) -> dict[str, set[str]]:
    """For each measure with a direction, the column name(s) holding the best value.

    The direction is its entry's in :mod:`gapviz.measure_info`: lowest, highest, or, for ITR and
    TIR, closest to 1 in log scale (0 and inf are infinitely far). Measures with no direction,
    NaN values and rows with fewer than two values are left out.
    """
    best: dict[str, set[str]] = {}
    for k in keys:
        rec = measure_info.info(k)
        if rec.direction is None:
            continue
        vals = {n: rec.badness(c[k]) for n, c in columns.items() if k in c and not math.isnan(c[k])}
        if len(vals) < 2:
            continue
        target = min(vals.values())
        best[k] = {n for n, v in vals.items() if v == target}
    return best
