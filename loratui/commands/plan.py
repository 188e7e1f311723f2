"""`loratui plan` (steps, checkpoints, time and VRAM) and `loratui gpu` (what this machine has)."""

from __future__ import annotations

import argparse

from loratui.cli import CommandError
from loratui.core.bench_store import find_result
from loratui.core.config import TrainingConfig
from loratui.core.gpu import detect_gpus
from loratui.core.planner import FolderCount, StepPlan, format_duration, plan_from_config
from loratui.core.presets import PresetError, apply_overrides, load_config, resolve_preset
from loratui.core.speed import cost, time_estimate
from loratui.core.vram import peak_for, suggest_batch


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="steps per epoch, total steps, checkpoints, time and VRAM for a run")
    p.add_argument("--preset", help="start from this preset or config file (or a shipped preset name)")
    p.add_argument("--dataset", help="count images per <repeats>_<name> folder of this dataset (exact steps)")
    p.add_argument("--images", type=int, help="number of training images (instead of --dataset)")
    p.add_argument("--repeats", type=int, default=1, help="repeats per image (with --images; default 1)")
    p.add_argument("--reg-images", type=int, default=0, help="number of regularisation images")
    p.add_argument("--epochs", type=int, help="epochs (default: the preset's)")
    p.add_argument("--batch", type=int, help="batch size (default: the preset's)")
    p.add_argument("--grad-accum", type=int, help="gradient accumulation steps")
    p.add_argument("--save-every", type=int, help="save a checkpoint every N epochs")
    p.add_argument("--gpus", type=int, default=1, help="number of GPUs (data parallel)")
    p.add_argument("--vram", type=float, help="plan for a GPU with this many GiB instead of the detected one")
    p.add_argument("--gpu", dest="gpu_name", metavar="NAME",
                   help="plan for this GPU model instead of the detected one (uses its `loratui bench` result)")
    p.add_argument("--price", type=float, metavar="PER_HOUR", help="price per GPU-hour: print the run's cost")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting, e.g. --set model.model_family=sdxl")
    p.set_defaults(func=cmd_plan)

    g = sub.add_parser("gpu", help="detected NVIDIA GPUs and their memory")
    g.set_defaults(func=cmd_gpu)


def _config(args: argparse.Namespace) -> TrainingConfig:
    try:
        cfg = load_config(resolve_preset(args.preset)) if args.preset else TrainingConfig()
        flags = {
            "schedule.max_train_epochs": args.epochs,
            "schedule.train_batch_size": args.batch,
            "optimizer.gradient_accumulation_steps": args.grad_accum,
            "saving.save_every_n_epochs": args.save_every,
        }
        sets = [f"{k}={v}" for k, v in flags.items() if v is not None]
        return apply_overrides(cfg, [*sets, *args.overrides])
    except PresetError as exc:
        raise CommandError(str(exc)) from exc


def _folders(args: argparse.Namespace, cfg: TrainingConfig) -> list[FolderCount]:
    if args.dataset:
        from loratui.core.dataset import scan_dataset
        from loratui.core.planner import bucket_spec_from_config

        report = scan_dataset(args.dataset, caption_ext=cfg.dataset.caption_extension,
                              reg_dir=cfg.dataset.reg_data_dir, resolution=cfg.dataset.resolution,
                              bucket_spec=bucket_spec_from_config(cfg))
        if report.errors:
            first = report.errors[0].line().removeprefix("error: ")
            raise CommandError(f"{first} (run `loratui check {args.dataset}` for all findings)")
        return report.folder_counts()
    if args.images is None:
        raise CommandError("give --images N (with --repeats) or --dataset DIR so there is something to count")
    if args.images < 0 or args.repeats < 1 or args.reg_images < 0:
        raise CommandError("--images and --reg-images must be >= 0 and --repeats >= 1")
    folders = [FolderCount("train", args.images, args.repeats)]
    if args.reg_images:
        folders.append(FolderCount("reg", args.reg_images, 1, is_reg=True))
    return folders


