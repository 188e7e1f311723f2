import hashlib
import json
import time

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


# Every key train_network.py (sd-scripts 48d368f, NetworkTrainer.train) writes for a LoRA run from
# train_data_dir without a dataset config: the `metadata = {...}` literal, the `else:` (train_data_dir) branch's
# `metadata.update({...})`, the model-name block (`ss_sd_model_hash`, `ss_new_sd_model_hash` when the base model
# path exists, `ss_sd_model_name`) and save_model's `ss_training_finished_at`, `ss_steps`, `ss_epoch`.
# (`ss_network_args` only with network_args, `ss_vae_*` only with a VAE.)
SD_SCRIPTS_LORA_KEYS = {
    "ss_session_id", "ss_training_started_at", "ss_output_name", "ss_learning_rate", "ss_text_encoder_lr",
    "ss_unet_lr", "ss_num_train_images", "ss_num_validation_images", "ss_num_reg_images",
    "ss_num_batches_per_epoch", "ss_num_epochs", "ss_gradient_checkpointing", "ss_gradient_accumulation_steps",
    "ss_max_train_steps", "ss_lr_warmup_steps", "ss_lr_scheduler", "ss_network_module", "ss_network_dim",
    "ss_network_alpha", "ss_network_dropout", "ss_mixed_precision", "ss_full_fp16", "ss_v2",
    "ss_base_model_version", "ss_clip_skip", "ss_max_token_length", "ss_cache_latents", "ss_seed", "ss_lowram",
    "ss_noise_offset", "ss_multires_noise_iterations", "ss_multires_noise_discount", "ss_adaptive_noise_scale",
    "ss_zero_terminal_snr", "ss_training_comment", "ss_sd_scripts_commit_hash", "ss_optimizer",
    "ss_max_grad_norm", "ss_caption_dropout_rate", "ss_caption_dropout_every_n_epochs",
    "ss_caption_tag_dropout_rate", "ss_face_crop_aug_range", "ss_prior_loss_weight", "ss_min_snr_gamma",
    "ss_scale_weight_norms", "ss_ip_noise_gamma", "ss_debiased_estimation", "ss_noise_offset_random_strength",
    "ss_ip_noise_gamma_random_strength", "ss_loss_type", "ss_huber_schedule", "ss_huber_scale", "ss_huber_c",
    "ss_fp8_base", "ss_fp8_base_unet", "ss_validation_seed", "ss_validation_split", "ss_max_validation_steps",
    "ss_validate_every_n_epochs", "ss_validate_every_n_steps", "ss_resize_interpolation",
    "ss_batch_size_per_device", "ss_total_batch_size", "ss_resolution", "ss_color_aug", "ss_flip_aug",
    "ss_random_crop", "ss_shuffle_caption", "ss_enable_bucket", "ss_bucket_no_upscale", "ss_min_bucket_reso",
    "ss_max_bucket_reso", "ss_keep_tokens", "ss_dataset_dirs", "ss_reg_dataset_dirs", "ss_tag_frequency",
    "ss_bucket_info",
    "ss_sd_model_hash", "ss_new_sd_model_hash", "ss_sd_model_name",
    "ss_training_finished_at", "ss_steps", "ss_epoch",
}


def test_key_set_none_values_and_base_model_hashes_match_sd_scripts(tmp_path, tiny_sd1_dir, demo_dataset):
    base = tmp_path / "base.safetensors"
    base.write_bytes(bytes(range(256)) * 5000)  # 1.2 MiB: the legacy hash reads 64 KiB at 1 MiB
    cfg = make_config(tiny_sd1_dir, demo_dataset).with_value("model.pretrained_model_name_or_path", str(base))
    meta = build_metadata(cfg, run_info={"steps": 3, "epoch": 1})
    assert {k for k in meta if k.startswith("ss_")} == SD_SCRIPTS_LORA_KEYS
    # str(None) where sd-scripts' defaults are None (train_network.py: `{k: str(v) ...}`)
    assert meta["ss_network_dropout"] == meta["ss_noise_offset"] == meta["ss_min_snr_gamma"] == "None"
    assert meta["ss_max_token_length"] == meta["ss_clip_skip"] == "None"
    data = base.read_bytes()
    # train_util.model_hash: sha256 of 0x10000 bytes at 0x100000, first 8 hex; calculate_sha256: whole file
    assert meta["ss_sd_model_hash"] == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    assert meta["ss_new_sd_model_hash"] == hashlib.sha256(data).hexdigest()
    assert meta["ss_sd_model_name"] == "base.safetensors"
    with_args = build_metadata(cfg.with_value("network.network_type", "loha"), run_info={})
    assert set(with_args) >= {"ss_network_args"}


