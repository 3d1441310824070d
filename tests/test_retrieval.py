"""Mixed-pool retrieval for one query: hand-worked order, and agreement with the measures."""

import numpy as np
import pytest

from gapviz.measures import measure_gap
from gapviz.retrieval import retrieve, retrieve_vector
from test_measures import HAND_X, HAND_Y


def test_hand_worked_image_query():
    # image 1 (10 deg): img0 .985, img2 .966, txt0 .342, txt1 .000 (its partner), txt2 -.500
    r = retrieve(HAND_X, HAND_Y, "image", 1, k=5)
    assert [(h.modality, h.index) for h in r.hits] == [("image", 0), ("image", 2), ("text", 0),
                                                       ("text", 1), ("text", 2)]
    assert [h.rank for h in r.hits] == [1, 2, 3, 4, 5]
    assert r.partner_rank == 4 and [h.is_partner for h in r.hits] == [False, False, False, True, False]
    assert r.hits[0].similarity == pytest.approx(np.cos(np.deg2rad(10)), abs=1e-6)
    assert r.same_modality_in_top_k == 2


def test_partner_rank_beyond_k_is_still_reported():
    r = retrieve(HAND_X, HAND_Y, "text", 0, k=2)  # text 0's partner (image 0) is at rank 5
    assert len(r.hits) == 2 and r.partner_rank == 5 and not any(h.is_partner for h in r.hits)


def test_agrees_with_measure_ranks():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 8)) + 0.7
    Y = rng.normal(size=(60, 8))
    m = measure_gap(X, Y)
    for i in range(60):
        assert retrieve(X, Y, "image", i).partner_rank == m.i2t_rank[i]
        assert retrieve(X, Y, "text", i).partner_rank == m.t2i_rank[i]


def test_query_is_never_its_own_result_and_ties_rank_ahead():
    X = np.ones((3, 2))
    Y = np.ones((3, 2))
    r = retrieve(X, Y, "image", 0, k=5)
    assert ("image", 0) not in [(h.modality, h.index) for h in r.hits]
    assert r.partner_rank == 5 and r.hits[-1].is_partner  # all 4 others tie ahead of it


def test_free_vector_query():
    r = retrieve_vector(np.array([1.0, 0.0]), HAND_X, HAND_Y, "text", k=3)
    assert [(h.modality, h.index) for h in r.hits] == [("image", 0), ("image", 1), ("image", 2)]
    assert r.partner_rank is None and r.same_modality_in_top_k == 0


def test_bad_queries():
    with pytest.raises(ValueError, match="out of range"):
        retrieve(HAND_X, HAND_Y, "image", 3)
    with pytest.raises(ValueError, match="'image' or 'text'"):
        retrieve(HAND_X, HAND_Y, "audio", 0)
    with pytest.raises(ValueError, match="dimension 3"):
        retrieve_vector(np.ones(3), HAND_X, HAND_Y, "text")


def test_the_partner_rank_equals_the_measures_rank_also_for_near_ties():
    from gapviz.measures import measure_gap

    rng = np.random.default_rng(5)
    X = rng.normal(size=(60, 32)).astype(np.float32)
    Y = rng.normal(size=(60, 32)).astype(np.float32)
    # A text close to its image, and a duplicated image (exact ties, which never win).
    Y[0] = X[0] + 0.3 * rng.normal(size=32).astype(np.float32)
    X[2] = X[1]
    report = measure_gap(X, Y)
    for i in range(60):
        assert retrieve(X, Y, "image", i, 5).partner_rank == report.i2t_rank[i]
        assert retrieve(X, Y, "text", i, 5).partner_rank == report.t2i_rank[i]
