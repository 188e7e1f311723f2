"""The trainer process: runs one run directory, speaks only through its files, exits with a status."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from loratui.core.presets import PresetError, load_config
from loratui.core.run import rundir
from loratui.core.run.events import SCHEMA_VERSION, EventWriter
from loratui.core.run.trainer_log import TrainerLog
from loratui.train.model_loading import ModelLoadError
from loratui.train.preflight import PreflightError


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


RESERVE = ".space-reserve"
RESERVE_BYTES = 1024 * 1024  # freed when the run fails, so a full disk still gets its error event and exit status


def _reserve_space(run_dir: Path) -> None:
    with contextlib.suppress(OSError), open(run_dir / RESERVE, "wb") as fh:
        fh.write(b"\0" * RESERVE_BYTES)
        os.fsync(fh.fileno())


def _release_space(run_dir: Path) -> None:
    with contextlib.suppress(OSError):
        (run_dir / RESERVE).unlink(missing_ok=True)


def _append_event(path: Path, type_: str, fields: dict) -> None:
    """Last-resort event write after the buffered writer failed (a full disk): starts on a fresh line, so a
    half-written line before it stays one unreadable line and this one stays readable."""
    record = {"v": SCHEMA_VERSION, "type": type_, "t": round(time.time(), 3), **fields}
    with contextlib.suppress(OSError), open(path, "a", encoding="utf-8") as fh:
        fh.write("\n" + json.dumps(record, ensure_ascii=False, default=str) + "\n")


def _failure(exc: BaseException, run_dir: Path) -> tuple[str, str]:
    """(message, hint) for a run that failed with ``exc``."""
    from loratui.train.loop import TrainingFailed

    if isinstance(exc, (TrainingFailed, PreflightError)):
        return str(exc), exc.hint
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" ({exc.filename})" if exc.filename else ""
        return (f"disk full{where}: {exc.strerror}",
                f"free space on that disk, then continue with `loratui train --resume {run_dir.name}`")
    if isinstance(exc, (ModelLoadError, PresetError, FileNotFoundError, ValueError, ImportError)):
        return str(exc), "fix the setting named above and start the run again"
    return f"{type(exc).__name__}: {exc}", f"see {run_dir / rundir.LOG} for the traceback"


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def run_dir_training(run_dir: Path, resume: bool = False, console=None) -> int:
    """Train the run in ``run_dir``; returns the exit code. ``console`` (optional) also receives each event."""
    quiet_ml_stack()
    from loratui.train.loop import GracefulStop, StopFlag, run

    is_main = _is_main_process()
    if is_main:
        rundir.write_pid(run_dir)
        _reserve_space(run_dir)
    writer = EventWriter(run_dir / rundir.EVENTS) if is_main else None

    def emit(type_: str, **fields) -> None:
        if writer is not None:
            writer.emit(type_, **fields)
        if console is not None:
            console(type_, fields)

    stop = StopFlag(stop_file=run_dir / rundir.STOP)
    _install_signals(stop)
    code, state, message, final = 0, "done", "", None
    try:
        cfg = load_config(run_dir / rundir.CONFIG)
        final = run(cfg, run_dir, emit, stop, resume_from=run_dir / "state" if resume else None)
        message = f"LoRA saved to {final}" if final else "finished"
        ending = ("done", {"state": "done", "final_path": str(final) if final else None})
    except GracefulStop as exc:
        state, message = "stopped", f"stopped on request; saved {exc.path}"
        ending = ("done", {"state": "stopped", "final_path": str(exc.path) if exc.path else None})
    except Exception as exc:  # the run directory must always say how the run ended
        code, state = 1, "failed"
        message, hint = _failure(exc, run_dir)
        if hint.startswith("see "):
            traceback.print_exc()
        ending = ("error", {"message": message, "hint": hint})
    if code and is_main:
        _release_space(run_dir)  # room for the error event and the exit status, even on a full disk
    try:
        emit(ending[0], **ending[1])
        if writer is not None:
            writer.close()
    except OSError:
        _append_event(run_dir / rundir.EVENTS, *ending)
    if is_main:
        _release_space(run_dir)
        try:
            rundir.write_exit_status(run_dir, code, state, message)
        except OSError as exc:
            print(f"could not write {run_dir / rundir.EXIT_STATUS}: {exc}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m loratui.train RUN_DIR [--resume]", file=sys.stderr)
        return 2
    # stdout is trainer.log (see launch_detached): one line per event there, from one process only, so that
    # the monitor's trainer.log panel shows the run as it goes.
    console = TrainerLog(sys.stdout) if _is_main_process() else None
    return run_dir_training(Path(args[0]), resume="--resume" in args[1:], console=console)
