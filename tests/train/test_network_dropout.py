"""Network dropouts and max-norm: each setting does what sd-scripts does, or is refused with the reason.

sd-scripts ``networks/lora.py`` ``LoRAModule.forward``: ``module_dropout`` skips the module for a call,
``dropout`` (our ``network_dropout``) drops the rank activations ``lx = lora_down(x)``, ``rank_dropout`` masks rank
channels per sample and rescales by 1/(1-p). ``scale_weight_norms``: ``LoRANetwork.apply_max_norm_regularization``
for LoRA, LyCORIS ``apply_max_norm`` for LoHa/LoKr, called after every optimizer step (``train_network.py``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from loratui.core.config import TrainingConfig, check_config
from loratui.train.loop import run
from loratui.train.networks import ADAPTER, attach_network

from .conftest import Recorder, make_config

ATTN = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"  # Linear 32 → 32, input (batch, tokens, 32)
CONV = "down_blocks.0.resnets.0.conv1"  # 3×3 conv (LoCon)


def _network(model_dir, kind: str = "lora", **network):
    from diffusers import StableDiffusionPipeline

    cfg = TrainingConfig().with_value("network.network_type", kind).with_value("network.network_dim", 4)
    cfg = cfg.with_value("network.network_alpha", 2.0).with_value("network.network_train_unet_only", True)
    if kind != "lora":
        cfg = cfg.with_value("network.conv_dim", 4).with_value("network.conv_alpha", 2.0)
    for key, value in network.items():
        cfg = cfg.with_value(f"network.{key}", value)
    pipe = StableDiffusionPipeline.from_pretrained(model_dir)
    network_ = attach_network(cfg, pipe.unet, [pipe.text_encoder])
    with torch.no_grad():  # a trained up weight, so that the update is not zero
        for p in network_.unet.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)) * 0.1)
    pipe.unet.train()
    return pipe.unet, network_


def _lora_down(layer, x):
    """lora_down(x) from the weights alone (calling the module would run the trainer's dropout hook)."""
    down = layer.lora_A[ADAPTER]
    if isinstance(down, torch.nn.Conv2d):
        return F.conv2d(x, down.weight, None, down.stride, down.padding)
    return F.linear(x, down.weight)


def _kohya_forward(layer, x, *, dropout=0.0, rank_dropout=0.0, module_dropout=0.0):
    """sd-scripts ``LoRAModule.forward`` written out over the layer's weights (same random draws, same order)."""
    org = layer.base_layer(x)
    if module_dropout and torch.rand(1) < module_dropout:
        return org
    lx = _lora_down(layer, x)
    if dropout:
        lx = F.dropout(lx, p=dropout)
    scale = layer.scaling[ADAPTER]
    if rank_dropout:
        mask = torch.rand((lx.size(0), lx.size(1) if lx.dim() == 4 else lx.size(-1))) > rank_dropout
        mask = mask.unsqueeze(1) if lx.dim() == 3 else mask[:, :, None, None] if lx.dim() == 4 else mask
        lx = lx * mask
        scale = scale / (1.0 - rank_dropout)
    return org + layer.lora_B[ADAPTER](lx) * scale


def _compare(layer, x, seed: int, **dropouts) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    got = layer(x)
    torch.manual_seed(seed)
    want = _kohya_forward(layer, x, **dropouts)
    return got, want


def test_network_dropout_acts_on_rank_activations_like_lora_module_forward(tiny_sd1_dir):
    unet, _ = _network(tiny_sd1_dir, network_dropout=0.5)
    layer = unet.get_submodule(ATTN)
    x = torch.randn(2, 16, 32)
    got, want = _compare(layer, x, seed=5, dropout=0.5)
    torch.testing.assert_close(got, want)
    torch.manual_seed(5)  # peft's lora_dropout drops the layer input instead: a different result
    peft_style = layer.base_layer(x) + layer.lora_B[ADAPTER](_lora_down(layer, F.dropout(x, 0.5))) * 0.5
    assert (got - peft_style).abs().max() > 1e-3
    unet.eval()
    torch.testing.assert_close(layer(x), _kohya_forward(layer, x))  # inference: no dropout


@pytest.mark.parametrize(("kind", "path", "shape"), [("lora", ATTN, (3, 16, 32)), ("locon", CONV, (3, 32, 8, 8))])
def test_rank_dropout_masks_ranks_per_sample_like_lora_module_forward(tiny_sd1_dir, kind, path, shape):
    unet, _ = _network(tiny_sd1_dir, kind, rank_dropout=0.5)
    layer = unet.get_submodule(path)
    x = torch.randn(*shape)
    got, want = _compare(layer, x, seed=2, rank_dropout=0.5)
    torch.testing.assert_close(got, want)
    with torch.no_grad():
        full = _kohya_forward(layer, x)
    assert (got - full).abs().max() > 1e-3


def test_module_dropout_skips_whole_modules_like_lora_module_forward(tiny_sd1_dir):
    unet, _ = _network(tiny_sd1_dir, module_dropout=0.5)
    layer = unet.get_submodule(ATTN)
    x = torch.randn(2, 16, 32)
    skipped = 0
    for seed in range(12):
        got, want = _compare(layer, x, seed=seed, module_dropout=0.5)
        torch.testing.assert_close(got, want)
        skipped += bool(torch.equal(want, layer.base_layer(x)))
    assert 0 < skipped < 12


def test_dropouts_change_what_lora_training_learns(tmp_path, tiny_sd1_dir, demo_dataset):
    """The same seeded run with sd-scripts' three dropouts on ends with different weights than without."""
    files = []
    for i, extra in enumerate(({}, {"network__network_dropout": 0.3, "network__rank_dropout": 0.3,
                                    "network__module_dropout": 0.3})):
        cfg = make_config(tiny_sd1_dir, demo_dataset, schedule__max_train_steps=1, **extra)
        run_dir = tmp_path / str(i)
        (run_dir / "state").mkdir(parents=True)
        files.append(load_file(str(run(cfg, run_dir, Recorder()))))
    plain, dropped = files
    assert plain.keys() == dropped.keys()
    assert any(not torch.equal(plain[k], dropped[k]) for k in plain if k.endswith("lora_up.weight"))


@pytest.mark.parametrize("kind", ["loha", "lokr"])
def test_network_dropout_is_refused_for_loha_and_lokr(tiny_sd1_dir, kind):
    cfg = TrainingConfig().with_value("network.network_type", kind).with_value("network.network_dropout", 0.1)
    issues = [i for i in check_config(cfg) if i.path == "network.network_dropout"]
    assert [i.severity for i in issues] == ["error"]
    assert "rank_dropout" in issues[0].fix
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd1_dir)
    with pytest.raises(ValueError, match=r"network\.network_dropout"):
        attach_network(cfg, pipe.unet, [pipe.text_encoder])


