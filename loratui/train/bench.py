"""``loratui bench``: time the real trainer's step on this machine for a list of batch sizes.

The base model is the config's checkpoint when it names one; otherwise the family's real architecture with
random weights, built straight on the device from config objects (no download, no model written to disk).
"Ours" is ``Trainer.train_step`` after ``Trainer.setup_models`` — the code a real run executes — and "bare"
is a plain diffusers + peft loop on identical work (same architecture, LoRA targets, rank, precision, batch,
latents and text conditioning), so their ratio shows what loratui's own machinery costs.

A few random images are written to a temporary folder (removed afterwards) so that latent caching, or image
loading when caching is off, runs the trainer's real data path.
"""

from __future__ import annotations

import gc
import math
import random
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from loratui.core.bench_store import settings_of
from loratui.core.config import TrainingConfig
from loratui.core.placement import resident_during_steps
from loratui.core.speed import bf16_peak_tflops
from loratui.core.vram import estimate_vram
from loratui.train import data as D
from loratui.train.model_loading import Models, config_dir, load_models
from loratui.train.tokenizers import tokenizers_for

GIB = 1024**3
BENCH_IMAGES = 8  # distinct images; batches cycle through them

# The tiny SD1.x architecture of loratui.train.tiny_models (tests, CPU demo), built here without a disk copy.
_TINY_CLIP = dict(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=5, num_attention_heads=4,
                  max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=32, bos_token_id=998,
                  eos_token_id=999, pad_token_id=999)
_TINY_VAE = dict(block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                 up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8, sample_size=64)
_TINY_SDXL_UNET = dict(sample_size=8, block_out_channels=(32, 64), layers_per_block=2, norm_num_groups=8,
                       down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                       up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=64,
                       attention_head_dim=(2, 4), use_linear_projection=True, transformer_layers_per_block=(1, 2),
                       addition_embed_type="text_time", addition_time_embed_dim=8,
                       projection_class_embeddings_input_dim=32 + 6 * 8)
_TINY_UNET = dict(sample_size=8, block_out_channels=(32, 64), layers_per_block=2, norm_num_groups=8,
                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, attention_head_dim=8)


@dataclass(frozen=True)
class Architecture:
    """A tiny test architecture, built in memory (the real families come from the shipped configs)."""

    unet: dict
    vae: dict
    text_encoders: tuple[dict, ...]  # the last one has a projection (pooled embedding) for SDXL
    scaling_factor: float
    v_prediction: bool = False


TINY_ARCHITECTURES = {
    "tiny": Architecture(_TINY_UNET, _TINY_VAE, (_TINY_CLIP,), 0.18215),
    "tiny-sdxl": Architecture(_TINY_SDXL_UNET, _TINY_VAE, (_TINY_CLIP, _TINY_CLIP), 0.13025),
}
REAL_FAMILIES = ("sd1", "sd2", "sd2-v", "sdxl")  # loratui/train/model_configs/<family>: the released models
FAMILIES = (*TINY_ARCHITECTURES, *REAL_FAMILIES)
DEFAULT_RESOLUTION = {"tiny": 64, "tiny-sdxl": 64, "sd1": 512, "sd2": 512, "sd2-v": 768, "sdxl": 1024}


def is_sdxl(family: str) -> bool:
    return family in ("sdxl", "tiny-sdxl")


def is_tiny(family: str) -> bool:
    return family.startswith("tiny")


class SyntheticTokenizer:
    """For the tiny test architectures: CLIP-shaped token ids without a vocabulary file. The step's cost depends
    on the sequence shape (77 tokens per chunk, BOS/EOS placement), not on which words the ids stand for."""

    model_max_length = 77

    def __init__(self, vocab_size: int, bos: int, eos: int) -> None:
        self.vocab_size, self.bos_token_id, self.eos_token_id, self.pad_token_id = vocab_size, bos, eos, eos

    def _ids(self, text: str) -> list[int]:
        return [zlib.crc32(word.encode()) % (self.vocab_size - 2) for word in text.replace(",", " , ").split()]

    def __call__(self, texts: str | list[str], add_special_tokens: bool = True, truncation: bool = False,
                 max_length: int | None = None, padding: str | None = None,
                 return_tensors: str | None = None) -> SimpleNamespace:
        if isinstance(texts, str):
            return SimpleNamespace(input_ids=self._ids(texts))
        length = max_length or self.model_max_length
        rows = []
        for text in texts:
            body = self._ids(text)[: length - 2]
            row = [self.bos_token_id, *body, self.eos_token_id]
            rows.append(row + [self.pad_token_id] * (length - len(row)))
        return SimpleNamespace(input_ids=torch.tensor(rows))


