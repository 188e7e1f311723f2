"""Learning-rate schedule and gradient accumulation as sd-scripts runs them: ``train_util.get_scheduler_fix``
(diffusers/transformers ``get_scheduler``, stepped once per optimizer step) and accelerate's accumulation over
sd-scripts' per-epoch DataLoader (``train_network.py``: ceil(batches / accumulation) steps per epoch)."""

from __future__ import annotations

import pytest
import torch
from diffusers.optimization import get_scheduler
from PIL import Image

from loratui.core.planner import FolderCount, plan_from_config
from loratui.train.loop import Trainer

from .conftest import Recorder, make_config

SCHEDULERS = ["constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"]


def _expected_lrs(cfg, total: int, warmup: int) -> list[list[float]]:
    """The LR of each optimizer step from diffusers' own scheduler on the same base rates."""
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(2)]
    optimizer = torch.optim.SGD([{"params": [params[0]], "lr": cfg.unet_lr},
                                 {"params": [params[1]], "lr": cfg.text_encoder_lr}], lr=cfg.unet_lr)
    scheduler = get_scheduler(cfg.schedule.lr_scheduler, optimizer, num_warmup_steps=warmup,
                              num_training_steps=total, num_cycles=cfg.schedule.lr_scheduler_num_cycles,
                              power=cfg.schedule.lr_scheduler_power)
    lrs = []
    for _ in range(total):
        lrs.append(scheduler.get_last_lr())
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize("warmup_pct", [0.0, 40.0])
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_every_step_runs_at_diffusers_schedule(tmp_path, tiny_sd1_dir, demo_dataset, scheduler, warmup_pct):
    if scheduler == "constant" and warmup_pct:
        pytest.skip("constant has no warm-up (sd-scripts refuses one)")
    cfg = make_config(tiny_sd1_dir, demo_dataset, schedule__lr_scheduler=scheduler, schedule__lr_warmup_pct=warmup_pct,
                      schedule__max_train_epochs=2, schedule__max_train_steps=5, schedule__lr_scheduler_num_cycles=2,
                      schedule__lr_scheduler_power=2.0, dataset__cache_latents=True)
    trainer = Trainer(cfg, tmp_path, rec := Recorder())
    trainer.setup()
    trainer.train()
    got = [list(s["lrs"].values()) for s in rec.of("step")]
    want = _expected_lrs(cfg, 5, round(5 * warmup_pct / 100))
    assert len(got) == 5
    for step, (g, w) in enumerate(zip(got, want, strict=True), start=1):
        assert g == pytest.approx(w, rel=1e-9, abs=1e-15), f"step {step}"
    if warmup_pct:
        assert got[0] == [0.0, 0.0], "sd-scripts' first warm-up step runs at 0"


class CountingTrainer(Trainer):
    """Records which dataset entries each micro-batch trains on."""

    def loss_for(self, batch, gen, rng, epoch):
        self.used.append((epoch, tuple(item.path.name for item in batch)))
        return super().loss_for(batch, gen, rng, epoch)


def test_accumulation_syncs_at_each_epoch_end(tmp_path):
    """10 batches per epoch, accumulation 4, 3 epochs: sd-scripts makes 4+4+2 micro-batches per step, 9 steps."""
    from loratui.train.tiny_models import build_tiny_sd1

    data = tmp_path / "data" / "1_sks"
    data.mkdir(parents=True)
    for i in range(10):
        Image.new("RGB", (64, 64), (i * 20, 0, 0)).save(data / f"{i}.png")
    model = build_tiny_sd1(tmp_path / "model")
    cfg = make_config(model, data.parent, schedule__max_train_steps=None, schedule__max_train_epochs=3,
                      schedule__train_batch_size=1, optimizer__gradient_accumulation_steps=4,
                      schedule__lr_scheduler="cosine", dataset__cache_latents=True)
    plan = plan_from_config(cfg, [FolderCount("1_sks", 10, 1, sizes=((64, 64),) * 10)])
    trainer = CountingTrainer(cfg, tmp_path / "run", rec := Recorder())
    trainer.used = []
    trainer.setup()
    trainer.train()
    assert plan.exact_total == 9
    assert rec.of("start")[0]["total_steps"] == 9
    assert [s["step"] for s in rec.of("step")] == list(range(1, 10))
    for epoch in range(3):
        names = [n for e, batch in trainer.used if e == epoch for n in batch]
        assert sorted(names) == sorted(f"{i}.png" for i in range(10)), f"epoch {epoch} used every image once"
    # the cosine schedule runs to its end rather than stopping at a quarter of its peak
    assert rec.of("step")[-1]["lrs"]["unet"] == pytest.approx(_expected_lrs(cfg, 9, 0)[-1][0])


def test_adafactor_defaults_follow_sd_scripts_get_optimizer(tiny_sd1_dir, demo_dataset):
    """``train_util.get_optimizer``: relative_step=True unless told (its own LR, group LRs dropped, reported by
    AdafactorSchedule); warmup_init forces it on; relative_step=False uses the configured LR and scheduler."""
    from loratui.train.optim import make_optimizer, make_scheduler

    def build(args):
        cfg = make_config(tiny_sd1_dir, demo_dataset, optimizer__optimizer_type="Adafactor",
                          optimizer__optimizer_args=args, schedule__lr_scheduler="linear")
        warnings: list[str] = []
        groups = [{"params": [torch.nn.Parameter(torch.ones(4, 4))], "lr": 1e-3, "name": "unet"}]
        optimizer = make_optimizer(cfg, groups, warnings.append)
        return optimizer, make_scheduler(cfg, optimizer, 10), warnings

    optimizer, scheduler, warnings = build({})
    assert optimizer.defaults["relative_step"] is True and optimizer.defaults["lr"] is None
    assert type(scheduler).__name__ == "AdafactorSchedule"
    assert any("relative_step=True" in w for w in warnings)
    assert build({"warmup_init": True, "relative_step": False})[0].defaults["relative_step"] is True
    optimizer, scheduler, warnings = build({"relative_step": False})
    assert optimizer.defaults["relative_step"] is False and not warnings
    assert scheduler.get_last_lr() == [1e-3]
