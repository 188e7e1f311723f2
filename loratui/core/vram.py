"""GPU memory estimate for a LoRA run, and the batch size that fits.

Where the numbers come from:
- Weights: parameter counts of the released models (SD1.x UNet 860M, CLIP-L 123M, VAE 84M; SD2 UNet 866M,
  OpenCLIP-H text 354M; SDXL UNet 2,567M, CLIP-L 123M + OpenCLIP-bigG 695M) at 2 bytes (fp16/bf16) or 4 (fp32).
  The VAE (fp32) and the frozen text encoders count only while the steps use them: like sd-scripts, the
  trainer moves them to the CPU once latents / text-encoder outputs are cached (``core/placement``), and keeps
  the UNet off the GPU while it caches. The caching phase (encoders and one VAE encode, ~3 fp32 tensors of
  the VAE's first block) is the peak when it is the larger.
- Activations per image of batch: the bytes autograd keeps for the backward pass of a LoRA step, in bf16 with
  loratui's LoRA attached, at the family's native resolution, counted on the meta device by
  ``tests/benchmarks/bench_activations.py`` (parameters and attention probabilities left out: the flash and
  memory-efficient SDPA kernels keep none): SD1.5 at 512² 1.33 GiB (0.23 GiB with gradient checkpointing),
  SD2 1.29 (0.19), SD2-v at 768² 2.88 (0.42), SDXL at 1024² 9.81 (0.61). A floor, as autocast keeps the norms'
  inputs in fp32. They scale with the model's own activation count (``model_cost``); fp32 doubles them.
- The configured model's own parameter counts, activation sizes (relative to the released model's, which the
  figures above were measured on) and LoRA parameters are counted from its configs by ``model_cost``, so the
  built-in demo model or another architecture is not priced as the released one; the family figures are the
  fallback when the configs cannot be read.
- Trainable LoRA parameters (≈ 0.59M per rank unit on SD1.x, ≈ 3.6M on SDXL, UNet and text encoders) cost
  fp32 weights + gradients + optimizer state (AdamW 8 bytes, AdamW8bit 2, Lion/SGD 4, Adafactor ~1,
  Prodigy 16, DAdaptAdam 12 bytes per parameter).
- A CUDA context (~0.45 GiB) beside a 1.25× allowance for allocator fragmentation and temporaries on what
  torch allocates. ``steps_gib`` is that allocated peak during the steps alone, which is what the bench measures
  (``torch.cuda.max_memory_allocated``) and compares.
- Published fits (kohya_ss #1730: SD1.5 512 batch 4 rank 64 fits 11 GB; kohya README: SDXL 1024 batch 1
  UNet-only with checkpointing and caching fits 8 GB; sd-scripts #648: SDXL batch 2 with text encoder trained
  runs out on 12 GB) land on the right side of this estimate. Calibrate against the monitor's real figure.

Calibration from ``loratui bench``: each stored result has the measured peak (``torch.cuda.max_memory_allocated``)
per batch size. ``fit_from_bench`` fits peak = base + per_image × batch by least squares for each family,
resolution and gradient-checkpointing setting, and reports the estimator's error against those points; when
a bench result matches a run, the planner uses its measured peak directly (``peak_for``). The goal is ±15% of
the measured peak for SD1.5 and SDXL at common settings. No GPU figures were recorded yet (the project's
development machine has none), so the coefficients above are still the config-derived ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loratui.core import bench_store, model_cost
from loratui.core.config import TrainingConfig
from loratui.core.placement import resident_during_steps
from loratui.core.speed import relative_speed

GIB = 1024**3
CUDA_CONTEXT_GIB = 0.45
FRAGMENTATION = 1.25
HEADROOM = 0.92  # use at most this share of the card

# family: (unet params, text-encoder params, vae params, native side, act GiB/img, act GiB/img with GC,
#          LoRA params per rank unit, extra GiB when the text encoder trains)
_FAMILY = {
    "sd1": (860e6, 123e6, 84e6, 512, 1.33, 0.23, 0.59e6, 0.30),
    "sd2": (866e6, 354e6, 84e6, 512, 1.29, 0.19, 0.86e6, 0.45),
    "sd2-v": (866e6, 354e6, 84e6, 768, 2.88, 0.42, 0.86e6, 0.45),
    "sdxl": (2567e6, 818e6, 84e6, 1024, 9.81, 0.61, 3.56e6, 1.20),
}
_OPTIMIZER_STATE_BYTES = {
    "AdamW": 8, "AdamW8bit": 2, "Lion": 4, "SGDNesterov": 4, "Adafactor": 1, "Prodigy": 16, "DAdaptAdam": 12,
}
_NETWORK_FACTOR = {"lora": 1.0, "locon": 1.6, "loha": 2.0, "lokr": 0.6}


@dataclass
class VramEstimate:
    peak_gib: float  # what the card must hold: the larger of the steps and the caching phase, plus the context
    parts: dict[str, float] = field(default_factory=dict)
    steps_gib: float = 0.0  # torch's allocated peak during the steps: what `loratui bench` measures


@dataclass
class BatchSuggestion:
    batch: int | None
    peak_gib: float
    message: str


def estimate_vram(cfg: TrainingConfig, batch: int | None = None) -> VramEstimate:
    """Peak GPU memory in GiB for ``cfg`` (at ``batch`` if given)."""
    unet_p, te_p, vae_p, native, act, act_gc, lora_per_rank, te_train = _FAMILY[cfg.model.model_family]
    batch = batch or cfg.schedule.train_batch_size
    weight_bytes = 4 if cfg.precision.mixed_precision == "no" else 2
    trains_te = cfg.trains_text_encoder
    per_image = act_gc if cfg.advanced.gradient_checkpointing else act  # the released model at its native size
    cost = model_cost.cost_of(cfg)
    if cost is not None:  # the configured model's own sizes (the demo's is tiny), scaled from the family's
        reference = model_cost.reference_cost(cfg.model.model_family)
        unet_p, te_p, vae_p = cost.unet_params, cost.te_params, cost.vae_params
        per_image *= cost.unet_activations / reference.unet_activations
        te_train *= cost.te_params / reference.te_params
    else:
        per_image *= (cfg.dataset.resolution / native) ** 2
    # as in sd-scripts, the VAE (fp32) and frozen text encoders leave the GPU once their outputs are cached
    # (``placement``); before that, while caching, only they are there
    resident = resident_during_steps(cfg)
    weights = {"unet": unet_p * weight_bytes / GIB, "text encoder": te_p * weight_bytes / GIB,
               "vae": vae_p * 4 / GIB}
    # the trainer caches with the UNet off the device (as sd-scripts), one image at a time through the VAE
    encode = (cost.vae_encode_elements if cost else 3 * 128 * cfg.dataset.resolution**2) * 4 / GIB
    caching = (weights["text encoder"] + weights["vae"] + encode) * FRAGMENTATION
    parts = {"cuda context": CUDA_CONTEXT_GIB, "unet": weights["unet"],
             "text encoder": weights["text encoder"] if "text_encoders" in resident else 0.0,
             "vae": weights["vae"] if "vae" in resident else 0.0}
    if weight_bytes == 4:
        per_image *= 2
    parts["activations"] = per_image * batch
    if trains_te:
        parts["text-encoder training"] = te_train * (0.5 if cfg.advanced.gradient_checkpointing else 1.0)
    lora_params = _lora_params(cfg, cost, lora_per_rank)
    state = _OPTIMIZER_STATE_BYTES.get(cfg.optimizer.optimizer_type, 8)
    parts["lora + optimizer"] = lora_params * (4 + 4 + state) / GIB
    # the allowance for temporaries and the allocator's slack goes on what torch allocates; the context is fixed
    steps = (sum(parts.values()) - CUDA_CONTEXT_GIB) * FRAGMENTATION
    peak = max(steps, caching) + CUDA_CONTEXT_GIB
    return VramEstimate(peak_gib=round(peak, 2), parts={k: round(v, 2) for k, v in parts.items()},
                        steps_gib=round(steps, 2))


def _lora_params(cfg: TrainingConfig, cost: model_cost.ModelCost | None, per_rank: float) -> float:
    """Trainable parameters: counted on the model's own layers (kohya's targets) when its configs are known,
    else the family's figure per rank unit. LoHa holds two pairs per layer, LoKr about 0.6 of LoRA."""
    net = cfg.network
    if cost is None:
        return per_rank * net.network_dim * _NETWORK_FACTOR[net.network_type]
    units = cost.lora_units
    te = units["te"] * net.network_dim if cfg.trains_text_encoder else 0
    convs = net.network_type == "locon" or (net.network_type != "lora" and net.conv_dim is not None)
    if not convs:
        unet = units["unet"] * net.network_dim
    else:
        unet = units["unet_locon"] * net.network_dim + units["unet_conv"] * (net.conv_dim or net.network_dim)
    return (unet + te) * _NETWORK_FACTOR[net.network_type if net.network_type != "locon" else "lora"]


