import pytest

from loratui.core.config import TrainingConfig, check_config
from loratui.core.presets import (
    PresetError,
    apply_overrides,
    diff_from_defaults,
    dump_preset,
    list_presets,
    load_config,
    parse_preset_text,
    save_preset,
)


def test_shipped_presets_exist_and_validate() -> None:
    presets = {p.name: p for p in list_presets()}
    assert {"sd15-character", "sd15-style", "sd15-anime", "sdxl-character", "sd15-lowvram-8gb"} <= set(presets)
    for info in presets.values():
        cfg = load_config(info.path)
        assert "VRAM" in info.description, f"{info.name} must say the VRAM it needs"
        errors = [i for i in check_config(cfg) if i.severity == "error"
                  and i.path not in ("model.pretrained_model_name_or_path", "dataset.train_data_dir")]
        assert errors == [], info.name


def test_anime_preset_uses_clip_skip_2() -> None:
    presets = {p.name: p for p in list_presets()}
    assert load_config(presets["sd15-anime"].path).advanced.clip_skip == 2


def test_export_then_import_gives_identical_config(tmp_path) -> None:
    cfg = apply_overrides(TrainingConfig(), [
        "network.network_type=locon", "network.conv_dim=8", "optimizer.optimizer_args={weight_decay: 0.1}",
        "sampling.sample_prompts=['a photo of sks --n blurry --w 512 --h 512 --d 1 --l 7 --s 20']",
        "dataset.repeats={10_sks: 4}",
    ])
    path = save_preset(cfg, tmp_path / "p.yaml")
    assert load_config(path) == cfg


def test_export_is_sparse_with_version() -> None:
    text = dump_preset(TrainingConfig().with_value("network.network_dim", 64))
    assert text.splitlines() == ["version: 1", "network:", "  network_dim: 64"]


def test_typo_key_reports_line_and_suggestion() -> None:
    text = "version: 1\nnetwork:\n  network_dim: 32\n  netwrok_alpha: 16\n"
    with pytest.raises(PresetError, match=r"x.yaml:4: unknown key 'network.netwrok_alpha'; did you mean "
                                          r"'network.network_alpha'\?"):
        parse_preset_text(text, "x.yaml")


def test_key_in_wrong_section_suggests_right_one() -> None:
    with pytest.raises(PresetError, match=r":3: .*did you mean 'network.network_dim'"):
        parse_preset_text("version: 1\noptimizer:\n  network_dim: 8\n", "p.yaml")


def test_unknown_section_suggests() -> None:
    with pytest.raises(PresetError, match=r"p.yaml:2: unknown key 'netwrk'; did you mean 'network'"):
        parse_preset_text("version: 1\nnetwrk:\n  network_dim: 8\n", "p.yaml")


def test_wrong_type_names_key_and_line() -> None:
    with pytest.raises(PresetError, match=r"p.yaml:4: 'schedule.train_batch_size' = 'two'"):
        parse_preset_text("version: 1\nschedule:\n  seed: 3\n  train_batch_size: two\n", "p.yaml")


def test_invalid_yaml_and_version() -> None:
    with pytest.raises(PresetError, match="not valid YAML"):
        parse_preset_text("network: [\n", "p.yaml")
    with pytest.raises(PresetError, match="version 2 is not supported"):
        parse_preset_text("version: 2\n", "p.yaml")


def test_yaml_python_tags_are_refused() -> None:
    with pytest.raises(PresetError):
        parse_preset_text("network: !!python/object/apply:os.system ['echo hi']\n", "p.yaml")


def test_missing_file_is_one_clear_line(tmp_path) -> None:
    with pytest.raises(PresetError, match="no such file"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_validate_values() -> None:
    with pytest.raises(PresetError, match=r"unknown key 'network\.rank'"):
        apply_overrides(TrainingConfig(), ["network.rank=4"])
    with pytest.raises(PresetError, match="network_dim"):
        apply_overrides(TrainingConfig(), ["network.network_dim=-1"])


def test_diff_from_defaults() -> None:
    cfg = TrainingConfig().with_value("advanced.clip_skip", 2)
    assert diff_from_defaults(cfg) == [("advanced.clip_skip", 1, 2)]