@contextmanager
def _building_on(device: torch.device) -> Iterator[None]:
    """Parameters are created (and randomly initialised) directly on ``device``: no host copy of 3.5B weights."""
    with torch.device(device):
        yield


def build_random_models(family: str, device: torch.device) -> Models:
    """The family's real architecture with random weights, on ``device``."""
    torch.manual_seed(0)
    with _building_on(device):
        return _tiny_models(family) if is_tiny(family) else _shipped_models(family)


def _shipped_models(family: str) -> Models:
    """From the component configs loratui ships for offline loading, with the real offline CLIP tokenizers."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = config_dir(family)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
    encoders = [CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))]
    if is_sdxl(family):
        encoders.append(CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(folder / "text_encoder_2")))
    scheduler = DDPMScheduler.from_config(DDPMScheduler.load_config(folder / "scheduler"))
    tokenizers = list(tokenizers_for(family).values())
    v_prediction = scheduler.config.prediction_type == "v_prediction"
    return Models(unet, vae, encoders, tokenizers, scheduler, is_sdxl(family), v_prediction)


def _tiny_models(family: str) -> Models:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    arch = TINY_ARCHITECTURES[family]
    unet = UNet2DConditionModel(**arch.unet)
    vae = AutoencoderKL(**arch.vae, scaling_factor=arch.scaling_factor)
    encoders, tokenizers = [], []
    for index, te in enumerate(arch.text_encoders):
        projection = is_sdxl(family) and index == 1
        cls = CLIPTextModelWithProjection if projection else CLIPTextModel
        encoders.append(cls(CLIPTextConfig(**te)))
        tokenizers.append(SyntheticTokenizer(te["vocab_size"], te["bos_token_id"], te["eos_token_id"]))
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", steps_offset=1, clip_sample=False,
                              prediction_type="v_prediction" if arch.v_prediction else "epsilon")
    return Models(unet, vae, encoders, tokenizers, scheduler, is_sdxl(family), arch.v_prediction)


def models_for(cfg: TrainingConfig, family: str, device: torch.device) -> Models:
    """The configured checkpoint when there is one, else random weights of the family's architecture."""
    if cfg.model.pretrained_model_name_or_path and not is_tiny(family):
        return load_models(cfg)
    return build_random_models(family, device)


# --- bench data --------------------------------------------------------------------------------------------

_TAGS = ("1girl", "solo", "smile", "looking at viewer", "outdoors", "red hair", "blue eyes", "dress", "sky",
         "portrait", "upper body", "long hair", "detailed background", "masterpiece", "sks person")


def write_bench_images(folder: Path, resolution: int, count: int = BENCH_IMAGES) -> list[D.Item]:
    """``count`` random images at the training resolution, with tag captions of a typical length."""
    rng = np.random.default_rng(0)
    items = []
    for index in range(count):
        pixels = rng.integers(0, 256, (resolution, resolution, 3), dtype=np.uint8)
        path = folder / f"{index:03d}.png"
        Image.fromarray(pixels).save(path, compress_level=0)
        caption = ", ".join(random.Random(index).sample(_TAGS, 10))
        items.append(D.Item(path, caption, (resolution, resolution), False, "1_bench", 1))
    return items


def batch_of(items: list[D.Item], size: int, step: int) -> list[D.Item]:
    return [items[(step * size + k) % len(items)] for k in range(size)]


# --- measuring ---------------------------------------------------------------------------------------------


@dataclass
class Row:
    batch: int
    it_per_s: float | None = None
    images_per_s: float | None = None
    peak_vram_gib: float | None = None
    reserved_vram_gib: float | None = None
    nvml_used_gib: float | None = None
    estimated_vram_gib: float | None = None
    estimate_error_pct: float | None = None
    mfu_pct: float | None = None
    bare_it_per_s: float | None = None
    ratio: float | None = None
    oom: bool = False


Progress = Callable[[str, int, int], None]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _nvml_used_gib(device: torch.device) -> float | None:
    """What NVML sees on this GPU (context, allocator cache and other processes included)."""
    if device.type != "cuda":
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            index = device.index if device.index is not None else torch.cuda.current_device()
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            return round(pynvml.nvmlDeviceGetMemoryInfo(handle).used / GIB, 2)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no NVML library, or a container that hides it: the column stays empty
        return None


