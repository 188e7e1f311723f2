import pytest
from pydantic import ValidationError

from loratui.core.config import (
    TrainingConfig,
    check_config,
    field_spec,
    issues_from_validation_error,
    iter_fields,
)


def _ready(**changes: object) -> TrainingConfig:
    cfg = TrainingConfig()
    cfg = cfg.with_value("model.pretrained_model_name_or_path", "/models/sd15")
    cfg = cfg.with_value("dataset.train_data_dir", "/data/train")
    for path, value in changes.items():
        cfg = cfg.with_value(path.replace("__", "."), value)
    return cfg


def _paths(cfg: TrainingConfig, **kw: object) -> set[str]:
    return {i.path for i in check_config(cfg, **kw)}


def test_every_field_has_help_text() -> None:
    specs = list(iter_fields())
    assert len(specs) > 60
    missing = [s.path for s in specs if len(s.help) < 10]
    assert missing == []


def test_default_config_with_model_and_data_has_no_issues() -> None:
    assert check_config(_ready()) == []


def test_missing_model_and_dataset_are_errors() -> None:
    issues = check_config(TrainingConfig())
    assert {(i.severity, i.path) for i in issues} == {
        ("error", "model.pretrained_model_name_or_path"),
        ("error", "dataset.train_data_dir"),
    }


def test_unknown_key_is_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        TrainingConfig.model_validate({"network": {"network_dimm": 8}})
    issue = issues_from_validation_error(info.value)[0]
    assert issue.path == "network.network_dimm"
    assert "unknown setting" in issue.why


def test_bad_value_names_path_value_and_default() -> None:
    with pytest.raises(ValidationError) as info:
        TrainingConfig().with_value("network.network_dim", 0)
    issue = issues_from_validation_error(info.value)[0]
    assert (issue.path, issue.value) == ("network.network_dim", 0)
    assert "default is 16" in issue.fix


def test_literal_error_lists_allowed_values() -> None:
    with pytest.raises(ValidationError) as info:
        TrainingConfig().with_value("schedule.lr_scheduler", "cosine_restarts")
    issue = issues_from_validation_error(info.value)[0]
    assert "cosine_with_restarts" in issue.fix


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"network__network_alpha": 64.0}, "network.network_alpha"),
        ({"schedule__lr_scheduler": "constant", "schedule__lr_warmup_pct": 10.0}, "schedule.lr_warmup_pct"),
        ({"dataset__resolution": 500}, "dataset.resolution"),
        ({"model__model_family": "sdxl", "dataset__resolution": 512}, "dataset.resolution"),
        ({"optimizer__optimizer_type": "Prodigy"}, "optimizer.learning_rate"),
        ({"sampling__sample_every_n_epochs": 1}, "sampling.sample_prompts"),
        ({"advanced__cache_text_encoder_outputs": True}, "advanced.cache_text_encoder_outputs"),
        ({"network__conv_dim": 8}, "network.conv_dim"),
    ],
)
def test_cross_field_warnings(changes: dict, path: str) -> None:
    assert path in _paths(_ready(**changes))


def test_eight_bit_optimizer_without_cuda_warns_only_when_cuda_is_known_missing() -> None:
    cfg = _ready(optimizer__optimizer_type="AdamW8bit")
    assert "optimizer.optimizer_type" in _paths(cfg, cuda_available=False)
    assert "optimizer.optimizer_type" not in _paths(cfg, cuda_available=True)


def test_sdxl_bucket_steps_of_32_are_fine() -> None:
    cfg = _ready(model__model_family="sdxl", dataset__resolution=1024, dataset__bucket_reso_steps=32)
    assert "dataset.bucket_reso_steps" not in _paths(cfg)
    assert "dataset.bucket_reso_steps" in _paths(_ready(dataset__bucket_reso_steps=32))


def test_output_name_must_be_bare() -> None:
    with pytest.raises(ValidationError):
        TrainingConfig().with_value("saving.output_name", "out/lora.safetensors")


def test_lr_properties_fall_back_to_base_rate() -> None:
    cfg = _ready(optimizer__learning_rate=2e-4)
    assert cfg.unet_lr == 2e-4 and cfg.text_encoder_lr == 2e-4
    cfg = cfg.with_value("optimizer.text_encoder_lr", 0.0)
    assert cfg.text_encoder_lr == 0.0 and not cfg.trains_text_encoder


def test_field_spec_has_choices_for_literals() -> None:
    assert "lokr" in field_spec("network.network_type").choices
