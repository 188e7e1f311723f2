"""Step planning: how many steps a run takes, which epochs save a checkpoint, and roughly how long it runs.

Two figures, because users know one and the trainer runs the other:
- the *simple* figure from the guides: (images × repeats + balanced reg entries) × epochs ÷ batch;
- the *exact* figure sd-scripts runs (``loratui.core.dataset_plan.layout_epoch``): per epoch, the sum over
  buckets (training and reg images share them) of ceil(images-with-repeats ÷ batch), then
  ceil(÷ GPUs ÷ gradient accumulation), × epochs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from loratui.core.buckets import BucketSpec, Size
from loratui.core.config import TrainingConfig
from loratui.core.dataset_plan import SourceImage, layout_epoch


@dataclass(frozen=True)
class FolderCount:
    """One dataset folder as the planner sees it. ``sizes`` (width, height) enable the exact figure."""

    name: str
    images: int
    repeats: int
    is_reg: bool = False
    sizes: tuple[Size, ...] = ()


@dataclass
class StepPlan:
    images: int
    reg_images: int
    images_with_repeats: int
    epochs: int
    batch: int
    simple_steps_per_epoch: float
    simple_total: int
    exact_steps_per_epoch: int | None
    exact_total: int | None
    checkpoint_epochs: list[int]
    buckets: dict[Size, int] = field(default_factory=dict)
    underfilled_buckets: list[Size] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reg_images_with_repeats: int = 0  # reg entries trained per epoch, after sd-scripts' balancing

    @property
    def total_steps(self) -> int:
        """The figure the trainer will run: exact when image sizes are known, the simple one otherwise."""
        return self.exact_total if self.exact_total is not None else self.simple_total

    @property
    def simple_formula(self) -> str:
        """How the simple figure is made, e.g. ``(40 + 40 reg) × 10 ÷ 2``."""
        reg = f" + {self.reg_images_with_repeats} reg" if self.reg_images else ""
        count = f"({self.images_with_repeats}{reg})" if reg else str(self.images_with_repeats)
        return f"{count} × {self.epochs} ÷ {self.batch}"

    @property
    def steps_per_epoch(self) -> int:
        if self.exact_steps_per_epoch is not None:
            return self.exact_steps_per_epoch
        return math.ceil(self.simple_steps_per_epoch)


def checkpoint_epochs(epochs: int, save_every_n_epochs: int) -> list[int]:
    """Epochs that end with a saved file: every N-th, and always the last (the final LoRA)."""
    saved = list(range(save_every_n_epochs, epochs + 1, save_every_n_epochs)) if save_every_n_epochs else []
    if not saved or saved[-1] != epochs:
        saved.append(epochs)
    return saved


def _source_images(folders: Sequence[FolderCount]) -> list[SourceImage]:
    """The folders' images for :func:`layout_epoch` (train folders first, as sd-scripts lists its subsets)."""
    ordered = [f for f in folders if not f.is_reg] + [f for f in folders if f.is_reg]
    images = []
    for folder in ordered:
        sizes = folder.sizes or ((1, 1),) * folder.images  # sizes only matter for buckets
        images += [SourceImage(f"{'reg' if folder.is_reg else 'train'}/{folder.name}/{i}", size, folder.repeats,
                               folder.is_reg) for i, size in enumerate(sizes)]
    return images


