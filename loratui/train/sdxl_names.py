"""SDXL UNet module names in sd-scripts' original layout (``library/sdxl_original_unet.py``).

sd-scripts trains SDXL on its own copy of the original (Stability) UNet, so its LoRA files — and every SDXL
LoRA on the model sites — name UNet modules ``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q``,
``lora_unet_middle_block_1_…``, ``lora_unet_output_blocks_0_1_…``. We train the diffusers UNet, so its module
paths go through one table, diffusers block → original block, built by the rule sd-scripts' conversion
(``sdxl_model_util.convert_diffusers_unet_state_dict_to_sdxl``) follows:

- ``input_blocks.0`` is ``conv_in``; down block ``b`` layer ``i`` is ``input_blocks.{1 + b·(L+1) + i}`` with the
  resnet at ``.0`` and the transformer at ``.1``; its downsampler is ``input_blocks.{(b+1)·(L+1)}.0.op``;
- the middle block is ``middle_block.0`` (resnet), ``.1`` (transformer), ``.2`` (resnet);
- up block ``b`` layer ``i`` is ``output_blocks.{b·(L+1) + i}`` (resnet ``.0``, transformer ``.1``); its
  upsampler follows the last layer's modules (``.2.conv`` after a transformer, ``.1.conv`` without one);
- inside a resnet ``norm1/conv1/time_emb_proj/norm2/conv2/conv_shortcut`` are ``in_layers.0/in_layers.2/
  emb_layers.1/out_layers.0/out_layers.3/skip_connection``. Transformer internals keep their names.

SD1/SD2 keep diffusers-style names, as sd-scripts does for them.
"""

from __future__ import annotations

from collections.abc import Sequence

SDXL_DOWN_BLOCKS = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
SDXL_UP_BLOCKS = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")
_RESNET_PARTS = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                 "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def block_table(down_types: Sequence[str], up_types: Sequence[str], layers: int = 2) -> dict[str, str]:
    """diffusers block path → original-layout block path for a UNet with these block types."""
    table: dict[str, str] = {}
    for b, kind in enumerate(down_types):
        for i in range(layers):
            index = 1 + b * (layers + 1) + i
            table[f"down_blocks.{b}.resnets.{i}"] = f"input_blocks.{index}.0"
            if kind.startswith("CrossAttn"):
                table[f"down_blocks.{b}.attentions.{i}"] = f"input_blocks.{index}.1"
        if b < len(down_types) - 1:
            table[f"down_blocks.{b}.downsamplers.0.conv"] = f"input_blocks.{(b + 1) * (layers + 1)}.0.op"
    table["mid_block.resnets.0"] = "middle_block.0"
    table["mid_block.attentions.0"] = "middle_block.1"
    table["mid_block.resnets.1"] = "middle_block.2"
    for b, kind in enumerate(up_types):
        attention = kind.startswith("CrossAttn")
        for i in range(layers + 1):
            index = b * (layers + 1) + i
            table[f"up_blocks.{b}.resnets.{i}"] = f"output_blocks.{index}.0"
            if attention:
                table[f"up_blocks.{b}.attentions.{i}"] = f"output_blocks.{index}.1"
        if b < len(up_types) - 1:
            last = b * (layers + 1) + layers
            table[f"up_blocks.{b}.upsamplers.0.conv"] = f"output_blocks.{last}.{2 if attention else 1}.conv"
    return table


SDXL_TABLE = block_table(SDXL_DOWN_BLOCKS, SDXL_UP_BLOCKS)


def original_path(path: str, table: dict[str, str]) -> str:
    """A diffusers UNet module path in the original layout (paths outside the table are returned as is)."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        head = ".".join(parts[:cut])
        if head in table:
            rest = parts[cut:]
            if ".resnets." in head and rest and rest[0] in _RESNET_PARTS:
                rest = [_RESNET_PARTS[rest[0]], *rest[1:]]
            return ".".join([table[head], *rest])
    return path


def is_sdxl_unet(model: object) -> bool:
    """A diffusers UNet with SDXL's ``text_time`` conditioning."""
    config = getattr(model, "config", None)
    return getattr(config, "addition_embed_type", None) == "text_time"


def table_for(model: object) -> dict[str, str]:
    """The block table of this SDXL UNet (the real SDXL's, or a smaller test model's by the same rule)."""
    config = model.config  # type: ignore[attr-defined]
    layers = config.layers_per_block
    layers = layers[0] if isinstance(layers, list | tuple) else layers
    return block_table(config.down_block_types, config.up_block_types, layers)


def sdxl_unet_names(model: object, names: dict[str, str]) -> dict[str, str]:
    """``{module path: kohya name}`` with the UNet names in the original layout; other names unchanged."""
    table = table_for(model)
    return {path: "lora_unet_" + original_path(path, table).replace(".", "_") for path in names}
