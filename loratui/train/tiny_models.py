"""Tiny Stable Diffusion pipelines with the real architecture and random weights, built offline.

They make the whole flow (demo, tests, benchmarks) run anywhere in seconds: same diffusers classes, same
module names as SD1.x / SDXL, so LoRA targeting and kohya key names are exercised for real.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

_WORDS = (
    "a", "photo", "of", "sks", "person", "cat", "dog", "red", "blue", "green", "yellow", "style", "anime", "girl",
    "smiling", "landscape", "painting", "portrait", "tree", "house", "car", "flower", "sky", "sea", "mountain",
    "city", "night", "day", "light", "dark", "hair", "eyes", "dress", "shirt", "background", "white", "black",
    "simple", "detailed", "best", "quality", "masterpiece", "lowres", "blurry", "toy", "robot",
)


def _write_tokenizer(folder: Path) -> None:
    """A CLIP BPE tokenizer with a small whole-word vocabulary plus single characters."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789,.!?-_'()"))
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in [*chars, *(c + "</w>" for c in chars), *(w + "</w>" for w in _WORDS)]:
        vocab.setdefault(token, len(vocab))
    merges = []
    for word in _WORDS:
        # merge letters left to right so every listed word becomes one token
        pieces = [*list(word[:-1]), word[-1] + "</w>"]
        while len(pieces) > 1:
            merged = pieces[0] + pieces[1]
            merges.append(f"{pieces[0]} {pieces[1]}")
            vocab.setdefault(merged, len(vocab))
            pieces = [merged, *pieces[2:]]
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    tokenizer.save_pretrained(folder)


def _text_encoder(vocab_size: int, hidden: int, projection: bool, seed: int) -> torch.nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=5,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=hidden, bos_token_id=0,
        eos_token_id=1, pad_token_id=1, hidden_act="quick_gelu",
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def _vae(seed: int) -> torch.nn.Module:
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8, sample_size=64,
    )


def _scheduler(v_prediction: bool) -> object:
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        steps_offset=1, clip_sample=False, prediction_type="v_prediction" if v_prediction else "epsilon",
    )


def build_tiny_sd1(out_dir: Path, *, v_prediction: bool = False, seed: int = 0) -> Path:
    """Save a tiny SD1.x-architecture pipeline (diffusers folder) to ``out_dir`` and return it."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTokenizer

    out_dir = Path(out_dir)
    _write_tokenizer(out_dir / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(out_dir / "tokenizer")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(32, 64), layers_per_block=2, norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8,
    )
    pipe = StableDiffusionPipeline(
        unet=unet, vae=_vae(seed + 1), text_encoder=_text_encoder(len(tokenizer), 32, False, seed + 2),
        tokenizer=tokenizer, scheduler=_scheduler(v_prediction), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def build_tiny_sdxl(out_dir: Path, *, seed: int = 0) -> Path:
    """Save a tiny SDXL-architecture pipeline (two text encoders, ``text_time`` conditioning)."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTokenizer

    out_dir = Path(out_dir)
    _write_tokenizer(out_dir / "tokenizer")
    _write_tokenizer(out_dir / "tokenizer_2")
    tokenizer = CLIPTokenizer.from_pretrained(out_dir / "tokenizer")
    tokenizer_2 = CLIPTokenizer.from_pretrained(out_dir / "tokenizer_2")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(32, 64), layers_per_block=2, norm_num_groups=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64, attention_head_dim=(2, 4), use_linear_projection=True,
        transformer_layers_per_block=(1, 2), addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=32 + 6 * 8,
    )
    pipe = StableDiffusionXLPipeline(
        unet=unet, vae=_vae(seed + 1), text_encoder=_text_encoder(len(tokenizer), 32, False, seed + 2),
        text_encoder_2=_text_encoder(len(tokenizer_2), 32, True, seed + 3), tokenizer=tokenizer,
        tokenizer_2=tokenizer_2, scheduler=_scheduler(False), force_zeros_for_empty_prompt=True,
    )
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return out_dir
