import json

import pytest

from loratui.core.kohya_import import import_kohya_json, parse_optimizer_args
from loratui.core.presets import PresetError

OLD_GUI_FILE = {
    "LoRA_type": "LyCORIS/LoCon",
    "pretrained_model_name_or_path": "runwayml/stable-diffusion-v1-5",
    "v2": False, "v_parameterization": False, "sdxl": False,
    "train_data_dir": "/data/img", "reg_data_dir": "", "output_dir": "/data/out", "output_name": "mychar",
    "max_resolution": "768,768",
    "learning_rate": "0.0001", "unet_lr": "0.0001", "text_encoder_lr": "5e-5",
    "lr_scheduler": "cosine_with_restarts", "lr_warmup": "10", "lr_scheduler_num_cycles": "3",
    "train_batch_size": "2", "epoch": "8", "save_every_n_epochs": "2",
    "mixed_precision": "fp16", "save_precision": "fp16", "seed": "1234",
    "cache_latents": True, "caption_extension": ".txt", "enable_bucket": True,
    "network_dim": 64, "network_alpha": "32", "conv_dim": 8, "conv_alpha": 1,
    "optimizer": "AdamW8bit", "optimizer_args": "weight_decay=0.1 betas=0.9,0.99",
    "clip_skip": "2", "max_train_steps": "", "noise_offset": "0.05", "min_snr_gamma": 0,
    "stop_text_encoder_training": 0, "shuffle_caption": True, "keep_tokens": "1",
    "sample_prompts": "a photo of sks --w 512 --h 512\n\n# comment\nsks smiling",
    "xformers": True, "color_aug": False, "use_wandb": False, "wandb_api_key": "",
}


def test_old_gui_file_with_string_numbers_imports(tmp_path) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps(OLD_GUI_FILE))
    result = import_kohya_json(path)
    cfg = result.config
    assert cfg.network.network_type == "locon"
    assert (cfg.network.network_dim, cfg.network.network_alpha) == (64, 32.0)
    assert cfg.dataset.resolution == 768
    assert cfg.schedule.max_train_epochs == 8 and cfg.schedule.train_batch_size == 2
    assert cfg.schedule.lr_warmup_pct == 10 and cfg.schedule.lr_scheduler_num_cycles == 3
    assert cfg.optimizer.text_encoder_lr == 5e-5
    assert cfg.optimizer.optimizer_args == {"weight_decay": 0.1, "betas": [0.9, 0.99]}
    assert cfg.advanced.clip_skip == 2 and cfg.advanced.min_snr_gamma is None
    assert cfg.sampling.sample_prompts == ["a photo of sks --w 512 --h 512", "sks smiling"]
    assert cfg.schedule.max_train_steps is None
    assert cfg.dataset.reg_data_dir is None
    assert set(result.ignored) == {"color_aug", "use_wandb", "wandb_api_key"}


def test_sdxl_and_v2_flags_pick_family() -> None:
    from loratui.core.kohya_import import import_kohya_dict

    assert import_kohya_dict({"sdxl": True}).config.model.model_family == "sdxl"
    assert import_kohya_dict({"v2": True, "v_parameterization": True}).config.model.model_family == "sd2-v"


def test_unsupported_values_are_reported_not_fatal() -> None:
    from loratui.core.kohya_import import import_kohya_dict

    result = import_kohya_dict({"LoRA_type": "LyCORIS/iA3", "optimizer": "Lion8bit", "lr_scheduler": "adafactor"})
    assert result.config.network.network_type == "lora"
    assert result.config.optimizer.optimizer_type == "Lion"
    assert {"LoRA_type", "lr_scheduler"} <= set(result.ignored)
    assert any("Lion8bit" in note for note in result.notes)


def test_bad_value_names_the_kohya_key(tmp_path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"network_dim": "lots"}))
    with pytest.raises(PresetError, match=r"bad\.json: kohya key 'network_dim' = 'lots'"):
        import_kohya_json(path)


def test_not_json(tmp_path) -> None:
    path = tmp_path / "x.json"
    path.write_text("{nope")
    with pytest.raises(PresetError, match="not a kohya_ss JSON config"):
        import_kohya_json(path)


def test_optimizer_args_parsing() -> None:
    assert parse_optimizer_args("decouple=True d_coef=2 use_bias_correction=false") == {
        "decouple": True, "d_coef": 2, "use_bias_correction": False}
