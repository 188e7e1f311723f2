"""SDXL size conditioning as sd-scripts builds it: ``train_util.BucketManager.get_crop_ltrb`` and
``trim_and_resize_if_required`` per image, ``BaseDataset.__getitem__`` (flipped crop), and
``sdxl_train_util.get_size_embeddings`` / ``sdxl_train_network.call_unet`` order
``[orig_h, orig_w, crop_top, crop_left, target_h, target_w]``."""

from __future__ import annotations

import random

import pytest
import torch
from PIL import Image

from loratui.train import data as D
from loratui.train.loop import Trainer

from .conftest import Recorder, make_config


def _conv_only_vae() -> torch.nn.Module:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(block_out_channels=(8,), down_block_types=("DownEncoderBlock2D",),
                         up_block_types=("UpDecoderBlock2D",), latent_channels=4, norm_num_groups=4,
                         layers_per_block=1, mid_block_add_attention=False).eval()


def sd_scripts_time_ids(original: tuple[int, int], bucket: tuple[int, int], flipped: bool = False) -> list[int]:
    """The rule of ``get_crop_ltrb``, written out here: fit the image inside the bucket keeping its aspect ratio,
    floor-halve the margins; a flipped image's left is bucket width minus crop right."""
    (w, h), (bw, bh) = original, bucket
    if bw / bh > w / h:
        rw, rh = bh * (w / h), bh
    else:
        rw, rh = bw, bw / (w / h)
    left, top = (bw - rw) // 2, (bh - rh) // 2
    if flipped:
        left = bw - (left + rw)
    return [h, w, int(top), int(left), bh, bw]


@pytest.mark.parametrize(("original", "bucket"), [((800, 600), (1024, 768)), ((1000, 600), (1024, 768)),
                                                  ((600, 1000), (768, 1024)), ((333, 777), (640, 1536))])
@pytest.mark.parametrize("flipped", [False, True])
def test_size_condition_follows_get_crop_ltrb(original, bucket, flipped):
    assert D.size_condition(original, bucket).time_ids(flipped) == sd_scripts_time_ids(original, bucket, flipped)


def test_800x600_in_1024x768():
    assert D.size_condition((800, 600), (1024, 768)).time_ids(False) == [600, 800, 0, 0, 768, 1024]
    assert sd_scripts_time_ids((1000, 600), (1024, 768)) == [600, 1000, 76, 0, 768, 1024]


def test_resize_and_crop_follow_trim_and_resize_if_required(tmp_path):
    """``select_bucket`` scales the side that fits (round half up); the rest is centre-trimmed."""
    assert D.resized_size((1000, 600), (1024, 768)) == (1280, 768)
    assert D.resized_size((600, 1000), (768, 1024)) == (768, 1280)
    path = tmp_path / "stripes.png"
    image = Image.new("RGB", (100, 50), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 50, 50))  # the left half is white
    image.save(path)
    pixels = D.load_image(path, (64, 64))  # resized to 128×64, then 32 px trimmed off each side
    assert pixels.shape == (3, 64, 64)
    assert pixels[:, :, 2].mean() > 0.9 and pixels[:, :, 60].mean() < -0.9  # the centre cut: 32 px each


def test_time_ids_reach_the_unet_with_and_without_the_latent_cache(tmp_path, tiny_sdxl_dir, demo_dataset):
    """An 800×600 photo in a 1024×768 bucket, straight from the image and after a memory and a disk cache."""
    cfg = make_config(tiny_sdxl_dir, demo_dataset, model__model_family="sdxl", dataset__bucket_reso_steps=32,
                      dataset__cache_latents=True)
    trainer = Trainer(cfg, tmp_path / "run", Recorder())
    trainer.setup()
    # a conv-only, one-level VAE: the tiny model's mid-block attention over a 1024×768 latent would take minutes
    trainer.models.vae = trainer.latents.vae = _conv_only_vae()
    Image.new("RGB", (800, 600), (10, 200, 30)).save(tmp_path / "p.png")
    items = [D.Item(tmp_path / "p.png", "sks", (1024, 768), False, "photos", 1, (800, 600))]
    want = torch.tensor([sd_scripts_time_ids((800, 600), (1024, 768))])
    assert want.tolist() == [[600, 800, 0, 0, 768, 1024]]

    cache, trainer.latents = trainer.latents, None
    _, time_ids = trainer._latents_for(items, random.Random(0))  # encoded from the image
    assert torch.equal(time_ids, want)

    trainer.latents = cache
    cache.disk_dir = tmp_path / "cache"  # not the shared demo dataset's own cache folder
    for _ in range(2):  # encoded and cached, then from memory
        latents, time_ids = trainer._latents_for(items, random.Random(0))
        assert latents.shape[0] == 1 and torch.equal(time_ids, want)

    fresh = D.LatentCache(_conv_only_vae(), trainer.device, torch.float32, tmp_path / "cache")
    _, size = fresh.get(items[0], False)
    assert fresh.hits_on_disk == 1 and torch.equal(torch.tensor([size.time_ids(False)]), want)


def test_flipped_latents_carry_the_mirrored_crop(tmp_path):
    vae = _conv_only_vae()
    path = tmp_path / "q.png"
    Image.new("RGB", (100, 60)).save(path)
    item = D.Item(path, "x", (64, 32), False, "f", 1, (100, 60))
    cache = D.LatentCache(vae, torch.device("cpu"), torch.float32, tmp_path / "cache")
    cache.get(item, True)
    size = D.LatentCache(vae, torch.device("cpu"), torch.float32, tmp_path / "cache").get(item, True)[1]
    assert size.time_ids(True) == sd_scripts_time_ids((100, 60), (64, 32), flipped=True)
