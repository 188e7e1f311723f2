"""Training speed the trainer really reached on this machine, per device, model and precision.

The monitor records it when a run ends; ``speed.time_estimate`` then gives a run's time from it (the Steps
screen says "measured") instead of the rough reference table (which it calls "estimated").
Stored as FLOPs per second (images/s × the step's FLOPs per image, from ``model_cost``), so that another
batch size, resolution or setting such as gradient checkpointing or latent caching on the same model still
gets a fair figure, while another model (SD1.5 after SDXL) or precision never reuses it.
"""

from __future__ import annotations

import json
from pathlib import Path

from loratui.core import model_cost
from loratui.core.atomic import atomic_write_text
from loratui.core.config import TrainingConfig
from loratui.core.home import loratui_home

FILE_NAME = "measured-speed.json"


def store_path() -> Path:
    """``$LORATUI_HOME/measured-speed.json``, by default under ``~/.loratui``."""
    return loratui_home() / FILE_NAME


def _key(device: str, cfg: TrainingConfig) -> str:
    model = cfg.model.pretrained_model_name_or_path
    local = Path(model).expanduser()
    model = str(local.resolve()) if local.exists() else model.rstrip("/\\")  # one key however it was typed
    return f"{device.strip().lower()}|{cfg.model.model_family}|{model}|{cfg.precision.mixed_precision}"


def _read(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # a missing or damaged store only means "no measurement yet"
    return {k: float(v) for k, v in data.items() if isinstance(v, int | float)} if isinstance(data, dict) else {}


def record(device: str, cfg: TrainingConfig, it_per_s: float, path: Path | None = None) -> None:
    """Remember the speed a run of ``cfg`` reached on ``device`` (newest wins)."""
    cost = model_cost.cost_of(cfg)
    images = cfg.schedule.train_batch_size * cfg.optimizer.gradient_accumulation_steps
    if it_per_s <= 0 or not device or cost is None:
        return
    path = path or store_path()
    data = _read(path)
    data[_key(device, cfg)] = it_per_s * images * model_cost.step_flops(cfg, cost)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True))


def images_per_second(device: str, cfg: TrainingConfig, path: Path | None = None) -> float | None:
    """The images/s ``cfg`` would reach on ``device``, from an earlier run of the same model and precision."""
    flops_per_s = _read(path or store_path()).get(_key(device, cfg))
    cost = model_cost.cost_of(cfg)
    if not flops_per_s or cost is None:
        return None
    return flops_per_s / model_cost.step_flops(cfg, cost)
