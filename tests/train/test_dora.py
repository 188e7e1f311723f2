"""DoRA files hold the magnitude per input column, the layout AUTOMATIC1111, ComfyUI and LyCORIS apply alike.

The independent reference is the `lycoris-lora` package's own LoRA module with ``weight_decompose=True,
wd_on_out=False``, loading our file; AUTOMATIC1111's ``apply_weight_decompose`` and ComfyUI's ``weight_decompose``
are written out below from their code and applied to one square and one non-square layer.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from loratui.core.config import TrainingConfig, check_config
from loratui.train.export import build_metadata, read_metadata, save_lora
from loratui.train.networks import attach_network
from loratui.train.resume_weights import load_kohya_weights

from .conftest import Recorder, make_config


def _dora_config(kind: str = "lora", **changes) -> TrainingConfig:
    cfg = TrainingConfig().with_value("network.use_dora", True).with_value("network.network_type", kind)
    cfg = cfg.with_value("network.network_dim", 4).with_value("network.network_alpha", 2.0)  # alpha ≠ rank
    if kind == "locon":
        cfg = cfg.with_value("network.conv_dim", 2).with_value("network.conv_alpha", 1.0)
    for key, value in changes.items():
        cfg = cfg.with_value(key, value)
    return cfg


def _pipe(model_dir):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(model_dir)


def _as_if_trained(network, seed: int = 0) -> None:
    """Move every adapter tensor, the magnitudes included, as training would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for part in network.parts:
            for p in part.parameters():
                if p.dim() >= 2 and p.shape[0] == 1:  # dora_scale (1, in[, 1, 1]): a relative change
                    p.mul_(1 + 0.2 * torch.randn(p.shape, generator=gen))
                else:
                    p.add_(torch.randn(p.shape, generator=gen) * 0.1)


def _inputs(seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(1, 4, 8, 8, generator=gen), torch.tensor([10]), torch.randn(1, 77, 32, generator=gen),
            torch.randint(2, 90, (1, 77), generator=gen))


def _outputs(pipe, inputs):
    x, t, hidden, ids = inputs
    with torch.no_grad():
        return pipe.unet(x, t, hidden).sample, pipe.text_encoder(ids).last_hidden_state


@pytest.mark.parametrize("kind", ["lora", "locon"])
def test_lycoris_loads_our_dora_file_and_reproduces_unet_and_text_encoder(tmp_path, tiny_sd1_dir, monkeypatch, kind):
    from lycoris.kohya import LycorisNetworkKohya

    cfg = _dora_config(kind)
    trained = _pipe(tiny_sd1_dir)
    network = attach_network(cfg, trained.unet, [trained.text_encoder])
    _as_if_trained(network)
    inputs = _inputs()
    want_unet, want_te = _outputs(trained, inputs)
    path = save_lora(network, tmp_path / "dora.safetensors", build_metadata(cfg, run_info={}), torch.float32)
    saved = load_file(str(path))

    fresh = _pipe(tiny_sd1_dir)
    base_unet, base_te = _outputs(fresh, inputs)
    # LyCORIS' own targets for SD: kohya's blocks (diffusers' TimestepEmbedding would be named twice).
    monkeypatch.setattr(LycorisNetworkKohya, "UNET_TARGET_REPLACE_MODULE",
                        ["Transformer2DModel", "ResnetBlock2D", "Downsample2D", "Upsample2D"])
    monkeypatch.setattr(LycorisNetworkKohya, "UNET_TARGET_REPLACE_NAME", [])
    monkeypatch.setattr(LycorisNetworkKohya, "TEXT_ENCODER_TARGET_REPLACE_MODULE", ["CLIPAttention", "CLIPMLP"])
    monkeypatch.setattr(LycorisNetworkKohya, "TEXT_ENCODER_TARGET_REPLACE_NAME", [])
    monkeypatch.setattr(LycorisNetworkKohya, "ENABLE_CONV", kind == "locon")
    # transformers 5 dropped ``text_model.`` from CLIPTextModel's module paths; kohya names keep it.
    te_holder = nn.Module()
    te_holder.text_model = fresh.text_encoder
    lycoris = LycorisNetworkKohya(te_holder, fresh.unet, lora_dim=4, alpha=2.0, conv_lora_dim=2, conv_alpha=1.0,
                                  network_module="lora", weight_decompose=True, wd_on_out=False)
    lycoris.apply_to(te_holder, fresh.unet, apply_text_encoder=True, apply_unet=True)
    result = lycoris.load_state_dict(saved, strict=False)
    assert result.unexpected_keys == []
    loaded_modules = {k.split(".")[0] for k in saved}
    assert loaded_modules <= {m.lora_name for m in lycoris.loras}
    assert any(".dora_scale" in k for k in saved)
    got_unet, got_te = _outputs(fresh, inputs)

    assert (want_unet - base_unet).abs().max() > 1e-2 and (want_te - base_te).abs().max() > 1e-2
    torch.testing.assert_close(got_unet, want_unet, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got_te, want_te, atol=1e-4, rtol=1e-4)


