"""The large-pool table (gapviz.figures.atlas), the atlas component this app serves
(ui.atlas) and Explore on a pool past Plotly's limit.

The table is tested without Streamlit or the atlas package; evaluating a selection needs
DuckDB (installed with the atlas) and is skipped without it. The component's copy (DuckDB-WASM
from this app, the start watch) is laid out from a package-shaped folder made here, and from
the real package when it is installed. Explore runs through AppTest on a generated pool: the
fallback to a seeded Plotly sample without the atlas, and, with a stand-in for the browser's
component, what the page does with each value the browser sends (a failed start, no WebGPU,
a selection). The browser itself is in ``test_browser_large_pool.py``.
"""

from __future__ import annotations

from pathlib import Path

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


def test_a_hosted_demo_without_the_local_copy_shows_the_sample(monkeypatch, gapviz_cache,
                                                                app_session, assert_clean,
                                                                simulated_workspace, tmp_path):
    """A hosted page loads nothing from elsewhere: where this app cannot serve the atlas's
    DuckDB-WASM itself, a hosted demo shows the sample and says why."""
    import ui.atlas

    monkeypatch.setenv("GAPVIZ_HOSTED", "1")
    monkeypatch.setattr(ui.atlas, "atlas_installed", lambda: True)
    monkeypatch.setattr(ui.atlas, "viewer", lambda: _fake_viewer(
        lambda **kw: {}, folder=ui.atlas.ViewerFolder(tmp_path, False, "unknown layout")))
    n = av.PLOTLY_MAX_POINTS // 2 + 500
    ws = simulated_workspace(n, 16, "large", profiles=["clip"])
    at = app_session("pages/explore.py", workspace=ws)
    assert_clean(at, "explore (large pool, hosted, no local copy)")
    assert any(f"Showing {av.PLOTLY_MAX_POINTS:,} of {2 * n:,} points" in c.value
               and "not offered on this hosted demo" in c.value for c in at.caption)
    assert not [r for r in at.radio if r.key == "explore_viewer"]


def test_a_hosted_demo_offers_the_atlas_served_by_the_app(monkeypatch, gapviz_cache, app_session,
                                                          assert_clean, simulated_workspace):
    """With its copy of DuckDB-WASM served by this app, the atlas needs no other server."""
    pytest.importorskip("embedding_atlas", reason="embedding-atlas is an extra (gapviz[atlas])")
    import ui.atlas

    monkeypatch.setenv("GAPVIZ_HOSTED", "1")
    n = av.PLOTLY_MAX_POINTS // 2 + 500
    ws = simulated_workspace(n, 16, "large", profiles=["clip"])
    at = app_session("pages/explore.py", workspace=ws)
    assert_clean(at, "explore (large pool, hosted, atlas)")
    assert ui.atlas.viewer().local
    assert [r for r in at.radio if r.key == "explore_viewer"]
    assert any("Drawn with Embedding Atlas" in c.value for c in at.caption)


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


# ---------------------------------------------------------------------------------------------
# the component this app serves (ui.atlas.build_viewer_folder)
# ---------------------------------------------------------------------------------------------
_COMPONENT_JS = ('var fd={name:`@duckdb/duckdb-wasm`,version:`1.2.3`},Pse=fd.name,Fse=fd.version;'
                 'function Lse(){let e=`https://cdn.jsdelivr.net/npm/${Pse}@${Fse}/dist/`;'
                 'return{eh:{mainModule:`${e}duckdb-eh.wasm`}}}')


def _package(root: Path, *, viewer_version: str = "1.2.3", js: str = _COMPONENT_JS) -> Path:
    """A folder shaped like the embedding_atlas package: its Streamlit component and the
    DuckDB-WASM files of its own viewer."""
    package = root / "embedding_atlas"
    component = package / "widget_static" / "streamlit"
    (component / "assets").mkdir(parents=True)
    (component / "index.html").write_text(
        '<!doctype html>\n<html><head><script type="module" src="./assets/index-A.js"></script>'
        "</head><body></body></html>\n")
    (component / "assets" / "index-A.js").write_text(js, encoding="utf-8")
    (component / "assets" / "search.worker-B.js").write_text("// a worker")
    shipped = package / "static" / "assets"
    shipped.mkdir(parents=True)
    (shipped / "index-C.js").write_text(
        f"x={{name:`@duckdb/duckdb-wasm`,version:`{viewer_version}`}}")
    for name in ("duckdb-browser-eh.worker-1.js", "duckdb-browser-mvp.worker-2.js",
                 "duckdb-eh-3.wasm", "duckdb-mvp-4.wasm"):
        (shipped / name).write_bytes(name.encode())
    return package


