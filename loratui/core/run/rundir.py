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

import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from loratui.core.atomic import atomic_write_text
from loratui.core.home import loratui_home

RunState = Literal["starting", "running", "stopping", "done", "stopped", "failed", "dead", "unreadable"]
FINAL_STATES = ("done", "stopped", "failed", "dead", "unreadable")

CONFIG = "config.yaml"
EVENTS = "events.jsonl"
LOG = "trainer.log"
PID = "pid"
EXIT_STATUS = "exit_status.json"
STOP = "stop"


def runs_root() -> Path:
    """``$LORATUI_HOME/runs``, by default ``~/.loratui/runs``."""
    return loratui_home() / "runs"


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


def _proc_identity(pid: int) -> dict[str, str] | None:
    """What tells this process apart from a later one that reuses its pid: its start time (clock ticks after
    boot, /proc/PID/stat field 22) and its command line. None where /proc cannot tell (gone, or not Linux)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[-1].split()
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read()
    except OSError:
        return None
    # fields[0] is field 3 (state); field 22 (start time) is fields[19].
    return {"state": fields[0].decode(), "start": fields[19].decode(),
            "cmdline": cmdline.replace(b"\0", b" ").decode("utf-8", "replace").strip()}


def write_pid(run_dir: Path, pid: int | None = None) -> None:
    """Record the trainer's pid with what identifies it, so a reused pid is never taken for the trainer."""
    pid = pid or os.getpid()
    record: dict[str, Any] = {"pid": pid}
    identity = _proc_identity(pid)
    if identity is not None:
        record.update(start=identity["start"], cmdline=identity["cmdline"])
    atomic_write_text(run_dir / PID, json.dumps(record) + "\n")


def _read_pid_record(run_dir: Path) -> dict[str, Any] | None:
    """The pid record, or None when missing or not a positive integer pid (a forged ``-1`` must never reach
    ``kill``: it would signal every process the user owns)."""
    try:
        text = (run_dir / PID).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(record, dict):
        record = {"pid": record}  # an older plain-number pid file
    pid = record.get("pid")
    if type(pid) is not int or not 0 < pid < 2**22:
        return None
    return record


def read_pid(run_dir: Path) -> int | None:
    record = _read_pid_record(run_dir)
    return record["pid"] if record else None


def pid_alive(pid: int) -> bool:
    if type(pid) is not int or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, OSError):
        return False
    # A zombie (exited, not yet reaped by its parent) is not running.
    identity = _proc_identity(pid)
    return identity is None or identity["state"] != "Z"


def trainer_pid(run_dir: Path) -> int | None:
    """The pid of this run's live trainer, verified; None when the run's trainer is not running.

    Verified means: a positive pid, alive, and (where /proc can tell) started at the recorded time. A record
    without an identity (an older run) is trusted only if the live process's command line names this run.
    """
    record = _read_pid_record(run_dir)
    if record is None or not pid_alive(record["pid"]):
        return None
    identity = _proc_identity(record["pid"])
    if identity is None:
        # No /proc (not Linux): only a signal-free liveness check was possible; never signal on it.
        return record["pid"] if "start" not in record else None
    if "start" in record:
        # The start time alone tells a reused pid apart; the command line is kept only for people reading the
        # file (it can read empty while the new process is still in exec).
        return record["pid"] if identity["start"] == str(record["start"]) else None
    return record["pid"] if run_dir.name in identity["cmdline"] and "loratui" in identity["cmdline"] else None


def write_exit_status(run_dir: Path, code: int, state: RunState, message: str = "") -> None:
    atomic_write_text(run_dir / EXIT_STATUS, json.dumps({"code": code, "state": state, "message": message}))


def read_exit_status(run_dir: Path) -> dict[str, Any] | None:
    """The exit status, None while there is none; a damaged file reads as state "unreadable" (never raises)."""
    path = run_dir / EXIT_STATUS
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict) or data.get("state") not in FINAL_STATES:
        return {"code": None, "state": "unreadable", "message": f"{path} is damaged; the run's end is unknown"}
    return data


def run_state(run_dir: Path) -> RunState:
    status = read_exit_status(run_dir)
    if status is not None:
        return status["state"]
    if not (run_dir / PID).exists():
        return "starting"
    if trainer_pid(run_dir) is None:
        return "dead"
    return "stopping" if (run_dir / STOP).exists() else "running"


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG).is_file()


def request_stop(run_dir: Path) -> bool:
    """Ask for a graceful stop: the trainer finishes its step, saves, and exits 0. False if it is not running.

    Nothing is written and nothing signalled unless ``run_dir`` is a run whose trainer is verifiably alive.
    """
    if not is_run_dir(run_dir) or read_exit_status(run_dir) is not None:
        return False
    pid = trainer_pid(run_dir)
    if pid is None:
        return False
    (run_dir / STOP).touch()  # the trainer polls this file too: a stop works even where it cannot be signalled
    if _proc_identity(pid) is None:
        return True
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)
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
        return Path(name) if is_run_dir(Path(name)) else None
    runs = list_runs(root)
    if name is None:
        return runs[0].path if runs else None
    matches = [r.path for r in runs if r.name == name or r.name.startswith(name)]
    return matches[0] if len(matches) == 1 else None