def test_dora_scale_layout_and_metadata(tmp_path, tiny_sd1_dir):
    cfg = _dora_config("locon")
    pipe = _pipe(tiny_sd1_dir)
    network = attach_network(cfg, pipe.unet, [pipe.text_encoder])
    path = save_lora(network, tmp_path / "dora.safetensors", build_metadata(cfg, run_info={}), torch.float16)
    saved = load_file(str(path))
    ff = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_ff_net_0_proj"  # Linear 32 → 256
    conv = "lora_unet_down_blocks_0_resnets_0_conv1"  # 3×3 conv
    assert saved[f"{ff}.dora_scale"].shape == (1, 32)
    assert saved[f"{ff}.dora_scale"].dtype == torch.float16
    conv_in = pipe.unet.down_blocks[0].resnets[0].conv1.base_layer.in_channels
    assert saved[f"{conv}.dora_scale"].shape == (1, conv_in, 1, 1)
    for key in (f"{ff}.lora_up.weight", f"{ff}.lora_down.weight", f"{ff}.alpha"):
        assert key in saved
    # every adapted module has its magnitude: ‖W‖ per input column before training
    downs = {k.rsplit(".", 2)[0] for k in saved if k.endswith(".lora_down.weight")}
    assert downs == {k.rsplit(".", 1)[0] for k in saved if k.endswith(".dora_scale")}
    base = pipe.unet.get_submodule("down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj").base_layer
    torch.testing.assert_close(saved[f"{ff}.dora_scale"].float(), base.weight.norm(dim=0, keepdim=True),
                               atol=1e-2, rtol=1e-3)
    args = read_metadata(path)["ss_network_args"]
    assert '"dora_wd": "True"' in args and '"wd_on_output": "False"' in args


def _a1111_weight(w: torch.Tensor, up, down, alpha, dora_scale, multiplier: float = 1.0) -> torch.Tensor:
    """AUTOMATIC1111 ``extensions-builtin/Lora``: ``finalize_updown`` scales up@down by alpha/dim, then
    ``apply_weight_decompose`` rescales W+ΔW by dora_scale over the norm of each input column."""
    updown = (up @ down) * (alpha / down.shape[0])
    merged = updown + w
    norm = merged.transpose(0, 1).reshape(merged.shape[1], -1).norm(dim=1, keepdim=True)
    norm = norm.reshape(merged.shape[1], 1).transpose(0, 1)
    return w + (merged * (dora_scale / norm) - w) * multiplier


