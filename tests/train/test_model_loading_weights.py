"""Starting from an existing LoRA (network_weights): rank/alpha that differ from the config, and modules the
configured network type cannot take, are reported (issue 8)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from loratui.train.export import build_metadata, save_lora
from loratui.train.loop import Trainer
from loratui.train.networks import attach_network
from loratui.train.resume_weights import load_network_weights

from .conftest import Recorder, make_config


def _saved_network(tmp_path, cfg, name: str):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(cfg.model.pretrained_model_name_or_path)
    network = attach_network(cfg, pipe.unet, [pipe.text_encoder])
    return save_lora(network, tmp_path / name, build_metadata(cfg, run_info={}), torch.float32)


def _fresh_network(cfg):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(cfg.model.pretrained_model_name_or_path)
    return attach_network(cfg, pipe.unet, [pipe.text_encoder])


def test_alpha_that_differs_from_the_config_is_a_warning_in_the_run(tmp_path, tiny_sd1_dir, demo_dataset):
    source = make_config(tiny_sd1_dir, demo_dataset, network__network_dim=4, network__network_alpha=4.0)
    path = _saved_network(tmp_path, source, "a4.safetensors")
    follow = make_config(tiny_sd1_dir, demo_dataset, network__network_dim=4, network__network_alpha=8.0,
                         network__network_weights=str(path))
    rec = Recorder()
    Trainer(follow, tmp_path, rec).setup()
    messages = [w["message"] for w in rec.of("warning")]
    assert ("a4.safetensors has alpha 4 (config network_alpha: 8; the LoRA strength changes from 1 to 2); set "
            "network_dim/network_alpha to the file's values or network.dim_from_weights: true") in messages


def test_rank_that_differs_is_named(tmp_path, tiny_sd1_dir, demo_dataset):
    path = _saved_network(tmp_path, make_config(tiny_sd1_dir, demo_dataset, network__network_dim=8,
                                                network__network_alpha=8.0), "r8.safetensors")
    cfg = make_config(tiny_sd1_dir, demo_dataset, network__network_dim=4, network__network_alpha=8.0)
    with pytest.raises(ValueError) as err:  # at another rank no tensor fits: the error says which ranks
        load_network_weights(_fresh_network(cfg), path)
    assert str(err.value).startswith(f"{path}: no tensor matches this network; has rank 8 (config network_dim: 4;")


def test_locon_file_into_a_lora_config_says_which_modules_and_how_many(tmp_path, tiny_sd1_dir, demo_dataset):
    locon = make_config(tiny_sd1_dir, demo_dataset, network__network_type="locon", network__conv_dim=2,
                        network__conv_alpha=1.0)
    path = _saved_network(tmp_path, locon, "locon.safetensors")
    lora_cfg = make_config(tiny_sd1_dir, demo_dataset)  # rank 4, alpha 2 like the LoCon file's linear layers
    network = _fresh_network(lora_cfg)
    report = load_network_weights(network, path)
    in_file = {k.split(".")[0] for k in load_file(str(path))}
    in_lora = {name for part in network.parts for name in part.names.values()}
    missing = sorted(in_file - in_lora)
    assert missing and all("resnets" in m or "sample" in m or "conv" in m for m in missing)
    [message] = report.warnings
    assert message.startswith(f"locon.safetensors: {len(missing)} of {len(in_file)} modules were not loaded into "
                              f"this lora network ({missing[0]}, ")
    assert message.endswith("they are LoCon convolution layers: set network.network_type: locon and "
                            "network.conv_dim")
    assert report.loaded == sum(1 for k in load_file(str(path)) if k.split(".")[0] in in_lora
                                and not k.endswith(".alpha"))


def test_matching_file_loads_without_warnings(tmp_path, tiny_sd1_dir, demo_dataset):
    cfg = make_config(tiny_sd1_dir, demo_dataset)
    path = _saved_network(tmp_path, cfg, "same.safetensors")
    report = load_network_weights(_fresh_network(cfg), path)
    assert report.warnings == [] and report.loaded > 0