def plan_steps(
    folders: Sequence[FolderCount],
    *,
    epochs: int,
    batch: int,
    grad_accum: int = 1,
    num_gpus: int = 1,
    save_every_n_epochs: int = 1,
    max_train_steps: int | None = None,
    bucket_spec: BucketSpec | None = None,
) -> StepPlan:
    if epochs < 1 or batch < 1 or grad_accum < 1 or num_gpus < 1:
        raise ValueError("epochs, batch, gradient accumulation and GPUs must all be at least 1")
    folders = [f for f in folders if f.repeats >= 1 and f.images]  # sd-scripts skips these folders
    train = [f for f in folders if not f.is_reg]
    images = sum(f.images for f in train)
    reg_images = sum(f.images for f in folders if f.is_reg)
    sizes_known = bucket_spec is not None and all(len(f.sizes) == f.images for f in folders)
    layout = layout_epoch(_source_images(folders), bucket_spec if sizes_known else BucketSpec(enabled=False))
    with_repeats = layout.num_train_images
    reg_entries = layout.reg_entries
    simple_per_epoch = (with_repeats + reg_entries) / batch
    simple_total = math.ceil(simple_per_epoch * epochs / (num_gpus * grad_accum))
    notes: list[str] = []
    if reg_images:
        notes.append(f"regularisation: {reg_entries} reg images-with-repeats per epoch against {with_repeats} "
                     "training ones (sd-scripts registers reg folders until they match, then adds repeats "
                     "round-robin); they share the training images' buckets.")

    buckets: dict[Size, int] = {}
    exact_per_epoch: int | None = None
    if sizes_known and train:
        buckets = layout.bucket_counts
        exact_per_epoch = math.ceil(layout.batches(batch) / num_gpus / grad_accum)
    exact_total = exact_per_epoch * epochs if exact_per_epoch is not None else None
    underfilled = sorted(b for b, n in buckets.items() if n % batch)

    saved = checkpoint_epochs(epochs, save_every_n_epochs)
    if max_train_steps is not None:
        per_epoch = exact_per_epoch or math.ceil(simple_total / epochs)
        last_epoch = min(epochs, math.ceil(max_train_steps / max(1, per_epoch)))
        saved = [e for e in saved if e < last_epoch] + [last_epoch]
        notes.append(f"max_train_steps={max_train_steps} stops the run in epoch {last_epoch}.")
        simple_total = min(simple_total, max_train_steps)
        if exact_total is not None:
            exact_total = min(exact_total, max_train_steps)
    if underfilled:
        notes.append(f"{len(underfilled)} bucket(s) end in a partial batch, so the exact count is higher "
                     "than the simple one.")
    return StepPlan(
        images=images,
        reg_images=reg_images,
        images_with_repeats=with_repeats,
        epochs=epochs,
        batch=batch,
        simple_steps_per_epoch=simple_per_epoch / (num_gpus * grad_accum),
        simple_total=simple_total,
        exact_steps_per_epoch=exact_per_epoch,
        exact_total=exact_total,
        checkpoint_epochs=saved,
        buckets=dict(buckets),
        underfilled_buckets=underfilled,
        notes=notes,
        reg_images_with_repeats=reg_entries,
    )


def bucket_spec_from_config(cfg: TrainingConfig) -> BucketSpec:
    data = cfg.dataset
    return BucketSpec(
        resolution=(data.resolution, data.resolution),
        min_size=data.min_bucket_reso,
        max_size=data.max_bucket_reso,
        step=data.bucket_reso_steps,
        no_upscale=data.bucket_no_upscale,
        enabled=data.enable_bucket,
    )


def plan_from_config(cfg: TrainingConfig, folders: Sequence[FolderCount], num_gpus: int = 1) -> StepPlan:
    """The plan for ``cfg`` over ``folders``, applying the config's per-folder repeat overrides."""
    overrides = cfg.dataset.repeats
    folders = [
        FolderCount(f.name, f.images, overrides.get(f.name, f.repeats), f.is_reg, f.sizes) for f in folders
    ]
    return plan_steps(
        folders,
        epochs=cfg.schedule.max_train_epochs,
        batch=cfg.schedule.train_batch_size,
        grad_accum=cfg.optimizer.gradient_accumulation_steps,
        num_gpus=num_gpus,
        save_every_n_epochs=cfg.saving.save_every_n_epochs,
        max_train_steps=cfg.schedule.max_train_steps,
        bucket_spec=bucket_spec_from_config(cfg),
    )


def format_duration(seconds: float) -> str:
    """``1h 05m``, ``12m 30s`` or ``45s``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"
