"""The app as a hosted demo (GAPVIZ_HOSTED=1), driven through AppTest: a visitor can upload
files and pick listed datasets and models, and can read nothing else on the server."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from gapviz.embeddings import PairedEmbeddings, to_npz_bytes
from gapviz.encode import KNOWN_MODELS


@pytest.fixture(autouse=True)
def hosted(monkeypatch, gapviz_cache):
    monkeypatch.setenv("GAPVIZ_HOSTED", "1")


@pytest.fixture
def at(hosted, app_session, assert_clean):
    """A fresh session on the Data page of the hosted demo."""
    session = app_session("pages/data.py")
    assert_clean(session, "Data, hosted")
    return session


def _keys(elements) -> set[str]:
    return {e.key for e in elements if e.key}


def test_no_server_path_url_or_unlisted_model_is_offered(at, assert_clean):
    assert "data_pairs_path" not in _keys(at.text_input)          # no server folder
    assert "data_coco_ann" not in _keys(at.text_input)            # no annotation path or URL
    assert "data_coco_images" not in _keys(at.text_input)
    for box in at.selectbox:
        if box.key in ("data_pairs_model", "data_sample_model"):
            assert box.options == [m.label for m in KNOWN_MODELS]  # no "another model…"
    assert any("Hosted demo" in c.value for c in at.caption)
    at.radio(key="data_sample_kind").set_value("Conceptual Captions").run()
    assert_clean(at, "CC, hosted")
    assert "data_cc_tsv" not in _keys(at.text_input)              # a TSV is uploaded instead
    assert "data_cc_upload" in _keys(at.get("file_uploader"))


def test_an_uploaded_file_naming_server_images_shows_none_of_them(tmp_path, at, assert_clean):
    private = tmp_path / "private" / "secret.png"
    private.parent.mkdir()
    Image.new("RGB", (32, 32), "red").save(private)
    rng = np.random.default_rng(0)
    n = 12
    pe = PairedEmbeddings(rng.normal(size=(n, 16)), rng.normal(size=(n, 16)),
                          [f"p{i}" for i in range(n)], [f"caption {i}" for i in range(n)],
                          image_paths=[str(private)] * (n - 1) + ["../../../etc/hostname"],
                          model="visitor model", meta={"model_name": "hf-hub:evil/model"})
    at.file_uploader(key="data_emb_upload").set_value(
        [("visitor.npz", to_npz_bytes(pe), "application/octet-stream")]).run()
    at.button(key="data_emb_go").click().run()
    assert_clean(at, "upload, hosted")
    active = at.session_state["workspace"].active
    assert active.model == "visitor model"
    assert active.pairs.image_paths == [""] * n    # nothing outside the upload may be shown
    assert len(at.get("imgs")) == 0                # the preview shows tiles, not the images
    # Retrieval: the file's meta names a hub model; free text is refused, nothing is loaded.
    at.switch_page("pages/retrieval.py").run()
    assert_clean(at, "Retrieval, hosted")
    at.radio(key="retrieval_source").set_value("text").run()
    assert any("not available" in c.value and "listed models" in c.value for c in at.caption)


def test_a_hostile_file_name_is_shown_as_text_in_the_error(at):
    name = "![x](http://evil.example/a.png)[click](javascript:x).npz"
    at.file_uploader(key="data_emb_upload").set_value(
        [(name, b"not an npz", "application/octet-stream")]).run()
    at.button(key="data_emb_go").click().run()
    assert not at.exception and at.error
    shown = at.error[0].value
    assert "![x](" not in shown and "[click](" not in shown    # no image, no link
    # The name, as typed; an invisible word joiner after ":" keeps "http://" from autolinking.
    assert "\\!\\[x\\](http\\:\u2060//evil.example/a.png)" in shown


def test_a_pool_past_the_hosted_compute_budget_is_refused_with_what_to_do(
        hosted, monkeypatch, app_session, simulated_workspace):
    """A hosted session measures a pool only within its budget (N² d): past it, the pages
    that measure say how many pairs fit and what to do, and Explore still draws the pool."""
    from gapviz.hosting import HostedRefusal, check_pool_work

    monkeypatch.setenv("GAPVIZ_MAX_POOL_PAIRS", "100")
    with pytest.raises(HostedRefusal, match="at most 100 pairs of dimension 512"):
        check_pool_work(300, 512)
    check_pool_work(100, 512)
    check_pool_work(300, 512, hosted_mode=False)  # no budget outside a hosted demo
    ws = simulated_workspace(300, 512, "Big", profiles=["clip"])
    for page in ("overview", "close_gap", "compare"):
        at = app_session(f"pages/{page}.py", workspace=ws)
        assert not at.exception, page
        shown = " ".join(e.value for e in at.error)
        assert "at most 100 pairs of dimension 512" in shown and "300 pairs" in shown, page
    at = app_session("pages/explore.py", workspace=ws)
    assert not at.exception and not at.error
    assert at.get("plotly_chart"), "Explore draws the pool"


def test_the_training_page_reads_no_server_path_on_a_hosted_demo(hosted, app_session, assert_clean):
    """The training page names checkpoints by server paths: hosted, it says so and offers no
    input at all."""
    at = app_session("pages/training.py")
    assert_clean(at, "Training, hosted")
    assert not at.text_input and not at.text_area and not at.button
    assert any("hosted demo" in i.value for i in at.info)
