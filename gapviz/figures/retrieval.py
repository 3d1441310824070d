"""What the Retrieval page shows for one query, built without Streamlit.

The paper's qualitative evidence (Role et al. 2025, section 3): in the mixed image + text pool,
an image query on raw embeddings returns only images; once the gap is closed, its own caption
rises to the top. This module turns :class:`~gapviz.retrieval.QueryResult` objects into

- HTML cards of the top K (thumbnail or caption, modality badge, rank, similarity, the true
  partner highlighted, and its rank when it is beyond K), self-contained (thumbnails are data
  URIs) so the same HTML goes into the exported report;
- a per-query figure: where the true partner lands among the 2N - 1 items, and how many of the
  top K share the query's modality;
- rows for a CSV of the results;

and places a free (typed) query into a method's space through its out-of-sample path.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..embeddings import PairedEmbeddings
from ..retrieval import IMAGE, TEXT, Hit, QueryResult, retrieve, retrieve_vector
from . import palette
from .gap import FONT, MODALITY_COLORS, hover_escape

#: Colour of the true partner's highlight (the same green as the histograms' "true pairs").
PARTNER_COLOR = palette.PAIRED
PARTNER_BG = palette.PAIRED_BG
#: Thumbnail edge in pixels (cards show them at :data:`THUMB_CSS_PX`, sharp on HiDPI screens).
THUMB_PX = 112
THUMB_CSS_PX = 56
#: Captions are cut to this many characters on a card.
CARD_CAPTION_CHARS = 140
#: Thumbnails kept in memory (by path).
THUMB_CACHE = 2048


# ---------------------------------------------------------------------------------------------
# the query
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Query:
    """A retrieval query: an item of the pool (``row`` of ``modality``) or free text.

    Attributes
    ----------
    modality : {"image", "text"}
    row : int or None
        Pair index of a pool item; None for a free query.
    text : str
        The typed text of a free query ("" otherwise).
    """

    modality: str
    row: int | None = None
    text: str = ""

    @property
    def is_free(self) -> bool:
        return self.row is None


def place_free_query(method: Any, vector: np.ndarray, modality: str) -> np.ndarray:
    """A new (unseen) embedding placed in a fitted method's space: its out-of-sample path.

    Parameters
    ----------
    method : GapMethod, gapviz.runs.FitView or None
        A fitted method, or a run's read-only fit (which applies the run's own view
        parameters, e.g. spectral k, without changing the shared fit); None (raw embeddings)
        returns ``vector`` unchanged.
    vector : ndarray of shape (d,)
    modality : {"image", "text"}

    Returns
    -------
    ndarray of shape (k,)
    """
    v = np.asarray(vector, dtype=np.float32).reshape(1, -1)
    if method is None:
        return v[0]
    out = method.transform_images(v) if modality == IMAGE else method.transform_texts(v)
    return np.asarray(out, dtype=np.float32)[0]


def query_model(pairs: PairedEmbeddings) -> tuple[Any, str]:
    """The open_clip model that made ``pairs`` (a ``gapviz.encode.ModelSpec``), needed to embed
    a typed query, or ``(None, why not)`` for simulated data and files of unknown origin."""
    if pairs.is_simulated:
        return None, ("Free text needs the model that made the embeddings; the demo is simulated "
                      "(no model). Load your own pairs on **Data** to type queries.")
    name = pairs.meta.get("model_name")
    if not name:
        return None, ("These embeddings were loaded from a file, so gapviz does not know which "
                      "model made them; embed pairs on **Data** to type queries.")
    from .. import hosting
    from ..encode import KNOWN_MODELS, ModelSpec

    spec = ModelSpec(str(name), pairs.meta.get("pretrained"))
    listed = [(m.name, m.pretrained) for m in KNOWN_MODELS] + [(m.name, None) for m in KNOWN_MODELS]
    try:  # a hosted demo loads only its listed models, whatever a file's meta names
        hosting.check_model(spec.name, spec.pretrained, listed)
    except hosting.HostedRefusal as refusal:
        return None, f"Free text is not available for these embeddings: {refusal}"
    return spec, ""


def run_query(pairs: PairedEmbeddings, images: np.ndarray, texts: np.ndarray, query: Query,
              k: int, *, method: Any = None, vector: np.ndarray | None = None,
              scores: Any = None) -> tuple[QueryResult, QueryResult]:
    """The query's top ``k`` in the raw mixed pool and in the method's pool.

    Parameters
    ----------
    pairs : PairedEmbeddings
        The raw pairs.
    images, texts : ndarray of shape (N, k')
        The pool after the method (the raw arrays for no method).
    query : Query
        A pool item, or free text whose embedding is ``vector`` (shape (d,)); a free query
        is placed in the method's space by its out-of-sample path (``method``: a fitted
        method or a run's read-only fit; None for raw embeddings).
    scores : ScoreTerms, optional
        A score correction's terms (the run's): the method's pool is ranked on the corrected
        scores. Its terms are those of the pool's own items, so a free query is refused.
    """
    X, Y = pairs.image_embeddings, pairs.text_embeddings
    if not query.is_free:
        groups = pairs.group_ids  # several captions per image: each image once in the pool
        return (retrieve(X, Y, query.modality, query.row, k, groups=groups),
                retrieve(images, texts, query.modality, query.row, k, scores=scores,
                         groups=groups))
    if scores is not None:
        raise ValueError("a score correction ranks the pool's own items (its terms come from "
                         "the protocol's fits for each scored pair); typed text has no terms. "
                         "Pick a query from the pool.")
    if vector is None:
        raise ValueError("a free-text query needs its embedding.")
    if vector.shape[0] != X.shape[1]:
        raise ValueError(f"the model gives {vector.shape[0]}-d vectors but the data is "
                         f"{X.shape[1]}-d; the embeddings were not made by this model.")
    placed = place_free_query(method, vector, query.modality)
    return (retrieve_vector(vector, X, Y, query.modality, k),
            retrieve_vector(placed, images, texts, query.modality, k))


# ---------------------------------------------------------------------------------------------
# pool items: thumbnails, concept tiles, captions
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=THUMB_CACHE)
def thumbnail_uri(path: str, size: int = THUMB_PX) -> str | None:
    """A small JPEG of the image at ``path`` as a ``data:`` URI, or None when it cannot be read.

    Data URIs keep the cards (and the exported report) self-contained: no file server needed.
    A missing, broken or oversized image gives None (the card shows a placeholder).
    """
    from PIL import ImageOps

    from ..data.images import thumbnail

    image = thumbnail(path, size * 2)  # pixel limit and decode budget of every image gapviz reads
    if image is None:
        return None
    buf = io.BytesIO()
    ImageOps.fit(image, (size, size)).save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def concept_of(pairs: PairedEmbeddings, row: int) -> tuple[str, int] | None:
    """``(concept name, cluster index)`` of a simulated pair, or None for real data."""
    cluster = pairs.meta.get("cluster")
    names = pairs.meta.get("cluster_names")
    if cluster is None or names is None or len(cluster) != pairs.n:
        return None
    k = int(cluster[row])
    return (str(names[k]) if k < len(names) else f"concept {k}"), k


def caption_of(pairs: PairedEmbeddings, row: int) -> str:
    return pairs.captions[row] if pairs.captions else f"pair {pairs.ids[row]}"


def _esc(text: Any) -> str:
    """A user's string (id, caption, file name) for the HTML cards: escaped, on one line. One
    line matters: the cards go through ``st.markdown``, where a blank line would end the HTML
    block and let the rest be read as markdown."""
    return html.escape(" ".join(str(text).split()))


def _short(text: str, limit: int = CARD_CAPTION_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _badge(modality: str) -> str:
    color = MODALITY_COLORS[modality]
    return (f"<span class='gv-badge' style='background:{color}'>"
            f"{'IMAGE' if modality == IMAGE else 'TEXT'}</span>")


def _visual(pairs: PairedEmbeddings, row: int, modality: str, px: int = THUMB_CSS_PX) -> str:
    """The square on the left of a card: the thumbnail, a concept tile, or a text glyph."""
    box = f"width:{px}px;height:{px}px;border-radius:6px;flex:none;"
    if modality == TEXT:
        c = MODALITY_COLORS[TEXT]
        return (f"<div style='{box}background:{palette.TEXT_TILE_BG};"
                f"border:1px solid {palette.TEXT_TILE_BORDER};color:{c};display:flex;"
                f"align-items:center;justify-content:center;font:600 {px // 3}px Georgia,serif'>Aa</div>")
    uri = thumbnail_uri(pairs.image_paths[row]) if pairs.image_paths else None
    if uri:
        return f"<img src='{uri}' alt='image {_esc(pairs.ids[row])}' style='{box}object-fit:cover'>"
    concept = concept_of(pairs, row)
    if concept is not None:  # simulated: the pair's concept stands for the picture
        name, k = concept
        hue = (k * 47) % 360
        return (f"<div style='{box}background:linear-gradient(135deg,hsl({hue},70%,88%),hsl({hue},60%,74%));"
                f"color:hsl({hue},45%,26%);display:flex;align-items:center;justify-content:center;"
                f"text-align:center;font-size:10px;font-weight:600;line-height:1.1;padding:2px;"
                f"box-sizing:border-box'>{_esc(name)}</div>")
    return (f"<div style='{box}background:{palette.IMAGE_TILE_BG};"
            f"border:1px solid {palette.IMAGE_TILE_BORDER};color:{MODALITY_COLORS[IMAGE]};"
            f"display:flex;align-items:center;justify-content:center;font-size:11px'>image</div>")


def item_text(pairs: PairedEmbeddings, row: int, modality: str) -> str:
    """What a card says about a pool item: a caption, or which pair an image belongs to."""
    if modality == TEXT:
        return _short(caption_of(pairs, row))
    if pairs.image_paths:
        return Path(pairs.image_paths[row]).name
    concept = concept_of(pairs, row)
    if concept is not None:
        return f"a simulated image of {concept[0]}"
    return f"image of pair {pairs.ids[row]}"


# ---------------------------------------------------------------------------------------------
# HTML cards
# ---------------------------------------------------------------------------------------------
CARDS_CSS = """
<style>
.gv-cards{font-family:inherit;font-size:0.86rem}
.gv-card{display:flex;align-items:center;gap:0.6rem;padding:0.3rem 0.5rem;margin:0 0 0.3rem 0;
 border:1px solid %(border)s;border-radius:8px;background:white}
