"""The run directory: what a detached trainer leaves behind and how viewers find and control it.

Layout of ``<runs root>/<YYYYmmdd-HHMMSS>-<output name>/``::

    config.yaml        the frozen config (every setting)
    events.jsonl       append-only event log (loratui.core.run.events)
    trainer.log        the trainer process's stdout and stderr
    pid                the trainer's process id while it runs
    exit_status.json   written atomically when the trainer exits: {"code", "state", "message"}
    stop               present when a graceful stop was requested
    output/            LoRA files (unless saving.output_dir points elsewhere)
    samples/           sample images
    state/             resumable training state
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from loratui.core.atomic import atomic_write_text

RunState = Literal["starting", "running", "stopping", "done", "stopped", "failed", "dead"]
FINAL_STATES = ("done", "stopped", "failed", "dead")

CONFIG = "config.yaml"
EVENTS = "events.jsonl"
LOG = "trainer.log"
PID = "pid"
EXIT_STATUS = "exit_status.json"
STOP = "stop"


def runs_root() -> Path:
    """``$LORATUI_HOME/runs``, by default ``~/.loratui/runs``."""
    home = os.environ.get("LORATUI_HOME")
    return (Path(home) if home else Path.home() / ".loratui") / "runs"


def create_run_dir(output_name: str, root: Path | None = None, now: float | None = None) -> Path:
    root = root or runs_root()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    base = root / f"{stamp}-{output_name}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    for sub in ("output", "samples", "state"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def write_pid(run_dir: Path, pid: int | None = None) -> None:
    atomic_write_text(run_dir / PID, f"{pid or os.getpid()}\n")


def read_pid(run_dir: Path) -> int | None:
    try:
        return int((run_dir / PID).read_text().strip())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not running.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def write_exit_status(run_dir: Path, code: int, state: RunState, message: str = "") -> None:
    atomic_write_text(run_dir / EXIT_STATUS, json.dumps({"code": code, "state": state, "message": message}))


def read_exit_status(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / EXIT_STATUS).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def run_state(run_dir: Path) -> RunState:
    status = read_exit_status(run_dir)
    if status is not None:
        return status.get("state", "failed")
    pid = read_pid(run_dir)
    if pid is None:
        return "starting"
    if not pid_alive(pid):
        return "dead"
    return "stopping" if (run_dir / STOP).exists() else "running"


def request_stop(run_dir: Path) -> bool:
    """Ask for a graceful stop: the trainer finishes its step, saves, and exits 0. False if it is not running."""
    (run_dir / STOP).touch()
    pid = read_pid(run_dir)
    if pid is None or not pid_alive(pid) or read_exit_status(run_dir) is not None:
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


@dataclass(frozen=True)
class RunInfo:
    path: Path
    name: str
    state: RunState


def list_runs(root: Path | None = None) -> list[RunInfo]:
    """Runs newest first."""
    root = root or runs_root()
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if p.is_dir() and (p / CONFIG).exists()]
    runs.sort(key=lambda p: p.name, reverse=True)
    return [RunInfo(p, p.name, run_state(p)) for p in runs]


def find_run(name: str | None, root: Path | None = None) -> Path | None:
    """A run by directory path, by name (or unique prefix) in the runs root, or the newest when ``name`` is None."""
    if name is not None and Path(name).is_dir():
        return Path(name)
    runs = list_runs(root)
    if name is None:
        return runs[0].path if runs else None
    matches = [r.path for r in runs if r.name == name or r.name.startswith(name)]
    return matches[0] if len(matches) == 1 else None
