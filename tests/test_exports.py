"""Exports a user takes away: every file opens in the tool it is meant for.

CSV in the csv module (and pandas), markdown as a table, ``.npz`` in gapviz's own loader with
the method recorded, PNG/SVG as images (kaleido, when it and a Chromium are installed), the
HTML report in an HTML parser with nothing fetched from the network. Also the pieces of the
Retrieval page (cards, per-query figure, free-query placement) and the compare heatmap.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from gapviz import exports
from gapviz.embeddings import load_embeddings
from gapviz.figures import retrieval as rv
from gapviz.figures.compare import compare_heatmap, goodness, measure_label
from gapviz.measures import measure_gap
from gapviz.methods import make_method
from gapviz.retrieval import retrieve, retrieve_vector
from gapviz.simulate import simulate_pairs

COLUMNS = {
    "orig": {"ITR": 415.66, "TIR": math.inf, "R@5": 0.0, "frechet": 1.2},
    "spectral": {"ITR": 2.5, "TIR": 3.0, "R@5": 0.45, "frechet": 0.01},
    "center": {"ITR": 12.0, "TIR": 11.0, "R@5": 0.2, "frechet": 0.3},
}


@pytest.fixture(scope="module")
def pairs():
    return simulate_pairs(120, 32, seed=3)


@pytest.fixture(scope="module")
def spectral(pairs):
    return make_method("spectral", n_components=20, max_components=30).fit(
        pairs.image_embeddings, pairs.text_embeddings)


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


# ---------------------------------------------------------------------------- tables
def test_measures_csv_round_trips_every_value_including_infinity():
    text = exports.measures_csv(COLUMNS)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["run"] for r in rows] == list(COLUMNS)
    for r in rows:
        for key, value in COLUMNS[r["run"]].items():
            assert float(r[key]) == value  # full precision; "inf" parses back to infinity
    frame = pd.read_csv(io.StringIO(text), index_col="run")  # and it opens in pandas
    assert frame.loc["orig", "TIR"] == math.inf


def test_measures_markdown_is_a_table_with_the_best_of_each_column_in_bold():
    md = exports.measures_markdown(COLUMNS)
    lines = md.strip().splitlines()
    assert lines[0].startswith("| run |") and set(lines[1]) <= set("|-:")
    assert len(lines) == 2 + len(COLUMNS)
    spectral = next(line for line in lines if line.startswith("| spectral"))
    assert spectral.count("**") == 2 * 4  # best ITR, TIR, R@5 and Fréchet
    assert "∞" in next(line for line in lines if line.startswith("| orig"))


def test_file_names_are_safe():
    assert exports.slug("sim-CLIP (simulated; imitates OpenAI CLIP ViT-L/14)") == \
        "sim-clip-simulated-imitates-openai-clip-vit-l-14"
    assert exports.file_name("Demo (simulated)", "measures", ext="csv") == "gapviz-demo-simulated-measures.csv"
    assert exports.file_name("", ext="html") == "gapviz.html"


# ---------------------------------------------------------------------------- embeddings
def test_transformed_npz_opens_in_gapviz_with_the_method_and_its_parameters(pairs, spectral, tmp_path):
    Xt, Yt = spectral.training_embedding(12)
    desc = exports.method_description(spectral, {"n_components": np.int64(12)})
    assert desc["method"] == "spectral" and desc["params"]["n_components"] == 12
    assert desc["params"]["max_components"] == 30  # the fit's own parameters are kept
    path = tmp_path / "after.npz"
    path.write_bytes(exports.transformed_npz(pairs, Xt, Yt, desc))
    loaded, report = load_embeddings(path)
    assert report.n_kept == pairs.n and not report.warnings
    np.testing.assert_array_equal(loaded.image_embeddings, Xt)
    np.testing.assert_array_equal(loaded.text_embeddings, Yt)
    assert loaded.ids == pairs.ids and loaded.captions == pairs.captions
    assert loaded.meta["method"] == "spectral"
    assert loaded.meta["params"] == json.loads(json.dumps(desc["params"]))
    assert loaded.meta["transformed_from"] == pairs.model
    assert loaded.meta["normalized"] is True and loaded.meta["simulated"] is True
    # the file measures as the arrays it holds
    assert measure_gap(loaded.image_embeddings, loaded.text_embeddings).metrics["ITR"] == \
        measure_gap(Xt, Yt).metrics["ITR"]
    assert exports.method_description(None) == {"method": "orig", "params": {}}
    assert "protocol" not in loaded.meta  # no provenance given, none invented


def test_transformed_npz_records_how_the_rows_were_obtained(pairs, tmp_path):
    """A held-out fit's export carries its protocol, pairs fitted and scored, folds and seed."""
    from gapviz.protocols import fit_and_score

    X, Y = pairs.image_embeddings, pairs.text_embeddings
    result = fit_and_score("procrustes", X, Y, protocol="held-out", folds=4, seed=3)
    desc = exports.method_description(result.fits[0], provenance=result.provenance)
    path = tmp_path / "heldout.npz"
    path.write_bytes(exports.transformed_npz(pairs, result.image_embeddings,
                                                  result.text_embeddings, desc))
    loaded, _ = load_embeddings(path)
    protocol = loaded.meta["protocol"]
    assert protocol == json.loads(json.dumps(result.provenance.to_dict()))
    assert (protocol["protocol"], protocol["folds"], protocol["seed"]) == ("held-out", 4, 3)
    assert protocol["n_scored"] == pairs.n and protocol["n_fit"] == pairs.n - -(-pairs.n // 4)


# ---------------------------------------------------------------------------- figures
def test_plotly_config_sets_the_browser_download():
    cfg = exports.plotly_config("Compare heatmap", "svg")
    assert cfg["toImageButtonOptions"] == {"format": "svg", "filename": "compare-heatmap", "scale": 1}
    with pytest.raises(ValueError, match="format"):
        exports.plotly_config("x", "gif")


def test_figure_image_says_what_to_install_without_kaleido(monkeypatch):
    monkeypatch.setattr(exports, "kaleido_available", lambda: False)
    with pytest.raises(exports.ExportError, match="pip install 'kaleido=="):
        exports.figure_image(compare_heatmap(COLUMNS), "png")
    with pytest.raises(ValueError, match="format"):
        exports.figure_image(compare_heatmap(COLUMNS), "jpg")


@pytest.mark.skipif(not exports.kaleido_available() or not shutil.which("chromium"),
                    reason="PNG/SVG export needs kaleido and Chromium")
def test_figures_export_as_png_and_svg():
    fig = compare_heatmap(COLUMNS)
    png = exports.figure_image(fig, "png", width=600, height=300, keep_renderer=True)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:  # a real image, drawn at twice the CSS size
        assert im.size == (1200, 600)
    svg = exports.figure_image(fig, "svg", width=600, height=300, keep_renderer=True).decode()
    assert svg.lstrip().startswith("<svg") and "spectral" in svg


# ---------------------------------------------------------------------------- report
def test_session_report_is_self_contained_html_with_every_part(pairs):
    fig = compare_heatmap(COLUMNS)
    section = "<div id='extra-section'>side by side</div>"
    page = exports.session_report(pairs, COLUMNS, title="Session", dataset="Demo (simulated)",
                                  model="sim-CLIP", method={"method": "spectral", "params": {"n_components": 60}},
                                  figures=[("Heatmap", fig)], sections=[("Retrieval", section)],
                                  notes=["a note"])
    parser = _Collector()
    parser.feed(page)
    tags = [t for t, _ in parser.tags]
    assert tags[0] == "html" and "table" in tags
    scripts = [a for t, a in parser.tags if t == "script"]
    assert scripts and not any("src" in a for a in scripts)  # plotly.js inlined, nothing fetched
    assert page.count("Plotly.newPlot") == 1
    for text in ("Session", "SIMULATED DATA", "Demo (simulated)", "sim-CLIP", "spectral",
                 "n_components=60", "a note", "Heatmap", "extra-section"):
        assert text in page
    assert page.index("<h2>Measures") < page.index("extra-section") < page.index("<h2>Heatmap") \
        < page.index("What the measures mean")
    assert "pairs</b>: 120" in page


# ---------------------------------------------------------------------------- retrieval view
def test_cards_highlight_the_partner_and_show_it_beyond_k(pairs):
    X, Y = pairs.image_embeddings, pairs.text_embeddings
    q = rv.Query("image", 7)
    raw = retrieve(X, Y, "image", 7, 5)
    assert raw.partner_rank > 5  # the simulated gap: images first
    html = rv.hits_html(pairs, raw, q)
    assert html.count("data-rank=") == 6 and html.count("gv-card gv-partner'") == 1
    assert f"#{raw.partner_rank:,}" in html and "beyond the top 5" in html
    assert html.count("data-modality='image'") == raw.same_modality_in_top_k
    closed = retrieve(Y, Y, "image", 7, 5)  # images replaced by their captions: partner first
    html = rv.hits_html(pairs, closed, q)
    assert closed.hits[0].is_partner and html.count("data-rank=") == 5
    assert "✓ its caption" in html and pairs.captions[7] in html
    card = rv.query_html(pairs, q)
    assert pairs.ids[7] in card and "true partner" in card


def test_thumbnails_are_data_uris_and_broken_files_fall_back(tmp_path, pairs):
    from PIL import Image

    path = tmp_path / "a.png"
    Image.new("RGBA", (40, 30), (255, 0, 0, 128)).save(path)
    uri = rv.thumbnail_uri(str(path))
    assert uri.startswith("data:image/jpeg;base64,")
    assert rv.thumbnail_uri(str(tmp_path / "missing.jpg")) is None
    with_images = pairs.subset(range(3))
    with_images.image_paths = [str(path), str(tmp_path / "missing.jpg"), str(path)]
    html = rv.hits_html(with_images, retrieve(with_images.image_embeddings,
                                              with_images.text_embeddings, "text", 0, 5),
                        rv.Query("text", 0))
    assert "data:image/jpeg;base64," in html and "missing.jpg" in html


def test_query_figure_marks_the_partner_rank_and_counts_modalities(pairs):
    X, Y = pairs.image_embeddings, pairs.text_embeddings
    res = retrieve(X, Y, "text", 4, 10)
    fig = rv.query_figure(res, k=10, pool_size=2 * pairs.n - 1, query=rv.Query("text", 4), ids=pairs.ids)
    marker = next(t for t in fig.data if t.type == "scatter")
    assert list(marker.x) == [res.partner_rank] and list(marker.customdata[0]) == [4, pairs.ids[4], "image"]
    bars = [t for t in fig.data if t.type == "bar"]
    assert [b.x[0] for b in bars] == [res.same_modality_in_top_k, 10 - res.same_modality_in_top_k]
    free = retrieve_vector(Y[4], X, Y, "text", 10)
    fig = rv.query_figure(free, k=10, pool_size=2 * pairs.n, query=rv.Query("text", None, "hi"))
    assert not [t for t in fig.data if t.type == "scatter"]
    assert any("no true partner" in (a.text or "") for a in fig.layout.annotations)


def test_a_free_query_goes_through_the_out_of_sample_path_without_touching_the_fit(pairs, spectral):
    # Nystrom extension of a training text reproduces its training row: the free path is the
    # method's own, sliced to the k being viewed.
    Xt, Yt = spectral.training_embedding(12)
    from gapviz.runs import FitView

    view = FitView(spectral, {"n_components": 12})  # a run's read-only fit, viewed at k = 12
    placed = rv.place_free_query(view, pairs.text_embeddings[9], "text")
    assert placed.shape == (12,)
    np.testing.assert_allclose(placed / np.linalg.norm(placed), Yt[9], atol=1e-4)
    assert spectral.n_components == 20  # the shared fitted method is unchanged
    res = retrieve_vector(placed, Xt, Yt, "text", 5)
    assert res.hits[0].modality == "text" and res.hits[0].index == 9
    raw = rv.place_free_query(None, pairs.text_embeddings[9], "text")
    np.testing.assert_array_equal(raw, pairs.text_embeddings[9])


def test_hits_records_feed_a_csv(pairs):
    X, Y = pairs.image_embeddings, pairs.text_embeddings
    rows = rv.hits_records(pairs, [("raw", retrieve(X, Y, "image", 0, 3)),
                                   ("same", retrieve(Y, Y, "image", 0, 3))])
    frame = pd.DataFrame(rows)
    assert list(frame["space"]) == ["raw"] * 3 + ["same"] * 3
    assert frame.loc[3, "true_partner"] and frame.loc[3, "pair_id"] == pairs.ids[0]
    # with the query and how each space was obtained, the CSV says what it answers
    raw = retrieve(X, Y, "image", 5, 3)
    rows = rv.hits_records(pairs, [("raw", raw)], query=rv.Query("image", 5),
                           how={"raw": "no method"})
    assert rows[0]["query_pair_id"] == pairs.ids[5] and rows[0]["query_modality"] == "image"
    assert rows[0]["partner_rank_in_pool"] == raw.partner_rank and rows[0]["how_obtained"] == "no method"
    text = exports.records_csv(rows)
    assert text.splitlines()[0].startswith("query_modality,query_pair_id,query_text,"
                                           "partner_rank_in_pool,space,how_obtained,rank")


# ---------------------------------------------------------------------------- compare heatmap
def test_goodness_orders_each_column_by_its_direction():
    assert goodness([415.66, 2.5, 12.0], "ITR") == pytest.approx([0.0, 1.0, 1 - math.log10(12 / 2.5) / math.log10(415.66 / 2.5)])
    assert goodness([0.0, 0.45, 0.2], "R@5") == pytest.approx([0.0, 1.0, 0.2 / 0.45])
    scores = goodness([math.inf, 3.0, 11.0], "TIR")
    assert scores[0] == 0.0 and scores[1] == 1.0 and 0.15 <= scores[2] < 1.0
    assert goodness([math.nan, 1.0], "ITR") == [None, 1.0]


def test_heatmap_has_a_row_per_run_and_stars_the_best():
    fig = compare_heatmap(COLUMNS, ["ITR", "TIR", "R@5", "frechet"])
    hm = fig.data[0]
    assert list(hm.y) == list(COLUMNS) and list(hm.x) == [measure_label(k) for k in ("ITR", "TIR", "R@5", "frechet")]
    assert hm.text[1] == ["<b>★ 2.50</b>", "<b>★ 3.00</b>", "<b>★ 0.450</b>", "<b>★ 0.010</b>"]  # 3 s.f. for ratios
    assert hm.text[0][1] == "∞" and list(hm.customdata[2][0]) == ["center", "ITR"]
    assert measure_label("ITR") == "ITR →1" and measure_label("TMR") == "TMR ↓" and measure_label("R@5") == "R@5 ↑"
