"""Time before the first step runs: measured by ``loratui bench`` when a matching result is stored, else a
rough estimate; the monitor replaces either with the run's own it/s.

Reference throughput is for an RTX 4090 with bf16, SDPA and cached latents, from commonly reported kohya
LoRA speeds: SD1.5 at 512² ≈ 9 images/s, SDXL at 1024² ≈ 1.8 images/s. Other cards scale by a relative
factor (public training benchmarks, rounded). The work per image is the configured model's own, counted
from its configs by ``model_cost`` (UNet forward and backward, the VAE encode when latents are not cached,
the text encoders): a step costs its FLOPs over the reference model's, so resolution, a smaller or custom
architecture (the built-in demo model) and uncached latents all scale the time by what they really cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loratui.core import bench_store, measured_speed, model_cost
from loratui.core.config import TrainingConfig
from loratui.core.model_cost import NATIVE_RESOLUTION

# images per second at the family's native resolution on the reference card (UNet only, cached latents)
_REFERENCE_IMAGES_PER_S = {"sd1": 9.0, "sd2": 8.0, "sd2-v": 3.6, "sdxl": 1.8}
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


def work_per_image(cfg: TrainingConfig) -> float:
    """A step's work per image relative to the family's released UNet at its native resolution (UNet only,
    cached latents): a FLOP ratio, or the pixel ratio when the model's configs cannot be read."""
    family = cfg.model.model_family
    cost = model_cost.cost_of(cfg)
    if cost is None:
        pixels = (cfg.dataset.resolution / NATIVE_RESOLUTION[family]) ** 2
        return pixels * (1.0 if cfg.dataset.cache_latents else 1.6)  # the VAE encode is ~60% of a step
    ref = model_cost.reference_cost(family)
    reference = ref.step_flops(cache_latents=True, trains_te=False, te_runs=False, recompute=False)
    # recomputation is priced by the measured slowdown below, not by its FLOPs
    return model_cost.step_flops(cfg, cost, recompute=False) / reference


def seconds_per_step(cfg: TrainingConfig, gpu_name: str | None) -> float:
    family = cfg.model.model_family
    images_per_s = _REFERENCE_IMAGES_PER_S[family] * gpu_speed_factor(gpu_name) / work_per_image(cfg)
    if cfg.advanced.gradient_checkpointing:
        images_per_s /= 1.25  # commonly reported; the recomputed forward runs faster than its FLOPs suggest
    if cfg.trains_text_encoder:
        images_per_s /= 1.15  # beyond its FLOPs: small kernels and a second parameter group
    if cfg.precision.mixed_precision == "no":
        images_per_s /= 2.5
    images = cfg.schedule.train_batch_size * cfg.optimizer.gradient_accumulation_steps
    return images / images_per_s


def estimate_seconds(total_steps: int, cfg: TrainingConfig, gpu_name: str | None) -> float:
    return total_steps * seconds_per_step(cfg, gpu_name)


# Dense bf16 tensor peaks (TFLOP/s, no sparsity) from the vendors' datasheets; MFU is measured against them.
# More specific names first: "H100 PCIe" must win over "H100", "L40S" over "L40" and "L4".
_BF16_PEAK_TFLOPS = (
    ("GH200", 989.0), ("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("B200", 2250.0),
    ("A100", 312.0), ("L40S", 362.0), ("L40", 181.0), ("A10G", 70.0), ("A10", 125.0), ("L4", 121.0),
    ("RTX 6000 Ada", 364.0), ("A6000", 155.0), ("4090", 165.0), ("3090", 71.0), ("A40", 150.0),
)


def bf16_peak_tflops(gpu_name: str | None) -> float | None:
    """The GPU's dense bf16 peak, or None when it is not in the table (then no MFU is reported)."""
    if not gpu_name:
        return None
    for key, tflops in _BF16_PEAK_TFLOPS:
        if key.lower() in gpu_name.lower():
            return tflops
    return None


@dataclass(frozen=True)
class TimeEstimate:
    seconds: float
    seconds_per_step: float
    measured: bool
    basis: str  # what the figure comes from, for the user

    @property
    def label(self) -> str:
        return "measured" if self.measured else "estimated"


def time_estimate(total_steps: int, cfg: TrainingConfig, gpu_name: str | None,
                  root: Path | None = None) -> TimeEstimate:
    """Measured images/s from a stored bench result for this GPU and settings, else the speed a run reached on
    this device at this resolution, else the rough estimate."""
    result = bench_store.find_result(cfg, gpu_name, root)
    batch = cfg.schedule.train_batch_size
    measured = bench_store.images_per_s_at(result, batch) if result else None
    images = batch * cfg.optimizer.gradient_accumulation_steps
    if measured is not None:
        per_step = images / measured.value
        how = "at this batch" if measured.exact else "interpolated between measured batches"
        return TimeEstimate(total_steps * per_step, per_step, True,
                            f"loratui bench, {how}")
    # the speed a real run reached here (the monitor records it); `root` is a bench folder beside that file
    store = root.parent / measured_speed.FILE_NAME if root is not None else None
    reached = measured_speed.images_per_second(gpu_name or "cpu", cfg, store)
    if reached:
        per_step = images / reached
        return TimeEstimate(total_steps * per_step, per_step, True, "an earlier run on this machine")
    per_step = seconds_per_step(cfg, gpu_name)
    return TimeEstimate(total_steps * per_step, per_step, False, "published speeds; run `loratui bench` to measure")


def cost(seconds: float, price_per_hour: float, gpus: int = 1) -> float:
    """What the run costs at ``price_per_hour`` per GPU."""
    return seconds / 3600 * price_per_hour * gpus


# Batch at which an RTX 4090 reaches half its asymptotic images/s on SD1.5 512² (an assumption until benched:
# kernels fill the GPU once a batch holds enough pixels, so small images need larger batches).
_HALF_SPEED_BATCH = 0.45


def relative_speed(cfg: TrainingConfig, gpu_name: str | None, batch: int) -> float:
    """Estimated images/s at ``batch`` as a share of the GPU's asymptote: b ÷ (b + b½), where b½ shrinks with
    the work per image and grows with the GPU's speed. Used only until a bench result exists."""
    cost = model_cost.cost_of(cfg)
    sd15 = model_cost.reference_cost("sd1").unet_flops
    if cost is None:  # the family's released UNet, scaled by pixel count
        family = cfg.model.model_family
        pixels = (cfg.dataset.resolution / NATIVE_RESOLUTION[family]) ** 2
        work = model_cost.reference_cost(family).unet_flops / sd15 * pixels
    else:
        work = cost.unet_flops / sd15
    half = _HALF_SPEED_BATCH * gpu_speed_factor(gpu_name or "RTX 4090") / work
    return batch / (batch + half)
