"""Every dashboard page through Streamlit's AppTest, on the built-in demo.

The app is run as ``streamlit run app.py`` would run it (the router, then the chosen page);
caches are process-wide, so the heavy work (measures, the spectral fit) is done once for the
module and a fresh session (the ``app_session`` fixture) is cheap.
"""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from gapviz.workspace import DEMO_DATASET

PAGES = ["pages/overview.py", "pages/data.py", "pages/explore.py", "pages/close_gap.py"]


@pytest.fixture(scope="module")
def at(tmp_path_factory, app_session) -> AppTest:
    import os

    os.environ.setdefault("GAPVIZ_CACHE_DIR", str(tmp_path_factory.mktemp("gapviz-cache")))
    return app_session()


def test_the_sidebar_shows_dataset_model_method_and_the_simulated_badge(at, app_session,
                                                                        assert_clean):
    first = app_session()
    assert_clean(first, "first run")
    sidebar = " ".join(m.value for m in first.sidebar.markdown)
    assert "Demo (simulated)" in sidebar and "2,500 pairs" in sidebar
    assert "sim-CLIP" in sidebar and "imitates OpenAI CLIP ViT-B/16" in sidebar
    assert "**Close the gap** Spectral" in sidebar
    assert "Simulated data" in sidebar  # the badge
    assert first.sidebar.selectbox(key="sidebar_dataset").value == DEMO_DATASET
    assert first.sidebar.selectbox(key="sidebar_model").options == ["sim-CLIP", "sim-SigLIP",
                                                                    "sim-LLM2CLIP"]


def test_overview_is_the_landing_page_and_tells_the_story_on_the_demo(at, assert_clean):
    assert_clean(at, "Overview")
    text = " ".join(m.value for m in at.markdown)
    for panel in ("The gap, seen", "The gap, measured", "The gap, closed", "The proof"):
        assert panel in text
    cards = [m for m in at.metric if m.label in ("ITR", "TIR", "IMR", "TMR")]
    assert len(cards) == 8  # raw, and after the default spectral method
    raw_itr, closed_itr = [m for m in cards if m.label == "ITR"]
    assert raw_itr.proto.delta == "" and closed_itr.proto.delta.startswith("-")  # the gap shrank
    assert float(closed_itr.value.replace(",", "")) < float(raw_itr.value.replace(",", ""))
    ws = at.session_state["workspace"]
    assert ws.active.dataset.name == DEMO_DATASET and ws.active.simulated


@pytest.mark.parametrize("page", PAGES)
def test_every_page_loads_on_the_demo_without_exception(at, page, assert_clean):
    at.switch_page(page).run()
    assert_clean(at, page)
    assert at.title, f"{page} has no title"
    assert "Demo (simulated)" in " ".join(c.value for c in at.caption)  # the page header
    sidebar = " ".join(m.value for m in at.sidebar.markdown)
    assert "Demo (simulated)" in sidebar and "**Close the gap**" in sidebar and "Simulated data" in sidebar


def test_moving_the_k_slider_changes_the_shown_itr_and_survives_page_switches(at, assert_clean,
                                                                              card_values):
    at.switch_page("pages/close_gap.py").run()
    assert_clean(at, "Close the gap")
    before = card_values(at)
    assert {"ITR", "TIR", "IMR", "TMR", "Recall@5", "Pair dist.", "Fréchet"} <= set(before)
    at.slider(key="close_k").set_value(150).run()
    assert_clean(at, "Close the gap, k = 150")
    after = card_values(at)
    assert after["ITR"] != before["ITR"]
    assert at.session_state["workspace"].method_params == {"n_components": 150, "affinity": "shift"}
    at.switch_page("pages/explore.py").run()
    at.switch_page("pages/close_gap.py").run()
    assert at.slider(key="close_k").value == 150
    assert card_values(at)["ITR"] == after["ITR"]
    at.slider(key="close_k").set_value(60).run()


def test_a_method_choice_becomes_the_current_method(at, assert_clean):
    at.switch_page("pages/close_gap.py").run()
    at.selectbox(key="close_method").set_value("center").run()
    assert_clean(at, "Close the gap, centering")
    ws = at.session_state["workspace"]
    assert ws.method == "center"
    from ui.sidebar import method_summary

    assert method_summary(ws) == "Mean-centering"  # what the sidebar shows
    assert not any(s.key == "close_k" for s in at.slider)  # no k for centering
    at.selectbox(key="close_method").set_value("spectral").run()
    assert_clean(at, "Close the gap, back to spectral")
    assert method_summary(at.session_state["workspace"]).startswith("Spectral (k = ")


