"""The trainer keeps the frozen VAE and text encoders off the training device once their outputs are cached, as
sd-scripts does (train_network.py after ``new_cache_latents``; sdxl_train_network.py
``cache_text_encoder_outputs_if_needed``; train_util.py ``sample_images_common`` for samples).

There is no GPU here, so the device move itself is a no-op; what the tests see is the rest of the policy: the
start event names what was moved off, parked text encoders wait in fp32 (bf16 while they are in use), no caption
is encoded after set-up, and samples and weights are the same bytes as without offloading.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from loratui.train.loop import Trainer
from tests.train.conftest import Recorder, make_config

PROMPT = "sks toy --w 64 --h 64 --s 2 --d 3"


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """These tests train in bf16 (on the CPU the only visible effect of parking is the fp32 wait); accelerate keeps
    one precision per process, so start and leave its state fresh, as accelerate's own test scripts do."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


def _train(tmp_path: Path, cfg, offload: bool) -> tuple[Trainer, Recorder, dict]:
    rec = Recorder()
    trainer = Trainer(cfg, tmp_path, rec)
    if not offload:
        trainer.offload_device = None
    trainer.setup()
    at_setup = {"te_dtype": trainer.models.text_encoders[0].dtype, "cached": len(trainer.te_cache)}
    trainer.train()
    return trainer, rec, at_setup


def test_cached_parts_are_parked_and_samples_and_weights_do_not_change(tmp_path, tiny_sd1_dir, demo_dataset):
    cfg = make_config(tiny_sd1_dir, demo_dataset, precision__mixed_precision="bf16",
                      network__network_train_unet_only=True, advanced__cache_text_encoder_outputs=True,
                      dataset__caption_dropout_rate=0.5, schedule__max_train_steps=2,
                      sampling__sample_every_n_epochs=1, sampling__sample_prompts=[PROMPT])
    parked, rec, at_setup = _train(tmp_path / "parked", cfg, offload=True)
    kept, kept_rec, kept_at_setup = _train(tmp_path / "kept", cfg, offload=False)

    (start,) = rec.of("start")
    assert start["resident"] == ["unet"] and start["offloaded"] == ["text_encoders", "vae"]
    assert kept_rec.of("start")[0]["offloaded"] == []
    # parked text encoders wait in fp32 (sd-scripts: fp16 does not run on the CPU); in use they are bf16
    assert at_setup["te_dtype"] == torch.float32 and kept_at_setup["te_dtype"] == torch.bfloat16
    assert parked.models.text_encoders[0].dtype == torch.float32  # parked again after the samples
    # every caption, and the empty one of caption dropout, was encoded at set-up; the steps encoded nothing
    assert at_setup["cached"] == len(parked.te_cache) == len({i.caption for i in parked.data.items}) + 1
    (sample,) = rec.of("sample")
    (kept_sample,) = kept_rec.of("sample")
    assert Path(sample["path"]).read_bytes() == Path(kept_sample["path"]).read_bytes()
    got, want = load_file(str(parked.last_saved)), load_file(str(kept.last_saved))
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)


@pytest.mark.parametrize(("changes", "offloaded"), [
    ({}, ["vae"]),  # the defaults train the text encoders; latents cached: the VAE alone goes
    ({"dataset__cache_latents": False}, []),
    ({"network__network_train_unet_only": True, "advanced__cache_text_encoder_outputs": True,
      "dataset__cache_latents": False}, ["text_encoders"]),
    # shuffled captions are new text at each step: the encoders stay and keep encoding
    ({"network__network_train_unet_only": True, "advanced__cache_text_encoder_outputs": True,
      "dataset__shuffle_caption": True}, ["vae"]),
])
def test_what_the_steps_use_stays_and_training_runs(tmp_path, tiny_sd1_dir, demo_dataset, changes, offloaded):
    cfg = make_config(tiny_sd1_dir, demo_dataset, precision__mixed_precision="bf16", schedule__max_train_steps=1,
                      **changes)
    trainer, rec, at_setup = _train(tmp_path, cfg, offload=True)
    (start,) = rec.of("start")
    assert start["offloaded"] == offloaded
    assert sorted(start["resident"] + offloaded) == ["text_encoders", "unet", "vae"]
    te_dtype = torch.float32 if "text_encoders" in offloaded else torch.bfloat16
    assert at_setup["te_dtype"] == trainer.models.text_encoders[0].dtype == te_dtype
    assert bool(trainer.te_cache) == ("text_encoders" in offloaded)  # shuffled captions are not cached one-off
    assert [s["step"] for s in rec.of("step")] == [1] and trainer.last_saved.exists()


def test_a_caption_missing_from_the_cache_brings_the_parked_encoders_back(tmp_path, tiny_sd1_dir, demo_dataset):
    cfg = make_config(tiny_sd1_dir, demo_dataset, precision__mixed_precision="bf16",
                      network__network_train_unet_only=True, advanced__cache_text_encoder_outputs=True)
    trainer = Trainer(cfg, tmp_path, Recorder())
    trainer.setup()
    kept = Trainer(cfg, tmp_path / "kept", Recorder())
    kept.offload_device = None
    kept.setup()
    hidden, _ = trainer._text(["a caption written after set-up"])
    want, _ = kept._text(["a caption written after set-up"])
    assert torch.equal(hidden, want) and hidden.dtype == torch.bfloat16  # encoded as by resident encoders
    assert "a caption written after set-up" in trainer.te_cache
    assert trainer.models.text_encoders[0].dtype == torch.float32  # and parked again


@pytest.mark.parametrize(("changes", "aside"), [
    ({"dataset__cache_latents": True}, True),
    ({"dataset__cache_latents": False, "network__network_train_unet_only": True,
      "advanced__cache_text_encoder_outputs": True, "dataset__shuffle_caption": False}, True),
    ({"dataset__cache_latents": False}, False),  # nothing to cache: the UNet is not moved twice for nothing
])
def test_the_unet_waits_off_the_device_while_the_caches_fill(tmp_path, tiny_sd1_dir, demo_dataset, changes, aside):
    """sd-scripts' cache_text_encoder_outputs_if_needed moves the UNet off while it caches, so the caching peak
    is the encoders' alone; the UNet is back, where it trained, before the first step."""
    cfg = make_config(tiny_sd1_dir, demo_dataset, **changes)
    trainer = Trainer(cfg, tmp_path, Recorder())
    seen: list[frozenset[str]] = []
    cache_latents = trainer._latent_cache

    def watched() -> object:
        seen.append(frozenset(trainer.offload.parked))
        return cache_latents()

    trainer._latent_cache = watched
    trainer.setup()
    assert ("unet" in seen[0]) is aside
    assert "unet" not in trainer.offload.parked
    assert next(trainer.models.unet.parameters()).device == trainer.device
    trainer.train()
