"""Every colour of gapviz, named for its role.

The figures, the HTML views, the app's pages and sidebar and the exported report take their
colours from here, so one change here recolours them all. Each hex value is written once; a
colour with several roles has one name per role, the later ones aliases of the first.
Most are Tailwind CSS shades (named in the comments); the exported report keeps its own,
warmer greys.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------
# neutrals: text, rules, grids (slate), darkest first
# ---------------------------------------------------------------------------------------------
#: Text on the light cells of the Compare heatmap.
DARK_TEXT = "#020617"      # slate-950
#: Text on the light cells of the Anatomy tables.
TABLE_TEXT = "#0F172A"     # slate-900
#: Figure and panel titles, headings, the similarity of a retrieval card.
TITLE = "#334155"          # slate-700
#: A figure's subtitle (under its title).
SUBTITLE = "#475569"       # slate-600
#: Secondary text: axis titles, notes, taglines, a card's second line.
MUTED = "#64748B"          # slate-500
#: Faintest text: ranks, the ellipsis between a top K and a partner beyond it.
FAINT = "#94A3B8"          # slate-400
#: Reference lines and the query card's border.
RULE = "#CBD5E1"           # slate-300
#: Borders of the retrieval cards.
BORDER = "#E5E7EB"         # gray-200
#: Grid lines of every plot.
GRID = "#EEF2F7"
#: Separators between rows; plain (unranked) heatmap cells.
SEPARATOR = "#F1F5F9"      # slate-100
#: The worst cell of a ranked heatmap.
LIGHTEST = "#F8FAFC"       # slate-50
#: Text and outlines on dark marks.
WHITE = "#FFFFFF"

# ---------------------------------------------------------------------------------------------
# the two modalities: one colour each, in every figure, badge and pill
# ---------------------------------------------------------------------------------------------
IMAGE_COLOR = "#2563EB"    # blue-600
TEXT_COLOR = "#EA580C"     # orange-600
MODALITY_COLORS = {"image": IMAGE_COLOR, "text": TEXT_COLOR}
#: Tiles standing for an item without a picture (retrieval cards): background and border.
IMAGE_TILE_BG = "#EFF6FF"      # blue-50
IMAGE_TILE_BORDER = "#BFDBFE"  # blue-200
TEXT_TILE_BG = "#FFF7ED"       # orange-50
TEXT_TILE_BORDER = "#FED7AA"   # orange-200
#: The app's accent (the numbered panel titles of the Overview).
ACCENT = IMAGE_COLOR

# ---------------------------------------------------------------------------------------------
# pairs, queries, retrieval
# ---------------------------------------------------------------------------------------------
#: A true pair: the histograms' "true pairs", a found partner's highlight, "✓ pair".
PAIRED = "#059669"         # emerald-600
#: Background of a found partner's card.
PAIRED_BG = "#ECFDF5"      # emerald-50
#: The "all image-text combinations" series of the distance histograms.
ALL_PAIRS = FAINT
#: A true partner ranked beyond the top K.
MISSED = "#DC2626"         # red-600
#: Faint lines joining the two items of a pair (slate-500 at 13 % opacity).
PAIR_LINE = "rgba(100, 116, 139, 0.13)"
#: The query's star: fill and outline.
QUERY_FILL = "#FACC15"     # yellow-400
QUERY_EDGE = "#111827"     # gray-900

# ---------------------------------------------------------------------------------------------
# the anatomy figures (blue: the gap; orange: what is kept)
# ---------------------------------------------------------------------------------------------
GAP_COLOR = IMAGE_COLOR
KEPT_COLOR = TEXT_COLOR
#: The distribution (shape, spread) part of the Fréchet distance.
SHAPE_COLOR = "#93C5FD"    # blue-300
#: Marker colours of the runs of an interval figure, in order (raw first).
RUN_COLORS = (MUTED, GAP_COLOR, KEPT_COLOR, PAIRED)
#: One colour per run of the trade-off figure (each dark enough for a white number on it).
TRADEOFF_COLORS = (IMAGE_COLOR, TEXT_COLOR, PAIRED,
                   "#7C3AED",  # violet-600
                   "#DB2777",  # pink-600
                   "#0E7490",  # cyan-700
                   "#A16207",  # yellow-700
                   SUBTITLE,
                   "#B91C1C",  # red-700
                   "#4D7C0F")  # lime-700

# ---------------------------------------------------------------------------------------------
# the Compare heatmap and tables: best, warning, noise
# ---------------------------------------------------------------------------------------------
#: Light (worst) to dark green (best). The dark end is dark enough for white text.
HEATMAP_SCALE = [[0.0, LIGHTEST], [0.5, "#A7F3D0"], [1.0, "#047857"]]  # emerald-200, -700
#: A flagged cell (⚠, e.g. a recall above chance in a null check).
WARNING = "#FCD34D"        # amber-300
#: Without a ranking: plain cells, and the warning amber for a flagged one.
UNRANKED_SCALE = [[0.0, SEPARATOR], [1.0, WARNING]]
#: Text on the dark cells of the heatmap.
LIGHT_TEXT = WHITE
#: The best cell of a column of the Compare table.
BEST_CELL_BG = "#D1FAE5"   # emerald-100
BEST_CELL_TEXT = "#065F46"  # emerald-800
BEST_CELL_STYLE = f"background-color: {BEST_CELL_BG}; color: {BEST_CELL_TEXT}; font-weight: 700"
#: A best cell that noise explains, and its runner-up.
NOISE_CELL_BG = "#FEF3C7"  # amber-100
NOISE_CELL_TEXT = "#92400E"  # amber-800
NOISE_CELL_STYLE = f"background-color: {NOISE_CELL_BG}; color: {NOISE_CELL_TEXT}"

# ---------------------------------------------------------------------------------------------
# the exported HTML report (gapviz.figures.html)
# ---------------------------------------------------------------------------------------------
REPORT_TEXT = "#1f2933"
REPORT_MUTED = "#52606d"
REPORT_RULE = "#e4e7eb"
#: The "SIMULATED DATA" warning badge.
REPORT_BADGE_BG = "#fff3c4"
REPORT_BADGE_TEXT = "#8d2b0b"
#: The best value of a measure.
REPORT_BEST = "#0b6e4f"
