"""The built-in demo's profiles have the intended shapes, at the demo's own size."""

import numpy as np
import pytest

from gapviz.measures import measure_gap
from gapviz.simulate import PROFILES, simulate_pairs


@pytest.fixture(scope="module")
def demo_metrics():
    out = {}
    for key in PROFILES:
        pairs = simulate_pairs(profile=key)  # N = 2,500, d = 512, the app's opening data
        out[key] = measure_gap(pairs.image_embeddings, pairs.text_embeddings).metrics
    return out


def test_clip_like_profile_has_a_strong_gap(demo_metrics):
    m = demo_metrics["clip"]
    assert 0.25 <= 1 - m["paired_cosine_distance"] <= 0.35  # paired cosine around 0.3
    assert 100 <= m["ITR"] < 1000  # "ITR in the hundreds"
    assert m["TIR"] < m["ITR"]  # asymmetric, as the paper's 416 vs 11
    assert m["R@5"] < 0.05 and m["R@5_i2t_crossmodal"] > 0.5  # retrieval works, the mixed pool fails


def test_profiles_are_ordered_by_gap_strength(demo_metrics):
    clip, siglip, llm2clip = (demo_metrics[k] for k in ("clip", "siglip", "llm2clip"))
    for key in ("IMR", "TMR", "centroid_gap", "frechet"):
        assert clip[key] > siglip[key] > llm2clip[key], key
    assert llm2clip["R@5"] > max(clip["R@5"], siglip["R@5"])  # better raw recall


def test_same_seed_same_pairs_across_profiles():
    a, b = simulate_pairs(50, 16, profile="clip"), simulate_pairs(50, 16, profile="siglip")
    assert a.captions == b.captions and a.ids == b.ids
    assert not np.allclose(a.image_embeddings, b.image_embeddings)
    again = simulate_pairs(50, 16, profile="clip")
    assert np.array_equal(a.image_embeddings, again.image_embeddings)


def test_the_simulators_own_draw_is_believed_without_a_second_draw(monkeypatch):
    """The demo's pairs are labelled simulated without drawing them again (a fresh server's
    first page waited 0.3-0.45 s per model for that second draw); anything else still is."""
    from dataclasses import replace

    import gapviz.simulate as simulate

    pairs = simulate.simulate_pairs(40, 8, profile="llm2clip", seed=7, shift=0.3)

    def drawn_again(*args, **kwargs):
        raise AssertionError("drawn again")

    monkeypatch.setattr(simulate, "simulate_pairs", drawn_again)
    assert pairs.is_simulated
    # the same numbers under a meta naming another draw are checked by drawing that one
    other = replace(pairs, meta={**pairs.meta, "seed": 8})
    with pytest.raises(AssertionError, match="drawn again"):
        other.is_simulated
    doctored = pairs.with_embeddings(pairs.image_embeddings[::-1], pairs.text_embeddings)
    with pytest.raises(AssertionError, match="drawn again"):
        doctored.is_simulated
