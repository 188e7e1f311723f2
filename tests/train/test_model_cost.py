"""``core/model_cost`` against the real modules: every figure it derives from configs alone is checked here
against the diffusers / transformers modules those configs build (on the meta device: shapes, no weights),
torch's own FLOP counter, and the network loratui really attaches."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from loratui.core import model_cost as mc
from loratui.core.config import TrainingConfig
from loratui.train.bench import count_flops
from loratui.train.networks import attach_network

from .conftest import make_config


def _flops(run) -> float:
    with FlopCounterMode(display=False) as counter:
        run()
    return float(counter.get_total_flops())


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _text_encoder(config: dict) -> torch.nn.Module:
    clip = CLIPTextConfig(**{k: v for k, v in config.items() if not k.startswith("_")})
    projection = "WithProjection" in "".join(config.get("architectures") or [])
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(clip)


def _unet_inputs(configs: mc.ModelConfigs, height: int, width: int, context: int, batch: int = 1) -> tuple:
    scale = 2 ** (len(configs.vae["block_out_channels"]) - 1)
    sample = torch.empty(batch, 4, height // scale, width // scale)
    hidden = torch.empty(batch, context, configs.unet["cross_attention_dim"])
    extra = {}
    if configs.unet.get("addition_embed_type") == "text_time":
        pooled = configs.text_encoders[-1]["projection_dim"]
        extra = {"added_cond_kwargs": {"text_embeds": torch.empty(batch, pooled), "time_ids": torch.empty(batch, 6)}}
    return sample, torch.tensor([1] * batch), hidden, extra


CASES = [("sd1", 512, 512, 75), ("sd1", 512, 768, 225), ("sd2", 768, 640, 75), ("sd2-v", 768, 768, 150),
         ("sdxl", 1024, 1024, 75), ("sdxl", 832, 1216, 75)]


@pytest.mark.parametrize(("family", "height", "width", "tokens"), CASES)
def test_flops_and_parameters_match_the_released_architectures(family, height, width, tokens) -> None:
    configs = mc.read_configs(mc.SHIPPED_CONFIGS / family)
    cost = mc.model_cost(configs, height, width, tokens)
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(configs.unet)
        vae = AutoencoderKL.from_config(configs.vae)
        encoders = [_text_encoder(c) for c in configs.text_encoders]
        context = 77 if tokens == 75 else tokens + 2
        sample, steps, hidden, extra = _unet_inputs(configs, height, width, context)
        assert cost.unet_flops == _flops(lambda: unet(sample, steps, hidden, **extra))
        assert cost.vae_encode_flops == _flops(lambda: vae.encode(torch.empty(1, 3, height, width)))
        ids = torch.zeros(1, 77, dtype=torch.long)
        assert cost.te_flops == sum(_flops(lambda te=te: te(ids)) for te in encoders) * (tokens // 75)
    assert (cost.unet_params, cost.vae_params) == (_params(unet), _params(vae))
    assert cost.te_params == sum(_params(te) for te in encoders)


@pytest.mark.parametrize(("fixture", "height", "width"), [("tiny_sd1_dir", 64, 96), ("tiny_sdxl_dir", 96, 64)])
def test_tiny_models_are_counted_exactly_too(request, fixture: str, height: int, width: int) -> None:
    folder = request.getfixturevalue(fixture)
    configs = mc.read_configs(folder)
    cost = mc.model_cost(configs, height, width)
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    sample, steps, hidden, extra = _unet_inputs(configs, height, width, 77)
    with torch.no_grad():
        counted = count_flops(lambda _: unet(sample.normal_(), steps, hidden.normal_(), **extra).sample.sum())
    assert cost.unet_flops == counted  # the bench's counter, attention included on the CPU
    assert cost.unet_params == _params(unet)


@pytest.mark.parametrize(("family", "latent"), [("sd1", 64), ("sdxl", 64)])
def test_a_training_steps_flops_are_within_5_percent_of_the_counted_step(family: str, latent: int) -> None:
    """Forward and backward of the UNet with a LoRA attached (UNet only, frozen base), as torch counts them."""
    configs = mc.read_configs(mc.SHIPPED_CONFIGS / family)
    cfg = TrainingConfig.model_validate({"model": {"pretrained_model_name_or_path": "x", "model_family": family},
                                         "dataset": {"train_data_dir": "x", "resolution": latent * 8},
                                         "network": {"network_train_unet_only": True}})
    cost = mc.model_cost(configs, latent * 8, latent * 8)
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(configs.unet)
        attach_network(cfg, unet, [])
        sample, steps, hidden, extra = _unet_inputs(configs, latent * 8, latent * 8, 77)

        def step() -> None:
            unet(sample, steps, hidden, **extra).sample.float().pow(2).mean().backward()

        counted = _flops(step)
    expected = mc.step_flops(cfg.with_value("dataset.cache_latents", True), cost)
    assert expected == pytest.approx(counted, rel=0.05)


@pytest.mark.parametrize("network", [
    {"network_type": "lora"},
    {"network_type": "locon", "conv_dim": 2, "conv_alpha": 1.0},
    {"network_type": "locon"},
    {"network_type": "loha", "conv_dim": 2, "conv_alpha": 1.0},
    {"network_type": "lora", "network_train_unet_only": True},
])
def test_lora_parameters_per_rank_match_the_network_loratui_attaches(tiny_sd1_dir, demo_dataset, network) -> None:
    from diffusers import StableDiffusionPipeline

    cfg = make_config(tiny_sd1_dir, demo_dataset, network__network_dim=4, network__network_alpha=2.0)
    for key, value in network.items():
        cfg = cfg.with_value(f"network.{key}", value)
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd1_dir, safety_checker=None)
    attached = attach_network(cfg, pipe.unet, [pipe.text_encoder])
    units = mc.model_cost(mc.read_configs(tiny_sd1_dir), 64, 64).lora_units
    net = cfg.network
    if net.network_type == "lora":
        expected = units["unet"] * net.network_dim
    else:
        expected = units["unet_locon"] * net.network_dim + units["unet_conv"] * (net.conv_dim or net.network_dim)
    if cfg.trains_text_encoder:
        expected += units["te"] * net.network_dim
    if net.network_type == "loha":
        expected *= 2  # two low-rank pairs per layer (LyCORIS' Hadamard product)
    assert attached.trainable_parameter_count() == expected