def test_legacy_hash_over_ss_keys_only_on_a_file_over_1_mib(tmp_path):
    from safetensors.torch import save

    from loratui.train.export import serialize

    tensors = {"lora_unet_x.lora_down.weight": torch.arange(400_000, dtype=torch.float32).reshape(1000, 400)}
    meta = {"ss_output_name": "big", "ss_network_dim": "8", "modelspec.title": "big " * 200,
            "modelspec.date": "2026-11-30T00:00:00"}
    data = serialize(tensors, meta)
    assert len(data) > 0x110000
    path = tmp_path / "big.safetensors"
    path.write_bytes(data)
    saved = read_metadata(path)
    # precalculate_safetensors_hashes: serialize the tensors with only the ss_* keys, then
    # addnet_hash_legacy (sha256 of 0x10000 bytes at 0x100000, 8 hex) and addnet_hash_safetensors.
    ss_only = save(tensors, metadata={k: v for k, v in meta.items() if k.startswith("ss_")})
    assert saved["sshs_legacy_hash"] == hashlib.sha256(ss_only[0x100000:0x110000]).hexdigest()[:8]
    header = int.from_bytes(ss_only[:8], "little")
    assert saved["sshs_model_hash"] == hashlib.sha256(ss_only[8 + header:]).hexdigest()
    with_modelspec = save(tensors, metadata=meta)
    assert saved["sshs_legacy_hash"] != hashlib.sha256(with_modelspec[0x100000:0x110000]).hexdigest()[:8]


def test_one_session_and_start_time_per_run_and_sd_scripts_forms(tmp_path, tiny_sd1_dir, demo_dataset):
    from loratui.train.loop import run

    from .conftest import Recorder

    folder = next(p.name for p in demo_dataset.iterdir() if not p.name.startswith("."))
    cfg = make_config(tiny_sd1_dir, demo_dataset, schedule__max_train_steps=None, schedule__max_train_epochs=2,
                      saving__save_every_n_epochs=1, dataset__repeats={folder: 1},
                      optimizer__optimizer_args={"weight_decay": 0.01})
    (tmp_path / "state").mkdir()
    before = time.time()
    final = run(cfg, tmp_path, Recorder())
    first = read_metadata(final.with_name("t-000001.safetensors"))
    last = read_metadata(final)
    assert first["ss_session_id"] == last["ss_session_id"]
    assert first["ss_training_started_at"] == last["ss_training_started_at"]
    started = float(last["ss_training_started_at"])
    assert before <= started < float(first["ss_training_finished_at"]) <= float(last["ss_training_finished_at"])
    assert last["ss_optimizer"] == "torch.optim.adamw.AdamW(weight_decay=0.01)"
    info = json.loads(last["ss_bucket_info"])
    assert set(info) == {"buckets", "mean_img_ar_error"}
    assert [set(b) for b in info["buckets"].values()] == [{"resolution", "count"}] * len(info["buckets"])
    assert sum(b["count"] for b in info["buckets"].values()) == int(last["ss_num_train_images"]) == 6
    assert last["ss_num_reg_images"] == "0"
    assert last["ss_sd_model_hash"] == last["ss_new_sd_model_hash"] == "IsADirectory"  # a diffusers folder
