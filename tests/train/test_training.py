"""Short real training runs on the tiny model: every network type, every CPU optimizer, faults, resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from loratui.core.planner import FolderCount, plan_from_config
from loratui.train.loop import StopFlag, Trainer, TrainingFailed, run

from .conftest import Recorder, make_config


def _train(tmp_path, cfg, stop=None, resume=None):
    rec = Recorder()
    (tmp_path / "state").mkdir(exist_ok=True)
    final = run(cfg, tmp_path, rec, stop, resume_from=resume)
    return final, rec


@pytest.mark.parametrize(("kind", "extra"), [
    ("lora", {}), ("locon", {"network__conv_dim": 2, "network__conv_alpha": 1.0}), ("loha", {}), ("lokr", {}),
    ("lora", {"network__use_dora": True}),
])
def test_each_network_type_trains_and_saves(tmp_path, tiny_sd1_dir, demo_dataset, kind, extra):
    cfg = make_config(tiny_sd1_dir, demo_dataset, network__network_type=kind, **extra)
    final, rec = _train(tmp_path, cfg)
    assert final is not None and final.name == "t.safetensors"
    steps = rec.of("step")
    assert [s["step"] for s in steps] == [1, 2, 3]
    assert all(s["loss"] > 0 for s in steps)
    keys = load_file(str(final))
    if extra.get("network__use_dora"):
        assert any(k.endswith(".dora_scale") for k in keys)
    if kind == "locon":
        assert any("resnets" in k for k in keys)


@pytest.mark.parametrize("optimizer", ["AdamW", "AdamW8bit", "Lion", "Adafactor", "SGDNesterov", "Prodigy",
                                       "DAdaptAdam"])
def test_each_optimizer_changes_the_weights(tmp_path, tiny_sd1_dir, demo_dataset, optimizer):
    lr = 1.0 if optimizer in ("Prodigy", "DAdaptAdam") else 1e-3
    cfg = make_config(tiny_sd1_dir, demo_dataset, optimizer__optimizer_type=optimizer, optimizer__learning_rate=lr,
                      schedule__max_train_steps=2)
    final, _rec = _train(tmp_path, cfg)
    up = [v for k, v in load_file(str(final)).items() if k.endswith("lora_up.weight")]
    assert any(v.abs().max() > 0 for v in up), "a step must move the zero-initialised up weights"


@pytest.mark.parametrize("scheduler", ["constant_with_warmup", "linear", "cosine_with_restarts", "polynomial"])
def test_schedulers_report_learning_rates(tmp_path, tiny_sd1_dir, demo_dataset, scheduler):
    cfg = make_config(tiny_sd1_dir, demo_dataset, schedule__lr_scheduler=scheduler, schedule__lr_warmup_pct=30.0,
                      schedule__max_train_steps=3, schedule__lr_scheduler_num_cycles=2)
    _, rec = _train(tmp_path, cfg)
    lrs = [s["lrs"]["unet"] for s in rec.of("step")]
    assert len(lrs) == 3 and lrs[0] < 1e-3 + 1e-12


def test_features_run_together(tmp_path, tiny_sd1_dir, demo_dataset):
    """Noise offset, min-SNR, clip skip, caption shuffle/dropout, flip, disk latent cache, samples, reg images."""
    cfg = make_config(
        tiny_sd1_dir, demo_dataset, advanced__noise_offset=0.05, advanced__min_snr_gamma=5.0, advanced__clip_skip=2,
        dataset__shuffle_caption=True, dataset__keep_tokens=1, dataset__caption_tag_dropout_rate=0.2,
        dataset__flip_aug=True, dataset__cache_latents_to_disk=True, dataset__reg_data_dir=str(demo_dataset),
        advanced__gradient_checkpointing=True, network__scale_weight_norms=1.0,
        network__stop_text_encoder_training_pct=50, sampling__sample_every_n_epochs=1,
        sampling__sample_prompts=["sks toy --w 64 --h 64 --s 2 --d 3"], schedule__max_train_steps=4,
    )
    final, rec = _train(tmp_path, cfg)
    assert final.exists()
    assert rec.of("start")[0]["reg_images"] == 6
    assert len(rec.of("sample")) == 1 and (tmp_path / "samples").glob("*.png")
    assert any("text encoder training stopped" in w["message"] for w in rec.of("warning"))
    again = Recorder()
    run(cfg, tmp_path, again)
    assert any("reused" in w["message"] for w in again.of("warning")), "the disk latent cache must be reused"


def test_sdxl_trains(tmp_path, tiny_sdxl_dir, demo_dataset):
    cfg = make_config(tiny_sdxl_dir, demo_dataset, model__model_family="sdxl", dataset__bucket_reso_steps=32,
                      schedule__max_train_steps=2)
    final, _rec = _train(tmp_path, cfg)
    keys = load_file(str(final))
    assert any(k.startswith("lora_te2_") for k in keys) and any(k.startswith("lora_te1_") for k in keys)


def test_v_prediction_model_trains(tmp_path, demo_dataset):
    from loratui.train.tiny_models import build_tiny_sd1

    model = build_tiny_sd1(tmp_path / "v", v_prediction=True)
    cfg = make_config(model, demo_dataset, model__model_family="sd2-v", schedule__max_train_steps=2)
    final, _ = _train(tmp_path, cfg)
    assert final.exists()


def test_total_steps_match_the_planner(tmp_path, tiny_sd1_dir, demo_dataset):
    from PIL import Image

    cfg = make_config(tiny_sd1_dir, demo_dataset, schedule__max_train_steps=None, schedule__max_train_epochs=2)
    folder = next(p for p in demo_dataset.iterdir() if not p.name.startswith("."))
    sizes = tuple(Image.open(p).size for p in sorted(folder.glob("*.png")))
    plan = plan_from_config(cfg, [FolderCount(folder.name, len(sizes), 4, sizes=sizes)])
    trainer = Trainer(cfg, tmp_path, Recorder())
    trainer.setup()
    assert trainer.total_steps == plan.exact_total


def test_nan_loss_stops_with_overcooked_message(tmp_path, tiny_sd1_dir, demo_dataset):
    cfg = make_config(tiny_sd1_dir, demo_dataset, optimizer__optimizer_type="SGDNesterov",
                      optimizer__learning_rate=1e30, optimizer__max_grad_norm=0.0, schedule__max_train_steps=6)
    with pytest.raises(TrainingFailed, match="overcooked") as info:
        _train(tmp_path, cfg)
    assert "lower the learning rate" in info.value.hint
    assert not (tmp_path / "output" / "t.safetensors").exists()


def test_out_of_memory_names_what_to_lower(tmp_path, tiny_sd1_dir, demo_dataset, monkeypatch):
    def out_of_memory(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Trainer, "loss_for", out_of_memory)
    with pytest.raises(TrainingFailed, match="out of memory") as info:
        _train(tmp_path, make_config(tiny_sd1_dir, demo_dataset))
    assert "gradient_checkpointing" in info.value.hint


class StopAfter(StopFlag):
    def __init__(self, steps: int) -> None:
        super().__init__()
        self.left = steps

    def is_set(self) -> bool:
        self.left -= 1
        return self.left <= 0


def test_resume_continues_exactly(tmp_path, tiny_sd1_dir, demo_dataset):
    from loratui.train.loop import GracefulStop

    cfg = make_config(tiny_sd1_dir, demo_dataset, schedule__max_train_steps=None, schedule__max_train_epochs=2,
                      schedule__lr_scheduler="cosine")
    straight_dir, resumed_dir = tmp_path / "a", tmp_path / "b"
    straight_dir.mkdir(), resumed_dir.mkdir()
    final_a, rec_a = _train(straight_dir, cfg)
    with pytest.raises(GracefulStop) as info:
        _train(resumed_dir, cfg, stop=StopAfter(5))
    assert info.value.path.name == "t-step00000005.safetensors"
    final_b, rec_b = _train(resumed_dir, cfg, resume=resumed_dir / "state")
    assert rec_b.of("step")[0]["step"] == 6
    assert [s["lrs"] for s in rec_b.of("step")] == [s["lrs"] for s in rec_a.of("step")][5:]
    a, b = load_file(str(final_a)), load_file(str(final_b))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)


def test_training_continues_from_existing_lora_weights(tmp_path, tiny_sd1_dir, demo_dataset):
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir(), second_dir.mkdir()
    cfg = make_config(tiny_sd1_dir, demo_dataset, network__network_dim=8, network__network_alpha=4.0)
    first, _ = _train(first_dir, cfg)
    follow = make_config(tiny_sd1_dir, demo_dataset, network__network_weights=str(first),
                         network__dim_from_weights=True, optimizer__learning_rate=1e-12, schedule__max_train_steps=1)
    trainer = Trainer(follow, second_dir, Recorder())
    trainer.setup()
    assert (trainer.network.dim, trainer.network.alpha) == (8, 4.0)
    saved = load_file(str(first))
    key = next(k for k in saved if k.startswith("lora_unet_") and k.endswith("lora_up.weight"))
    path = next(p for p, n in trainer.network.unet.names.items() if key.startswith(n + "."))
    live = trainer.network.unet.model.get_submodule(path).lora_B["default"].weight
    torch.testing.assert_close(live.detach(), saved[key].float())


def test_lokr_weights_round_trip_through_export_and_resume(tmp_path, tiny_sd1_dir, demo_dataset):
    from diffusers import StableDiffusionPipeline

    from loratui.train.export import build_metadata, save_lora
    from loratui.train.networks import attach_network
    from loratui.train.resume_weights import load_kohya_weights

    cfg = make_config(tiny_sd1_dir, demo_dataset, network__network_type="lokr", network__network_dim=16,
                      network__network_alpha=4.0)
    source = StableDiffusionPipeline.from_pretrained(tiny_sd1_dir)
    network = attach_network(cfg, source.unet, [source.text_encoder])
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in network.unet.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    x, t, hidden = torch.randn(1, 4, 8, 8, generator=gen), torch.tensor([10]), torch.randn(1, 77, 32, generator=gen)
    with torch.no_grad():
        want = source.unet(x, t, hidden).sample
    path = save_lora(network, tmp_path / "k.safetensors", build_metadata(cfg, run_info={}), torch.float32)
    target = StableDiffusionPipeline.from_pretrained(tiny_sd1_dir)
    load_kohya_weights(attach_network(cfg, target.unet, [target.text_encoder]), path)
    with torch.no_grad():
        got = target.unet(x, t, hidden).sample
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_compiled_unet_trains_samples_and_saves_the_same_file(tmp_path, tiny_sd1_dir, demo_dataset, monkeypatch):
    """`advanced.compile` wraps the UNet in torch.compile's module: sampling, offloading and export must see
    through it. Inductor's code generation takes minutes on this CPU, so the test compiles with the "eager"
    backend: the same wrapper and graph capture, without generated kernels."""
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compile_(model, backend="eager"))
    changes = {"sampling__sample_every_n_epochs": 1, "sampling__sample_prompts": ["sks toy --w 64 --h 64 --s 2"],
               "schedule__max_train_steps": 2}
    (tmp_path / "compiled").mkdir()
    (tmp_path / "plain").mkdir()
    compiled, rec = _train(tmp_path / "compiled", make_config(tiny_sd1_dir, demo_dataset, advanced__compile=True,
                                                              **changes))
    plain, _ = _train(tmp_path / "plain", make_config(tiny_sd1_dir, demo_dataset, **changes))
    assert len(rec.of("sample")) == 1 and Path(rec.of("sample")[0]["path"]).is_file()
    got, want = load_file(str(compiled)), load_file(str(plain))
    assert got.keys() == want.keys()  # kohya names, no "_orig_mod" from the wrapper
    for key in want:
        assert torch.allclose(got[key].float(), want[key].float(), atol=1e-3), key
