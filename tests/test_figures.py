"""Plotly figures (gapviz.figures): pure functions, WebGL scatters, row ids in customdata."""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest

from gapviz import figures
from gapviz.projection import Projection, joint_pca


def _proj(n=30, seed=0, method="pca"):
    rng = np.random.default_rng(seed)
    return Projection(rng.normal(size=(n, 2)).astype(np.float32) - 2,
                      rng.normal(size=(n, 2)).astype(np.float32) + 2, method, ("a", "b"))


def _modality_traces(fig):
    return [t for t in fig.data if t.legendgroup in ("image", "text")]


def test_gap_scatter_is_webgl_with_rows_ids_and_captions():
    proj = _proj()
    ids = [f"id{i}" for i in range(30)]
    caps = [f"caption <{i}>" for i in range(30)]
    fig = figures.gap_scatter(proj, ids=ids, captions=caps)
    assert isinstance(fig, go.Figure)
    traces = _modality_traces(fig)
    assert [t.name for t in traces] == ["Images", "Texts"]
    assert all(isinstance(t, go.Scattergl) for t in fig.data)
    for trace, xy, code in zip(traces, (proj.images, proj.texts), (0, 1)):
        np.testing.assert_array_equal(np.asarray(trace.customdata)[:, 0], np.arange(30))
        assert set(np.asarray(trace.customdata)[:, 1]) == {code}
        np.testing.assert_allclose(trace.x, xy[:, 0])
        assert list(trace.text) == ids
        assert trace.hovertext[3] == "caption &lt;3&gt;"  # escaped: hover labels are HTML
        assert trace.marker.color == figures.MODALITY_COLORS[trace.legendgroup]
    assert fig.layout.yaxis.scaleanchor == "x"  # PCA: true distances
    json.loads(pio.to_json(fig))  # serialisable as Streamlit sends it


def test_pair_lines_join_each_drawn_pair_and_are_capped():
    proj = _proj(10)
    fig = figures.gap_scatter(proj, pair_lines=True)
    lines = fig.data[0]
    assert lines.mode == "lines" and lines.hoverinfo == "skip"
    x = np.asarray(lines.x, dtype=float)
    assert x.size == 30 and np.isnan(x[2::3]).all()
    np.testing.assert_allclose(x[0::3], proj.images[:, 0])
    np.testing.assert_allclose(x[1::3], proj.texts[:, 0])
    big = _proj(50)
    fig = figures.gap_scatter(big, pair_lines=True, max_lines=7)
    assert np.asarray(fig.data[0].x).size == 21
    rows = figures.pair_line_rows(50, 7)
    assert rows.size == 7 and (np.diff(rows) > 0).all()
    np.testing.assert_array_equal(rows, figures.pair_line_rows(50, 7))  # seeded


def test_query_star_and_umap_axes_are_free():
    fig = figures.gap_scatter(_proj(method="umap"), query=("text", 4))
    star = fig.data[-1]
    assert star.name == "query" and star.marker.symbol == "star"
    assert star.x[0] == pytest.approx(_proj().texts[4, 0])
    assert fig.layout.yaxis.scaleanchor is None


def test_distance_histogram_shows_densities_and_means():
    rng = np.random.default_rng(0)
    paired = rng.uniform(0.2, 0.6, 500)
    all_pairs = rng.uniform(0.8, 1.2, 5000)
    fig = figures.distance_histogram([("raw", paired, all_pairs), ("after", paired / 2, all_pairs)])
    bars = [t for t in fig.data if isinstance(t, go.Bar)]
    assert len(bars) == 4
    width = bars[0].width
    for bar in bars:
        assert np.sum(bar.y) * width == pytest.approx(1.0, rel=1e-6)  # a density
    assert len(fig.layout.shapes) == 4
    assert fig.layout.shapes[0].x0 == pytest.approx(paired.mean())
    assert fig.layout.shapes[2].xref == "x2"
    assert list(fig.layout.xaxis.range) == [0, 2]


