"""The built-in demo dataset: small procedurally drawn images with captions, in kohya's layout (no torch)."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

from loratui.core.atomic import atomic_write_text

COLOURS = {"red": (220, 40, 40), "blue": (40, 80, 220), "green": (40, 170, 70), "yellow": (230, 200, 40)}
SHAPES = ("circle", "square", "triangle")
DEMO_FOLDER = "4_sks toy"
ACTIVATION_TAG = "sks toy"


def _draw(shape: str, colour: tuple[int, int, int], size: tuple[int, int], rng: random.Random) -> Image.Image:
    w, h = size
    image = Image.new("RGB", size, tuple(rng.randint(200, 255) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    box = (w * 0.2 + rng.uniform(-4, 4), h * 0.2 + rng.uniform(-4, 4), w * 0.8, h * 0.8)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(w / 2, h * 0.15), (w * 0.85, h * 0.85), (w * 0.15, h * 0.85)], fill=colour)
    return image


def make_demo_dataset(root: Path, count: int = 10, seed: int = 0) -> Path:
    """Write ``count`` images (squares and a few landscape ones, to show buckets) with captions."""
    rng = random.Random(seed)
    folder = Path(root) / DEMO_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        shape = SHAPES[i % len(SHAPES)]
        colour = list(COLOURS)[i % len(COLOURS)]
        size = (96, 64) if i % 4 == 3 else (64, 64)
        _draw(shape, COLOURS[colour], size, rng).save(folder / f"toy_{i:02d}.png")
        atomic_write_text(folder / f"toy_{i:02d}.txt", f"{ACTIVATION_TAG}, {colour} {shape}, simple background")
    return Path(root)
