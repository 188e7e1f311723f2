"""`loratui bench`: measured it/s, images/s, peak VRAM, MFU and the ratio to a bare diffusers+peft loop."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from loratui.cli import CommandError
from loratui.core.config import TrainingConfig
from loratui.core.presets import PresetError, apply_overrides, load_config, resolve_preset

FAMILIES = ("tiny", "tiny-sdxl", "sd1", "sd2", "sd2-v", "sdxl")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure training speed and GPU memory per batch size on this machine")
    p.add_argument("--config", help="bench this config or preset (its checkpoint, if it names one)")
    p.add_argument("--family", choices=FAMILIES,
                   help="bench this architecture with random weights (tiny, tiny-sdxl: CPU-sized test models)")
    p.add_argument("--resolution", type=int,
                   help="image side in pixels (default: the config's, or the family's native with --family)")
    p.add_argument("--batch", help="comma-separated batch sizes (default 1,2,4,8,… until out of memory)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per batch size (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps per batch size (default 3)")
    p.add_argument("--no-bare", action="store_true", help="skip the bare diffusers+peft comparison loop")
    p.add_argument("--no-save", action="store_true", help="do not store the result for `loratui plan`")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set advanced.gradient_checkpointing=true")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_bench)


def _batches(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        batches = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError as exc:
        raise CommandError(f"--batch {text}: give sizes like 1,2,4") from exc
    if not batches or batches[0] < 1:
        raise CommandError(f"--batch {text}: sizes must be 1 or more")
    return batches


def _config(args: argparse.Namespace) -> tuple[TrainingConfig, str]:
    if not args.config and not args.family:
        raise CommandError("give --config FILE (bench your run's settings) or --family tiny|sd1|sd2|sd2-v|sdxl")
    try:
        cfg = load_config(resolve_preset(args.config)) if args.config else _family_defaults(args.family)
        cfg = apply_overrides(cfg, args.overrides)
    except PresetError as exc:
        raise CommandError(str(exc)) from exc
    family = args.family or cfg.model.model_family
    if args.family and not args.family.startswith("tiny") and cfg.model.model_family != args.family:
        cfg = cfg.with_value("model.pretrained_model_name_or_path", "")  # the config's checkpoint is another family
    if args.steps < 1 or args.warmup < 0:
        raise CommandError("--steps must be >= 1 and --warmup >= 0")
    return cfg, family


def _family_defaults(family: str) -> TrainingConfig:
    """The defaults; for ``tiny``, the CPU demo's settings (fp32, rank 4): bf16 autocast is slow on most CPUs."""
    if not family.startswith("tiny"):
        return TrainingConfig()
    from loratui.core.demo_config import demo_config

    cfg = demo_config(Path.cwd()).with_value("model.pretrained_model_name_or_path", "")
    return cfg.with_value("dataset.train_data_dir", "").with_value("sampling.sample_every_n_epochs", 0)


def cmd_bench(args: argparse.Namespace) -> int:
    cfg, family = _config(args)
    batches = _batches(args.batch)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    from loratui.core.bench_store import save_result
    from loratui.train.bench import bench_config, default_batches, run_bench, stderr_progress
    from loratui.train.model_loading import ModelLoadError

    # the run's own resolution when benching its config: the figures are for that run
    resolution = args.resolution or (cfg.dataset.resolution if args.config and not args.family else None)
    cfg = bench_config(cfg, family, resolution)
    try:
        result = run_bench(cfg, family, batches or default_batches(), warmup=args.warmup, steps=args.steps,
                           bare=not args.no_bare, progress=stderr_progress)
    except ModelLoadError as exc:
        raise CommandError(str(exc)) from exc
    if not args.no_save and any(not r["oom"] for r in result["rows"]):
        result["stored"] = str(save_result(result))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


def _fmt(value: Any, spec: str = ".2f", suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


def _flops(flops: float | None) -> str:
    if not flops:
        return "—"
    return f"{flops / 1e12:.2f} TFLOP" if flops >= 1e11 else f"{flops / 1e9:.2f} GFLOP"


def print_table(result: dict[str, Any]) -> None:
    """The bench as a table: one line per batch size, then the verdict."""
    where = result["gpu"] or "CPU"
    s = result["settings"]
    print(f"{where}: {result['family']} {result['resolution']}px, {result['weights']} weights, {s['precision']}, "
          f"{s['optimizer']}, {s['network']} rank {s['rank']}, gradient checkpointing "
          f"{'on' if s['gradient_checkpointing'] else 'off'}, latents {'cached' if s['cache_latents'] else 'encoded'}"
          f" ({result['timed_steps']} timed steps after {result['warmup_steps']} warm-up)")
    head = f"{'batch':>5} {'it/s':>8} {'img/s':>8} {'peak GiB':>9} {'NVML GiB':>9} {'est GiB':>8} {'err':>7} " \
           f"{'MFU':>6} {'bare it/s':>9} {'ours/bare':>9}"
    print(head)
    for r in result["rows"]:
        if r["oom"]:
            print(f"{r['batch']:>5} out of memory")
            continue
        print(f"{r['batch']:>5} {_fmt(r['it_per_s']):>8} {_fmt(r['images_per_s']):>8} {_fmt(r['peak_vram_gib']):>9} "
              f"{_fmt(r['nvml_used_gib']):>9} {_fmt(r['estimated_vram_gib']):>8} "
              f"{_fmt(r['estimate_error_pct'], '+.0f', '%'):>7} {_fmt(r['mfu_pct'], '.0f', '%'):>6} "
              f"{_fmt(r['bare_it_per_s']):>9} {_fmt(r['ratio']):>9}")
    print(f"FLOPs per image: {_flops(result['flops_per_image'])}; dense bf16 peak: "
          f"{_fmt(result['bf16_peak_tflops'], '.0f', ' TFLOP/s')}")
    fastest = result["fastest"]
    if fastest:
        print(f"largest batch that fits: {result['largest_batch']}; fastest: {fastest['images_per_s']:.2f} images/s "
              f"at batch {fastest['batch']}")
    else:
        print("even the smallest batch ran out of memory")
    for note in result["notes"]:
        print(f"note: {note}")
    if result.get("stored"):
        print(f"stored: {result['stored']} (loratui plan uses it)")
    sys.stdout.flush()
