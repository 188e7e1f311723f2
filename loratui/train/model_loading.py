"""Load the base model's parts: a diffusers folder, a hub id, or a single-file checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from loratui.core.config import TrainingConfig


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


_PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


def _pipeline_class(is_sdxl: bool):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    return StableDiffusionXLPipeline if is_sdxl else StableDiffusionPipeline


def _load_pipeline(cfg: TrainingConfig):
    source = cfg.model.pretrained_model_name_or_path
    if not source:
        raise ModelLoadError("no base model set: give model.pretrained_model_name_or_path")
    cls = _pipeline_class(cfg.model.is_sdxl)
    path = Path(source).expanduser()
    if path.is_dir():
        return cls.from_pretrained(str(path), local_files_only=True)
    if path.suffix in _PICKLE_SUFFIXES:
        if not cfg.model.allow_pickle:
            raise ModelLoadError(f"{path}: pickle checkpoints can run code when loaded; convert it to "
                                 ".safetensors, or set model.allow_pickle: true if you trust the file")
        if not path.exists():
            raise ModelLoadError(f"{path}: file not found")
        torch_load = torch.load
        # diffusers' single-file loader calls torch.load; force the safe, weights-only mode.
        torch.load = lambda *a, **k: torch_load(*a, **{**k, "weights_only": True})
        try:
            return cls.from_single_file(str(path))
        finally:
            torch.load = torch_load
    if path.suffix == ".safetensors":
        if not path.exists():
            raise ModelLoadError(f"{path}: file not found; check model.pretrained_model_name_or_path")
        return cls.from_single_file(str(path))
    if path.exists() or source.startswith((".", "/", "~")):
        raise ModelLoadError(f"{source}: not a diffusers folder or .safetensors checkpoint")
    try:
        return cls.from_pretrained(source)
    except OSError as exc:
        raise ModelLoadError(f"{source}: cannot be loaded from the hub ({str(exc).splitlines()[0]}); download "
                             "it first or give a local folder / .safetensors file") from exc


def load_models(cfg: TrainingConfig) -> Models:
    try:
        pipe = _load_pipeline(cfg)
    except ModelLoadError:
        raise
    except Exception as exc:  # diffusers raises many types for a bad checkpoint
        raise ModelLoadError(f"{cfg.model.pretrained_model_name_or_path}: cannot be loaded as "
                             f"{cfg.model.model_family} ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                             "check model.model_family") from exc
    if cfg.model.vae:
        from diffusers import AutoencoderKL

        vae_path = Path(cfg.model.vae)
        pipe.vae = (AutoencoderKL.from_single_file(str(vae_path)) if vae_path.is_file()
                    else AutoencoderKL.from_pretrained(str(vae_path)))
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    v_prediction = cfg.model.v_parameterization or scheduler.config.prediction_type == "v_prediction"
    if cfg.model.v_parameterization:
        scheduler.register_to_config(prediction_type="v_prediction")
    tes = [pipe.text_encoder] + ([pipe.text_encoder_2] if cfg.model.is_sdxl else [])
    toks = [pipe.tokenizer] + ([pipe.tokenizer_2] if cfg.model.is_sdxl else [])
    return Models(pipe.unet, pipe.vae, tes, toks, scheduler, cfg.model.is_sdxl, v_prediction)
