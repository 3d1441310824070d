"""Close the gap through AppTest: how the protocol menu guides a user (small simulated pairs).

A method that reads the pairing, set to be scored on its own fit pairs, gets a note that says
what to choose (not an error), and its numbers only with the opt-in and a warning; "Fit on
another dataset" is offered only once there is one; the raw embeddings say they fit nothing.
"""

from __future__ import annotations

import pytest

from gapviz.simulate import simulate_pairs

N = 200


@pytest.fixture
def at(app_session, simulated_workspace):
    """A fresh session on Close the gap, on N simulated sim-CLIP pairs."""
    return app_session("pages/close_gap.py",
                       workspace=simulated_workspace(N, 32, "Small simulated", seed=2,
                                                     profiles=["clip"]))


def test_procrustes_on_its_own_fit_pairs_needs_the_opt_in_and_then_warns(at, assert_clean, card_values):
    at.selectbox(key="close_method").set_value("procrustes").run()
    assert_clean(at, "Procrustes, held-out by default")
    assert at.selectbox(key="close_protocol_procrustes").value == "held-out"
    assert any("held-out: 5-fold cross-fit" in c.value for c in at.caption)

    at.selectbox(key="close_protocol_procrustes").set_value("transductive").run()
    assert_clean(at, "Procrustes, transductive without the opt-in")  # a note, not an error
    note = " ".join(i.value for i in at.info)
    assert "memorises" in note and "Held-out" in note and "Score it on its own fit pairs" in note
    assert card_values(at) == {}  # no numbers without the opt-in

    at.checkbox(key="close_allow_leak").check().run()
    assert_clean(at, "Procrustes, transductive with the opt-in")
    assert "ITR" in card_values(at)
    assert any("Procrustes" in w.value or "procrustes" in w.value for w in at.warning)


def test_fit_on_is_offered_only_once_another_dataset_is_loaded(at, assert_clean):
    at.selectbox(key="close_method").set_value("sinkhorn").run()
    assert_clean(at, "Sinkhorn")
    options = at.selectbox(key="close_protocol_sinkhorn").options
    assert "Held-out (5-fold cross-fit)" in options and "Fit on another dataset" not in options
    ws = at.session_state["workspace"]
    ws.add(simulate_pairs(150, 32, seed=9), source="test", dataset="Other pairs",
           model=ws.active.model, activate=False)
    at.run()
    protocol = at.selectbox(key="close_protocol_sinkhorn")
    assert "Fit on another dataset" in protocol.options
    protocol.set_value("fit-on").run()
    assert_clean(at, "Sinkhorn fitted on the other pairs")
    assert any("fit-on Other pairs" in c.value and "fitted on 150 pairs" in c.value
               for c in at.caption)


def test_the_fit_set_chosen_is_kept_while_the_user_is_on_another_page(
        fitting_on_the_second_fit_set, assert_clean):
    """Fit-on with the second of two other datasets, then another page and back (the
    browser's navigation clears the link in the URL, so the kept choices apply): the same
    protocol and the same fit set, not the first one offered."""
    _, at, first = fitting_on_the_second_fit_set(N)
    assert first.startswith("Other A")
    assert_clean(at, "fit on Other B")
    at.switch_page("pages/overview.py").run()
    at.query_params.clear()  # as a browser's page navigation does
    at.switch_page("pages/close_gap.py").run()
    assert_clean(at, "back on Close the gap")
    assert at.selectbox(key="close_protocol_spectral").value == "fit-on"
    assert at.selectbox(key="close_fit_on").value.startswith("Other B")
    assert any("fit-on Other B" in c.value for c in at.caption)


