"""The large-pool table (gapviz.figures.atlas) and Explore on a pool past Plotly's limit.

The table is tested without Streamlit or the atlas package; evaluating a selection needs
DuckDB (installed with the atlas) and is skipped without it. The Explore fallback (a seeded
Plotly sample when the atlas is not installed) runs through AppTest on a generated pool.
"""

from __future__ import annotations

import numpy as np
import pytest

from gapviz.figures import atlas as av
from gapviz.projection import Projection


def _proj(n: int, seed: int = 0) -> Projection:
    rng = np.random.default_rng(seed)
    return Projection(rng.normal(size=(n, 2)), rng.normal(size=(n, 2)) + 3.0, "pca")


def test_every_pair_shown_below_the_limit_with_partner_neighbours():
    proj = Projection(np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]),
                      np.array([[0.0, 4.0], [1.0, 3.0], [2.0, 0.0]]), "pca")
    table = av.atlas_table(proj, ids=["a", "b", "c"], captions=["one", "two", "three"])
    f = table.frame
    assert not table.sample.sampled and table.sample.describe() == "All 6 points shown."
    assert f[av.ROW_ID].tolist() == [0, 1, 2, 3, 4, 5]
    assert f["modality"].tolist() == ["image"] * 3 + ["text"] * 3
    assert f["pair"].tolist() == [0, 1, 2, 0, 1, 2]
    # image i's neighbour is text i (row 3 + i) and back, at their 2-D distance
    assert [nb["ids"] for nb in f[av.NEIGHBORS]] == [[3], [4], [5], [0], [1], [2]]
    assert [nb["distances"] for nb in f[av.NEIGHBORS]] == [[4.0], [3.0], [0.0],
                                                            [4.0], [3.0], [0.0]]
    assert f[av.TEXT].tolist() == ["image · a", "image · b", "image · c", "one", "two", "three"]
    assert f[av.X].tolist() == [0.0, 1.0, 2.0, 0.0, 1.0, 2.0]
    assert f[av.Y].tolist() == [0.0, 0.0, 0.0, 4.0, 3.0, 0.0]


def test_sample_keeps_whole_pairs_seeded_and_recorded():
    proj = _proj(1000)
    ids = [f"p{i}" for i in range(1000)]
    table = av.atlas_table(proj, ids=ids, max_points=300, seed=7)
    s = table.sample
    assert s.sampled and s.seed == 7 and s.n_pairs == 1000 and s.rows.size == 150
    assert np.all(np.diff(s.rows) > 0)
    assert s.describe() == ("Showing 300 of 2,000 points: a random sample of 150 of 1,000 "
                            "pairs (seed 7), both points of each.")
    again = av.atlas_table(proj, ids=ids, max_points=300, seed=7)
    other = av.atlas_table(proj, ids=ids, max_points=300, seed=8)
    np.testing.assert_array_equal(again.sample.rows, s.rows)
    assert not np.array_equal(other.sample.rows, s.rows)
    f = table.frame
    m = s.rows.size
    # every shown point's neighbour is its partner, which is shown too
    for i in (0, 17, m - 1, m, m + 42, 2 * m - 1):
        j = f[av.NEIGHBORS].iloc[i]["ids"][0]
        assert f["pair"].iloc[j] == f["pair"].iloc[i]
        assert f["modality"].iloc[j] != f["modality"].iloc[i]
    # coordinates are those of the sampled pairs
    r = int(s.rows[5])
    assert f[av.X].iloc[5] == pytest.approx(proj.images[r, 0], rel=1e-6)
    assert f[av.Y].iloc[m + 5] == pytest.approx(proj.texts[r, 1], rel=1e-6)
    assert f["pair_id"].iloc[m + 5] == f"p{r}"


def test_byte_limit_samples_down():
    proj = _proj(2000)
    caps = ["a fairly long caption about something " * 4] * 2000
    full = av.atlas_table(proj, captions=caps, max_bytes=None)
    size = av.arrow_bytes(full.frame)
    small = av.atlas_table(proj, captions=caps, max_bytes=size // 2)
    assert small.sample.sampled and av.arrow_bytes(small.frame) <= size // 2
    assert small.sample.rows.size > 0


def test_pairs_of_maps_rows_back_and_validates():
    table = av.atlas_table(_proj(10), max_points=8, seed=0)
    rows = table.sample.rows
    assert table.pairs_of([0, 4, 4, 1, 99, -1]) == [(int(rows[0]), "image"),
                                                   (int(rows[0]), "text"),
                                                   (int(rows[1]), "image")]
    with pytest.raises(ValueError, match="one id per pair"):
        av.atlas_table(_proj(3), ids=["a"])
    with pytest.raises(ValueError, match="at least 2"):
        av.sample_pairs(3, 1)


def test_predicate_selects_pairs():
    pytest.importorskip("duckdb", reason="DuckDB comes with embedding-atlas (gapviz[atlas])")
    proj = Projection(np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]),
                      np.array([[0.0, 4.0], [1.0, 3.0], [2.0, 0.5]]), "pca")
    table = av.atlas_table(proj)
    # a rectangle over x/y as the atlas writes it, and a filter on a column
    assert av.rows_for_predicate(table, '("x" BETWEEN 0.5 AND 2.5) AND ("y" BETWEEN -0.1 AND 0.6)'
                                 ) == [(1, "image"), (2, "image"), (2, "text")]
    assert av.rows_for_predicate(table, "modality = 'text'") == [(0, "text"), (1, "text"),
                                                                 (2, "text")]
    assert av.rows_for_predicate(table, None) == []


