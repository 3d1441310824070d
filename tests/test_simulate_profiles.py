"""The demo's profiles against the statistics they are matched to, checked by brute force."""

from __future__ import annotations

import numpy as np
import pytest

from gapviz.simulate import PROFILES, STATISTICS, profile_statistics, simulate_pairs, statistics_rows


def _brute_force(X: np.ndarray, Y: np.ndarray) -> dict[str, float]:
    """Every statistic from the full float64 cosine matrices (no closed forms)."""
    X = np.asarray(X, np.float64)
    Y = np.asarray(Y, np.float64)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Y /= np.linalg.norm(Y, axis=1, keepdims=True)
    n = len(X)
    off = ~np.eye(n, dtype=bool)
    return {"paired_cosine": float(np.mean(np.sum(X * Y, axis=1))),
            "all_cosine": float(np.mean(X @ Y.T)),
            "image_cone": float(np.mean((X @ X.T)[off])),
            "text_cone": float(np.mean((Y @ Y.T)[off])),
            "centroid_gap": float(np.linalg.norm(X.mean(0) - Y.mean(0)))}


@pytest.fixture(scope="module")
def demo():
    return {key: simulate_pairs(profile=key) for key in PROFILES}


def test_statistics_equal_a_brute_force_float64_computation():
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(300, 16)) + 0.5, rng.normal(size=(300, 16)) * 2
    got, want = profile_statistics(X, Y), _brute_force(X, Y)
    assert set(got) == {key for key, _ in STATISTICS}
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-6), key


def test_the_clip_profile_matches_real_clip_within_0_05(demo):
    """The demo (N = 2,500, d = 512, the app's default) and a 500-pair set as the real
    figures were measured on: every statistic within 0.05 of real CLIP ViT-B/16's."""
    reference = PROFILES["clip"].reference
    assert reference.measured and set(reference.figures) == {key for key, _ in STATISTICS}
    for pairs in (demo["clip"], simulate_pairs(500, profile="clip", seed=7)):
        got = _brute_force(pairs.image_embeddings, pairs.text_embeddings)
        for key, target in reference.figures.items():
            assert abs(got[key] - target) <= 0.05, (key, got[key], target)


def test_unrelated_items_have_positive_cosine_so_the_papers_graph_is_defined(demo):
    """With cosine weights (the paper's spectral graph), every node of the demo's bipartite
    graph has a positive degree, as on real CLIP features."""
    pairs = demo["clip"]
    X = pairs.image_embeddings / np.linalg.norm(pairs.image_embeddings, axis=1, keepdims=True)
    Y = pairs.text_embeddings / np.linalg.norm(pairs.text_embeddings, axis=1, keepdims=True)
    S = X.astype(np.float64) @ Y.T.astype(np.float64)
    assert S.sum(1).min() > 0 and S.sum(0).min() > 0
    assert np.mean(S > 0) > 0.9


def test_unmatched_profiles_say_so_and_every_set_carries_its_sentence(demo):
    for key, prof in PROFILES.items():
        sentence = demo[key].meta["reference"]
        assert sentence == prof.reference.sentence and sentence.startswith("simulated; ")
        if prof.reference.measured:
            assert "matched to" in sentence
        else:
            assert not prof.reference.figures and "not matched to" in sentence


def test_the_rows_put_each_measured_profile_beside_its_real_figures(demo):
    rows = statistics_rows(demo)
    assert [r["statistic"] for r in rows] == [label for _, label in STATISTICS]
    real = f"{PROFILES['clip'].reference.model} (real)"
    for (key, _), row in zip(STATISTICS, rows):
        assert row[real] == PROFILES["clip"].reference.figures[key]
        assert row["sim-CLIP"] == round(profile_statistics(
            demo["clip"].image_embeddings, demo["clip"].text_embeddings)[key], 3)
        assert not any(col.startswith("SigLIP") for col in row)  # no figures invented


def test_the_data_page_shows_the_demo_beside_real_clip_and_headers_say_what_it_is(app_session,
                                                                                  assert_clean):
    at = app_session("pages/data.py")
    assert_clean(at, "Data page")
    tables = [df.value for df in at.dataframe if "statistic" in df.value.columns]
    assert tables, "no statistics table on the Data page"
    table = tables[0].set_index("statistic")
    real = f"{PROFILES['clip'].reference.model} (real)"
    for key, label in STATISTICS:
        assert abs(table.loc[label, "sim-CLIP"] - table.loc[label, real]) <= 0.05
    captions = " ".join(c.value for c in at.caption)
    assert PROFILES["clip"].reference.sentence in captions  # the page header
    text = " ".join(m.value for m in at.markdown)
    assert "not matched to SigLIP" in text and "not matched to LLM2CLIP" in text
