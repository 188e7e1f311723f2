"""Optimizers and the learning-rate schedule (a plain function of the step, as in nanoGPT)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from loratui.core.config import TrainingConfig


def lr_multiplier(cfg: TrainingConfig, total_steps: int) -> Callable[[int], float]:
    """step → factor on each group's base learning rate."""
    sched = cfg.schedule
    kind = sched.lr_scheduler
    warmup = round(total_steps * sched.lr_warmup_pct / 100) if kind != "constant" else 0
    cycles, power = sched.lr_scheduler_num_cycles, sched.lr_scheduler_power

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind in ("constant", "constant_with_warmup"):
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if kind == "linear":
            return 1.0 - progress
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if kind == "cosine_with_restarts":
            if progress >= 1.0:
                return 0.0
            return 0.5 * (1.0 + math.cos(math.pi * ((cycles * progress) % 1.0)))
        return (1.0 - progress) ** power  # polynomial

    return factor


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
        from transformers.optimization import Adafactor

        args.setdefault("scale_parameter", False)
        args.setdefault("relative_step", False)
        args.setdefault("warmup_init", False)
        return Adafactor(groups, **args)
    if name == "Prodigy":
        from prodigyopt import Prodigy

        return Prodigy(groups, **args)
    if name == "DAdaptAdam":
        from dadaptation import DAdaptAdam

        return DAdaptAdam(groups, **args)
    raise ValueError(f"unknown optimizer {name}")
