"""What the Data page shows, built without Streamlit: preview tiles and captions, the table
of loaded datasets and a load report's skip table. User strings are HTML-escaped."""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from ..embeddings import PairedEmbeddings
from . import palette


def concept_tile_html(pairs: PairedEmbeddings, row: int) -> str:
    """A placeholder tile for a pair without an image (simulated data): its concept's name on
    a colour of its own."""
    cluster = pairs.meta.get("cluster")
    names = pairs.meta.get("cluster_names")
    k = int(cluster[row]) if cluster is not None and len(cluster) == pairs.n else row
    concept = names[k] if names else f"pair {pairs.ids[row]}"
    hue = (k * 47) % 360
    return (f"<div style='aspect-ratio:4/3;border-radius:8px;background:linear-gradient(135deg,"
            f"hsl({hue},70%,88%),hsl({hue},60%,76%));display:flex;align-items:center;"
            f"justify-content:center;color:hsl({hue},45%,28%);font-weight:600;font-size:0.95rem'>"
            f"{html.escape(str(concept))}</div>")


def preview_caption_html(pairs: PairedEmbeddings, row: int) -> str:
    """A pair's id and caption, two lines at most and always two lines tall (so a grid of
    previews stays aligned)."""
    caption = pairs.captions[row] if pairs.captions else ""
    return (f"<div style='font-size:0.8rem;color:{palette.MUTED};line-height:1.3;height:2.6em;"
            "overflow:hidden;display:-webkit-box;-webkit-line-clamp:2;"
            "-webkit-box-orient:vertical;margin:0.1rem 0 0.5rem 0'>"
            f"<code style='font-size:0.72rem'>{html.escape(pairs.ids[row])}</code> "
            f"{html.escape(caption)}</div>")


def datasets_table(datasets: dict[str, Any], active: str) -> pd.DataFrame:
    """One row per loaded dataset: active, name, pairs, models, source."""
    return pd.DataFrame([{"active": name == active, "dataset": name, "pairs": ds.n,
                          "models": ", ".join(ds.models), "source": ds.source}
                         for name, ds in datasets.items()])


def skipped_table(report: Any) -> pd.DataFrame | None:
    """Why pairs were skipped and how many, or None when nothing was."""
    reasons = [(reason, len(rows)) for reason, rows in report.skipped.items() if rows]
    return pd.DataFrame(reasons, columns=["skipped because", "pairs"]) if reasons else None
