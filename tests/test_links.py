"""Every view reproducible: a page's link reopens it in a fresh session, and its recipe replays
to the same numbers on the command line (``gapviz evaluate/compare --recipe``)."""

from __future__ import annotations

import contextlib
import io
import json
import re

import pytest

from gapviz.cli import main
from gapviz.compare import format_cell
from gapviz.measure_info import card_label, format_metric
from gapviz.recipes import Recipe, RecipeError, demo_of


def _query(at) -> dict[str, str]:
    out = {}
    for key, value in dict(at.query_params).items():
        out[key] = value[-1] if isinstance(value, list) else value
    return out


def _recipe(at, page: str) -> Recipe:
    """The recipe the page wrote into its URL, with the demo's regeneration record (what
    "Save recipe" downloads)."""
    from dataclasses import replace

    recipe = Recipe.from_query(page, _query(at))
    return replace(recipe, demo=demo_of(at.session_state["workspace"].active.pairs))


def _cli(*args: str) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*args, "--format", "json"]) == 0
    return json.loads(out.getvalue())


def _fresh(app_session, page: str, query: dict[str, str]):
    """A new session opened on ``page``'s link."""
    return app_session(f"pages/{page}.py", query=query)


def test_a_close_the_gap_link_reopens_the_view_and_its_recipe_replays(
        app_session, assert_clean, card_values, tmp_path):
    at = app_session("pages/close_gap.py")
    at.selectbox(key="close_method").set_value("center").run()
    at.selectbox(key="close_recall_k").set_value(10).run()
    assert_clean(at, "Close the gap, centering")
    query = _query(at)
    assert query["method"] == "center" and re.fullmatch(r"[0-9a-f]{40}", query["data"])
    assert not any("/" in v for v in query.values())  # a link never names a path
    cards = card_values(at)

    again = _fresh(app_session, "close_gap", query)
    assert_clean(again, "Close the gap from its link")
    assert card_values(again) == cards
    assert again.selectbox(key="close_method").value == "center"

    recipe = _recipe(at, "close_gap")
    path = tmp_path / "recipe.json"
    path.write_text(recipe.to_json())
    report = _cli("evaluate", "demo", "--recipe", str(path))
    for key in ("ITR", "TIR", "IMR", "TMR", "R@10", "paired_cosine_distance", "frechet"):
        assert format_metric(key, report["metrics"][key]) == cards[card_label(key)], key
    assert report["protocol"]["protocol"] == "transductive"


def test_an_anatomy_link_reopens_the_run_under_its_protocol(app_session, assert_clean,
                                                           card_values, tmp_path):
    at = app_session("pages/anatomy.py")
    at.selectbox(key="anatomy_method").set_value("procrustes").run()
    assert_clean(at, "Anatomy, Procrustes")
    query = _query(at)
    assert query["method"] == "procrustes" and query["protocol"] == "held-out"
    cards = card_values(at)
    again = _fresh(app_session, "anatomy", query)
    assert_clean(again, "Anatomy from its link")
    assert card_values(again) == cards
    path = tmp_path / "anatomy.json"
    path.write_text(_recipe(at, "anatomy").to_json())
    report = _cli("evaluate", "demo", "--recipe", str(path))
    assert format_metric("ITR", report["metrics"]["ITR"]) == cards[card_label("ITR")]
    assert report["protocol"]["folds"] == 5 and report["protocol"]["n_fit"] == 2000


def test_a_compare_link_and_recipe_give_the_table_and_its_marks(app_session, assert_clean,
                                                               tmp_path):
    at = app_session("pages/compare.py")
    at.multiselect(key="compare_methods").set_value(["orig", "center", "standardize"]).run()
    assert_clean(at, "Compare")
    table = at.dataframe[0].value
    again = _fresh(app_session, "compare", _query(at))
    assert_clean(again, "Compare from its link")
    assert again.dataframe[0].value.equals(table)
    path = tmp_path / "compare.json"
    path.write_text(_recipe(at, "compare").to_json())
    report = _cli("compare", "demo:clip", "--recipe", str(path))
    rows = {r["method"]: r["metrics"] for r in report["rows"]}
    assert set(rows) == {"orig", "center", "standardize"}
    for method, metrics in rows.items():
        for key in ("ITR", "TIR", "IMR", "TMR", "R@5", "R@10", "R@20"):  # ranks: exact
            assert metrics[key] == table.loc[method, key], (method, key)
        # sums: as shown, and to 1e-6 (Fréchet's matrix square root moves its 9th digit with
        # the BLAS thread count: 0.0048775404 vs 0.0048775404239 seen between two servers)
        for key in ("frechet", "paired_cosine_distance"):
            assert format_cell(key, metrics[key]) == format_cell(key, table.loc[method, key])
            assert metrics[key] == pytest.approx(table.loc[method, key], rel=1e-6), (method, key)
    # the page's green / amber marks come from the same test the command line prints
    from gapviz.compare import significance

    assert set(report["significance"]) <= set(table.columns)
    assert significance  # the library's function the page calls


def test_a_recipe_for_other_data_is_refused_and_bad_recipes_say_why(tmp_path):
    recipe = Recipe("close_gap", "0" * 40, "Demo (simulated)", "sim-CLIP",
                    {"profile": "clip", "n": 100, "dim": 16, "seed": 0})
    path = tmp_path / "other.json"
    path.write_text(recipe.to_json())
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["evaluate", "demo", "--recipe", str(path)]) == 2
    assert "not the data of the recipe" in err.getvalue()
    with pytest.raises(RecipeError, match="not valid JSON"):
        Recipe.from_json("{")
    with pytest.raises(RecipeError, match="no data hash"):
        Recipe.from_dict({"page": "anatomy", "data": {"hash": "../etc"}})
    with pytest.raises(RecipeError, match="not a content hash"):
        Recipe.from_query("close_gap", {"data": "/tmp/x.npz"})
    assert Recipe.from_query("close_gap", {}) is None