def test_a_fit_set_no_longer_loaded_goes_back_to_one_offered(fitting_on_the_second_fit_set,
                                                              assert_clean):
    """Fitting on "Other B", which is then removed: the menu falls back to the fit set
    offered first; with no other data left, the protocol to the method's default."""
    ws, at, _ = fitting_on_the_second_fit_set(N)
    ws.remove("Other B")
    at.run()
    assert_clean(at, "Other B removed")
    assert at.selectbox(key="close_protocol_spectral").value == "fit-on"
    assert at.selectbox(key="close_fit_on").value.startswith("Other A")
    ws.remove("Other A")
    at.run()
    assert_clean(at, "no other data")
    assert at.selectbox(key="close_protocol_spectral").value == "transductive"
    assert not [s for s in at.selectbox if s.key == "close_fit_on"]


def test_the_raw_embeddings_say_they_fit_nothing(at, assert_clean):
    at.selectbox(key="close_method").set_value("orig").run()
    assert_clean(at, "None (raw embeddings)")
    assert not [s for s in at.selectbox if s.key and s.key.startswith("close_protocol")]
    line = next(c.value for c in at.caption if "How obtained" in c.value)
    assert f"nothing fitted, {N} pairs scored" in line and "transductive" not in line


def test_the_paper_setting_fits_on_5000_dedicated_pairs_of_the_same_simulated_model(at, assert_clean):
    """One click: 5,000 new pairs of the same simulated model are loaded as the fit set,
    the protocol becomes fit-on with them, and Sinkhorn fits on all of them (no subsample)."""
    at.selectbox(key="close_method").set_value("sinkhorn").run()
    at.button(key="close_paper").click().run()
    assert_clean(at, "Sinkhorn in the paper's setting")
    assert at.selectbox(key="close_protocol_sinkhorn").value == "fit-on"
    ws = at.session_state["workspace"]
    fit_name = next(name for name in ws.datasets if "paper fit set" in name)
    fit = next(iter(ws.datasets[fit_name].models.values()))
    scored = ws.active.pairs
    assert fit.n == 5000 and scored.n == N and fit.meta["profile"] == scored.meta["profile"]
    assert not set(fit.ids) & set(scored.ids)
    captions = " ".join(c.value for c in at.caption)
    assert "fitted on 5,000 other pairs of the same simulated model" in captions
    assert "each fit saw 5,000 pairs" in captions and "fit-on" in captions


def test_the_paper_setting_says_what_to_load_when_real_data_are_too_few(app_session, assert_clean):
    """Real (not simulated) pairs too few to split: a note saying to fit on another dataset."""
    import numpy as np

    from gapviz.embeddings import PairedEmbeddings
    from gapviz.workspace import Workspace

    rng = np.random.default_rng(0)
    ws = Workspace()
    ws.add(PairedEmbeddings(rng.normal(size=(300, 16)), rng.normal(size=(300, 16)), model="m"),
           source="test", dataset="Real pairs")
    at = app_session("pages/close_gap.py", workspace=ws)
    at.selectbox(key="close_method").set_value("ot").run()
    at.button(key="close_paper").click().run()
    assert_clean(at, "paper setting refused")
    note = " ".join(i.value for i in at.info)
    assert "5,000" in note and "5,500" in note and "fit-on" in note


def test_spectral_offers_the_papers_cosine_graph_as_a_menu(app_session, assert_clean, card_values):
    """On the demo's statistics (unrelated items at cosine about 0.16) the paper's graph is
    defined; choosing it refits and changes the cards, and the run says which graph it used."""
    from gapviz.workspace import Workspace

    ws = Workspace()
    ws.add(simulate_pairs(300, 64, seed=1), source="test", dataset="Sim")
    at = app_session("pages/close_gap.py", workspace=ws)
    at.selectbox(key="close_method").set_value("spectral").run()
    before = card_values(at)
    menu = at.selectbox(key="close_affinity_spectral")
    # each choice named as the titles name it ("affinity = shift"), then what it means
    assert menu.value == "shift" and "cosine: cos (the paper's graph)" in menu.options
    assert "shift: (1 + cos) / 2" in menu.options
    menu.set_value("cosine").run()
    assert_clean(at, "spectral on the cosine graph")
    assert card_values(at) != before
    assert at.session_state["workspace"].method_params["affinity"] == "cosine"


