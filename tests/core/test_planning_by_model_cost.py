"""The planner prices the configured model by its own configs (``core/model_cost``): time, VRAM and the
speed an earlier run measured. No torch: a model here is its diffusers config files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from loratui.core import measured_speed, model_cost
from loratui.core.config import TrainingConfig
from loratui.core.speed import seconds_per_step, time_estimate
from loratui.core.vram import estimate_vram


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LORATUI_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _small_sd1(folder: Path, channels: list[int]) -> Path:
    """A diffusers folder with SD1's block layout at fewer channels (configs only: the planner reads no
    weights)."""
    shutil.copytree(model_cost.SHIPPED_CONFIGS / "sd1", folder)
    unet = json.loads((folder / "unet" / "config.json").read_text())
    unet.update(block_out_channels=channels, norm_num_groups=8)
    (folder / "unet" / "config.json").write_text(json.dumps(unet))
    return folder


def _cfg(model: str | Path = "/models/v1-5-pruned-emaonly.safetensors", **changes: object) -> TrainingConfig:
    cfg = TrainingConfig.model_validate({"model": {"pretrained_model_name_or_path": str(model)},
                                         "dataset": {"train_data_dir": "/data"}})
    for path, value in changes.items():
        cfg = cfg.with_value(path.replace("__", "."), value)
    return cfg


def test_a_smaller_model_is_estimated_by_its_own_flops_not_the_released_ones(tmp_path) -> None:
    small = _cfg(_small_sd1(tmp_path / "small", [32, 64, 64, 64]))
    released = _cfg()
    ratio = seconds_per_step(released, "RTX 4090") / seconds_per_step(small, "RTX 4090")
    flops = [model_cost.step_flops(c, model_cost.cost_of(c)) for c in (released, small)]
    assert ratio == pytest.approx(flops[0] / flops[1])
    assert ratio > 20
    small_vram, released_vram = estimate_vram(small, batch=4), estimate_vram(released, batch=4)
    assert small_vram.parts["unet"] < 0.02 < 1.5 < released_vram.parts["unet"]  # fp16 weights
    assert small_vram.parts["activations"] < released_vram.parts["activations"] / 10
    assert small_vram.parts["text encoder"] == released_vram.parts["text encoder"]  # the same CLIP-L, trained


def test_time_grows_faster_than_pixel_count_at_high_resolution() -> None:
    """Self-attention is quadratic in the latent's pixels: SD1.5 at 1024² costs more than 4× its 512² step."""
    at_512 = seconds_per_step(_cfg(dataset__resolution=512), "RTX 4090")
    at_1024 = seconds_per_step(_cfg(dataset__resolution=1024), "RTX 4090")
    assert at_1024 / at_512 > 4.5


def test_uncached_latents_cost_the_vae_encode() -> None:
    cached = seconds_per_step(_cfg(dataset__cache_latents=True), "A100")
    uncached = seconds_per_step(_cfg(dataset__cache_latents=False), "A100")
    assert 1.4 < uncached / cached < 1.9  # the encoder at 512² is ~65% of a UNet step's FLOPs


def test_measured_speed_carries_over_batch_and_settings_but_never_to_another_model() -> None:
    sd15 = _cfg(schedule__train_batch_size=2)
    measured_speed.record("NVIDIA A100-SXM4-80GB", sd15, it_per_s=4.0)  # 8 images/s
    assert measured_speed.images_per_second("NVIDIA A100-SXM4-80GB", sd15) == pytest.approx(8.0)
    assert measured_speed.images_per_second("NVIDIA A100-SXM4-80GB",
                                            sd15.with_value("schedule.train_batch_size", 4)) == pytest.approx(8.0)
    checkpointed = sd15.with_value("advanced.gradient_checkpointing", True)
    slower = measured_speed.images_per_second("NVIDIA A100-SXM4-80GB", checkpointed)
    assert slower == pytest.approx(8.0 * model_cost.step_flops(sd15, model_cost.cost_of(sd15))
                                   / model_cost.step_flops(checkpointed, model_cost.cost_of(checkpointed)))
    sdxl = _cfg("/models/sd_xl_base_1.0.safetensors", model__model_family="sdxl", dataset__resolution=1024)
    assert measured_speed.images_per_second("NVIDIA A100-SXM4-80GB", sdxl) is None
    assert measured_speed.images_per_second("NVIDIA H100 80GB HBM3", sd15) is None
    assert measured_speed.images_per_second("NVIDIA A100-SXM4-80GB",
                                            sd15.with_value("precision.mixed_precision", "no")) is None
    estimate = time_estimate(100, sd15.with_value("schedule.train_batch_size", 4), "NVIDIA A100-SXM4-80GB")
    assert estimate.measured and estimate.seconds == pytest.approx(100 * 4 / 8.0)


@pytest.mark.parametrize("damage", ["not json {", json.dumps({"down_block_types": ["SomeNewBlock2D"],
                                                              "up_block_types": [], "block_out_channels": [8]})])
def test_unreadable_or_unknown_configs_fall_back_to_the_familys_figures(tmp_path, damage: str) -> None:
    folder = _small_sd1(tmp_path / "odd", [32, 64, 64, 64])
    (folder / "unet" / "config.json").write_text(damage)
    odd = _cfg(folder)
    assert model_cost.cost_of(odd) is None
    pixels_only = seconds_per_step(_cfg(folder, dataset__resolution=1024), "A100") / seconds_per_step(odd, "A100")
    assert pixels_only == pytest.approx(4.0)
    assert estimate_vram(odd).peak_gib > 3.0  # priced as the released SD1.5


def test_a_measured_speed_is_found_however_the_model_path_was_typed(tmp_path, monkeypatch) -> None:
    folder = _small_sd1(tmp_path / "models" / "small", [32, 64, 64, 64])
    measured_speed.record("cpu", _cfg(folder), it_per_s=3.0)
    monkeypatch.chdir(tmp_path)
    for typed in ("models/small", "models/small/", "./models/../models/small"):
        assert measured_speed.images_per_second("cpu", _cfg(typed)) == pytest.approx(3.0)
