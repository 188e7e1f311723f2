"""What a model costs to train, read from its diffusers configs alone (no torch, no weights).

Walks the layers that diffusers' ``UNet2DConditionModel``, ``AutoencoderKL`` and transformers' CLIP text
models build from their ``config.json`` and tallies, for one image:
- FLOPs of a forward pass, counted as ``torch.utils.flop_counter`` counts them (2 per multiply-add, for
  convolutions, linear layers and the two attention products; norms and activations are free);
- parameters;
- activation elements (the outputs of those layers), a proxy for activation memory;
- LoRA parameters per rank unit on kohya's default targets (``networks/lora.py``: the linear and 1×1 layers
  inside ``Transformer2DModel`` and the text encoders' attention and MLP; the 3×3 convs of the ResNet,
  down- and up-sampling blocks for LoCon).

The planner uses it to size its speed and memory figures to the actual model and resolution (the built-in demo
model is ~1/400 of SD1.5's work per image). A test checks every figure against the real modules.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from loratui.core.config import TrainingConfig

SHIPPED_CONFIGS = Path(__file__).resolve().parent.parent / "train" / "model_configs"
NATIVE_RESOLUTION = {"sd1": 512, "sd2": 512, "sd2-v": 768, "sdxl": 1024}


@dataclass
class Tally:
    """Running totals for one component at one input size."""

    flops: float = 0.0
    params: int = 0
    activations: float = 0.0
    lora_units: int = 0  # trainable parameters per unit of network_dim on LoRA's linear / 1×1 targets
    locon_units: int = 0  # the same for the linear / 1×1 layers only LoCon adapts (inside ResNet blocks)
    conv_units: int = 0  # per unit of conv_dim on 3×3 conv targets (LoCon, LoHa, LoKr)
    attention_flops: float = 0.0  # the attention products alone: their backward costs twice the forward
    frozen_prefix_flops: float | None = None  # work before the first adapted layer: no backward through it

    def linear(self, d_in: int, d_out: int, tokens: float, *, bias: bool = True, lora: bool = False,
               locon: bool = False) -> None:
        if lora and self.frozen_prefix_flops is None:
            self.frozen_prefix_flops = self.flops
        self.flops += 2 * d_in * d_out * tokens
        self.params += d_in * d_out + (d_out if bias else 0)
        self.activations += d_out * tokens
        if lora:
            self.lora_units += d_in + d_out
        if locon:
            self.locon_units += d_in + d_out

    def conv(self, c_in: int, c_out: int, kernel: int, out_pixels: float, *, lora_conv: bool = False) -> None:
        self.flops += 2 * c_in * c_out * kernel * kernel * out_pixels
        self.params += c_in * c_out * kernel * kernel + c_out
        self.activations += c_out * out_pixels
        if lora_conv:  # down: c_in × k × k → r, up: r → c_out (1×1)
            self.conv_units += c_in * kernel * kernel + c_out

    def attention(self, queries: float, keys: float, dim: int) -> None:
        self.flops += 4 * queries * keys * dim  # Q·Kᵀ and softmax·V
        self.attention_flops += 4 * queries * keys * dim

    def norm(self, channels: int) -> None:
        self.params += 2 * channels


@dataclass(frozen=True)
class ModelCost:
    """Per-image figures for a whole model at one resolution."""

    unet_flops: float
    unet_backward_flops: float
    unet_params: int
    unet_activations: float
    te_flops: float  # all text encoders, one caption
    te_params: int
    vae_encode_flops: float
    vae_params: int
    vae_encode_elements: float  # the encoder's working set: ~3 live tensors of its first, full-size block
    # per rank unit: "unet" and "te" (LoRA), "unet_locon" (LoCon's linear and 1×1 layers), "unet_conv" (3×3)
    lora_units: dict[str, int] = field(default_factory=dict)

    def step_flops(self, *, cache_latents: bool, trains_te: bool, te_runs: bool, recompute: bool) -> float:
        """FLOPs of one image's training step: the UNet forward, the backward through it (input gradients only,
        its weights are frozen, ≈ one more forward), a recomputed forward with gradient checkpointing, the text
        encoders (forward and backward when they train) and the VAE encode when latents are not cached."""
        flops = self.unet_flops * (2 if recompute else 1) + self.unet_backward_flops
        if trains_te:
            flops += self.te_flops * 2
        elif te_runs:
            flops += self.te_flops
        if not cache_latents:
            flops += self.vae_encode_flops
        return flops


def _listed(value: int | list | tuple, count: int) -> list:
    return list(value) if isinstance(value, list | tuple) else [value] * count


def _resnet(t: Tally, c_in: int, c_out: int, pixels: float, temb: int | None) -> None:
    t.norm(c_in)
    t.conv(c_in, c_out, 3, pixels, lora_conv=True)
    if temb:
        t.linear(temb, c_out, 1, locon=True)  # LoCon adapts every Linear and 1×1 conv in the block
    t.norm(c_out)
    t.conv(c_out, c_out, 3, pixels, lora_conv=True)
    if c_in != c_out:
        t.linear(c_in, c_out, pixels, locon=True)  # the 1×1 shortcut, at the main rank like a Linear


def _transformer(t: Tally, channels: int, layers: int, pixels: float, context_dim: int, context_len: int) -> None:
    t.norm(channels)
    t.linear(channels, channels, pixels, lora=True)  # proj_in: a Linear or a 1×1 conv (same cost and size)
    for _ in range(layers):
        t.norm(channels)
        for _ in range(3):  # self-attention q, k, v
            t.linear(channels, channels, pixels, bias=False, lora=True)
        t.attention(pixels, pixels, channels)
        t.linear(channels, channels, pixels, lora=True)
        t.norm(channels)
        t.linear(channels, channels, pixels, bias=False, lora=True)  # cross-attention q
        t.linear(context_dim, channels, context_len, bias=False, lora=True)  # k and v from the caption
        t.linear(context_dim, channels, context_len, bias=False, lora=True)
        t.attention(pixels, context_len, channels)
        t.linear(channels, channels, pixels, lora=True)
        t.norm(channels)
        t.linear(channels, channels * 8, pixels, lora=True)  # GEGLU
        t.linear(channels * 4, channels, pixels, lora=True)
    t.linear(channels, channels, pixels, lora=True)  # proj_out


_DOWN = {"DownBlock2D": False, "CrossAttnDownBlock2D": True}
_UP = {"UpBlock2D": False, "CrossAttnUpBlock2D": True}


def unet_tally(config: dict, latent_h: int, latent_w: int, context_len: int) -> Tally | None:
    """The UNet at one latent size; None for block types it does not know (then callers use family figures)."""
    downs, ups = config["down_block_types"], config["up_block_types"]
    if any(b not in _DOWN for b in downs) or any(b not in _UP for b in ups):
        return None
    if config.get("mid_block_type", "UNetMidBlock2DCrossAttn") != "UNetMidBlock2DCrossAttn":
        return None
    channels = list(config["block_out_channels"])
    n = len(channels)
    per_block = _listed(config.get("layers_per_block", 2), n)
    attn_layers = _listed(config.get("transformer_layers_per_block", 1), n)
    context_dim = _listed(config["cross_attention_dim"], n)
    temb = config.get("time_embedding_dim") or channels[0] * 4
    t = Tally()
    pixels = latent_h * latent_w
    t.conv(config.get("in_channels", 4), channels[0], 3, pixels)
    t.linear(channels[0], temb, 1)
    t.linear(temb, temb, 1)
    if config.get("addition_embed_type") == "text_time":
        t.linear(config["projection_class_embeddings_input_dim"], temb, 1)
        t.linear(temb, temb, 1)
    h, w = latent_h, latent_w
    sizes = [(h, w)]
    skips = [channels[0]]
    for i, kind in enumerate(downs):
        c_in = channels[i - 1] if i else channels[0]
        for j in range(per_block[i]):
            _resnet(t, c_in if j == 0 else channels[i], channels[i], h * w, temb)
            if _DOWN[kind]:
                _transformer(t, channels[i], attn_layers[i], h * w, context_dim[i], context_len)
            skips.append(channels[i])
        if i < n - 1:
            h, w = (h + 1) // 2, (w + 1) // 2
            sizes.append((h, w))
            t.conv(channels[i], channels[i], 3, h * w, lora_conv=True)
            skips.append(channels[i])
    mid = channels[-1]
    _resnet(t, mid, mid, h * w, temb)
    _transformer(t, mid, attn_layers[-1], h * w, context_dim[-1], context_len)
    _resnet(t, mid, mid, h * w, temb)
    _up_blocks(t, config, channels, skips, sizes, context_len)
    t.norm(channels[0])
    t.conv(channels[0], config.get("out_channels", 4), 3, latent_h * latent_w)
    return t


def _up_blocks(t: Tally, config: dict, channels: list[int], skips: list[int], sizes: list[tuple[int, int]],
               context_len: int) -> None:
    """Each up block takes its skips back in reverse order and upsamples to the size of the level above."""
    n = len(channels)
    rev = channels[::-1]
    per_block = _listed(config.get("layers_per_block", 2), n)[::-1]
    attn_layers = config.get("reverse_transformer_layers_per_block") or \
        _listed(config.get("transformer_layers_per_block", 1), n)[::-1]
    context_dim = _listed(config["cross_attention_dim"], n)[::-1]
    temb = config.get("time_embedding_dim") or channels[0] * 4
    h, w = sizes.pop()
    prev = rev[0]
    for i, kind in enumerate(config["up_block_types"]):
        layers = per_block[i] + 1
        block_layers = _listed(attn_layers[i], layers)
        for j in range(layers):
            skip = skips.pop()
            _resnet(t, (prev if j == 0 else rev[i]) + skip, rev[i], h * w, temb)
            if _UP[kind]:
                _transformer(t, rev[i], block_layers[j], h * w, context_dim[i], context_len)
        prev = rev[i]
        if i < n - 1:
            h, w = sizes.pop()
            t.conv(rev[i], rev[i], 3, h * w, lora_conv=True)


def text_encoder_tally(config: dict, tokens: int) -> Tally:
    """A CLIP text model over ``tokens`` tokens (77 per 75-token window)."""
    d, inner = config["hidden_size"], config["intermediate_size"]
    t = Tally()
    t.params += config["vocab_size"] * d + config.get("max_position_embeddings", 77) * d
    for _ in range(config["num_hidden_layers"]):
        t.norm(d)
        for _ in range(4):  # q, k, v, out
            t.linear(d, d, tokens, lora=True)
        t.attention(tokens, tokens, d)
        t.norm(d)
        t.linear(d, inner, tokens, lora=True)
        t.linear(inner, d, tokens, lora=True)
    t.norm(d)
    if "WithProjection" in "".join(config.get("architectures") or []):
        t.linear(d, config.get("projection_dim", d), 1, bias=False)  # on the pooled token only
    return t


def _vae_resnet(t: Tally, c_in: int, c_out: int, pixels: float) -> None:
    _resnet(t, c_in, c_out, pixels, None)  # its LoCon units are never read: the VAE is not adapted


def _vae_mid(t: Tally, c: int, pixels: float) -> None:
    _vae_resnet(t, c, c, pixels)
    t.norm(c)
    for _ in range(4):
        t.linear(c, c, pixels)
    t.attention(pixels, pixels, c)
    _vae_resnet(t, c, c, pixels)


def vae_tallies(config: dict, height: int, width: int) -> tuple[Tally, Tally]:
    """(encoder at this image size, decoder: parameters only)."""
    channels = list(config["block_out_channels"])
    per_block, latent = config.get("layers_per_block", 1), config.get("latent_channels", 4)
    quant = config.get("use_quant_conv", True)
    enc = Tally()
    h, w = height, width
    enc.conv(config.get("in_channels", 3), channels[0], 3, h * w)
    for i, c in enumerate(channels):
        for j in range(per_block):
            _vae_resnet(enc, (channels[i - 1] if i else channels[0]) if j == 0 else c, c, h * w)
        if i < len(channels) - 1:
            h, w = h // 2, w // 2
            enc.conv(c, c, 3, h * w)
    _vae_mid(enc, channels[-1], h * w)
    enc.norm(channels[-1])
    enc.conv(channels[-1], 2 * latent, 3, h * w)
    if quant:
        enc.conv(2 * latent, 2 * latent, 1, h * w)
    dec = Tally()
    rev = channels[::-1]
    if config.get("use_post_quant_conv", True):
        dec.conv(latent, latent, 1, 1)
    dec.conv(latent, rev[0], 3, 1)
    _vae_mid(dec, rev[0], 1)
    for i, c in enumerate(rev):
        for j in range(per_block + 1):
            _vae_resnet(dec, (rev[i - 1] if i else rev[0]) if j == 0 else c, c, 1)
        if i < len(rev) - 1:
            dec.conv(c, c, 3, 1)
    dec.norm(channels[0])
    dec.conv(channels[0], config.get("out_channels", 3), 3, 1)
    return enc, dec


@dataclass(frozen=True)
class ModelConfigs:
    """The component configs of one model: ``unet``, ``vae`` and one or two text encoders."""

    unet: dict
    vae: dict
    text_encoders: tuple[dict, ...]


def read_configs(folder: Path) -> ModelConfigs | None:
    """The configs of a diffusers folder (or a shipped family folder); None when they are not all there or
    cannot be read."""
    folder = Path(folder)
    try:
        unet = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
        vae = json.loads((folder / "vae" / "config.json").read_text(encoding="utf-8"))
        tes = [json.loads((folder / name / "config.json").read_text(encoding="utf-8"))
               for name in ("text_encoder", "text_encoder_2") if (folder / name / "config.json").is_file()]
    except (OSError, ValueError):
        return None
    return ModelConfigs(unet, vae, tuple(tes)) if tes else None


def configs_for(model_path: str, family: str) -> ModelConfigs | None:
    """A diffusers folder's own configs; for a single file or a hub id, the shipped configs of its family
    (the ones loratui builds the model from)."""
    path = Path(model_path).expanduser()
    if path.is_dir() and (path / "unet" / "config.json").is_file():
        return read_configs(path)
    return read_configs(SHIPPED_CONFIGS / family)


def backward_flops(t: Tally) -> float:
    """Input gradients for every layer after the first adapted one (the base weights are frozen, so no
    weight gradients) cost one forward; the attention products cost two."""
    return t.flops - (t.frozen_prefix_flops or 0.0) + t.attention_flops


def model_cost(configs: ModelConfigs, height: int, width: int, max_token_length: int = 75) -> ModelCost | None:
    """Per-image figures at ``height`` × ``width`` pixels; None when the UNet has block types not modelled."""
    scale = 2 ** (len(configs.vae["block_out_channels"]) - 1)
    windows = max_token_length // 75
    context = 77 if windows == 1 else max_token_length + 2  # sd-scripts joins the windows' states
    unet = unet_tally(configs.unet, height // scale, width // scale, context)
    if unet is None:
        return None
    tes = [text_encoder_tally(c, 77) for c in configs.text_encoders]
    encoder, decoder = vae_tallies(configs.vae, height, width)
    return ModelCost(
        unet_flops=unet.flops, unet_backward_flops=backward_flops(unet), unet_params=unet.params,
        unet_activations=unet.activations,
        te_flops=sum(t.flops for t in tes) * windows, te_params=sum(t.params for t in tes),
        vae_encode_flops=encoder.flops, vae_params=encoder.params + decoder.params,
        vae_encode_elements=3 * configs.vae["block_out_channels"][0] * height * width,
        lora_units={"unet": unet.lora_units, "te": sum(t.lora_units for t in tes),
                    "unet_locon": unet.lora_units + unet.locon_units, "unet_conv": unet.conv_units},
    )


@lru_cache(maxsize=64)
def _cost(model_path: str, family: str, resolution: int, max_token_length: int) -> ModelCost | None:
    configs = configs_for(model_path, family)
    return model_cost(configs, resolution, resolution, max_token_length) if configs else None


def cost_of(cfg: TrainingConfig) -> ModelCost | None:
    """The figures for the configured model at the configured (square) resolution, or None when its configs
    cannot be read or its architecture is not modelled."""
    return _cost(cfg.model.pretrained_model_name_or_path, cfg.model.model_family, cfg.dataset.resolution,
                 cfg.advanced.max_token_length)


def reference_cost(family: str) -> ModelCost:
    """The family's released architecture at its native resolution (the published speeds are for these)."""
    cost = _cost(str(SHIPPED_CONFIGS / family), family, NATIVE_RESOLUTION[family], 75)
    assert cost is not None, f"shipped configs for {family} are missing"
    return cost


def step_flops(cfg: TrainingConfig, cost: ModelCost, *, recompute: bool | None = None) -> float:
    """FLOPs of one image's training step under ``cfg``'s settings (see ``ModelCost.step_flops``)."""
    te_cached = cfg.advanced.cache_text_encoder_outputs and not cfg.trains_text_encoder
    return cost.step_flops(
        cache_latents=cfg.dataset.cache_latents, trains_te=cfg.trains_text_encoder, te_runs=not te_cached,
        recompute=cfg.advanced.gradient_checkpointing if recompute is None else recompute)
