"""Training data with kohya's semantics: repeats per folder, regularisation images, aspect buckets, caption
shuffle with keep tokens, caption/tag dropout, flip augmentation, and latent caching (memory or disk)."""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from loratui.core.buckets import Size
from loratui.core.captions.text import decode
from loratui.core.config import TrainingConfig
from loratui.core.dataset.layout import Folder, find_folders
from loratui.core.dataset_plan import EpochLayout, SourceImage, layout_epoch
from loratui.core.planner import bucket_spec_from_config


@dataclass
class Item:
    """One image as the trainer uses it."""

    path: Path
    caption: str
    bucket: Size
    is_reg: bool
    folder: str
    repeats: int


@dataclass
class DatasetInfo:
    items: list[Item]
    reg_items: list[Item]
    warnings: list[str]
    dataset_dirs: dict[str, dict[str, int]]
    reg_dataset_dirs: dict[str, dict[str, int]]
    tag_frequency: dict[str, dict[str, int]]
    layout: EpochLayout = field(default_factory=EpochLayout)  # set by load_dataset; empty for hand-made items

    @property
    def images_with_repeats(self) -> int:
        return sum(i.repeats for i in self.items)


def _read_caption(image: Path, extension: str, fallback: str, warnings: list[str]) -> str:
    """The caption's first line (sd-scripts' default); a missing file falls back to the class tokens."""
    caption_file = image.with_suffix(extension)
    if not caption_file.exists():
        return fallback
    text, utf8 = decode(caption_file.read_bytes())
    if not utf8:
        warnings.append(f"{caption_file}: not UTF-8, read as Latin-1")
    text = text.lstrip("\ufeff").strip()
    if not text:
        warnings.append(f"{caption_file}: empty caption; using the folder's class tokens '{fallback}'")
        return fallback
    return text.splitlines()[0].strip()


def _folders(root: Path, overrides: dict[str, int], is_reg: bool, warnings: list[str]) -> list[Folder]:
    """The folders sd-scripts would train (a flat folder of images counts as one, with a warning)."""
    folders, flat = find_folders(root, ".txt", is_reg=is_reg, repeats_override=overrides)
    usable = []
    for folder in folders:
        if folder.repeats is None:
            warnings.append(f"{folder.path}: no '<repeats>_' prefix, skipped (sd-scripts skips it too); rename "
                            f"it to e.g. 10_{folder.path.name}")
        else:
            usable.append(folder)
    if flat:
        warnings.append(f"{root}: images directly in the dataset folder; training them with {usable[0].repeats} "
                        f"repeat(s). Put them in a '10_{root.name}' subfolder to set repeats.")
    return usable


def _load_items(root: Path, cfg: TrainingConfig, is_reg: bool, warnings: list[str]):
    items, dirs = [], {}
    tag_freq: dict[str, dict[str, int]] = {}
    for folder in _folders(root, cfg.dataset.repeats, is_reg, warnings):
        folder_dir, repeats, tokens, images = folder.path, folder.repeats, folder.class_tokens, folder.images
        freq: dict[str, int] = defaultdict(int)
        for image in images:
            try:
                with Image.open(image) as im:
                    size = im.size  # stored size: sd-scripts ignores EXIF orientation
            except (OSError, ValueError) as exc:
                warnings.append(f"{image}: cannot be read ({exc}); skipped")
                continue
            caption = _read_caption(image, cfg.dataset.caption_extension, tokens, warnings)
            for tag in (t.strip() for t in caption.split(",")):
                if tag:
                    freq[tag] += 1
            items.append(Item(image, caption, size, is_reg, folder_dir.name, repeats))  # bucket set by layout
        dirs[folder_dir.name] = {"n_repeats": repeats, "img_count": len(images)}
        tag_freq[folder_dir.name] = dict(freq)
    return items, dirs, tag_freq