def test_selected_rows_reads_both_customdata_forms_and_skips_other_traces():
    event = {"points": [
        {"customdata": [3, 0]},                   # a list (plain arrays)
        {"customdata": {"0": 5, "1": 1}},         # a typed-array row, as plotly.js reports it
        {"customdata": [3, 0]},                   # duplicate
        {"x": 1.0, "y": 2.0},                     # a pair line: no customdata
        {"customdata": {"0": 1, "1": 9}},         # unknown modality code
    ]}
    assert figures.selected_rows(event) == [(3, "image"), (5, "text")]
    assert figures.selected_rows(None) == [] and figures.selected_rows({"points": []}) == []


def test_figures_scale_to_ten_thousand_pairs_quickly():
    import time

    rng = np.random.default_rng(0)
    X = rng.normal(size=(10_000, 8))
    proj = joint_pca(X, X + 1)
    ids = [f"p{i}" for i in range(10_000)]
    t0 = time.perf_counter()
    fig = figures.gap_scatter(proj, ids=ids, captions=ids)
    elapsed = time.perf_counter() - t0
    assert sum(len(t.x) for t in fig.data) == 20_000
    assert elapsed < 2.0  # numeric / fixed-width arrays only: no per-point Python objects


# ---------------------------------------------------------------------------------------------
# the Compare heatmap and the trade-off
# ---------------------------------------------------------------------------------------------
HEAT_COLUMNS = {
    "None (raw embeddings) · raw": {"ITR": 356.142857, "TMR": 1076.5352, "R@5": 0.016, "frechet": 1.02},
    "Spectral · transductive": {"ITR": 0.766784, "TMR": 1.8568, "R@5": 0.5028, "frechet": 0.0023},
    "Sinkhorn OT · held-out": {"ITR": 1.455796, "TMR": 3.236, "R@5": 0.354, "frechet": 0.30001},
    "PCA · transductive": {"ITR": 2499.0, "TMR": 843.5784, "R@5": 0.0004, "frechet": 1.547696},
}


def _cells(fig):
    """(run, key-label) -> (cell colour, text colour, text) of a compare heatmap."""
    from gapviz.figures.compare import cell_color

    heat, words = fig.data[0], fig.data[1]
    scale = [[float(z), c] for z, c in heat.colorscale]
    out = {}
    for i, run in enumerate(heat.y):
        for j, column in enumerate(heat.x):
            k = [n for n, (x, y) in enumerate(zip(words.x, words.y)) if (x, y) == (column, run)]
            assert len(k) == 1
            out[run, column] = (cell_color(scale, heat.z[i][j]), words.textfont.color[k[0]],
                                words.text[k[0]])
    return out


def _contrast(a, b):
    """WCAG 2 contrast ratio of two RGB colours (1 .. 21; 4.5 is the bar for body text)."""
    from gapviz.figures.compare import luminance

    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def test_heatmap_text_follows_the_darkness_of_its_cell():
    from gapviz.figures.compare import DARK_TEXT, LIGHT_TEXT, compare_heatmap, luminance

    cells = _cells(compare_heatmap(HEAT_COLUMNS, ["ITR", "TMR", "R@5", "frechet"]))
    white, dark = (255, 255, 255), (2, 6, 23)
    assert {color for _, color, _ in cells.values()} == {LIGHT_TEXT, DARK_TEXT}
    for (run, column), (background, color, text) in cells.items():
        # white on the dark cells (#059669, the old scale's end, among them), dark elsewhere
        assert (color == LIGHT_TEXT) == (luminance(background) < 0.25), (run, column, background)
        rgb = white if color == LIGHT_TEXT else dark
        assert _contrast(background, rgb) >= 3.5, (run, column, background, color)
    assert luminance((5, 150, 105)) < 0.25
    # the best of each column is the darkest cell: starred, in white
    best = cells["Spectral · transductive", "TMR ↓"]
    assert best[0] == (4, 120, 87) and best[1] == LIGHT_TEXT and best[2] == "<b>★ 1.86</b>"
    worst = cells["None (raw embeddings) · raw", "TMR ↓"]
    assert worst[0] == (248, 250, 252) and worst[1] == DARK_TEXT and worst[2] == "1,077"
    # one rule per column: ratios to three significant figures, the others three decimals
    assert [cells[r, "ITR →1"][2].replace("<b>★ ", "").replace("</b>", "") for r in HEAT_COLUMNS] == [
        "356", "0.767", "1.46", "2,499"]
    assert cells["Sinkhorn OT · held-out", "Fréchet ↓"][2] == "0.300"


