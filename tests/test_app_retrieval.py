"""The Retrieval page through Streamlit's AppTest.

Runs ``app.py`` (the router, then the page) on a small simulated workspace put in the session
before the first run, so every run takes a second or two; and on a user's zip of images and
captions embedded by a tiny open_clip model (random weights), for free-text queries.
"""

from __future__ import annotations

import re

import pytest
from streamlit.testing.v1 import AppTest

from gapviz.workspace import Workspace

PAGE = "pages/retrieval.py"
TIMEOUT = 180
N = 300


def _columns(at: AppTest) -> tuple[str, str]:
    """HTML of the two result columns (raw, method): the markdown blocks holding ranked cards."""
    blocks = [m.value for m in at.markdown if "data-rank=" in m.value]
    assert len(blocks) == 2, f"expected two result columns, got {len(blocks)}"
    return blocks[0], blocks[1]


def _query_card(at: AppTest) -> str:
    return next(m.value for m in at.markdown if "gv-rank'>query" in m.value)


def _metrics(at: AppTest) -> list[tuple[str, str]]:
    return [(m.label, m.value) for m in at.metric]


def _modalities(html: str) -> list[str]:
    return re.findall(r"data-modality='(\w+)'", html)


@pytest.fixture(scope="module")
def small_ws(simulated_workspace) -> Workspace:
    return simulated_workspace(N, 64, "Small simulated", seed=1)


@pytest.fixture(scope="module")
def at(small_ws, app_session) -> AppTest:
    return app_session(PAGE, workspace=small_ws, timeout=TIMEOUT)


def test_the_default_query_shows_the_papers_contrast(at, assert_clean):
    assert_clean(at, "Retrieval")
    assert at.title[0].value == "Retrieval"
    assert at.radio(key="retrieval_source").value == "pair"
    assert at.radio(key="retrieval_modality").value == "image"
    raw, closed = _columns(at)
    k = at.slider(key="retrieval_k").value
    # Left: raw embeddings, an image query finds images only; its caption is far below.
    assert _modalities(raw)[:k] == ["image"] * k
    metrics = _metrics(at)
    assert metrics[1] == (f"Images in the top {k}", f"{k} / {k}")
    raw_rank = int(metrics[0][1].lstrip("#").replace(",", ""))
    assert raw_rank > k and "beyond the top" in raw
    # Right: the gap closed, the caption rises to the top and is highlighted there.
    assert metrics[2] == ("Rank of its caption", "#1")
    first_card = closed.split("data-rank=")[1]
    assert "gv-card gv-partner" in closed.split("data-rank='1'")[0].rsplit("<div", 1)[1]
    assert "data-modality='text'" in first_card and "✓ its caption" in first_card
    assert "text" in _modalities(closed)
    assert [c.key for c in at.get("plotly_chart")] == ["retrieval_fig_0", "retrieval_fig_1"]


def test_a_new_query_changes_the_results(at, assert_clean):
    before = _columns(at)
    pair = at.selectbox(key="retrieval_pair")
    other = (pair.value + 17) % N
    pair.set_value(other).run()
    assert_clean(at, "another pair")
    after = _columns(at)
    assert after[0] != before[0] and after[1] != before[1]
    pairs = at.session_state["workspace"].active.pairs
    assert pairs.ids[other] in _query_card(at)
    at.radio(key="retrieval_modality").set_value("text").run()
    assert_clean(at, "caption query")
    assert [label for label, _ in _metrics(at)][0] == "Rank of its image"
    assert "the <b>caption</b> of pair" in _query_card(at)
    assert _modalities(_columns(at)[0])[0] == "text"  # raw: a caption finds captions
    at.radio(key="retrieval_modality").set_value("image").run()


def test_changing_the_method_updates_the_right_column_only(at, assert_clean):
    raw, closed = _columns(at)
    at.selectbox(key="retrieval_method").set_value("center").run()
    assert_clean(at, "mean-centering")
    raw2, closed2 = _columns(at)
    assert raw2 == raw and closed2 != closed
    assert any(m.value == "#### Mean-centering" for m in at.markdown)
    at.selectbox(key="retrieval_method").set_value("spectral").run()
    assert any(m.value.startswith("#### Spectral (k = ") for m in at.markdown)


def test_random_and_best_example_buttons(at, small_ws, app_session, assert_clean):
    if at.button(key="retrieval_best").disabled:  # on the best example already: leave it first
        at.selectbox(key="retrieval_pair").set_value((at.selectbox(key="retrieval_pair").value + 1) % N).run()
    at.button(key="retrieval_best").click().run()
    best = at.selectbox(key="retrieval_pair").value
    assert at.button(key="retrieval_best").disabled  # already showing it
    fresh = app_session(PAGE, workspace=small_ws, timeout=TIMEOUT)  # opens on the best example
    assert fresh.selectbox(key="retrieval_pair").value == best
    at.selectbox(key="retrieval_pair").set_value((best + 1) % N).run()
    at.button(key="retrieval_best").click().run()
    assert_clean(at, "best example")
    assert at.selectbox(key="retrieval_pair").value == best
    seen = set()
    for _ in range(3):
        at.button(key="retrieval_random").click().run()
        assert_clean(at, "random query")
        seen.add(at.selectbox(key="retrieval_pair").value)
    assert all(0 <= r < N for r in seen) and len(seen) >= 2