def load_dataset(cfg: TrainingConfig) -> DatasetInfo:
    root = Path(cfg.dataset.train_data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder not found; set dataset.train_data_dir")
    warnings: list[str] = []
    items, dirs, tag_freq = _load_items(root, cfg, False, warnings)
    if not items:
        raise ValueError(f"{root}: no images found in <repeats>_<name> subfolders; run `loratui check {root}`")
    reg_items, reg_dirs = [], {}
    if cfg.dataset.reg_data_dir:
        reg_items, reg_dirs, _ = _load_items(Path(cfg.dataset.reg_data_dir), cfg, True, warnings)
    layout = _apply_layout(items, reg_items, cfg)
    items = [i for i in items if str(i.path) in layout.buckets_of]  # folders with repeats < 1 train nothing
    registered_reg = [i for i in reg_items if str(i.path) in layout.reg_keys]
    return DatasetInfo(items, registered_reg, warnings, dirs, reg_dirs, tag_freq, layout)


def _apply_layout(items: list[Item], reg_items: list[Item], cfg: TrainingConfig) -> EpochLayout:
    """Buckets and (balanced reg) repeats from the core's one epoch layout — the figure `plan` shows.
    Until this runs, ``Item.bucket`` holds the image's stored size."""
    sources = [SourceImage(str(i.path), i.bucket, i.repeats, i.is_reg) for i in [*items, *reg_items]]
    layout = layout_epoch(sources, bucket_spec_from_config(cfg))
    for item in [*items, *reg_items]:
        key = str(item.path)
        if key in layout.buckets_of:
            item.bucket, item.repeats = layout.buckets_of[key], layout.repeats[key]
    return layout


def epoch_entries(info: DatasetInfo) -> list[Item]:
    """Each registered image (training and reg) once per repeat, reg repeats as sd-scripts balances them."""
    return [item for item in [*info.items, *info.reg_items] for _ in range(item.repeats)]


def epoch_batches(info: DatasetInfo, batch_size: int, seed: int, epoch: int) -> list[list[Item]]:
    """The epoch's batches, deterministic in (seed, epoch) so a resumed run replays the same order."""
    rng = random.Random(seed * 1_000_003 + epoch)
    by_bucket: dict[Size, list[Item]] = defaultdict(list)
    for entry in epoch_entries(info):
        by_bucket[entry.bucket].append(entry)
    batches = []
    for bucket in sorted(by_bucket):
        entries = by_bucket[bucket]
        rng.shuffle(entries)
        batches += [entries[i:i + batch_size] for i in range(0, len(entries), batch_size)]
    rng.shuffle(batches)
    return batches


def steps_per_epoch(info: DatasetInfo, batch_size: int) -> int:
    return info.layout.batches(batch_size)


# --- captions --------------------------------------------------------------------------------------------------


def process_caption(caption: str, cfg: TrainingConfig, rng: random.Random, epoch: int) -> str:
    """Shuffle / drop tags as configured; the first ``keep_tokens`` tags never move or drop."""
    data = cfg.dataset
    if data.caption_dropout_rate and rng.random() < data.caption_dropout_rate:
        return ""
    if data.caption_dropout_every_n_epochs and (epoch + 1) % data.caption_dropout_every_n_epochs == 0:
        return ""
    if not (data.shuffle_caption or data.caption_tag_dropout_rate):
        return caption
    tags = [t.strip() for t in caption.split(",") if t.strip()]
    fixed, rest = tags[: data.keep_tokens], tags[data.keep_tokens:]
    if data.caption_tag_dropout_rate:
        rest = [t for t in rest if rng.random() >= data.caption_tag_dropout_rate]
    if data.shuffle_caption:
        rng.shuffle(rest)
    return ", ".join(fixed + rest)


# --- images and latents ------------------------------------------------------------------------------------


def load_image(path: Path, bucket: Size, flip: bool = False) -> torch.Tensor:
    """The image scaled to cover the bucket, centre-cropped, as a CHW tensor in [-1, 1]."""
    with Image.open(path) as im:
        image = im.convert("RGB")  # pixels as stored, EXIF orientation ignored, as sd-scripts' load_image does
    bw, bh = bucket
    scale = max(bw / image.width, bh / image.height)
    size = (max(bw, round(image.width * scale)), max(bh, round(image.height * scale)))
    image = image.resize(size, Image.LANCZOS)
    left, top = (size[0] - bw) // 2, (size[1] - bh) // 2
    image = image.crop((left, top, left + bw, top + bh))
    if flip:
        image = ImageOps.mirror(image)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)


def cache_key(item: Item, flip: bool) -> str:
    stat = item.path.stat()
    raw = f"{item.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{item.bucket}|{flip}"
    return hashlib.sha1(raw.encode()).hexdigest()


class LatentCache:
    """VAE latents per (image, bucket, flip); in memory, optionally on disk so later runs reuse them."""

    def __init__(self, vae: torch.nn.Module, device: torch.device, dtype: torch.dtype, disk_dir: Path | None):
        self.vae, self.device, self.dtype, self.disk_dir = vae, device, dtype, disk_dir
        self.memory: dict[str, torch.Tensor] = {}
        self.hits_on_disk = 0

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        dist = self.vae.encode(pixels.to(self.device, self.vae.dtype)).latent_dist
        return dist.sample() * self.vae.config.scaling_factor

    def get(self, item: Item, flip: bool) -> torch.Tensor:
        key = cache_key(item, flip)
        if key in self.memory:
            return self.memory[key]
        latent = self._from_disk(key)
        if latent is None:
            latent = self.encode(load_image(item.path, item.bucket, flip)[None])[0].cpu()
            self._to_disk(key, latent)
        self.memory[key] = latent
        return latent

    def _from_disk(self, key: str) -> torch.Tensor | None:
        if self.disk_dir is None or not (self.disk_dir / f"{key}.safetensors").exists():
            return None
        from safetensors.torch import load_file

        self.hits_on_disk += 1
        return load_file(str(self.disk_dir / f"{key}.safetensors"))["latent"]

    def _to_disk(self, key: str, latent: torch.Tensor) -> None:
        if self.disk_dir is None:
            return
        from safetensors.torch import save

        from loratui.core.atomic import atomic_write_bytes

        self.disk_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.disk_dir / f"{key}.safetensors", save({"latent": latent.contiguous()}))
