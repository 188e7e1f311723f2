"""Training speed the trainer really reached on this machine, per device and resolution.

The monitor records it when a run reports its it/s; ``speed.time_estimate`` then gives a run's time from it
(the Steps screen says "measured") instead of the rough reference table (which it calls "estimated").
Stored as images per second so that a different batch size still gives a fair estimate.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from loratui.core.atomic import atomic_write_text

FILE_NAME = "measured-speed.json"


def store_path() -> Path:
    """``$LORATUI_HOME/measured-speed.json``, by default under ``~/.loratui``."""
    home = os.environ.get("LORATUI_HOME")
    return (Path(home) if home else Path.home() / ".loratui") / FILE_NAME


def _key(device: str, resolution: int) -> str:
    return f"{device.strip().lower()}@{int(resolution)}"


def _read(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # a missing or damaged store only means "no measurement yet"
    return {k: float(v) for k, v in data.items() if isinstance(v, int | float)} if isinstance(data, dict) else {}


def record(device: str, resolution: int, it_per_s: float, images_per_step: int, path: Path | None = None) -> None:
    """Remember the images per second a run reached on ``device`` at ``resolution`` (newest wins)."""
    if it_per_s <= 0 or images_per_step <= 0 or not device:
        return
    path = path or store_path()
    data = _read(path)
    data[_key(device, resolution)] = it_per_s * images_per_step
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True))


def images_per_second(device: str, resolution: int, path: Path | None = None) -> float | None:
    return _read(path or store_path()).get(_key(device, resolution))
