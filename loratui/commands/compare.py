"""`loratui compare RUN`: a grid of every saved checkpoint at several LoRA weights, and the favourite copy."""

from __future__ import annotations

import argparse
from pathlib import Path

from loratui.cli import CommandError
from loratui.core import compare_grid as G
from loratui.core.config import TrainingConfig
from loratui.core.presets import PresetError, load_config
from loratui.core.run import rundir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="compare checkpoints × LoRA weights in a labelled grid per prompt")
    p.add_argument("run", help="run name or directory (as in `loratui runs`)")
    p.add_argument("--epochs", default="all", help="all (default) or a list such as 2,4,final")
    p.add_argument("--weights", default="0.5,0.75,1.0", help="LoRA weights (default 0.5,0.75,1.0)")
    p.add_argument("--prompts", help="prompt file, one per line (default: the run's sample prompts)")
    p.add_argument("--seed", type=int, help="seed of prompts without --d (default: the run's seed)")
    p.add_argument("--detach", action="store_true", help="run in the background; prints the output folder")
    p.add_argument("--out", help=argparse.SUPPRESS)  # the folder chosen by --detach
    p.add_argument("--favourite", metavar="CHECKPOINT",
                   help="instead of comparing: copy this checkpoint (epoch number, 'final' or file) to "
                        "NAME-best.safetensors, recording --weight in its metadata")
    p.add_argument("--weight", type=float, default=1.0, help="the weight recorded with --favourite")
    p.set_defaults(func=cmd_compare)


def _run_and_config(name: str) -> tuple[Path, TrainingConfig]:
    run_dir = rundir.find_run(name)
    if run_dir is None or not (run_dir / rundir.CONFIG).exists():
        raise CommandError(f"{name}: no such run; `loratui runs` lists them")
    try:
        return run_dir, load_config(run_dir / rundir.CONFIG)
    except PresetError as exc:
        raise CommandError(str(exc)) from exc


def _checkpoints(run_dir: Path, cfg: TrainingConfig, spec: str) -> list[G.Checkpoint]:
    output = Path(cfg.saving.output_dir) if cfg.saving.output_dir else run_dir / "output"
    available = G.find_checkpoints(output, cfg.saving.output_name)
    if not available:
        raise CommandError(f"{output}: no checkpoints of {cfg.saving.output_name!r} yet; wait for the run to save one")
    try:
        return G.select_checkpoints(available, spec)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc


def cmd_compare(args: argparse.Namespace) -> int:
    run_dir, cfg = _run_and_config(args.run)
    if args.favourite:
        return _favourite(run_dir, cfg, args.favourite, args.weight)
    checkpoints = _checkpoints(run_dir, cfg, args.epochs)
    try:
        weights = G.parse_weights(args.weights)
        prompts = G.read_prompt_file(Path(args.prompts)) if args.prompts else list(cfg.sampling.sample_prompts)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    if not prompts:
        raise CommandError(f"{run_dir.name} has no sample prompts; give --prompts FILE (one prompt per line)")
    if args.detach:
        out = G.launch_compare(run_dir, args.epochs, args.weights, Path(args.prompts) if args.prompts else None,
                               args.seed)
        print(out)
        return 0
    out = Path(args.out) if args.out else G.new_compare_dir(run_dir)
    return _render(cfg, run_dir, out, checkpoints, weights, prompts, cfg.schedule.seed if args.seed is None
                   else args.seed)


def _render(cfg: TrainingConfig, run_dir: Path, out: Path, checkpoints: list[G.Checkpoint], weights: list[float],
            prompts: list[str], seed: int) -> int:
    """Render in this process; the folder's exit_status.json says how it ended (the monitor reads it)."""
    from loratui.train.compare import CompareError, progress_bar, run_compare
    from loratui.train.model_loading import ModelLoadError

    update, close = progress_bar()
    try:
        manifest = run_compare(cfg, run_dir, out, checkpoints, weights, prompts, seed, update)
    except (CompareError, ModelLoadError) as exc:
        rundir.write_exit_status(out, 1, "failed", str(exc))
        raise CommandError(str(exc)) from exc
    except BaseException as exc:
        rundir.write_exit_status(out, 1, "failed", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        close()
    rundir.write_exit_status(out, 0, "done", f"wrote {len(manifest.prompts)} grid(s) to {out}")
    for entry in manifest.prompts:
        print(out / entry["grid"])
    return 0


def _favourite(run_dir: Path, cfg: TrainingConfig, which: str, weight: float) -> int:
    path = Path(which)
    if not path.is_file():
        path = _checkpoints(run_dir, cfg, which)[0].path
    from loratui.train.compare import mark_favourite

    target = mark_favourite(path, weight, cfg.saving.output_name)
    print(f"copied {path.name} to {target} ({G.BEST_WEIGHT_KEY}={G.weight_label(weight)})")
    return 0
