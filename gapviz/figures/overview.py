"""What the Overview page shows, as HTML built without Streamlit: numbered panel titles,
modality pills and a query's top hits in the mixed pool. User strings are HTML-escaped."""

from __future__ import annotations

import html

from ..embeddings import PairedEmbeddings
from ..retrieval import QueryResult
from . import palette
from .gap import MODALITY_COLORS


def panel_title_html(number: int, text: str, note: str = "") -> str:
    """A numbered panel title ("1 The gap, seen · note")."""
    extra = (f" <span style='color:{palette.MUTED};font-weight:400;font-size:0.85rem'>· "
             f"{html.escape(note)}</span>") if note else ""
    return (f"<div style='font-weight:600;font-size:1.02rem;line-height:1.6;margin:0.1rem 0 0 0'>"
            f"<span style='display:inline-block;width:1.35rem;height:1.35rem;border-radius:50%;"
            f"background:{palette.ACCENT};color:white;text-align:center;font-size:0.8rem;"
            f"line-height:1.35rem;margin-right:0.35rem'>{number}</span>{html.escape(text)}"
            f"{extra}</div>")


def pill_html(modality: str) -> str:
    """A small coloured IMAGE / TEXT label."""
    color = MODALITY_COLORS[modality]
    return (f"<span style='background:{color};color:white;border-radius:4px;padding:1px 6px;"
            f"font-size:0.68rem;font-weight:600;letter-spacing:0.02em;white-space:nowrap'>"
            f"{html.escape(modality.upper())}</span>")


def describe_item(pairs: PairedEmbeddings, row: int, modality: str) -> str:
    """A short text for one pool item: its caption (texts) or "image of “caption”" (images)."""
    caption = pairs.captions[row] if pairs.captions else f"pair {pairs.ids[row]}"
    return caption if modality == "text" else f"image of “{caption}”"


def hits_html(pairs: PairedEmbeddings, result: QueryResult, label: str) -> str:
    """A query's top hits, one line each (rank, modality, text), the true partner marked."""
    rows = []
    for hit in result.hits:
        text = describe_item(pairs, hit.index, hit.modality)
        mark = (f"<span style='color:{palette.PAIRED};font-weight:700;white-space:nowrap'>"
                "&#10003; pair</span>" if hit.is_partner else "")
        weight = "600" if hit.is_partner else "400"
        rows.append(
            "<div style='display:flex;align-items:center;gap:0.5rem;padding:2px 0;"
            f"border-bottom:1px solid {palette.SEPARATOR}'>"
            f"<span style='color:{palette.FAINT};width:1rem;text-align:right'>{hit.rank}</span>"
            f"<span style='width:3.3rem'>{pill_html(hit.modality)}</span>"
            f"<span style='flex:1;min-width:0;overflow:hidden;text-overflow:ellipsis;"
            f"white-space:nowrap;font-weight:{weight}'>{html.escape(text)}</span>{mark}</div>")
    partner = ""
    if result.partner_rank is not None:
        partner = f"its own caption ranks <b>#{result.partner_rank:,}</b>"
    return (f"<div style='font-size:0.86rem'><div style='margin-bottom:0.2rem'><b>"
            f"{html.escape(label)}</b> <span style='color:{palette.MUTED}'>· {partner}</span></div>"
            f"{''.join(rows)}</div>")
