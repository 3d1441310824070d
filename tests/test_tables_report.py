"""Measure tables in every format, and the HTML report."""

import csv
import io
import json
import math

import plotly.graph_objects as go

from gapviz import tables
from gapviz.report import html_report

COLUMNS = {"ORIG": {"ITR": math.inf, "TMR": 2474.0, "R@5": 0.0, "frechet": 0.5},
           "SPECTRAL": {"ITR": 3.5, "TMR": 2.25, "R@5": 0.4, "frechet": 0.1}}


def test_text_table_is_aligned_and_readable():
    out = tables.render(COLUMNS, "table", title="T")
    lines = out.splitlines()
    assert lines[0] == "T" and lines[1].split() == ["measure", "ORIG", "SPECTRAL"]
    assert lines[3].split() == ["ITR", "inf", "3.500"]
    assert lines[4].split() == ["TMR", "2,474.0", "2.250"]
    assert len({len(line) for line in lines[1:]}) == 1  # fixed width


def test_csv_and_json_keep_full_precision_and_infinity():
    rows = list(csv.reader(io.StringIO(tables.render(COLUMNS, "csv"))))
    assert rows[0] == ["measure", "ORIG", "SPECTRAL"]
    assert rows[1] == ["ITR", "inf", "3.5"] and float(rows[1][1]) == math.inf
    data = json.loads(tables.render(COLUMNS, "json"))
    assert data["columns"]["ORIG"]["ITR"] == math.inf  # written as Infinity, read back as inf


def test_markdown_marks_the_best_value_per_measure():
    md = tables.render(COLUMNS, "markdown", transpose=True)
    lines = md.splitlines()
    assert lines[0] == "| run | ITR | TMR | R@5 | frechet |"
    assert lines[2] == "| ORIG | ∞ | 2,474.0 | 0.000 | 0.500 |"
    assert lines[3] == "| SPECTRAL | **3.500** | **2.250** | **0.400** | **0.100** |"


def test_html_report_is_self_contained(tmp_path):
    fig = go.Figure(go.Scatter(x=[0, 1], y=[1, 0]))
    page = html_report(title="Gap report", dataset={"source": "demo", "simulated": True,
                                                    "imitates": "OpenAI CLIP ViT-L/14"},
                       columns=COLUMNS, figures=[("Scatter", fig)],
                       method={"method": "spectral", "params": {"n_components": 60}})
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert "SIMULATED DATA" in page and "spectral" in page and "n_components=60" in page
    assert "<td class='best'>3.500</td>" in page
    assert "src=\"http" not in page  # plotly.js is inlined, nothing fetched from a CDN
    assert page.count("Plotly.newPlot") == 1


def test_itr_best_is_closest_to_one_not_lowest():
    cols = {"ORIG": {"ITR": 400.0, "TMR": 900.0}, "SINKHORN": {"ITR": 0.004, "TMR": 3.0},
            "SPECTRAL": {"ITR": 2.0, "TMR": 4.0}}
    best = tables.best_per_row(cols, ["ITR", "TMR"])
    assert best == {"ITR": {"SPECTRAL"}, "TMR": {"SINKHORN"}}


def test_heatmap_scores_itr_by_distance_to_one():
    from gapviz.figures.compare import goodness

    scores = goodness([400.0, 0.004, 2.0, math.inf], "ITR")
    assert scores[2] == 1.0 and scores[3] == 0.0 and scores[0] < scores[2] and scores[1] < scores[2]


def test_no_best_is_marked_where_none_can_be():
    """A shuffled control's tables (markdown, HTML report) mark no best; others do."""
    from gapviz import exports, tables
    from gapviz.report import measures_table_html

    cols = {"a": {"ITR": 1.2, "R@5": 0.1}, "b": {"ITR": 3.0, "R@5": 0.3}}
    assert "**" in tables.render(cols, "markdown", transpose=True)
    plain = tables.render(cols, "markdown", transpose=True, mark_best=False)
    assert "**" not in plain and "| a | 1.200 | 0.100 |" in plain
    assert "**" not in exports.measures_markdown(cols, mark_best=False)
    assert "class='best'" in measures_table_html(cols)
    assert "class='best'" not in measures_table_html(cols, mark_best=False)
    assert tables.run_cells(None, n_scored=5, shuffled=True)["protocol"] == \
        "none (raw embeddings) shuffled control"
