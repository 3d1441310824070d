"""Tables of measures: one column per run (ORIG, a method, a model), one row per measure.

Rendered as a fixed-width text table (the CLI's default, laid out like the paper's tables),
markdown, CSV or JSON. Infinite ratios print as ``inf`` (``Infinity`` in JSON, ``∞`` in
markdown); an undefined ratio (0/0) as ``nan`` (``NaN`` in JSON).
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any, Mapping

from .config import RECALL_KS

#: Display order of the measures; keys missing from every column are left out.
MEASURE_ORDER: tuple[str, ...] = (
    "ITR", "TIR", "IMR", "TMR",
    *(f"R@{k}" for k in RECALL_KS), *(f"R@{k}_t2i" for k in RECALL_KS),
    *(f"R@{k}_i2t_crossmodal" for k in RECALL_KS), *(f"R@{k}_t2i_crossmodal" for k in RECALL_KS),
    "paired_cosine_distance", "paired_l2", "paired_l2_squared", "all_cosine_distance",
    "frechet", "centroid_gap", "image_cone", "text_cone", "separability",
)

#: Ratios whose ideal is 1 (no bias either way): below 1 a method over-corrects, biasing queries
#: toward the other modality, which is no better than a gap; the best is the closest to 1 in
#: log scale.
BEST_AT_ONE = frozenset({"ITR", "TIR"})
#: Measures where lower means a smaller gap (the others: higher is better, or neutral).
#: (ITR and TIR are listed too: coming down from a gap, a decrease is the good direction.)
LOWER_IS_BETTER = frozenset({"ITR", "TIR", "IMR", "TMR", "paired_cosine_distance", "paired_l2",
                             "paired_l2_squared", "frechet", "centroid_gap", "separability"})
HIGHER_IS_BETTER = frozenset(k for k in MEASURE_ORDER if k.startswith("R@"))


def ordered_keys(columns: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Measure keys present in any column, in :data:`MEASURE_ORDER` then any others."""
    present = {k for col in columns.values() for k in col}
    extra = sorted(present - set(MEASURE_ORDER) - {"N"})
    return [k for k in MEASURE_ORDER if k in present] + extra


def format_value(value: float | None) -> str:
    """Compact number: ratios and ranks with 2 decimals, fractions with 3, inf as 'inf'."""
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if math.isnan(value):
        return "nan"
    if abs(value) >= 1000:
        return f"{value:,.1f}"
    if abs(value) >= 10:
        return f"{value:.2f}"
    return f"{value:.3f}"


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
            text = format_value(columns[n].get(k)).replace("inf", "∞")
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
        w.writerows([header, *rows])
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
    """For each measure with a direction, the column name(s) holding the best value."""
    best: dict[str, set[str]] = {}
    for k in keys:
        if k not in LOWER_IS_BETTER and k not in HIGHER_IS_BETTER and k not in BEST_AT_ONE:
            continue
        vals = {n: c[k] for n, c in columns.items() if k in c and not math.isnan(c[k])}
        if k in BEST_AT_ONE:  # distance to 1 in log scale; 0 and inf are infinitely far
            vals = {n: abs(math.log(v)) if 0 < v < math.inf else math.inf for n, v in vals.items()}
        if len(vals) < 2:
            continue
        target = max(vals.values()) if k in HIGHER_IS_BETTER else min(vals.values())
        best[k] = {n for n, v in vals.items() if v == target}
    return best
