"""`gapviz evaluate`: reports in every format, user files, clear errors."""

import csv
import io
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from gapviz.cli import main
from gapviz.embeddings import save_embeddings
from gapviz.measures import measure_gap
from gapviz.simulate import simulate_pairs

SMALL = ["--n", "300", "--dim", "64"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_demo_table_is_labelled_simulated_and_matches_the_library(capsys):
    code, out, _ = run(capsys, "evaluate", "demo", *SMALL)
    assert code == 0
    assert "SIMULATED DATA (imitates OpenAI CLIP ViT-B/16" in out
    expected = measure_gap(*(lambda p: (p.image_embeddings, p.text_embeddings))(simulate_pairs(300, 64))).metrics
    row = next(line for line in out.splitlines() if line.startswith("TMR "))
    assert float(row.split()[1].replace(",", "")) == pytest.approx(expected["TMR"], abs=0.05)


def test_json_has_the_required_metric_keys(capsys):
    code, out, _ = run(capsys, "evaluate", "demo", *SMALL, "--format", "json")
    data = json.loads(out)
    for key in ("ITR", "TIR", "IMR", "TMR", "R@5", "R@10", "R@20", "paired_cosine_distance",
                "paired_l2", "frechet", "centroid_gap"):
        assert isinstance(data["metrics"][key], float)
    assert data["dataset"]["simulated"] is True and data["dataset"]["n_pairs"] == 300


def test_infinite_ratio_is_written_as_infinity(capsys, tmp_path):
    # Two far-apart narrow cones: no image query ever gets a text first.
    rng = np.random.default_rng(0)
    X = np.eye(8)[0] + 0.01 * rng.normal(size=(20, 8))
    Y = np.eye(8)[1] + 0.01 * rng.normal(size=(20, 8))
    np.savez(tmp_path / "cones.npz", image_embeddings=X, text_embeddings=Y)
    code, out, _ = run(capsys, "evaluate", str(tmp_path / "cones.npz"), "--format", "json")
    assert '"ITR": Infinity' in out and json.loads(out)["metrics"]["ITR"] == math.inf


def test_csv_of_a_user_parquet(capsys, tmp_path):
    pairs = simulate_pairs(50, 16, seed=3)
    path = save_embeddings(pairs, tmp_path / "mine.parquet")
    code, out, _ = run(capsys, "evaluate", str(path), "--format", "csv")
    rows = {r[0]: r[1:] for r in csv.reader(io.StringIO(out))}
    assert rows["measure"] == ["ORIG"]
    assert float(rows["IMR"][0]) == pytest.approx(measure_gap(pairs.image_embeddings, pairs.text_embeddings).metrics["IMR"])


def test_method_adds_a_column_and_significance(capsys):
    code, out, err = run(capsys, "evaluate", "demo", *SMALL, "--method", "center")
    assert code == 0, err
    assert out.splitlines()[3] == "method: center()"
    assert "measure" in out and "CENTER" in out and "Wilcoxon p =" in out
    code, out, _ = run(capsys, "evaluate", "demo", *SMALL, "--method", "center", "--format", "json")
    data = json.loads(out)
    assert data["method"]["method"] == "center" and data["metrics"]["ITR"] < data["metrics_orig"]["ITR"]
    assert {t["distance"] for t in data["significance"]} == {"cosine", "l2"}


def test_separability_is_opt_in(capsys):
    _, out, _ = run(capsys, "evaluate", "demo", *SMALL, "--format", "json")
    assert "separability" not in json.loads(out)["metrics"]
    _, out, _ = run(capsys, "evaluate", "demo", *SMALL, "--format", "json", "--separability")
    assert json.loads(out)["metrics"]["separability"] > 0.9  # the demo's modalities are separable


@pytest.mark.parametrize("content,message", [
    (b"not a zip at all", "not a readable .npz"),
    (None, "no such file"),
])
def test_bad_files_exit_2_with_one_clear_line(tmp_path, content, message):
    path = tmp_path / "bad.npz"
    if content is not None:
        path.write_bytes(content)
    proc = subprocess.run([sys.executable, "-m", "gapviz", "evaluate", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr and proc.stdout == ""


def test_method_option_without_method_is_an_error(capsys):
    code, _, err = run(capsys, "evaluate", "demo", *SMALL, "--k", "10")
    assert code == 2 and "--k given without --method" in err