def test_the_model_selector_switches_every_page_and_recomputes_nothing(at, app_session, assert_clean,
                                                                       card_values):
    from ui import compute

    session = app_session()
    clip = card_values(session)["ITR"]
    session.sidebar.selectbox(key="sidebar_model").set_value("sim-SigLIP").run()
    assert_clean(session, "Overview, sim-SigLIP")
    assert session.session_state["workspace"].active.model == "sim-SigLIP"
    siglip = card_values(session)["ITR"]
    assert siglip != clip
    session.switch_page("pages/close_gap.py").run()
    assert_clean(session, "Close the gap, sim-SigLIP")
    assert "sim-SigLIP" in " ".join(c.value for c in session.caption)
    # Back to sim-CLIP: its fitted spectral method is still in the store, nothing refits.
    # (The pages' work ahead, the Compare rows the Overview asks for, fits on its own threads:
    # counted once it is done, so that only the pages' own fits would change the count.)
    compute.runs_ahead().wait()
    fits = len(compute.runner().memory.fits)
    back = app_session()
    back.sidebar.selectbox(key="sidebar_model").set_value("sim-SigLIP").run()
    back.switch_page("pages/overview.py").run()
    assert card_values(back)["ITR"] == siglip
    compute.runs_ahead().wait()
    assert len(compute.runner().memory.fits) == fits


def test_explore_lists_nothing_until_points_are_selected(at, assert_clean):
    at.switch_page("pages/explore.py").run()
    assert_clean(at, "Explore")
    assert any("Nothing selected yet" in c.value for c in at.caption)
    at.toggle(key="explore_lines").set_value(True).run()
    assert_clean(at, "Explore with pair lines")


def test_umap_runs_in_the_background_then_replaces_pca(at, app_session, assert_clean):
    import time

    session = app_session()
    session.switch_page("pages/data.py").run()
    session.selectbox(key="data_sim_n").set_value(500)
    session.button(key="data_sim_go").click().run()
    assert session.session_state["workspace"].active.pairs.n == 500
    session.switch_page("pages/explore.py").run()
    session.radio(key="explore_projection").set_value("UMAP").run()
    assert_clean(session, "Explore, UMAP requested")
    deadline = time.monotonic() + 180
    while _status_shown(session):  # the PCA is shown meanwhile, with a running status
        assert time.monotonic() < deadline, "UMAP did not finish"
        time.sleep(1.0)
        session.run()
        assert_clean(session, "Explore while UMAP runs")
    chart = session.get("plotly_chart")
    assert chart, "no scatter after UMAP"
    assert '"UMAP 1"' in chart[0].proto.spec  # the UMAP layout replaced PCA
    # Cached: asking again costs nothing and shows it at once.
    session.radio(key="explore_projection").set_value("PCA").run()
    session.radio(key="explore_projection").set_value("UMAP").run()
    assert not _status_shown(session)


def _status_shown(at: AppTest) -> bool:
    def walk(node):
        yield node
        for child in getattr(node, "children", {}).values():
            yield from walk(child)

    for node in walk(at.main):
        proto = getattr(node, "proto", None)
        if proto is not None and "Computing UMAP" in str(proto):
            return True
    return False


def test_the_proof_query_can_be_changed_and_reset(at, assert_clean):
    at.switch_page("pages/overview.py").run()

    def query_line() -> str:
        return next(m.value for m in at.markdown if "Query: the" in m.value)

    best = query_line()
    assert at.button(key="overview_best").disabled
    for _ in range(3):  # a random pair; three draws make "the same one again" negligible
        at.button(key="overview_random").click().run()
        if query_line() != best:
            break
    assert_clean(at, "Overview, random query")
    assert query_line() != best and not at.button(key="overview_best").disabled
    at.button(key="overview_best").click().run()
    assert query_line() == best


def test_close_the_gap_shows_the_trade_off_of_spectral_k(at, assert_clean):
    at.switch_page("pages/close_gap.py").run()
    at.toggle(key="close_tradeoff").set_value(True).run()
    assert_clean(at, "Close the gap, trade-off")
    assert "close_tradeoff_fig" in [c.key for c in at.get("plotly_chart")]
    assert any("Top right is best" in c.value and "transductive: fitted on the 2,500 scored pairs"
               in c.value.replace("\\", "") for c in at.caption)  # as shown: escapes read as text
    # Kept once computed: dropping the runner's fits and runs does not make a rerun refit them.
    from gapviz import closing_costs
    from ui import compute

    fig = next(c for c in at.get("plotly_chart") if c.key == "close_tradeoff_fig")
    compute.runner().memory.fits.clear()
    compute.runner().memory.runs.clear()
    calls = []
    real = closing_costs.tradeoff_point
    closing_costs.tradeoff_point = lambda *a, **k: calls.append(a) or real(*a, **k)
    try:
        at.run()
    finally:
        closing_costs.tradeoff_point = real
    again = next(c for c in at.get("plotly_chart") if c.key == "close_tradeoff_fig")
    assert again.proto.spec == fig.proto.spec and calls == []
    at.toggle(key="close_tradeoff").set_value(False).run()


def test_recall_cards_give_the_chance_level_of_their_pool(at):
    at.switch_page("pages/close_gap.py").run()
    card = next(m for m in at.metric if m.label.startswith("Recall@"))
    assert "Chance level in this pool of 5,000 items: 0.0010" in card.help