def test_predicate_from_the_browser_cannot_reach_files(tmp_path):
    pytest.importorskip("duckdb", reason="DuckDB comes with embedding-atlas (gapviz[atlas])")
    import duckdb

    table = av.atlas_table(_proj(4))
    target = tmp_path / "written.csv"
    with pytest.raises(ValueError, match="single SQL predicate"):
        av.rows_for_predicate(table, f"x > 0; COPY (SELECT 1) TO '{target}'")
    with pytest.raises(ValueError, match="single SQL predicate"):
        av.rows_for_predicate(table, f"x > 0); COPY (SELECT 1) TO '{target}'; --")
    with pytest.raises(duckdb.Error, match="disabled by configuration"):
        av.rows_for_predicate(table, f"x > (SELECT count(*) FROM read_csv('{__file__}'))")
    assert not target.exists()


def test_explore_falls_back_to_a_plotly_sample_without_the_atlas(monkeypatch, gapviz_cache, app_session,
                                                                 assert_clean, simulated_workspace):
    import ui.atlas

    monkeypatch.setattr(ui.atlas, "atlas_installed", lambda: False)
    n = av.PLOTLY_MAX_POINTS // 2 + 500  # 101,000 points
    ws = simulated_workspace(n, 16, "large", profiles=["clip"])
    at = app_session("pages/explore.py", workspace=ws)
    assert_clean(at, "explore (large pool, no atlas)")
    notes = " ".join(i.value for i in at.info)
    assert (f"Showing {av.PLOTLY_MAX_POINTS:,} of {2 * n:,} points" in notes
            and "seed 0" in notes and av.ATLAS_INSTALL in notes), notes
    # the large pool's measures were not computed for the picture (no metric cards)
    assert not at.metric


def test_a_hosted_demo_shows_the_sample_not_the_atlas(monkeypatch, gapviz_cache, app_session,
                                                      assert_clean, simulated_workspace):
    """The atlas component loads code from a CDN: hosted pages send visitors nowhere else."""
    import ui.atlas

    monkeypatch.setenv("GAPVIZ_HOSTED", "1")
    monkeypatch.setattr(ui.atlas, "atlas_installed", lambda: True)
    n = av.PLOTLY_MAX_POINTS // 2 + 500
    ws = simulated_workspace(n, 16, "large", profiles=["clip"])
    at = app_session("pages/explore.py", workspace=ws)
    assert_clean(at, "explore (large pool, hosted)")
    assert any(f"Showing {av.PLOTLY_MAX_POINTS:,} of {2 * n:,} points" in c.value
               and "not offered on a hosted demo" in c.value for c in at.caption)
    assert not [r for r in at.radio if r.key == "explore_viewer"]


def test_explore_draws_the_atlas_when_installed(gapviz_cache, app_session, assert_clean,
                                                simulated_workspace):
    pytest.importorskip("embedding_atlas", reason="embedding-atlas is an extra (gapviz[atlas])")
    n = av.PLOTLY_MAX_POINTS // 2 + 500
    ws = simulated_workspace(n, 16, "large", profiles=["clip"])
    at = app_session("pages/explore.py", workspace=ws)
    assert_clean(at, "explore (large pool, atlas)")
    assert any("Drawn with Embedding Atlas" in c.value and f"All {2 * n:,} points shown" in c.value
               for c in at.caption), [c.value for c in at.caption]
    assert not at.info and not at.metric


def test_explore_can_switch_a_large_pool_to_the_plotly_sample(gapviz_cache, app_session, assert_clean,
                                                              simulated_workspace):
    pytest.importorskip("embedding_atlas", reason="embedding-atlas is an extra (gapviz[atlas])")
    from ui.atlas import VIEWERS

    n = av.PLOTLY_MAX_POINTS // 2 + 500
    ws = simulated_workspace(n, 16, "large", profiles=["clip"])
    at = app_session("pages/explore.py", workspace=ws, explore_viewer=VIEWERS[1])
    assert_clean(at, "explore (large pool, Plotly sample chosen)")
    assert any(c.value.startswith(f"Showing {av.PLOTLY_MAX_POINTS:,} of {2 * n:,} points")
               for c in at.caption), [c.value for c in at.caption]
    assert not any("Drawn with Embedding Atlas" in c.value for c in at.caption)
