"""The embed pipeline: precision and its self-check, the overlap's order and completeness,
SigLIP's tokenizer path, and the GPU paths (skipped, saying so, without a GPU)."""

import json
import random
import threading
import time

import numpy as np
import pytest

from datafixtures import register_tiny_model, write_image
from gapviz import embed_pipeline
from gapviz.cache import EmbeddingCache
from gapviz.data.pairs import Pair
from gapviz.embed_pipeline import (CHECK_THRESHOLD, Encoder, PrecisionCheck, PrecisionError,
                                   check_precision, cpu_has_native_bf16, default_batch_sizes,
                                   embed_stream, resolve_precision)
from gapviz.embeddings import load_embeddings, save_embeddings
from gapviz.encode import (ModelLoadError, ModelSpec, _encode_text, cache_identity, embed_pairs,
                           embed_texts, load_model)

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

CAPTIONS = ["a dog on a red fence", "two cats play in the snow", "a plate of food with rice",
            "people walking down a busy street at night", "a man riding a wave", "a bird",
            "a very long caption about a small red boat on a lake " * 3, "snow"]

#: A SigLIP-shaped tiny model: no causal mask, the last position pooled, an HF tokenizer.
TINY_SIGLIP = "gapviz-test-tiny-siglip"
TINY_SIGLIP_CONFIG = {
    "embed_dim": 32,
    "custom_text": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 64, "hf_tokenizer_name": "timm/ViT-B-16-SigLIP",
                 "tokenizer_kwargs": {"clean": "canonicalize"}, "width": 64, "heads": 2,
                 "layers": 2, "no_causal_mask": True, "proj_bias": True, "pool_type": "last"},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model-configs")
    name = register_tiny_model(folder)
    (folder / f"{TINY_SIGLIP}.json").write_text(json.dumps(TINY_SIGLIP_CONFIG))
    open_clip.add_model_config(folder)
    return name


@pytest.fixture(scope="module")
def model(tiny):
    return load_model(ModelSpec(tiny, "none"))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline-pairs")
    out = []
    for i in range(23):
        path = write_image(root / f"{i:02d}.png", "PNG", seed=i, size=(40 + 3 * i, 36 + 2 * i))
        out.append(Pair(f"{i:02d}", str(path), CAPTIONS[i % len(CAPTIONS)] + f" number {i}"))
    return out


