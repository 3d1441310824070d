"""Many captions per image, from the file to the numbers: a COCO-style captions file with five
captions per image loads with ``--caption all`` (one pair per caption, grouped by image), the
embeddings file keeps the groups, ``gapviz evaluate`` measures with any caption counting and
says so, and held-out folds never split an image's captions."""

import json

import numpy as np
import pytest

from datafixtures import make_coco, register_tiny_model
from gapviz.cli.embed import main as embed_main
from gapviz.data import load_coco
from gapviz.embeddings import PairedEmbeddings, load_embeddings, save_embeddings
from gapviz.measures import measure_gap
from gapviz.protocols import protocol_transform

from reference import RANK_FIELDS, brute_force_group_ranks, coco_style_groups


def five_captions(root, n_images=8):
    data = make_coco(root, n_images=n_images)
    for k in range(3, 5):  # the fixture has 3 captions per image: make it COCO's 5
        for img in data["images"][:-1]:
            data["annotations"].append({"id": 10_000 + 100 * k + img["id"], "image_id": img["id"],
                                        "caption": f"image {img['id']} caption {k}"})
    path = root / "annotations" / "captions_val2017.json"
    path.write_text(json.dumps(data))
    return path


def test_caption_all_keeps_every_caption_grouped_by_image(tmp_path):
    ann = five_captions(tmp_path)
    pairs, report = load_coco(ann, tmp_path / "val2017", n=None, caption_choice="all",
                              cache_dir=tmp_path / "cache")
    images = {p.group for p in pairs}
    assert images == {"1", "2", "4", "5", "6", "7"} and len(pairs) == 5 * len(images)
    assert [p.id for p in pairs[:5]] == [f"1#{k}" for k in range(5)]
    assert [p.caption for p in pairs[:5]] == [f"image 1 caption {k}" for k in range(5)]
    assert any("every caption of each image" in note for note in report.notes)
    sample, _ = load_coco(ann, tmp_path / "val2017", n=3, seed=0, caption_choice="all",
                          cache_dir=tmp_path / "cache")
    assert len({p.group for p in sample}) == 3 and len(sample) == 15  # n counts images


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return register_tiny_model(tmp_path_factory.mktemp("model-configs"))