def test_the_copy_loads_duckdb_from_its_own_folder_and_watches_the_start(tmp_path):
    from ui.atlas import START_TIMEOUT_S, build_viewer_folder

    folder = build_viewer_folder(_package(tmp_path), tmp_path / "served")
    assert folder.local_duckdb and folder.reason is None
    code = (folder.path / "assets" / "index-A.js").read_text(encoding="utf-8")
    assert "cdn.jsdelivr.net" not in code
    assert 'let e=`${new URL("duckdb/",import.meta.url).href}`' in code
    for name, content in (("duckdb-browser-eh.worker.js", b"duckdb-browser-eh.worker-1.js"),
                          ("duckdb-browser-mvp.worker.js", b"duckdb-browser-mvp.worker-2.js"),
                          ("duckdb-eh.wasm", b"duckdb-eh-3.wasm"),
                          ("duckdb-mvp.wasm", b"duckdb-mvp-4.wasm")):
        served = folder.path / "assets" / "duckdb" / name
        assert served.read_bytes() == content and not served.is_symlink()
    worker = folder.path / "assets" / "search.worker-B.js"
    assert worker.read_text(encoding="utf-8") == "// a worker"
    html = (folder.path / "index.html").read_text(encoding="utf-8")
    # the watch runs first: before the atlas's module, inside <head>
    assert html.index("<head>") < html.index("streamlit:setComponentValue") < html.index(
        'src="./assets/index-A.js"')
    assert f"const LIMIT_MS = {START_TIMEOUT_S * 1000};" in html
    # laid out once: a second call reuses the folder
    stamp = (folder.path / ".complete").stat().st_mtime_ns
    again = build_viewer_folder(_package(tmp_path / "again"), tmp_path / "served")
    assert again.path.parent == folder.path.parent
    assert build_viewer_folder(tmp_path / "embedding_atlas", tmp_path / "served") == folder
    assert (folder.path / ".complete").stat().st_mtime_ns == stamp
    assert not [p for p in (tmp_path / "served").iterdir() if p.name.startswith(".building")]


def test_an_unknown_layout_keeps_the_cdn_and_says_why(tmp_path):
    from ui.atlas import build_viewer_folder

    other = build_viewer_folder(_package(tmp_path / "a", viewer_version="9.9.9"), tmp_path / "s")
    assert not other.local_duckdb and "not the one its component uses" in other.reason
    assert "cdn.jsdelivr.net" in (other.path / "assets" / "index-A.js").read_text(encoding="utf-8")
    assert "streamlit:setComponentValue" in (other.path / "index.html").read_text(encoding="utf-8")
    unknown = build_viewer_folder(_package(tmp_path / "b", js="console.log(1)"), tmp_path / "s")
    assert not unknown.local_duckdb and "does not know" in unknown.reason


def test_the_code_is_changed_only_where_the_address_is_once():
    from ui.atlas import duckdb_wasm_version, local_duckdb_code

    assert local_duckdb_code("no address") is None
    twice = "`https://cdn.jsdelivr.net/npm/${a}@${b}/dist/`" * 2
    assert local_duckdb_code(twice) is None
    assert duckdb_wasm_version(_COMPONENT_JS) == "1.2.3"
    assert duckdb_wasm_version("none") is None


def test_the_installed_package_is_served_from_this_app(tmp_path):
    embedding_atlas = pytest.importorskip("embedding_atlas",
                                          reason="embedding-atlas is an extra (gapviz[atlas])")
    from ui.atlas import build_viewer_folder

    package = Path(embedding_atlas.__file__).parent
    folder = build_viewer_folder(package, tmp_path)
    assert folder.local_duckdb, folder.reason
    scripts = [p.read_text(encoding="utf-8") for p in (folder.path / "assets").glob("*.js")]
    assert not any("cdn.jsdelivr.net/npm/${" in js for js in scripts)
    sizes = {p.name: p.stat().st_size for p in (folder.path / "assets" / "duckdb").iterdir()}
    assert set(sizes) == {"duckdb-browser-eh.worker.js", "duckdb-browser-mvp.worker.js",
                          "duckdb-eh.wasm", "duckdb-mvp.wasm"}
    assert min(sizes.values()) > 100_000


# ---------------------------------------------------------------------------------------------
# Explore with a stand-in for the browser's component
# ---------------------------------------------------------------------------------------------
def _fake_viewer(answer, folder=None):
    """An AtlasViewer whose component answers ``answer(**kwargs)`` (what the browser would
    send), for AppTest (which has no browser)."""
    from ui.atlas import AtlasViewer, ViewerFolder

    folder = folder if folder is not None else ViewerFolder(Path("."), True)
    return AtlasViewer(lambda **kw: answer(**kw), lambda **options: dict(options), folder)


