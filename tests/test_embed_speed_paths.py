"""The embed pipeline's speed paths give what the plain paths give: batch cuts, preprocessing
split between the decode workers and the lanes, the patch embedding as a matrix product."""

import numpy as np
import pytest

from datafixtures import register_tiny_model, write_image
from gapviz import embed_pipeline
from gapviz.embed_pipeline import Encoder, PixelSteps, batch_bounds, patches_as_products
from gapviz.encode import ModelSpec, load_model

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_model(ModelSpec(register_tiny_model(tmp_path_factory.mktemp("configs")), "none"))


# ------------------------------------------------------------------------------ batch cuts

def test_the_last_batches_are_evened_out_over_the_lanes():
    cuts = batch_bounds(400, 32, lanes=2)
    assert len(cuts) == 13 and cuts[0] == (0, 32)  # as many batches, the first one whole
    assert cuts[-3:] == [(320, 352), (352, 376), (376, 400)]  # 24 + 24, not 32 + 16
    assert batch_bounds(17, 4, lanes=2)[-2:] == [(12, 14), (14, 17)]


@pytest.mark.parametrize("n, size, lanes", [(1, 4, 2), (5, 4, 2), (24, 4, 2), (9, 4, 1), (8, 4, 4),
                                            (100, 7, 3), (33, 32, 8)])
def test_batch_cuts_cover_every_row_once_in_order(n, size, lanes):
    cuts = batch_bounds(n, size, lanes)
    assert [row for start, stop in cuts for row in range(start, stop)] == list(range(n))
    assert len(cuts) == -(-n // size) and all(0 < stop - start <= size for start, stop in cuts)
    assert cuts[0] == (0, min(n, size))  # the self-check's sample comes from the first batch
    if lanes == 1:
        assert cuts == [(s, min(s + size, n)) for s in range(0, n, size)]


def test_no_rows_no_batches():
    assert batch_bounds(0, 32, 2) == []


# ------------------------------------------------------------------------------ preprocessing

def test_split_preprocessing_gives_the_same_floats_bit_for_bit(model, tmp_path):
    pixels = PixelSteps.split(model.preprocess)
    assert pixels is not None
    images = [embed_pipeline.open_rgb(write_image(tmp_path / f"{i}.png", "PNG", seed=i,
                                                  size=(20 + 13 * i, 50 - 7 * i)), 10**8)
              for i in range(5)]  # smaller and larger than the model's input, wide and tall
    batch = pixels.normalise(torch.stack([pixels.pixels(image) for image in images]))
    expected = torch.stack([model.preprocess(image) for image in images])
    assert batch.dtype == torch.float32 and torch.equal(batch, expected)


def test_preprocessing_that_does_not_split_runs_whole(model):
    from torchvision import transforms

    assert PixelSteps.split(lambda image: model.preprocess(image)) is None  # not a Compose
    no_normalise = transforms.Compose(model.preprocess.transforms[:-1])
    assert PixelSteps.split(no_normalise) is None
    assert PixelSteps.split(transforms.Compose([*model.preprocess.transforms[:-1],
                                                transforms.Lambda(lambda t: t * 2),
                                                model.preprocess.transforms[-1]])) is None

    class ScaledToTensor(transforms.ToTensor):  # a to-tensor of its own: the probe image shows it
        def __call__(self, pic):
            return super().__call__(pic) * 2

    steps = model.preprocess.transforms
    assert PixelSteps.split(transforms.Compose([*steps[:-2], ScaledToTensor(), steps[-1]])) is None


def test_pipeline_without_a_split_embeds_the_same(model, tmp_path, monkeypatch):
    paths = [str(write_image(tmp_path / f"{i}.png", "PNG", seed=i, size=(40 + 5 * i, 36)))
             for i in range(7)]
    split = embed_pipeline.embed_stream(model, paths, [], precision="fp32", image_batch=3, lanes=2)
    monkeypatch.setattr(PixelSteps, "split", classmethod(lambda cls, preprocess: None))
    whole = embed_pipeline.embed_stream(model, paths, [], precision="fp32", image_batch=3, lanes=2)
    np.testing.assert_array_equal(split.images, whole.images)


# ------------------------------------------------------------------------------ patch embedding

@pytest.mark.parametrize("size", [32, 35])  # 35: a remainder narrower than a patch is dropped
def test_patch_product_equals_the_convolution(size):
    conv = torch.nn.Conv2d(3, 16, kernel_size=8, stride=8)
    x = torch.randn(4, 3, size, size)
    with torch.inference_mode():
        expected = conv(x)
        patches_as_products(conv)
        assert "forward" in vars(conv)
        got = conv(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_other_convolutions_are_left_alone():
    for conv in (torch.nn.Conv2d(3, 8, kernel_size=3, stride=1, padding=1),
                 torch.nn.Conv2d(3, 8, kernel_size=4, stride=4, padding=1),
                 torch.nn.Conv2d(4, 8, kernel_size=4, stride=4, groups=2)):
        patches_as_products(conv)
        assert "forward" not in vars(conv)


def test_only_the_cpu_copy_uses_the_patch_product(model):
    bf16 = Encoder(model, "bf16").model
    assert "forward" in vars(bf16.visual.conv1)
    assert "forward" not in vars(model.model.visual.conv1)  # the fp32 reference is torch's own
    x = model.preprocess(embed_pipeline._probe_image())[None].repeat(3, 1, 1, 1)
    reference = Encoder(model, "fp32").images(x)
    assert np.sum(Encoder(model, "bf16").images(x) * reference, axis=1).min() > 0.999
