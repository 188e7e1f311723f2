"""What sd-scripts' LoRA module and the UIs' DoRA do that peft's LoRA layer does not, added onto peft's layers.

Dropouts, as sd-scripts' ``networks/lora.py`` ``LoRAModule.forward`` (peft's ``lora_dropout`` acts on the layer
*input*; sd-scripts drops the rank activations ``lx = lora_down(x)``):
- ``module_dropout``: with this chance a module's whole update is skipped for one call;
- ``network_dropout``: plain dropout on ``lx``;
- ``rank_dropout``: each rank channel of ``lx`` is zeroed per sample, and the update rescaled by ``1/(1-p)``.
All three only act while training.

DoRA, in the layout that AUTOMATIC1111 (``network.py`` ``apply_weight_decompose``), ComfyUI (``weight_decompose``
with a ``dora_scale`` whose first dimension is 1) and LyCORIS (``wd_on_out=False``) all apply the same way::

    W' = (W + s·BA) · diag(c),   c = m / ‖W + s·BA‖ per input column,   m = dora_scale, shape (1, in[, 1, 1])

peft's ``use_dora`` takes the magnitude per output row instead, which those programs misapply. Because ``c``
scales input columns, ``W'x = (W + s·BA)(c ⊙ x)``: the layer is peft's plain LoRA layer run on ``c ⊙ x`` (for a
conv, ``c`` scales input channels). So DoRA here is a pre-hook that rescales the layer's input; the bias is
untouched, as in those programs. As in the DoRA paper (section 4.3) and peft, the norm is treated as a constant
in the backward pass, which saves the memory of a second graph through ``W + s·BA``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ADAPTER = "default"


class RankActivationDropout:
    """Forward hook on a layer's ``lora_A``: module, plain and rank dropout on ``lx`` as sd-scripts does."""

    def __init__(self, dropout: float, rank_dropout: float, module_dropout: float) -> None:
        self.dropout, self.rank_dropout, self.module_dropout = dropout, rank_dropout, module_dropout

    def __call__(self, lora_a: nn.Module, inputs: tuple, lx: torch.Tensor) -> torch.Tensor | None:
        if not lora_a.training:
            return None
        if self.module_dropout and torch.rand(1) < self.module_dropout:
            return lx * 0  # the update is lora_B(lx) · scale: zero lx, zero update and zero gradients
        if self.dropout:
            lx = F.dropout(lx, p=self.dropout)
        if self.rank_dropout:
            keep = torch.rand((lx.size(0), lx.size(1) if lx.dim() == 4 else lx.size(-1)), device=lx.device)
            keep = (keep > self.rank_dropout).to(lx.dtype) / (1.0 - self.rank_dropout)
            if lx.dim() == 3:  # (batch, tokens, rank)
                keep = keep.unsqueeze(1)
            elif lx.dim() == 4:  # conv: (batch, rank, h, w)
                keep = keep[:, :, None, None]
            lx = lx * keep
        return lx


def column_norm(weight: torch.Tensor) -> torch.Tensor:
    """‖W‖ over each input column (over out and the kernel for a conv), shaped like ``dora_scale``."""
    norm = weight.transpose(0, 1).flatten(1).norm(dim=1)
    return norm.reshape(1, -1, *[1] * (weight.dim() - 2))


class ColumnDoRA:
    """Forward pre-hook on a peft LoRA layer that makes it DoRA with the magnitude per input column."""

    def __call__(self, layer: nn.Module, args: tuple) -> tuple | None:
        if layer.disable_adapters or ADAPTER not in layer.dora_scale:
            return None
        x, *rest = args
        scale = self.input_scale(layer)
        is_conv = isinstance(layer.get_base_layer(), nn.Conv2d)
        return (x * scale.reshape((1, -1, 1, 1) if is_conv else (-1,)).to(x.dtype), *rest)

    @staticmethod
    def input_scale(layer: nn.Module) -> torch.Tensor:
        """c = m / ‖W + s·BA‖ per input column, as a flat vector."""
        base = layer.get_base_layer().weight
        with torch.no_grad():
            merged = base.float() + layer.get_delta_weight(ADAPTER).float().reshape(base.shape)
            norm = column_norm(merged) + torch.finfo(torch.float32).eps
        return (layer.dora_scale[ADAPTER] / norm).flatten()


def add_dora(layer: nn.Module) -> None:
    """Give a peft LoRA layer a trainable ``dora_scale`` (1, in[, 1, 1]) = ‖W‖ per column: at start, W' = W."""
    base = layer.get_base_layer().weight
    magnitude = column_norm(base.detach().float()).to(base.device)
    layer.dora_scale = nn.ParameterDict({ADAPTER: nn.Parameter(magnitude)})
    layer.register_forward_pre_hook(ColumnDoRA())


def add_rank_dropouts(layer: nn.Module, dropout: float, rank_dropout: float, module_dropout: float) -> None:
    if dropout or rank_dropout or module_dropout:
        layer.lora_A[ADAPTER].register_forward_hook(RankActivationDropout(dropout, rank_dropout, module_dropout))
