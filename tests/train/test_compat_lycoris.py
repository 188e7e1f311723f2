"""LoHa and LoKr files load with the `lycoris-lora` package and reproduce the trained adapter's UNet output."""

from __future__ import annotations

import pytest
import torch

from loratui.core.config import TrainingConfig
from loratui.train.export import build_metadata, save_lora
from loratui.train.networks import attach_network


@pytest.mark.parametrize("kind", ["loha", "lokr"])
@pytest.mark.parametrize("dim", [4, 16])  # 16 makes LoKr keep full factors: its alpha/r scale is folded in
def test_lycoris_loads_and_matches(tmp_path, tiny_sd1_dir, kind, dim):
    from diffusers import StableDiffusionPipeline
    from lycoris.kohya import LycorisNetworkKohya, create_network_from_weights

    # lycoris' kohya wrapper names diffusers' TimestepEmbedding twice; SD LoRAs never target it.
    LycorisNetworkKohya.UNET_TARGET_REPLACE_MODULE = [
        m for m in LycorisNetworkKohya.UNET_TARGET_REPLACE_MODULE if m != "TimestepEmbedding"]
    cfg = TrainingConfig().with_value("network.network_type", kind).with_value("network.network_dim", dim)
    cfg = cfg.with_value("network.network_alpha", 1.0).with_value("network.network_train_unet_only", True)
    trained = StableDiffusionPipeline.from_pretrained(tiny_sd1_dir)
    network = attach_network(cfg, trained.unet, [trained.text_encoder])
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in network.unet.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    x, t, hidden = torch.randn(1, 4, 8, 8, generator=gen), torch.tensor([10]), torch.randn(1, 77, 32, generator=gen)
    with torch.no_grad():
        want = trained.unet(x, t, hidden).sample
    path = save_lora(network, tmp_path / f"{kind}.safetensors", build_metadata(cfg, run_info={}), torch.float32)

    fresh = StableDiffusionPipeline.from_pretrained(tiny_sd1_dir)
    with torch.no_grad():
        base = fresh.unet(x, t, hidden).sample
    lycoris, _ = create_network_from_weights(1.0, str(path), None, None, fresh.unet)
    lycoris.apply_to(None, fresh.unet, apply_text_encoder=False, apply_unet=True)
    assert len(lycoris.unet_loras) == len(network.unet.names)
    with torch.no_grad():
        got = fresh.unet(x, t, hidden).sample
    assert (want - base).abs().max() > 1e-3
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