def _large(simulated_workspace):
    n = av.PLOTLY_MAX_POINTS // 2 + 500
    return n, simulated_workspace(n, 16, "large", profiles=["clip"])


def _texts(at) -> str:
    return " ".join(e.value for kind in (at.caption, at.info, at.warning, at.markdown)
                    for e in kind)


def test_an_atlas_that_did_not_start_switches_to_the_sample_and_says_why(
        monkeypatch, gapviz_cache, app_session, assert_clean, simulated_workspace):
    import ui.atlas
    from ui.atlas import VIEWERS

    answers = [{"gapviz": {"state": "failed", "reason": "a worker of the atlas failed"}}]
    monkeypatch.setattr(ui.atlas, "atlas_installed", lambda: True)
    monkeypatch.setattr(ui.atlas, "viewer",
                        lambda: _fake_viewer(lambda **kw: answers[0] if answers else {}))
    n, ws = _large(simulated_workspace)
    at = app_session("pages/explore.py", workspace=ws)
    assert_clean(at, "explore (atlas failed)")
    assert at.radio(key="explore_viewer").value == VIEWERS[1]
    warning = " ".join(w.value for w in at.warning)
    assert "Embedding Atlas did not start in this browser" in warning
    assert "a worker of the atlas failed" in warning
    text = _texts(at)
    assert f"Showing {av.PLOTLY_MAX_POINTS:,} of {2 * n:,} points" in text
    # Plotly's help, not the atlas's
    assert ui.atlas.PLOTLY_HOW_TO in text and ui.atlas.PLOTLY_CLEAR in text
    assert ui.atlas.ATLAS_HOW_TO not in text
    # choosing the atlas again gives it a new try (here it starts)
    answers.clear()
    at.radio(key="explore_viewer").set_value(VIEWERS[0]).run()
    assert_clean(at, "explore (atlas chosen again)")
    assert not at.warning
    text = _texts(at)
    assert "Drawn with Embedding Atlas" in text and ui.atlas.ATLAS_CLEAR in text
    assert "double-click the chart" not in text and ui.atlas.PLOTLY_HOW_TO not in text


def test_a_browser_without_webgpu_is_told_what_works(monkeypatch, gapviz_cache, app_session,
                                                     assert_clean, simulated_workspace):
    import ui.atlas

    monkeypatch.setattr(ui.atlas, "atlas_installed", lambda: True)
    monkeypatch.setattr(ui.atlas, "viewer", lambda: _fake_viewer(
        lambda **kw: {"gapviz": {"state": "started", "webgpu": "no WebGPU adapter"}}))
    _, ws = _large(simulated_workspace)
    at = app_session("pages/explore.py", workspace=ws)
    assert_clean(at, "explore (no WebGPU)")
    info = " ".join(i.value for i in at.info)
    assert "no WebGPU adapter" in info and "point view stays empty" in info
    assert "Drawn with Embedding Atlas" in _texts(at)
    assert not at.warning


def test_an_atlas_selection_lists_its_pairs(monkeypatch, gapviz_cache, app_session, assert_clean,
                                            simulated_workspace):
    pytest.importorskip("duckdb", reason="DuckDB comes with embedding-atlas (gapviz[atlas])")
    import ui.atlas

    monkeypatch.setattr(ui.atlas, "atlas_installed", lambda: True)
    monkeypatch.setattr(ui.atlas, "viewer", lambda: _fake_viewer(
        lambda **kw: {"predicate": "modality = 'image' AND pair < 3"}))
    _, ws = _large(simulated_workspace)
    at = app_session("pages/explore.py", workspace=ws)
    assert_clean(at, "explore (atlas selection)")
    assert any(m.value.startswith("**3 pairs selected** (3 points)") for m in at.markdown)
    key, rows = at.session_state["explore_selection"]
    assert key == ws.active.key and rows == [(0, "image"), (1, "image"), (2, "image")]


def test_a_small_pool_keeps_plotlys_help(gapviz_cache, app_session, assert_clean):
    import ui.atlas

    at = app_session("pages/explore.py")
    assert_clean(at, "explore (demo)")
    text = _texts(at)
    assert ui.atlas.PLOTLY_HOW_TO in text and ui.atlas.PLOTLY_CLEAR in text
    assert ui.atlas.ATLAS_HOW_TO not in text