def test_heatmap_of_a_null_check_ranks_nothing():
    from gapviz.figures.compare import compare_heatmap

    shuffled = {f"{run}, shuffled": values for run, values in HEAT_COLUMNS.items()}
    fig = compare_heatmap(shuffled, ["ITR", "R@5"], rank=False, title="Shuffled-pairs control",
                          subtitle="a null check",
                          flagged={("Spectral · transductive, shuffled", "R@5")})
    heat, words = fig.data[0], fig.data[1]
    assert fig.layout.title.text == "Shuffled-pairs control"
    assert fig.layout.title.subtitle.text == "a null check"
    assert not any("★" in t for t in words.text) and not any("★" in t for row in heat.text for t in row)
    flagged = [[z for z in row] for row in heat.z]
    assert flagged == [[0, 0], [0, 1], [0, 0], [0, 0]]  # only the flagged cell stands out
    assert heat.text[1][1] == "⚠ 0.503" and heat.text[0][0] == "356"


def test_tradeoff_numbers_runs_instead_of_writing_labels_on_the_plot():
    from gapviz.figures.anatomy import tradeoff_figure

    points = [{"label": "Mean-centering · transductive", "gap_closed": 0.40, "r1_kept": 1.02,
               "neighbours_kept": 0.98},
              {"label": "Standardisation · transductive", "gap_closed": 0.41, "r1_kept": 1.01,
               "neighbours_kept": 0.97},
              {"label": "Spectral · transductive", "gap_closed": 0.95, "r1_kept": 0.55,
               "neighbours_kept": None}]
    fig = tradeoff_figure(points, x_label="gap closed")
    markers = [t for t in fig.data if t.mode == "markers+text"]
    assert [(t.name, t.text[0], t.x[0], t.y[0]) for t in markers] == [
        ("1 · Mean-centering · transductive", "1", 0.40, 1.02),
        ("1 · Mean-centering · transductive", "1", 0.40, 0.98),
        ("2 · Standardisation · transductive", "2", 0.41, 1.01),
        ("2 · Standardisation · transductive", "2", 0.41, 0.97),
        ("3 · Spectral · transductive", "3", 0.95, 0.55)]
    assert [t.marker.symbol for t in markers] == ["circle", "diamond", "circle", "diamond", "circle"]
    legend = [t.name for t in fig.data if t.showlegend is not False and t.name]
    assert legend == ["1 · Mean-centering · transductive", "2 · Standardisation · transductive",
                      "3 · Spectral · transductive", "cross-modal R@1 kept", "neighbourhoods kept"]
    assert fig.layout.yaxis.tickformat == ".0%" and fig.layout.xaxis.tickformat == ".0%"
    assert fig.layout.yaxis.title.text == "share kept (100% = nothing lost)"
    assert fig.layout.title.text == "What closing the gap costs"


# ---------------------------------------------------------------------------- the palette
HEX = r"#[0-9A-Fa-f]{6}\b"


def test_every_colour_is_written_once_in_the_palette():
    import re
    from pathlib import Path

    from gapviz.figures import palette

    source = Path(palette.__file__).read_text()
    code = "\n".join(line.split("#:")[0] for line in source.splitlines())
    values = [v.upper() for v in re.findall(HEX, code)]
    assert len(values) == len(set(values)), sorted(v for v in values if values.count(v) > 1)
    assert figures.MODALITY_COLORS is palette.MODALITY_COLORS
    assert palette.GAP_COLOR == palette.IMAGE_COLOR and palette.KEPT_COLOR == palette.TEXT_COLOR


def test_no_module_outside_the_figures_package_writes_a_hex_colour():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    found = [f"{path.relative_to(root)}:{i}"
             for folder in ("gapviz", "pages", "ui") for path in sorted((root / folder).rglob("*.py"))
             if "figures" not in path.relative_to(root).parts
             for i, line in enumerate(path.read_text().splitlines(), start=1)
             if re.search(HEX, line)]
    assert not found, found
