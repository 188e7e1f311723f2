"""Optimizers and the learning-rate schedule, built as sd-scripts builds them (``train_util.get_optimizer``,
``get_scheduler_fix``)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from loratui.core.config import TrainingConfig


def make_scheduler(cfg: TrainingConfig, optimizer: torch.optim.Optimizer, total_steps: int):
    """The LR schedule sd-scripts builds (``train_util.get_scheduler_fix``): diffusers' ``get_scheduler``, stepped
    once per optimizer step, so optimizer step n runs at λ(n−1) (step 1 at 0 during warm-up).

    Adafactor with ``relative_step`` computes its own rate; as in sd-scripts it gets ``AdafactorSchedule``,
    which only reports that rate."""
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps it
    if type(inner).__name__ == "Adafactor" and inner.defaults.get("relative_step"):
        from transformers.optimization import AdafactorSchedule

        return AdafactorSchedule(inner, cfg.optimizer.learning_rate)
    from diffusers.optimization import get_scheduler

    sched = cfg.schedule
    return get_scheduler(sched.lr_scheduler, optimizer, num_warmup_steps=warmup_steps(cfg, total_steps),
                         num_training_steps=total_steps, num_cycles=sched.lr_scheduler_num_cycles,
                         power=sched.lr_scheduler_power)


def warmup_steps(cfg: TrainingConfig, total_steps: int) -> int:
    return round(total_steps * cfg.schedule.lr_warmup_pct / 100) if cfg.schedule.lr_scheduler != "constant" else 0


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023): sign of an interpolated momentum; one state tensor per parameter."""

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                exp_avg = state["exp_avg"]
                p.mul_(1 - group["lr"] * group["weight_decay"])
                update = exp_avg.mul(beta1).add(p.grad, alpha=1 - beta1).sign_()
                p.add_(update, alpha=-group["lr"])
                exp_avg.mul_(beta2).add_(p.grad, alpha=1 - beta2)
        return loss


def _adamw8bit(groups, args, warn: Callable[[str], None]):
    try:
        import bitsandbytes as bnb
    except ImportError:
        warn("bitsandbytes is not installed; AdamW8bit falls back to AdamW (more memory)")
        return torch.optim.AdamW(groups, **args)
    if not torch.cuda.is_available():
        warn("AdamW8bit saves memory only on CUDA; on this machine it runs bitsandbytes' CPU path")
    return bnb.optim.AdamW8bit(groups, **args)


def _adafactor(groups: list[dict], args: dict, warn: Callable[[str], None]):
    """sd-scripts' defaults (``train_util.get_optimizer``): ``relative_step=True`` unless told (forced on by
    ``warmup_init``); then Adafactor picks its own rate, so the group learning rates are dropped."""
    from transformers.optimization import Adafactor

    args.setdefault("relative_step", True)
    if args.get("warmup_init"):
        args["relative_step"] = True
    if args["relative_step"]:
        warn("Adafactor with relative_step=True sets its own learning rate; unet_lr, text_encoder_lr and the "
             "scheduler are ignored (set optimizer_args relative_step: false to use them)")
        groups = [{k: v for k, v in g.items() if k != "lr"} for g in groups]
        return Adafactor(groups, lr=None, **args)
    return Adafactor(groups, **args)


def make_optimizer(cfg: TrainingConfig, groups: list[dict], warn: Callable[[str], None]) -> torch.optim.Optimizer:
    name = cfg.optimizer.optimizer_type
    args = dict(cfg.optimizer.optimizer_args)
    if "betas" in args:
        args["betas"] = tuple(args["betas"])
    if name == "AdamW":
        if all(p.is_cuda for g in groups for p in g["params"]):
            args.setdefault("fused", True)  # one kernel for all LoRA tensors instead of several per tensor
        return torch.optim.AdamW(groups, **args)
    if name == "AdamW8bit":
        return _adamw8bit(groups, args, warn)
    if name == "Lion":
        return Lion(groups, **args)
    if name == "SGDNesterov":
        args.setdefault("momentum", 0.9)
        return torch.optim.SGD(groups, nesterov=True, **args)
    if name == "Adafactor":

        return _adafactor(groups, args, warn)
    if name == "Prodigy":
        from prodigyopt import Prodigy

        return Prodigy(groups, **args)
    if name == "DAdaptAdam":
        from dadaptation import DAdaptAdam

        return DAdaptAdam(groups, **args)
    raise ValueError(f"unknown optimizer {name}")
