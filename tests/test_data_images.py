"""Safe image opening: formats, first GIF frame, alpha on white, bombs, broken files."""

import time

import numpy as np
import pytest
from PIL import Image

from datafixtures import (SVG, image_bytes, write_animated_gif, write_bomb_png, write_image,
                          write_transparent_png, write_truncated_jpeg)
from gapviz.data.defaults import MAX_IMAGE_PIXELS
from gapviz.data.images import (CORRUPT, ImageError, check_image, open_rgb, sniff_format,
                                too_large_reason, unsupported_reason)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_supported_formats_open_as_rgb(tmp_path, fmt):
    path = write_image(tmp_path / f"x.{fmt.lower()}", fmt, size=(30, 20))
    assert check_image(path) is None
    img = open_rgb(path)
    assert img.mode == "RGB" and img.size == (30, 20)


def test_format_is_read_from_content_not_extension(tmp_path):
    path = tmp_path / "photo.txt"
    path.write_bytes(image_bytes("PNG"))
    assert check_image(path) is None


def test_gif_gives_its_first_frame(tmp_path):
    img = open_rgb(write_animated_gif(tmp_path / "a.gif"))
    assert img.getpixel((8, 8)) == (255, 0, 0)


def test_transparency_is_laid_on_white(tmp_path):
    assert open_rgb(write_transparent_png(tmp_path / "t.png")).getpixel((5, 5)) == (255, 255, 255)
    # Palette image with a transparent index (tRNS), the GIF/PNG-8 way.
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 0] * 256)
    pal.save(tmp_path / "p.png", transparency=0)
    assert open_rgb(tmp_path / "p.png").getpixel((1, 1)) == (255, 255, 255)
    # Half-transparent red over white is pink.
    Image.new("RGBA", (4, 4), (255, 0, 0, 128)).save(tmp_path / "half.png")
    r, g, b = open_rgb(tmp_path / "half.png").getpixel((0, 0))
    assert r == 255 and 120 <= g <= 135 and g == b


def test_sixteen_bit_greyscale_keeps_its_levels(tmp_path):
    levels = np.array([[0, 16384], [32768, 65535]], dtype=np.uint16)
    Image.fromarray(levels).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    rgb = np.asarray(open_rgb(tmp_path / "deep.png"))
    assert rgb[..., 0].tolist() == [[0, 64], [128, 255]] and (rgb[..., 0] == rgb[..., 2]).all()


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 128, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert open_rgb(tmp_path / "rot.jpg").size == (20, 40)


def test_truncated_and_garbage_files_are_corrupt(tmp_path):
    assert check_image(write_truncated_jpeg(tmp_path / "t.jpg")) == CORRUPT
    (tmp_path / "g.jpg").write_bytes(b"\x00\x01" * 500)
    assert check_image(tmp_path / "g.jpg") == CORRUPT
    (tmp_path / "empty.png").write_bytes(b"")
    assert check_image(tmp_path / "empty.png") == CORRUPT
    with pytest.raises(ImageError) as err:
        open_rgb(tmp_path / "t.jpg")
    assert err.value.reason == CORRUPT


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = write_bomb_png(tmp_path / "bomb.png")
    assert path.stat().st_size < 100_000  # small file, 100 megapixels declared
    started = time.perf_counter()
    assert check_image(path) == too_large_reason(MAX_IMAGE_PIXELS)
    assert time.perf_counter() - started < 0.5  # decoding 100 MP would take far longer
    with pytest.raises(ImageError, match="too large"):
        open_rgb(path)


def test_pixel_limit_is_configurable(tmp_path):
    path = write_image(tmp_path / "x.png", "PNG", size=(100, 100))
    assert check_image(path, max_pixels=10_000) is None
    assert check_image(path, max_pixels=9_999) == too_large_reason(9_999)


@pytest.mark.parametrize("fmt, name", [("BMP", "BMP"), ("TIFF", "TIFF")])
def test_other_raster_formats_are_named(tmp_path, fmt, name):
    path = write_image(tmp_path / "x.img", fmt)
    assert check_image(path) == unsupported_reason(name)


def test_svg_heic_and_html_are_named(tmp_path):
    (tmp_path / "d.svg").write_bytes(SVG)
    assert check_image(tmp_path / "d.svg") == unsupported_reason("SVG")
    (tmp_path / "p.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64)
    assert check_image(tmp_path / "p.heic") == unsupported_reason("HEIC")
    (tmp_path / "dead.jpg").write_bytes(b"<!DOCTYPE html><html>gone</html>")
    assert check_image(tmp_path / "dead.jpg") == "not an image (HTML page)"


def test_missing_file(tmp_path):
    assert check_image(tmp_path / "nope.jpg").startswith("caption without image")


@pytest.mark.parametrize("head, expected", [
    (b"<svg xmlns='x'>", "SVG"),
    (b"\xef\xbb\xbf  <?xml version='1.0'?><svg>", "SVG"),
    (b"<html><head>", "HTML page"),
    (b"%PDF-1.7", "PDF"),
    (b"\x00\x00\x00\x1cftypavif", "AVIF"),
    (b"\x00\x01\x02\x03", None),
])
def test_sniff_format(head, expected):
    assert sniff_format(head) == expected


def test_square_tiles_fit_any_shape_and_never_enlarge():
    from gapviz.data.images import square_tile

    tall = Image.new("RGB", (100, 400), (255, 0, 0))
    tile = square_tile(tall, 200)
    assert tile.size == (200, 200)
    px = np.asarray(tile)
    assert (px[:, 75:125] == [255, 0, 0]).all() and (px[:, :70] == 255).all()  # 50 x 200, centred
    small = Image.new("RGB", (20, 10), (0, 0, 255))
    px = np.asarray(square_tile(small, 200))
    assert (px[95:105, 90:110] == [0, 0, 255]).all() and (px == [0, 0, 255]).all(axis=2).sum() == 200