def _comfy_weight(w: torch.Tensor, up, down, alpha, dora_scale, strength: float = 1.0) -> torch.Tensor:
    """ComfyUI ``comfy/weight_adapter/base.py`` ``weight_decompose`` (alpha = alpha/rank from ``lora.py``):
    the axis comes from dora_scale's first dimension; ours is 1, so the norm is per input column."""
    calc = w + (up @ down) * (alpha / down.shape[0])
    if dora_scale.shape[0] == calc.shape[0]:
        norm = w.reshape(w.shape[0], -1).norm(dim=1, keepdim=True)
    else:
        norm = calc.transpose(0, 1).reshape(calc.shape[1], -1).norm(dim=1, keepdim=True).transpose(0, 1)
    calc = calc * (dora_scale / (norm + torch.finfo(w.dtype).eps))
    return w + strength * (calc - w)


@pytest.mark.parametrize("apply", [_a1111_weight, _comfy_weight], ids=["a1111", "comfyui"])
@pytest.mark.parametrize("layer", [
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",  # square, 32 × 32
    "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj",  # 32 in → 256 out
    "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2",  # 128 in → 32 out
])
def test_ui_formulas_reproduce_the_trained_layer(tmp_path, tiny_sd1_dir, apply, layer):
    cfg = _dora_config("lora", **{"network.network_train_unet_only": True})
    pipe = _pipe(tiny_sd1_dir)
    network = attach_network(cfg, pipe.unet, [pipe.text_encoder])
    _as_if_trained(network, seed=3)
    path = save_lora(network, tmp_path / "dora.safetensors", build_metadata(cfg, run_info={}), torch.float32)
    saved = load_file(str(path))
    name = network.unet.names[layer]
    module = pipe.unet.get_submodule(layer)
    w, b = module.base_layer.weight, module.base_layer.bias
    x = torch.randn(2, 5, w.shape[1], generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = module(x)
        weight = apply(w, saved[f"{name}.lora_up.weight"], saved[f"{name}.lora_down.weight"],
                       saved[f"{name}.alpha"].item(), saved[f"{name}.dora_scale"])
        got = F.linear(x, weight, b)
        plain = F.linear(x, w, b)
    assert (want - plain).abs().max() > 1e-2
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_dora_starts_as_the_base_model(tiny_sd1_dir):
    inputs = _inputs()
    base = _outputs(_pipe(tiny_sd1_dir), inputs)
    pipe = _pipe(tiny_sd1_dir)
    attach_network(_dora_config("locon"), pipe.unet, [pipe.text_encoder])
    for got, want in zip(_outputs(pipe, inputs), base, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_training_moves_the_magnitudes_and_resume_reads_them_back(tmp_path, tiny_sd1_dir, demo_dataset):
    from loratui.train.loop import run

    cfg = make_config(tiny_sd1_dir, demo_dataset, network__use_dora=True, schedule__max_train_steps=2,
                      optimizer__learning_rate=1e-2)
    (tmp_path / "state").mkdir()
    final = run(cfg, tmp_path, Recorder())
    saved = load_file(str(final))

    pipe = _pipe(tiny_sd1_dir)
    network = attach_network(cfg, pipe.unet, [pipe.text_encoder])
    fresh = {k: v.clone() for k, v in _dora_scales(network).items()}
    assert load_kohya_weights(network, final) == sum(
        1 for k in saved if not k.endswith(".alpha"))
    after = _dora_scales(network)
    moved = [k for k in fresh if not torch.allclose(fresh[k], after[k])]
    assert moved, "training must change the magnitudes"
    for key, value in after.items():
        torch.testing.assert_close(value, saved[key].float())


def _dora_scales(network) -> dict[str, torch.Tensor]:
    from loratui.train.export import layer_parameters

    out = {}
    for part in network.parts:
        for path, name in part.names.items():
            for key, tensor in layer_parameters(part.model.get_submodule(path), name).items():
                if key.endswith(".dora_scale"):
                    out[key] = tensor.detach()
    return out


def test_dora_needs_no_warning_and_is_refused_for_loha():
    assert not [i for i in check_config(_dora_config("lora")) if i.path == "network.use_dora"]
    issues = [i for i in check_config(_dora_config("loha")) if i.path == "network.use_dora"]
    assert [i.severity for i in issues] == ["error"]
