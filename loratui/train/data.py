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
from loratui.core.dataset.probe import probe_image
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
    original_size: Size | None = None  # (w, h) as stored (EXIF ignored, as sd-scripts), before any resize

    @property
    def size_condition(self) -> SizeCondition:
        return size_condition(self.original_size or self.bucket, self.bucket)


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
    """The caption's first line (sd-scripts' default); a missing file falls back to the class tokens, with a
    warning as sd-scripts gives (``DreamBoothDataset`` lists the images without captions)."""
    caption_file = image.with_suffix(extension)
    if not caption_file.exists():
        warnings.append(f"{caption_file}: no caption file; using the folder's class tokens '{fallback}'")
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
    """The folders sd-scripts would train: ``<repeats>_<name>`` subfolders only. Images directly in ``root`` are
    ignored, as sd-scripts' ``DreamBoothDataset`` only looks at subfolders."""
    folders, _flat = find_folders(root, ".txt", is_reg=is_reg, repeats_override=overrides)
    usable = []
    for folder in folders:
        if folder.path == root:
            if folder.images:
                warnings.append(f"{root}: {len(folder.images)} image(s) directly in the dataset folder are not "
                                f"trained (sd-scripts ignores them too); move them into a subfolder such as "
                                f"'10_{root.name}'")
        elif folder.repeats is None:
            warnings.append(f"{folder.path}: no '<repeats>_' prefix, skipped (sd-scripts skips it too); rename "
                            f"it to e.g. 10_{folder.path.name}")
        else:
            usable.append(folder)
    return usable


