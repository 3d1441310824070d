"""What each measure is called, what it means, which way is better and how it prints.

One table, :data:`MEASURES`, read by the metric cards (:mod:`gapviz.dashboard`), the measure
tables (:mod:`gapviz.tables`), the Compare heatmap (:mod:`gapviz.figures.compare`), the HTML
report (:mod:`gapviz.report`) and the benchmark tables. Adding a measure is one
:class:`MeasureInfo` entry here; its cards, tooltips, table rows and colours follow.

A key with ``{k}`` (``"R@{k}"``) is a pattern: it stands for every K (``R@5``, ``R@1``, ...)
and its text fields are filled in with that K.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from typing import Iterable, Literal

from .config import RECALL_KS

Direction = Literal["lower", "higher", "one"]
NumberFormat = Literal["magnitude", "percent", "decimal", "count"]
CellStyle = Literal["text", "display", "readme"]


@dataclass(frozen=True)
class MeasureInfo:
    """Metadata of one measure key.

    Attributes
    ----------
    key : str
        The key of ``GapReport.metrics`` (``"ITR"``), or a pattern with ``{k}`` (``"R@{k}"``).
    label : str
        Short label: column titles of Compare and the benchmark tables.
    card_label : str
        Title of its metric card.
    help : str
        One line: what it measures (tooltips, the report's glossary).
    direction : {"lower", "higher", "one"} or None
        Which values are better: lower, higher, or closest to 1 (``"one"``, on a log scale).
        None: the measure describes the geometry and no value is better.
    number : {"magnitude", "percent", "decimal", "count"}
        How a card prints it: ``magnitude`` for ratios and ranks that span decades (2.46,
        41.6, 2,474), ``percent`` for fractions of queries (43.2%), ``decimal`` with three
        decimals, ``count`` as an integer.
    log_scale : bool
        Values span decades: colour scales and axes use log10.
    unit : str
        Unit of the value ("" for a pure number).
    table : bool
        Listed as a row of measure tables (False for the pair count ``N``, which is context).
    """

    key: str
    label: str
    card_label: str
    help: str
    direction: Direction | None
    number: NumberFormat = "decimal"
    log_scale: bool = False
    unit: str = ""
    table: bool = True

    @property
    def arrow(self) -> str:
        """The direction as an arrow: ↓ (lower is better), ↑ (higher), →1 (best at 1), or "" without one."""
        return {"lower": "↓", "higher": "↑", "one": "→1"}.get(self.direction or "", "")

    @property
    def direction_text(self) -> str:
        """The sentence that says which values are better ("" without a direction)."""
        return DIRECTION_TEXT.get(self.direction or "", "")

    def badness(self, value: float) -> float:
        """A number that is smaller for a better value: ``value`` (lower), ``-value`` (higher),
        ``|ln value|`` (best at 1; 0 and inf are infinitely far). NaN for no direction."""
        if self.direction == "lower":
            return float(value)
        if self.direction == "higher":
            return -float(value)
        if self.direction == "one":
            return abs(math.log(value)) if 0 < value < math.inf else math.inf
        return math.nan


#: The sentence added to a measure's help for each direction.
DIRECTION_TEXT: dict[str, str] = {
    "lower": "Lower is better.",
    "higher": "Higher is better.",
    "one": ("Best at 1: a query's top-1 is of its own modality as often as of the other, no "
            "bias toward its own modality; above 1 is the gap, below 1 over-corrects toward "
            "the other modality."),
}

#: Every measure gapviz reports, in the order tables list them.
MEASURES: tuple[MeasureInfo, ...] = (
    MeasureInfo("N", "N", "Pairs", "number of image-text pairs measured", None, "count",
                unit="pairs", table=False),
    MeasureInfo("ITR", "ITR", "ITR",
                "image queries whose top-1 in the mixed pool is an image, divided by those whose "
                "top-1 is a text: an odds, p / (1 - p) with p the share of image queries that "
                "see an image first, as the paper's tables give it (2494 / 6 = 415.66); a tie "
                "between the best image and the best text counts as image first, against the "
                "query (1 = no bias; inf = never a text first)", "one", "magnitude",
                log_scale=True, unit="odds"),
    MeasureInfo("TIR", "TIR", "TIR",
                "the same odds for text queries: texts-first over images-first (a tie counts as "
                "text first)", "one", "magnitude", log_scale=True, unit="odds"),
    MeasureInfo("IMR", "IMR", "IMR", "mean rank of the best-ranked image for a text query",
                "lower", "magnitude", log_scale=True, unit="rank"),
    MeasureInfo("TMR", "TMR", "TMR",
                "mean rank of the best-ranked text for an image query (1 .. N; 1 = a text "
                "always comes first)", "lower", "magnitude", log_scale=True, unit="rank"),
    MeasureInfo("RMG", "RMG", "RMG",
                "relative modality gap (Schrodi et al., ICLR 2025): m / (m + (w_x + w_y) / 2), m "
                "the mean paired distance (1 - cos) / 2 (replaced by 1e-3 only when it is 0 or "
                "less, as in their code), w_x and w_y the mean distance between two images, two "
                "texts (near 0 = pairs coincide)", "lower"),
    MeasureInfo("R@{k}", "R@{k}", "Recall@{k}",
                "image query -> its paired text within the top {k} of the mixed pool (fraction "
                "of queries)", "higher", "percent", unit="fraction"),
    MeasureInfo("R@{k}_t2i", "R@{k} t→i", "Recall@{k} t→i",
                "text query -> its paired image within the top {k} of the mixed pool", "higher",
                "percent", unit="fraction"),
    MeasureInfo("R@{k}_i2t_crossmodal", "R@{k} i→t cross", "Cross-modal R@{k} i→t",
                "classic retrieval: paired text within the top {k} among texts only", "higher",
                "percent", unit="fraction"),
    MeasureInfo("R@{k}_t2i_crossmodal", "R@{k} t→i cross", "Cross-modal R@{k} t→i",
                "classic retrieval: paired image within the top {k} among images only", "higher",
                "percent", unit="fraction"),
    MeasureInfo("NDCG@{k}", "NDCG@{k}", "NDCG@{k}",
                "MixBench's formula on the paper's pool: image query -> its paired text, the one "
                "relevant item, in the mixed pool of all 2N items; 1 / log2(1 + rank) when within "
                "the top {k}, else 0, averaged (1 = always first). Not MixBench's protocol "
                "(NDCG@{k}_mixbench is)", "higher"),
    MeasureInfo("NDCG@{k}_mixbench", "NDCG@{k} MixBench", "NDCG@{k} MixBench",
                "MixBench's protocol: caption queries kept out of the corpus, each pair's document "
                "in the corpus once, as its image, its caption or the two fused (1:1:1, seeded), "
                "relevant in any rendering; the queries are the captions of the documents shown "
                "as images (a caption shown as itself would find itself); 1 / log2(1 + rank) "
                "within the top {k}, else 0, averaged", "higher"),
    MeasureInfo("paired_cosine_distance", "Paired cos. dist.", "Pair dist.",
                "mean of 1 - cos(x_i, y_i) over the pairs", "lower", unit="cosine distance"),
    MeasureInfo("paired_l2", "Paired L2", "Pair L2",
                "mean ||x_i - y_i|| over the pairs (rows L2-normalised)", "lower",
                unit="L2 distance"),
    MeasureInfo("paired_l2_squared", "Paired L2²", "Pair L2²",
                "mean ||x_i - y_i||^2 over the pairs (rows L2-normalised)", "lower",
                unit="squared L2 distance"),
    MeasureInfo("all_cosine_distance", "All-pairs cos. dist.", "All-pairs dist.",
                "mean of 1 - cos(x_i, y_j) over all N x N image-text combinations", None,
                unit="cosine distance"),
    MeasureInfo("frechet", "Fréchet", "Fréchet",
                "Frechet distance between Gaussians fitted to each modality (as FID), on the "
                "L2-normalised rows", "lower"),
    MeasureInfo("frechet_raw", "Fréchet (raw)", "Fréchet raw",
                "the same Frechet distance on the file's raw rows, not normalised (the scale of "
                "the paper's Table 4); given only when those rows are not of unit norm", "lower"),
    MeasureInfo("centroid_gap", "Centroid gap", "Centroid gap",
                "||mean(X) - mean(Y)|| of the L2-normalised rows (Liang et al. 2022)", "lower",
                unit="L2 distance"),
    MeasureInfo("image_cone", "Image cone", "Image cone",
                "mean cosine between two different images (cone effect; 0 = spread out)", None,
                unit="cosine"),
    MeasureInfo("text_cone", "Text cone", "Text cone",
                "mean cosine between two different texts", None, unit="cosine"),
    MeasureInfo("separability", "Separability", "Separability",
                "held-out accuracy of a linear classifier telling images from texts (0.5 = "
                "inseparable)", "lower", unit="accuracy"),
    MeasureInfo("hubness", "Hubness", "Hubness",
                "skewness of the 10-occurrence counts over the mixed pool: how lopsidedly items "
                "appear among the 10 nearest neighbours of the others (Radovanovic et al., JMLR "
                "2010; 0 = no hubs)", "lower"),
    MeasureInfo("mutual_knn", "Mutual-kNN alignment", "Mutual kNN",
                "mean over pairs of the share of an image's 10 nearest images whose texts are "
                "among its text's 10 nearest texts (Huh et al. 2024, the Platonic "
                "Representation Hypothesis; falls as the pool grows)", "higher",
                unit="fraction"),
    MeasureInfo("images", "Images", "Images",
                "unique images scored when images have several captions (the pool holds them "
                "and every caption)", None, table=False),
    MeasureInfo("robinhood", "Robin Hood", "Robin Hood",
                "Robin Hood index of the 10-occurrence counts over the mixed pool (as "
                "scikit-hubness): the share of the nearest-neighbour slots that would have to "
                "move for every item to be a neighbour equally often (0 = no hubs)", "lower",
                unit="fraction"),
    MeasureInfo("antihub_occurrence", "Anti-hubs", "Anti-hubs",
                "share of the mixed pool's items that are among no item's 10 nearest neighbours "
                "(anti-hubs, as scikit-hubness)", "lower", "percent", unit="fraction"),
    MeasureInfo("hub_occurrence", "Hub occurrence", "Hub occurrence",
                "share of the 10-nearest-neighbour slots of the mixed pool taken by hubs, items "
                "in at least 20 lists (2 x k, scikit-hubness's hub_size)", "lower", "percent",
                unit="fraction"),
    # what closing buys (gapviz.closing_gains); each item of the pool takes its pair's label
    MeasureInfo("kmeans_v_measure", "V-measure (pool)", "V-measure",
                "agreement of seeded k-means on the 2N items of the mixed pool (k = number of "
                "label classes) with the labels, each item labelled with its pair's: harmonic "
                "mean of homogeneity and completeness (Rosenberg & Hirschberg 2007; 0 = none, "
                "1 = the classes exactly). Interval: basic bootstrap over pairs with the "
                "clusters held fixed (a resample's repeated pairs bias the mutual information "
                "upward)", "higher"),
    MeasureInfo("kmeans_ari", "ARI (pool)", "ARI",
                "adjusted Rand index of the mixed pool's k-means clusters against the labels "
                "(Hubert & Arabie 1985; 0 = chance, 1 = the classes exactly). Interval: "
                "bootstrap over pairs with the clusters held fixed, an item and its own repeat "
                "never counted as a pair", "higher"),
    MeasureInfo("kmeans_nmi", "NMI (pool)", "NMI",
                "normalised mutual information of the mixed pool's k-means clusters and the "
                "labels, over the geometric mean of their entropies (Strehl & Ghosh 2002; the "
                "V-measure is the arithmetic-mean version). Interval as the V-measure's",
                "higher"),
    MeasureInfo("modality_purity", "Modality purity", "Modality purity",
                "share of the mixed pool's k-means clusters that are more than 90% one "
                "modality: 1 = the pool splits by modality, not meaning (the gap seen as "
                "clusters). Interval: bootstrap over pairs with the clusters held fixed",
                "lower", "percent", unit="fraction"),
    MeasureInfo("probe_i2t", "Probe i→t", "Probe i→t",
                "accuracy on the texts of a linear probe (logistic regression) fitted on the "
                "images' labels: does a classifier carry over from images to texts. Interval: "
                "the scored texts resampled, the probe held fixed", "higher", "percent",
                unit="fraction"),
    MeasureInfo("probe_t2i", "Probe t→i", "Probe t→i",
                "accuracy on the images of a linear probe fitted on the texts' labels",
                "higher", "percent", unit="fraction"),
    MeasureInfo("substitution_i2t", "Substitution i→t", "Substitution i→t",
                "share of image queries whose nearest text has their label, their own caption "
                "included (a tie for nearest is a hit only if every tied text has it): can a "
                "text stand in for the image", "higher", "percent", unit="fraction"),
    MeasureInfo("substitution_t2i", "Substitution t→i", "Substitution t→i",
                "share of text queries whose nearest image has their label (a tie counts "
                "against the query)", "higher", "percent", unit="fraction"),
    MeasureInfo("requested_modality_i2t", "Requested i→t", "Requested modality i→t",
                "an image query asking for texts: share of texts among its top 10 in the mixed "
                "pool, exact ranks, a tie with an image counting against the query (1 = only "
                "texts)", "higher", "percent", unit="fraction"),
    MeasureInfo("requested_modality_t2i", "Requested t→i", "Requested modality t→i",
                "a text query asking for images: share of images among its top 10 in the "
                "mixed pool (a tie with a text counts against the query)", "higher", "percent",
                unit="fraction"),
)


# ---------------------------------------------------------------------------------------------
# lookup
# ---------------------------------------------------------------------------------------------
@lru_cache(maxsize=256)
def _pattern(key: str) -> re.Pattern[str]:
    """The regular expression of a table key: ``"R@{k}"`` matches ``R@5``, ``R@10``, ..."""
    return re.compile("(?P<k>[0-9]+)".join(re.escape(part) for part in key.split("{k}")) + "$")


def _match(key: str) -> tuple[int, int, MeasureInfo] | None:
    """(entry index, K or -1, entry) of the table entry describing ``key``; exact keys first."""
    for i, entry in enumerate(MEASURES):
        if entry.key == key:
            return i, -1, entry
    for i, entry in enumerate(MEASURES):
        if "{k}" in entry.key:
            m = _pattern(entry.key).match(key)
            if m:
                return i, int(m["k"]), entry
    return None


def lookup(key: str) -> MeasureInfo | None:
    """The record of ``key``, with a pattern's ``{k}`` filled in; None if the table has none."""
    found = _match(key)
    if found is None:
        return None
    _, k, entry = found
    return entry if k < 0 else _with_k(entry, k)


def _with_k(entry: MeasureInfo, k: int | str) -> MeasureInfo:
    """A pattern entry with ``{k}`` filled in every text field (other entries unchanged)."""
    if "{k}" not in entry.key:
        return entry
    return replace(entry, **{f.name: getattr(entry, f.name).format(k=k) for f in fields(entry)
                             if isinstance(getattr(entry, f.name), str)})


def info(key: str) -> MeasureInfo:
    """The record of ``key``, or a plain one (its key as label, no help, no direction) for a key
    the table does not know yet, so it still shows."""
    return lookup(key) or MeasureInfo(key, key, key, "", None)


def sort_keys(keys: Iterable[str]) -> list[str]:
    """Keys in table order (a pattern's keys by K), unknown keys after them alphabetically;
    keys whose entry has ``table=False`` (``N``) left out."""
    known, unknown = [], []
    for key in set(keys):
        found = _match(key)
        if found is None:
            unknown.append(key)
        elif found[2].table:
            known.append((found[0], found[1], key))
    return [key for *_, key in sorted(known)] + sorted(unknown)


def glossary(keys: Iterable[str] | None = None) -> dict[str, str]:
    """``{key: meaning and direction}``, one line per table entry, patterns written with K
    (``"R@K"``), in table order: the entries describing ``keys`` (default: every entry)."""
    if keys is None:
        entries = list(MEASURES)
    else:
        matched = {found[0] for found in map(_match, keys) if found is not None}
        entries = [MEASURES[i] for i in sorted(matched)]
    return {generic.key: _sentences(generic.help, generic.direction_text)
            for generic in (_with_k(e, "K") for e in entries)}


# ---------------------------------------------------------------------------------------------
# what readers show
# ---------------------------------------------------------------------------------------------
def label(key: str, arrow: bool = False) -> str:
    """Short label, with its direction arrow if asked: "ITR →1", "TMR ↓", "R@5 ↑"."""
    rec = info(key)
    return f"{rec.label} {rec.arrow}" if arrow and rec.arrow else rec.label


def card_label(key: str) -> str:
    """Title of the metric card of ``key`` ("Recall@10", "Pair dist.")."""
    return info(key).card_label


def help_text(key: str) -> str:
    """Tooltip: what the measure means, then which values are better."""
    rec = info(key)
    return _sentences(rec.help, rec.direction_text)


def _sentences(meaning: str, direction: str) -> str:
    """The help line and the direction sentence as two sentences (either may be empty)."""
    if meaning and direction:
        return f"{meaning.rstrip('.')}. {direction}"
    return meaning or direction


#: One line explaining the arrows of :func:`label` (a caption under a table of labels).
LEGEND = ("↓ lower is better, ↑ higher is better, →1 best at 1 (ITR/TIR: no bias toward the "
          "query's own modality).")


def delta_color(key: str, before: float | None = None, after: float | None = None) -> str:
    """Streamlit ``delta_color`` of a card: "inverse" where a decrease is good, "normal" where
    an increase is, "off" for a measure with no better direction.

    For a best-at-1 measure it depends on the values: green when ``after`` is closer to 1 (in
    log scale) than ``before``. Without both values it assumes the usual case, a ratio above 1
    coming down, and returns "inverse".
    """
    rec = info(key)
    if rec.direction == "lower":
        return "inverse"
    if rec.direction == "higher":
        return "normal"
    if rec.direction != "one":
        return "off"
    if before is None or after is None or _nan(before) or _nan(after) or before == after:
        return "inverse"
    closer = rec.badness(after) < rec.badness(before)
    went_down = after < before
    return "inverse" if closer == went_down else "normal"


def _nan(v: float) -> bool:
    return isinstance(v, float) and math.isnan(v)


def format_metric(key: str, value: float | None) -> str:
    """A card's value in the entry's number format: 2.46, 41.6, 2,474 (magnitude), 43.2%
    (percent), 0.123 (decimal); inf as ∞, missing or NaN as —."""
    if value is None or _nan(value):
        return "—"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    number = info(key).number
    if number == "percent":
        return f"{value:.1%}"
    if number == "count":
        return f"{value:,.0f}"
    if number == "magnitude":
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"
    return f"{value:.3f}"


def format_delta(key: str, before: float | None, after: float | None) -> str | None:
    """Signed change ``after - before`` as text for a card, or None when there is no baseline.

    Infinite values give "-∞" / "+∞" (a ratio that was infinite and is now finite went down
    by an infinite amount), equal values "0" (Streamlit shows it grey). Percent measures
    change in percentage points; magnitudes of 1000 and more are written 1.2k.
    """
    if before is None or after is None or _nan(before) or _nan(after):
        return None
    if math.isinf(before) or math.isinf(after):
        if before == after:
            return "0"
        # ASCII minus: Streamlit reads the sign to orient and colour the arrow
        return "-∞" if (math.isinf(before) and before > 0) or after == -math.inf else "+∞"
    d = after - before
    return "0" if d == 0 else format_change(key, d)


def format_change(key: str, d: float) -> str:
    """A finite change of measure ``key`` (after - before) in the measure's own unit, signed
    (ASCII minus: Streamlit reads it to orient a card's arrow): percent measures in percentage
    points ("+4.2 pts", as their values read 43.5% and 47.7%), magnitudes of 1000 and more
    as 1.2k, the others as :func:`format_metric` writes the measure."""
    return "".join(_change_parts(key, d))


def format_change_interval(key: str, lo: float, hi: float) -> str:
    """An interval of changes of measure ``key`` in its own unit (:func:`format_change`):
    "[+2.1, +6.3] pts" for a percent measure, "[-0.012, +0.004]" for a decimal one; "—" when
    either end is not finite."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "—"
    (low, unit), (high, _) = _change_parts(key, lo), _change_parts(key, hi)
    return f"[{low}, {high}]{unit}"


def _change_parts(key: str, d: float) -> tuple[str, str]:
    """:func:`format_change`'s signed number and its unit (" pts" for percent measures, else
    none)."""
    sign = "-" if d < 0 else "+"
    mag = abs(d)
    number = info(key).number
    if number == "percent":
        return f"{sign}{mag * 100:.1f}", " pts"
    if number == "count":
        return f"{sign}{mag:,.0f}", ""
    if number == "magnitude":
        if mag >= 1000:  # compact, so it fits a small card: -1,248 -> -1.2k
            return f"{sign}{mag / 1000:.1f}k", ""
        return (f"{sign}{mag:.0f}" if mag >= 100 else f"{sign}{mag:.2f}"), ""
    return f"{sign}{mag:.3f}", ""


def format_value(value: float | None, style: CellStyle = "text") -> str:
    """A table cell: the same rule for every measure, so columns of numbers line up.

    ``text`` (the CLI's tables): 2 decimals from 10, 3 below, 1 with thousands separators
    from 1000; ``inf`` / ``nan``, ``-`` when missing. ``display`` (markdown, HTML, the
    heatmap): the same with ∞. ``readme`` (benchmark tables for the README): fewer digits,
    0 decimals from 100, 1 from 10, 2 from 1, 3 below; ∞.
    """
    if style not in ("text", "display", "readme"):
        raise ValueError(f"unknown cell style '{style}'; choose text, display or readme.")
    if value is None:
        return "-"
    if math.isinf(value):
        if style == "text":
            return "inf" if value > 0 else "-inf"
        return "∞" if value > 0 else "-∞"
    if math.isnan(value):
        return "nan"
    mag = abs(value)
    if style == "readme":
        if mag >= 100:
            return f"{value:.0f}"
        if mag >= 10:
            return f"{value:.1f}"
        return f"{value:.3f}" if mag < 1 else f"{value:.2f}"
    if mag >= 1000:
        return f"{value:,.1f}"
    if mag >= 10:
        return f"{value:.2f}"
    return f"{value:.3f}"


# ---------------------------------------------------------------------------------------------
# metric cards
# ---------------------------------------------------------------------------------------------
#: The four gap cards of the Overview (paper section 2.2).
GAP_CARDS: tuple[str, ...] = ("ITR", "TIR", "IMR", "TMR")
#: The cards of "Close the gap": the gap cards, mixed-pool recall, paired distance, Fréchet.
ALL_CARDS: tuple[str, ...] = (*GAP_CARDS, "R@{k}", "paired_cosine_distance", "frechet")

#: Default K of the recall card.
DEFAULT_RECALL_K = RECALL_KS[0]


def card_key(card: str, k: int = DEFAULT_RECALL_K) -> str:
    """The metric key of a card (``"R@{k}"`` becomes ``"R@5"`` for k = 5)."""
    return card.format(k=k)


def gap_sentence(metrics: dict[str, float]) -> str:
    """One plain-language line reading the ITR / TMR of a report, for non-specialists."""
    n = int(metrics.get("N", 0))
    itr, tmr = metrics.get("ITR", math.nan), metrics.get("TMR", math.nan)
    if math.isnan(itr) or n == 0:
        return ""
    if math.isinf(itr):
        first = "every image query sees another image before any text"
    else:
        first = f"{_share(itr / (1.0 + itr))} of image queries see an image before any text"
    return f"{first}; the nearest text ranks #{tmr:,.0f} on average (of {2 * n - 1:,})."


def _share(p: float) -> str:
    """A fraction as a percentage that reads 0 % or 100 % only when it is exactly that:
    0.997 is "99.7%", not "100%" (which the sentence keeps for "every")."""
    for decimals in range(4):
        text = f"{p:.{decimals}%}"
        if 0 < p < 1 and float(text[:-1]) in (0.0, 100.0):
            continue
        return text
    return text
