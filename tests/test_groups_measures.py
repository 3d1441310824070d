"""Many captions per image: every rank measure equals a float64 brute force that counts any
caption of the image as relevant (ties, near-ties and duplicated images included)."""

import numpy as np
import pytest

from gapviz.measures import caption_convention, image_groups, measure_gap

from reference import RANK_FIELDS, brute_force_group_ranks, brute_force_ranks, coco_style_groups


@pytest.mark.parametrize("seed,captions,block", [(0, 5, None), (1, -5, 3_000), (2, 3, 700)])
def test_ranks_equal_the_float64_any_caption_reference(seed, captions, block):
    X, Y, groups = coco_style_groups(60, 12, seed, captions)
    report = measure_gap(X, Y, groups=groups, block_values=block)
    ref = brute_force_group_ranks(X, Y, groups)
    for mine, theirs in RANK_FIELDS:
        np.testing.assert_array_equal(getattr(report, mine), ref[theirs], err_msg=mine)
    m = len(set(groups))
    assert report.n_images == m and report.metrics["images"] == m
    assert report.metrics["R@5"] == np.mean(ref["i2t"] <= 5)            # over the images
    assert report.metrics["R@5_t2i"] == np.mean(ref["t2i"] <= 5)        # over the captions
    bt, bi = ref["best_text"], ref["best_image"]
    assert report.metrics["ITR"] == np.count_nonzero(bt > 1) / np.count_nonzero(bt == 1)
    assert report.metrics["TIR"] == np.count_nonzero(bi > 1) / np.count_nonzero(bi == 1)
    assert report.metrics["TMR"] == bt.mean() and report.metrics["IMR"] == bi.mean()
    assert report.convention.startswith("all captions")


def test_one_caption_per_image_is_the_plain_measure():
    X, Y, groups = coco_style_groups(40, 8, 3, 1)
    plain = measure_gap(X, Y)
    grouped = measure_gap(X, Y, groups=groups)
    for field, _ in RANK_FIELDS:
        np.testing.assert_array_equal(getattr(plain, field), getattr(grouped, field))
    assert grouped.convention == "1 caption per image" and grouped.image_of is None
    ref = brute_force_ranks(X, Y)
    np.testing.assert_array_equal(plain.i2t_rank, ref["i2t"])


def test_any_caption_counts_where_first_caption_misses():
    """An image whose first caption is ranked low but another caption first: R@1 counts it."""
    rng = np.random.default_rng(0)
    img = rng.normal(size=(3, 6))
    X = np.repeat(img, 2, axis=0).astype(np.float32)
    Y = np.vstack([img[1] + 0.01, img[0], rng.normal(size=6), img[1], rng.normal(size=6),
                   img[2] + 0.02])
    groups = np.array([0, 0, 1, 1, 2, 2])
    r = measure_gap(X, Y.astype(np.float32), groups=groups, ks=(1,))
    first_only = measure_gap(img.astype(np.float32), Y[[0, 2, 4]].astype(np.float32), ks=(1,))
    assert r.i2t_rank_crossmodal.tolist() == [1, 1, 1]
    assert first_only.i2t_rank_crossmodal[0] > 1


def test_group_ids_must_name_one_image():
    X, Y, groups = coco_style_groups(10, 4, 0, 2)
    X[1] += 1.0
    with pytest.raises(ValueError, match="same image id"):
        image_groups(X, groups)
    with pytest.raises(ValueError, match="one image id per pair"):
        measure_gap(X, Y, groups=groups[:-1])


def test_conventions_are_named():
    assert caption_convention(500, 500) == "1 caption per image"
    assert caption_convention(2500, 500) == "all captions (5 per image), any counts"
    assert caption_convention(2510, 500) == "all captions (5.0 on average per image), any counts"


def test_rmg_with_groups_takes_image_terms_over_the_images():
    from gapviz.anatomy import relative_modality_gap

    X, Y, groups = coco_style_groups(50, 8, 0, 5, f64=True)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    Yn = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    _, first = np.unique(groups, return_index=True)
    U = Xn[first]
    m = np.mean((1 - np.sum(Xn * Yn, axis=1)) / 2)
    off = lambda S: S[~np.eye(len(S), dtype=bool)]  # noqa: E731
    w_x = np.mean((1 - off(U @ U.T)) / 2)
    w_y = np.mean((1 - off(Yn @ Yn.T)) / 2)
    assert relative_modality_gap(X, Y, groups) == pytest.approx(m / (m + (w_x + w_y) / 2),
                                                                rel=1e-8)
    # without groups the repeated image rows would count as distinct images
    assert relative_modality_gap(X, Y) != pytest.approx(relative_modality_gap(X, Y, groups))


@pytest.mark.parametrize("seed,captions", [(0, 5), (1, -5)])
def test_ndcg_with_every_caption_relevant_equals_the_float64_definition(seed, captions):
    import math

    from gapviz.anatomy import grouped_ndcg
    from gapviz.measures import TIE_TOL_FLOAT64

    X, Y, groups = coco_style_groups(60, 6, seed, captions)
    Xd = X.astype(np.float64) / np.linalg.norm(X.astype(np.float64), axis=1, keepdims=True)
    Yd = Y.astype(np.float64) / np.linalg.norm(Y.astype(np.float64), axis=1, keepdims=True)
    ids, first, image_of = np.unique(groups, return_index=True, return_inverse=True)
    pool = np.vstack([Xd[first], Yd])
    m = len(first)
    want = []
    for i in range(m):
        s = pool @ pool[i]
        s[i] = -np.inf
        rel = m + np.flatnonzero(image_of == i)
        ranks = [int(np.count_nonzero(s >= s[t] - TIE_TOL_FLOAT64)) for t in rel]
        dcg = sum(1 / math.log2(1 + r) for r in ranks if r <= 10)
        idcg = sum(1 / math.log2(1 + j) for j in range(1, min(len(rel), 10) + 1))
        want.append(dcg / idcg)
    assert grouped_ndcg(X, Y, groups) == pytest.approx(float(np.mean(want)), abs=1e-12)


def test_retrieval_with_groups_ranks_each_image_once():
    from gapviz.retrieval import retrieve

    X, Y, groups = coco_style_groups(30, 8, 4, 5)
    report = measure_gap(X, Y, groups=groups)
    ids, first, image_of = np.unique(groups, return_index=True, return_inverse=True)
    for g in (0, 7, 29):
        row = int(first[g])
        res = retrieve(X, Y, "image", row, 10, groups=groups)
        assert res.partner_rank == report.i2t_rank[g]  # any caption counts, as the measures
        images = [h.index for h in res.hits if h.modality == "image"]
        assert len(images) == len(set(images)) and row not in images  # each image once
    for t in (0, 11, 100):
        res = retrieve(X, Y, "text", t, 10, groups=groups)
        assert res.partner_rank == report.t2i_rank[t]