def test_sinkhorn_tuned_inside_each_fit_hides_its_slider_and_says_what_each_fit_chose(at, assert_clean):
    at.selectbox(key="close_method").set_value("sinkhorn").run()
    assert at.selectbox(key="close_direction_sinkhorn").value == "both"
    at.toggle(key="close_tune_sinkhorn").set_value(True).run()
    assert_clean(at, "Sinkhorn tuned")
    assert not [s for s in at.select_slider if s.key == "close_reg"]  # no slider to move
    captions = " ".join(c.value for c in at.caption)
    assert "chosen by the grid search in each fit" in captions
    assert captions.count("fit 1: reg = ") == 1 and "fit 5: reg = " in captions  # 5 folds
    assert at.session_state["workspace"].method_params["tune"] is True


def _computed_after_work_ahead(monkeypatch) -> list:
    """Once the work ahead is done, the specs the shared runner computes from now on."""
    from gapviz.runs import Runner
    from ui import compute

    compute.runs_ahead().wait()
    computed = []
    real = Runner._compute
    monkeypatch.setattr(Runner, "_compute",
                        lambda self, spec, *a, **k: computed.append(spec) or real(self, spec, *a, **k))
    return computed


def test_the_live_slider_methods_first_views_are_obtained_while_the_page_is_read(
        app_session, assert_clean, simulated_workspace, monkeypatch):
    """Close the gap obtains OT's and Sinkhorn's first view in the background, at the values
    the page then runs for them: choosing either finds its run and its view done (its own
    spec, computed nowhere else), and a visitor's other protocol choice is not guessed."""
    from ui import compute

    ws = simulated_workspace(N, 32, "Ahead on Close the gap", seed=23, profiles=["clip"])
    at = app_session("pages/close_gap.py", workspace=ws)
    assert_clean(at, "Close the gap, default method")
    computed = _computed_after_work_ahead(monkeypatch)
    key = ws.active.key
    for name in ("ot", "sinkhorn"):
        at.selectbox(key="close_method").set_value(name).run()
        assert_clean(at, name)
        spec = at.session_state["workspace"].last_spec
        assert spec.method == name and spec.protocol == "held-out"
        assert spec not in computed  # obtained ahead, not when chosen
        assert compute.runner().memory.runs.get((key, spec))._view is not None  # its view too
        compute.neighbour_solves().wait()
    assert {s.method for s in computed} <= {"ot", "sinkhorn"}  # only the neighbours' values

    # another protocol chosen for a method: its first view is not guessed ahead
    at.selectbox(key="close_protocol_sinkhorn").set_value("transductive").run()
    asked = []
    monkeypatch.setattr(compute, "first_views_ahead", lambda act, specs: asked.append(specs))
    at.selectbox(key="close_method").set_value("spectral").run()
    assert_clean(at, "spectral")
    assert [[(s.method, s.protocol) for s in specs] for specs in asked] == [[("ot", "held-out")]]


def test_a_run_has_one_key_whichever_page_asked(app_session, assert_clean, simulated_workspace,
                                                monkeypatch):
    """The Compare rows the Overview obtains ahead state the parameters the Close the gap page
    sets (its sliders and menus at their defaults), so the page finds them done rather than
    fitting the same run again under another key."""
    from ui import compute

    ws = simulated_workspace(N, 32, "One key", seed=29, profiles=["clip"])
    at = app_session("pages/overview.py", workspace=ws)
    assert_clean(at, "Overview")
    computed = _computed_after_work_ahead(monkeypatch)
    at.switch_page("pages/close_gap.py").run()
    assert_clean(at, "Close the gap")
    for name in ("spectral", "procrustes", "sinkhorn"):
        at.selectbox(key="close_method").set_value(name).run()
        assert_clean(at, name)
        spec = at.session_state["workspace"].last_spec
        assert spec.method == name and spec not in computed
        compute.neighbour_solves().wait()
