"""Activation memory per image: the bytes autograd keeps for the backward pass of one LoRA training step.

For each released architecture at its native resolution, in bf16, with loratui's LoRA attached (UNet only) and
gradient checkpointing off and on (as diffusers applies it), on the meta device (shapes only: seconds, no
weights). Parameters are not counted (they are weights, not activations), and neither are attention
probabilities, which the flash and memory-efficient SDPA kernels used on CUDA never keep. These are the
per-image activation figures in ``loratui/core/vram.py``.

Run: .venv/bin/python tests/benchmarks/bench_activations.py
"""

from __future__ import annotations

import json

import torch
from diffusers import UNet2DConditionModel

from loratui.core.config import TrainingConfig
from loratui.core.model_cost import NATIVE_RESOLUTION, SHIPPED_CONFIGS
from loratui.train.networks import attach_network

GIB = 1024**3


def _is_attention_probabilities(shape: tuple[int, ...], tokens: set[int]) -> bool:
    """[batch, heads, queries, keys] for self- (keys = queries) or cross-attention (77 caption tokens)."""
    return (len(shape) == 4 and shape[1] <= 64 and shape[2] in tokens
            and (shape[3] == shape[2] or shape[3] == 77))


def saved_gib(family: str, checkpointing: bool) -> float:
    config = json.loads((SHIPPED_CONFIGS / family / "unet" / "config.json").read_text())
    cfg = TrainingConfig.model_validate({"model": {"pretrained_model_name_or_path": "", "model_family": family},
                                         "dataset": {"train_data_dir": ""},
                                         "network": {"network_train_unet_only": True}})
    side = NATIVE_RESOLUTION[family] // 8
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config).to(torch.bfloat16)
        attach_network(cfg, unet, [])
        if checkpointing:
            unet.enable_gradient_checkpointing()
        unet.train()
        sample = torch.empty(1, 4, side, side, dtype=torch.bfloat16)
        hidden = torch.empty(1, 77, config["cross_attention_dim"], dtype=torch.bfloat16)
        extra = {}
        if config.get("addition_embed_type") == "text_time":
            extra = {"added_cond_kwargs": {"text_embeds": torch.empty(1, 1280, dtype=torch.bfloat16),
                                           "time_ids": torch.empty(1, 6, dtype=torch.bfloat16)}}
        params = {id(p) for p in unet.parameters()}
        tokens = {(side >> level) ** 2 for level in range(4)}
        kept: dict[int, int] = {}

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            base = tensor._base if tensor._base is not None else tensor
            if id(base) not in params and not _is_attention_probabilities(tuple(base.shape), tokens):
                kept[id(base)] = base.numel() * base.element_size()  # a tensor saved by two ops counts once
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            unet(sample, torch.tensor([1]), hidden, **extra)
    return sum(kept.values()) / GIB


def main() -> None:
    for family in ("sd1", "sd2", "sd2-v", "sdxl"):
        plain, checkpointed = saved_gib(family, False), saved_gib(family, True)
        print(f"{family:5s} at {NATIVE_RESOLUTION[family]}²: {plain:.2f} GiB per image, "
              f"{checkpointed:.2f} GiB with gradient checkpointing")


if __name__ == "__main__":
    main()
