"""The Anatomy page shows the measures that follow their references: hubness indices and
NDCG under MixBench's protocol raw and after the method (each with its definition), and the
Fréchet distance on the file's raw rows when they are not unit-norm."""

from __future__ import annotations

import numpy as np
import pytest

from gapviz.anatomy import gap_anatomy
from gapviz.measure_info import format_metric, info


@pytest.fixture(scope="module")
def raw_pairs():
    from gapviz.embeddings import PairedEmbeddings
    from gapviz.simulate import simulate_pairs

    sim = simulate_pairs(300, 32, seed=3)
    rng = np.random.default_rng(3)
    # rows as a model gives them: each scaled by its own norm (the measures are unchanged)
    X = sim.image_embeddings * rng.uniform(5, 9, size=(300, 1)).astype(np.float32)
    Y = sim.text_embeddings * rng.uniform(1, 3, size=(300, 1)).astype(np.float32)
    return PairedEmbeddings(X, Y, captions=sim.captions, labels=sim.labels, model="raw-rows")


@pytest.fixture(scope="module")
def at(app_session, assert_clean, raw_pairs):
    from gapviz.workspace import Workspace

    ws = Workspace()
    ws.add(raw_pairs, source="test", dataset="raw rows", model="raw-rows")
    session = app_session("pages/anatomy.py", workspace=ws)
    assert_clean(session, "Anatomy on raw rows")
    return session


def test_hubness_and_mixed_search_table_raw_and_after(at, raw_pairs):
    table = next(d.value for d in at.dataframe if "what it is" in d.value.columns)
    assert list(table["measure"]) == ["NDCG@10", "NDCG@10 MixBench", "Hubness", "Robin Hood",
                                      "Anti-hubs", "Hub occurrence"]
    raw = gap_anatomy(raw_pairs.image_embeddings, raw_pairs.text_embeddings, clusters=False,
                      intervals=False).metrics
    by_key = dict(zip(("NDCG@10", "NDCG@10_mixbench", "hubness", "robinhood",
                       "antihub_occurrence", "hub_occurrence"), table.itertuples()))
    for key, row in by_key.items():
        assert row.raw == format_metric(key, raw[key]), key
        assert row.after not in ("", "—"), key
        assert row._4 == info(key).help  # "what it is"
    caption = next(c.value for c in at.caption if "MixBench's protocol" in c.value)
    assert "100 caption queries search 300 documents (100 image, 100 mixed, 100 text" in caption
    assert "MixBench's formula on the paper's pool" in caption and "scikit-hubness" in caption


def test_the_split_names_the_raw_rows_frechet_distance(at, raw_pairs):
    from gapviz.anatomy import raw_frechet_distance

    value = raw_frechet_distance(raw_pairs.image_embeddings, raw_pairs.text_embeddings)
    caption = next(c.value for c in at.caption if c.value.startswith("Fréchet distance ="))
    assert "on the L2-normalised rows" in caption
    assert f"the Fréchet distance is {format_metric('frechet_raw', value)}" in caption
