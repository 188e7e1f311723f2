"""Render the checkpoint comparison: the base model loaded once, each checkpoint applied at each weight through
diffusers' own ``load_lora_weights`` / ``set_adapters`` (the loader other programs use, so the grid shows what
they will give), the same seed for every cell of a prompt; plus the favourite copy (``NAME-best.safetensors``).

LoHa and LoKr files (LyCORIS), which diffusers cannot load, go through the trainer's own network instead: the
run's network attached to the pipeline, each checkpoint's tensors loaded into it, and the weight applied as
LyCORIS' multiplier (``set_scale``: ΔW × weight), so weight 0 is exactly the base model.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from loratui.core import compare_grid as G
from loratui.core.atomic import atomic_write_bytes
from loratui.core.config import TrainingConfig
from loratui.core.sample_prompts import SamplePrompt, parse_sample_prompt
from loratui.train.export import read_metadata, serialize, unique_output_path
from loratui.train.model_loading import Models, load_models
from loratui.train.sampling import _SAMPLERS


class CompareError(RuntimeError):
    """The comparison cannot run; one line saying what to do."""


def build_pipeline(models: Models, sampler: str, device: torch.device, dtype: torch.dtype):
    import diffusers
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    scheduler = getattr(diffusers, _SAMPLERS[sampler]).from_config(models.noise_scheduler.config)
    parts = {"unet": models.unet, "vae": models.vae, "text_encoder": models.text_encoders[0],
             "tokenizer": models.tokenizers[0], "scheduler": scheduler}
    if models.is_sdxl:
        parts.update(text_encoder_2=models.text_encoders[1], tokenizer_2=models.tokenizers[1])
        pipe = StableDiffusionXLPipeline(**parts)
    else:
        pipe = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype)


def _clip_skip_embeds(pipe, text: str, clip_skip: int) -> torch.Tensor:
    """SD1 prompt embeddings from the Nth-last text-encoder layer, final norm applied (kohya / webui clip skip).
    Diffusers' own ``clip_skip`` reaches for ``text_encoder.text_model``, which transformers 5 removed."""
    ids = pipe.tokenizer(text, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True,
                         return_tensors="pt").input_ids.to(pipe.device)
    out = pipe.text_encoder(ids, output_hidden_states=True)
    encoder = getattr(pipe.text_encoder, "text_model", pipe.text_encoder)
    return encoder.final_layer_norm(out.hidden_states[-clip_skip])


def render(pipe, prompt: SamplePrompt, seed: int, clip_skip: int, is_sdxl: bool) -> Image.Image:
    if clip_skip > 1 and not is_sdxl:
        with torch.no_grad():
            text = {"prompt_embeds": _clip_skip_embeds(pipe, prompt.prompt, clip_skip),
                    "negative_prompt_embeds": _clip_skip_embeds(pipe, prompt.negative, clip_skip)}
    else:
        text = {"prompt": prompt.prompt, "negative_prompt": prompt.negative}
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return pipe(**text, width=prompt.width, height=prompt.height, num_inference_steps=prompt.steps,
                    guidance_scale=prompt.cfg_scale, generator=generator).images[0]


def _device_and_dtype(cfg: TrainingConfig) -> tuple[torch.device, torch.dtype]:
    if not torch.cuda.is_available():
        return torch.device("cpu"), torch.float32
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.precision.mixed_precision, torch.float32)
    return torch.device("cuda"), dtype


def run_compare(cfg: TrainingConfig, run_dir: Path, out_dir: Path, checkpoints: list[G.Checkpoint],
                weights: list[float], prompt_lines: list[str], seed: int,
                progress: Callable[[int, int], None] | None = None) -> G.Manifest:
    """Render every cell and grid into ``out_dir``; the manifest is rewritten after each cell (viewers poll it)."""
    try:
        prompts = [parse_sample_prompt(line, cfg.dataset.resolution) for line in prompt_lines]
    except ValueError as exc:
        raise CompareError(str(exc)) from exc
    seeds = [p.seed if p.seed is not None else seed + i for i, p in enumerate(prompts)]
    columns = [{"label": G.NO_LORA, "weight": None}] + [{"label": G.weight_label(w), "weight": w} for w in weights]
    manifest = G.Manifest(
        run=str(run_dir), rows=[{"label": c.label, "checkpoint": str(c.path)} for c in checkpoints], columns=columns,
        prompts=[{"prompt": p.prompt, "seed": s, "grid": G.grid_file(i),
                  "cells": [[G.cell_file(i, r, c) for c in range(len(columns))] for r in range(len(checkpoints))]}
                 for i, (p, s) in enumerate(zip(prompts, seeds, strict=True))],
        total=len(prompts) * (1 + len(checkpoints) * len(weights)))
    (out_dir / "cells").mkdir(parents=True, exist_ok=True)
    manifest.save(out_dir)
    device, dtype = _device_and_dtype(cfg)
    pipe = build_pipeline(load_models(cfg), cfg.sampling.sample_sampler, device, dtype)
    clip_skip, is_sdxl = cfg.advanced.clip_skip, cfg.model.is_sdxl

    def cell_done(image: Image.Image, prompt: int, row: int, col: int) -> None:
        image.save(out_dir / G.cell_file(prompt, row, col))
        manifest.done += 1
        manifest.save(out_dir)
        if progress:
            progress(manifest.done, manifest.total)

    # The reference column first, before any adapter exists: exactly the base model's output.
    for i, prompt in enumerate(prompts):
        reference = render(pipe, prompt, seeds[i], clip_skip, is_sdxl)
        for row in range(len(checkpoints)):
            reference.save(out_dir / G.cell_file(i, row, 0))
        cell_done(reference, i, 0, 0)
    apply = _lycoris_applier(cfg, pipe, dtype) if cfg.network.network_type in LYCORIS else _diffusers_applier(pipe)
    for row, checkpoint in enumerate(checkpoints):
        set_weight = apply(checkpoint.path, row)
        for col, weight in enumerate(weights, start=1):
            set_weight(weight)
            for i, prompt in enumerate(prompts):
                cell_done(render(pipe, prompt, seeds[i], clip_skip, is_sdxl), i, row, col)
        set_weight(None)  # done with this checkpoint
    _write_grids(out_dir, manifest)
    manifest.finished = True
    manifest.save(out_dir)
    return manifest


