"""Load an existing kohya-format LoRA file into the attached network (continue training from it)."""

from __future__ import annotations

from pathlib import Path

import torch

from loratui.train.networks import AttachedNetwork


def load_kohya_weights(network: AttachedNetwork, path: Path) -> int:
    """Copy matching tensors from ``path`` into the network; returns how many were loaded."""
    from safetensors.torch import load_file

    saved = load_file(str(path))
    loaded = 0
    with torch.no_grad():
        for part in network.parts:
            for path_in_model, name in part.names.items():
                module = part.model.get_submodule(path_in_model)
                for key, target in _targets(module, name).items():
                    if key in saved and saved[key].shape == target.shape:
                        target.copy_(saved[key].to(target))
                        loaded += 1
    if not loaded:
        raise ValueError(f"{path}: no tensor matches this network; check network_type, rank and model family")
    return loaded


def _targets(module: torch.nn.Module, name: str) -> dict[str, torch.Tensor]:
    """Live parameters of one layer under their kohya keys (alpha is a setting, not a parameter)."""
    keys = part_state_dict_keys(module, name)
    return {k: v for k, v in keys.items() if not k.endswith(".alpha")}


def part_state_dict_keys(module: torch.nn.Module, name: str) -> dict[str, torch.Tensor]:
    from loratui.train.networks import ADAPTER

    if hasattr(module, "lora_A") and ADAPTER in module.lora_A:
        out = {f"{name}.lora_down.weight": module.lora_A[ADAPTER].weight,
               f"{name}.lora_up.weight": module.lora_B[ADAPTER].weight}
        magnitude = getattr(module, "lora_magnitude_vector", None)
        if magnitude is not None and ADAPTER in magnitude:
            out[f"{name}.dora_scale"] = magnitude[ADAPTER].weight
        return out
    params = {}
    for key in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2",
                "lokr_w2_a", "lokr_w2_b"):
        container = getattr(module, key, None)
        if container is not None and ADAPTER in container:
            params[f"{name}.{key}"] = container[ADAPTER]
    return params

