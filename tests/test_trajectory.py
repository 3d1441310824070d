"""The gap over training, for real and offline: a tiny open_clip model is trained here on CPU
with open_clip's contrastive loss (``ClipLoss``) on the 40 real image-caption pairs of
``assets/sample_pairs.zip``, saving open_clip ``epoch_N.pt`` checkpoints; gapviz then reads the
series. Nothing here is a pretrained trajectory.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from gapviz.cache import EmbeddingCache  # noqa: E402
from gapviz.cli import main  # noqa: E402
from gapviz.data import load_folder  # noqa: E402
from gapviz.encode import ModelSpec, embed_pairs, load_model  # noqa: E402
from gapviz.embeddings import save_embeddings  # noqa: E402
from gapviz.trajectory import (SharedBasis, moved_most, series_from_models,  # noqa: E402
                               trajectory)

ASSETS = Path(__file__).resolve().parents[1] / "assets"
#: A tiny CLIP: 32 px ViT (4 x 4 patches) and a 16-token text tower, both width 64, 2 layers.
TINY_CONFIG = {"embed_dim": 32,
               "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8,
                              "head_width": 32},
               "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2,
                            "layers": 2}}
STEPS, EVERY, BATCH = 240, 40, 16  # six checkpoints: epoch_1.pt .. epoch_6.pt
RESAMPLES = 50


def train_tiny(root: Path, steps: int = STEPS, every: int = EVERY) -> tuple[Path, list[Path], list]:
    """Train the tiny model on the sample pairs under ``root``, saving ``epoch_N.pt`` every
    ``every`` steps; returns (config file, checkpoints, pairs)."""
    config = root / "gapviz-trajectory-tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(config)
    pairs, _ = load_folder(ASSETS / "sample_pairs.zip", cache_dir=root / "cache")
    assert len(pairs) == 40
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: more threads only wait for each other
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model, _, preprocess = open_clip.create_model_and_transforms("gapviz-trajectory-tiny")
            tokenizer = open_clip.get_tokenizer("gapviz-trajectory-tiny")
            from PIL import Image

            images = torch.stack([preprocess(Image.open(p.image_path).convert("RGB")) for p in pairs])
            texts = tokenizer([p.caption for p in pairs])
            # The token table (49408 x 64) is frozen: updating it with Adam would cost most of
            # the time, and the captions' few tokens train well through the transformer.
            model.token_embedding.weight.requires_grad_(False)
            optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                          lr=1e-3, weight_decay=0.0)
            loss_fn = open_clip.ClipLoss()
            model.train()
            checkpoints = []
            for step in range(1, steps + 1):
                batch = torch.randperm(len(pairs))[:BATCH]
                image_features, text_features, scale = model(images[batch], texts[batch])[:3]
                loss = loss_fn(image_features, text_features, scale)  # scale: exp(logit_scale)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                if step % every == 0:
                    path = root / "checkpoints" / f"epoch_{step // every}.pt"
                    path.parent.mkdir(exist_ok=True)
                    # open_clip's training script's layout
                    torch.save({"epoch": step // every, "name": "gapviz-trajectory-tiny",
                                "state_dict": model.state_dict()}, path)
                    checkpoints.append(path)
    finally:
        torch.set_num_threads(threads)
    return config, checkpoints, pairs


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The trained series: (config, checkpoints, pairs, cache folder)."""
    root = tmp_path_factory.mktemp("trajectory")
    config, checkpoints, pairs = train_tiny(root)
    return config, checkpoints, pairs, root / "cache"


def _stored_scale(path: Path) -> float:
    """exp of the stored (log) logit_scale, in float64."""
    return math.exp(float(torch.load(path, map_location="cpu")["state_dict"]["logit_scale"]))


def test_gapviz_loads_a_checkpoint_with_its_config_file(run):
    config, checkpoints, pairs, _ = run
    spec = ModelSpec(str(config), str(checkpoints[-1]))
    # registered under its stem and content hash: it replaces no other architecture (the test
    # suite's other tiny model shares the stem but not the config)
    assert spec.architecture.startswith("gapviz-trajectory-tiny-") and len(spec.architecture) == 31
    assert spec.label() == "gapviz-trajectory-tiny (epoch_6.pt)"
    assert "config" in spec.identity()  # the config counts by content in the cache key
    loaded = load_model(spec, device="cpu")
    stored = torch.load(checkpoints[-1], map_location="cpu")["state_dict"]
    for name, value in loaded.model.state_dict().items():
        assert torch.equal(value, stored[name]), name


