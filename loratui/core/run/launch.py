"""Start a trainer as its own process session (no torch here, so the wizard can call it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from loratui.core.atomic import atomic_write_text
from loratui.core.config import TrainingConfig
from loratui.core.presets import dump_full_config
from loratui.core.run import rundir
from loratui.core.run.events import EventWriter


def output_dir_for(cfg: TrainingConfig, run_dir: Path) -> Path:
    return Path(cfg.saving.output_dir) if cfg.saving.output_dir else run_dir / "output"


def unused_output_name(output_dir: Path, name: str) -> tuple[str, str | None]:
    """A name none of whose files (``NAME.safetensors``, ``NAME-000001…``, ``NAME-step…``) exist yet in
    ``output_dir``: ``name`` itself, or ``name_v2``, ``name_v3``… with a note saying so."""
    try:
        existing = {p.name for p in output_dir.iterdir()} if output_dir.is_dir() else set()
    except OSError:
        existing = set()

    def taken(candidate: str) -> bool:
        pattern = re.compile(rf"^{re.escape(candidate)}(-\d{{6}}|-step\d{{8}})?\.safetensors$")
        return any(pattern.match(n) for n in existing)

    if not taken(name):
        return name, None
    n = 2
    while taken(f"{name}_v{n}"):
        n += 1
    return f"{name}_v{n}", (f"{output_dir} already holds files named {name}; this run saves every file as "
                            f"{name}_v{n} instead (nothing is overwritten)")


def prepare_run(cfg: TrainingConfig, root: Path | None = None) -> Path:
    """Create the run directory and freeze the config into it. The output name is decided here, once for every
    file the run will write, so that no checkpoint of an earlier run is ever overwritten; a changed name is
    said once, as a warning event."""
    run_dir = rundir.create_run_dir(cfg.saving.output_name, root)
    name, note = unused_output_name(output_dir_for(cfg, run_dir), cfg.saving.output_name)
    if note:
        cfg = cfg.with_value("saving.output_name", name)
        with EventWriter(run_dir / rundir.EVENTS) as events:
            events.emit("warning", message=note)
    atomic_write_text(run_dir / rundir.CONFIG, dump_full_config(cfg))
    return run_dir


def trainer_command(run_dir: Path, resume: bool = False, gpus: int = 1) -> list[str]:
    """The trainer's command line; several GPUs go through `accelerate launch` (data parallel)."""
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(gpus),
                "--num_machines", "1", "--dynamo_backend", "no"] if gpus > 1 else [sys.executable]
    return [*launcher, "-m", "loratui.train", str(run_dir), *(["--resume"] if resume else [])]


def launch_detached(run_dir: Path, resume: bool = False, gpus: int = 1) -> int:
    """Start the trainer in a new session: it survives the terminal closing and the SSH link dropping."""
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "DIFFUSERS_VERBOSITY": "error", "PYTHONUNBUFFERED": "1"}
    with open(run_dir / rundir.LOG, "ab") as log:
        proc = subprocess.Popen(trainer_command(run_dir, resume, gpus), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, env=env, close_fds=True)
    rundir.write_pid(run_dir, proc.pid)
    return proc.pid
