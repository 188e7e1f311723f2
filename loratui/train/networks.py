"""Attach a LoRA-family network to the UNet and text encoders through peft, on kohya's default targets.

kohya targets (sd-scripts ``networks/lora.py``):
- UNet: Linear and 1×1 Conv2d layers inside ``Transformer2DModel`` (proj_in/out, attn1/attn2 q/k/v/out, ff);
  LoCon/LoHa/LoKr with a conv rank add the layers inside ``ResnetBlock2D``, ``Downsample2D`` and
  ``Upsample2D`` (3×3 convs get the conv rank and alpha).
- Text encoders: the Linear layers of ``CLIPAttention`` and ``CLIPMLP``.
Each adapted layer also gets its kohya name (``lora_unet_…``, ``lora_te_…``), used for export and resume.
LoRA/LoCon dropouts and DoRA follow sd-scripts and the UIs rather than peft (see ``lora_extras``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from loratui.core.config import TrainingConfig, check_config
from loratui.train.lora_extras import ADAPTER, add_dora, add_rank_dropouts

_UNET_ATTN_BLOCKS = ("Transformer2DModel",)
_UNET_CONV_BLOCKS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
_TE_BLOCKS = ("CLIPAttention", "CLIPMLP", "CLIPSdpaAttention", "CLIPFlashAttention2")


def _is_1x1(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1)


def find_targets(model: nn.Module, blocks: tuple[str, ...], with_3x3: bool) -> dict[str, bool]:
    """Names of the Linear / conv layers inside blocks of the given classes → whether each is a 3×3 conv."""
    found: dict[str, bool] = {}
    for block_name, block in model.named_modules():
        if type(block).__name__ not in blocks:
            continue
        for child_name, child in block.named_modules():
            if not child_name:
                continue
            full = f"{block_name}.{child_name}" if block_name else child_name
            if isinstance(child, nn.Linear) or _is_1x1(child):
                found[full] = False
            elif with_3x3 and isinstance(child, nn.Conv2d):
                found[full] = True
    return found


def kohya_name(prefix: str, module_path: str, text_encoder: bool) -> str:
    """``lora_unet_down_blocks_0_attentions_0_proj_in``; text encoders always carry ``text_model_``."""
    if text_encoder and not module_path.startswith("text_model."):
        module_path = "text_model." + module_path  # transformers 5 dropped it from CLIPTextModel
    return f"{prefix}_{module_path.replace('.', '_')}"


def _peft_config(cfg: TrainingConfig, targets: dict[str, bool], dim: int, alpha: float, conv_dim: int,
                 conv_alpha: float):
    from peft import LoHaConfig, LoKrConfig, LoraConfig

    net = cfg.network
    names = sorted(targets)
    conv_names = [n for n, is_3x3 in targets.items() if is_3x3]
    # Exact-name patterns: peft matches rank_pattern keys as regex suffixes, so anchor them.
    rank_pattern = {f"^{n}$": conv_dim for n in conv_names}
    alpha_pattern = {f"^{n}$": conv_alpha for n in conv_names}
    if net.network_type in ("lora", "locon"):
        # Dropouts and DoRA are added afterwards (lora_extras): peft's differ from what sd-scripts and the UIs do.
        return LoraConfig(r=dim, lora_alpha=alpha, target_modules=names, lora_dropout=0.0, use_dora=False,
                          rank_pattern=rank_pattern, alpha_pattern=alpha_pattern, init_lora_weights=True)
    if net.network_type == "loha":
        return LoHaConfig(r=dim, alpha=alpha, target_modules=names, rank_dropout=net.rank_dropout,
                          module_dropout=net.module_dropout, rank_pattern=rank_pattern, alpha_pattern=alpha_pattern)
    return LoKrConfig(r=dim, alpha=alpha, target_modules=names, rank_dropout=net.rank_dropout,
                      module_dropout=net.module_dropout, rank_pattern=rank_pattern, alpha_pattern=alpha_pattern)


@dataclass
class AdaptedModel:
    """One model with its adapter: its kohya prefix and the kohya name of each adapted layer."""

    model: nn.Module
    prefix: str
    names: dict[str, str]  # module path → kohya name
    conv_3x3: set[str] = field(default_factory=set)
    is_text_encoder: bool = False

    def parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.model.named_parameters() if _is_adapter_param(n)]


def _is_adapter_param(name: str) -> bool:
    return any(tag in name for tag in ("lora_", "hada_", "lokr_", "dora_scale"))


@dataclass
class AttachedNetwork:
    """The trainable network spread over the UNet and text encoders."""

    cfg: TrainingConfig
    unet: AdaptedModel
    text_encoders: list[AdaptedModel]
    dim: int
    alpha: float
    conv_dim: int | None
    conv_alpha: float | None
    train_text_encoder: bool = True

    @property
    def parts(self) -> list[AdaptedModel]:
        return [self.unet, *self.text_encoders]

    def param_groups(self, unet_lr: float, te_lr: float) -> list[dict]:
        groups = [{"params": self.unet.parameters(), "lr": unet_lr, "name": "unet"}]
        te_params = [p for te in self.text_encoders for p in te.parameters()]
        if te_params and self.train_text_encoder and te_lr > 0:
            groups.append({"params": te_params, "lr": te_lr, "name": "text_encoder"})
        return groups

    def set_text_encoder_training(self, enabled: bool) -> None:
        for te in self.text_encoders:
            for p in te.parameters():
                p.requires_grad_(enabled)
        self.train_text_encoder = enabled

    def trainable_parameter_count(self) -> int:
        return sum(p.numel() for part in self.parts for p in part.parameters() if p.requires_grad)

    def apply_max_norm(self, max_norm: float) -> tuple[int, float, float]:
        """scale_weight_norms: shrink every module whose update ΔW has a norm above ``max_norm``.

        sd-scripts' ``LoRANetwork.apply_max_norm_regularization`` (LoRA/LoCon; up and down each × √ratio) and
        LyCORIS' ``apply_max_norm`` (LoHa/LoKr) with ratio = min(n, max) / n, n = max(‖ΔW‖, max / 2).
        Returns (modules scaled, mean and max norm after scaling) as numbers: one host sync.
        """
        scaled, mean, largest = self.cap_norms(max_norm)
        return int(scaled.item()), mean.item(), largest.item()

    def cap_norms(self, max_norm: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``apply_max_norm`` without a host sync (the trainer runs it after every step): each module is
        multiplied by its ratio as a tensor, and a ratio of exactly 1 (n / n) leaves it bit for bit unchanged."""
        scaled, norms = [], []
        with torch.no_grad():
            for part in self.parts:
                for module in _adapted_layers(part.model):
                    norm = _delta_without_dropout(module).norm().float()
                    clamped = norm.clamp(min=max_norm / 2)
                    ratio = clamped.clamp(max=max_norm) / clamped
                    _scale_update(module, ratio)
                    scaled.append(ratio < 1)
                    norms.append(norm * ratio)
        if not norms:
            zero = torch.zeros(())
            return zero, zero, zero
        after = torch.stack(norms)
        return torch.stack(scaled).sum(), after.mean(), after.max()