def _free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def time_steps(step: Callable[[int], torch.Tensor], warmup: int, steps: int, device: torch.device,
               progress: Progress, label: str) -> float:
    """Seconds per step over ``steps`` timed steps after ``warmup`` untimed ones; syncs only at the ends."""
    total = warmup + steps
    loss = None
    for i in range(warmup):
        loss = step(i)
        progress(label, i + 1, total)
    if loss is not None:
        loss.item()
    _sync(device)
    start = time.perf_counter()
    for i in range(steps):
        loss = step(warmup + i)
        progress(label, warmup + i + 1, total)
    loss.item()  # the only host sync inside the timed window: waits for the last step to finish
    _sync(device)
    return (time.perf_counter() - start) / steps


def _sdpa_flops(query: tuple, key: tuple, value: tuple, *_: object, **__: object) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


def _sdpa_backward_flops(grad: tuple, query: tuple, key: tuple, value: tuple, *_: object, **__: object) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad, query, key, value)


def count_flops(step: Callable[[int], torch.Tensor]) -> float | None:
    """FLOPs of one training step (forward, backward, recomputation) counted by torch's dispatcher."""
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    # the CPU's fused attention kernel has no formula in torch's table: count it as the CUDA kernels are
    cpu_attention = {aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops,
                     aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_backward_flops}
    try:
        with FlopCounterMode(display=False, custom_mapping=cpu_attention) as counter:
            step(0).item()
        return float(counter.get_total_flops())
    except Exception:  # e.g. a compiled UNet the counter cannot see into
        return None


def bench_ours(cfg: TrainingConfig, family: str, device_models: Callable[[], Models], items: list[D.Item],
               batches: list[int], warmup: int, steps: int, progress: Progress) -> tuple[list[Row], float | None]:
    """Rows for loratui's trainer, up to the first batch that runs out of memory, and FLOPs per image."""
    from loratui.train.loop import Trainer

    trainer = Trainer(cfg, Path(tempfile.gettempdir()), lambda *a, **k: None)
    device = trainer.device
    trainer.total_steps = warmup + steps  # the LR schedule's length; its values do not change the timing
    trainer.setup_models(device_models())
    trainer.data = D.DatasetInfo(items, [], [], {}, {}, {})
    trainer.fill_caches()  # as a real run: what it keeps on the device during its steps, and only that
    rows: list[Row] = []
    flops_per_image = None
    for size in batches:
        gen, rng = trainer.generator(cfg.schedule.seed), random.Random(cfg.schedule.seed)

        def step(i: int, size: int = size, gen: torch.Generator = gen, rng: random.Random = rng) -> torch.Tensor:
            return trainer.train_step(batch_of(items, size, i), gen, rng, 0)

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        try:
            seconds = time_steps(step, warmup, steps, device, progress, f"ours, batch {size}")
            if flops_per_image is None:
                flops = count_flops(step)
                flops_per_image = flops / size if flops else None
        except torch.OutOfMemoryError:
            rows.append(Row(size, oom=True))
            trainer.optimizer.zero_grad(set_to_none=True)
            _free_memory(device)
            break
        row = Row(size, it_per_s=1 / seconds, images_per_s=size / seconds)
        if device.type == "cuda":
            row.peak_vram_gib = round(torch.cuda.max_memory_allocated(device) / GIB, 2)
            row.reserved_vram_gib = round(torch.cuda.max_memory_reserved(device) / GIB, 2)
            row.nvml_used_gib = _nvml_used_gib(device)
        rows.append(row)
    trainer.accelerator.free_memory()  # accelerate keeps references to prepared models and optimizers
    return rows, flops_per_image


