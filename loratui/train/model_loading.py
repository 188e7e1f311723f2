"""Load the base model's parts: a diffusers folder, a hub id, or a single-file checkpoint (offline).

A single-file checkpoint (the ``.safetensors`` people download from model sites) holds weights only. diffusers
needs each component's config to build the model around them; we ship those configs in ``model_configs/``
and build the CLIP tokenizers from the BPE file shipped there too, so a local file never needs the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from loratui.core.checkpoint_info import (
    CheckpointError,
    CheckpointInfo,
    describe_checkpoint,
    loading_problem,
    ram_problem,
)
from loratui.core.config import TrainingConfig

SHIPPED_CONFIGS = Path(__file__).parent / "model_configs"
CONFIG_ROOT = SHIPPED_CONFIGS  # where config_dir() looks; tests point it at the configs of tiny checkpoints
# Latent scale of each family's VAE (SD1/SD2: 0.18215, SDXL: 0.13025). It belongs to the base model: a VAE
# file or folder given as model.vae never decides it (sd-scripts uses the same constants per family).
LATENT_SCALE = {"sd1": 0.18215, "sd2": 0.18215, "sd2-v": 0.18215, "sdxl": 0.13025}


_TORCH_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}


class ModelLoadError(RuntimeError):
    """The base model cannot be loaded; the message says what to do."""


@dataclass
class Models:
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoders: list[torch.nn.Module]
    tokenizers: list
    noise_scheduler: object
    is_sdxl: bool
    v_prediction: bool


def _pipeline_class(is_sdxl: bool):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    return StableDiffusionXLPipeline if is_sdxl else StableDiffusionPipeline


def config_dir(family: str) -> Path:
    """The shipped diffusers-layout config folder of a ``model.model_family``."""
    return CONFIG_ROOT / family


def _load_pipeline(cfg: TrainingConfig) -> tuple[object, CheckpointInfo | None]:
    source = cfg.model.pretrained_model_name_or_path
    if not source:
        raise ModelLoadError("no base model set: give model.pretrained_model_name_or_path")
    cls = _pipeline_class(cfg.model.is_sdxl)
    path = Path(source).expanduser()
    if path.is_dir():
        inspect_checkpoint(path, cfg.model.model_family)
        return cls.from_pretrained(str(path), local_files_only=True), None
    if path.suffix.lower() in (".safetensors", ".ckpt", ".pt", ".pth", ".bin") or source.startswith((".", "/", "~")):
        return _load_single_file(cfg, path)
    if path.exists():
        raise ModelLoadError(f"{source}: not a diffusers folder or .safetensors checkpoint")
    try:
        return cls.from_pretrained(source), None
    except OSError as exc:
        raise ModelLoadError(f"{source}: cannot be loaded from the hub ({str(exc).splitlines()[0]}); download "
                             "it first or give a local folder / .safetensors file") from exc


def inspect_checkpoint(path: Path, family: str) -> CheckpointInfo:
    """Everything that can be said against loading ``path`` as ``family``, before touching the weights."""
    try:
        info = describe_checkpoint(path)
    except CheckpointError as exc:
        raise ModelLoadError(str(exc)) from exc
    problem = loading_problem(info, family)
    if problem:
        raise ModelLoadError(f"{path}: {problem}")
    problem = ram_problem(info, _available_ram())
    if problem:
        raise ModelLoadError(f"{path}: {problem}")
    return info


def _available_ram() -> int | None:
    try:
        import psutil  # a dependency of accelerate
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


def _load_single_file(cfg: TrainingConfig, path: Path) -> tuple[object, CheckpointInfo]:
    family = cfg.model.model_family
    info = inspect_checkpoint(path, family)
    if info.format == "pickle" and not cfg.model.allow_pickle:
        raise ModelLoadError(f"{path}: pickle checkpoints can run code when loaded; convert it to .safetensors, "
                             "or set model.allow_pickle: true if you trust the file")
    from loratui.train.tokenizers import tokenizers_for

    extra: dict[str, object] = dict(tokenizers_for("sdxl" if cfg.model.is_sdxl else "sd1"))
    if not cfg.model.is_sdxl:
        extra.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    # config= a shipped folder plus local_files_only: diffusers reads every config from disk, never the hub.
    # Pickle files go through diffusers' loader, which calls torch.load(weights_only=True).
    # Building the models in the file's own dtype lets them take over the loaded tensors: without it an fp16
    # file is upcast to fp32 while the fp16 copy is still held (3x the file size in RAM instead of ~1x).
    pipe = _pipeline_class(cfg.model.is_sdxl).from_single_file(
        str(path), config=str(config_dir(family)), local_files_only=True,
        torch_dtype=_TORCH_DTYPES.get(info.dtype or ""), **extra)
    return pipe, info


def load_vae(source: str, family: str) -> torch.nn.Module:
    """A replacement VAE from a single file (offline, with the family's shipped config) or a diffusers folder."""
    from diffusers import AutoencoderKL

    path = Path(source).expanduser()
    if not path.exists():
        raise ModelLoadError(f"{path}: VAE not found; check model.vae")
    try:
        if path.is_dir():
            sub = "vae" if (path / "vae" / "config.json").is_file() else None
            return AutoencoderKL.from_pretrained(str(path), subfolder=sub, local_files_only=True)
        return AutoencoderKL.from_single_file(str(path), config=str(config_dir(family)), subfolder="vae",
                                              local_files_only=True)
    except Exception as exc:  # diffusers raises many types for a file that is not a VAE
        raise ModelLoadError(f"{path}: cannot be loaded as a VAE ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}); check model.vae") from exc


def load_models(cfg: TrainingConfig) -> Models:
    try:
        pipe, info = _load_pipeline(cfg)
    except ModelLoadError:
        raise
    except Exception as exc:  # diffusers raises many types for a bad checkpoint
        raise ModelLoadError(f"{cfg.model.pretrained_model_name_or_path}: cannot be loaded as "
                             f"{cfg.model.model_family} ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                             "check model.model_family (`loratui check-model FILE` reads it from a "
                             ".safetensors file)") from exc
    if cfg.model.vae:
        pipe.vae = load_vae(cfg.model.vae, cfg.model.model_family)
    if info is not None or cfg.model.vae:
        pipe.vae.register_to_config(scaling_factor=LATENT_SCALE[cfg.model.model_family])
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    file_says_v = info is not None and info.prediction == "v_prediction"
    v_prediction = cfg.model.v_parameterization or file_says_v or scheduler.config.prediction_type == "v_prediction"
    if v_prediction:
        scheduler.register_to_config(prediction_type="v_prediction")
    tes = [pipe.text_encoder] + ([pipe.text_encoder_2] if cfg.model.is_sdxl else [])
    toks = [pipe.tokenizer] + ([pipe.tokenizer_2] if cfg.model.is_sdxl else [])
    return Models(pipe.unet, pipe.vae, tes, toks, scheduler, cfg.model.is_sdxl, v_prediction)
