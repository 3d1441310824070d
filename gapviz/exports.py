"""Files a user takes away from a session, as bytes or text (no Streamlit here).

- the measures table as CSV or markdown (:func:`measures_csv`, :func:`measures_markdown`), any
  list of records as CSV (:func:`records_csv`, e.g. retrieval results); CSV text cells that a
  spreadsheet would run as formulas are neutralised;
- transformed embeddings in gapviz's own ``.npz`` format, the method and its parameters
  recorded in ``meta`` so the file says how it was made (:func:`transformed_npz`);
- figures as PNG or SVG through plotly + kaleido (:func:`figure_image`; kaleido 1.x drives a
  Chrome/Chromium it finds on the machine), or in the browser through the chart's own
  camera button, set up by :func:`plotly_config`;
- a one-page HTML report of the session (:func:`session_report`), self-contained, that opens
  in any browser without the app.
"""

from __future__ import annotations

import csv
import io
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from . import tables
from .embeddings import PairedEmbeddings, to_npz_bytes
from .report import html_report
from .safety import csv_rows

#: Image formats of :func:`figure_image`.
FIGURE_FORMATS: tuple[str, ...] = ("png", "svg", "pdf")
#: MIME type of each export, by file extension.
MIME: dict[str, str] = {
    "png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf", "csv": "text/csv", "md": "text/markdown",
    "html": "text/html", "npz": "application/octet-stream", "json": "application/json",
}
#: Size of an exported figure (CSS pixels) when the figure does not set one; PNG is drawn at
#: :data:`PNG_SCALE` times that, sharp in a slide or a paper.
EXPORT_WIDTH = 1200
EXPORT_HEIGHT = 600
PNG_SCALE = 2
#: The pip pin that makes :func:`figure_image` work (kaleido 1.x; needs Chrome/Chromium).
KALEIDO_PIN = "kaleido==1.5.0"


class ExportError(RuntimeError):
    """An export that cannot be made here; the message says what to install or do instead."""


def slug(text: str, default: str = "gapviz") -> str:
    """A file-name-safe version of ``text``: "sim-CLIP (simulated)" -> "sim-clip-simulated"."""
    out = re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")
    return out[:60].strip("-") or default