def bench_bare(cfg: TrainingConfig, device_models: Callable[[], Models], items: list[D.Item], batches: list[int],
               warmup: int, steps: int, device: torch.device, progress: Progress) -> dict[int, float]:
    """it/s of a plain diffusers + peft loop (what a person writes from the docs) on identical work."""
    from peft import LoraConfig, inject_adapter_in_model

    from loratui.train.networks import _TE_BLOCKS, _UNET_ATTN_BLOCKS, find_targets

    m = device_models()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.precision.mixed_precision, torch.float32)
    if device.type != "cuda" and dtype == torch.float16:
        dtype = torch.float32
    train_te = cfg.trains_text_encoder
    net = cfg.network
    for part in (m.unet, *m.text_encoders):
        part.requires_grad_(False)
        part.to(device, dtype)
    m.vae.to(device, torch.float32)
    if cfg.advanced.gradient_checkpointing:
        m.unet.enable_gradient_checkpointing()
        for te in m.text_encoders:
            te.gradient_checkpointing_enable()
    trained = [m.unet, *(m.text_encoders if train_te else [])]
    for index, model in enumerate(trained):
        blocks = _TE_BLOCKS if index else _UNET_ATTN_BLOCKS
        targets = sorted(find_targets(model, blocks, False))
        inject_adapter_in_model(LoraConfig(r=net.network_dim, lora_alpha=net.network_alpha,
                                           target_modules=targets), model)
    params = [p for model in trained for n, p in model.named_parameters() if "lora_" in n]
    for p in params:
        p.data = p.data.float()
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, fused=device.type == "cuda")
    with torch.no_grad():
        pixels = torch.stack([D.load_image(i.path, i.bucket) for i in items]).to(device)
        cached = m.vae.encode(pixels).latent_dist.sample() * m.vae.config.scaling_factor

    def encode(captions: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        states, pooled = [], None
        for index, (tok, te) in enumerate(zip(m.tokenizers, m.text_encoders, strict=True)):
            ids = tok(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
            out = te(ids.input_ids.to(device), output_hidden_states=True)
            states.append(out.hidden_states[-2] if m.is_sdxl else out.hidden_states[-1])
            if m.is_sdxl and index == 1:
                pooled = out.text_embeds
        return torch.cat(states, dim=-1), pooled

    cache_te = cfg.advanced.cache_text_encoder_outputs and not train_te
    if cache_te:
        with torch.no_grad():
            te_out = {i.caption: tuple(encode([i.caption])) for i in items}
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    result: dict[int, float] = {}
    for size in batches:
        def step(i: int, size: int = size) -> torch.Tensor:
            batch = batch_of(items, size, i)
            index = [items.index(b) for b in batch]
            if cfg.dataset.cache_latents:
                latents = cached[index]
            else:
                raw = torch.stack([D.load_image(b.path, b.bucket) for b in batch]).to(device)
                with torch.no_grad():
                    latents = m.vae.encode(raw).latent_dist.sample() * m.vae.config.scaling_factor
            latents = latents.to(dtype)
            noise = torch.randn_like(latents)
            t = torch.randint(0, 1000, (size,), device=device)
            captions = [b.caption for b in batch]
            if cache_te:
                hidden = torch.cat([te_out[c][0] for c in captions])
                pooled = torch.cat([te_out[c][1] for c in captions]) if m.is_sdxl else None
            else:
                with torch.set_grad_enabled(train_te):
                    hidden, pooled = encode(captions)
            extra = {}
            if m.is_sdxl:
                res = batch[0].bucket[0]
                time_ids = torch.tensor([[res, res, 0, 0, res, res]] * size, device=device, dtype=dtype)
                extra = {"added_cond_kwargs": {"text_embeds": pooled.to(dtype), "time_ids": time_ids}}
            with autocast:
                pred = m.unet(m.noise_scheduler.add_noise(latents, noise, t), t, hidden.to(dtype), **extra).sample
            loss = F.mse_loss(pred.float(), noise.float())
            loss.backward()
            if cfg.optimizer.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, cfg.optimizer.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss

        try:
            result[size] = 1 / time_steps(step, warmup, steps, device, progress, f"bare, batch {size}")
        except torch.OutOfMemoryError:
            opt.zero_grad(set_to_none=True)
            break
    return result


# --- the whole bench ---------------------------------------------------------------------------------------


def default_batches(limit: int = 64) -> list[int]:
    """1, 2, 4, 8, … (the bench stops at the first that runs out of memory)."""
    return [2**i for i in range(int(math.log2(limit)) + 1)]


def bench_config(cfg: TrainingConfig, family: str, resolution: int | None) -> TrainingConfig:
    """The config the bench trains: one micro-batch per step, the chosen resolution, no disk caches."""
    cfg = cfg.with_value("optimizer.gradient_accumulation_steps", 1)
    cfg = cfg.with_value("dataset.cache_latents_to_disk", False)
    cfg = cfg.with_value("model.model_family", {"tiny": "sd1", "tiny-sdxl": "sdxl"}.get(family, family))
    return cfg.with_value("dataset.resolution", resolution or DEFAULT_RESOLUTION[family])


def run_bench(cfg: TrainingConfig, family: str, batches: list[int], warmup: int = 3, steps: int = 10,
              bare: bool = True, progress: Progress | None = None) -> dict[str, Any]:
    """Bench ``cfg`` on this machine's first GPU (or the CPU); the result as ``--json`` prints it."""
    progress = progress or (lambda *a: None)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    resolution = cfg.dataset.resolution
    with tempfile.TemporaryDirectory(prefix="loratui-bench-") as tmp:
        items = write_bench_images(Path(tmp), resolution)

        def device_models() -> Models:
            return models_for(cfg, family, device)

        rows, flops = bench_ours(cfg, family, device_models, items, batches, warmup, steps, progress)
        _free_memory(device)  # our models go before the bare loop builds its own
        notes: list[str] = []
        fitted = [r.batch for r in rows if not r.oom]
        net, optimizer = cfg.network, cfg.optimizer.optimizer_type
        plain = net.network_type == "lora" and not net.use_dora and optimizer == "AdamW"
        if bare and plain and fitted:
            bare_speed = bench_bare(cfg, device_models, items, fitted, warmup, steps, device, progress)
            for row in rows:
                if row.batch in bare_speed and row.it_per_s:
                    row.bare_it_per_s = bare_speed[row.batch]
                    row.ratio = round(row.it_per_s / row.bare_it_per_s, 3)
        elif bare:
            notes.append("the bare diffusers+peft loop covers LoRA with AdamW only: no ratio for these settings")
    peak_tflops = bf16_peak_tflops(gpu)
    if gpu and peak_tflops is None:
        notes.append(f"no dense bf16 peak known for {gpu}: no MFU")
    elif not gpu:
        notes.append("no GPU: no VRAM figures and no MFU")
    for row in rows:
        _fill_derived(row, cfg, family, flops, peak_tflops)
    return _result(cfg, family, gpu, device, rows, flops, peak_tflops, warmup, steps, notes)


def _sig(value: float | None) -> float | None:
    """Four significant digits: enough for speeds from 0.01 it/s (CPU) to 100 it/s."""
    return float(f"{value:.4g}") if value else None


def _fill_derived(row: Row, cfg: TrainingConfig, family: str, flops: float | None, peak: float | None) -> None:
    if row.oom:
        return
    row.it_per_s = _sig(row.it_per_s)
    row.images_per_s = _sig(row.images_per_s)
    if not is_tiny(family):
        row.estimated_vram_gib = estimate_vram(cfg, row.batch).steps_gib  # like for like: allocated, steps only
        if row.peak_vram_gib:
            row.estimate_error_pct = round((row.estimated_vram_gib - row.peak_vram_gib) / row.peak_vram_gib * 100, 1)
    if flops and peak and row.images_per_s:
        row.mfu_pct = round(flops * row.images_per_s / (peak * 1e12) * 100, 1)
    if row.bare_it_per_s:
        row.bare_it_per_s = _sig(row.bare_it_per_s)


def _result(cfg: TrainingConfig, family: str, gpu: str | None, device: torch.device, rows: list[Row],
            flops: float | None, peak: float | None, warmup: int, steps: int, notes: list[str]) -> dict[str, Any]:
    ok = [r for r in rows if not r.oom]
    fastest = max(ok, key=lambda r: r.images_per_s or 0, default=None)
    return {
        "gpu": gpu, "device": device.type, "family": family, "resolution": cfg.dataset.resolution,
        "model": "" if is_tiny(family) else cfg.model.pretrained_model_name_or_path,
        "weights": "checkpoint" if cfg.model.pretrained_model_name_or_path and not is_tiny(family) else "random",
        "settings": settings_of(cfg), "warmup_steps": warmup, "timed_steps": steps,
        "resident": sorted(resident_during_steps(cfg)),  # on the device during the timed steps, besides caches
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__, "flops_per_image": flops, "bf16_peak_tflops": peak,
        "rows": [vars(r) for r in rows],
        "largest_batch": max((r.batch for r in ok), default=None),
        "fastest": {"batch": fastest.batch, "images_per_s": fastest.images_per_s} if fastest else None,
        "notes": notes,
    }


def stderr_progress(label: str, done: int, total: int) -> None:
    """A one-line progress bar on stderr (stdout stays clean for --json)."""
    width = 24
    filled = round(width * done / total)
    sys.stderr.write(f"\r{label:<18} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()