def test_a_series_of_checkpoints_reads_measures_and_logits(run, monkeypatch):
    config, checkpoints, pairs, cache_dir = run
    cache = EmbeddingCache(cache_dir)
    t = trajectory([str(c) for c in checkpoints], pairs, arch=str(config), cache=cache,
                   n_resamples=RESAMPLES)
    assert [s.label for s in t.steps] == [f"epoch_{i}.pt" for i in range(1, 7)]
    assert [s.step for s in t.steps] == list(range(1, 7))
    assert not any(s.from_cache for s in t.steps)
    # the temperature reported is the checkpoint's own
    for s, path in zip(t.steps, checkpoints):
        assert s.logits.scale == pytest.approx(_stored_scale(path), rel=1e-12)
        assert s.logits.bias is None  # CLIP has no logit_bias
        assert "epoch_" in s.logits.source
    # training raised the temperature's inverse (the scale) from its initial 1/0.07
    scales = [s.logits.scale for s in t.steps]
    assert scales[-1] > scales[0] > 1 / 0.07
    # the measures per step are those of embedding that checkpoint alone
    from gapviz.anatomy import relative_modality_gap
    from gapviz.measures import measure_gap

    for s, path, e in zip(t.steps, checkpoints, t.embeddings):
        alone = embed_pairs(pairs, ModelSpec(str(config), str(path)), precision="fp32").embeddings
        np.testing.assert_array_equal(alone.image_embeddings, e.image_embeddings)
        np.testing.assert_array_equal(alone.text_embeddings, e.text_embeddings)
        metrics = measure_gap(alone.image_embeddings, alone.text_embeddings).metrics
        for k, v in metrics.items():
            assert s.metrics[k] == v or (math.isnan(v) and math.isnan(s.metrics[k])), k
        assert s.metrics["RMG"] == relative_modality_gap(alone.image_embeddings, alone.text_embeddings)
        lo, hi = s.intervals["RMG"]
        assert lo <= hi
        # the margin, as defined: scale * (mean paired cos - mean cos over i != j)
        X = alone.image_embeddings / np.linalg.norm(alone.image_embeddings, axis=1, keepdims=True)
        Y = alone.text_embeddings / np.linalg.norm(alone.text_embeddings, axis=1, keepdims=True)
        S = X.astype(np.float64) @ Y.astype(np.float64).T
        off = S[~np.eye(len(S), dtype=bool)].mean()
        assert s.margin == pytest.approx(s.logits.scale * (np.diag(S).mean() - off), rel=1e-5)
    # one basis for all steps, fitted on the last; trails for every pair
    assert t.images_xy.shape == (6, 40, 2) and t.texts_xy.shape == (6, 40, 2)
    refit = SharedBasis(2).fit(t.embeddings[-1].image_embeddings, t.embeddings[-1].text_embeddings)
    np.testing.assert_allclose(refit.transform(t.embeddings[-1].image_embeddings,
                                               t.embeddings[-1].text_embeddings)[0], t.images_xy[-1])
    assert len(t.moved) == 10 and t.moved[0]["displacement"] >= t.moved[-1]["displacement"]
    payload = json.loads(json.dumps(t.to_dict()))
    assert payload["n_steps"] == 6 and payload["steps"][0]["logit_scale"] == scales[0]

    # a rerun hits the cache: nothing is embedded, no model is even loaded
    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded on a rerun")

    monkeypatch.setattr("gapviz.encode.load_model", no_model)
    again = trajectory([str(c) for c in checkpoints], pairs, arch=str(config), cache=cache,
                       n_resamples=RESAMPLES)
    assert all(s.from_cache for s in again.steps)
    assert [s.metrics for s in again.steps] == [s.metrics for s in t.steps]
    assert [s.logits.scale for s in again.steps] == scales


