"""A rough time estimate before the first step runs; the monitor replaces it with the measured it/s.

Reference throughput is for an RTX 4090 with bf16, SDPA and cached latents, from commonly reported kohya
LoRA speeds: SD1.5 at 512² ≈ 9 images/s, SDXL at 1024² ≈ 1.8 images/s. Other cards scale by a relative
factor (public training benchmarks, rounded); cost grows with pixel count.
"""

from __future__ import annotations

from loratui.core.config import TrainingConfig

# images per second at the family's native resolution on the reference card
_REFERENCE_IMAGES_PER_S = {"sd1": 9.0, "sd2": 8.0, "sd2-v": 3.6, "sdxl": 1.8}
_NATIVE = {"sd1": 512, "sd2": 512, "sd2-v": 768, "sdxl": 1024}
# substring of the GPU name → speed relative to an RTX 4090
_GPU_FACTORS = (
    ("H200", 1.6), ("H100", 1.5), ("A100", 1.0), ("L40", 0.95), ("4090", 1.0), ("A6000", 0.7),
    ("3090", 0.6), ("4080", 0.75), ("A10", 0.45), ("4070", 0.5), ("3080", 0.5), ("L4", 0.35),
    ("V100", 0.4), ("3060", 0.3), ("T4", 0.15),
)
UNKNOWN_GPU_FACTOR = 0.5
CPU_FACTOR = 0.002


def gpu_speed_factor(gpu_name: str | None) -> float:
    if gpu_name is None:
        return CPU_FACTOR
    for key, factor in _GPU_FACTORS:
        if key.lower() in gpu_name.lower():
            return factor
    return UNKNOWN_GPU_FACTOR


def seconds_per_step(cfg: TrainingConfig, gpu_name: str | None) -> float:
    family = cfg.model.model_family
    pixels = (cfg.dataset.resolution / _NATIVE[family]) ** 2
    images_per_s = _REFERENCE_IMAGES_PER_S[family] * gpu_speed_factor(gpu_name) / pixels
    if cfg.advanced.gradient_checkpointing:
        images_per_s /= 1.25
    if not cfg.dataset.cache_latents:
        images_per_s /= 1.6  # the VAE encode is ~60% of a step's FLOPs
    if cfg.trains_text_encoder:
        images_per_s /= 1.15
    if cfg.precision.mixed_precision == "no":
        images_per_s /= 2.5
    images = cfg.schedule.train_batch_size * cfg.optimizer.gradient_accumulation_steps
    return images / images_per_s


def estimate_seconds(total_steps: int, cfg: TrainingConfig, gpu_name: str | None) -> float:
    return total_steps * seconds_per_step(cfg, gpu_name)
