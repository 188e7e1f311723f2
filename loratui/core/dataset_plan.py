"""One epoch of a kohya dataset as sd-scripts lays it out: which bucket each image lands in, how often each
image (training and regularisation) is repeated, and how many batches that makes.

This is the single source of the exact step figure: `loratui plan`, `loratui check`, the wizard's Steps step and
the trainer all call :func:`layout_epoch`. The rules follow sd-scripts (HEAD 48d368f), ``library/train_util.py``:

- ``DreamBoothDataset.__init__``: a folder with repeats < 1 or no images is skipped; training images count
  images × repeats; regularisation images are registered folder by folder with their own repeats until their
  total reaches the training count, then the registered ones get one more repeat each, round-robin, until it is
  reached. Reg images never registered are not trained at all; a reg folder whose repeats exceed the training
  count is registered whole (so reg can outnumber training images).
- ``BaseDataset.make_buckets``: every registered image — training and regularisation alike — goes into one
  shared set of buckets (``BucketManager.select_bucket`` on the *stored* image size: EXIF orientation is not
  read), once per repeat; each bucket makes ceil(count ÷ batch) batches, so reg images fill the training
  images' partial batches.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from loratui.core.buckets import BucketSpec, Size, assign_bucket, make_buckets


@dataclass(frozen=True)
class SourceImage:
    """One image file as the dataset lists it: a key (its path), its stored size, its folder's repeats."""

    key: str
    size: Size
    repeats: int
    is_reg: bool = False


@dataclass
class EpochLayout:
    """The registered images of one epoch and the buckets they fill."""

    repeats: dict[str, int] = field(default_factory=dict)  # key → effective repeats (reg after balancing)
    buckets_of: dict[str, Size] = field(default_factory=dict)  # key → bucket
    reg_keys: set[str] = field(default_factory=set)
    num_train_images: int = 0  # training images × repeats (sd-scripts' num_train_images)
    num_reg_images: int = 0  # reg images × folder repeats, before balancing (sd-scripts' num_reg_images)
    mean_ar_error: float = 0.0
    bucketing: bool = True

    @property
    def bucket_counts(self) -> dict[Size, int]:
        """Images-with-repeats per bucket, training and reg together, in sd-scripts' sorted bucket order."""
        counts: Counter[Size] = Counter()
        for key, bucket in self.buckets_of.items():
            counts[bucket] += self.repeats[key]
        return dict(sorted(counts.items()))

    @property
    def reg_entries(self) -> int:
        """Reg images-with-repeats actually trained per epoch (after balancing)."""
        return sum(self.repeats[k] for k in self.reg_keys)

    def batches(self, batch: int) -> int:
        """Batches per epoch: Σ over buckets ceil(count ÷ batch) (``make_buckets``' ``buckets_indices``)."""
        if batch < 1:
            raise ValueError("batch size must be at least 1")
        return sum(math.ceil(n / batch) for n in self.bucket_counts.values())

    def bucket_info(self) -> dict[str, object] | None:
        """``ss_bucket_info`` in sd-scripts' structure (None without bucketing, as sd-scripts leaves it)."""
        if not self.bucketing:
            return None
        buckets = {str(i): {"resolution": list(reso), "count": n}
                   for i, (reso, n) in enumerate(self.bucket_counts.items())}
        return {"buckets": buckets, "mean_img_ar_error": self.mean_ar_error}


def balance_reg(reg: Sequence[SourceImage], num_train_images: int) -> dict[str, int]:
    """Effective repeats of the registered reg images (``DreamBoothDataset.__init__``'s ``first_loop`` rule)."""
    repeats: dict[str, int] = {}
    if not reg:
        return repeats
    n = 0
    first_loop = True
    while n < num_train_images:
        for image in reg:
            if first_loop:
                repeats[image.key] = image.repeats
                n += image.repeats
            else:
                repeats[image.key] += 1
                n += 1
            if n >= num_train_images:
                break
        first_loop = False
    return repeats


def layout_epoch(images: Sequence[SourceImage], spec: BucketSpec) -> EpochLayout:
    """Lay out one epoch of ``images`` (training and reg, in folder order then file order) under ``spec``."""
    images = [i for i in images if i.repeats >= 1]
    train = [i for i in images if not i.is_reg]
    reg = [i for i in images if i.is_reg]
    layout = EpochLayout(bucketing=spec.enabled)
    layout.num_train_images = sum(i.repeats for i in train)
    layout.num_reg_images = sum(i.repeats for i in reg)
    layout.repeats = {i.key: i.repeats for i in train}
    reg_repeats = balance_reg(reg, layout.num_train_images)
    layout.repeats.update(reg_repeats)
    layout.reg_keys = set(reg_repeats)
    registered = [i for i in images if i.key in layout.repeats]
    buckets = make_buckets(spec) if spec.enabled and not spec.no_upscale else None
    errors = []
    for image in registered:
        bucket = assign_bucket(image.size, spec, buckets).bucket
        layout.buckets_of[image.key] = bucket
        errors.append(abs(bucket[0] / bucket[1] - image.size[0] / image.size[1]))
    layout.mean_ar_error = sum(errors) / len(errors) if errors else 0.0
    return layout
