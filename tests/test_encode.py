"""Embedding with real open_clip models (random weights): loading, batching, the disk cache."""

import os
import shutil
import time

import numpy as np
import pytest

from datafixtures import OTHER_TINY_MODEL, make_txt_folder, register_tiny_model, write_image
from gapviz.cache import EmbeddingCache
from gapviz.data import load_folder
from gapviz.data.pairs import Pair
from gapviz.encode import (KNOWN_MODELS, ModelLoadError, ModelSpec, _encode_text, embed_images,
                           embed_pairs, embed_texts, load_model, pick_device)

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return register_tiny_model(tmp_path_factory.mktemp("model-configs"))


@pytest.fixture(scope="module")
def model(tiny):
    return load_model(ModelSpec(tiny, "none"))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    make_txt_folder(root / "up")
    kept, _ = load_folder(root / "up")
    return kept


def test_spec_normalises_random_weights():
    for tag in (None, "none", "None", "random", "  "):
        assert ModelSpec("ViT-B-32", tag).random_weights
    assert ModelSpec("ViT-B-32", "openai").label() == "ViT-B-32 (openai)"
    assert ModelSpec("ViT-B-32", "none", seed=3).label() == "ViT-B-32 (random weights, seed 3)"
    assert ModelSpec("ViT-B-32", "none").identity() != ModelSpec("ViT-B-32", "none", seed=1).identity()
    assert {m.name for m in KNOWN_MODELS} >= {"ViT-B-32-quickgelu", "ViT-L-14-quickgelu"}
    assert all(m.name in open_clip.list_models() and m.pretrained in
               open_clip.list_pretrained_tags_by_model(m.name) for m in KNOWN_MODELS)


def test_pick_device():
    assert pick_device() == ("cuda" if torch.cuda.is_available() else
                             "mps" if torch.backends.mps.is_available() else "cpu")
    assert pick_device("cpu") == "cpu"


def test_images_and_texts_are_normalised_float32(model, pairs):
    calls = []
    images, failures = embed_images(model, [p.image_path for p in pairs], batch_size=4,
                                    progress=lambda *a: calls.append(a))
    texts = embed_texts(model, [p.caption for p in pairs], batch_size=4)
    assert images.shape == texts.shape == (len(pairs), 32) and not failures
    assert images.dtype == texts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)
    assert calls[-1] == (len(pairs), len(pairs), "embedding images")
    # Batching does not change the numbers.
    one_by_one, _ = embed_images(model, [p.image_path for p in pairs], batch_size=1)
    np.testing.assert_allclose(one_by_one, images, atol=1e-5)


def test_text_padding_trim_is_exact_and_order_is_kept(model):
    captions = ["a", "a dog", "a very long caption " * 8, "two words", "x " * 90]
    tokens = model.tokenizer(captions)
    with torch.inference_mode():
        full = model.model.encode_text(tokens)
        trimmed = _encode_text(model.model, tokens)
        short = _encode_text(model.model, tokens[:2])  # only 4 columns of 77 are used
    np.testing.assert_allclose(trimmed.numpy(), full.numpy(), atol=1e-5)
    np.testing.assert_allclose(short.numpy(), full[:2].numpy(), atol=1e-5)
    batched = embed_texts(model, captions, batch_size=2)  # sorted by length inside, then unsorted
    expected = torch.nn.functional.normalize(full, dim=-1).numpy()
    np.testing.assert_allclose(batched, expected, atol=1e-5)


def test_random_weights_are_seeded(tiny, model, pairs):
    again = load_model(ModelSpec(tiny, "none"))
    other = load_model(ModelSpec(tiny, "none", seed=1))
    caps = [p.caption for p in pairs]
    np.testing.assert_array_equal(embed_texts(again, caps), embed_texts(model, caps))
    assert not np.allclose(embed_texts(other, caps), embed_texts(model, caps))


