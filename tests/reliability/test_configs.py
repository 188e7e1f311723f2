"""Class 4: a broken, hostile or oversized config is one line naming the problem, never a hang or a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from loratui.core.config import TrainingConfig
from loratui.core.kohya_import import import_kohya_dict, import_kohya_json
from loratui.core.presets import MAX_PRESET_BYTES, PresetError, load_config, parse_preset_text, save_preset

REPO = Path(__file__).resolve().parents[2]


def loratui(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "LORATUI_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "loratui", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_duplicate_keys_and_sections_name_both_lines():
    with pytest.raises(PresetError, match=r"p.yaml:3: duplicate key 'network_dim' \(also at line 2\)"):
        parse_preset_text("network:\n  network_dim: 8\n  network_dim: 32\n", "p.yaml")
    with pytest.raises(PresetError, match=r"p.yaml:4: duplicate key 'network' \(also at line 1\)"):
        parse_preset_text("network:\n  network_dim: 8\nseed: 1\nnetwork:\n  network_alpha: 4\n", "p.yaml")


def test_oversized_files_and_alias_bombs_are_refused_quickly(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * (MAX_PRESET_BYTES // 10 + 10))
    with pytest.raises(PresetError, match="far too large"):
        load_config(big)
    bomb = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for n in range(1, 9):  # 10^9 values once expanded
        bomb.append(f"{chr(97 + n)}: &{chr(97 + n)} [" + ", ".join([f"*{chr(96 + n)}"] * 10) + "]")
    text = "optimizer:\n  optimizer_args:\n" + "".join(f"    {line}\n" for line in bomb)
    with pytest.raises(PresetError, match="expands to more than"):
        parse_preset_text(text, "bomb.yaml")
    with pytest.raises(PresetError, match="nested"):
        parse_preset_text("optimizer:\n  optimizer_args:\n    x: " + "[" * 5000 + "]" * 5000 + "\n", "deep.yaml")
    with pytest.raises(PresetError, match="not a file"):
        load_config(tmp_path)


@pytest.mark.parametrize(("text", "key"), [
    ("dataset:\n  max_bucket_reso: 1000000000\n", "dataset.max_bucket_reso"),
    ("schedule:\n  seed: 99999999999999999999999\n", "schedule.seed"),
    ("dataset:\n  resolution: 100000\n", "dataset.resolution"),
    ("dataset:\n  repeats: {10_a: 0}\n", "dataset.repeats.10_a"),
    ("dataset:\n  repeats: {10_a: -3}\n", "dataset.repeats.10_a"),
    ("network:\n  network_dim: 100000\n", "network.network_dim"),
    ("schedule:\n  max_train_epochs: 10000000\n", "schedule.max_train_epochs"),
    ("schedule:\n  train_batch_size: 100000\n", "schedule.train_batch_size"),
    ("network:\n  network_dim: true\n", "network.network_dim"),
    ("network:\n  network_alpha: .inf\n", "network.network_alpha"),
    ("optimizer:\n  learning_rate: .nan\n", "optimizer.learning_rate"),
    ("dataset:\n  repeats: {10_a: true}\n", "dataset.repeats.10_a"),
])
def test_bounds_on_fields_that_size_work_and_no_booleans_for_numbers(text, key):
    with pytest.raises(PresetError, match=f"p.yaml:2: '{key}'"):
        parse_preset_text(text, "p.yaml")


@pytest.mark.parametrize(("gui", "key"), [
    ({"max_resolution": "512x768x3"}, "max_resolution"),
    ({"optimizer_args": 'betas="0.9,0.99'}, "optimizer_args"),
    ({"optimizer_args": "weight_decay"}, "optimizer_args"),
    ({"network_dim": True}, "network_dim"),
    ({"network_dim": [[[1]]]}, "network_dim"),
    ({"seed": "1e400"}, "seed"),
    ({"lr_scheduler": {"a": [1]}}, "lr_scheduler"),
])
def test_kohya_import_malformed_values_name_the_key(gui, key):
    try:
        result = import_kohya_dict(gui)
    except PresetError as exc:
        assert f"kohya key '{key}'" in str(exc) and "\n" not in str(exc)
    else:  # an unsupported value may be ignored with a note instead
        assert key in result.ignored


def test_kohya_import_of_a_folder_or_deep_nesting_is_one_line(tmp_path):
    with pytest.raises(PresetError, match="not a file"):
        import_kohya_json(tmp_path)
    deep = tmp_path / "deep.json"
    deep.write_text('{"optimizer_args": ' + "[" * 100000 + "]" * 100000 + "}")
    with pytest.raises(PresetError, match="nested too deeply"):
        import_kohya_json(deep)


def test_preset_export_to_a_missing_folder_or_onto_a_folder_is_one_line(tmp_path):
    for target, expect in [(tmp_path / "nope" / "p.yaml", "does not exist"), (tmp_path, "is a folder")]:
        out = loratui("preset", "export", "-o", str(target), home=tmp_path)
        assert out.returncode == 2 and expect in out.stderr and len(out.stderr.strip().splitlines()) == 1
    with pytest.raises(OSError):  # the wizard catches write errors as OSError
        save_preset(TrainingConfig(), tmp_path)
    assert loratui("preset", "export", "-o", str(tmp_path / "ok.yaml"), home=tmp_path).returncode == 0
    assert loratui("preset", "import", str(tmp_path / "ok.yaml"), "-o", str(tmp_path), home=tmp_path).returncode == 2


# --- property-based: random YAML never raises anything but PresetError --------------------------------------

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6),
                                                                                         inner, max_size=3),
                      max_leaves=10)
known = st.sampled_from(["dataset", "network", "schedule", "optimizer", "saving", "model", "bogus"])
field_names = st.sampled_from(["network_dim", "seed", "resolution", "repeats", "max_bucket_reso", "output_name",
                               "learning_rate", "optimizer_args", "max_train_epochs", "enable_bucket", "nope"])
documents = st.dictionaries(known, st.dictionaries(field_names, values, max_size=4) | values, max_size=4)


@settings(max_examples=300, deadline=None)
@given(documents)
def test_random_presets_load_or_fail_with_one_line(doc):
    text = yaml.safe_dump(doc, allow_unicode=True)
    try:
        cfg = parse_preset_text(text, "r.yaml")
    except PresetError as exc:
        assert str(exc).startswith("r.yaml") and "\n" not in str(exc)
    else:
        assert isinstance(cfg, TrainingConfig)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_random_text_loads_or_fails_with_one_line(text):
    try:
        parse_preset_text(text, "t.yaml")
    except PresetError as exc:
        assert str(exc).startswith("t.yaml")


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["max_resolution", "optimizer_args", "network_dim", "lr_scheduler",
                                        "optimizer", "LoRA_type", "epoch", "seed", "sample_prompts", "sdxl"]),
                       values, max_size=5))
def test_random_kohya_configs_import_or_fail_with_one_line(gui):
    try:
        import_kohya_dict(json.loads(json.dumps(gui)))
    except PresetError as exc:
        assert str(exc).startswith("kohya key") and "\n" not in str(exc)


@pytest.mark.parametrize("text", ["?", "1: 2", "true: x", "null: 3"])
def test_keys_that_are_not_names_are_one_line_errors(text):
    """YAML keys can be null, numbers or booleans ("?" is a null key); each is an unknown key, said once."""
    with pytest.raises(PresetError, match=r"^p\.yaml(:\d+)?: unknown key '.*'; ") as caught:
        parse_preset_text(text, "p.yaml")
    assert "\n" not in str(caught.value)
