"""Aspect-ratio buckets with sd-scripts' rules.

sd-scripts builds the bucket list from the maximum area (resolution²): for every width from ``min_size`` to
``max_size`` in ``step`` increments it takes the tallest height that keeps the area, adds that bucket and its
transpose, and the square. An image goes to the bucket whose aspect ratio is closest to its own; it is scaled
to cover the bucket and centre-cropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
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


def _no_upscale_bucket(size: Size, spec: BucketSpec) -> Size:
    """sd-scripts' no-upscale rule: shrink to the max area if larger, then round each side down to the step."""
    w, h = size
    if w * h > spec.max_area:
        ratio = (spec.max_area / (w * h)) ** 0.5
        w, h = int(w * ratio), int(h * ratio)
    bw = max(spec.step, w // spec.step * spec.step)
    bh = max(spec.step, h // spec.step * spec.step)
    return bw, bh


def assign_bucket(size: Size, spec: BucketSpec, buckets: list[Size] | None = None) -> BucketAssignment:
    """Pick the bucket for an image of ``size`` (width, height) and describe the resize and crop."""
    width, height = size
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {size}")
    if not spec.enabled:
        bucket = spec.resolution
    elif spec.no_upscale:
        bucket = _no_upscale_bucket(size, spec)
    else:
        candidates = buckets if buckets is not None else make_buckets(spec)
        aspect = width / height
        bucket = min(candidates, key=lambda b: (abs(b[0] / b[1] - aspect), -b[0] * b[1]))
    scale = max(bucket[0] / width, bucket[1] / height)
    resized = (max(bucket[0], round(width * scale)), max(bucket[1], round(height * scale)))
    cropped = resized[0] * resized[1] - bucket[0] * bucket[1]
    return BucketAssignment(bucket=bucket, scale=scale, resized=resized, cropped_pixels=cropped)


def bucket_counts(sizes: Iterable[Size], spec: BucketSpec, repeats: int = 1) -> Counter[Size]:
    """Images-with-repeats per bucket for a list of image sizes."""
    buckets = make_buckets(spec)
    counts: Counter[Size] = Counter()
    for size in sizes:
        counts[assign_bucket(size, spec, buckets).bucket] += repeats
    return counts
