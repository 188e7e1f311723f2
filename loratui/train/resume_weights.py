"""Load an existing kohya-format LoRA file into the attached network (continue training from it)."""

from __future__ import annotations

from pathlib import Path

import torch

from loratui.train.export import layer_parameters
from loratui.train.networks import AdaptedModel, AttachedNetwork


def load_kohya_weights(network: AttachedNetwork, path: Path) -> int:
    """Copy matching tensors from ``path`` into the network; returns how many were loaded."""
    from safetensors.torch import load_file

    saved = load_file(str(path))
    loaded = 0
    with torch.no_grad():
        for part in network.parts:
            for path_in_model, name in names_in_file(part, saved).items():
                module = part.model.get_submodule(path_in_model)
                for key, target in layer_parameters(module, name).items():
                    if key in saved and saved[key].shape == target.shape:
                        target.copy_(saved[key].to(target) / _folded_scale(module, name, key, saved))
                        loaded += 1
    if not loaded:
        raise ValueError(f"{path}: no tensor matches this network; check network_type, rank and model family")
    return loaded


def _folded_scale(module: torch.nn.Module, name: str, key: str, saved: dict[str, torch.Tensor]) -> float:
    """Export folds peft's alpha/r into LoKr's w1 when neither factor is low-rank; undo that on the way in."""
    from loratui.train.networks import ADAPTER

    if not key.endswith((".lokr_w1", ".lokr_w1_a")) or f"{name}.lokr_w2_a" in saved:
        return 1.0
    return float(module.alpha[ADAPTER]) / module.r[ADAPTER]


def names_in_file(part: AdaptedModel, saved: dict[str, torch.Tensor]) -> dict[str, str]:
    """Module path → the name ``saved`` uses for it. An SDXL UNet's layers may be named in sd-scripts'
    original layout (its files and the model sites') or after diffusers paths (older loratui files): both load."""
    from loratui.train.sdxl_names import is_sdxl_unet, sdxl_unet_names

    if part.is_text_encoder or not is_sdxl_unet(part.model):
        return part.names
    original = sdxl_unet_names(part.model, part.names)
    modules = {key.split(".", 1)[0] for key in saved}
    return {path: original[path] if original[path] in modules else name for path, name in part.names.items()}
