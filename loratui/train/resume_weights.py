"""Load an existing kohya-format LoRA file into the attached network (continue training from it).

Besides copying what matches, say what does not: a file whose rank or alpha differs from the config trains
at the config's strength, and modules the configured network type has no place for are left behind.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from loratui.train.export import layer_parameters
from loratui.train.networks import AdaptedModel, AttachedNetwork

# The tensor that carries a module's rank as its first dimension, per format (kohya LoRA/LoCon, LoHa, LoKr).
_RANK_KEYS = (".lora_down.weight", ".hada_w1_b", ".lokr_w2_b")


@dataclass
class WeightsReport:
    loaded: int
    warnings: list[str] = field(default_factory=list)


def load_kohya_weights(network: AttachedNetwork, path: Path) -> int:
    """Copy matching tensors from ``path`` into the network; returns how many were loaded."""
    return load_network_weights(network, path).loaded


def load_network_weights(network: AttachedNetwork, path: Path) -> WeightsReport:
    """Copy matching tensors from ``path`` into the network and explain what did not fit."""
    from safetensors.torch import load_file

    saved = load_file(str(path))
    used = _copy_matching(network, saved)
    scale = _scale_warnings(network, saved, path)
    if not used:
        raise ValueError(f"{path}: no tensor matches this network; "
                         + (scale[0].removeprefix(f"{path.name} ") if scale else
                            "check network_type, rank and model family"))
    return WeightsReport(len(used), [*scale, *_unloaded_warnings(network, saved, used, path)])


def _copy_matching(network: AttachedNetwork, saved: dict[str, torch.Tensor]) -> set[str]:
    used: set[str] = set()
    with torch.no_grad():
        for part in network.parts:
            for path_in_model, name in names_in_file(part, saved).items():
                module = part.model.get_submodule(path_in_model)
                for key, target in layer_parameters(module, name).items():
                    if key in saved and saved[key].shape == target.shape:
                        target.copy_(saved[key].to(target) / _folded_scale(module, name, key, saved))
                        used.add(key)
    return used


def _folded_scale(module: torch.nn.Module, name: str, key: str, saved: dict[str, torch.Tensor]) -> float:
    """Export folds peft's alpha/r into LoKr's w1 when neither factor is low-rank; undo that on the way in."""
    from loratui.train.networks import ADAPTER

    if not key.endswith((".lokr_w1", ".lokr_w1_a")) or f"{name}.lokr_w2_a" in saved:
        return 1.0
    return float(module.alpha[ADAPTER]) / module.r[ADAPTER]


def file_ranks(saved: dict[str, torch.Tensor]) -> dict[str, tuple[int, float | None, bool]]:
    """module -> (rank, alpha or None, is a 3x3 conv) for every low-rank module in a kohya/LyCORIS file."""
    out = {}
    for key, tensor in saved.items():
        suffix = next((s for s in _RANK_KEYS if key.endswith(s)), None)
        if suffix is None:
            continue
        module = key[: -len(suffix)]
        alpha = saved.get(f"{module}.alpha")
        is_conv3 = tensor.dim() == 4 and tensor.shape[-1] > 1
        out[module] = (int(tensor.shape[0]), float(alpha) if alpha is not None else None, is_conv3)
    return out


def _scale_warnings(network: AttachedNetwork, saved: dict[str, torch.Tensor], path: Path) -> list[str]:
    """Rank/alpha of the file vs the config, once for linear layers and once for 3x3 convolutions."""
    found: dict[bool, set[tuple[int, float | None]]] = defaultdict(set)
    for rank, alpha, is_conv3 in file_ranks(saved).values():
        found[is_conv3].add((rank, alpha))
    messages = []
    for is_conv3, pairs in sorted(found.items()):
        dim, alpha = (network.conv_dim, network.conv_alpha) if is_conv3 else (network.dim, network.alpha)
        if dim is None:
            continue  # no conv layers configured: reported as modules that cannot be loaded
        keys = ("conv_dim", "conv_alpha") if is_conv3 else ("network_dim", "network_alpha")
        for file_rank, file_alpha in sorted(pairs, key=lambda p: (p[0], p[1] or 0.0)):
            parts = []
            if file_rank != dim:
                parts.append(f"rank {file_rank} (config {keys[0]}: {dim}; those layers start from zero)")
            if file_alpha is not None and alpha is not None and abs(file_alpha - alpha) > 1e-6:
                parts.append(f"alpha {file_alpha:g} (config {keys[1]}: {alpha:g}; the LoRA strength changes from "
                             f"{file_alpha / file_rank:g} to {alpha / dim:g})")
            if parts:
                messages.append(f"{path.name} has {' and '.join(parts)}; set {keys[0]}/{keys[1]} to the file's "
                                "values or network.dim_from_weights: true")
    return messages


def _unloaded_warnings(network: AttachedNetwork, saved: dict[str, torch.Tensor], used: set[str],
                       path: Path) -> list[str]:
    """Modules whose tensors found no place in the configured network: how many, which, and why."""
    left: dict[str, list[str]] = defaultdict(list)
    for key in saved:
        if key not in used and not key.endswith(".alpha"):
            module, _, leaf = key.partition(".")
            left[module].append(leaf)
    loaded_modules = {key.partition(".")[0] for key in used}
    left = {m: leaves for m, leaves in left.items() if m not in loaded_modules or not _is_extra(leaves)}
    if not left:
        return []
    leaves = [leaf for ls in left.values() for leaf in ls]
    conv3 = {m for m, (_, _, c) in file_ranks(saved).items() if c}
    if any(leaf.startswith("hada_") for leaf in leaves):
        why = "they are LoHa layers: set network.network_type: loha"
    elif any(leaf.startswith("lokr_") for leaf in leaves):
        why = "they are LoKr layers: set network.network_type: lokr"
    elif conv3 & set(left) and network.conv_dim is None:
        why = "they are LoCon convolution layers: set network.network_type: locon and network.conv_dim"
    else:
        why = "they do not match this model and network (check model.model_family, network_type and rank)"
    names = sorted(left)
    sample = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    total = len({k.partition(".")[0] for k in saved if not k.endswith(".alpha")})
    return [f"{path.name}: {len(names)} of {total} modules were not loaded into this "
            f"{network.cfg.network.network_type} network ({sample}); {why}"]


def _is_extra(leaves: list[str]) -> bool:
    """Tensors a loaded module may carry that this network does not train (e.g. a DoRA magnitude)."""
    return all(leaf == "dora_scale" for leaf in leaves)


def names_in_file(part: AdaptedModel, saved: dict[str, torch.Tensor]) -> dict[str, str]:
    """Module path → the name ``saved`` uses for it. An SDXL UNet's layers may be named in sd-scripts'
    original layout (its files and the model sites') or after diffusers paths (older loratui files): both load."""
    from loratui.train.sdxl_names import is_sdxl_unet, sdxl_unet_names

    if part.is_text_encoder or not is_sdxl_unet(part.model):
        return part.names
    original = sdxl_unet_names(part.model, part.names)
    modules = {key.split(".", 1)[0] for key in saved}
    return {path: original[path] if original[path] in modules else name for path, name in part.names.items()}
