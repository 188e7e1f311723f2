"""Sample images during training, from prompts in kohya's syntax."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from loratui.core.sample_prompts import parse_sample_prompt

if TYPE_CHECKING:
    from loratui.train.loop import Trainer

_SAMPLERS = {
    "ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler", "euler_a": "EulerAncestralDiscreteScheduler",
    "dpmsolver++": "DPMSolverMultistepScheduler", "pndm": "PNDMScheduler", "lms": "LMSDiscreteScheduler",
}


def _pipeline(trainer: Trainer):
    import diffusers
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    m = trainer.models
    unwrap = trainer.accelerator.unwrap_model
    scheduler_cls = getattr(diffusers, _SAMPLERS[trainer.cfg.sampling.sample_sampler])
    scheduler = scheduler_cls.from_config(m.noise_scheduler.config)
    parts = {"unet": unwrap(m.unet), "vae": m.vae, "text_encoder": unwrap(m.text_encoders[0]),
             "tokenizer": m.tokenizers[0], "scheduler": scheduler}
    if m.is_sdxl:
        parts.update(text_encoder_2=unwrap(m.text_encoders[1]), tokenizer_2=m.tokenizers[1])
        return StableDiffusionXLPipeline(**parts)
    return StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def render_samples(trainer: Trainer, epoch: int, step: int) -> Iterator[tuple[Path, str]]:
    cfg = trainer.cfg
    folder = trainer.run_dir / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    pipe = _pipeline(trainer)
    pipe.set_progress_bar_config(disable=True)
    for index, line in enumerate(cfg.sampling.sample_prompts):
        prompt = parse_sample_prompt(line, cfg.dataset.resolution)
        gen = torch.Generator().manual_seed(prompt.seed if prompt.seed is not None else cfg.schedule.seed + index)
        with torch.no_grad(), trainer.accelerator.autocast():
            image = pipe(**_embeddings(trainer, prompt.prompt, prompt.negative), width=prompt.width,
                         height=prompt.height, num_inference_steps=prompt.steps, guidance_scale=prompt.cfg_scale,
                         generator=gen).images[0]
        path = folder / f"{cfg.saving.output_name}_e{epoch:06d}_{index:02d}.png"
        image.save(path)
        yield path, prompt.prompt


def _embeddings(trainer: Trainer, prompt: str, negative: str) -> dict[str, torch.Tensor]:
    """Encode with the trainer's own text path, so samples see the same clip skip and LoRA as training."""
    hidden, pooled = trainer.encode_text([prompt])
    neg_hidden, neg_pooled = trainer.encode_text([negative])
    embeds = {"prompt_embeds": hidden, "negative_prompt_embeds": neg_hidden}
    if pooled is not None:
        embeds.update(pooled_prompt_embeds=pooled, negative_pooled_prompt_embeds=neg_pooled)
    return embeds