def file_name(*parts: str, ext: str) -> str:
    """``gapviz-<part>-<part>.<ext>`` from the non-empty slugged parts."""
    body = "-".join(p for p in (slug(x, "") for x in parts) if p)
    return f"gapviz-{body}.{ext}" if body else f"gapviz.{ext}"


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------
def measures_csv(columns: Mapping[str, Mapping[str, float]], keys: Sequence[str] | None = None,
                 runs: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """One row per run, one column per measure, full precision (``inf`` for an infinite ratio),
    then how each run was obtained: ``runs`` maps a run to its
    :func:`gapviz.tables.run_cells` (parameters, protocol, pairs fitted and scored)."""
    return _with_runs(tables.render(columns, "csv", keys=list(keys) if keys else None,
                                    transpose=True), "csv", columns, runs)


def records_csv(records: Sequence[Mapping[str, Any]]) -> str:
    """CSV of dict rows (e.g. :func:`gapviz.figures.retrieval.hits_records`), columns in
    first-seen order; text that a spreadsheet would run as a formula is neutralised (captions,
    ids and model names come from uploaded files)."""
    columns = list(dict.fromkeys(k for record in records for k in record))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerows(csv_rows([columns, *([r.get(c, "") for c in columns] for r in records)]))
    return buf.getvalue()


def measures_markdown(columns: Mapping[str, Mapping[str, float]], keys: Sequence[str] | None = None,
                      runs: Mapping[str, Mapping[str, str]] | None = None, *,
                      mark_best: bool = True) -> str:
    """A markdown table, one row per run, the best value of each measure in bold (unless
    ``mark_best`` is False: a shuffled control has no best), then how each run was obtained
    (``runs``, as in :func:`measures_csv`)."""
    return _with_runs(tables.render(columns, "markdown", keys=list(keys) if keys else None,
                                    transpose=True, mark_best=mark_best),
                      "markdown", columns, runs)


def _with_runs(rendered: str, fmt: str, columns: Mapping[str, Any],
               runs: Mapping[str, Mapping[str, str]] | None) -> str:
    if not runs:
        return rendered
    header = tables.RUN_COLUMNS
    cells = {name: [runs.get(name, {}).get(h, "") for h in header] for name in columns}
    return tables.add_text_columns(rendered, fmt, cells, header)


# ---------------------------------------------------------------------------------------------
# embeddings
# ---------------------------------------------------------------------------------------------
def method_description(method: Any, view_params: Mapping[str, Any] | None = None, *,
                       provenance: Any = None) -> dict[str, Any]:
    """``{"method": name, "params": {...}, "protocol": {...}}`` of a fitted method as it is
    being viewed.

    ``view_params`` (e.g. spectral ``n_components`` sliced from a larger fit) override the
    fitted parameters, so the description says what the exported numbers are.
    ``provenance`` (a :class:`gapviz.protocols.Provenance`) records how they were obtained:
    protocol, pairs fitted and scored, folds, seed, any warning.
    None (raw embeddings) gives ``{"method": "orig", "params": {}}``.
    """
    if method is None:
        return {"method": "orig", "params": {}}
    desc = method.describe()
    params = dict(desc.get("params", {}))
    for k, v in (view_params or {}).items():
        params[k] = v.item() if isinstance(v, np.generic) else v
    out = {"method": desc.get("method", getattr(method, "name", "")), "params": params}
    if provenance is not None:
        out["protocol"] = provenance.to_dict()
    return out


def transformed_pairs(pairs: PairedEmbeddings, images: np.ndarray, texts: np.ndarray,
                      description: Mapping[str, Any]) -> PairedEmbeddings:
    """The pairs with transformed embeddings; ``meta`` records how they were made.

    ``meta`` gains ``method``, ``params``, ``protocol`` (how the rows were obtained: protocol,
    pairs fitted and scored, folds, seed, any warning; absent for raw embeddings),
    ``transformed_from`` (the model whose embeddings were transformed) and ``normalized``
    (whether every row has unit length).
    """
    images = np.asarray(images, dtype=np.float32)
    texts = np.asarray(texts, dtype=np.float32)
    unit = bool(np.allclose(np.linalg.norm(images, axis=1), 1, atol=1e-4)
                and np.allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-4))
    extra = {"protocol": dict(description["protocol"])} if description.get("protocol") else {}
    return pairs.with_embeddings(images, texts, method=description.get("method", ""),
                                 params=dict(description.get("params", {})), **extra,
                                 transformed_from=pairs.model, normalized=unit)


def transformed_npz(pairs: PairedEmbeddings, images: np.ndarray, texts: np.ndarray,
                    description: Mapping[str, Any]) -> bytes:
    """A ``.npz`` embeddings file of the transformed pairs (readable by
    :func:`gapviz.load_embeddings`, the CLI and the app)."""
    return to_npz_bytes(transformed_pairs(pairs, images, texts, description))


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------
_render_lock = threading.Lock()
_server_started = False


def kaleido_available() -> bool:
    """Whether kaleido (plotly's static image engine) is installed."""
    import importlib.util

    return importlib.util.find_spec("kaleido") is not None


def figure_image(fig: go.Figure, fmt: str = "png", *, width: int | None = None,
                 height: int | None = None, scale: float | None = None,
                 keep_renderer: bool = False) -> bytes:
    """The figure as PNG, SVG or PDF bytes (plotly ``to_image`` through kaleido).

    Parameters
    ----------
    fig : go.Figure
    fmt : {"png", "svg", "pdf"}
    width, height : int, optional
        CSS pixels; default the figure's own size, else :data:`EXPORT_WIDTH` x
        :data:`EXPORT_HEIGHT`.
    scale : float, optional
        PNG pixel density (default :data:`PNG_SCALE`); ignored for SVG.
    keep_renderer : bool
        Keep one headless browser running for later calls (an app: about 0.3 s per figure
        instead of about 5 s, for the price of one Chromium process).

    Raises
    ------
    ExportError
        kaleido is not installed, or it cannot start a browser.
    """
    global _server_started
    fmt = fmt.lower()
    if fmt not in FIGURE_FORMATS:
        raise ValueError(f"figure format must be one of {FIGURE_FORMATS}, got {fmt!r}.")
    if not kaleido_available():
        raise ExportError(f"PNG/SVG export needs kaleido: pip install '{KALEIDO_PIN}' (and a "
                          "Chrome/Chromium, e.g. apt-get install chromium). Meanwhile, use the "
                          "camera button on the chart, or the HTML report.")
    width = int(width or fig.layout.width or EXPORT_WIDTH)
    height = int(height or fig.layout.height or EXPORT_HEIGHT)
    with _render_lock:  # kaleido's server answers one caller at a time
        try:
            if keep_renderer and not _server_started:
                import kaleido

                kaleido.start_sync_server(silence_warnings=True)
                _server_started = True
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "kopts ignored with a server"
                return fig.to_image(format=fmt, width=width, height=height,
                                    scale=(scale or PNG_SCALE) if fmt == "png" else 1)
        except Exception as err:  # noqa: BLE001 - the engine's errors vary; say what to do
            raise ExportError(f"could not draw the figure as {fmt.upper()} ({type(err).__name__}: "
                              f"{err}). kaleido needs Chrome or Chromium on this machine "
                              "(apt-get install chromium); the chart's camera button and the "
                              "HTML report work without it.") from err


