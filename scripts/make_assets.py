"""Draw the example pictures in assets/examples/ (run again to re-create them).

Simple synthetic pictures made with PIL: four of them show classes of the generated
`shapes` dataset (so a model fine-tuned on shapes can recognise them on the Predict tab),
one is a small drawn scene for ImageNet models.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

OUT = Path(__file__).resolve().parents[1] / "assets" / "examples"
S = 256


def _noise(img: Image.Image, amount: int = 10, seed: int = 0) -> Image.Image:
    arr = np.asarray(img, dtype=np.int16)
    rng = np.random.default_rng(seed)
    arr = arr + rng.integers(-amount, amount + 1, arr.shape, dtype=np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def star() -> Image.Image:
    img = Image.new("RGB", (S, S), (35, 70, 160))
    d = ImageDraw.Draw(img)
    cx, cy, r = 128, 132, 92
    pts = []
    for k in range(10):
        a = -math.pi / 2 + k * math.pi / 5
        rr = r if k % 2 == 0 else r * 0.42
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    d.polygon(pts, fill=(250, 205, 40))
    return _noise(img, seed=1)


def ring() -> Image.Image:
    img = Image.new("RGB", (S, S), (240, 236, 225))
    d = ImageDraw.Draw(img)
    d.ellipse((40, 40, 216, 216), outline=(200, 40, 50), width=26)
    d.line((10, 230, 240, 190), fill=(90, 90, 90), width=3)
    return _noise(img, seed=2)


def stripes() -> Image.Image:
    img = Image.new("RGB", (S, S), (245, 245, 245))
    d = ImageDraw.Draw(img)
    for x in range(20, S - 20, 36):
        d.rectangle((x, 30, x + 16, S - 30), fill=(30, 130, 90))
    return _noise(img, seed=3).rotate(6, resample=Image.BILINEAR, fillcolor=(245, 245, 245))


def triangle() -> Image.Image:
    img = Image.new("RGB", (S, S), (255, 250, 240))
    d = ImageDraw.Draw(img)
    d.polygon([(128, 30), (226, 210), (30, 210)], fill=(120, 60, 170))
    return _noise(img, seed=4)


def scene() -> Image.Image:
    img = Image.new("RGB", (S, S), (135, 195, 240))
    d = ImageDraw.Draw(img)
    d.rectangle((0, 180, S, S), fill=(80, 160, 70))  # grass
    d.ellipse((180, 20, 236, 76), fill=(255, 220, 60))  # sun
    d.rectangle((60, 110, 170, 200), fill=(200, 120, 80))  # house
    d.polygon([(50, 112), (115, 60), (180, 112)], fill=(150, 50, 40))  # roof
    d.rectangle((100, 150, 128, 200), fill=(90, 60, 40))  # door
    d.rectangle((72, 125, 94, 147), fill=(220, 240, 255))  # window
    d.rectangle((138, 125, 160, 147), fill=(220, 240, 255))
    return _noise(img.filter(ImageFilter.SMOOTH), amount=6, seed=5)


EXAMPLES = {
    "star.jpg": star,
    "ring.jpg": ring,
    "vertical-stripes.jpg": stripes,
    "triangle.jpg": triangle,
    "house.jpg": scene,
}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, draw in EXAMPLES.items():
        draw().save(OUT / name, quality=90)
        print(OUT / name)


if __name__ == "__main__":
    main()
