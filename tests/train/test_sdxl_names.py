"""SDXL files name UNet modules in sd-scripts' original layout, and both namings load as starting weights."""

from __future__ import annotations

import torch
from safetensors.torch import load_file, save_file

from loratui.train.export import build_metadata, file_names, save_lora
from loratui.train.networks import (
    _TE_BLOCKS,
    _UNET_ATTN_BLOCKS,
    AdaptedModel,
    attach_network,
    find_targets,
    kohya_name,
)
from loratui.train.resume_weights import load_kohya_weights

from .conftest import make_config


def _full_sdxl_on_meta():
    """SDXL base's UNet and both text encoders at full size on the meta device (no memory, real structure)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with torch.device("meta"):
        unet = UNet2DConditionModel(
            sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
        )
        te1 = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                           num_attention_heads=12))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=1280, intermediate_size=5120,
                                                         num_hidden_layers=32, num_attention_heads=20,
                                                         projection_dim=1280))
    return unet, te1, te2


def _sd_scripts_sdxl_unet_names() -> set[str]:
    """The UNet LoRA names sd-scripts' create_network makes for SDXL (networks/lora.py: Linear layers inside
    each Transformer2DModel of library/sdxl_original_unet.py's SdxlUNet2DConditionModel), written out from
    that file's layout: input_blocks 4, 5 hold transformers of depth 2 and 7, 8 of depth 10 (at index 1 of
    each block), middle_block.1 depth 10, output_blocks 0-2 depth 10 and 3-5 depth 2."""
    depth = {f"input_blocks_{i}_1": 2 for i in (4, 5)} | {f"input_blocks_{i}_1": 10 for i in (7, 8)}
    depth |= {"middle_block_1": 10} | {f"output_blocks_{i}_1": 10 for i in (0, 1, 2)}
    depth |= {f"output_blocks_{i}_1": 2 for i in (3, 4, 5)}
    layer = [f"{a}_{p}" for a in ("attn1", "attn2") for p in ("to_q", "to_k", "to_v", "to_out_0")]
    layer += ["ff_net_0_proj", "ff_net_2"]
    names = set()
    for block, n in depth.items():
        names |= {f"lora_unet_{block}_proj_in", f"lora_unet_{block}_proj_out"}
        names |= {f"lora_unet_{block}_transformer_blocks_{k}_{m}" for k in range(n) for m in layer}
    return names


def _sd_scripts_sdxl_te_names() -> set[str]:
    """create_network's text-encoder names for SDXL: lora_te1_ (CLIP-L, 12 layers), lora_te2_ (CLIP-G, 32),
    the Linear layers of CLIPAttention (q/k/v/out_proj) and CLIPMLP (fc1/fc2)."""
    parts = [f"self_attn_{p}" for p in ("q_proj", "k_proj", "v_proj", "out_proj")] + ["mlp_fc1", "mlp_fc2"]
    return {f"lora_te{t}_text_model_encoder_layers_{i}_{p}" for t, n in ((1, 12), (2, 32)) for i in range(n)
            for p in parts}


def test_full_sdxl_names_are_exactly_sd_scripts_set():
    unet, te1, te2 = _full_sdxl_on_meta()
    unet_paths = find_targets(unet, _UNET_ATTN_BLOCKS, False)
    unet_part = AdaptedModel(unet, "lora_unet", {p: kohya_name("lora_unet", p, False) for p in unet_paths})
    te_parts = [AdaptedModel(te, prefix, {p: kohya_name(prefix, p, True) for p in find_targets(te, _TE_BLOCKS, False)},
                             is_text_encoder=True) for te, prefix in ((te1, "lora_te1"), (te2, "lora_te2"))]
    unet_names = set(file_names(unet_part).values())
    assert len(unet_names) == 722
    assert unet_names == _sd_scripts_sdxl_unet_names()
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q" in unet_names
    te_names = {n for part in te_parts for n in file_names(part).values()}
    assert te_names == _sd_scripts_sdxl_te_names() and len(unet_names | te_names) == 722 + 264


def test_sdxl_file_uses_original_names_and_both_namings_load(tmp_path, tiny_sdxl_dir, demo_dataset):
    from diffusers import StableDiffusionXLPipeline

    cfg = make_config(tiny_sdxl_dir, demo_dataset, model__model_family="sdxl", network__network_type="locon",
                      network__conv_dim=2, network__conv_alpha=1.0)
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_dir)
    network = attach_network(cfg, pipe.unet, [pipe.text_encoder, pipe.text_encoder_2])
    with torch.no_grad():
        for p in network.unet.parameters():
            p.add_(0.05)
    path = save_lora(network, tmp_path / "sdxl.safetensors", build_metadata(cfg, run_info={}), torch.float32)
    saved = load_file(str(path))
    unet_modules = {k.split(".")[0] for k in saved if k.startswith("lora_unet_")}
    assert unet_modules and all(m.startswith(("lora_unet_input_blocks_", "lora_unet_middle_block_",
                                              "lora_unet_output_blocks_")) for m in unet_modules)
    # tiny SDXL: down (plain, cross-attn), up (cross-attn, plain) with 2 layers per block
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q" in unet_modules
    assert "lora_unet_input_blocks_1_0_in_layers_2" in unet_modules  # resnet conv1 (LoCon)
    assert "lora_unet_input_blocks_3_0_op" in unet_modules  # downsampler
    assert "lora_unet_output_blocks_2_2_conv" in unet_modules  # upsampler after a transformer

    # the same weights under diffusers-path names (what loratui wrote before) load too
    renamed = {file_names(network.unet)[p]: n for p, n in network.unet.names.items()}
    old_style = {}
    for key, value in saved.items():
        module, rest = key.split(".", 1)
        old_style[f"{renamed.get(module, module)}.{rest}"] = value
    old_path = tmp_path / "diffusers-names.safetensors"
    save_file(old_style, str(old_path))
    assert any(k.startswith("lora_unet_down_blocks_") for k in old_style)

    for source in (path, old_path):
        fresh_pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_dir)
        fresh = attach_network(cfg, fresh_pipe.unet, [fresh_pipe.text_encoder, fresh_pipe.text_encoder_2])
        assert load_kohya_weights(fresh, source) == sum(1 for k in saved if not k.endswith(".alpha"))
        for a, b in zip(network.unet.parameters(), fresh.unet.parameters(), strict=True):
            torch.testing.assert_close(a, b)
