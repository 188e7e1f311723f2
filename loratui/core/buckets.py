"""Aspect-ratio buckets with sd-scripts' rules.

sd-scripts builds the bucket list from the maximum area (resolution²): for every width from ``min_size`` to
``max_size`` in ``step`` increments it takes the tallest height that keeps the area, adds that bucket and its
transpose, and the square. An image goes to the bucket whose aspect ratio is closest to its own (the first in
sorted order on a tie); it is scaled to cover the bucket and centre-cropped. With ``no_upscale`` there is no list:
the bucket is the image's size (shrunk to the area limit first) rounded down to the step.
Sizes are the stored ones: sd-scripts never reads EXIF orientation.
"""

from __future__ import annotations

from dataclasses import dataclass

Size = tuple[int, int]


@dataclass(frozen=True)
class BucketSpec:
    """How buckets are made: target resolution and the bucket bounds."""

    resolution: Size = (512, 512)
    min_size: int = 256
    max_size: int = 1024
    step: int = 64
    no_upscale: bool = False
    enabled: bool = True

    @property
    def max_area(self) -> int:
        return self.resolution[0] * self.resolution[1]


@dataclass(frozen=True)
class BucketAssignment:
    """Where one image lands: its bucket, the resize it needs and how many pixels the crop throws away."""

    bucket: Size
    scale: float
    resized: Size
    cropped_pixels: int

    @property
    def crop_fraction(self) -> float:
        w, h = self.resized
        return self.cropped_pixels / max(1, w * h)


def make_buckets(spec: BucketSpec) -> list[Size]:
    """The sorted bucket list sd-scripts would build for ``spec``."""
    if not spec.enabled:
        return [spec.resolution]
    buckets: set[Size] = set()
    side = int((spec.max_area**0.5) // spec.step * spec.step)
    buckets.add((side, side))
    width = spec.min_size
    while width <= spec.max_size:
        height = min(spec.max_size, (spec.max_area // width) // spec.step * spec.step)
        if height >= spec.min_size:
            buckets.add((width, height))
            buckets.add((height, width))
        width += spec.step
    return sorted(buckets)


def _round_to_steps(x: float, step: int) -> int:
    """sd-scripts' ``BucketManager.round_to_steps``: round half up to an integer, then down to the step."""
    rounded = int(x + 0.5)
    return rounded - rounded % step


def _no_upscale_resize(size: Size, spec: BucketSpec) -> Size:
    """sd-scripts' ``select_bucket`` with ``no_upscale``: an image above the area limit is shrunk to that area
    keeping its aspect; of "width rounded to the step" and "height rounded to the step" the one whose aspect is
    closer to the image's wins (ties go to the height). Smaller images keep their size."""
    w, h = size
    if w * h <= spec.max_area:
        return size
    aspect = w / h
    resized_w = (spec.max_area * aspect) ** 0.5
    resized_h = spec.max_area / resized_w
    width_rounded = _round_to_steps(resized_w, spec.step)
    ar_width = width_rounded / _round_to_steps(width_rounded / aspect, spec.step)
    height_rounded = _round_to_steps(resized_h, spec.step)
    ar_height = _round_to_steps(height_rounded * aspect, spec.step) / height_rounded
    if abs(ar_width - aspect) < abs(ar_height - aspect):
        return width_rounded, int(width_rounded / aspect + 0.5)
    return int(height_rounded * aspect + 0.5), height_rounded


def _predefined_bucket(size: Size, candidates: list[Size]) -> Size:
    """sd-scripts' ``select_bucket`` without ``no_upscale``: the image's own size if it is a bucket, else the
    first bucket (in sorted order) with the smallest |bucket aspect − image aspect| — numpy ``argmin`` keeps the
    first of equal errors, so an image halfway between two buckets goes to the narrower one."""
    if size in candidates:
        return size
    aspect = size[0] / size[1]
    return min(candidates, key=lambda b: abs(b[0] / b[1] - aspect))


def assign_bucket(size: Size, spec: BucketSpec, buckets: list[Size] | None = None) -> BucketAssignment:
    """Pick the bucket for an image of ``size`` (its stored width, height) and describe the resize and crop,
    as sd-scripts' ``BucketManager.select_bucket`` does."""
    width, height = size
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {size}")
    aspect = width / height
    if spec.no_upscale and spec.enabled:
        resized = _no_upscale_resize(size, spec)
        bucket = (resized[0] - resized[0] % spec.step, resized[1] - resized[1] % spec.step)
    else:
        candidates = [spec.resolution] if not spec.enabled else (buckets if buckets is not None
                                                                 else make_buckets(spec))
        bucket = _predefined_bucket(size, candidates)
        # Match the side the bucket is short of; the other side overhangs and is centre-cropped.
        scale = bucket[1] / height if aspect > bucket[0] / bucket[1] else bucket[0] / width
        resized = (int(width * scale + 0.5), int(height * scale + 0.5))
    scale = resized[0] / width
    cropped = max(0, resized[0] * resized[1] - bucket[0] * bucket[1])
    return BucketAssignment(bucket=bucket, scale=scale, resized=resized, cropped_pixels=cropped)
