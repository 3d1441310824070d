"""Explore: the mixed pool in 2-D (PCA instantly, UMAP in the background), coloured by
modality, with optional pair lines; a selection lists the selected pairs (a lasso or box in
Plotly, a filter in Embedding Atlas for a pool past Plotly's limit: ``ui/atlas.py``)."""

from __future__ import annotations

import ui  # noqa: F401  (first: it sets up the process before numpy loads)

import pandas as pd
import streamlit as st

from gapviz import figures
from gapviz.views import paired_distances
from ui import atlas, compute, links
from ui.components import guard, metric_cards, show_image
from ui.frame import page_header
from ui.state import keep

PROJECTIONS = {"PCA": "pca", "UMAP": "umap"}
SCATTER_HEIGHT = 600
MAX_THUMBNAILS = 12

act = page_header("Explore the gap", "images and texts in one picture", link="explore")
pairs = act.pairs

c1, c2, c3 = st.columns([1.3, 1.2, 3])
projection = c1.radio("Projection", list(PROJECTIONS), horizontal=True,
                      help="PCA is exact and instant. UMAP shows neighbourhoods; it runs in the "
                           "background once per dataset and is cached.",
                      **keep("explore_projection", "PCA"))
lines = c2.toggle("Pair lines", help=f"Join each image to its caption (at most "
                                     f"{figures.MAX_PAIR_LINES:,} pairs drawn).",
                  **keep("explore_lines", False))
# The help follows the viewer: Plotly's lasso, or the atlas's own filters (a large pool's
# viewer is chosen in the panel below, which says how to select in it).
c3.caption(atlas.selection_help(pairs.n)[0])

links.write(links.recipe_for("explore", act))
compute.umap_warm_up()  # so that a later UMAP click does not wait for compilation
umap_pending = False
if PROJECTIONS[projection] == "umap":
    with guard("start UMAP"):
        umap_pending = compute.umap_ready(act) is None


def _selection_table(rows: list[tuple[int, str]]) -> None:
    by_pair: dict[int, set[str]] = {}
    for row, modality in rows:
        by_pair.setdefault(row, set()).add(modality)
    st.markdown(f"**{len(by_pair):,} pairs selected** ({len(rows):,} points)")
    paired = paired_distances(pairs.image_embeddings, pairs.text_embeddings)
    cluster = pairs.meta.get("cluster")
    names = pairs.meta.get("cluster_names")
    table = pd.DataFrame({
        "pair": [pairs.ids[r] for r in by_pair],
        "selected": [" + ".join(sorted(m)) for m in by_pair.values()],
        "caption": [pairs.captions[r] if pairs.captions else "" for r in by_pair],
        "pair distance": [float(paired[r]) for r in by_pair],
    })
    if cluster is not None and names is not None and len(cluster) == pairs.n:
        table.insert(2, "cluster", [names[cluster[r]] for r in by_pair])
    st.dataframe(table, hide_index=True, height=380, width="stretch",
                 column_config={"pair distance": st.column_config.NumberColumn(
                     format="%.3f", help="cosine distance between the pair's image and text")})
    if pairs.image_paths:
        shown = list(by_pair)[:MAX_THUMBNAILS]
        cols = st.columns(4)
        for i, r in enumerate(shown):
            show_image(cols[i % 4], pairs.image_paths[r], caption=pairs.ids[r], tile=True)


@st.fragment(run_every=compute.UMAP_POLL_SECONDS if umap_pending else None)
def scatter_panel() -> None:
    with guard("draw the scatter"):
        proj = compute.active_projection(act)
        if PROJECTIONS[projection] == "umap":
            ready = compute.umap_ready(act)
            if ready is None:
                st.status(f"Computing UMAP of {2 * pairs.n:,} points in the background "
                          "(once; cached afterwards). Showing PCA meanwhile.", state="running")
            elif umap_pending:
                st.rerun()  # finished since this page was drawn: redraw once, without polling
            else:
                proj = ready
        left, right = st.columns([2.3, 1], gap="medium")
        with left:
            if atlas.is_large(pairs.n):  # past Plotly's limit: Embedding Atlas, or a sample
                picked = atlas.large_pool_panel(act.key, proj, pairs.ids, pairs.captions,
                                                lines=lines, height=SCATTER_HEIGHT)
            else:
                fig = figures.gap_scatter(proj, ids=pairs.ids, captions=pairs.captions,
                                          pair_lines=lines, height=SCATTER_HEIGHT)
                # Keyed by the data's hash: a selection made on other data is not carried over.
                event = st.plotly_chart(fig, key=f"explore_scatter_{act.key[:12]}",
                                        on_select="rerun", selection_mode=("box", "lasso", "points"),
                                        config={"displaylogo": False})
                picked = figures.selected_rows(event.selection if event else None)
        with right:
            rows = [(r, m) for r, m in picked if r < pairs.n]
            if rows:
                # Handed to the Retrieval page ("a selection from Explore"), tagged with the
                # data; kept when this chart's own state is dropped by a page switch.
                st.session_state["explore_selection"] = (act.key, rows)
                _selection_table(rows)
            else:
                st.markdown("**Selection**")
                st.caption(f"Nothing selected yet. {atlas.selection_help(pairs.n)[1]}")
                if not atlas.is_large(pairs.n) and compute.within_budget(act):  # measures: O(N² d)
                    raw = compute.active_raw_view(act).report.metrics
                    metric_cards(raw, keys=("ITR", "TIR", "R@{k}", "paired_cosine_distance"),
                                 per_row=2)


scatter_panel()
