"""Build ``assets/sample_pairs.zip``: 40 small image-caption pairs to try the upload path.

Each image is a coloured shape drawn with Pillow on a plain background and its caption says
what is drawn ("a small red circle on a white background"), so the pairs are real (the
caption describes the picture) and need no download. Layout: PNG files plus ``captions.csv``
(columns ``image``, ``caption``), the upload format of the Data page and ``gapviz embed``.

Run: python assets/make_sample_pairs.py   (deterministic: the same zip every time)
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

from PIL import Image, ImageDraw

COLORS = {"red": (220, 40, 40), "green": (40, 160, 70), "blue": (40, 80, 220),
          "yellow": (235, 200, 30), "purple": (140, 60, 180)}
SHAPES = ("circle", "square", "triangle", "diamond")
BACKGROUNDS = {"white": (255, 255, 255), "grey": (200, 200, 200)}
SIZE = 96


def draw(shape: str, color: tuple[int, int, int], background: tuple[int, int, int], big: bool) -> Image.Image:
    img = Image.new("RGB", (SIZE, SIZE), background)
    d = ImageDraw.Draw(img)
    r = 38 if big else 20
    c = SIZE // 2
    box = (c - r, c - r, c + r, c + r)
    if shape == "circle":
        d.ellipse(box, fill=color)
    elif shape == "square":
        d.rectangle(box, fill=color)
    elif shape == "triangle":
        d.polygon([(c, c - r), (c + r, c + r), (c - r, c + r)], fill=color)
    else:
        d.polygon([(c, c - r), (c + r, c), (c, c + r), (c - r, c)], fill=color)
    return img


def build(target: Path) -> int:
    rows = []
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        i = 0
        for shape in SHAPES:
            for cname, color in COLORS.items():
                for big in (True, False):
                    bname = "white" if (i % 3) else "grey"
                    name = f"{i:02d}_{cname}_{shape}.png"
                    png = io.BytesIO()
                    draw(shape, color, BACKGROUNDS[bname], big).save(png, format="PNG", optimize=True)
                    info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
                    zf.writestr(info, png.getvalue())
                    size = "large" if big else "small"
                    rows.append((name, f"a {size} {cname} {shape} on a {bname} background"))
                    i += 1
        text = io.StringIO()
        w = csv.writer(text, lineterminator="\n")
        w.writerow(["image", "caption"])
        w.writerows(rows)
        zf.writestr(zipfile.ZipInfo("captions.csv", date_time=(2026, 1, 1, 0, 0, 0)), text.getvalue())
    target.write_bytes(buf.getvalue())
    return len(rows)


if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "sample_pairs.zip"
    print(f"wrote {build(out)} pairs to {out} ({out.stat().st_size / 1024:.0f} KiB)")