def test_embed_then_evaluate_with_all_captions(tiny, tmp_path, capsys):
    ann = five_captions(tmp_path)
    out = tmp_path / "coco.npz"
    rc = embed_main([str(ann), "--images", str(tmp_path / "val2017"), "--caption", "all",
                     "--out", str(out), "-q", "--cache-dir", str(tmp_path / "cache"),
                     "--model", tiny, "--pretrained", "none"])
    assert rc == 0
    pairs, _ = load_embeddings(out)
    assert pairs.n == 30 and pairs.n_images == 6 and pairs.meta["caption_choice"] == "all"
    groups = pairs.group_ids
    # one embedding per image: every caption's row holds its image's
    for g in set(groups):
        rows = np.flatnonzero(groups == g)
        assert (pairs.image_embeddings[rows] == pairs.image_embeddings[rows[0]]).all()
    report = measure_gap(pairs.image_embeddings, pairs.text_embeddings, groups=groups)
    ref = brute_force_group_ranks(pairs.image_embeddings, pairs.text_embeddings, groups)
    for mine, theirs in RANK_FIELDS:
        np.testing.assert_array_equal(getattr(report, mine), ref[theirs], err_msg=mine)
    capsys.readouterr()
    from gapviz.cli import main as cli_main

    assert cli_main(["evaluate", str(out)]) == 0
    text = capsys.readouterr().out
    assert "all captions (5 per image), any counts" in text
    assert cli_main(["evaluate", str(out), "--format", "json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["dataset"]["captions"] == "all captions (5 per image), any counts"
    assert record["metrics"]["R@5"] == report.metrics["R@5"]


def test_groups_round_trip_through_both_file_formats(tmp_path):
    X, Y, groups = coco_style_groups(12, 6, 0, 5)
    pairs = PairedEmbeddings(X, Y, ids=[f"p{i}" for i in range(len(groups))],
                             groups=list(groups))
    for suffix in (".npz", ".parquet"):
        path = save_embeddings(pairs, tmp_path / f"g{suffix}")
        back, _ = load_embeddings(path)
        assert back.groups == list(groups) and back.n_images == 12
        assert back.content_hash() == pairs.content_hash()
    plain = PairedEmbeddings(X, Y, ids=[f"p{i}" for i in range(len(groups))])
    assert plain.content_hash() != pairs.content_hash()  # the convention changes the numbers


@pytest.mark.parametrize("method", ["procrustes", "center", "csls"])
def test_held_out_folds_never_split_an_image(method):
    X, Y, groups = coco_style_groups(40, 8, 1, -5)
    if method == "csls":
        with pytest.raises(ValueError, match="several captions"):
            res = protocol_transform(method, X, Y, folds=4, groups=groups)
            measure_gap(res.image_embeddings, res.text_embeddings, groups=groups,
                        scores=res.scores)
        return
    res = protocol_transform(method, X, Y, protocol="held-out", folds=4, groups=groups)
    for g in set(groups):
        assert len(set(res.fold_of[groups == g])) == 1, g
    # an image's rows are transformed by one fit: identical outputs, so it stays one image
    report = measure_gap(res.image_embeddings, res.text_embeddings, groups=groups)
    assert report.n_images == 40
    assert "images" in res.provenance.summary()


def test_flickr_style_captions_file_with_several_rows_per_image(tmp_path):
    from datafixtures import write_image
    from gapviz.data import load_folder

    rows = ["image,caption"]
    for i in range(4):
        write_image(tmp_path / f"img{i}.jpg", seed=i)
        rows += [f"img{i}.jpg,picture {i} caption {k}" for k in range(5)]
    (tmp_path / "captions.csv").write_text("\n".join(rows) + "\n")
    first, report = load_folder(tmp_path)
    assert len(first) == 4 and all(p.caption.endswith("caption 0") for p in first)
    assert any("several captions" in note for note in report.notes)
    every, _ = load_folder(tmp_path, caption_choice="all")
    assert len(every) == 20 and len({p.group for p in every}) == 4
    assert sorted(p.caption for p in every if p.group == every[0].group) == \
        [f"picture {every[0].caption.split()[1]} caption {k}" for k in range(5)]
    drawn, _ = load_folder(tmp_path, caption_choice="random", seed=3)
    again, _ = load_folder(tmp_path, caption_choice="random", seed=3)
    assert [p.caption for p in drawn] == [p.caption for p in again]


def test_hostile_groups_are_reported_and_never_misread(tmp_path):
    X, Y, groups = coco_style_groups(6, 4, 0, 3)
    base = {"image_embeddings": X, "text_embeddings": Y}
    # an id naming two different images: the groups are ignored, with the reason
    bad = X.copy()
    bad[1] += 1.0
    np.savez(tmp_path / "clash.npz", **{**base, "image_embeddings": bad, "groups": groups})
    pairs, report = load_embeddings(tmp_path / "clash.npz")
    assert pairs.groups is None and pairs.n == 18
    assert any("ignored 'groups'" in w and "same image id" in w for w in report.warnings)
    # floats are not ids; a wrong length is an error that says what to fix
    np.savez(tmp_path / "floats.npz", **base, groups=np.arange(18) / 2)
    pairs, report = load_embeddings(tmp_path / "floats.npz")
    assert pairs.groups is None and any("ignored 'groups'" in w for w in report.warnings)
    np.savez(tmp_path / "short.npz", **base, groups=groups[:-1])
    with pytest.raises(Exception, match="'groups' has 17 entries but there are 18 pairs"):
        load_embeddings(tmp_path / "short.npz")