def test_random_encoder_shows_a_modality_gap(model, pairs):
    # Liang et al. 2022: even random encoders put each modality in its own narrow cone.
    images, _ = embed_images(model, [p.image_path for p in pairs])
    texts = embed_texts(model, [p.caption for p in pairs])
    within = min((images @ images.T).mean(), (texts @ texts.T).mean())
    across = (images @ texts.T).mean()
    assert within > across + 0.2


def test_local_checkpoint_gives_the_same_model(tiny, model, pairs, tmp_path):
    ckpt = tmp_path / "tiny.pt"
    torch.save(model.model.state_dict(), ckpt)
    loaded = load_model(ModelSpec(tiny, str(ckpt)))
    caps = [p.caption for p in pairs]
    np.testing.assert_allclose(embed_texts(loaded, caps), embed_texts(model, caps), atol=1e-6)
    assert ModelSpec(tiny, str(ckpt)).label() == f"{tiny} (tiny.pt)"
    with pytest.raises(ModelLoadError, match="cannot load checkpoint"):
        load_model(ModelSpec(OTHER_TINY_MODEL, str(ckpt)))


def test_clear_errors_for_names_tags_paths(tmp_path):
    with pytest.raises(ModelLoadError, match=r"unknown open_clip model 'ViT-B-33'.*Did you mean.*ViT-B-32"):
        load_model(ModelSpec("ViT-B-33", "none"))
    with pytest.raises(ModelLoadError, match=r"not a pretrained tag of ViT-B-32; its tags are.*openai"):
        load_model(ModelSpec("ViT-B-32", "opneai"))
    with pytest.raises(ModelLoadError, match="checkpoint file .* not found"):
        load_model(ModelSpec("ViT-B-32", str(tmp_path / "missing.pt")))


def test_offline_message_names_model_place_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # behave as on a machine without network
    started = time.perf_counter()
    with pytest.raises(ModelLoadError) as err:
        load_model(ModelSpec("ViT-B-32-quickgelu", "openai"), weights_dir=tmp_path)
    assert time.perf_counter() - started < 10  # fails fast, no minute of retries
    message = str(err.value)
    for part in ("ViT-B-32-quickgelu", "'openai'", "cannot be reached", "Hugging Face cache",
                 "timm/vit_base_patch32_clip_224.openai", "--pretrained /path/to/", "--pretrained none"):
        assert part in message
    # the app's Data page shows the same advice with its own controls, no command-line flags
    in_app = err.value.in_app
    assert "cannot be reached" in in_app and "--" not in in_app
    assert "*Random weights*" in in_app and "*Weights*" in in_app


def test_vit_b_32_random_weights_builds_and_embeds(pairs):
    big = load_model(ModelSpec("ViT-B-32", "none"))
    images, failures = embed_images(big, [p.image_path for p in pairs[:2]])
    texts = embed_texts(big, [p.caption for p in pairs[:2]])
    assert images.shape == texts.shape == (2, 512) and not failures