def test_cli_prints_the_same_numbers(run, capsys):
    config, checkpoints, _, cache_dir = run
    args = ["trajectory", str(ASSETS / "sample_pairs.zip"), "--arch", str(config), "--models",
            *map(str, checkpoints), "--cache-dir", str(cache_dir.parent / "cli-cache"),
            "--resamples", str(RESAMPLES), "--quiet"]
    assert main([*args, "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    steps = payload["steps"]
    assert [s["label"] for s in steps] == [p.name for p in checkpoints]
    for s, path in zip(steps, checkpoints):
        assert s["logit_scale"] == pytest.approx(_stored_scale(path), rel=1e-12)
        assert s["provenance"]["pairs_scored"] == 40
        assert len(s["intervals"]["RMG"]) == 2
    assert not steps[0]["from_cache"]
    assert main([*args, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 6 and rows[0]["from_cache"] == "True"  # the json run cached them
    assert float(rows[-1]["RMG"]) == pytest.approx(steps[-1]["metrics"]["RMG"], rel=1e-12)
    assert float(rows[-1]["logit_scale"]) == pytest.approx(steps[-1]["logit_scale"])
    assert main([*args, "--format", "table"]) == 0
    out = capsys.readouterr().out
    assert "epoch_6.pt" in out and "logit_scale" in out and "how each step was obtained" in out


def test_a_series_of_embeddings_files(run, tmp_path, capsys):
    config, checkpoints, pairs, cache_dir = run
    files = []
    for path in checkpoints[:3]:
        e = embed_pairs(pairs, ModelSpec(str(config), str(path)), cache=EmbeddingCache(cache_dir),
                        precision="fp32").embeddings
        files.append(str(save_embeddings(e, tmp_path / f"{path.stem}.npz")))
    t = trajectory(files, n_resamples=RESAMPLES)
    assert [s.kind for s in t.steps] == ["embeddings"] * 3
    assert all(s.logits.scale is None and s.margin is None for s in t.steps)
    assert main(["trajectory", "--models", *files, "--format", "json", "--quiet",
                 "--resamples", str(RESAMPLES)]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["steps"][2]["metrics"]["RMG"] == t.steps[2].metrics["RMG"]


def test_series_validation():
    with pytest.raises(ValueError, match="at least 2"):
        series_from_models(["a.npz"])
    with pytest.raises(ValueError, match="architecture"):
        series_from_models(["laion400m_e31", "laion400m_e32"])
    with pytest.raises(ValueError, match="not found"):
        series_from_models(["/nowhere/epoch_1.pt", "/nowhere/epoch_2.pt"], arch="ViT-B-32")
    items = series_from_models(["laion400m_e31", "laion400m_e32"], arch="ViT-B-32")
    assert [i.kind for i in items] == ["pretrained", "pretrained"]


def test_moved_most_and_shared_basis_on_a_hand_made_case():
    from gapviz.embeddings import PairedEmbeddings

    X0 = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    Y0 = X0.copy()
    X1 = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])  # pair 0's image turns by 90 degrees
    steps = [PairedEmbeddings(X0, Y0, ids=["a", "b", "c"]), PairedEmbeddings(X1, Y0, ids=["a", "b", "c"])]
    moved = moved_most(steps, top=2)
    assert moved[0]["id"] == "a"
    assert moved[0]["displacement"] == pytest.approx(math.sqrt(2))
    assert moved[0]["paired_cos_first"] == pytest.approx(1.0)
    assert moved[0]["paired_cos_last"] == pytest.approx(0.0)
    assert moved[1]["displacement"] == 0.0
    basis = SharedBasis(1).fit(X1, Y0)
    a, b = basis.transform(X0, Y0)
    assert a.shape == (3, 1) and b.shape == (3, 1)
    with pytest.raises(ValueError, match="not fitted"):
        SharedBasis().transform(X0, Y0)


def test_cli_errors_are_one_line(run, capsys, tmp_path):
    config, checkpoints, _, _ = run
    models = [str(c) for c in checkpoints[:2]]
    assert main(["trajectory", "--arch", str(config), "--models", *models]) == 2
    assert "give SOURCE" in capsys.readouterr().err
    assert main(["trajectory", str(ASSETS / "sample_pairs.zip"), "--models", *models]) == 2
    assert "--arch" in capsys.readouterr().err
    assert main(["trajectory", str(ASSETS / "sample_pairs.zip"), "--arch",
                 str(tmp_path / "missing.json"), "--models", *models, "-q",
                 "--cache-dir", str(tmp_path / "c")]) == 2
    assert "model config file" in capsys.readouterr().err


def test_weights_that_cannot_be_had_are_said_not_raised(monkeypatch):
    from gapviz import encode
    from gapviz.trajectory import read_logit_params

    def offline(*args, **kwargs):
        raise encode.ModelLoadError("offline")

    monkeypatch.setattr(encode, "load_model", offline)
    params = read_logit_params(ModelSpec("hf-hub:nobody/nothing"))
    assert params.scale is None and "not available" in params.source


def test_the_series_after_a_method(run, capsys):
    """Each step closed under the method's own protocol: transductive for spectral, held-out
    for Procrustes (it reads the pairing), and measured as the runner's output alone."""
    from gapviz.measures import measure_gap
    from gapviz.runs import RunData, Runner, planned_spec
    from gapviz.trajectory import close_series

    config, checkpoints, pairs, cache_dir = run
    raw = trajectory([str(c) for c in checkpoints[:3]], pairs, arch=str(config),
                     cache=EmbeddingCache(cache_dir), n_resamples=RESAMPLES)
    for method, protocol in (("spectral", "transductive"), ("procrustes", "held-out")):
        t = close_series(raw, method)
        assert [r["protocol"] for r in t.closed_runs] == [protocol] * 3
        assert t.closed.labels == raw.labels
        assert all(s.logits.scale is None and s.margin is None for s in t.closed.steps)
        e = raw.embeddings[1]
        spec, _ = planned_spec(method, None, e.n, e.dim)
        alone = Runner().run(spec, RunData.of(e))
        assert t.closed.steps[1].metrics["ITR"] == measure_gap(alone.images, alone.texts).metrics["ITR"]
        assert t.closed.images_xy.shape == (3, 40, 2)
    assert main(["trajectory", str(ASSETS / "sample_pairs.zip"), "--arch", str(config),
                 "--models", *map(str, checkpoints[:3]), "--cache-dir", str(cache_dir), "-q",
                 "--resamples", str(RESAMPLES), "--method", "center", "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["method"] == "center"
    assert [r["protocol"] for r in payload["closed"]["runs"]] == ["transductive"] * 3
    assert len(payload["closed"]["steps"]) == 3
