"""``gapviz compare``: its table equals the library's measures, in every format."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from contextlib import redirect_stdout

import pytest

from gapviz.cli import compare as compare_cli
from gapviz.compare import COMPARE_KEYS, compare
from gapviz.measures import measure_gap, normalize_rows
from gapviz.methods import make_method
from gapviz.runs import Runner, planned_spec
from gapviz.simulate import simulate_pairs

N = 150
#: On the 512-d demo every 512-d output costs a Fréchet eigen-solve: keep those few there.
DEMO_METHODS = ["orig", "center", "pca", "spectral"]
METHODS = ["orig", "center", "standardize", "procrustes", "pca", "spectral"]


def run_compare(*argv: str) -> str:
    """The compare subcommand's output (the same code ``gapviz compare`` runs)."""
    parser = argparse.ArgumentParser()
    compare_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["compare", *argv])
    out = io.StringIO()
    with redirect_stdout(out):
        assert args.func(args) == 0
    return out.getvalue()


def _close(a: float, b: float) -> bool:
    return (math.isinf(a) and a == b) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


@pytest.fixture(scope="module")
def json_rows():
    text = run_compare("demo", "--n", str(N), "--methods", ",".join(DEMO_METHODS), "--format", "json")
    return json.loads(text)["rows"]


def test_json_rows_equal_the_measures_of_each_method_fitted_by_hand(json_rows):
    pairs = simulate_pairs(N, profile="clip", seed=0)  # what `demo --n N` is
    X, Y = normalize_rows(pairs.image_embeddings), normalize_rows(pairs.text_embeddings)
    assert [r["method"] for r in json_rows] == DEMO_METHODS
    for row in json_rows:
        Xt, Yt = make_method(row["method"]).fit_transform(X, Y)
        expected = measure_gap(Xt, Yt).metrics
        for key, value in expected.items():
            assert _close(row["metrics"][key], value), (row["method"], key, row["metrics"][key], value)
        # what ran: the parameters the runner resolved (spectral: eigenvectors for the largest
        # k the data allows, every k a slice of them)
        spec, _ = planned_spec(row["method"], None, N, X.shape[1])
        ran = Runner.resolved_params(spec, N, X.shape[1])
        assert row["params"] == make_method(row["method"], **ran).describe()["params"]
    orig = next(r for r in json_rows if r["method"] == "orig")["metrics"]
    spectral = next(r for r in json_rows if r["method"] == "spectral")["metrics"]
    assert spectral["ITR"] < orig["ITR"] and spectral["R@5"] > orig["R@5"]  # the paper's contrast


def test_an_embeddings_file_in_every_format_holds_the_same_numbers(tmp_path):
    from gapviz.embeddings import save_embeddings

    path = save_embeddings(simulate_pairs(N, 64, profile="siglip", seed=2), tmp_path / "mine.npz")
    argv = [str(path), "--methods", ",".join(METHODS)]
    by_method = {r["method"]: r["metrics"] for r in json.loads(run_compare(*argv, "--format", "json"))["rows"]}
    rows = list(csv.DictReader(io.StringIO(run_compare(*argv, "--format", "csv"))))
    assert [r["run"] for r in rows] == METHODS
    for r in rows:
        assert set(COMPARE_KEYS) <= set(r)
        for key in COMPARE_KEYS:
            assert _close(float(r[key]), by_method[r["run"]][key]), (r["run"], key)
    md = run_compare(*argv, "--format", "markdown")
    lines = md.strip().splitlines()
    assert lines[0].startswith("| run | ITR | TIR |") and len(lines) == 2 + len(METHODS)
    assert "**" in md  # best per column marked
    table = run_compare(*argv)
    assert "SIMULATED" in table.splitlines()[0] and all(m in table for m in METHODS)


def test_models_and_parameters(tmp_path):
    text = run_compare("demo", "demo:siglip", "--n", "40", "--methods", "orig,spectral",
                       "--set", "spectral.n_components=20", "--format", "json")
    rows = json.loads(text)["rows"]
    assert [(r["model"].split(" ")[0], r["method"]) for r in rows] == [
        ("sim-CLIP", "orig"), ("sim-CLIP", "spectral"), ("sim-SigLIP", "orig"), ("sim-SigLIP", "spectral")]
    assert rows[1]["params"]["n_components"] == 20
    lib = compare({"a": simulate_pairs(40, profile="siglip")}, ["spectral"],
                  params={"spectral": {"n_components": 20}})
    assert all(_close(rows[3]["metrics"][k], lib[0].metrics[k]) for k in COMPARE_KEYS)
    # embeddings files of other pairs cannot be compared with these
    other = simulate_pairs(40, 8, seed=5)
    other.ids = [f"x{i}" for i in range(40)]
    from gapviz.embeddings import save_embeddings

    path = tmp_path / "other.npz"
    save_embeddings(other, path)
    with pytest.raises(ValueError, match="same pairs"):
        run_compare("demo", str(path), "--n", "40", "--methods", "orig")
    with pytest.raises(ValueError, match="unknown method"):
        run_compare("demo", "--n", "40", "--methods", "orig,nope")
    assert compare_cli.parse_settings(["ot.reg_lap=10", "spectral.graph=joint"]) == {
        "ot": {"reg_lap": 10}, "spectral": {"graph": "joint"}}