def test_the_chosen_pair_is_kept_while_the_user_is_on_another_page(small_ws, app_session,
                                                                   assert_clean):
    at = app_session(PAGE, workspace=small_ws, timeout=TIMEOUT)
    best = at.selectbox(key="retrieval_pair").value  # the page opens on the best example
    chosen = (best + 5) % N
    at.selectbox(key="retrieval_pair").set_value(chosen).run()
    at.switch_page("pages/overview.py").run()
    at.switch_page(PAGE).run()
    assert_clean(at, "back on Retrieval")
    assert at.selectbox(key="retrieval_pair").value == chosen
    assert not at.button(key="retrieval_best").disabled
    assert f"<code>{small_ws.active.pairs.ids[chosen]}</code>" in _query_card(at)


def test_a_selection_on_explore_becomes_the_query(at, small_ws, assert_clean):
    pairs = small_ws.active.pairs
    at.session_state["explore_selection"] = (small_ws.active.key, [(5, "text"), (9, "image")])
    at.radio(key="retrieval_source").set_value("explore").run()
    assert_clean(at, "Explore selection")
    assert f"the <b>caption</b> of pair <code>{pairs.ids[5]}</code>" in _query_card(at)
    at.selectbox(key="retrieval_explore_item").set_value(1).run()
    assert f"the <b>image</b> of pair <code>{pairs.ids[9]}</code>" in _query_card(at)
    at.radio(key="retrieval_source").set_value("pair").run()


def test_free_text_is_disabled_on_simulated_data_with_a_reason(at, assert_clean):
    at.radio(key="retrieval_source").set_value("text").run()
    assert_clean(at, "free text on the demo")
    assert at.text_input(key="retrieval_text").disabled
    assert any("simulated" in c.value and "Data" in c.value for c in at.caption)
    assert not [m for m in at.markdown if "data-rank=" in m.value]  # no query, no results
    at.radio(key="retrieval_source").set_value("pair").run()


def test_the_page_offers_every_export(at):
    keys = {b.key for b in at.get("download_button")}
    assert {"retrieval_dl_report", "retrieval_dl_csv", "retrieval_dl_md", "retrieval_dl_npz",
            "retrieval_dl_extra0"} <= keys


# ---------------------------------------------------------------------------------------------
# a user's zip, embedded by a (tiny, random-weights) open_clip model: free text works
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def zip_ws(tmp_path_factory) -> Workspace:
    pytest.importorskip("open_clip")
    from datafixtures import make_txt_folder, register_tiny_model, zip_folder
    from gapviz.data import load_folder
    from gapviz.encode import ModelSpec, embed_pairs

    tiny = register_tiny_model(tmp_path_factory.mktemp("model-configs"))
    root = tmp_path_factory.mktemp("upload")
    make_txt_folder(root / "pairs")
    archive = zip_folder(root / "pairs", root / "pairs.zip")
    kept, report = load_folder(archive, cache_dir=tmp_path_factory.mktemp("unzipped"))
    result = embed_pairs(kept, ModelSpec(tiny, "none"), meta={"source": "pairs.zip"})
    ws = Workspace()
    ws.add(result.embeddings, source="pairs.zip", report=None)
    return ws


def test_free_text_on_a_users_zip_goes_through_the_model_and_the_method(zip_ws, app_session,
                                                                        assert_clean):
    at = app_session(PAGE, workspace=zip_ws, timeout=TIMEOUT)
    assert_clean(at, "user's zip")
    pairs = zip_ws.active.pairs
    raw, closed = _columns(at)
    assert "data:image/jpeg;base64," in raw + closed  # real thumbnails of the user's images
    at.radio(key="retrieval_source").set_value("text").run()
    field = at.text_input(key="retrieval_text")
    assert not field.disabled
    field.input("a red kite over a field").run()
    assert_clean(at, "free text")
    raw, closed = _columns(at)
    assert len(_modalities(raw)) == len(_modalities(closed)) == min(at.slider(key="retrieval_k").value,
                                                                    2 * pairs.n)
    assert "free text" in _query_card(at) and "a red kite over a field" in _query_card(at)
    assert ("Rank of the true partner", "—") in _metrics(at)
    assert "gv-partner" not in raw.split("</style>")[-1]  # a free query has no partner
    assert any(m.value.startswith("#### Spectral (k = ") for m in at.markdown)


def test_the_protocol_of_the_right_column_can_be_switched_and_is_stated(small_ws, app_session,
                                                                       assert_clean):
    at = app_session(PAGE, workspace=small_ws, timeout=TIMEOUT)
    at.selectbox(key="retrieval_method").set_value("center").run()
    assert_clean(at, "centering")
    assert any("transductive: fitted on the 300 scored pairs" in c.value for c in at.caption)
    transductive = _columns(at)[1]
    at.selectbox(key="retrieval_protocol_center").set_value("held-out").run()
    assert_clean(at, "centering, held-out")
    assert any("held-out: 5-fold cross-fit" in c.value and "300 scored" in c.value
               for c in at.caption)
    assert _columns(at)[1] != transductive  # out-of-fold means: other similarities
    at.selectbox(key="retrieval_method").set_value("procrustes").run()
    assert_clean(at, "procrustes: held-out by default")
    assert any("held-out: 5-fold cross-fit" in c.value for c in at.caption)
