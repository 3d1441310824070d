"""The pages' HTML and tables, built by :mod:`gapviz.figures` (no Streamlit)."""

from __future__ import annotations

import numpy as np

from gapviz.embeddings import PairedEmbeddings
from gapviz.figures import data as dv
from gapviz.figures import overview as ov
from gapviz.retrieval import retrieve
from gapviz.simulate import simulate_pairs


def _hostile_pairs() -> PairedEmbeddings:
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(3, 8)), rng.normal(size=(3, 8))
    Y[0] = X[0] + 0.01  # pair 0's text is its image's nearest neighbour
    return PairedEmbeddings(X.astype(np.float32), Y.astype(np.float32),
                            ids=["<b>a</b>", "b", "c"],
                            captions=["<script>alert(1)</script>", "two", "three"])


def test_overview_hits_escape_user_strings_and_mark_the_partner():
    pairs = _hostile_pairs()
    result = retrieve(pairs.image_embeddings, pairs.text_embeddings, "image", 0, 3)
    out = ov.hits_html(pairs, result, "Raw <embeddings>")
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert "Raw &lt;embeddings&gt;" in out
    assert out.count("&#10003; pair") == sum(h.is_partner for h in result.hits) == 1
    assert ov.describe_item(pairs, 1, "image") == "image of “two”"
    title = ov.panel_title_html(1, "<b>x</b>", note="<i>n</i>")
    assert "&lt;b&gt;x&lt;/b&gt;" in title and "&lt;i&gt;n&lt;/i&gt;" in title


def test_data_preview_and_tables():
    pairs = simulate_pairs(30, 16, seed=1)
    names = pairs.meta["cluster_names"]
    tile = dv.concept_tile_html(pairs, 0)
    assert names[int(pairs.meta["cluster"][0])] in tile
    hostile = _hostile_pairs()
    caption = dv.preview_caption_html(hostile, 0)
    assert "&lt;script&gt;" in caption and "&lt;b&gt;a&lt;/b&gt;" in caption
    assert "pair &lt;b&gt;a&lt;/b&gt;" in dv.concept_tile_html(hostile, 0)

    class Report:
        skipped = {"unreadable image": ["x", "y"], "no caption": []}

    table = dv.skipped_table(Report())
    assert table.to_dict("records") == [{"skipped because": "unreadable image", "pairs": 2}]
    Report.skipped = {}
    assert dv.skipped_table(Report()) is None