def peak_for(cfg: TrainingConfig, batch: int, result: dict[str, Any] | None = None) -> tuple[float, bool]:
    """Peak GiB at ``batch`` and whether it was measured (from a bench ``result``) or estimated."""
    measured = bench_store.peak_vram_at(result, batch) if result else None
    if measured is not None:
        return round(measured.value, 2), True
    return estimate_vram(cfg, batch).peak_gib, False


def _largest_fitting(cfg: TrainingConfig, budget: float, max_batch: int, result: dict[str, Any] | None) -> int | None:
    best = None
    oom = bench_store.first_oom_batch(result) if result else None
    for batch in range(1, max_batch + 1):
        peak, measured = peak_for(cfg, batch, result)
        need = peak + CUDA_CONTEXT_GIB if measured else peak  # the bench's peak leaves out the CUDA context
        if (oom is not None and batch >= oom) or need > budget:
            break
        best = batch
    return best


def _speeds(cfg: TrainingConfig, gpu_name: str | None, batches: range,
            result: dict[str, Any] | None) -> tuple[dict[int, float], bool]:
    """images/s (or a relative figure) per batch: measured when a bench result exists, else the estimate."""
    if result:
        measured = {b: bench_store.images_per_s_at(result, b) for b in batches}
        if all(m is not None for m in measured.values()):
            return {b: m.value for b, m in measured.items() if m is not None}, True
    return {b: relative_speed(cfg, gpu_name, b) for b in batches}, False


