"""`loratui train`, `runs`, `stop` and `demo`. The ML stack is imported only inside the commands that train."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from loratui.cli import CommandError
from loratui.core.planner import format_duration
from loratui.core.presets import PresetError, load_config
from loratui.core.run import rundir
from loratui.core.run.events import read_snapshot
from loratui.core.run.launch import launch_detached, prepare_run
from loratui.core.run.trainer_log import start_line

DEFAULT_DEMO_DIR = "loratui-demo"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a LoRA from a config/preset YAML (foreground, or --detach)")
    p.add_argument("config", nargs="?", help="the YAML config (not needed with --resume)")
    p.add_argument("--detach", action="store_true", help="run in the background; survives logout and SSH drops")
    p.add_argument("--resume", metavar="RUN", help="continue a stopped run from its saved state")
    p.add_argument("--gpus", type=int, default=1, help="train data-parallel on N GPUs (through accelerate launch)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("runs", help="list training runs, newest first")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("stop", help="graceful stop: finish the step, save a checkpoint and state")
    p.add_argument("run", nargs="?", help="run name or directory (default: the newest running one)")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("demo", help="the whole flow on a tiny offline model and dataset (no GPU, no downloads)")
    p.add_argument("--headless", action="store_true", help="train without the wizard and print where the LoRA is")
    p.add_argument("--dir", default=DEFAULT_DEMO_DIR, help=f"where to build the demo (default: ./{DEFAULT_DEMO_DIR})")
    p.set_defaults(func=cmd_demo)


# --- console progress ------------------------------------------------------------------------------------


class ConsoleProgress:
    """Prints a kohya-like progress line and every noteworthy event."""

    def __init__(self) -> None:
        self.total = 0
        self.started = time.monotonic()

    def __call__(self, kind: str, e: dict) -> None:
        if kind == "start":
            self.total = e["total_steps"]
            print(start_line(e), flush=True)
        elif kind == "step":
            rate = e.get("it_per_s")
            eta = format_duration(e["eta_s"]) if e.get("eta_s") is not None else "?"
            pct = 100 * e["step"] // max(1, self.total)
            elapsed = format_duration(time.monotonic() - self.started)
            speed = f"{rate:.2f}it/s" if rate else "?it/s"
            end = "\n" if e["step"] >= self.total else ""
            print(f"\rsteps: {pct:3d}% {e['step']}/{self.total} [{elapsed}<{eta}, {speed}, "
                  f"avr_loss={e['avg_loss']:.4f}]", end=end, flush=True)
        elif kind == "checkpoint":
            print(f"\nsaved {e['path']} (epoch {e['epoch']}, step {e['step']})", flush=True)
        elif kind == "sample":
            print(f"\nsample {e['path']}", flush=True)
        elif kind == "warning":
            print(f"\nwarning: {e['message']}", flush=True)
        elif kind == "error":
            print(f"\nerror: {e['message']}\nhint: {e['hint']}", file=sys.stderr, flush=True)


def _quiet_ml_stack() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def train_foreground(run_dir: Path, resume: bool = False) -> int:
    _quiet_ml_stack()
    from loratui.train.process import run_dir_training

    print(f"run directory: {run_dir}")
    code = run_dir_training(run_dir, resume=resume, console=ConsoleProgress())
    status = rundir.read_exit_status(run_dir) or {}
    print(status.get("message", ""))
    return code


def cmd_train(args: argparse.Namespace) -> int:
    if args.resume:
        run_dir = rundir.find_run(args.resume)
        if run_dir is None:
            raise CommandError(f"no run named {args.resume!r}; see `loratui runs`")
        if rundir.run_state(run_dir) in ("running", "stopping"):
            raise CommandError(f"{run_dir.name} is still running; stop it first with `loratui stop {run_dir.name}`")
        (run_dir / rundir.STOP).unlink(missing_ok=True)
        (run_dir / rundir.EXIT_STATUS).unlink(missing_ok=True)
    else:
        if not args.config:
            raise CommandError("give a config YAML (e.g. from `loratui preset export`) or --resume RUN")
        try:
            cfg = load_config(args.config)
        except PresetError as exc:
            raise CommandError(str(exc)) from exc
        _preflight(cfg)
        run_dir = prepare_run(cfg)
        for note in read_snapshot(run_dir / rundir.EVENTS).warnings:
            print(f"note: {note}", file=sys.stderr)
    if args.detach or args.gpus > 1:
        pid = launch_detached(run_dir, resume=bool(args.resume), gpus=args.gpus)
        print(run_dir)
        print(f"trainer running as pid {pid}; watch it with `loratui attach {run_dir.name}`, "
              f"stop it with `loratui stop {run_dir.name}`", file=sys.stderr)
        return 0
    return train_foreground(run_dir, resume=bool(args.resume))


def _preflight(cfg) -> None:
    """The trainer's own pre-flight, here too, so a detached run never starts only to fail."""
    from loratui.train.preflight import PreflightError, check_before_training

    output_dir = Path(cfg.saving.output_dir) if cfg.saving.output_dir else rundir.runs_root()
    try:
        check_before_training(cfg, output_dir)
    except PreflightError as exc:
        raise CommandError(f"{exc}; {exc.hint}") from exc