@pytest.fixture(scope="module")
def local_tokenizer(tmp_path_factory):
    """A Hugging Face tokenizer built here (word level, '</s>' appended, '<pad>' = 0), saved
    as a folder the way ``save_pretrained`` writes SigLIP's."""
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(CAPTIONS, trainers.WordLevelTrainer(
        special_tokens=["<pad>", "</s>", "<unk>"]))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    folder = tmp_path_factory.mktemp("siglip-tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(str(folder))
    return folder


def _fp32_reference(loaded, paths, captions):
    """Each image and caption embedded alone, in fp32: what any batching must reproduce."""
    images = np.stack([Encoder(loaded, "fp32").images(loaded.preprocess(
        embed_pipeline.open_rgb(p, 10**8))[None])[0] for p in paths])
    texts = np.stack([Encoder(loaded, "fp32").texts(loaded.tokenizer([c]))[0] for c in captions])
    return images, texts


# ------------------------------------------------------------------------------ precision

def test_resolve_precision(monkeypatch):
    assert resolve_precision("auto", "cpu") == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert resolve_precision(" FP32 ", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(PrecisionError, match="fp16 is for GPUs.*bf16"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(PrecisionError, match="unknown precision 'fp8'; choose one of auto, fp32"):
        resolve_precision("fp8", "cpu")
    assert resolve_precision("auto", "mps") == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", "cuda:0") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", "cuda") == "fp16"
    assert default_batch_sizes("cpu") == (32, 64)


def test_cpu_bf16_detection_reads_the_cpu_flags(monkeypatch, tmp_path):
    fake = tmp_path / "cpuinfo"
    real_open = open

    def fake_open(path, *args, **kwargs):
        return real_open(fake if path == "/proc/cpuinfo" else path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", fake_open)
    fake.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert cpu_has_native_bf16()
    fake.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f\n")
    assert not cpu_has_native_bf16()
    fake.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")  # Arm
    assert cpu_has_native_bf16()


def test_bf16_self_check_passes_and_is_recorded(model, pairs, tmp_path):
    images = torch.stack([model.preprocess(embed_pipeline.open_rgb(p.image_path, 10**8))
                          for p in pairs[:8]])
    check = check_precision(model, "bf16", images, model.tokenizer(CAPTIONS), requested="auto")
    assert (check.n_images, check.n_texts) == (8, len(CAPTIONS))
    assert check.passed and check.used == "bf16" and 0.999 <= check.min <= check.mean <= 1 + 1e-6
    assert check.min == min(check.image_min, check.text_min)
    assert "precision bf16" in check.summary() and "kept" in check.summary()
    # The bf16 copy is made once and kept with the loaded model; the fp32 weights are untouched.
    assert Encoder(model, "bf16").model is Encoder(model, "bf16").model
    assert next(model.model.parameters()).dtype == torch.float32

    result = embed_pairs(pairs, model, precision="bf16")
    meta = result.embeddings.meta
    assert meta["precision"] == "bf16" and meta["precision_requested"] == "bf16"
    assert meta["precision_check"]["passed"] and meta["precision_check"]["min_cosine"] >= 0.999
    assert result.notes == [result.precision_check.summary()]
    saved = save_embeddings(result.embeddings, tmp_path / "out.npz")
    loaded, _ = load_embeddings(saved)
    assert loaded.meta["precision"] == "bf16"
    assert loaded.meta["precision_check"]["n_images"] == 8
    # bf16 rows are close to fp32 rows, not equal to them.
    fp32 = embed_pairs(pairs, model, precision="fp32").embeddings
    cos = np.sum(fp32.image_embeddings * result.embeddings.image_embeddings, axis=1)
    assert cos.min() > 0.999 and not np.array_equal(fp32.image_embeddings,
                                                     result.embeddings.image_embeddings)
    assert fp32.meta["precision"] == "fp32" and fp32.meta["precision_check"] is None


@pytest.fixture()
def ill_conditioned(tiny):
    """A model whose text features cancel catastrophically: ln_final adds 1000 to every
    coordinate and the projection's columns sum to zero, so the output is the small signal
    left after subtracting ~1000s. fp32 keeps it (spacing 6e-5 at 1000); bf16 cannot (spacing 4)."""
    loaded = load_model(ModelSpec(tiny, "none"))
    with torch.no_grad():
        loaded.model.ln_final.bias += 1000.0
        proj = loaded.model.text_projection
        proj -= proj.mean(dim=0, keepdim=True)
    return loaded


def test_self_check_falls_back_to_fp32_and_says_so(ill_conditioned, pairs, caplog):
    fp32 = embed_pairs(pairs, ill_conditioned, precision="fp32").embeddings
    with caplog.at_level("WARNING", logger="gapviz.embed_pipeline"):
        result = embed_pairs(pairs, ill_conditioned, precision="bf16")
    check = result.precision_check
    assert not check.passed and check.text_min < CHECK_THRESHOLD and check.image_min >= 0.999
    assert check.used == "fp32"
    assert "below 0.999: fell back to fp32" in result.notes[0]
    assert "fell back to fp32" in caplog.text
    meta = result.embeddings.meta
    assert meta["precision"] == "fp32" and meta["precision_requested"] == "bf16"
    assert meta["precision_check"]["tried"] == "bf16" and not meta["precision_check"]["passed"]
    # The fallback is a real fp32 run: the same numbers as asking for fp32.
    np.testing.assert_allclose(result.embeddings.text_embeddings, fp32.text_embeddings, atol=1e-6)
    np.testing.assert_allclose(result.embeddings.image_embeddings, fp32.image_embeddings, atol=1e-6)


def test_a_stricter_threshold_is_honoured(model, pairs):
    result = embed_pairs(pairs[:4], model, precision="bf16", check_threshold=1.5)  # unreachable
    assert result.embeddings.meta["precision"] == "fp32"
    assert result.embeddings.meta["precision_check"]["threshold"] == 1.5


def test_precision_is_part_of_the_cache_key(tiny, model, pairs, tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    spec = ModelSpec(tiny, "none")
    assert cache_identity(spec, "fp32") == spec.identity()  # fp32 entries keep their old key
    assert cache_identity(spec, "bf16")["precision"] == "bf16"
    first = embed_pairs(pairs[:5], model, cache=cache, precision="bf16")
    other = embed_pairs(pairs[:5], model, cache=cache, precision="fp32")
    assert not other.from_cache and other.cache_key != first.cache_key
    again = embed_pairs(pairs[:5], spec, cache=cache, precision="bf16")
    assert again.from_cache and again.embeddings.meta["precision"] == "bf16"
    with pytest.raises(PrecisionError):
        embed_pairs(pairs[:5], spec, cache=cache, precision="fp16")


# ------------------------------------------------------------------------------ text length

def test_text_trim_equals_full_77_positions(model):
    tokens = model.tokenizer(CAPTIONS)
    assert tokens.shape[1] == 77
    with torch.inference_mode():
        full = model.model.encode_text(tokens)
        trimmed = _encode_text(model.model, tokens)
        bf16 = Encoder(model, "bf16").model
        full_bf16 = bf16.encode_text(tokens)
        trimmed_bf16 = _encode_text(bf16, tokens)
    np.testing.assert_allclose(trimmed.numpy(), full.numpy(), atol=1e-5, rtol=1e-5)
    # In bf16 the two differ only by rounding (different reduction sizes in attention).
    cos = torch.nn.functional.cosine_similarity(trimmed_bf16.float(), full_bf16.float())
    assert cos.min() > 0.999


def test_trim_counts_fewer_flops(model):
    from torch.utils.flop_counter import FlopCounterMode

    tokens = model.tokenizer(["a dog", "a cat on a mat"])
    with torch.inference_mode():
        with FlopCounterMode(display=False) as full:
            model.model.encode_text(tokens)
        with FlopCounterMode(display=False) as trimmed:
            _encode_text(model.model, tokens)
    assert trimmed.get_total_flops() * 8 < full.get_total_flops()  # 7 of 77 positions


# ------------------------------------------------------------------------------ the overlap

def test_pipeline_order_and_completeness_under_overlap(model, pairs, tmp_path, monkeypatch):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    paths = [p.image_path for p in pairs]
    paths.insert(9, str(broken))
    captions = [p.caption for p in pairs]
    captions.insert(9, "the caption of a broken image")
    expected_images, expected_texts = _fp32_reference(model, [p for p in paths if p != str(broken)],
                                                      captions)
    opened, calls = [], []
    real_open = embed_pipeline.open_rgb

    def slow_open(path, max_pixels):
        # Random delays make the decode workers finish out of order.
        time.sleep(random.Random(path).uniform(0.0, 0.03))
        opened.append(path)
        return real_open(path, max_pixels)

    monkeypatch.setattr(embed_pipeline, "open_rgb", slow_open)
    real_images, real_texts = Encoder.images, Encoder.texts
    monkeypatch.setattr(Encoder, "images",
                        lambda self, b: calls.append(("image", len(b))) or real_images(self, b))
    monkeypatch.setattr(Encoder, "texts",
                        lambda self, t: calls.append(("text", len(t))) or real_texts(self, t))
    progress = []
    caller = threading.get_ident()
    result = embed_stream(model, paths, captions, precision="fp32", image_batch=4, text_batch=3,
                          workers=3, lanes=2,
                          progress=lambda *a: progress.append((*a, threading.get_ident())))

    # Every image read exactly once; the broken one is refused from its header, before the
    # decode (which is where the resize's memory is reserved).
    assert sorted(opened) == sorted(p for p in paths if p != str(broken))
    assert result.failures == {9: "corrupt or truncated image"}
    assert np.isnan(result.images[9]).all()
    keep = [i for i in range(len(paths)) if i != 9]
    np.testing.assert_allclose(result.images[keep], expected_images, atol=1e-5)
    np.testing.assert_allclose(result.texts, expected_texts, atol=1e-5)
    # Each kept image and each caption went through the model exactly once.
    assert sum(n for kind, n in calls if kind == "image") == len(keep)
    assert sum(n for kind, n in calls if kind == "text") == len(captions)
    assert [kind for kind, _ in calls].count("image") == -(-len(paths) // 4)
    assert progress[-1] == (2 * len(paths), 2 * len(paths), "embedding pairs", caller)
    assert [d for d, *_ in progress] == sorted(d for d, *_ in progress)
    assert {thread for *_, thread in progress} == {caller}  # Streamlit needs the calling thread


def test_captions_fill_the_wait_for_decoding(model, pairs, monkeypatch):
    # Images after the first batch cannot be decoded until a caption batch has run (or 10 s
    # pass): a pipeline that waits on its decoders instead of running captions stalls, and
    # runs every image batch first.
    order, text_ran = [], threading.Event()
    paths = [p.image_path for p in pairs[:16]]
    real_open = embed_pipeline.open_rgb

    def gated_open(path, max_pixels):
        if paths.index(path) >= 4:
            text_ran.wait(10)
        return real_open(path, max_pixels)

    monkeypatch.setattr(embed_pipeline, "open_rgb", gated_open)
    real_image, real_texts = Encoder.images, Encoder.texts
    monkeypatch.setattr(Encoder, "images", lambda self, b: order.append("image") or real_image(self, b))
    monkeypatch.setattr(Encoder, "texts",
                        lambda self, t: order.append("text") or text_ran.set() or real_texts(self, t))
    for lanes in (1, 2):
        order.clear()
        text_ran.clear()
        started = time.perf_counter()
        embed_stream(model, paths, [p.caption for p in pairs[:16]], precision="fp32",
                     image_batch=4, text_batch=2, workers=1, lanes=lanes)
        assert order.count("image") == 4 and order.count("text") == 8
        second_image = [k for k, kind in enumerate(order) if kind == "image"][1]
        assert "text" in order[:second_image] and time.perf_counter() - started < 8


def test_an_error_in_a_lane_reaches_the_caller(model, pairs, monkeypatch):
    def broken(self, tokens):
        raise RuntimeError("out of memory in the text tower")

    monkeypatch.setattr(Encoder, "texts", broken)
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="out of memory in the text tower"):
        embed_stream(model, [p.image_path for p in pairs], [p.caption for p in pairs],
                     precision="fp32", image_batch=2, text_batch=2, lanes=2)
    assert time.perf_counter() - started < 30


def test_embed_pairs_keeps_pairs_aligned_at_every_precision(model, pairs):
    for precision in ("fp32", "bf16"):
        emb = embed_pairs(pairs, model, precision=precision, image_batch=5, text_batch=4).embeddings
        assert emb.ids == [p.id for p in pairs] and emb.captions == [p.caption for p in pairs]
        one = embed_pairs(pairs[7:9], model, precision="fp32").embeddings
        for row in (0, 1):
            assert float(emb.text_embeddings[7 + row] @ one.text_embeddings[row]) > 0.999
            assert float(emb.image_embeddings[7 + row] @ one.image_embeddings[row]) > 0.999


# ------------------------------------------------------------------------------ SigLIP

def test_siglip_tokenizer_offline_gives_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on this machine: the hub cannot be reached
    started = time.perf_counter()
    with pytest.raises(ModelLoadError) as err:
        load_model(ModelSpec("ViT-B-16-SigLIP", "none"), weights_dir=tmp_path)
    assert time.perf_counter() - started < 10
    message = str(err.value)
    for part in ("tokenizer of model ViT-B-16-SigLIP", "timm/ViT-B-16-SigLIP", "cannot be reached",
                 "hf download timm/ViT-B-16-SigLIP", "save_pretrained", "tokenizer='DIR'"):
        assert part in message
    in_app = err.value.in_app  # the Data page's wording: its own field, no flag
    assert "*Tokenizer folder*" in in_app and "--tokenizer" not in in_app


def test_missing_tokenizer_folder_is_named(tiny, tmp_path):
    with pytest.raises(ModelLoadError, match="tokenizer folder .*nowhere.* not found"):
        load_model(ModelSpec(TINY_SIGLIP, "none", tokenizer=str(tmp_path / "nowhere")))


def test_siglip_shaped_tower_keeps_its_padding(tiny, local_tokenizer):
    loaded = load_model(ModelSpec(TINY_SIGLIP, "none", tokenizer=str(local_tokenizer)))
    tokens = loaded.tokenizer(["a dog on a red fence", "snow"])
    assert tokens.shape == (2, 16) and tokens[1, 2:].eq(0).all()  # '</s>' then '<pad>'
    with torch.inference_mode():
        full = loaded.model.encode_text(tokens)
        kept = _encode_text(loaded.model, tokens)
        cut = loaded.model.encode_text(tokens[:, :8])  # what trimming would give: different
    np.testing.assert_array_equal(kept.numpy(), full.numpy())
    assert not np.allclose(cut.numpy(), full.numpy(), atol=1e-3)
    texts = embed_texts(loaded, CAPTIONS, precision="bf16")
    ref = embed_texts(loaded, CAPTIONS)
    assert texts.shape == (len(CAPTIONS), 32) and np.sum(texts * ref, axis=1).min() > 0.999
    assert ModelSpec(TINY_SIGLIP, "none", tokenizer=str(local_tokenizer)).identity()["tokenizer"]


def test_real_siglip_architecture_with_a_local_tokenizer(local_tokenizer, pairs):
    loaded = load_model(ModelSpec("ViT-B-16-SigLIP", "none", tokenizer=str(local_tokenizer)))
    result = embed_pairs(pairs[:3], loaded, precision="auto")
    assert result.embeddings.dim == 768 and result.embeddings.n == 3
    assert loaded.tokenizer(["a dog"]).shape == (1, 64)  # SigLIP's full context, no trim


# ------------------------------------------------------------------------------ GPU paths

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA GPU here: the pinned-memory + autocast path is "
                                       "not exercised on this machine")
needs_mps = pytest.mark.skipif(not (getattr(torch.backends, "mps", None) and
                                    torch.backends.mps.is_available()),
                               reason="no Apple MPS device here: the fp16 autocast path is not "
                                      "exercised on this machine")


@needs_cuda
def test_cuda_pinned_autocast_matches_fp32(tiny, pairs):
    loaded = load_model(ModelSpec(tiny, "none"), device="cuda")
    encoder = Encoder(loaded, resolve_precision("auto", "cuda"))
    assert encoder.pin and encoder.autocast and encoder.model is loaded.model
    result = embed_pairs(pairs, loaded, precision="auto")
    assert result.precision_check.passed and result.embeddings.meta["device"] == "cuda"
    ref = embed_pairs(pairs, load_model(ModelSpec(tiny, "none"), device="cpu"), precision="fp32")
    cos = np.sum(result.embeddings.image_embeddings * ref.embeddings.image_embeddings, axis=1)
    assert cos.min() > 0.999


@needs_mps
def test_mps_autocast_matches_fp32(tiny, pairs):
    loaded = load_model(ModelSpec(tiny, "none"), device="mps")
    result = embed_pairs(pairs, loaded, precision="auto")
    assert result.embeddings.meta["precision"] in ("fp16", "fp32")
    assert result.precision_check is not None


def test_precision_check_summary_of_a_fallback():
    check = PrecisionCheck("auto", "bf16", 2, 2, 0.9995, 0.9997, 0.98, 0.99)
    assert not check.passed and check.used == "fp32" and check.min == 0.98
    assert check.mean == pytest.approx((0.9997 * 2 + 0.99 * 2) / 4)
    assert check.summary().endswith("below 0.999: fell back to fp32")
    assert check.as_meta()["used"] == "fp32"


# ------------------------------------------------------------------------------ the command

def test_embed_command_precision(tiny, pairs, tmp_path, capsys):
    from gapviz.cli.embed import main

    folder = tmp_path / "up"
    folder.mkdir()
    for p in pairs[:6]:
        (folder / f"{p.id}.png").write_bytes(open(p.image_path, "rb").read())
        (folder / f"{p.id}.txt").write_text(p.caption)
    common = [str(folder), "--model", tiny, "--pretrained", "none", "--no-cache"]
    assert main(common + ["--out", str(tmp_path / "bf16.npz"), "--precision", "bf16"]) == 0
    err = capsys.readouterr().err
    assert "precision bf16: cosine to fp32 on 6 images and 6 captions" in err
    emb, _ = load_embeddings(tmp_path / "bf16.npz")
    assert emb.meta["precision"] == "bf16" and emb.meta["precision_check"]["passed"]
    assert main(common + ["--out", str(tmp_path / "fp32.npz"), "--precision", "fp32"]) == 0
    assert load_embeddings(tmp_path / "fp32.npz")[0].meta["precision"] == "fp32"
    assert main(common + ["--out", str(tmp_path / "fp16.npz"), "--precision", "fp16"]) == 2
    assert "fp16 is for GPUs" in capsys.readouterr().err


def test_the_command_line_takes_a_local_tokenizer_folder(tiny, local_tokenizer, tmp_path, capsys):
    """``gapviz embed ... --tokenizer DIR``: the texts equal the library's with that folder."""
    from datafixtures import make_txt_folder
    from gapviz.cli.embed import main

    captions = make_txt_folder(tmp_path / "up")
    out = tmp_path / "siglip.npz"
    rc = main([str(tmp_path / "up"), "--out", str(out), "--model", TINY_SIGLIP, "--pretrained",
               "none", "--tokenizer", str(local_tokenizer), "--no-cache", "--precision", "fp32"])
    assert rc == 0, capsys.readouterr().err
    pairs, _ = load_embeddings(out)
    assert dict(zip(pairs.ids, pairs.captions)) == captions
    loaded = load_model(ModelSpec(TINY_SIGLIP, "none", tokenizer=str(local_tokenizer)))
    np.testing.assert_allclose(pairs.text_embeddings, embed_texts(loaded, pairs.captions),
                               atol=1e-5)
    rc = main([str(tmp_path / "up"), "--out", str(tmp_path / "x.npz"), "--model", TINY_SIGLIP,
               "--pretrained", "none", "--tokenizer", str(tmp_path / "nowhere"), "--no-cache"])
    err = capsys.readouterr().err
    assert rc == 2 and "tokenizer folder" in err and "nowhere" in err and "Traceback" not in err
