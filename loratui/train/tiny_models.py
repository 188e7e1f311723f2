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


# --- original (CompVis / Stability) single-file layout ----------------------------------------------------
# The layout model sites distribute: one .safetensors with model.diffusion_model.* (UNet), first_stage_model.*
# (VAE) and the text encoder(s) under cond_stage_model.* (SD1/SD2) or conditioner.embedders.N.* (SDXL). The
# writers below turn a diffusers pipeline into that layout so tests can load "downloaded" checkpoints offline.

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
           "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}


def _resnet_inner(rest: str) -> str:
    name, _, tail = rest.partition(".")
    return f"{_RESNET[name]}.{tail}"


def unet_to_original(state: dict[str, torch.Tensor], layers_per_block: int) -> dict[str, torch.Tensor]:
    """diffusers UNet2DConditionModel keys -> LDM ``model.diffusion_model.*`` keys (same tensors)."""
    per_level = layers_per_block + 1
    up_has_attention = {k.split(".")[1] for k in state if k.startswith("up_blocks.") and ".attentions." in k}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        depth = 1 if parts[0] in _UNET_TOP else 2
        head = ".".join(parts[:depth])
        if head in _UNET_TOP:
            new = f"{_UNET_TOP[head]}.{'.'.join(parts[depth:])}"
        elif parts[0] == "down_blocks":
            level, kind = int(parts[1]), parts[2]
            if kind == "downsamplers":
                new = f"input_blocks.{per_level * (level + 1)}.0.op.{'.'.join(parts[5:])}"
            else:
                block = per_level * level + int(parts[3]) + 1
                tail = ".".join(parts[4:])
                new = f"input_blocks.{block}.0.{_resnet_inner(tail)}" if kind == "resnets" else \
                    f"input_blocks.{block}.1.{tail}"
        elif parts[0] == "up_blocks":
            level, kind = int(parts[1]), parts[2]
            if kind == "upsamplers":
                slot = 2 if parts[1] in up_has_attention else 1
                new = f"output_blocks.{per_level * level + layers_per_block}.{slot}.{'.'.join(parts[4:])}"
            else:
                block = per_level * level + int(parts[3])
                tail = ".".join(parts[4:])
                new = f"output_blocks.{block}.0.{_resnet_inner(tail)}" if kind == "resnets" else \
                    f"output_blocks.{block}.1.{tail}"
        elif parts[0] == "mid_block":
            tail = ".".join(parts[3:])
            new = f"middle_block.{2 * int(parts[2])}.{_resnet_inner(tail)}" if parts[1] == "resnets" else \
                f"middle_block.1.{tail}"
        else:
            raise KeyError(f"unexpected UNet key {key}")
        out[f"model.diffusion_model.{new}"] = value
    return out


_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL keys -> LDM ``first_stage_model.*`` keys (attention linears become 1x1 convs)."""
    levels = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("decoder.up_blocks."))
    out = {}
    for key, value in state.items():
        new = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        new = new.replace(".downsamplers.0.", ".downsample.").replace(".upsamplers.0.", ".upsample.")
        new = new.replace("mid_block.resnets.0.", "mid.block_1.").replace("mid_block.resnets.1.", "mid.block_2.")
        new = new.replace(".resnets.", ".block.").replace("encoder.down_blocks.", "encoder.down.")
        if new.startswith("decoder.up_blocks."):
            parts = new.split(".")
            parts[1:3] = ["up", str(levels - 1 - int(parts[2]))]
            new = ".".join(parts)
        if "mid_block.attentions.0." in new:
            prefix, _, tail = new.partition("mid_block.attentions.0.")
            name, _, leaf = tail.rpartition(".")
            new = f"{prefix}mid.attn_1.{_VAE_ATTN[name]}.{leaf}"
            if leaf == "weight" and value.ndim == 2:
                value = value[:, :, None, None]  # LDM's VAE attention uses 1x1 convolutions
        out[f"first_stage_model.{new}"] = value
    return out


def _text_model_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIP text-tower keys without the ``text_model.`` level (transformers 5 drops it for CLIPTextModel)."""
    return {k.removeprefix("text_model."): v for k, v in state.items()}