def _adapted_layers(model: nn.Module):
    from peft.tuners.loha import LoHaLayer
    from peft.tuners.lokr import LoKrLayer
    from peft.tuners.lora import LoraLayer

    for module in model.modules():
        if isinstance(module, LoraLayer | LoHaLayer | LoKrLayer) and ADAPTER in module.r:
            yield module


def _delta_without_dropout(module: nn.Module) -> torch.Tensor:
    """peft's ΔW (scale included); peft's LoHa/LoKr apply rank dropout inside it while training."""
    was_training = module.training
    module.train(False)
    try:
        return module.get_delta_weight(ADAPTER)
    finally:
        module.train(was_training)


def _scale_update(module: nn.Module, ratio: torch.Tensor) -> None:
    """Multiply a module's ΔW by ``ratio`` through its factors."""
    if hasattr(module, "lora_A"):  # ΔW = B·A
        module.lora_A[ADAPTER].weight.mul_(ratio ** 0.5)
        module.lora_B[ADAPTER].weight.mul_(ratio ** 0.5)
    elif hasattr(module, "hada_w1_a"):  # ΔW = (w1a·w1b) ⊙ (w2a·w2b)
        module.hada_w1_a[ADAPTER].mul_(ratio ** 0.5)
        module.hada_w2_a[ADAPTER].mul_(ratio ** 0.5)
    else:  # ΔW = w1 ⊗ w2
        w1 = module.lokr_w1 if ADAPTER in module.lokr_w1 else module.lokr_w1_a
        w1[ADAPTER].mul_(ratio)


