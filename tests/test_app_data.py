"""The Data page through AppTest: a zip of pairs made here is embedded by a real (tiny,
random-weight) open_clip model and becomes a dataset; embeddings files become models of the
same pairs; a broken file shows a message and leaves the loaded data alone."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from datafixtures import register_tiny_model, write_image, write_truncated_jpeg
from gapviz.embeddings import PairedEmbeddings, to_npz_bytes
from gapviz.workspace import DEMO_DATASET

TIMEOUT = 240
CAPTIONS = ["a red kite over a field", "a boat on a lake", "a city street at night",
            "a dog in the snow", "two cats on a sofa", "a bowl of fruit", "a train at a station",
            "a bicycle by a wall"]


@pytest.fixture(scope="module", autouse=True)
def cache_dir(gapviz_cache):
    return gapviz_cache


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return register_tiny_model(tmp_path_factory.mktemp("model-configs"))


def _pairs_zip(folder: Path) -> bytes:
    """8 good pairs (captions.csv), one truncated image and one caption without an image."""
    lines = ["image,caption"]
    for i, caption in enumerate(CAPTIONS):
        write_image(folder / "upload" / f"img{i}.jpg", seed=i)
        lines.append(f"img{i}.jpg,{caption}")
    write_truncated_jpeg(folder / "upload" / "broken.jpg")
    lines += ["broken.jpg,a picture that was cut short", "missing.jpg,an image that is not there"]
    (folder / "upload" / "captions.csv").write_text("\n".join(lines) + "\n")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted((folder / "upload").rglob("*")):
            zf.write(path, path.relative_to(folder).as_posix())
    return buf.getvalue()


def _session(app_session) -> AppTest:
    """A fresh session on the Data page (``app_session``: the fixture)."""
    at = app_session("pages/data.py", timeout=TIMEOUT)
    assert not at.exception, [e.value for e in at.exception]
    return at


def _upload_pairs(app_session, tiny_model: str, tmp_path, **fields: str) -> AppTest:
    """The Data page with the pairs zip uploaded and the tiny random-weight model chosen; the
    text ``fields`` (by key) set, then Load pressed."""
    at = _session(app_session)
    at.file_uploader(key="data_pairs_upload").set_value(
        ("pairs.zip", _pairs_zip(tmp_path), "application/zip"))
    at.selectbox(key="data_pairs_model").set_value("other")
    at.run()
    at.text_input(key="data_pairs_arch").set_value(tiny_model)
    at.toggle(key="data_pairs_random").set_value(True)
    for key, value in fields.items():
        at.text_input(key=key).set_value(value)
    at.button(key="data_pairs_go").click().run()
    return at


def test_uploading_a_zip_of_pairs_adds_a_dataset_with_its_skip_report(tiny_model, tmp_path,
                                                                       app_session):
    at = _upload_pairs(app_session, tiny_model, tmp_path)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]

    ws = at.session_state["workspace"]
    assert set(ws.datasets) == {DEMO_DATASET, "pairs.zip"}
    act = ws.active
    assert act.dataset.name == "pairs.zip" and not act.simulated
    assert act.pairs.n == len(CAPTIONS) and act.pairs.dim == 32
    assert sorted(act.pairs.captions) == sorted(CAPTIONS)
    report = act.dataset.reports[act.model]
    assert report.n_kept == len(CAPTIONS) and report.n_skipped == 2
    # The page says what was kept and why the rest was skipped.
    assert any("kept 8 of 10 pairs" in s.value for s in at.success)
    assert any(e.label.startswith("What was skipped and why") for e in at.expander)
    reasons = [df.value for df in at.dataframe if "skipped because" in df.value.columns]
    assert reasons and set(reasons[0]["pairs"]) == {1}

    # Every page works on the new data (small N: k and the proof adapt).
    for page in ("pages/overview.py", "pages/explore.py", "pages/close_gap.py"):
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])
    k = at.slider(key="close_k")
    assert k.max == len(CAPTIONS) - 1
    before = next(m.value for m in at.metric if m.label == "ITR")
    k.set_value(2).run()
    assert not at.exception
    assert next(m.value for m in at.metric if m.label == "ITR") != before or k.value == 2


def test_embeddings_files_of_the_same_pairs_become_models_of_one_dataset(tmp_path, app_session):
    rng = np.random.default_rng(0)
    ids = [f"p{i}" for i in range(40)]
    files = []
    for model in ("model A", "model B"):
        pe = PairedEmbeddings(rng.normal(size=(40, 16)), rng.normal(size=(40, 16)), ids,
                              [f"caption {i}" for i in range(40)], model=model)
        files.append((f"{model.replace(' ', '_')}.npz", to_npz_bytes(pe), "application/octet-stream"))
    at = _session(app_session)
    at.file_uploader(key="data_emb_upload").set_value(files).run()
    at.button(key="data_emb_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    ws = at.session_state["workspace"]
    new = [d for d in ws.datasets.values() if d.name != DEMO_DATASET]
    assert len(new) == 1 and sorted(new[0].models) == ["model A", "model B"]
    assert ws.active.dataset is new[0]


def test_a_broken_file_shows_a_message_and_the_previous_data_stays(tmp_path, app_session):
    at = _session(app_session)
    before = at.session_state["workspace"].active
    at.file_uploader(key="data_emb_upload").set_value(
        ("broken.npz", b"this is not an npz file", "application/octet-stream")).run()
    at.button(key="data_emb_go").click().run()
    assert not at.exception
    assert at.error and at.error[0].value.startswith("Could not load broken.npz: not a readable")
    assert at.error[0].value.count("broken.npz") == 1, at.error[0].value  # said once
    assert "Traceback" not in at.error[0].value
    after = at.session_state["workspace"].active
    assert (after.dataset.name, after.model, after.key) == (before.dataset.name, before.model,
                                                            before.key)
    # A pairs upload with nothing usable in it: a message, the data stays.
    at.file_uploader(key="data_pairs_upload").set_value(("empty.zip", _empty_zip(), "application/zip"))
    at.button(key="data_pairs_go").click().run()
    assert not at.exception
    assert any("empty.zip" in e.value or "pair" in e.value for e in at.error)
    assert at.session_state["workspace"].active.key == before.key
    # Two archives at once: one message saying what to do, no progress bar left above it.
    at.file_uploader(key="data_pairs_upload").set_value(
        [("a.zip", _empty_zip(), "application/zip"), ("b.zip", _empty_zip(), "application/zip")])
    at.button(key="data_pairs_go").click().run()
    assert not at.exception
    assert [e.value.replace("\\", "") for e in at.error] == [  # as shown: escapes read as text
        "Could not load these pairs: 2 files uploaded together, 2 of them archives (a.zip, "
        "b.zip): upload one archive at a time (put all pairs in one .zip), or images with "
        "their captions file and no archive."]
    assert not at.get("progress") and at.session_state["workspace"].active.key == before.key


def _empty_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("readme.md", "no images here")
    return buf.getvalue()


def test_simulating_another_set_adds_a_simulated_dataset_with_three_models(app_session):
    at = _session(app_session)
    at.selectbox(key="data_sim_n").set_value(500)
    at.number_input(key="data_sim_seed").set_value(7)
    at.button(key="data_sim_go").click().run()
    assert not at.exception and not at.error
    ws = at.session_state["workspace"]
    act = ws.active
    assert act.dataset.name == "Simulated · 500 pairs · seed 7" and act.simulated
    assert len(act.dataset.models) == 3 and act.pairs.n == 500


def test_a_folder_of_parquet_shards_on_this_machine_loads_as_one_dataset(tmp_path, app_session):
    from gapviz.embeddings import save_embeddings

    folder = tmp_path / "shards"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        ids = [f"p{i * 30 + j}" for j in range(30)]
        save_embeddings(PairedEmbeddings(rng.normal(size=(30, 8)), rng.normal(size=(30, 8)), ids,
                                         [f"caption {j}" for j in ids], model="sharded model"),
                        folder / f"pairs-{i * 30:06d}-{i * 30 + 30:06d}.parquet")
    at = _session(app_session)
    at.text_input(key="data_emb_path").input(str(folder)).run()
    at.button(key="data_emb_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    active = at.session_state["workspace"].active
    assert active.pairs.n == 60 and active.model == "sharded model"
    assert active.pairs.ids[:2] == ["p0", "p1"] and active.pairs.ids[-1] == "p59"


def test_a_tokenizer_folder_that_is_not_there_is_a_message_and_nothing_is_added(tiny_model, tmp_path,
                                                                                 app_session):
    """The Data page's optional tokenizer folder reaches the model: a wrong one is said plainly."""
    at = _upload_pairs(app_session, tiny_model, tmp_path,
                       data_pairs_tokenizer=str(tmp_path / "no-tokenizer"))
    assert not at.exception, [e.value for e in at.exception]
    errors = " ".join(e.value for e in at.error)
    assert "tokenizer folder" in errors and "no-tokenizer" in errors, errors
    assert set(at.session_state["workspace"].datasets) == {DEMO_DATASET}
