"""Near-duplicate detection with a difference hash (needs a small decode, so it is an optional pass)."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

from PIL import Image

MAX_DISTANCE = 5  # of 64 bits


def dhash(path: Path) -> int | None:
    try:
        with Image.open(path) as im:
            im.draft("L", (64, 64))  # JPEG decodes at reduced size: much faster
            small = im.convert("L").resize((9, 8), Image.BILINEAR)
    except (OSError, ValueError):
        return None
    pixels = list(small.getdata())
    bits = 0
    for row in range(8):
        for col in range(8):
            bits = (bits << 1) | (pixels[row * 9 + col] > pixels[row * 9 + col + 1])
    return bits


def near_duplicate_pairs(paths: list[Path]) -> list[tuple[Path, Path, int]]:
    hashes = [(p, h) for p in paths if (h := dhash(p)) is not None]
    return [(a, b, d) for (a, ha), (b, hb) in combinations(hashes, 2)
            if (d := (ha ^ hb).bit_count()) <= MAX_DISTANCE]
