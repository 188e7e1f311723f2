"""The trainer process: runs one run directory, speaks only through its files, exits with a status."""

from __future__ import annotations

import logging
import os
import signal
import sys
import traceback
from pathlib import Path

from loratui.core.presets import PresetError, load_config
from loratui.core.run import rundir
from loratui.core.run.events import EventWriter
from loratui.train.model_loading import ModelLoadError


def quiet_ml_stack() -> None:
    """Keep the trainer log to what matters: no loading progress bars, no optional-kernel notices."""
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def _install_signals(stop) -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the SSH link dropping must not end training

    def on_term(signum, frame) -> None:
        stop.requested = True

    signal.signal(signal.SIGTERM, on_term)


def run_dir_training(run_dir: Path, resume: bool = False, console=None) -> int:
    """Train the run in ``run_dir``; returns the exit code. ``console`` (optional) also receives each event."""
    quiet_ml_stack()
    from loratui.train.loop import GracefulStop, StopFlag, TrainingFailed, run

    is_main = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0
    if is_main:
        rundir.write_pid(run_dir)
    writer = EventWriter(run_dir / rundir.EVENTS) if is_main else None

    def emit(type_: str, **fields) -> None:
        if writer is not None:
            writer.emit(type_, **fields)
        if console is not None:
            console(type_, fields)

    stop = StopFlag(stop_file=run_dir / rundir.STOP)
    _install_signals(stop)
    code, state, message = 0, "done", ""
    try:
        cfg = load_config(run_dir / rundir.CONFIG)
        final = run(cfg, run_dir, emit, stop, resume_from=run_dir / "state" if resume else None)
        message = f"LoRA saved to {final}" if final else "finished"
        emit("done", state="done", final_path=str(final) if final else None)
    except GracefulStop as exc:
        state, message = "stopped", f"stopped on request; saved {exc.path}"
        emit("done", state="stopped", final_path=str(exc.path) if exc.path else None)
    except TrainingFailed as exc:
        code, state, message = 1, "failed", str(exc)
        emit("error", message=str(exc), hint=exc.hint)
    except (ModelLoadError, PresetError, FileNotFoundError, ValueError, ImportError) as exc:
        code, state, message = 1, "failed", str(exc)
        emit("error", message=str(exc), hint="fix the setting named above and start the run again")
    except Exception as exc:  # the run directory must always say how the run ended
        code, state, message = 1, "failed", f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
        emit("error", message=message, hint=f"see {run_dir / rundir.LOG} for the traceback")
    finally:
        if writer is not None:
            writer.close()
    if is_main:
        rundir.write_exit_status(run_dir, code, state, message)
    return code


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m loratui.train RUN_DIR [--resume]", file=sys.stderr)
        return 2
    return run_dir_training(Path(args[0]), resume="--resume" in args[1:])