LYCORIS = ("loha", "lokr")
Applier = Callable[[Path, int], Callable[[float | None], None]]


def _diffusers_applier(pipe) -> Applier:
    """Each checkpoint as a diffusers adapter; ``None`` deletes it (one adapter at a time: one pipeline's memory)."""
    def apply(path: Path, row: int) -> Callable[[float | None], None]:
        adapter = f"ckpt{row}"
        _load_adapter(pipe, path, adapter)

        def set_weight(weight: float | None) -> None:
            if weight is None:
                pipe.delete_adapters(adapter)
            else:
                pipe.set_adapters([adapter], adapter_weights=[weight])
        return set_weight
    return apply


def _lycoris_applier(cfg: TrainingConfig, pipe, dtype: torch.dtype) -> Applier:
    """The run's LoHa/LoKr network attached once; each checkpoint's tensors copied into it; the weight scales ΔW
    (``None``: 0, the base model, until the next checkpoint is loaded)."""
    from loratui.train.lora_extras import ADAPTER
    from loratui.train.networks import _adapted_layers, attach_network
    from loratui.train.resume_weights import load_kohya_weights

    encoders = [pipe.text_encoder, *([pipe.text_encoder_2] if getattr(pipe, "text_encoder_2", None) else [])]
    network = attach_network(cfg, pipe.unet, encoders)
    layers = [layer for part in network.parts for layer in _adapted_layers(part.model)]
    for part in network.parts:
        part.model.eval()  # no rank or module dropout while rendering

    def set_weight(weight: float | None) -> None:
        for layer in layers:
            layer.set_scale(ADAPTER, 0.0 if weight is None else weight)

    def apply(path: Path, row: int) -> Callable[[float | None], None]:
        try:
            load_kohya_weights(network, path)
        except (ValueError, KeyError, RuntimeError, OSError) as exc:
            raise CompareError(f"{path}: cannot load this {cfg.network.network_type} file "
                               f"({str(exc).splitlines()[0][:120]})") from exc
        for part in network.parts:
            part.model.to(dtype)  # the adapter tensors in the pipeline's precision
        return set_weight
    return apply


def _load_adapter(pipe, path: Path, adapter: str) -> None:
    try:
        pipe.load_lora_weights(str(path), adapter_name=adapter)
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        raise CompareError(f"{path}: diffusers cannot load this LoRA ({str(exc).splitlines()[0][:120]})") from exc


def _write_grids(out_dir: Path, manifest: G.Manifest) -> None:
    rows = [r["label"] for r in manifest.rows]
    cols = [c["label"] for c in manifest.columns]
    for entry in manifest.prompts:
        cells = [[Image.open(out_dir / f) for f in row] for row in entry["cells"]]
        grid = G.draw_grid(cells, rows, cols, f"{entry['prompt']}  (seed {entry['seed']})")
        grid.save(out_dir / entry["grid"])
        for row in cells:
            for image in row:
                image.close()


def progress_bar() -> tuple[Callable[[int, int], None], Callable[[], None]]:
    from tqdm import tqdm

    bar = tqdm(total=0, desc="comparing", unit="img", file=sys.stderr)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return update, bar.close


# --- the favourite --------------------------------------------------------------------------------------


def mark_favourite(checkpoint: Path, weight: float, output_name: str) -> Path:
    """Copy ``checkpoint`` to ``NAME-best.safetensors`` beside it (``-best_v2`` … if taken: never overwriting),
    with the chosen weight in ``ss_loratui_best_weight`` and the hashes recomputed for the new metadata."""
    from safetensors.torch import load_file

    target, _ = unique_output_path(checkpoint.with_name(f"{output_name}-best.safetensors"))
    meta = read_metadata(checkpoint)
    meta.update({G.BEST_WEIGHT_KEY: G.weight_label(weight), G.BEST_SOURCE_KEY: checkpoint.name})
    atomic_write_bytes(target, serialize(load_file(str(checkpoint)), meta))
    return target