def test_a_link_to_data_this_server_does_not_hold_says_which_file_to_load(app_session):
    at = app_session("pages/close_gap.py",
                     query={"data": "f" * 40, "dataset": "my_pairs.npz", "model": "ViT-B-32"})
    assert any("my_pairs.npz" in w.value.replace("\\", "") and "not loaded on this server"
               in w.value for w in at.warning)  # as shown: escapes read as text
    assert not at.exception


def test_figures_are_offered_as_png_svg_and_pdf_on_the_page(app_session):
    at = app_session("pages/close_gap.py")
    keys = {b.key for b in at.get("download_button")}
    from ui.export_menu import images_supported

    if not images_supported():
        pytest.skip("kaleido or Chromium missing: the page offers the charts' camera button")
    assert {"close_dl_fig0_png", "close_dl_fig0_svg", "close_dl_fig0_pdf",
            "close_dl_fig1_svg"} <= keys
    assert "close_recipe" in keys


def test_the_command_line_writes_figures_with_titles_and_never_replaces_one(tmp_path, capsys):
    from ui.export_menu import images_supported

    if not images_supported():
        pytest.skip("kaleido or Chromium missing (apt-get install chromium)")
    folder = tmp_path / "figs"
    args = ["evaluate", "demo", "--n", "200", "--dim", "32", "--method", "center",
            "--figures", str(folder)]
    assert main(args) == 0
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["distances.svg", "pool-after.svg", "pool-raw.svg"]
    after = (folder / "pool-after.svg").read_text()
    assert after.startswith("<svg") and "transductive: fitted on the 200 scored pairs" in after
    before = (folder / "pool-raw.svg").read_bytes()
    capsys.readouterr()
    assert main(args) == 2  # the files are there: nothing is replaced
    assert "exists" in capsys.readouterr().err
    assert (folder / "pool-raw.svg").read_bytes() == before


def test_retrieval_overview_and_explore_links_reopen_their_data_and_query(app_session,
                                                                         assert_clean):
    at = app_session("pages/retrieval.py")
    at.selectbox(key="retrieval_method").set_value("center").run()
    at.selectbox(key="retrieval_pair").set_value(7).run()
    at.radio(key="retrieval_modality").set_value("text").run()
    assert_clean(at, "Retrieval")
    query = _query(at)
    assert json.loads(query["v.query"]) == "7:text" and query["method"] == "center"
    again = app_session("pages/retrieval.py", query=query)
    assert_clean(again, "Retrieval from its link")
    assert again.selectbox(key="retrieval_pair").value == 7
    assert again.radio(key="retrieval_modality").value == "text"
    assert [m.value for m in again.markdown if m.value.startswith("####")] == \
        [m.value for m in at.markdown if m.value.startswith("####")]

    # the data of a link: another simulated profile of the demo, chosen on Overview
    at = app_session("pages/overview.py")
    at.sidebar.selectbox(key="sidebar_model").set_value("sim-SigLIP").run()
    query = _query(at)
    for page in ("overview", "explore"):
        opened = app_session(f"pages/{page}.py", query=query)
        assert_clean(opened, f"{page} from its link")
        assert opened.session_state["workspace"].active.model == "sim-SigLIP"


@pytest.mark.parametrize("hostile", [
    {"method": "spectral", "p.n_components": "1e9"},
    {"method": "spectral", "p.n_components": "20.5", "v.recall_k": "7"},
    {"method": "ot", "p.reg_lap": "-3", "p.reg_src": "\"x\""},
    {"method": "nope"},
    {"method": "center", "protocol": "leaky"},
    {"method": "center", "p.x": "{not json"},
    {"method": "spectral", "p.graph": "\"../../etc/passwd\""},
])
def test_a_hostile_link_never_breaks_the_page(app_session, hostile):
    """A link is typed by anyone: bad values are refused or left out with a message, and the
    page still draws (nothing is read from a path a link names)."""
    demo = app_session("pages/overview.py")
    query = {"data": _query(demo)["data"], **hostile}
    at = app_session("pages/close_gap.py", query=query)
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Close the gap"
    shown = " ".join(w.value for w in at.warning) + " ".join(e.value for e in at.error)
    if hostile.get("method") == "nope" or hostile.get("protocol") or "p.x" in hostile:
        assert "could not be opened" in shown


def test_a_fit_on_link_opens_on_its_own_fit_set(app_session, assert_clean,
                                                fitting_on_the_second_fit_set):
    """A Close the gap link fitted on the second of two other loaded datasets opens on that
    one (not the first the menu offers); one fitted on data not loaded says so."""
    ws, at, _ = fitting_on_the_second_fit_set()
    query = _query(at)
    assert query["protocol"] == "fit-on" and query["fit_on"]
    opened = app_session("pages/close_gap.py", workspace=ws, query=query)
    assert_clean(opened, "the fit-on link")
    assert opened.selectbox(key="close_protocol_spectral").value == "fit-on"
    assert opened.selectbox(key="close_fit_on").value.startswith("Other B")
    assert not opened.warning
    elsewhere = app_session("pages/close_gap.py", workspace=ws, query={**query, "fit_on": "a" * 40})
    assert not elsewhere.exception
    assert any("not loaded on this server" in w.value and "aaaaaaaaaaaa" in w.value
               for w in elsewhere.warning)