def test_embed_pairs_and_cache_hit(tiny, model, pairs, tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    first = embed_pairs(pairs, model, cache=cache, meta={"source": "test"})
    emb = first.embeddings
    assert not first.from_cache and emb.n == len(pairs) and emb.dim == 32
    assert emb.ids == [p.id for p in pairs] and emb.captions == [p.caption for p in pairs]
    assert emb.image_paths == [p.image_path for p in pairs]
    assert emb.meta["source"] == "test" and emb.meta["random_weights"] and not emb.meta["simulated"]
    # Second run: a spec is enough, no model is built.
    second = embed_pairs(pairs, ModelSpec(tiny, "none"), cache=cache)
    assert second.from_cache and second.cache_key == first.cache_key
    np.testing.assert_array_equal(second.embeddings.image_embeddings, emb.image_embeddings)
    np.testing.assert_array_equal(second.embeddings.text_embeddings, emb.text_embeddings)
    assert [p.name for p in cache.folder.iterdir()] == [f"{first.cache_key}.npz"]  # no temp files


def test_cache_key_sees_content_not_paths(tiny, pairs, tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    spec = ModelSpec(tiny, "none")
    key = cache.key(pairs, spec.identity())
    moved = tmp_path / "moved"
    shutil.copytree(os.path.dirname(pairs[0].image_path), moved)
    root = os.path.dirname(pairs[0].image_path)
    relocated = [Pair(p.id, p.image_path.replace(root, str(moved)), p.caption) for p in pairs]
    assert cache.key(relocated, spec.identity()) == key
    recaptioned = [Pair(p.id, p.image_path, p.caption + "!") if i == 0 else p for i, p in enumerate(pairs)]
    assert cache.key(recaptioned, spec.identity()) != key
    first = moved / pairs[0].id
    first.write_bytes(first.read_bytes() + b"\0")  # one byte more in one image
    assert cache.key(relocated, spec.identity()) != key
    assert cache.key(pairs, ModelSpec(tiny, "none", seed=2).identity()) != key
    assert cache.key(pairs, ModelSpec("ViT-B-32", "none").identity()) != key


def test_corrupt_cache_entry_is_a_miss_and_replaced(model, pairs, tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    first = embed_pairs(pairs, model, cache=cache)
    path = cache.path(first.cache_key)
    path.write_bytes(path.read_bytes()[:100])  # as if the disk filled up mid-write elsewhere
    again = embed_pairs(pairs, model, cache=cache)
    assert not again.from_cache
    assert embed_pairs(pairs, model, cache=cache).from_cache
    np.testing.assert_array_equal(again.embeddings.text_embeddings, first.embeddings.text_embeddings)


def test_image_broken_after_loading_is_skipped_and_reported(model, pairs, tmp_path):
    broken_path = tmp_path / "late.jpg"
    write_image(broken_path)
    late = list(pairs[:3]) + [Pair("late", str(broken_path), "breaks after the check")]
    broken_path.write_bytes(b"now corrupt")
    result = embed_pairs(late, model)
    assert result.embeddings.ids == [p.id for p in pairs[:3]]
    assert result.skipped == {"corrupt or truncated image": ["late"]}


def test_embed_images_and_texts_take_a_precision(model, pairs):
    paths, captions = [p.image_path for p in pairs], [p.caption for p in pairs]
    fp32_images, _ = embed_images(model, paths)
    bf16_images, failures = embed_images(model, paths, precision="bf16")
    assert not failures and bf16_images.dtype == np.float32
    assert np.sum(fp32_images * bf16_images, axis=1).min() > 0.999
    assert not np.array_equal(fp32_images, bf16_images)  # bf16 really ran
    bf16_texts = embed_texts(model, captions, precision="bf16")
    assert np.sum(embed_texts(model, captions) * bf16_texts, axis=1).min() > 0.999
    with pytest.raises(ValueError, match="check_sample must be at least 1"):
        embed_pairs(pairs, model, precision="bf16", check_sample=0)


def test_the_app_shows_a_load_errors_own_advice_not_the_command_lines():
    """An error carrying ``in_app`` (the same advice naming the Data page's controls) is shown
    so on a page; other errors as their message."""
    from streamlit.testing.v1 import AppTest

    def script():
        from gapviz.encode import ModelLoadError
        from ui.components import guard

        with guard("embed these pairs"):
            raise ModelLoadError("no weights: --pretrained none", "no weights: turn on *Random weights*")
        with guard("load x.npz"):
            raise ValueError("x.npz: not a readable .npz")

    at = AppTest.from_function(script).run()
    assert not at.exception
    first, second = (e.value for e in at.error)
    assert first.startswith("Could not embed these pairs: ") and "Random weights" in first
    assert "--pretrained" not in first
    assert second == "Could not load x.npz: not a readable .npz"
