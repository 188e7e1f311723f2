"""Non-destructive resize: copy a dataset with every image cropped/resized to multiples of 64."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageOps

from loratui.core.atomic import atomic_open
from loratui.core.dataset.layout import IMAGE_EXTENSIONS


def target_size(size: tuple[int, int], short_side: int, step: int = 64) -> tuple[int, int]:
    """Scale so the short side is ``short_side``, then round both sides down to the step."""
    w, h = size
    scale = short_side / min(w, h)
    return max(step, int(w * scale) // step * step), max(step, int(h * scale) // step * step)


def resize_image(src: Path, dst: Path, short_side: int) -> tuple[int, int]:
    with Image.open(src) as im:
        image = ImageOps.exif_transpose(im)
        image = image.convert("RGBA" if "A" in image.mode else "RGB")
    size = target_size(image.size, short_side)
    image = ImageOps.fit(image, size, Image.LANCZOS)
    fmt = "PNG" if dst.suffix.lower() == ".png" else "JPEG" if dst.suffix.lower() in (".jpg", ".jpeg") else None
    if fmt == "JPEG" and image.mode == "RGBA":
        image = image.convert("RGB")
    with atomic_open(dst, "wb") as fh:
        image.save(fh, format=fmt or (image.format or "PNG"), **({"quality": 95} if fmt == "JPEG" else {}))
    return size


def resize_dataset(src_root: Path, out_root: Path, short_side: int,
                   progress: Callable[[int, int], None] | None = None) -> list[tuple[Path, str]]:
    """Copy ``src_root`` to ``out_root`` resized; returns (file, problem) for images that could not be read."""
    if out_root.resolve() == src_root.resolve() or src_root.resolve() in out_root.resolve().parents:
        raise ValueError(f"{out_root}: the output must be outside the source dataset (originals are never touched)")
    files = [p for p in sorted(src_root.rglob("*")) if p.is_file() and ".loratui" not in str(p.relative_to(src_root))]
    problems = []
    for index, src in enumerate(files, 1):
        dst = out_root / src.relative_to(src_root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.suffix.lower() in IMAGE_EXTENSIONS:
            try:
                resize_image(src, dst, short_side)
            except (OSError, ValueError) as exc:
                problems.append((src, str(exc).splitlines()[0]))
        else:
            shutil.copy2(src, dst)
        if progress:
            progress(index, len(files))
    return problems
