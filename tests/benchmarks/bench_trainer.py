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
    """The loop a person would write from the diffusers/peft docs."""
    import torch.nn.functional as F
    from diffusers import DDPMScheduler, StableDiffusionPipeline
    from peft import LoraConfig, inject_adapter_in_model
    from PIL import Image

    torch.manual_seed(0)
    pipe = StableDiffusionPipeline.from_pretrained(demo / "model")
    unet, te, vae, tok = pipe.unet, pipe.text_encoder, pipe.vae, pipe.tokenizer
    for m in (unet, te, vae):
        m.requires_grad_(False)
    unet_targets = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=2, target_modules=unet_targets), unet)
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=2, target_modules=["q_proj", "k_proj", "v_proj",
                                                                            "out_proj", "fc1", "fc2"]), te)
    params = [p for m in (unet, te) for n, p in m.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW([{"params": [p for n, p in unet.named_parameters() if "lora_" in n], "lr": 1e-3},
                             {"params": [p for n, p in te.named_parameters() if "lora_" in n], "lr": 5e-4}])
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    images = sorted((demo / "dataset").rglob("*.png"))
    latents, captions = [], []
    with torch.no_grad():
        for path in images:
            im = Image.open(path).convert("RGB").resize((64, 64))
            x = torch.from_numpy(__import__("numpy").asarray(im, dtype="float32") / 127.5 - 1).permute(2, 0, 1)
            latents.append(vae.encode(x[None]).latent_dist.sample()[0] * vae.config.scaling_factor)
            captions.append(path.with_suffix(".txt").read_text())
    marks = []
    for step in range(steps):
        idx = [(2 * step) % len(images), (2 * step + 1) % len(images)]
        lat = torch.stack([latents[i] for i in idx])
        noise = torch.randn_like(lat)
        t = torch.randint(0, 1000, (2,))
        ids = tok([captions[i] for i in idx], padding="max_length", max_length=77, truncation=True,
                  return_tensors="pt").input_ids
        pred = unet(sched.add_noise(lat, noise, t), t, te(ids)[0]).sample
        loss = F.mse_loss(pred, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        loss.item()
        marks.append(time.perf_counter())
    return (len(marks) - WARMUP) / (marks[-1] - marks[WARMUP - 1])


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
