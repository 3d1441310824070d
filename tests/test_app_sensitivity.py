"""The pool-size and caption sweep on the Anatomy page (AppTest): on simulated pairs with one
caption per image (a tab beside the anatomy) and on an upload with five captions per image
(the page says the anatomy takes one caption and shows the sweep and its caption curve)."""

from __future__ import annotations

import numpy as np

import time

from gapviz.embeddings import PairedEmbeddings
from gapviz.sensitivity import caption_sweep, pool_size_sweep
from gapviz.workspace import Workspace

from reference import coco_style_groups


def _finished(at, timeout=120):
    """Rerun the page until the background sweep's table is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        table = next((d.value for d in at.dataframe if "drifts with N" in d.value.columns), None)
        if table is not None:
            return table
        assert any("Sweeping in the background" in (p.text or "") for p in at.get("progress")), \
            "neither the sweep's progress nor its results are shown"
        time.sleep(0.5)
        at.run()
    raise AssertionError("the sweep did not finish")


def test_pool_size_tab_runs_the_sweep_raw_and_after(simulated_workspace, app_session,
                                                    assert_clean):
    ws = simulated_workspace(600, 32, "Small", profiles=["clip"])
    at = app_session("pages/anatomy.py", workspace=ws)
    assert_clean(at, "Anatomy")
    at.toggle(key="anatomy_sweep_on").set_value(True).run()
    assert_clean(at, "pool-size sweep")
    table = _finished(at)
    assert "anatomy_sweep_fig" in [c.key for c in at.get("plotly_chart")]
    assert {"raw"} < set(table["embeddings"]) and set(table["size"]) == {250, 500, 600}
    pairs = ws.active.pairs
    direct = pool_size_sweep([("raw", pairs.image_embeddings, pairs.text_embeddings, None)],
                             sizes=[250, 500, 600])
    itr = {s["size"]: s for s in direct.summary() if s["measure"] == "R@5"}
    shown = table[(table["embeddings"] == "raw") & (table["measure"] == "R@5")]
    assert list(shown["draws"]) == [3, 3, 1]
    from gapviz.measure_info import format_metric

    assert shown["mean"].iloc[-1] == format_metric("R@5", itr[600]["mean"])


def test_an_upload_with_five_captions_shows_the_caption_curve(app_session, assert_clean):
    X, Y, groups = coco_style_groups(300, 16, 0, 5)
    pairs = PairedEmbeddings(X, Y, ids=[f"p{i}" for i in range(len(groups))], groups=list(groups),
                             captions=[f"caption {i}" for i in range(len(groups))],
                             model="uploaded")
    ws = Workspace()
    ws.add(pairs, source="upload", dataset="Five captions", model="uploaded", activate=True)
    at = app_session("pages/anatomy.py", workspace=ws)
    assert_clean(at, "Anatomy on five captions")
    assert any("several captions per image" in i.value for i in at.info)
    # every page's header names the convention
    assert any("300 images, all captions (5 per image), any counts" in c.value for c in at.caption)
    at.radio(key="anatomy_sweep_kind").set_value("captions").run()
    at.toggle(key="anatomy_sweep_on").set_value(True).run()
    assert_clean(at, "caption sweep")
    table = _finished(at)
    assert list(dict.fromkeys(table["captions"])) == ["first", "random", "all"]
    direct = caption_sweep([("raw", X, Y, None)], groups)
    r5 = {s["captions"]: s["mean"] for s in direct.summary() if s["measure"] == "R@5"}
    assert r5["all"] >= r5["first"]  # any of five captions finds the image at least as often


def test_sweep_draws_keep_an_images_captions_together():
    X, Y, groups = coco_style_groups(400, 8, 2, -5)
    result = pool_size_sweep([("raw", X, Y, None)], groups=groups, sizes=[100, 400], draws=2)
    assert [r["size"] for r in result.rows] == [100, 100, 400]
    assert all(r["captions"].startswith("all captions") for r in result.rows)
    assert result.drifting().keys() == {"raw"}
