"""The protocol options of `gapviz evaluate --method` and `gapviz compare`: every output format
names the protocol and the pairs fitted and scored; a method that cannot run is reported."""

import csv
import io
import json

import pytest

from gapviz.cli import main
from gapviz.embeddings import save_embeddings
from gapviz.measures import measure_gap, normalize_rows
from gapviz.protocols import chance_recall, fit_and_score
from gapviz.simulate import simulate_pairs

#: d = 32: spectral's default k = 60 cannot run (at most d + 1 eigenvectors).
DEMO = ["demo", "--n", "120", "--dim", "32"]
#: Spectral told k = 60 on d = 32 (more than it can take): the row that cannot run.
COMPARE = ["compare", *DEMO, "--methods", "orig,procrustes,spectral", "--set", "spectral.n_components=60"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def demo_xy():
    p = simulate_pairs(120, 32, profile="clip", seed=0)
    return normalize_rows(p.image_embeddings), normalize_rows(p.text_embeddings)


# ---------------------------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------------------------
def test_compare_json_rows_carry_protocol_and_the_failed_row_its_reason(capsys):
    code, out, err = run(capsys, *COMPARE, "--format", "json")
    assert code == 0  # the other rows ran
    data = json.loads(out)
    rows = {r["method"]: r for r in data["rows"]}
    assert [r["method"] for r in data["rows"]] == ["orig", "procrustes", "spectral"]
    assert rows["orig"]["protocol"] == "transductive" and rows["procrustes"]["protocol"] == "held-out"
    prov = rows["procrustes"]["provenance"]
    assert (prov["n_fit"], prov["n_scored"], prov["folds"], prov["seed"]) == (96, 120, 5, 0)
    expected = fit_and_score("procrustes", *demo_xy()).metrics
    assert rows["procrustes"]["metrics"]["R@5"] == pytest.approx(expected["R@5"])
    assert rows["spectral"]["error"] and rows["spectral"]["metrics"] == {}
    assert "spectral (transductive) not run: n_components=60" in err
    assert data["chance"]["R@20"]["level"] == pytest.approx(chance_recall(120, 20).level)


def test_compare_csv_markdown_and_table_state_protocol_and_sizes(capsys):
    _, out, err = run(capsys, *COMPARE, "--format", "csv")
    rows = {r["run"]: r for r in csv.DictReader(io.StringIO(out))}
    assert rows["orig"]["protocol"] == "transductive" and rows["orig"]["n_fit"] == "120"
    assert rows["procrustes"]["protocol"] == "held-out (5-fold, seed 0)"
    assert (rows["procrustes"]["n_fit"], rows["procrustes"]["n_scored"]) == ("96", "120")
    assert rows["spectral"]["ITR"] == "" and rows["spectral"]["protocol"].startswith("not run (transductive)")
    assert "not run" in err

    _, out, _ = run(capsys, *COMPARE, "--format", "markdown")
    lines = out.strip().splitlines()
    assert lines[0].endswith("| protocol | n_fit | n_scored |")
    assert "| held-out (5-fold, seed 0) | 96 | 120 |" in out
    assert any(line.startswith("| spectral |") and "not run" in line for line in lines)

    _, out, _ = run(capsys, *COMPARE)
    assert "procrustes  held-out: 5-fold cross-fit (seed 0), each pair scored by a fit on >= 96" in out
    assert "spectral    NOT RUN (transductive)" in out
    assert "chance in a mixed pool of 2N = 240 items: R@5 0.021" in out


def test_compare_one_protocol_seed_folds_and_shuffled_control(capsys):
    code, out, err = run(capsys, "compare", *DEMO, "--methods", "center,procrustes", "--protocol",
                         "held-out", "--folds", "3", "--seed", "4", "--shuffled-control", "--format", "json")
    data = json.loads(out)
    assert data["protocol"] == "held-out"
    for r in data["rows"]:
        p = r["provenance"]
        assert (r["protocol"], p["folds"], p["seed"], p["shuffled"], p["n_fit"]) == ("held-out", 3, 4, True, 80)
        assert r["metrics"]["R@5"] <= chance_recall(120, 5).level + 4 * chance_recall(120, 5).se


def test_compare_transductive_refuses_the_leak_row_unless_allowed(capsys):
    argv = ["compare", *DEMO, "--methods", "center,procrustes", "--protocol", "transductive", "--format", "json"]
    code, out, err = run(capsys, *argv)
    rows = json.loads(out)["rows"]
    assert code == 0 and rows[0]["error"] is None and "allow_pairing_leak" in rows[1]["error"]
    code, out, err = run(capsys, *argv, "--allow-pairing-leak")
    rows = json.loads(out)["rows"]
    assert rows[1]["error"] is None and "reads the pairing" in rows[1]["provenance"]["warning"]
    assert "warning: procrustes" in err
    _, out, _ = run(capsys, *argv[:-2], "--allow-pairing-leak", "--format", "markdown")
    assert "transductive LEAK WARNING" in out


def test_compare_fit_on_a_file_and_no_row_at_all(capsys, tmp_path):
    path = save_embeddings(simulate_pairs(80, 32, seed=9), tmp_path / "fit.npz")
    code, out, _ = run(capsys, "compare", *DEMO, "--methods", "center,procrustes", "--fit-on",
                       str(path), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and all(r["protocol"] == f"fit-on ({path})" and r["n_fit"] == "80" for r in rows)
    _, out, _ = run(capsys, "compare", *DEMO, "--methods", "center,procrustes", "--max-fit", "50",
                    "--format", "csv")
    assert [r["n_fit"] for r in csv.DictReader(io.StringIO(out))] == ["120", "50"]
    code, _, err = run(capsys, "compare", *DEMO, "--methods", "spectral",
                       "--set", "spectral.n_components=60")
    assert code == 2 and "no method could run" in err
    code, _, err = run(capsys, "compare", "demo", "demo:siglip", *DEMO[1:], "--methods", "orig",
                       "--fit-on", str(path))
    assert code == 2 and "one model's embeddings" in err
    code, _, err = run(capsys, "compare", *DEMO, "--methods", "orig", "--protocol", "fit-on")
    assert code == 2 and "needs --fit-on FILE" in err


# ---------------------------------------------------------------------------------------------
# evaluate --method
# ---------------------------------------------------------------------------------------------
def test_evaluate_json_records_the_protocol_and_matches_the_library(capsys):
    code, out, _ = run(capsys, "evaluate", *DEMO, "--method", "procrustes", "--format", "json")
    data = json.loads(out)
    prov = data["protocol"]
    assert (prov["protocol"], prov["n_fit"], prov["n_scored"], prov["pool_size"]) == ("held-out", 96, 120, 240)
    assert data["metrics"]["R@5"] == pytest.approx(fit_and_score("procrustes", *demo_xy()).metrics["R@5"])
    assert data["chance"]["R@5"]["level"] == pytest.approx(5 / 239)


def test_evaluate_csv_markdown_table_state_protocol_and_sizes(capsys):
    argv = ["evaluate", *DEMO, "--method", "sinkhorn", "--folds", "4", "--protocol-seed", "2"]
    _, out, _ = run(capsys, *argv, "--format", "csv")
    rows = {r[0]: r[1:] for r in csv.reader(io.StringIO(out))}
    assert rows["protocol"] == ["none (no fit)", "held-out (4-fold, seed 2)"]
    assert rows["n_fit"] == ["0", "90"] and rows["n_scored"] == ["120", "120"]
    assert float(rows["chance R@20"][1]) == pytest.approx(20 / 239, rel=1e-5)
    _, out, _ = run(capsys, *argv, "--format", "markdown")
    assert "| protocol | none (no fit) | held-out (4-fold, seed 2) |" in out and "| n_fit | 0 | 90 |" in out
    _, out, _ = run(capsys, *argv)
    assert "protocol: held-out: 4-fold cross-fit (seed 2), each pair scored by a fit on >= 90 other pairs, 120 scored" in out


def test_evaluate_transductive_procrustes_is_refused_then_warned(capsys):
    argv = ["evaluate", *DEMO, "--method", "procrustes", "--protocol", "transductive"]
    code, _, err = run(capsys, *argv)
    assert code == 2 and "reads the pairing" in err
    code, out, err = run(capsys, *argv, "--allow-pairing-leak")
    assert code == 0 and "WARNING: Procrustes reads the pairing" in out and "warning:" in err


def test_evaluate_shuffled_control_scores_both_columns_on_the_permuted_pairs(capsys):
    code, out, _ = run(capsys, "evaluate", *DEMO, "--method", "center", "--shuffled-control",
                       "--protocol-seed", "3", "--format", "json")
    data = json.loads(out)
    assert data["protocol"]["shuffled"] and data["protocol"]["seed"] == 3
    from gapviz.protocols import shuffle_pairs

    X, Yp, _ = shuffle_pairs(*demo_xy(), seed=3)
    assert data["metrics_orig"]["R@5"] == pytest.approx(measure_gap(X, Yp).metrics["R@5"])
    assert data["metrics"]["R@5"] <= chance_recall(120, 5).level + 4 * chance_recall(120, 5).se


def test_evaluate_protocol_options_need_a_method(capsys):
    code, _, err = run(capsys, "evaluate", *DEMO, "--protocol", "held-out")
    assert code == 2 and "add --method" in err
    code, _, err = run(capsys, "evaluate", *DEMO, "--method", "center", "--protocol", "held-out",
                       "--fit-on", "x.npz")
    assert code == 2 and "drop one of the two" in err