def plotly_config(name: str, fmt: str = "png", **extra: Any) -> dict[str, Any]:
    """``config`` of a chart whose camera button downloads ``name.fmt`` (PNG or SVG), drawn by
    the browser itself: no server-side engine needed."""
    if fmt not in FIGURE_FORMATS:
        raise ValueError(f"format must be one of {FIGURE_FORMATS}, got {fmt!r}.")
    return {"displaylogo": False,
            "toImageButtonOptions": {"format": fmt, "filename": slug(name),
                                     "scale": PNG_SCALE if fmt == "png" else 1},
            **extra}


# ---------------------------------------------------------------------------------------------
# the session report
# ---------------------------------------------------------------------------------------------
def dataset_summary(pairs: PairedEmbeddings, *, dataset: str = "", source: str = "",
                    model: str = "") -> dict[str, Any]:
    """The "Data" lines of a report: dataset, source, model, N, d, simulated (and what it imitates)."""
    info: dict[str, Any] = {}
    if dataset:
        info["dataset"] = dataset
    if source:
        info["source"] = source
    info["model"] = model or pairs.model or "(unknown)"
    info["pairs"] = f"{pairs.n:,}"
    info["dimension"] = pairs.dim
    info["simulated"] = pairs.is_simulated
    if pairs.is_simulated:
        info["imitates"] = pairs.meta.get("imitates", "a real model")
    return info


_SECTION_ANCHOR = "<h2>What the measures mean</h2>"


def session_report(pairs: PairedEmbeddings, columns: Mapping[str, Mapping[str, float]], *,
                   title: str = "Modality gap report", dataset: str = "", source: str = "",
                   model: str = "", method: Mapping[str, Any] | None = None,
                   figures: Sequence[tuple[str, go.Figure]] = (), keys: Sequence[str] | None = None,
                   sections: Sequence[tuple[str, str]] = (), notes: Sequence[str] = (),
                   mark_best: bool = True) -> str:
    """A one-page, self-contained HTML report of what the user is looking at.

    Parameters
    ----------
    pairs : PairedEmbeddings
        The active embeddings (for the "Data" lines).
    columns : mapping of run -> measures
        The measures table (e.g. ``{"ORIG": ..., "SPECTRAL": ...}``, or a comparison).
    method : mapping, optional
        :func:`method_description` of the method shown.
    figures : sequence of (caption, go.Figure)
        Interactive in the file (plotly.js inlined once).
    sections : sequence of (title, html)
        Extra HTML blocks (e.g. the retrieval side by side), placed after the measures and
        before the figures. The HTML must be self-contained (data URIs, inline styles).
    notes : sequence of str
        Lines under the measures.
    mark_best : bool
        Mark each measure's best run (False for a shuffled control, where none can be best).
    """
    import html as _html

    page = html_report(title=title, dataset=dataset_summary(pairs, dataset=dataset, source=source,
                                                            model=model),
                       columns=columns, figures=(), method=method,
                       keys=list(keys) if keys else None, notes=list(notes),
                       mark_best=mark_best)
    parts = [f"<h2>{_html.escape(t)}</h2>\n{body}\n" for t, body in sections]
    for i, (caption, fig) in enumerate(figures):  # plotly.js inlined once, with the first
        parts.append(f"<h2>{_html.escape(caption)}</h2>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False,
                                 config={"displaylogo": False}))
    if parts:
        at = page.find(_SECTION_ANCHOR)
        at = at if at >= 0 else page.rfind("</body>")
        page = page[:at] + "\n".join(parts) + page[at:]
    return page
