"""Download buttons every page can offer: the measures table (CSV, markdown), transformed
embeddings (``.npz`` with the method and its parameters in ``meta``), figures (PNG, SVG) and a
one-page HTML report. Not a page of its own: pages call :func:`export_menu` (or one of the
single-button helpers) with their prefix, so every widget key stays page-prefixed.

The files are made by :mod:`gapviz.exports`; heavy ones (figures, the report, embeddings) are
made only when their button is clicked (Streamlit's deferred download data), so drawing a
page never pays for an export nobody asked for.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from gapviz import exports, tables
from gapviz.methods import method_class

log = logging.getLogger("gapviz.app")


@dataclass
class EmbeddingsExport:
    """Transformed embeddings to offer as ``.npz``: the pairs, the arrays and the method."""

    pairs: Any
    images: np.ndarray
    texts: np.ndarray
    description: Mapping[str, Any]


@dataclass
class ExportItems:
    """What a page can export; any field left empty gets no button."""

    columns: Mapping[str, Mapping[str, float]] | None = None
    keys: Sequence[str] | None = None
    runs: Mapping[str, Mapping[str, str]] | None = None
    """How each run of ``columns`` was obtained (:func:`gapviz.tables.run_cells`): written
    beside its measures in the CSV and markdown."""
    mark_best: bool = True
    """Bold each measure's best run in the markdown (False for a shuffled control)."""
    embeddings: EmbeddingsExport | None = None
    figures: Sequence[tuple[str, go.Figure | Callable[[], go.Figure]]] = ()
    """(caption, figure) of each figure; the figure may be a function that makes it, called
    when it is downloaded."""
    report: Callable[[], str] | None = None
    extra: Sequence[tuple[str, str, Callable[[], str | bytes], str]] = field(default_factory=tuple)
    """(label, file name, data callable, mime) of further files (e.g. a results CSV)."""


def images_supported() -> bool:
    """PNG/SVG can be drawn on the server: kaleido installed and a Chrome/Chromium present."""
    return exports.kaleido_available() and any(
        shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "chrome"))


def chart_config(name: str, fmt: str = "png", **extra: Any) -> dict[str, Any]:
    """``config`` of an ``st.plotly_chart`` whose camera button saves ``name`` (browser-side)."""
    return exports.plotly_config(name, fmt, **extra)


def _deferred(make: Callable[[], str | bytes], what: str) -> Callable[[], str | bytes]:
    """Download data made on click; a failure is logged (the click cannot show a message)."""

    def run() -> str | bytes:
        try:
            return make()
        except Exception:
            log.exception("export of %s failed", what)
            raise

    return run


def raw_and_method(raw: Mapping[str, float], n_scored: int, method: str,
                   metrics: Mapping[str, float] | None = None, provenance: Any = None,
                   params: Mapping[str, Any] | None = None
                   ) -> tuple[dict[str, Mapping[str, float]], dict[str, dict[str, str]]]:
    """``(columns, runs)`` of a measures export of the raw embeddings ("ORIG") and, unless
    ``method`` is "orig", the method's ``metrics`` as scored under ``provenance`` (a
    :class:`gapviz.protocols.Provenance`) with ``params``."""
    columns: dict[str, Mapping[str, float]] = {"ORIG": raw}
    runs = {"ORIG": tables.run_cells(None, n_scored=n_scored)}
    if method != "orig" and metrics is not None and provenance is not None:
        run = f"{method.upper()} ({provenance.protocol})"
        columns[run] = metrics
        runs[run] = tables.run_cells(provenance.to_dict(),
                                     params=method_class(method).format_params(dict(params or {})))
    return columns, runs


def measures_buttons(columns: Mapping[str, Mapping[str, float]], *, prefix: str, stem: str,
                     keys: Sequence[str] | None = None,
                     runs: Mapping[str, Mapping[str, str]] | None = None,
                     mark_best: bool = True) -> None:
    """CSV and markdown of the measures table (one row per run, with how it was obtained)."""
    # one under the other: side by side in the menu, "Measures · Markdown" was cut off
    st.download_button("Measures · CSV", exports.measures_csv(columns, keys, runs),
                       file_name=exports.file_name(stem, "measures", ext="csv"),
                       mime=exports.MIME["csv"], key=f"{prefix}_dl_csv", on_click="ignore",
                       icon=":material/table:", width="stretch")
    st.download_button("Measures · Markdown", exports.measures_markdown(columns, keys, runs, mark_best=mark_best),
                       file_name=exports.file_name(stem, "measures", ext="md"),
                       mime=exports.MIME["md"], key=f"{prefix}_dl_md", on_click="ignore",
                       icon=":material/article:", width="stretch")


