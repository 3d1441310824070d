"""The Compare page through Streamlit's AppTest: every method in the table, several
models, and the same numbers as the ``gapviz compare`` command it shows."""

from __future__ import annotations

import argparse
import io
import json
import math

import numpy as np
import shlex
from contextlib import redirect_stdout

from gapviz.cli import compare as compare_cli
from gapviz.compare import COMPARE_KEYS
from gapviz.methods import METHODS
from gapviz.simulate import PROFILES
from gapviz.workspace import Workspace
from conftest import app_session, assert_clean, simulated_workspace

PAGE = "pages/compare.py"


def _clean(at, where: str) -> None:
    assert_clean(at, where)


def _session(ws: Workspace, **widgets):
    """A fresh session on the Compare page; ``widgets`` are initial widget values."""
    return app_session(PAGE, workspace=ws, **widgets)


def _workspace(n: int, dim: int, profiles, name: str) -> Workspace:
    return simulated_workspace(n, dim, name, profiles=profiles)


def test_the_table_has_every_method_and_marks_nothing_missing():
    at = _session(_workspace(120, 64, ["clip"], "Small"))
    _clean(at, "Compare")
    assert at.title[0].value == "Compare"
    default = at.multiselect(key="compare_methods").value
    assert "orig" in default and "spectral" in default and "ot" not in default  # slow: opt-in
    at.multiselect(key="compare_methods").set_value(list(METHODS)).run()
    _clean(at, "every method")
    table = at.dataframe[0].value
    assert list(table.index) == ["orig"] + [m for m in table.index if m != "orig"]
    assert set(table.index) == set(METHODS)
    assert set(COMPARE_KEYS) <= set(table.columns) and "model" not in table.columns
    assert table.loc["spectral", "parameters"] == "k = 60"
    # Held-out (VLAP reads the pairing): each fit sees 96 of the 120 pairs, so 96 anchors.
    assert table.loc["vlap", "parameters"] == "n_anchors = 96"
    assert table.loc["vlap", "protocol"] == "held-out" and table.loc["spectral", "protocol"] == \
        "transductive"
    orig, spectral = table.loc["orig"], table.loc["spectral"]
    assert spectral["ITR"] < orig["ITR"] and spectral["R@5"] > orig["R@5"]
    assert [c.key for c in at.get("plotly_chart")] == ["compare_heatmap"]
    # Each column's best is tested against its runner-up on the same pairs.
    assert any("paired bootstrap over the same pairs" in c.value for c in at.caption)
    at.toggle(key="compare_tradeoff").set_value(True).run()
    _clean(at, "trade-off")
    assert "compare_tradeoff_fig" in [c.key for c in at.get("plotly_chart")]
    keys = {b.key for b in at.get("download_button")}
    assert {"compare_dl_report", "compare_dl_csv", "compare_dl_md", "compare_dl_fig0_png"} <= keys \
        or {"compare_dl_report", "compare_dl_csv", "compare_dl_md"} <= keys


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


def test_several_models_and_the_cli_command_it_shows_give_the_same_numbers():
    ws = _workspace(150, 512, list(PROFILES), "Simulated · 150 pairs · seed 0")
    at = _session(ws, compare_methods=["orig", "center", "spectral"])
    _clean(at, "Compare, one model")
    assert sorted(at.dataframe[0].value.index) == ["center", "orig", "spectral"]
    at.multiselect(key="compare_models").set_value(["sim-CLIP", "sim-SigLIP", "sim-LLM2CLIP"]).run()
    _clean(at, "three models x three methods")
    table = at.dataframe[0].value
    assert len(table) == 9 and list(table["model"].unique()) == ["sim-CLIP", "sim-SigLIP", "sim-LLM2CLIP"]
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


def test_protocols_leaks_and_the_shuffled_check_on_pairs_without_signal():
    from gapviz.embeddings import PairedEmbeddings

    rng = np.random.default_rng(3)
    n = 200
    ws = Workspace()
    ws.add(PairedEmbeddings(rng.normal(size=(n, 32)), rng.normal(size=(n, 32)),
                            [f"p{i}" for i in range(n)], [f"c{i}" for i in range(n)],
                            model="no signal"), source="test", dataset="No signal")
    at = _session(ws, compare_methods=["orig", "center", "procrustes", "sinkhorn", "spectral"])
    _clean(at, "Compare, no signal")
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
    _clean(at, "shuffled check")
    assert any("Every row is within chance + 4 SE" in c.value for c in at.caption)
