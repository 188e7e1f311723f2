"""Resumable training state: adapter weights, optimizer state and progress, saved atomically."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from loratui.core.atomic import atomic_open

if TYPE_CHECKING:
    from loratui.train.loop import Progress, Trainer

STATE_FILE = "training_state.pt"


def _adapter_tensors(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {f"{part.prefix}.{name}": param.detach().cpu().clone()
            for part in trainer.network.parts
            for name, param in part.model.named_parameters() if _is_adapter(name)}


def _is_adapter(name: str) -> bool:
    return any(tag in name for tag in ("lora_", "hada_", "lokr_"))


def save_state(folder: Path, trainer: Trainer, progress: Progress) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / STATE_FILE
    state = {
        "adapter": _adapter_tensors(trainer),
        "optimizer": trainer.optimizer.state_dict(),
        "lr_scheduler": trainer.lr_scheduler.state_dict(),
        "step": progress.step,
        "epoch": progress.epoch,
        "batch_in_epoch": progress.batch_in_epoch,
        "losses": list(progress.losses),
        "train_text_encoder": trainer.network.train_text_encoder,
    }
    with atomic_open(path, "wb") as fh:
        torch.save(state, fh)
    return path


def load_state(folder: Path, trainer: Trainer) -> Progress:
    from loratui.train.loop import Progress

    path = folder / STATE_FILE if folder.is_dir() else folder
    if not path.exists():
        raise FileNotFoundError(f"{path}: no saved training state to resume from (was save_state off?)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    params = {f"{part.prefix}.{name}": param for part in trainer.network.parts
              for name, param in part.model.named_parameters() if _is_adapter(name)}
    missing = set(params) - set(state["adapter"])
    if missing:
        raise ValueError(f"{path}: saved state does not match this network ({len(missing)} tensors missing); "
                         "resume with the same network settings")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(state["adapter"][name].to(param))
    trainer.optimizer.load_state_dict(state["optimizer"])
    if "lr_scheduler" not in state:
        raise ValueError(f"{path}: saved by an older loratui without the learning-rate schedule; it cannot resume "
                         "exactly. Start the run again.")
    trainer.lr_scheduler.load_state_dict(state["lr_scheduler"])
    if not state.get("train_text_encoder", True):
        trainer.network.set_text_encoder_training(False)
    progress = Progress(step=state["step"], epoch=state["epoch"], batch_in_epoch=state["batch_in_epoch"])
    progress.losses = deque(state["losses"])
    return progress
