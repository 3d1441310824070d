"""What the pages show, without Streamlit: cards, deltas, distances, the k slider's path,
and the workspace of datasets and models."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gapviz import measure_info as cards
from gapviz import views
from gapviz.embeddings import PairedEmbeddings
from gapviz.measures import measure_gap
from gapviz.methods import make_method, method_class
from gapviz.retrieval import pick_example_query
from gapviz.runs import RunData, Runner, RunSpec, default_spec
from gapviz.simulate import simulate_pairs
from gapviz.workspace import Workspace


def test_values_and_deltas_are_formatted_for_cards():
    assert cards.format_metric("ITR", math.inf) == "∞"
    assert cards.format_metric("ITR", math.nan) == "—"
    assert cards.format_metric("ITR", 415.66) == "416"
    assert cards.format_metric("TMR", 2474.2) == "2,474"
    assert cards.format_metric("ITR", 3.456) == "3.46"
    assert cards.format_metric("R@5", 0.4321) == "43.2%"
    assert cards.format_metric("frechet", 0.12345) == "0.123"
    assert cards.format_delta("ITR", math.inf, 2.0) == "-∞"
    assert cards.format_delta("ITR", 2.0, math.inf) == "+∞"
    assert cards.format_delta("ITR", math.inf, math.inf) == "0"
    assert cards.format_delta("ITR", 415.66, 3.5) == "-412"
    assert cards.format_delta("TMR", 2474.0, 3.0) == "-2.5k"
    assert cards.format_delta("ITR", 3.0, 3.5) == "+0.50"
    assert cards.format_delta("R@5", 0.0, 0.38) == "+38.0 pts"
    assert cards.format_delta("ITR", 2.0, 2.0) == "0"
    assert cards.format_delta("ITR", None, 2.0) is None
    assert cards.format_delta("ITR", math.nan, 2.0) is None


def test_delta_colours_follow_which_direction_is_better():
    for key in ("ITR", "TIR", "IMR", "TMR", "paired_cosine_distance", "frechet"):
        assert cards.delta_color(key) == "inverse"   # lower is better: a drop is green
    for key in ("R@5", "R@10", "R@20"):
        assert cards.delta_color(key) == "normal"    # higher is better
    assert cards.card_key("R@{k}", 10) == "R@10"
    assert cards.card_label("R@10") == "Recall@10"
    assert "Best at 1" in cards.help_text("ITR")
    assert "Higher is better" in cards.help_text("R@5")


def test_gap_sentence_reads_the_ratio():
    assert cards.gap_sentence({"N": 10, "ITR": math.inf, "TMR": 7.0}).startswith(
        "every image query sees another image")
    assert cards.gap_sentence({"N": 10, "ITR": 1.0, "TMR": 2.0}).startswith("50% of image queries")
    # a finite ratio never reads as "100%" (kept for "every"), nor a non-zero one as "0%"
    assert cards.gap_sentence({"N": 2500, "ITR": 356.0, "TMR": 1077.0}).startswith(
        "99.7% of image queries")
    assert cards.gap_sentence({"N": 9, "ITR": 1e-4, "TMR": 1.0}).startswith("0.01% of image")


def test_distance_samples():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(20, 5)), rng.normal(size=(20, 5))
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    Yn = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    np.testing.assert_allclose(views.paired_distances(X, Y), 1 - np.sum(Xn * Yn, 1), atol=1e-6)
    every = views.cross_distance_sample(X, Y, n_samples=400)  # N^2 = 400: all of them
    np.testing.assert_allclose(np.sort(every), np.sort((1 - Xn @ Yn.T).ravel()), atol=1e-6)
    sample = views.cross_distance_sample(X, Y, n_samples=100, seed=1)
    every_pair = (1 - Xn @ Yn.T).ravel()
    assert sample.shape == (100,)
    assert np.abs(sample[:, None] - every_pair[None, :]).min(axis=1).max() < 1e-5
    np.testing.assert_array_equal(sample, views.cross_distance_sample(X, Y, n_samples=100, seed=1))


def test_distance_sample_gathered_in_blocks_equals_one_gather():
    """The sample is gathered a block at a time into reused buffers (no large temporaries):
    the values are those of gathering every sampled row at once, bit for bit."""
    rng = np.random.default_rng(4)
    for n, d, dtype in [(700, 64, np.float32), (90, 9, np.float64)]:
        X = rng.normal(size=(n, d)).astype(dtype)
        Y = rng.normal(size=(n, d)).astype(dtype)
        draws = np.random.default_rng(2)
        i, j = draws.integers(0, n, 3000), draws.integers(0, n, 3000)
        Xn, Yn = views.unit_rows(X), views.unit_rows(Y)
        expected = 1.0 - np.einsum("ij,ij->i", Xn[i], Yn[j])
        assert views.SAMPLE_BLOCK < 3000  # several blocks, the last one partial
        np.testing.assert_array_equal(views.cross_distance_sample(X, Y, 3000, seed=2), expected)


def test_spectral_k_is_a_view_parameter_and_never_refits():
    split = method_class("spectral").split_params
    fit, view = split({"n_components": 20}, 2500, 512)
    assert view == {"n_components": 20}
    assert fit == {"n_components": 60}  # eigenvectors for max_components (200), sliced
    assert split({"n_components": 150}, 2500, 512)[0] == fit
    assert method_class("ot").split_params({"reg_lap": 10.0}, 2500, 512) == ({"reg_lap": 10.0}, {})
    # the runner: fit parameters, slices, live sliders (every one explicit)
    assert Runner.split(RunSpec.make("spectral", {"n_components": 20}), 2500, 512) == (
        fit, view, {})
    assert Runner.split(RunSpec.make("ot", {"reg_lap": 10.0}), 2500, 512)[2] == {
        "reg_lap": 10.0, "reg_src": 1.0}
    from gapviz.methods import SpectralGap

    assert SpectralGap.slider_range("n_components", 8, 32) == (2, 7)
    assert SpectralGap.slider_range("n_components", 2500, 16) == (2, 16)
    assert default_spec(8, 32).param_dict == {"n_components": 7, "affinity": "shift"}  # the menu stated too
    with pytest.raises(ValueError, match="outside"):
        split({"n_components": 300}, 2500, 512)


def test_slicing_eigenvectors_gives_the_same_view_as_a_fresh_fit_with_that_k():
    pairs = simulate_pairs(300, 32, seed=2)
    X, Y = pairs.image_embeddings, pairs.text_embeddings
    sliced = Runner().run(RunSpec.make("spectral", {"n_components": 12}), RunData.of(pairs))
    Xs, Ys = sliced.images, sliced.texts
    fresh = make_method("spectral", n_components=12).fit(X, Y)
    Xf, Yf = fresh.training_embedding()
    np.testing.assert_allclose(np.abs(Xs), np.abs(Xf), atol=1e-4)
    np.testing.assert_allclose(np.abs(Ys), np.abs(Yf), atol=1e-4)
    view = views.view_of(Xs, Ys)
    assert view.report.metrics["ITR"] < measure_gap(X, Y).metrics["ITR"]
    assert view.projection.images.shape == (300, 2)


def test_pick_example_query_prefers_a_partner_found_after_closing():
    pairs = simulate_pairs(200, 32, seed=1)
    X, Y = pairs.image_embeddings, pairs.text_embeddings
    raw = measure_gap(X, Y)
    method = make_method("spectral", n_components=20).fit(X, Y)
    closed = measure_gap(*method.training_embedding())
    q = pick_example_query(raw, closed)
    assert closed.i2t_rank[q] == closed.i2t_rank.min()
    assert raw.best_text_rank[q] == raw.best_text_rank[closed.i2t_rank == closed.i2t_rank.min()].max()


def _pe(ids, seed=0, model=""):
    rng = np.random.default_rng(seed)
    return PairedEmbeddings(rng.normal(size=(len(ids), 4)), rng.normal(size=(len(ids), 4)), ids,
                            model=model)


def test_workspace_groups_embeddings_of_the_same_pairs_as_models():
    ws = Workspace()
    assert ws.active is None
    ws.add(_pe(["a", "b", "c"], 0, "clip"), source="file 1")
    ds, model = ws.add(_pe(["a", "b", "c"], 1, "siglip"), source="file 2")
    assert ds == "file 1" and model == "siglip"
    assert list(ws.datasets) == ["file 1"] and list(ws.datasets[ds].models) == ["clip", "siglip"]
    assert ws.active.model == "siglip"
    # Same content again: the same entry, not a copy.
    assert ws.add(_pe(["a", "b", "c"], 1, "siglip"), source="again") == ("file 1", "siglip")
    # A different model name for other numbers of the same pairs: made unique.
    assert ws.add(_pe(["a", "b", "c"], 2, "clip"), source="x")[1] == "clip (2)"
    # Other pairs: a new dataset, named after the source (unique).
    assert ws.add(_pe(["x", "y"], 0), source="file 1")[0] == "file 1 (2)"
    assert ws.active.dataset.name == "file 1 (2)"
    ws.select("file 1")
    assert ws.active.model == "clip (2)"  # each dataset remembers its model
    key = ws.active.key
    assert key == ws.datasets["file 1"].models["clip (2)"].content_hash()
    with pytest.raises(ValueError, match="other pairs"):
        ws.add(_pe(["x", "y"], 5), source="s", dataset="file 1")
    with pytest.raises(KeyError):
        ws.select("nope")
    ws.remove("file 1")
    assert ws.active.dataset.name == "file 1 (2)"
