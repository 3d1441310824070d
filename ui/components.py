"""Small pieces every page draws: the error guard, metric cards, labels, the CSS."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import streamlit as st

from gapviz import measure_info as cards
from gapviz.methods import menu_order, method_label
from gapviz.safety import plain_text

log = logging.getLogger("gapviz.app")


#: An invisible character that joins what it separates (U+2060 WORD JOINER).
_JOINER = "\u2060"
#: Where GitHub-flavoured markdown makes a link of plain text: ``http(s)://``, ``www.`` and
#: ``name@host.tld``. Streamlit finds these links in the text *after* markdown escapes are
#: undone, so a backslash does not stop them; an invisible joiner inside each does.
_BARE_LINK_PARTS = re.compile(r"(?i)(\\?:)(?=/)|(\\?@)|(www)(\\?\.)")


def _unlink(match: re.Match) -> str:
    colon, at, www, dot = match.groups()
    if colon:
        return colon + _JOINER
    if at:
        return _JOINER + at
    return www + _JOINER + dot


def user_text(text: Any, max_length: int | None = 200) -> str:
    """A user's string (a file or model name, an error quoting one) for ``st.markdown``,
    captions and messages: literal characters (:func:`gapviz.safety.plain_text`), and no
    clickable link where it looks like one (``https://…``, ``www.…``, ``x@host.org``).

    Streamlit's markdown turns bare addresses into links after escapes are resolved, so
    escaping alone does not stop it: an invisible word joiner goes between ``:`` and ``/``,
    before every ``@`` and between ``www`` and its dot. The text reads and copies the same
    apart from that invisible character."""
    return _BARE_LINK_PARTS.sub(_unlink, plain_text(text, max_length))


class NeedsChoice(Exception):
    """Nothing failed, but the page needs the user to choose (its message says what and
    where): :func:`guard` shows it as a note, not an error."""


@contextmanager
def guard(action: str) -> Iterator[None]:
    """Run a block; show an error message (not a traceback) if it fails.

    ``ValueError`` and friends carry messages written for the user (validation at the
    boundary), so they are shown as they are, as plain text (they may quote a file name), or
    their ``in_app`` text where they have one (the same advice naming the app's controls
    instead of command-line flags: :class:`gapviz.encode.ModelLoadError`); anything else gets a generic line and is
    logged with its traceback on the server. Streamlit's own control flow (rerun, stop) is
    a ``BaseException`` and passes through. A :class:`NeedsChoice` is a note, not an error.
    """
    try:
        yield
    except NeedsChoice as note:
        st.info(user_text(note, None), icon=":material/info:")
    except (ValueError, KeyError, OSError, RuntimeError) as err:
        log.info("%s failed: %s", action, err, exc_info=True)
        st.error(f"Could not {user_text(action, None)}: {user_text(_unrepeated(action, err), None)}",
                 icon=":material/error:")
    except Exception as err:  # noqa: BLE001 - the page edge: nothing may escape as a traceback
        log.exception("%s failed", action)
        st.error(f"Something went wrong while trying to {user_text(action, None)} "
                 f"({type(err).__name__}: {user_text(err, None)}). The previous data is still "
                 "loaded.", icon=":material/error:")


def _unrepeated(action: str, err: Exception) -> str:
    """The error's message without a leading "NAME: " that ``action`` ("load NAME") already
    says, so a message reads "Could not load x.npz: not a readable .npz", not "x.npz: x.npz: ..."."""
    text = getattr(err, "in_app", None) or str(err)  # a message naming the app's controls
    what = action.split(" ", 1)[-1]
    return text[len(what) + 1:].lstrip() if what and text.startswith(what + ":") else text


def method_names() -> list[str]:
    """Registered method names in menu order."""
    return menu_order()


def metric_cards(metrics: dict[str, float], baseline: dict[str, float] | None = None, *,
                 keys: Sequence[str] = cards.ALL_CARDS, recall_k: int = cards.DEFAULT_RECALL_K,
                 per_row: int | None = None, border: bool = True, gap: str = "small") -> None:
    """One ``st.metric`` per key, with the change against ``baseline`` coloured by the
    measure's direction (``gapviz.measure_info``: lower distances, higher recall and ITR/TIR
    moving toward 1 are green)."""
    keys = [cards.card_key(k, recall_k) for k in keys]
    per_row = per_row or len(keys)
    for start in range(0, len(keys), per_row):
        cols = st.columns(per_row, gap=gap)
        for col, key in zip(cols, keys[start:start + per_row]):
            value = metrics.get(key)
            delta = cards.format_delta(key, baseline.get(key), value) if baseline else None
            col.metric(cards.card_label(key), cards.format_metric(key, value), delta,
                       delta_color=cards.delta_color(key, baseline.get(key) if baseline else None,
                                                   value), help=_help(key, metrics), border=border)


def _help(key: str, metrics: dict[str, float]) -> str:
    """A card's tooltip; a mixed-pool recall card also gives its chance level in this pool."""
    text = cards.help_text(key)
    k, n = key[2:], metrics.get("N")
    if key.startswith("R@") and k.isdigit() and n:
        from gapviz.protocols import chance_recall

        c = chance_recall(int(n), int(k))
        text += (f" Chance level in this pool of {2 * int(n):,} items: {c.level:.4f} "
                 f"(± {c.se:.4f}).")
    return text


#: A little CSS: less empty space above the title, compact metric cards, tighter captions.
_CSS = """
<style>
.block-container {padding-top: 3.35rem; padding-bottom: 1.5rem; padding-left: 2.75rem;
                  padding-right: 2.75rem;}
h1 {font-size: 1.95rem !important; padding-top: 0 !important; padding-bottom: 0 !important;}
[data-testid="stMetric"] {padding: 0.55rem 0.6rem 0.5rem 0.7rem;}
[data-testid="stMetricValue"] {font-size: 1.55rem; line-height: 1.25;}
[data-testid="stMetricDelta"] {font-size: 0.8rem;}
</style>
"""

#: Even more compact cards, for pages that must fit one screen (the Overview).
COMPACT_CARDS_CSS = """
<style>
[data-testid="stMetric"] {padding: 0.35rem 0.6rem 0.35rem 0.6rem;}
[data-testid="stMetricValue"] {font-size: 1.3rem;}
[data-testid="stMetricDelta"] {font-size: 0.72rem;}
[data-testid="stMetricLabel"] p {font-size: 0.8rem;}
</style>
"""


def style(extra: str = "") -> None:
    """Apply the app's small CSS adjustments."""
    st.html(_CSS + extra)


def simulated_badge() -> None:
    st.badge("Simulated data", icon=":material/science:", color="orange")


def show_image(container: Any, path: str | None, *, tile: bool = False, **kwargs: Any) -> bool:
    """Show the image at ``path`` in ``container`` (a column, ``st``), read with gapviz's image
    limits; False (nothing shown) when there is none or it cannot be read. ``tile``: on a
    square canvas of :data:`TILE_PX`, so a grid of pictures of any shapes lines up."""
    from gapviz.data.images import square_tile, thumbnail

    image = thumbnail(path, IMAGE_PX)
    if image is None:
        return False
    container.image(square_tile(image, TILE_PX) if tile else image, width="stretch", **kwargs)
    return True


#: Longer side, in pixels, of images shown on pages.
IMAGE_PX = 512
#: Side, in pixels, of a grid tile (:func:`show_image` with ``tile``).
TILE_PX = 256

__all__ = ["COMPACT_CARDS_CSS", "guard", "method_label",
           "method_names", "metric_cards", "show_image", "simulated_badge", "style", "user_text"]