def embeddings_button(item: EmbeddingsExport, *, prefix: str, stem: str) -> None:
    """The transformed embeddings as a gapviz ``.npz`` (method and parameters in ``meta``)."""
    method = item.description.get("method", "method")
    st.download_button(
        f"Embeddings after {method} · .npz",
        _deferred(lambda: exports.transformed_npz(item.pairs, item.images, item.texts,
                                                  item.description), "embeddings"),
        file_name=exports.file_name(stem, method, ext="npz"), mime=exports.MIME["npz"],
        key=f"{prefix}_dl_npz", on_click="ignore", icon=":material/data_array:", width="stretch",
        help="gapviz's embeddings format: load it on Data, with `python -m gapviz evaluate FILE`, "
             "or with numpy. `meta` records the method and its parameters.")


def figure_buttons(figures: Sequence[tuple[str, go.Figure | Callable[[], go.Figure]]], *,
                   prefix: str, stem: str) -> None:
    """PNG (at a chosen scale), SVG and PDF of each figure, with its title and axis labels
    (drawn on the server by kaleido, on click; a figure given as a function is made then)."""
    if not figures:
        return
    if not images_supported():
        st.caption("PNG/SVG/PDF: use the camera button at the top right of each chart (this "
                   f"server cannot draw figures: `pip install '{exports.KALEIDO_PIN}'` and "
                   "Chromium).")
        return
    scale = st.select_slider("PNG scale", options=[1, 2, 3, 4], value=exports.PNG_SCALE,
                             key=f"{prefix}_png_scale",
                             help="Pixels per CSS pixel of the PNG (2 is sharp on a slide, 4 for "
                                  "print). SVG and PDF are vector: no scale.")
    for i, (caption, fig) in enumerate(figures):
        # the figure's name on its own line, its three buttons under it: in one row with the
        # name, the menu's width left each button its icon only, no "PNG" / "SVG" / "PDF"
        st.markdown(f"<span style='font-size:0.85rem'>{caption}</span>", unsafe_allow_html=True)
        c1, c2, c3 = st.columns(3)
        for col, fmt in ((c1, "png"), (c2, "svg"), (c3, "pdf")):
            col.download_button(
                fmt.upper(),
                _deferred(lambda f=fig, x=fmt: exports.figure_image(
                    f if isinstance(f, go.Figure) else f(), x, scale=scale, keep_renderer=True),
                          f"figure {caption} as {fmt}"),
                file_name=exports.file_name(stem, caption, ext=fmt), mime=exports.MIME[fmt],
                key=f"{prefix}_dl_fig{i}_{fmt}", on_click="ignore", width="stretch",
                icon=":material/image:")


def report_button(make: Callable[[], str], *, prefix: str, stem: str) -> None:
    """The one-page HTML report (self-contained: opens in a browser without the app)."""
    st.download_button("Report · HTML", _deferred(make, "HTML report"),
                       file_name=exports.file_name(stem, "report", ext="html"),
                       mime=exports.MIME["html"], key=f"{prefix}_dl_report", on_click="ignore",
                       icon=":material/description:", type="primary", width="stretch",
                       help="One page with the data, the method, the measures and the figures; "
                            "interactive, no app or network needed to open it.")


def export_menu(items: ExportItems, *, prefix: str, stem: str, label: str = "Export") -> None:
    """A popover with a download button for each thing the page can export."""
    with st.popover(label, icon=":material/download:", key=f"{prefix}_export"):
        if items.report is not None:
            report_button(items.report, prefix=prefix, stem=stem)
        if items.columns:
            measures_buttons(items.columns, prefix=prefix, stem=stem, keys=items.keys,
                             runs=items.runs, mark_best=items.mark_best)
        if items.embeddings is not None:
            embeddings_button(items.embeddings, prefix=prefix, stem=stem)
        for i, (text, name, make, mime) in enumerate(items.extra):
            st.download_button(text, _deferred(make, name), file_name=name, mime=mime,
                               key=f"{prefix}_dl_extra{i}", on_click="ignore",
                               icon=":material/download:", width="stretch")
        if items.figures:
            st.markdown("**Figures**")
            figure_buttons(items.figures, prefix=prefix, stem=stem)