def clip_to_original(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """transformers CLIPTextModel -> the HF-CLIP layout SD1 and SDXL's first encoder keep (transformers 4 names)."""
    return {f"{prefix}text_model.{k}": v for k, v in _text_model_keys(state).items()
            if not k.endswith("position_ids")}


def open_clip_to_original(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """transformers CLIP text model -> OpenCLIP's layout (SD2's encoder, SDXL's second): fused q/k/v."""
    s = _text_model_keys(state)
    hidden = s["embeddings.token_embedding.weight"].shape[1]
    projection = s.get("text_projection.weight")
    out = {
        "token_embedding.weight": s["embeddings.token_embedding.weight"],
        "positional_embedding": s["embeddings.position_embedding.weight"],
        "ln_final.weight": s["final_layer_norm.weight"], "ln_final.bias": s["final_layer_norm.bias"],
        # OpenCLIP multiplies x @ text_projection; SD2's file carries one although SD2 never uses it
        "text_projection": projection.T.contiguous() if projection is not None else torch.eye(hidden),
    }
    layers = 1 + max(int(k.split(".")[2]) for k in s if k.startswith("encoder.layers."))
    for i in range(layers):
        src, dst = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for leaf in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{leaf}"] = torch.cat(
                [s[f"{src}self_attn.{p}_proj.{leaf}"] for p in ("q", "k", "v")])
            for ours, theirs in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"),
                                 ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
                out[f"{dst}{theirs}.{leaf}"] = s[f"{src}{ours}.{leaf}"]
    return {prefix + k: v for k, v in out.items()}


def pipeline_to_original(unet, vae, text_encoders: list, family: str) -> dict[str, torch.Tensor]:
    """The whole model as one original-layout state dict (``family``: sd1, sd2 or sdxl)."""
    state = unet_to_original(unet.state_dict(), unet.config.layers_per_block)
    state.update(vae_to_original(vae.state_dict()))
    te = [m.state_dict() for m in text_encoders]
    if family == "sd1":
        state.update(clip_to_original(te[0], "cond_stage_model.transformer."))
    elif family == "sd2":
        state.update(open_clip_to_original(te[0], "cond_stage_model.model."))
    else:
        state.update(clip_to_original(te[0], "conditioner.embedders.0.transformer."))
        state.update(open_clip_to_original(te[1], "conditioner.embedders.1.model."))
    return {k: v.contiguous() for k, v in state.items()}


def build_sd15_single_file(out_file: Path, *, seed: int = 0, dtype: torch.dtype = torch.float16) -> Path:
    """A FULL-size SD1.5-architecture checkpoint with random weights, in the original single-file layout.

    Built from the shipped SD1 configs (the same ones loading uses); ~2 GB in fp16, about a minute on 2 cores.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from loratui.train.model_loading import SHIPPED_CONFIGS

    folder = SHIPPED_CONFIGS / "sd1"
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet")).to(dtype)
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae")).to(dtype)
    text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder")).to(dtype)
    state = pipeline_to_original(unet, vae, [text_encoder], "sd1")
    del unet, vae, text_encoder
    save_file(state, str(out_file))
    return out_file


def _tiny_components(family: str, seed: int) -> tuple[torch.nn.Module, torch.nn.Module, list[torch.nn.Module]]:
    """Tiny UNet, VAE and text encoder(s) of ``family`` (sd1, sd2, sdxl) over CLIP's real 49,408-token vocabulary,
    so that the real offline tokenizers drive them."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    def encoder(projection: bool, act: str, offset: int, hidden: int = 32) -> torch.nn.Module:
        torch.manual_seed(seed + offset)
        config = CLIPTextConfig(
            vocab_size=49408, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=3,
            num_attention_heads=4, max_position_embeddings=77, projection_dim=hidden, bos_token_id=49406,
            eos_token_id=49407, pad_token_id=49407, hidden_act=act)
        return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)

    torch.manual_seed(seed)
    if family == "sdxl":
        unet = UNet2DConditionModel(
            sample_size=8, block_out_channels=(32, 64), layers_per_block=2, norm_num_groups=8,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32 + 48,
            attention_head_dim=(2, 4), use_linear_projection=True, transformer_layers_per_block=(1, 2),
            addition_embed_type="text_time", addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=48 + 6 * 8)
        # the two encoders must differ in width, as CLIP-L (768) and bigG (1280) do: loaders tell them apart by it
        return unet, _vae(seed + 1), [encoder(False, "quick_gelu", 2), encoder(True, "gelu", 3, hidden=48)]
    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(32, 64), layers_per_block=2, norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, use_linear_projection=family == "sd2")
    return unet, _vae(seed + 1), [encoder(False, "gelu" if family == "sd2" else "quick_gelu", 2)]


def build_tiny_single_file(out_dir: Path, config_family: str, *, seed: int = 0) -> tuple[Path, Path]:
    """A tiny original-layout checkpoint ``model.safetensors`` of ``config_family`` (sd1, sd2, sd2-v, sdxl) and
    a config root holding ``<config_family>/`` in the layout of ``model_loading.CONFIG_ROOT`` for its shapes.

    Returns (checkpoint, config root). The real key names and layout are exercised; only the sizes are tiny.
    """
    import shutil

    from safetensors.torch import save_file

    from loratui.train.model_loading import SHIPPED_CONFIGS

    out_dir = Path(out_dir)
    family = config_family.split("-")[0]
    unet, vae, encoders = _tiny_components(family, seed)
    configs = out_dir / "configs" / config_family
    shipped = SHIPPED_CONFIGS / config_family
    configs.mkdir(parents=True, exist_ok=True)
    shutil.copy(shipped / "model_index.json", configs / "model_index.json")
    shutil.copytree(shipped / "scheduler", configs / "scheduler", dirs_exist_ok=True)
    unet.save_config(configs / "unet")
    vae.save_config(configs / "vae")
    for name, te in zip(("text_encoder", "text_encoder_2"), encoders, strict=False):
        te.config.save_pretrained(configs / name)
    checkpoint = out_dir / "model.safetensors"
    save_file(pipeline_to_original(unet, vae, encoders, family), str(checkpoint))
    return checkpoint, out_dir / "configs"