def _attach(model: nn.Module, cfg: TrainingConfig, prefix: str, text_encoder: bool, dim: int, alpha: float,
            conv_dim: int | None, conv_alpha: float | None) -> AdaptedModel:
    from peft import inject_adapter_in_model

    net_type = cfg.network.network_type
    with_3x3 = not text_encoder and net_type != "lora" and conv_dim is not None
    blocks = _TE_BLOCKS if text_encoder else _UNET_ATTN_BLOCKS + (_UNET_CONV_BLOCKS if with_3x3 else ())
    if not text_encoder and net_type == "locon" and conv_dim is None:
        blocks = _UNET_ATTN_BLOCKS + _UNET_CONV_BLOCKS  # LoCon without conv_dim: conv layers at the main rank
        with_3x3 = True
    targets = find_targets(model, blocks, with_3x3)
    if not targets:
        raise ValueError(f"no layers to adapt in {type(model).__name__}: is this a Stable Diffusion model?")
    config = _peft_config(cfg, targets, dim, alpha, conv_dim or dim, conv_alpha or alpha)
    model.requires_grad_(False)
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    if net_type in ("lora", "locon"):
        _add_kohya_extras(model, targets, cfg)
    for name, param in model.named_parameters():
        param.requires_grad_(_is_adapter_param(name))
    names = {path: kohya_name(prefix, path, text_encoder) for path in targets}
    return AdaptedModel(model, prefix, names, {n for n, c in targets.items() if c}, text_encoder)


def _add_kohya_extras(model: nn.Module, targets: dict[str, bool], cfg: TrainingConfig) -> None:
    net = cfg.network
    for path in targets:
        layer = model.get_submodule(path)
        add_rank_dropouts(layer, net.network_dropout, net.rank_dropout, net.module_dropout)
        if net.use_dora:
            add_dora(layer)


def text_encoder_prefixes(count: int) -> list[str]:
    return ["lora_te"] if count == 1 else [f"lora_te{i + 1}" for i in range(count)]


def attach_network(cfg: TrainingConfig, unet: nn.Module, text_encoders: list[nn.Module],
                   dims: tuple[int, float, int | None, float | None] | None = None) -> AttachedNetwork:
    """Inject the configured network into ``unet`` and (unless UNet-only) the text encoders."""
    net = cfg.network
    refused = [i for i in check_config(cfg) if i.severity == "error" and i.path.startswith("network.")]
    if refused:
        raise ValueError(str(refused[0]).removeprefix("error: "))  # the runner adds its own "error:"
    dim, alpha, conv_dim, conv_alpha = dims or (net.network_dim, net.network_alpha, net.conv_dim, net.conv_alpha)
    unet_part = _attach(unet, cfg, "lora_unet", False, dim, alpha, conv_dim, conv_alpha)
    tes = []
    if not net.network_train_unet_only and cfg.text_encoder_lr > 0:
        for prefix, te in zip(text_encoder_prefixes(len(text_encoders)), text_encoders, strict=True):
            tes.append(_attach(te, cfg, prefix, True, dim, alpha, None, None))
    return AttachedNetwork(cfg, unet_part, tes, dim, alpha, conv_dim, conv_alpha)


def dims_from_weights(path: Path) -> tuple[int, float, int | None, float | None]:
    """(dim, alpha, conv_dim, conv_alpha) of an existing kohya LoRA file."""
    from safetensors import safe_open

    dim = conv_dim = None
    alpha = conv_alpha = None
    with safe_open(str(path), "pt") as fh:
        keys = list(fh.keys())
        for key in keys:
            if not key.endswith(".lora_down.weight"):
                continue
            tensor = fh.get_tensor(key)
            base = key[: -len(".lora_down.weight")]
            module_alpha = fh.get_tensor(base + ".alpha").item() if base + ".alpha" in keys else tensor.shape[0]
            if tensor.dim() == 4 and tensor.shape[-1] == 3:
                conv_dim, conv_alpha = tensor.shape[0], float(module_alpha)
            elif dim is None:
                dim, alpha = tensor.shape[0], float(module_alpha)
    if dim is None:
        raise ValueError(f"{path}: no lora_down weights found; is this a kohya-format LoRA file?")
    return dim, float(alpha), conv_dim, conv_alpha
