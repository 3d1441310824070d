"""Tables of measures: one column per run (ORIG, a method, a model), one row per measure.

Rendered as a fixed-width text table (the CLI's default, laid out like the paper's tables),
markdown, CSV or JSON. Infinite ratios print as ``inf`` (``Infinity`` in JSON, ``∞`` in
markdown); an undefined ratio (0/0) as ``nan`` (``NaN`` in JSON). Run names come from files (a
model's name), so text cells show control characters as visible escapes
(:func:`gapviz.safety.terminal_text`), markdown cells also escape ``|``
(:func:`gapviz.safety.markdown_cell`), and CSV text cells that a spreadsheet would run as
formulas get a leading ``'`` (:func:`gapviz.safety.csv_cell`); JSON escapes them itself.
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any, Mapping, Sequence

from . import measure_info
from .safety import csv_cell, csv_rows, markdown_cell, terminal_text
# the cell format, re-exported for the pages
from .measure_info import format_value  # noqa: F401


def ordered_keys(columns: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Measure keys present in any column, in the order of :data:`gapviz.measure_info.MEASURES`
    (then any keys it does not know, alphabetically); the pair count ``N`` left out."""
    return measure_info.sort_keys({k for col in columns.values() for k in col})


def render(columns: Mapping[str, Mapping[str, float]], fmt: str = "table", *,
           keys: list[str] | None = None, title: str = "", extra: Mapping[str, Any] | None = None,
           transpose: bool = False, mark_best: bool = True) -> str:
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
    mark_best : bool
        Markdown: bold each measure's best run. False for a table where no run can be best
        (the shuffled-pairs control: every honest row at chance).
    """
    keys = keys or ordered_keys(columns)
    names = list(columns)
    if fmt == "json":
        return json.dumps({**(extra or {}), "columns": {n: dict(columns[n]) for n in names}},
                          indent=2, default=str)
    if fmt not in ("csv", "markdown", "table"):
        raise ValueError(f"unknown format '{fmt}'; choose table, markdown, csv or json.")
    best = best_per_row(columns, keys) if mark_best else {}
    # Text cells (run names, measure keys) as this format shows them safely.
    text = markdown_cell if fmt == "markdown" else terminal_text
    if fmt == "csv":
        cell = lambda n, k: repr(float(columns[n][k])) if k in columns[n] else ""  # noqa: E731
    elif fmt == "markdown":
        def cell(n: str, k: str) -> str:
            text = format_value(columns[n].get(k), "display")
            return f"**{text}**" if n in best.get(k, ()) else text
    else:
        cell = lambda n, k: format_value(columns[n].get(k))  # noqa: E731
    if transpose:
        header = ["run", *map(text, keys)]
        rows = [[text(n), *(cell(n, k) for k in keys)] for n in names]
    else:
        header = ["measure", *map(text, names)]
        rows = [[text(k), *(cell(n, k) for n in names)] for k in keys]
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

    out = ([terminal_text(title)] if title else []) + [line(header), "  ".join("-" * w for w in widths)]
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


# ---------------------------------------------------------------------------------------------
# how each run was obtained, as text columns beside the measures
# ---------------------------------------------------------------------------------------------
#: Columns :func:`provenance_cells` fills.
PROTOCOL_COLUMNS: tuple[str, ...] = ("protocol", "n_fit", "n_scored")


def add_text_columns(rendered: str, fmt: str, values: Mapping[str, Sequence[str]],
                     header: Sequence[str] = PROTOCOL_COLUMNS) -> str:
    """Append text columns to a run-per-row table rendered as csv or markdown.

    Parameters
    ----------
    rendered : str
        :func:`gapviz.tables.render` output with ``transpose=True``; its rows are the runs.
    fmt : {"csv", "markdown"}
    values : mapping of run label -> cells
        One cell per name of ``header`` for each run, in the table's row order.
    """
    labels = list(values)
    if fmt == "csv":
        rows = list(csv.reader(io.StringIO(rendered)))
        rows[0] += list(header)
        for row, label in zip(rows[1:], labels):
            # A fit file's name is the user's text.
            row += [csv_cell(terminal_text(v)) for v in values[label]]
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        return buf.getvalue()
    if fmt == "markdown":
        lines = rendered.rstrip("\n").split("\n")
        lines[0] += " " + " | ".join(header) + " |"
        lines[1] += "---|" * len(header)
        for i, label in enumerate(labels):
            lines[2 + i] += " " + " | ".join(map(markdown_cell, values[label])) + " |"
        return "\n".join(lines) + "\n"
    raise ValueError(f"text columns are for csv or markdown, not {fmt!r}.")


def provenance_cells(provenance: Mapping[str, Any]) -> list[str]:
    """``[protocol, n_fit, n_scored]`` cells of a run (the protocol names folds and warning)."""
    protocol = provenance.get("protocol", "")
    if protocol == "held-out":
        protocol += f" ({provenance.get('folds')}-fold, seed {provenance.get('seed')})"
    elif protocol == "fit-on" and provenance.get("fit_source"):
        protocol += f" ({provenance['fit_source']})"
    if provenance.get("shuffled"):
        protocol += " shuffled control"
    if provenance.get("warning"):
        protocol += " LEAK WARNING"
    return [protocol, str(provenance.get("n_fit", "")), str(provenance.get("n_scored", ""))]


#: Columns of :func:`run_cells`: a run's parameters, then how it was obtained.
RUN_COLUMNS: tuple[str, ...] = ("parameters", *PROTOCOL_COLUMNS)


def run_cells(provenance: Mapping[str, Any] | None, *, params: str = "",
              n_scored: int | None = None, shuffled: bool = False) -> dict[str, str]:
    """``{column: text}`` of :data:`RUN_COLUMNS` for one run of a measures table.

    ``provenance`` is :meth:`gapviz.protocols.Provenance.to_dict` of the run; None for the raw
    embeddings (no method, nothing fitted; give ``n_scored``, and ``shuffled`` when they were
    scored with their captions permuted). ``params`` is the method's parameters as people read
    them (e.g. "k = 60")."""
    if provenance is None:
        return {"parameters": params,
                "protocol": "none (raw embeddings)" + (" shuffled control" if shuffled else ""),
                "n_fit": "0", "n_scored": "" if n_scored is None else str(n_scored)}
    return {"parameters": params, **dict(zip(PROTOCOL_COLUMNS, provenance_cells(provenance)))}