def test_through_the_gapviz_command_line(tmp_path, capsys):
    cli = pytest.importorskip("gapviz.cli")
    pytest.importorskip("gapviz.cli.method_options")
    from gapviz.embeddings import save_embeddings

    path = save_embeddings(simulate_pairs(40, 16, seed=4), tmp_path / "small.npz")
    assert cli.main(["compare", str(path), "--methods", "orig,center", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("run,ITR,TIR")
    assert cli.main(["compare", str(path), "--methods", "nope"]) == 2  # one line, no traceback
    err = capsys.readouterr().err
    assert err.startswith("gapviz compare: error: unknown method") and "Traceback" not in err


def test_parameters_suited_to_small_data_are_what_the_cli_is_told():
    from gapviz.methods import suited_params

    assert suited_params("spectral", 2500, 512) == {"n_components": 60}
    assert suited_params("spectral", 12, 512, {"n_components": 60}) == {"n_components": 11}
    assert suited_params("pca", 20, 16) == {"n_components": 16}
    assert suited_params("vlap", 100, 64) == {"n_anchors": 100}
    assert suited_params("sinkhorn", 5, 5, {"reg": 0.1}) == {"reg": 0.1}
    assert suited_params("orig", 5, 5) == {}
    # what the app runs, the CLI runs when given the same --set
    text = run_compare("demo", "--n", "30", "--methods", "pca", "--set", "pca.n_components=20",
                       "--format", "json")
    assert json.loads(text)["rows"][0]["params"] == {"n_components": 20}


def test_the_command_the_compare_page_shows_parses_back_to_its_table():
    import shlex

    from gapviz.cli.compare import command_line

    cmd = command_line(["demo:clip", "demo:siglip"], ["orig", "spectral"],
                       {"spectral": {"n_components": 20, "graph": "joint"}},
                       {"--n": 300, "--demo-seed": 2})
    words = shlex.split(cmd)
    assert words[:2] == ["gapviz", "compare"]
    parser = argparse.ArgumentParser()
    compare_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(words[1:])
    assert args.sources == ["demo:clip", "demo:siglip"] and args.methods == "orig,spectral"
    assert (args.n, args.demo_seed, args.format) == (300, 2, "markdown")
    assert compare_cli.parse_settings(args.set) == {"spectral": {"n_components": 20,
                                                                 "graph": "joint"}}


def test_a_shuffled_control_is_titled_as_such_and_crowns_nothing():
    argv = ["demo", "--n", "120", "--dim", "32", "--methods", "orig,center,spectral",
            "--shuffled-control"]
    rows = json.loads(run_compare(*argv, "--format", "json"))
    assert rows["shuffled_control"] is True
    md = run_compare(*argv, "--format", "markdown")
    title, blank, header, rule, *body = md.rstrip("\n").split("\n")
    assert title.startswith("**gapviz compare: ") and "SHUFFLED CONTROL" in title
    assert "no best is marked" in title and blank == ""
    assert header.startswith("| run | ITR |") and len(body) == 3
    assert "**" not in "\n".join(body)  # chance-level "bests" are not bolded
    for line, row in zip(body, rows["rows"]):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == row["method"] and cells[-3] == "transductive shuffled control"
    table = run_compare(*argv)
    assert "SHUFFLED CONTROL" in table.splitlines()[0]
    # without the control, each column's best is bold as before
    assert "**" in run_compare(*argv[:-1], "--format", "markdown")



def test_a_model_name_from_a_file_cannot_forge_lines_or_escape_the_terminal(tmp_path, capsys):
    """Names come from files: an escape sequence, a line break or a `|` is shown, never acted on
    (table, markdown, the notes under the table, and the lines about rows that did not run)."""
    from gapviz.embeddings import save_embeddings

    pairs = simulate_pairs(60, 16, seed=1)
    pairs.model = "evil\x1b[2J\nFAKE RESULT | R@5 1.000"
    save_embeddings(pairs, tmp_path / "evil.npz")
    for fmt in ("table", "markdown"):
        # the command itself (not the command line's safety net around every command's output)
        out = run_compare(str(tmp_path / "evil.npz"), "--methods", "orig,center,spectral",
                          "--set", "spectral.n_components=500", "--format", fmt)
        err = capsys.readouterr().err
        for text in (out, err):
            assert "\x1b" not in text
            assert not any(line.startswith("FAKE") for line in text.splitlines())
