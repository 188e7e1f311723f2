"""Stored ``loratui bench`` results: one JSON file per GPU model, model family, resolution and settings.

Layout: ``$LORATUI_HOME/bench/<gpu>/<family>-<resolution>-<settings>.json`` (``~/.loratui/bench`` by default),
written atomically. A result holds one row per batch size tried. Pure Python, so the planner, the wizard and
the monitor read results without importing torch.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from loratui.core.atomic import atomic_write_text
from loratui.core.config import TrainingConfig
from loratui.core.home import loratui_home
from loratui.core.placement import text_encoder_outputs_cached

SCHEMA_VERSION = 1


def bench_root() -> Path:
    """``$LORATUI_HOME/bench``, by default ``~/.loratui/bench`` (beside the runs folder)."""
    return loratui_home() / "bench"


def gpu_slug(gpu_name: str | None) -> str:
    """A folder name for a GPU model (``NVIDIA H100 80GB HBM3`` → ``nvidia-h100-80gb-hbm3``); ``cpu`` for none."""
    if not gpu_name:
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-") or "unknown-gpu"


def settings_of(cfg: TrainingConfig) -> dict[str, Any]:
    """The settings that change speed or memory; two runs with equal settings can share a bench result."""
    return {
        "precision": cfg.precision.mixed_precision,
        "optimizer": cfg.optimizer.optimizer_type,
        "network": cfg.network.network_type + ("-dora" if cfg.network.use_dora else ""),
        "rank": cfg.network.network_dim,
        "gradient_checkpointing": cfg.advanced.gradient_checkpointing,
        "cache_latents": cfg.dataset.cache_latents,
        "cache_text_encoder_outputs": text_encoder_outputs_cached(cfg),  # as the trainer decides it
        "train_text_encoder": cfg.trains_text_encoder,
        "compile": cfg.advanced.compile,
    }


def settings_id(settings: dict[str, Any]) -> str:
    """A short readable file-name part, e.g. ``bf16-adamw-lora16-gc-latents-te``."""
    parts = [str(settings["precision"]), str(settings["optimizer"]).lower(), f"{settings['network']}{settings['rank']}"]
    flags = (("gradient_checkpointing", "gc"), ("cache_latents", "latents"), ("cache_text_encoder_outputs", "tecache"),
             ("train_text_encoder", "te"), ("compile", "compiled"))
    parts += [short for key, short in flags if settings.get(key)]
    return "-".join(parts)


def result_path(gpu_name: str | None, family: str, resolution: int, settings: dict[str, Any],
                root: Path | None = None) -> Path:
    root = root or bench_root()
    return root / gpu_slug(gpu_name) / f"{family}-{resolution}-{settings_id(settings)}.json"


def save_result(result: dict[str, Any], root: Path | None = None) -> Path:
    """Store a bench result (as ``loratui bench --json`` prints it); a newer one replaces the older."""
    path = result_path(result["gpu"], result["family"], result["resolution"], result["settings"], root)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({**result, "schema": SCHEMA_VERSION}, indent=2) + "\n")
    return path


def load_results(root: Path | None = None) -> list[dict[str, Any]]:
    """Every stored result; unreadable files are skipped (a bench result is a cache, never a must)."""
    root = root or bench_root()
    results = []
    for path in sorted(root.glob("*/*.json")) if root.is_dir() else []:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("schema") == SCHEMA_VERSION and data.get("rows"):
            results.append(data)
    return results


def find_result(cfg: TrainingConfig, gpu_name: str | None, root: Path | None = None) -> dict[str, Any] | None:
    """The stored result for this GPU model, family, resolution and settings, if one was measured."""
    path = result_path(gpu_name, cfg.model.model_family, cfg.dataset.resolution, settings_of(cfg), root)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("schema") == SCHEMA_VERSION and data.get("rows") else None


@dataclass(frozen=True)
class Measured:
    """A figure read from a bench result at one batch size."""

    value: float
    batch: int
    exact: bool  # False: interpolated (or held flat) between measured batch sizes


def _ok_rows(result: dict[str, Any], key: str) -> list[tuple[int, float]]:
    return sorted((r["batch"], r[key]) for r in result.get("rows", []) if not r.get("oom") and r.get(key))


def _interpolate(points: list[tuple[int, float]], batch: int) -> Measured | None:
    """Linear in log(batch) between measured sizes; flat beyond the ends (throughput saturates)."""
    if not points:
        return None
    for b, v in points:
        if b == batch:
            return Measured(v, batch, True)
    if batch < points[0][0]:
        return Measured(points[0][1], batch, False)
    if batch > points[-1][0]:
        return Measured(points[-1][1], batch, False)
    for (b0, v0), (b1, v1) in pairwise(points):
        if b0 < batch < b1:
            t = (math.log(batch) - math.log(b0)) / (math.log(b1) - math.log(b0))
            return Measured(v0 + t * (v1 - v0), batch, False)
    return None


def images_per_s_at(result: dict[str, Any], batch: int) -> Measured | None:
    return _interpolate(_ok_rows(result, "images_per_s"), batch)


def peak_vram_at(result: dict[str, Any], batch: int) -> Measured | None:
    """Measured peak GiB at ``batch``; memory grows linearly with batch, so extrapolation is linear too."""
    points = _ok_rows(result, "peak_vram_gib")
    for b, v in points:
        if b == batch:
            return Measured(v, batch, True)
    if len(points) < 2:
        return None
    (b0, v0), (b1, v1) = points[0], points[-1]
    slope = (v1 - v0) / (b1 - b0)
    return Measured(v0 + slope * (batch - b0), batch, False)


def first_oom_batch(result: dict[str, Any]) -> int | None:
    """The smallest batch that ran out of memory in the bench, if any."""
    ooms = [r["batch"] for r in result.get("rows", []) if r.get("oom")]
    return min(ooms) if ooms else None
