"""The Compare page through Streamlit's AppTest: every method in the table, several
models, and the same numbers as the ``gapviz compare`` command it shows."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math

import numpy as np
import shlex
from contextlib import redirect_stdout

from gapviz.cli import compare as compare_cli
from gapviz.compare import COMPARE_KEYS
from gapviz.methods import METHODS, method_class
from gapviz.simulate import PROFILES
from gapviz.workspace import Workspace

PAGE = "pages/compare.py"


def test_the_table_has_every_method_and_marks_nothing_missing(app_session, assert_clean,
                                                              simulated_workspace):
    at = app_session(PAGE, workspace=simulated_workspace(120, 64, "Small", profiles=["clip"]))
    assert_clean(at, "Compare")
    assert at.title[0].value == "Compare"
    default = at.multiselect(key="compare_methods").value
    assert "orig" in default and "spectral" in default and "ot" not in default  # slow: opt-in
    at.multiselect(key="compare_methods").set_value(list(METHODS)).run()
    assert_clean(at, "every method")
    table = at.dataframe[0].value
    assert list(table.index) == ["orig"] + [m for m in table.index if m != "orig"]
    assert set(table.index) == set(METHODS)
    assert set(COMPARE_KEYS) <= set(table.columns) and "model" not in table.columns
    # Every method with parameters shows them (solver settings and seeds at their defaults not).
    assert table.loc["spectral", "parameters"] == ("k = 60, graph = bipartite, affinity = shift, "
                                                   "laplacian = normalized")
    # Held-out (VLAP reads the pairing): each fit sees 96 of the 120 pairs, so 96 anchors.
    assert table.loc["vlap", "parameters"] == "n_anchors = 96, epochs = 20, lr = 0.001, temperature = 0.1"
    assert table.loc["sinkhorn", "parameters"] == ("reg = 0.05, direction = both, "
                                                   "out-of-sample = ferradans, fit size = 1000")
    assert table.loc["ot", "parameters"] == ("reg_lap = 100, reg_src = 1, direction = both, "
                                             "reg_type = pos, similarity = knn, fit size = 500")
    assert table.loc["pca", "parameters"] == "k = 60" and table.loc["procrustes", "parameters"] == \
        "center = True"
    assert all(table.loc[m, "parameters"] for m in METHODS if method_class(m).params_info)
    assert table.loc["center", "parameters"] == "" and table.loc["orig", "parameters"] == ""
    assert table.loc["vlap", "protocol"] == "held-out" and table.loc["spectral", "protocol"] == \
        "transductive"
    # What each fit saw: 5 folds of 120 pairs, each fit on the other 96 (all of them: OT's and
    # Sinkhorn's fit sizes are above 96).
    assert table.loc["sinkhorn", "fitted"] == "5 folds × 96" == table.loc["ot", "fitted"]
    assert table.loc["spectral", "fitted"] == "120" and table.loc["orig", "fitted"] == "—"
    orig, spectral = table.loc["orig"], table.loc["spectral"]
    assert spectral["ITR"] < orig["ITR"] and spectral["R@5"] > orig["R@5"]
    # The tabs are lazy: the heatmap is drawn once its tab is open, not behind the table.
    assert [c.key for c in at.get("plotly_chart")] == []
    # Each column's best is tested against its runner-up on the same pairs.
    assert any("paired bootstrap over the same pairs" in c.value for c in at.caption)
    at.session_state["compare_view"] = "Heatmap"
    at.run()
    assert [c.key for c in at.get("plotly_chart")] == ["compare_heatmap"]
    at.session_state["compare_view"] = "Trade-off"
    at.run()
    at.toggle(key="compare_tradeoff").set_value(True).run()
    assert_clean(at, "trade-off")
    assert "compare_tradeoff_fig" in [c.key for c in at.get("plotly_chart")]
    # The trade-off names runs as the table and heatmap do (method labels, protocol), by number.
    trade = _figure(at, "compare_tradeoff_fig")
    legend = [t["name"] for t in trade["data"] if t.get("showlegend", True) and t.get("name")]
    assert legend[:3] == ["1 · Spectral · transductive", "2 · Laplace OT (EMD) · held-out",
                          "3 · Sinkhorn OT · held-out"]
    assert not any(name in legend for name in ("pca", "standardize", "center", "sinkhorn (held-out)"))
    drawn = {text for t in trade["data"] for text in t.get("text") or []}
    assert drawn == {str(i) for i in range(1, len(METHODS))}  # numbers on the plot, no labels
    assert trade["layout"]["yaxis"]["tickformat"] == ".0%" and \
        "100% = nothing lost" in trade["layout"]["yaxis"]["title"]["text"]
    keys = {b.key for b in at.get("download_button")}
    assert {"compare_dl_report", "compare_dl_csv", "compare_dl_md", "compare_dl_fig0_png"} <= keys \
        or {"compare_dl_report", "compare_dl_csv", "compare_dl_md"} <= keys


def _figure(at, key: str) -> dict:
    """The plotly figure (as JSON) of the chart with ``key``."""
    chart = next(c for c in at.get("plotly_chart") if c.key == key)
    return json.loads(chart.proto.spec)


def _run_cli(command: str) -> dict:
    argv = shlex.split(command)
    assert argv[:2] == ["gapviz", "compare"]
    argv = argv[1:]
    argv[argv.index("--format") + 1] = "json"
    parser = argparse.ArgumentParser()
    compare_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    out = io.StringIO()
    with redirect_stdout(out):
        assert args.func(args) == 0
    return json.loads(out.getvalue())


def test_a_best_that_could_not_be_tested_is_neither_crowned_nor_called_a_tie(
        app_session, assert_clean, simulated_workspace, monkeypatch):
    """A column whose best and runner-up the bootstrap cannot compare (a ratio infinite on
    one side: p undefined) is listed as not tested, not as "within noise" with p = nan."""
    from ui import compute

    real = compute.compare_significance

    def with_an_untested_itr(rows, keys):
        out = dict(real(rows, keys))
        out["ITR"] = {"best": "spectral", "runner_up": "orig", "p_value": math.nan,
                      "significant": False}
        return out

    monkeypatch.setattr(compute, "compare_significance", with_an_untested_itr)
    at = app_session(PAGE, workspace=simulated_workspace(120, 64, "Small", profiles=["clip"]))
    assert_clean(at, "Compare")
    line = next(c.value for c in at.caption if "Green: the column's best" in c.value)
    assert "not tested: ITR (spectral vs orig)" in line and "a ratio infinite on one side" in line
    assert "nan" not in line and "Amber: best and runner-up within noise: ITR" not in line


def test_the_cli_says_a_comparison_it_could_not_make_was_not_tested():
    lines = compare_cli._significance_lines({
        "ITR": {"best": "center", "runner_up": "orig", "p_value": math.nan, "significant": False},
        "R@5": {"best": "center", "runner_up": "orig", "p_value": 0.004, "significant": True}})
    itr = next(line for line in lines.splitlines() if line.strip().startswith("ITR"))
    assert "p = n/a" in itr and "not tested" in itr and "within noise" not in itr
    assert "p = 0.004, ahead beyond noise" in lines


def test_several_models_and_the_cli_command_it_shows_give_the_same_numbers(app_session, assert_clean,
                                                                           simulated_workspace):
    ws = simulated_workspace(150, 512, "Simulated · 150 pairs · seed 0", profiles=list(PROFILES))
    at = app_session(PAGE, workspace=ws, compare_methods=["orig", "center", "spectral"])
    assert_clean(at, "Compare, one model")
    assert sorted(at.dataframe[0].value.index) == ["center", "orig", "spectral"]
    at.multiselect(key="compare_models").set_value(["sim-CLIP", "sim-SigLIP", "sim-LLM2CLIP"]).run()
    assert_clean(at, "three models x three methods")
    table = at.dataframe[0].value
    assert len(table) == 9 and list(table["model"].unique()) == ["sim-CLIP", "sim-SigLIP", "sim-LLM2CLIP"]
    assert not at.code  # the command is written once its expander is open
    at.session_state["compare_cli"] = True
    at.run()
    command = at.code[0].value
    assert command.startswith("gapviz compare demo:clip demo:siglip demo:llm2clip")
    assert "--n 150 --demo-seed 0" in command
    rows = _run_cli(command)["rows"]
    assert len(rows) == 9
    profile_of = {PROFILES[p].name: p for p in PROFILES}
    for run, row in table.iterrows():
        model, method = run.split(" / ")
        cli = next(r for r in rows if r["method"] == method
                   and r["model"].startswith(PROFILES[profile_of[model]].name + " "))
        for key in COMPARE_KEYS:
            a, b = row[key], cli["metrics"][key]
            assert (math.isinf(a) and a == b) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9), \
                (run, key, a, b)


def test_protocols_leaks_and_the_shuffled_check_on_pairs_without_signal(app_session, assert_clean):
    from gapviz.embeddings import PairedEmbeddings

    rng = np.random.default_rng(3)
    n = 200
    ws = Workspace()
    ws.add(PairedEmbeddings(rng.normal(size=(n, 32)), rng.normal(size=(n, 32)),
                            [f"p{i}" for i in range(n)], [f"c{i}" for i in range(n)],
                            model="no signal"), source="test", dataset="No signal")
    at = app_session(PAGE, workspace=ws,
                     compare_methods=["orig", "center", "procrustes", "sinkhorn", "spectral"])
    assert_clean(at, "Compare, no signal")
    table = at.dataframe[0].value
    chance20 = 20 / (2 * n - 1)
    se20 = (chance20 * (1 - chance20) / n) ** 0.5
    assert (table["R@20"] <= chance20 + 4 * se20).all(), table["R@20"]  # honest defaults
    assert table.loc["procrustes", "protocol"] == "held-out"
    assert any("Chance level in this mixed pool of 400 items" in c.value for c in at.caption)
    # Transductive for all: Procrustes is refused (with its reason) unless asked for.
    at.selectbox(key="compare_protocol").set_value("transductive").run()
    assert not at.exception
    assert "procrustes" not in at.dataframe[0].value.index
    assert any("could not run" in c.value and "reads the pairing" in c.value for c in at.caption)
    at.checkbox(key="compare_allow_leak").check().run()
    leaky = at.dataframe[0].value
    assert leaky.loc["procrustes", "protocol"] == "transductive ⚠"
    assert leaky.loc["procrustes", "R@20"] > chance20 + 4 * se20  # the memorised pairs
    assert any("Procrustes" in w.value or "procrustes" in w.value for w in at.warning)
    # The shuffled-pairs check under each method's default protocol: all at chance.
    at.checkbox(key="compare_allow_leak").uncheck().run()
    at.selectbox(key="compare_protocol").set_value("default").run()
    at.toggle(key="compare_shuffled").set_value(True).run()
    assert_clean(at, "shuffled check")
    assert any("Every row is within chance + 4 SE" in c.value for c in at.caption)
    assert any("no run can be best" in c.value for c in at.caption)
    shuffled_table = at.dataframe[0].value
    assert (shuffled_table["protocol"].str.endswith(", shuffled")).all()
    # A null check, not a ranking: "shuffled" in every row and the title, nothing starred.
    at.session_state["compare_view"] = "Heatmap"
    at.run()
    heat = _figure(at, "compare_heatmap")
    cells = heat["data"][0]
    assert len(cells["y"]) == 5 and all(label.endswith(", shuffled") for label in cells["y"])
    assert "Sinkhorn OT · held-out, shuffled" in cells["y"]
    assert heat["layout"]["title"]["text"].startswith("Shuffled-pairs control")
    assert "not a ranking" in heat["layout"]["title"]["subtitle"]["text"]
    assert not any("★" in text for row in cells["text"] for text in row)
    assert not any("★ marks the best" in c.value for c in at.caption)


def test_the_measures_exports_say_how_each_run_was_obtained(monkeypatch, app_session, assert_clean,
                                                            simulated_workspace):
    """Measures CSV and markdown: parameters, protocol, pairs fitted and scored per run, and
    the shuffled control marked in each row and in the file name."""
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    files: dict[str, bytes] = {}
    store = MemoryMediaFileStorage.load_and_get_id

    def keep_file(self, data, mimetype, kind, filename=None):
        files[filename] = data if isinstance(data, bytes) else data.encode()
        return store(self, data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", keep_file)
    ws = simulated_workspace(120, 32, "Small", profiles=["clip"])
    at = app_session(PAGE, workspace=ws, compare_methods=["orig", "pca", "sinkhorn", "spectral"])
    assert_clean(at, "Compare for the exports")
    rows = {r["run"]: r for r in csv.DictReader(io.StringIO(
        files["gapviz-compare-small-measures.csv"].decode()))}
    assert list(rows) == ["orig", "spectral", "sinkhorn", "pca"]
    assert rows["sinkhorn"]["parameters"] == ("reg = 0.05, direction = both, "
                                              "out-of-sample = ferradans, fit size = 1000")
    assert rows["sinkhorn"]["protocol"] == "held-out (5-fold, seed 0)"
    assert (rows["sinkhorn"]["n_fit"], rows["sinkhorn"]["n_scored"]) == ("96", "120")
    assert rows["pca"]["parameters"] == "k = 32" and rows["pca"]["protocol"] == "transductive"
    assert (rows["orig"]["protocol"], rows["orig"]["n_fit"]) == ("none (raw embeddings)", "0")
    assert float(rows["spectral"]["ITR"]) == at.dataframe[0].value.loc["spectral", "ITR"]
    markdown = files["gapviz-compare-small-measures.md"].decode()
    assert "| parameters | protocol | n_fit | n_scored |" in markdown.splitlines()[0]
    files.clear()
    at.toggle(key="compare_shuffled").set_value(True).run()
    assert_clean(at, "shuffled exports")
    rows = list(csv.DictReader(io.StringIO(
        files["gapviz-compare-small-shuffled-control-measures.csv"].decode())))
    assert len(rows) == 4 and all(r["protocol"].endswith("shuffled control") for r in rows)


def test_the_overview_obtains_the_opening_rows_ahead_and_compare_uses_them(
        app_session, assert_clean, simulated_workspace, monkeypatch):
    """While the visitor reads the Overview, the Compare page's opening rows are obtained in
    the background through the shared runner; the Compare page then fits nothing again and
    shows the numbers ``gapviz compare`` gives."""
    import gapviz.runs as runs
    from gapviz.compare import compare
    from ui import compute

    ws = simulated_workspace(150, 48, "Ahead", seed=11, profiles=["clip"])
    at = app_session("pages/overview.py", workspace=ws)
    assert_clean(at, "Overview")
    compute.runs_ahead().wait()
    fits = []
    real = runs.protocol_transform
    monkeypatch.setattr(runs, "protocol_transform", lambda *a, **k: fits.append(a[0]) or real(*a, **k))
    at.switch_page(PAGE).run()
    assert_clean(at, "Compare after the Overview")
    assert fits == []  # every opening row was there already
    table = at.dataframe[0].value
    pairs = ws.datasets[ws.current_dataset].models[PROFILES["clip"].name]
    for row in compare({"clip": pairs}, compute.compare_default_methods()):
        for key in ("ITR", "TIR", "R@5"):
            assert math.isclose(table.loc[row.method, key], row.metrics[key], rel_tol=1e-12), (row.method, key)


def test_a_hosted_demo_obtains_ahead_only_its_built_in_pairs(app_session, assert_clean, monkeypatch):
    """On a hosted demo the rows obtained ahead are those of the built-in pairs every visitor
    shares (recognised by content hash); a visitor's own upload, even genuinely simulated
    pairs, is fitted only when its Compare page asks."""
    from gapviz.embeddings import PairedEmbeddings
    from gapviz.simulate import simulate_pairs
    from ui import compute

    monkeypatch.setenv("GAPVIZ_HOSTED", "1")
    asked = []
    monkeypatch.setattr(type(compute.runs_ahead()), "request",
                        lambda self, name, jobs, first=False: asked.append(name))
    rng = np.random.default_rng(5)
    uploads = [PairedEmbeddings(rng.normal(size=(90, 16)), rng.normal(size=(90, 16)),
                                [f"p{i}" for i in range(90)], [f"c{i}" for i in range(90)],
                                model="upload"),
               simulate_pairs(90, 16, seed=7)]
    assert uploads[1].is_simulated
    for pairs in uploads:
        ws = Workspace()
        ws.add(pairs, source="test", dataset="Upload")
        assert_clean(app_session("pages/overview.py", workspace=ws), "Overview of an upload, hosted")
    assert asked == []
    assert_clean(app_session("pages/overview.py"), "Overview of the demo, hosted")
    assert len(asked) == 1 and asked[0][0] == "compare"


def test_compare_hands_its_rows_to_the_worker_from_the_end(app_session, assert_clean,
                                                           simulated_workspace, monkeypatch):
    """As it opens, the Compare page asks the background worker for its rows from the last
    (the slowest) back, while its own loop takes them from the first, so that two rows are
    obtained at once and the two meet in the middle; the rows are those the page shows."""
    from ui import compute

    asked = []
    monkeypatch.setattr(type(compute.runs_ahead()), "request",
                        lambda self, name, jobs, first=False: asked.append((name, list(jobs))))
    methods = ["orig", "center", "spectral", "pca"]
    ws = simulated_workspace(120, 32, "Ends", seed=3, profiles=["clip"])
    at = app_session(PAGE, workspace=ws, compare_methods=methods)
    assert_clean(at, "Compare")
    [(name, jobs)] = [a for a in asked if a[0][0] == "compare"]
    assert name[-1] is True  # from the end
    made = []
    real = compute._page_row
    monkeypatch.setattr(compute, "_page_row",
                        lambda r, data, m, **kw: made.append(m) or real(r, data, m, **kw))
    rows = [job() for job in jobs]
    tasks = [("clip", m) for m in compute.compare_methods() if m in methods]  # menu order
    assert made == [tasks[i][1] for i in reversed(compute.compare_order(tasks))]
    table = at.dataframe[0].value
    for row in rows:  # found done: the page's own numbers
        assert math.isclose(table.loc[row.method, "ITR"], row.metrics["ITR"], rel_tol=1e-12)


def test_the_heatmap_is_made_only_once_its_tab_is_open(app_session, assert_clean,
                                                       simulated_workspace, monkeypatch):
    """Reading the table makes no heatmap (its figure, about 0.5 s of the server's CPU, is
    made when its tab opens, or when it is exported)."""
    import gapviz.figures.compare as figures

    made = []
    real = figures.compare_heatmap
    monkeypatch.setattr(figures, "compare_heatmap", lambda *a, **k: made.append(1) or real(*a, **k))
    at = app_session(PAGE, workspace=simulated_workspace(120, 64, "Small", profiles=["clip"]))
    assert_clean(at, "Compare")
    assert made == [] and "compare_dl_fig0_png" in {b.key for b in at.get("download_button")}
    at.session_state["compare_view"] = "Heatmap"
    at.run()
    assert_clean(at, "the heatmap")
    assert made == [1] and [c.key for c in at.get("plotly_chart")] == ["compare_heatmap"]


def test_a_figure_given_as_a_function_is_made_when_it_is_downloaded(monkeypatch):
    from streamlit.testing.v1 import AppTest

    import plotly.graph_objects as go
    from streamlit.delta_generator import DeltaGenerator

    from gapviz import exports
    from ui import export_menu

    made, drawn, data = [], [], []
    fig = go.Figure(go.Heatmap(z=[[1, 2], [3, 4]]))
    monkeypatch.setattr(export_menu, "images_supported", lambda: True)
    monkeypatch.setattr(exports, "figure_image", lambda f, fmt, **k: drawn.append((f, fmt)) or b"x")
    monkeypatch.setattr(DeltaGenerator, "download_button",
                        lambda self, label, payload, **k: data.append(payload))
    monkeypatch.setattr(export_menu, "_test_figure", lambda: made.append(1) or fig, raising=False)

    def script():
        from ui import export_menu

        export_menu.figure_buttons([("heatmap", export_menu._test_figure)], prefix="p", stem="s")

    at = AppTest.from_function(script).run()
    assert not at.exception
    assert made == [] and len(data) == 3  # PNG, SVG and PDF buttons, nothing made yet
    assert data[1]() == b"x"
    assert made == [1] and drawn == [(fig, "svg")]
