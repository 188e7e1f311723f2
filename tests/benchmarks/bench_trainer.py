"""Steps/s of loratui's trainer vs a minimal plain diffusers + peft loop: same tiny model, data and settings.

Run: .venv/bin/python tests/benchmarks/bench_trainer.py [STEPS]
The ratio (ours ÷ plain) should be ≥ 0.95: events, buckets and the process split must cost nothing measurable.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import torch

from loratui.core.demo import make_demo_dataset
from loratui.core.demo_config import demo_config
from loratui.train.tiny_models import build_tiny_sd1

WARMUP = 5


def ours(demo: Path, steps: int) -> float:
    from loratui.core.run.events import EventWriter
    from loratui.train.loop import run

    cfg = demo_config(demo)
    cfg = cfg.with_value("schedule.max_train_steps", steps).with_value("schedule.max_train_epochs", 100)
    cfg = cfg.with_value("sampling.sample_every_n_epochs", 0).with_value("saving.save_every_n_epochs", 0)
    cfg = cfg.with_value("dataset.shuffle_caption", False)
    run_dir = Path(tempfile.mkdtemp())
    (run_dir / "state").mkdir()
    marks: list[float] = []
    writer = EventWriter(run_dir / "events.jsonl")

    def emit(kind: str, **fields) -> None:
        writer.emit(kind, **fields)
        if kind == "step":
            marks.append(time.perf_counter())

    run(cfg, run_dir, emit)
    writer.close()
    return (len(marks) - WARMUP) / (marks[-1] - marks[WARMUP - 1])


def plain(demo: Path, steps: int) -> float:
    """The loop a person would write from the diffusers/peft docs (the bench's own bare loop), on the demo's
    model and settings, over as many images of the same size."""
    from loratui.train.bench import bench_bare, write_bench_images
    from loratui.train.model_loading import load_models

    cfg = demo_config(demo)
    items = write_bench_images(Path(tempfile.mkdtemp()), cfg.dataset.resolution, count=10)
    it_per_s = bench_bare(cfg, lambda: load_models(cfg), items, [cfg.schedule.train_batch_size], WARMUP, steps,
                          torch.device("cpu"), lambda *_: None)
    return it_per_s[cfg.schedule.train_batch_size]


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    with tempfile.TemporaryDirectory() as tmp:
        demo = Path(tmp)
        build_tiny_sd1(demo / "model")
        make_demo_dataset(demo / "dataset")
        results = {"plain": [], "ours": []}
        for _ in range(2):  # alternate to share the machine's noise fairly
            results["plain"].append(plain(demo, steps))
            results["ours"].append(ours(demo, steps))
    best = {k: max(v) for k, v in results.items()}
    print(f"tiny SD1 LoRA, batch 2, 64 px, CPU: plain diffusers+peft {best['plain']:.2f} steps/s, "
          f"loratui {best['ours']:.2f} steps/s, ratio {best['ours'] / best['plain']:.2f}")


if __name__ == "__main__":
    main()