def suggest_batch(cfg: TrainingConfig, total_gib: float, max_batch: int = 16, *, gpu_name: str | None = None,
                  fill_limit: int | None = None, result: dict[str, Any] | None = None) -> BatchSuggestion:
    """The smallest batch that reaches 90% of the best images/s among the batches that fit ``total_gib``
    (with headroom) and that the dataset's largest bucket can fill (``fill_limit``), and why.

    A larger batch is not better in itself: it means fewer steps per epoch, so past the point where the GPU is
    busy it only costs memory and needs the learning rate or epochs raised. Speeds come from a bench ``result``
    when given, else from ``speed.relative_speed``."""
    budget = total_gib * HEADROOM
    fits = _largest_fitting(cfg, budget, max_batch, result)
    if fits is None:
        peak = estimate_vram(cfg, 1).peak_gib
        return BatchSuggestion(None, peak, f"even batch 1 needs ~{peak:.1f} GiB of {total_gib:.1f} GiB: "
                                           + what_to_lower(cfg))
    cap = max(1, min(fits, fill_limit)) if fill_limit else fits
    speeds, measured = _speeds(cfg, gpu_name, range(1, cap + 1), result)
    top = max(speeds.values())
    batch = min(b for b, v in speeds.items() if v >= 0.9 * top)
    peak, peak_measured = peak_for(cfg, batch, result)
    share = round(100 * speeds[batch] / top)
    why = [f"batch {batch}: {share}% of the top speed ({'measured' if measured else 'estimated'}), "
           f"~{peak:.1f} GiB of {total_gib:.1f} GiB ({'measured' if peak_measured else 'estimated'})"]
    if batch < cap:
        why.append(f"up to {cap} fits, but larger batches mean fewer steps — raise the learning rate or epochs "
                   "to match")
    if fill_limit is not None and fill_limit < fits:
        why.append(f"the largest bucket holds {fill_limit} images, so larger batches cannot be filled")
    return BatchSuggestion(batch, peak, "; ".join(why))


