import hashlib
import json

import pytest
import torch

from loratui.train.export import (
    build_metadata,
    checkpoint_filename,
    model_hashes,
    prune_checkpoints,
    read_metadata,
    save_lora,
    unique_output_path,
)
from loratui.train.networks import attach_network, dims_from_weights

from .conftest import make_config


def test_metadata_values_are_strings_and_hashes_verify(tmp_path, tiny_sd1_dir, demo_dataset):
    from diffusers import StableDiffusionPipeline

    cfg = make_config(tiny_sd1_dir, demo_dataset, network__network_dim=8, network__network_alpha=4.0,
                      saving__training_comment="trigger: sks toy")
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd1_dir)
    network = attach_network(cfg, pipe.unet, [pipe.text_encoder])
    meta = build_metadata(cfg, run_info={"steps": 3, "epoch": 1, "tag_frequency": {"4_sks toy": {"sks toy": 6}}})
    path = save_lora(network, tmp_path / "m.safetensors", meta, torch.float16)
    saved = read_metadata(path)
    assert all(isinstance(v, str) for v in saved.values())
    assert saved["ss_network_module"] == "networks.lora"
    assert saved["ss_base_model_version"] == "sd_v1"
    assert saved["ss_training_comment"] == "trigger: sks toy"
    assert json.loads(saved["ss_tag_frequency"]) == {"4_sks toy": {"sks toy": 6}}
    assert saved["modelspec.architecture"] == "stable-diffusion-v1/lora"
    data = path.read_bytes()
    header = int.from_bytes(data[:8], "little")
    assert saved["sshs_model_hash"] == hashlib.sha256(data[8 + header:]).hexdigest()
    assert len(saved["sshs_legacy_hash"]) == 8
    assert dims_from_weights(path) == (8, 4.0, None, None)


def test_hashes_of_known_bytes():
    blob = (4).to_bytes(8, "little") + b"{}  " + b"x" * 10
    model, legacy = model_hashes(blob)
    assert model == hashlib.sha256(b"x" * 10).hexdigest()
    assert legacy == hashlib.sha256(b"").hexdigest()[:8]


def test_names_versioning_and_pruning(tmp_path):
    assert checkpoint_filename("mychar", 2) == "mychar-000002.safetensors"
    assert checkpoint_filename("mychar", None) == "mychar.safetensors"
    final = tmp_path / "mychar.safetensors"
    assert unique_output_path(final) == (final, None)
    final.write_bytes(b"old")
    path, message = unique_output_path(final)
    assert path.name == "mychar_v2.safetensors" and "already exists" in message
    for epoch in range(1, 6):
        (tmp_path / checkpoint_filename("mychar", epoch)).write_bytes(b"x")
    removed = prune_checkpoints(tmp_path, "mychar", 2)
    assert sorted(p.name for p in removed) == [checkpoint_filename("mychar", e) for e in (1, 2, 3)]
    assert (tmp_path / "mychar.safetensors").read_bytes() == b"old"


@pytest.mark.parametrize("kind", ["loha", "lokr"])
def test_lycoris_key_names(tmp_path, tiny_sd1_dir, demo_dataset, kind):
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    cfg = make_config(tiny_sd1_dir, demo_dataset, network__network_type=kind)
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd1_dir)
    network = attach_network(cfg, pipe.unet, [pipe.text_encoder])
    path = save_lora(network, tmp_path / f"{kind}.safetensors", build_metadata(cfg, run_info={}), torch.float32)
    keys = load_file(str(path))
    tag = "hada_w1_a" if kind == "loha" else "lokr_w1"
    assert any(k.endswith(tag) for k in keys)
    assert read_metadata(path)["ss_network_module"] == "lycoris.kohya"
    assert json.loads(read_metadata(path)["ss_network_args"])["algo"] == kind