def cmd_runs(args: argparse.Namespace) -> int:
    runs = rundir.list_runs()
    if not runs:
        print(f"no runs yet in {rundir.runs_root()}")
        return 0
    for info in runs:
        snap = read_snapshot(info.path / rundir.EVENTS)
        state = info.state
        if snap.unreadable_events:
            # One damaged run never hides the others: say what was skipped and go on.
            print(f"warning: {info.path / rundir.EVENTS}: skipped {snap.unreadable_events} unreadable line(s)",
                  file=sys.stderr)
            state = "unreadable"
        loss = f"loss {snap.avg_losses[-1]:.4f}" if snap.avg_losses else ""
        print(f"{info.name:<40} {state:<10} step {snap.step}/{snap.total_steps} {loss}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    if args.run:
        run_dir = rundir.find_run(args.run)
    else:
        running = [r for r in rundir.list_runs() if r.state == "running"]
        run_dir = running[0].path if running else None
    if run_dir is None:
        raise CommandError("no such running run; see `loratui runs`")
    if not rundir.request_stop(run_dir):
        raise CommandError(f"{run_dir.name} is not running (state: {rundir.run_state(run_dir)})")
    print(f"asked {run_dir.name} to stop; it finishes its step and saves a checkpoint")
    return 0


def prepare_demo_subprocess(demo_dir: Path) -> Path:
    """Build the demo in a child process, so this process (the wizard's) never imports torch."""
    _quiet_ml_stack()
    out = subprocess.run([sys.executable, "-m", "loratui.train.demo", str(demo_dir)], capture_output=True, text=True)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise CommandError(f"could not build the demo in {demo_dir}: {last}")
    return Path(out.stdout.strip().splitlines()[-1])


def cmd_demo(args: argparse.Namespace) -> int:
    demo_dir = Path(args.dir).resolve()
    print(f"building the demo in {demo_dir} (tiny model, 10 images)...", flush=True)
    config = prepare_demo_subprocess(demo_dir)
    if not args.headless:
        try:
            from loratui.tui.app import run_wizard
        except ImportError:
            print("the wizard is not available; training headless")
        else:
            return run_wizard(dataset_dir=demo_dir / "dataset", preset=config, demo=True)
    run_dir = prepare_run(load_config(config))
    code = train_foreground(run_dir)
    if code == 0:
        final = read_snapshot(run_dir / rundir.EVENTS).checkpoints[-1].path
        print(f"\nyour LoRA: {final}")
        print("load it in diffusers with pipe.load_lora_weights(path), or copy it to models/Lora in A1111/Forge")
    return code