@dataclass(frozen=True)
class VramFit:
    """peak = base_gib + per_image_gib × batch, fitted to bench points, and the estimator's worst error."""

    family: str
    resolution: int
    gradient_checkpointing: bool
    base_gib: float
    per_image_gib: float
    points: int
    estimator_error_pct: float | None


def fit_from_bench(results: list[dict[str, Any]] | None = None) -> list[VramFit]:
    """Refit the memory model from stored bench results (all of ``bench_store.load_results()`` by default).

    Points are grouped by family, resolution and gradient checkpointing; each group with two or more batch
    sizes gets a least-squares line. ``estimator_error_pct`` is the largest |estimate − measured| ÷ measured
    over the group's points, from the results' own ``estimated_vram_gib`` column."""
    results = bench_store.load_results() if results is None else results
    groups: dict[tuple[str, int, bool], list[tuple[int, float, float | None]]] = {}
    for result in results:
        key = (result["family"], int(result["resolution"]), bool(result["settings"].get("gradient_checkpointing")))
        for row in result.get("rows", []):
            if not row.get("oom") and row.get("peak_vram_gib"):
                groups.setdefault(key, []).append((row["batch"], row["peak_vram_gib"], row.get("estimated_vram_gib")))
    fits = []
    for (family, resolution, gc), points in sorted(groups.items()):
        if len({b for b, _, _ in points}) < 2:
            continue
        n = len(points)
        mean_b = sum(b for b, _, _ in points) / n
        mean_p = sum(p for _, p, _ in points) / n
        slope = (sum((b - mean_b) * (p - mean_p) for b, p, _ in points)
                 / sum((b - mean_b) ** 2 for b, _, _ in points))
        errors = [abs(e - p) / p * 100 for _, p, e in points if e]
        fits.append(VramFit(family, resolution, gc, round(mean_p - slope * mean_b, 3), round(slope, 3), n,
                            round(max(errors), 1) if errors else None))
    return fits


def what_to_lower(cfg: TrainingConfig) -> str:
    """The most effective changes first, skipping those already made."""
    tips = []
    if not cfg.advanced.gradient_checkpointing:
        tips.append("turn on gradient_checkpointing")
    if not cfg.dataset.cache_latents:
        tips.append("turn on cache_latents")
    if cfg.trains_text_encoder:
        tips.append("train the UNet only (network_train_unet_only)")
    if cfg.optimizer.optimizer_type in ("AdamW", "Prodigy", "DAdaptAdam"):
        tips.append("use AdamW8bit or Adafactor")
    if cfg.precision.mixed_precision == "no":
        tips.append("use bf16 or fp16 mixed precision")
    native = _FAMILY[cfg.model.model_family][3]
    if cfg.dataset.resolution > native:
        tips.append(f"lower the resolution to {native}")
    if cfg.network.network_dim > 32:
        tips.append("lower network_dim")
    return "; ".join(tips) if tips else "this model needs a larger GPU"
