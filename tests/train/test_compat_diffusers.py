"""Our files load in diffusers' own `load_lora_weights()` and reproduce the trained adapter's outputs."""

from __future__ import annotations

import pytest
import torch

from loratui.core.config import TrainingConfig
from loratui.train.export import build_metadata, read_metadata, save_lora
from loratui.train.networks import attach_network


def _cfg(kind: str, unet_only: bool = False, family: str = "sd1") -> TrainingConfig:
    cfg = TrainingConfig().with_value("model.model_family", family)
    cfg = cfg.with_value("network.network_type", kind).with_value("network.network_dim", 4)
    cfg = cfg.with_value("network.network_alpha", 1.0)  # alpha != rank: the strength must survive export
    if kind == "locon":
        cfg = cfg.with_value("network.conv_dim", 2).with_value("network.conv_alpha", 1.0)
    return cfg.with_value("network.network_train_unet_only", unet_only)


def _perturb(network) -> None:
    """Fresh LoRA up-weights are zero (a no-op); give every adapter weight a value."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for part in network.parts:
            for p in part.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)


def _outputs(pipe, sdxl: bool):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 8, 8, generator=gen)
    t = torch.tensor([10])
    ids = pipe.tokenizer(["a photo of sks"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        if not sdxl:
            hidden = pipe.text_encoder(ids)[0]
            return hidden, pipe.unet(x, t, hidden).sample
        out1 = pipe.text_encoder(ids, output_hidden_states=True)
        out2 = pipe.text_encoder_2(ids, output_hidden_states=True)
        hidden = torch.cat([out1.hidden_states[-2], out2.hidden_states[-2]], dim=-1)
        cond = {"text_embeds": out2.text_embeds, "time_ids": torch.tensor([[64, 64, 0, 0, 64, 64]])}
        return hidden, pipe.unet(x, t, hidden, added_cond_kwargs=cond).sample


@pytest.mark.parametrize(("family", "kind", "unet_only"), [
    ("sd1", "lora", False), ("sd1", "locon", False), ("sd1", "lora", True),
    ("sdxl", "lora", False), ("sdxl", "locon", True),
])
def test_diffusers_loads_our_file_and_matches(tmp_path, tiny_sd1_dir, tiny_sdxl_dir, family, kind, unet_only):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    sdxl = family == "sdxl"
    cls, folder = (StableDiffusionXLPipeline, tiny_sdxl_dir) if sdxl else (StableDiffusionPipeline, tiny_sd1_dir)
    cfg = _cfg(kind, unet_only, family)
    trained = cls.from_pretrained(folder)
    tes = [trained.text_encoder, trained.text_encoder_2] if sdxl else [trained.text_encoder]
    network = attach_network(cfg, trained.unet, tes)
    _perturb(network)
    want_hidden, want = _outputs(trained, sdxl)
    path = save_lora(network, tmp_path / "x.safetensors", build_metadata(cfg, run_info={}), torch.float32)

    fresh = cls.from_pretrained(folder)
    base_hidden, base = _outputs(fresh, sdxl)
    fresh.load_lora_weights(str(path))
    got_hidden, got = _outputs(fresh, sdxl)

    assert (want - base).abs().max() > 1e-3, "the LoRA must change the UNet output"
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got_hidden, want_hidden, atol=1e-4, rtol=1e-4)
    if not unet_only:
        assert (want_hidden - base_hidden).abs().max() > 1e-4, "the text-encoder LoRA must change its output"

    from safetensors.torch import load_file

    keys = load_file(str(path))
    prefixes = {k.split("_", 2)[1] if k.startswith("lora_te") else "unet" for k in keys}
    te_prefix = ("lora_te1_", "lora_te2_") if sdxl else ("lora_te_",)
    assert any(k.startswith("lora_unet_") for k in keys)
    assert all(k.startswith(("lora_unet_", *te_prefix)) for k in keys), prefixes
    assert any(k.startswith(te_prefix) for k in keys) == (not unet_only)
    alphas = {v.item() for k, v in keys.items() if k.endswith(".alpha")}
    assert 1.0 in alphas
    if not sdxl and not unet_only:
        assert "lora_te_text_model_encoder_layers_0_self_attn_k_proj.lora_down.weight" in keys
    meta = read_metadata(path)
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "1.0"