def _delta_norms(network) -> list[float]:
    from loratui.train.networks import _adapted_layers, _delta_without_dropout

    with torch.no_grad():
        return [_delta_without_dropout(m).norm().item() for part in network.parts for m in _adapted_layers(part.model)]


@pytest.mark.parametrize("kind", ["lora", "loha", "lokr"])
def test_max_norm_caps_every_module_like_apply_max_norm_regularization(tiny_sd1_dir, kind):
    _, network = _network(tiny_sd1_dir, kind)
    before = _delta_norms(network)
    cap = sorted(before)[len(before) // 2]  # half the modules are above it
    scaled, mean, largest = network.apply_max_norm(cap)
    after = _delta_norms(network)
    assert scaled == sum(n > cap for n in before) > 0
    for old, new in zip(before, after, strict=True):
        assert new == pytest.approx(min(old, cap), rel=1e-4)  # above the cap: scaled to it
        assert old > cap or new == old  # below it: multiplied by a ratio of exactly 1, so bit for bit the same
    assert largest == pytest.approx(cap, rel=1e-4) and mean == pytest.approx(sum(after) / len(after), rel=1e-4)


def test_max_norm_caps_loha_training(tmp_path, tiny_sd1_dir, demo_dataset):
    """A LoHa trained at a high learning rate with scale_weight_norms ends with every ΔW norm at or below it."""
    cap = 0.05
    cfg = make_config(tiny_sd1_dir, demo_dataset, network__network_type="loha", network__scale_weight_norms=cap,
                      network__network_train_unet_only=True, optimizer__learning_rate=5e-2,
                      schedule__max_train_steps=2)
    (tmp_path / "state").mkdir()
    saved = load_file(str(run(cfg, tmp_path, Recorder())))
    names = {k.rsplit(".", 1)[0] for k in saved if k.endswith(".hada_w1_a")}
    norms = []
    for name in names:
        w1 = saved[f"{name}.hada_w1_a"] @ saved[f"{name}.hada_w1_b"]
        w2 = saved[f"{name}.hada_w2_a"] @ saved[f"{name}.hada_w2_b"]
        norms.append((w1 * w2).norm().item() * saved[f"{name}.alpha"].item() / saved[f"{name}.hada_w1_b"].shape[0])
    assert max(norms) <= cap * (1 + 1e-3)
    assert max(norms) == pytest.approx(cap, rel=1e-3), "the learning rate is high enough to reach the cap"
