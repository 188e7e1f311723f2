"""`loratui [DATASET_DIR] [--preset FILE]` (the wizard) and `loratui attach [RUN]` (the monitor)."""

from __future__ import annotations

import argparse
from pathlib import Path

from loratui.cli import CommandError
from loratui.core.run import rundir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("wizard", help="open the wizard (the default command)")
    p.add_argument("dataset", nargs="?", help="dataset folder to open")
    p.add_argument("--preset", help="start from this preset or config YAML")
    p.set_defaults(func=cmd_wizard)

    p = sub.add_parser("attach", help="open the monitor of a training run (the newest by default)")
    p.add_argument("run", nargs="?", help="run name (or prefix) or directory")
    p.set_defaults(func=cmd_attach)


def cmd_wizard(args: argparse.Namespace) -> int:
    from loratui.core.presets import resolve_preset
    from loratui.tui.app import run_wizard

    if args.dataset and not Path(args.dataset).is_dir():
        raise CommandError(f"{args.dataset}: not a folder; give your dataset folder or nothing")
    preset = None
    if args.preset:
        try:
            preset = resolve_preset(args.preset)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
    return run_wizard(dataset_dir=Path(args.dataset) if args.dataset else None, preset=preset)


def cmd_attach(args: argparse.Namespace) -> int:
    from loratui.tui.app import run_wizard

    run_dir = rundir.find_run(args.run)
    if run_dir is None:
        where = rundir.runs_root()
        raise CommandError(f"no run {'named ' + repr(args.run) if args.run else 'yet'} in {where}; see `loratui runs`")
    return run_wizard(attach=run_dir)
