"""Start a trainer as its own process session (no torch here, so the wizard can call it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from loratui.core.atomic import atomic_write_text
from loratui.core.config import TrainingConfig
from loratui.core.presets import dump_full_config
from loratui.core.run import rundir


def prepare_run(cfg: TrainingConfig, root: Path | None = None) -> Path:
    """Create the run directory and freeze the config into it."""
    run_dir = rundir.create_run_dir(cfg.saving.output_name, root)
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