def print_plan(plan: StepPlan) -> None:
    reg = f" + {plan.reg_images} regularisation" if plan.reg_images else ""
    print(f"images:            {plan.images}{reg} ({plan.images_with_repeats} with repeats)")
    print(f"steps per epoch:   {plan.steps_per_epoch}")
    print(f"total steps:       {plan.total_steps}")
    print(f"  simple figure:   {plan.simple_total}  ({plan.simple_formula})")
    if plan.exact_total is not None:
        print(f"  exact figure:    {plan.exact_total}  (per-bucket batches, as sd-scripts runs it)")
    epochs = ", ".join(str(e) for e in plan.checkpoint_epochs)
    print(f"checkpoints:       {len(plan.checkpoint_epochs)} (after epoch {epochs})")
    for note in plan.notes:
        print(f"note: {note}")


def cmd_plan(args: argparse.Namespace) -> int:
    cfg = _config(args)
    try:
        plan = plan_from_config(cfg, _folders(args, cfg), num_gpus=args.gpus)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    print_plan(plan)
    detection = detect_gpus()
    gpu = detection.best
    name = args.gpu_name or (gpu.name if gpu else None)
    total = args.vram if args.vram is not None else (gpu.total_gib if gpu and not args.gpu_name else None)
    # with --vram and no GPU named, a result measured on this CPU says nothing about that card
    result = find_result(cfg, name) if name or args.vram is None else None
    print_vram_and_batch(plan, cfg, name, total, result, detection.message, given=args.vram is not None)
    print_time_and_cost(plan, cfg, name, args)
    return 0


def print_vram_and_batch(plan: StepPlan, cfg: TrainingConfig, name: str | None, total: float | None,
                         result: dict | None, no_gpu: str, given: bool) -> None:
    """VRAM at the planned batch (measured when a bench result matches) and the suggested batch, with why."""
    batch = cfg.schedule.train_batch_size
    peak, measured = peak_for(cfg, batch, result)
    print(f"{('measured' if measured else 'estimated') + ' VRAM:':<19}{peak:.1f} GiB at batch {batch} "
          f"({cfg.model.model_family}, {cfg.dataset.resolution}px, {cfg.precision.mixed_precision})")
    if total is None:
        print(f"suggested batch:   {no_gpu}; pass --vram GiB to plan for a GPU")
        return
    fill = max(plan.buckets.values()) if plan.buckets else plan.images_with_repeats
    suggestion = suggest_batch(cfg, total, gpu_name=name, fill_limit=fill or None, result=result)
    where = f"{total:.0f} GiB given" if given else f"{name}, {total:.1f} GiB"
    print(f"suggested batch:   {suggestion.message} [{where}]")


def print_time_and_cost(plan: StepPlan, cfg: TrainingConfig, name: str | None, args: argparse.Namespace) -> None:
    """Run time, measured by `loratui bench` when a result matches, else estimated; and its cost."""
    reference = name or ("RTX 4090" if args.vram else None)
    estimate = time_estimate(plan.total_steps, cfg, reference)
    basis = name or ("a GPU like an RTX 4090" if args.vram else "this CPU")
    print(f"{'time (' + estimate.label + '):':<19}~{format_duration(estimate.seconds)} on {basis} ({estimate.basis})")
    if args.price is not None:
        if args.price < 0:
            raise CommandError("--price must be >= 0 (per GPU-hour)")
        gpus = max(1, args.gpus)
        total = cost(estimate.seconds, args.price, gpus)
        print(f"{'cost (' + estimate.label + '):':<19}~{total:.2f} at {args.price:g} per GPU-hour × {gpus} GPU"
              + ("s" if gpus > 1 else ""))


def cmd_gpu(args: argparse.Namespace) -> int:
    detection = detect_gpus()
    print(detection.message)
    for gpu in detection.gpus:
        print(f"  [{gpu.index}] {gpu.name}: {gpu.total_gib:.1f} GiB total, {gpu.free_gib:.1f} GiB free")
    return 0