.gv-card.gv-partner{border:2px solid %(green)s;background:%(greenbg)s}
.gv-rank{width:2.6rem;flex:none;text-align:right;color:%(muted)s;font-variant-numeric:tabular-nums;font-weight:600}
.gv-body{flex:1;min-width:0}
.gv-line{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.gv-sub{color:%(muted)s;font-size:0.76rem}
.gv-badge{color:white;border-radius:4px;padding:0 5px;font-size:0.68rem;font-weight:700;letter-spacing:.02em}
.gv-mark{color:%(green)s;font-weight:700;font-size:0.76rem;white-space:nowrap}
.gv-sim{width:3.4rem;flex:none;text-align:right;font-variant-numeric:tabular-nums;color:%(title)s}
.gv-gap{text-align:center;color:%(faint)s;margin:-0.1rem 0 0.2rem 0;letter-spacing:.3em}
.gv-head{font-weight:600;margin:0.1rem 0 0.35rem 0}
</style>
""" % {"green": PARTNER_COLOR, "greenbg": PARTNER_BG, "border": palette.BORDER,
       "muted": palette.MUTED, "title": palette.TITLE, "faint": palette.FAINT}


def _card(pairs: PairedEmbeddings, hit: Hit, partner_label: str, note: str = "") -> str:
    cls = "gv-card gv-partner" if hit.is_partner else "gv-card"
    mark = f" <span class='gv-mark'>✓ {partner_label}</span>" if hit.is_partner else ""
    text = _esc(item_text(pairs, hit.index, hit.modality))
    sub = f"pair {_esc(pairs.ids[hit.index])}" + (f" · {_esc(note)}" if note else "")
    if hit.modality == IMAGE and pairs.captions:
        sub += f" · its caption: “{_esc(_short(pairs.captions[hit.index], 70))}”"
    return (f"<div class='{cls}' data-rank='{hit.rank}' data-modality='{hit.modality}' "
            f"data-row='{hit.index}'><div class='gv-rank'>#{hit.rank:,}</div>"
            f"{_visual(pairs, hit.index, hit.modality)}"
            f"<div class='gv-body'><div class='gv-line'>{_badge(hit.modality)} {text}{mark}</div>"
            f"<div class='gv-line gv-sub'>{sub}</div></div>"
            f"<div class='gv-sim' title='cosine similarity to the query'>{hit.similarity:.3f}</div></div>")


def partner_label(query: Query) -> str:
    """How the true partner is named: "its caption" for an image query, "its image" for a text."""
    return "its caption" if query.modality == IMAGE else "its image"


def hits_html(pairs: PairedEmbeddings, result: QueryResult, query: Query, *,
              title: str = "", css: bool = True) -> str:
    """The top K of one column as HTML cards, best first; the true partner highlighted.

    When the partner is beyond K it is appended after a gap with its real rank, so the reader
    always sees where it landed.
    """
    label = partner_label(query)
    parts = [CARDS_CSS if css else "", "<div class='gv-cards'>"]
    if title:
        parts.append(f"<div class='gv-head'>{_esc(title)}</div>")
    parts += [_card(pairs, h, label) for h in result.hits]
    if result.partner_rank is not None and not any(h.is_partner for h in result.hits):
        partner_mod = TEXT if query.modality == IMAGE else IMAGE
        hit = Hit(result.partner_rank, partner_mod, int(query.row), float(result.partner_similarity),
                  True)
        parts.append("<div class='gv-gap'>⋯</div>")
        parts.append(_card(pairs, hit, label, f"beyond the top {len(result.hits)}"))
    parts.append("</div>")
    return "".join(parts)


def query_html(pairs: PairedEmbeddings, query: Query) -> str:
    """The query as a card: its picture or text, modality, pair id."""
    if query.is_free:
        body = (f"{_badge(query.modality)} <b>free text</b> typed by you: "
                f"<i>“{_esc(_short(query.text, 200))}”</i>")
        visual = _visual(pairs, 0, TEXT, 64)
        sub = "embedded by the model, then placed in each space (raw; the method's out-of-sample path)"
    else:
        row = int(query.row)
        visual = _visual(pairs, row, query.modality, 64)
        if query.modality == IMAGE:
            what = _esc(item_text(pairs, row, IMAGE))
            body = f"{_badge(IMAGE)} the <b>image</b> of pair <code>{_esc(pairs.ids[row])}</code> · {what}"
            sub = f"its caption (the true partner to find): “{_esc(_short(caption_of(pairs, row)))}”"
        else:
            body = (f"{_badge(TEXT)} the <b>caption</b> of pair <code>{_esc(pairs.ids[row])}</code>: "
                    f"“{_esc(_short(caption_of(pairs, row)))}”")
            sub = "the true partner to find is its image"
    return (CARDS_CSS + "<div class='gv-cards'>"
            f"<div class='gv-card' style='border-color:{palette.RULE}'>"
            f"<div class='gv-rank'>query</div>{visual}<div class='gv-body'><div class='gv-line'>{body}</div>"
            f"<div class='gv-line gv-sub'>{sub}</div></div></div></div>")


def side_by_side_html(pairs: PairedEmbeddings, query: Query,
                      columns: Sequence[tuple[str, QueryResult]]) -> str:
    """Query card and the result columns next to each other (for the exported report)."""
    cells = "".join(f"<div style='flex:1;min-width:0'>{hits_html(pairs, r, query, title=t, css=False)}</div>"
                    for t, r in columns)
    return query_html(pairs, query) + f"<div style='display:flex;gap:1rem;margin-top:.5rem'>{cells}</div>"


def summary_line(result: QueryResult, query: Query, k: int, pool_size: int) -> str:
    """One sentence on a column: own-modality share of the top K and the partner's rank."""
    own = "images" if query.modality == IMAGE else "texts"
    line = f"{result.same_modality_in_top_k} of the top {k} are {own}".capitalize()
    if result.partner_rank is not None:
        where = f"in the top {k}" if result.partner_rank <= k else f"beyond the top {k}"
        line += f"; {partner_label(query)} ranks #{result.partner_rank:,} of {pool_size:,} ({where})"
    return line + "."


# ---------------------------------------------------------------------------------------------
# per-query figure
# ---------------------------------------------------------------------------------------------
def query_figure(result: QueryResult, *, k: int, pool_size: int, query: Query,
                 ids: Sequence[str] | None = None, title: str | None = None,
                 height: int = 190) -> go.Figure:
    """Two small panels for one query: where the true partner lands, and the top K by modality.

    Parameters
    ----------
    result : QueryResult
    k : int
        K of the top-K list (the shaded band of the rank axis).
    pool_size : int
        Items a query is ranked against, 2N - 1 (fixed axis range, so two columns compare).
    query : Query
    ids : sequence of str, optional
        Pair ids, carried in the partner marker's ``customdata`` (``[row, id, modality]``;
        the id HTML-escaped, as its hover label shows it).
    title : str, optional
        Shown as plain text (HTML-escaped: Plotly renders tags in titles).

    Returns
    -------
    go.Figure
        Left: a log-scale rank axis 1 .. ``pool_size`` with the top K shaded and the partner
        marked (green inside the top K, red beyond). Right: a stacked bar of the top K,
        the query's own modality first.
    """
    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.09,
                        subplot_titles=(f"Rank of {partner_label(query)} (log scale, lower is better)"
                                        if not query.is_free else "Rank of the true partner",
                                        f"Top {k} by modality"))
    fig.update_annotations(font=dict(size=12, color=palette.TITLE))  # the two panel titles
    hi = max(pool_size, 2)
    # On a log axis, shapes take data values and annotations log10 values (plotly.js).
    fig.add_vrect(x0=10 ** -0.15, x1=max(k, 1) + 0.5, fillcolor=PARTNER_COLOR,
                  opacity=0.12, line_width=0, row=1, col=1, exclude_empty_subplots=False)
    fig.add_annotation(x=math.log10(max(math.sqrt(max(k, 1)), 1.0)), y=0.93, yref="y domain",
                       text=f"top {k}", showarrow=False, font=dict(size=11, color=PARTNER_COLOR),
                       row=1, col=1, exclude_empty_subplots=False)
    if result.partner_rank is not None:
        r = int(result.partner_rank)
        inside = r <= k
        color = PARTNER_COLOR if inside else palette.MISSED
        row = int(query.row) if query.row is not None else -1
        partner_mod = TEXT if query.modality == IMAGE else IMAGE
        pair_id = ids[row] if ids is not None and row >= 0 else str(row)
        custom = [[row, hover_escape(pair_id), partner_mod]]
        fig.add_trace(go.Scatter(
            x=[r], y=[0], mode="markers+text", text=[f"#{r:,}"], textposition="top center",
            textfont=dict(size=13, color=color), customdata=custom, showlegend=False,
            marker=dict(symbol="diamond", size=16, color=color, line=dict(color="white", width=1.5)),
            hovertemplate=("true partner (pair %{customdata[1]}) at rank %{x:,} of "
                           f"{pool_size:,}<extra></extra>")),
            row=1, col=1)
    else:
        fig.add_annotation(x=math.log10(math.sqrt(hi)), y=0, text="free query: no true partner",
                           showarrow=False, font=dict(size=12, color=palette.MUTED), row=1, col=1,
                           exclude_empty_subplots=False)
    fig.update_xaxes(type="log", range=[-0.15, math.log10(hi) + 0.08], row=1, col=1,
                     tickvals=[v for v in (1, 10, 100, 1000, 10000, 100000) if v <= hi] + [hi],
                     ticktext=[f"{v:,}" for v in (1, 10, 100, 1000, 10000, 100000) if v <= hi]
                     + [f"{hi:,}"], showgrid=True, gridcolor=palette.GRID)
    fig.update_yaxes(visible=False, range=[-0.6, 1.0], row=1, col=1)

    own, other = query.modality, (TEXT if query.modality == IMAGE else IMAGE)
    n_own = int(result.same_modality_in_top_k)
    n_other = len(result.hits) - n_own
    for name, count in ((own, n_own), (other, n_other)):
        fig.add_trace(go.Bar(
            x=[count], y=[""], orientation="h", name=f"{name}s", showlegend=False,
            marker=dict(color=MODALITY_COLORS[name], line=dict(width=0)),
            text=[f"{count} {'image' if name == IMAGE else 'text'}{'s' if count != 1 else ''}" if count else ""],
            textposition="inside", insidetextanchor="middle", textfont=dict(color="white", size=12),
            hovertemplate=f"{count} of the top {k} are {name}s<extra></extra>"), row=1, col=2)
    fig.update_xaxes(range=[0, max(k, 1)], row=1, col=2, showgrid=False, tickvals=[0, k])
    fig.update_yaxes(visible=False, row=1, col=2)
    fig.update_layout(
        barmode="stack", template="plotly_white", font=FONT, height=height, bargap=0.45,
        margin=dict(l=8, r=8, t=58 if title else 34, b=8), dragmode=False,
        title=dict(text=hover_escape(title), x=0.0, font=dict(size=14)) if title else None)
    return fig