def _usable_size(image: Path, warnings: list[str]) -> Size | None:
    """The image's upright size, or None (with one warning) when `loratui check` reports it as an error: a
    decompression bomb, an unreadable or truncated file is left out of training instead of crashing it."""
    probe = probe_image(image)
    if not probe.ok or probe.truncated or probe.size is None:
        warnings.append(f"{image}: {probe.error or 'truncated file'}; left out of training")
        return None
    return probe.size  # as stored: sd-scripts buckets by the stored size and ignores EXIF orientation


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB with 8-bit levels. 16-bit greyscale PNGs open in mode I;16 or I (0-65535): a plain convert clips
    every value above 255 to white, so scale them down first."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        levels = np.asarray(image, dtype=np.float64)
        eight_bit = np.clip(np.round(levels / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(eight_bit).convert("RGB")
    return image.convert("RGB")


def _load_items(root: Path, cfg: TrainingConfig, is_reg: bool, warnings: list[str]):
    items, dirs = [], {}
    tag_freq: dict[str, dict[str, int]] = {}
    for folder in _folders(root, cfg.dataset.repeats, is_reg, warnings):
        folder_dir, repeats, tokens, images = folder.path, folder.repeats, folder.class_tokens, folder.images
        freq: dict[str, int] = defaultdict(int)
        for image in images:
            size = _usable_size(image, warnings)  # stored size: sd-scripts ignores EXIF orientation
            if size is None:
                continue
            caption = _read_caption(image, cfg.dataset.caption_extension, tokens, warnings)
            for tag in (t.strip() for t in caption.split(",")):
                if tag:
                    freq[tag] += 1
            items.append(Item(image, caption, size, is_reg, folder_dir.name, repeats, size))  # bucket set by layout
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
        raise ValueError(f"{root}: no images found in <repeats>_<name> subfolders (images directly in the folder "
                         f"are not trained); run `loratui check {root}`")
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
        return caption  # sd-scripts leaves the caption, separator included, untouched here too
    fixed, rest, suffix = _split_kept_tags(caption, data.keep_tokens, data.keep_tokens_separator)
    if data.caption_tag_dropout_rate:
        rest = [t for t in rest if rng.random() >= data.caption_tag_dropout_rate]
    if data.shuffle_caption:
        rng.shuffle(rest)
    return ", ".join(fixed + rest + suffix)


def _split_kept_tags(caption: str, keep_tokens: int, separator: str) -> tuple[list[str], list[str], list[str]]:
    """(kept in front, shuffled/droppable, kept at the end), as sd-scripts' ``BaseDataset.process_caption``: with
    ``keep_tokens_separator`` in the caption, the tags before it stay first and those after a second one stay last
    (``keep_tokens`` is then not used); otherwise the first ``keep_tokens`` tags stay first."""

    def tags(text: str) -> list[str]:
        return [t.strip() for t in text.split(",") if t.strip()]

    if separator and separator in caption:
        front, rest = caption.split(separator, 1)
        back = ""
        if separator in rest:
            rest, back = rest.split(separator, 1)
        return tags(front), tags(rest), tags(back)
    all_tags = tags(caption)
    return all_tags[:keep_tokens], all_tags[keep_tokens:], []


# --- images and latents ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SizeCondition:
    """What SDXL is told about an image's size: its original size and where the bucket's crop sits in it."""

    original: Size  # (w, h)
    crop_ltrb: tuple[float, float, float, float]
    bucket: Size  # (w, h)

    def time_ids(self, flipped: bool) -> list[int]:
        """``[orig_h, orig_w, crop_top, crop_left, target_h, target_w]`` as sd-scripts builds them
        (``BaseDataset.__getitem__`` → ``sdxl_train_util.get_size_embeddings``); a flipped image's crop left is
        measured from the other side."""
        left, top, right, _ = self.crop_ltrb
        crop_left = self.bucket[0] - right if flipped else left
        return [self.original[1], self.original[0], int(top), int(crop_left), self.bucket[1], self.bucket[0]]


def size_condition(original: Size, bucket: Size) -> SizeCondition:
    """sd-scripts' ``BucketManager.get_crop_ltrb``: Stability AI's crop coordinates for the image fitted inside the
    bucket (floor-halved margins, kept as floats as sd-scripts keeps them; truncated when used)."""
    bucket_ar, image_ar = bucket[0] / bucket[1], original[0] / original[1]
    if bucket_ar > image_ar:
        width, height = bucket[1] * image_ar, float(bucket[1])
    else:
        width, height = float(bucket[0]), bucket[0] / image_ar
    left, top = (bucket[0] - width) // 2, (bucket[1] - height) // 2
    return SizeCondition(original, (left, top, left + width, top + height), bucket)


def resized_size(original: Size, bucket: Size) -> Size:
    """The size before the centre crop, as sd-scripts' ``BucketManager.select_bucket`` computes it: scale the side
    that fits the bucket exactly, round half up."""
    width, height = original
    scale = bucket[1] / height if width / height > bucket[0] / bucket[1] else bucket[0] / width
    return int(width * scale + 0.5), int(height * scale + 0.5)


def load_image(path: Path, bucket: Size, flip: bool = False) -> torch.Tensor:
    """The image resized and centre-cropped to the bucket (sd-scripts' ``trim_and_resize_if_required``), as a CHW
    tensor in [-1, 1]."""
    with Image.open(path) as im:
        image = _to_rgb(im)  # pixels as stored, EXIF orientation ignored, as sd-scripts' load_image does
    bw, bh = bucket
    size = resized_size(image.size, bucket)
    if size != image.size:
        image = image.resize(size, Image.LANCZOS)
    left, top = (size[0] - bw) // 2 if size[0] > bw else 0, (size[1] - bh) // 2 if size[1] > bh else 0
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

    def get(self, item: Item, flip: bool) -> tuple[torch.Tensor, SizeCondition]:
        """The latent and the size condition it was made with (both kept in memory and on disk)."""
        key = cache_key(item, flip)
        if key in self.memory:
            return self.memory[key]
        entry = self._from_disk(key)
        if entry is None:
            latent = self.encode(load_image(item.path, item.bucket, flip)[None])[0].cpu()
            entry = (latent, item.size_condition)
            self._to_disk(key, entry)
        self.memory[key] = entry
        return entry

    def _from_disk(self, key: str) -> tuple[torch.Tensor, SizeCondition] | None:
        path = self.disk_dir / f"{key}.safetensors" if self.disk_dir is not None else None
        if path is None or not path.exists():
            return None
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        if "original_size" not in tensors:  # written before sizes were cached: encode again
            return None
        self.hits_on_disk += 1
        w, h = (int(v) for v in tensors["original_size"])
        bw, bh = (int(v) for v in tensors["bucket"])
        ltrb = tuple(float(v) for v in tensors["crop_ltrb"])
        return tensors["latent"], SizeCondition((w, h), ltrb, (bw, bh))  # type: ignore[arg-type]

    def _to_disk(self, key: str, entry: tuple[torch.Tensor, SizeCondition]) -> None:
        if self.disk_dir is None:
            return
        from safetensors.torch import save

        from loratui.core.atomic import atomic_write_bytes

        latent, size = entry
        tensors = {"latent": latent.contiguous(), "original_size": torch.tensor(size.original, dtype=torch.int64),
                   "crop_ltrb": torch.tensor(size.crop_ltrb, dtype=torch.float64),
                   "bucket": torch.tensor(size.bucket, dtype=torch.int64)}
        self.disk_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.disk_dir / f"{key}.safetensors", save(tensors))