# ---------------------------------------------------------------------------------------------
# rows for a CSV
# ---------------------------------------------------------------------------------------------
def hits_records(pairs: PairedEmbeddings, results: Sequence[tuple[str, QueryResult]], *,
                 query: Query | None = None, how: Mapping[str, str] | None = None
                 ) -> list[dict[str, Any]]:
    """One dict per (column, hit): the top K of each column, for a table or a CSV.

    With ``query`` each row also says what was asked (the query's modality, pair id or typed
    text) and where the query's true partner ranks in that column's whole pool; ``how`` maps
    a column label to how its space was obtained (a provenance summary)."""
    out: list[dict[str, Any]] = []
    for label, result in results:
        asked: dict[str, Any] = {}
        if query is not None:
            asked = {"query_modality": query.modality,
                     "query_pair_id": "" if query.is_free else pairs.ids[query.row],
                     "query_text": query.text if query.is_free else "",
                     "partner_rank_in_pool": "" if result.partner_rank is None
                     else result.partner_rank}
        asked["space"] = label
        if how is not None:
            asked["how_obtained"] = how.get(label, "")
        for h in result.hits:
            out.append({**asked, "rank": h.rank, "modality": h.modality,
                        "pair_id": pairs.ids[h.index], "row": h.index,
                        "caption": caption_of(pairs, h.index) if pairs.captions else "",
                        "similarity": round(h.similarity, 6), "true_partner": h.is_partner})
    return out
