"""The foundation's commands, run as a user runs them (a real subprocess of the console entry)."""

import json
import subprocess
import sys

import pytest


def loratui(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loratui", *args], capture_output=True, text=True, cwd=cwd)


def test_plan_prints_seed_worked_example() -> None:
    out = loratui("plan", "--images", "10", "--repeats", "20", "--epochs", "10", "--batch", "2")
    assert out.returncode == 0, out.stderr
    assert "total steps:       1000" in out.stdout
    assert "steps per epoch:   100" in out.stdout
    assert "checkpoints:       10" in out.stdout


def test_plan_with_regularisation_doubles() -> None:
    out = loratui("plan", "--images", "10", "--repeats", "20", "--epochs", "10", "--batch", "2",
                  "--reg-images", "200")
    assert "total steps:       2000" in out.stdout


def test_plan_with_vram_suggests_batch() -> None:
    out = loratui("plan", "--preset", "sd15-character", "--images", "20", "--repeats", "10", "--vram", "24")
    assert out.returncode == 0, out.stderr
    assert "suggested batch:   batch" in out.stdout
    assert "estimated VRAM:" in out.stdout


def test_plan_without_images_is_one_line_error() -> None:
    out = loratui("plan")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "--images" in out.stderr


def test_gpu_command_runs_without_torch() -> None:
    out = loratui("gpu")
    assert out.returncode == 0
    assert "GPU" in out.stdout


def test_preset_validate_shipped_and_typo(tmp_path) -> None:
    from loratui.core.presets import list_presets

    paths = [str(p.path) for p in list_presets()]
    out = loratui("preset", "validate", *paths)
    assert out.returncode == 0, out.stdout
    assert out.stdout.count("ok:") == len(paths)
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nschedule:\n  max_train_epoch: 3\n")
    out = loratui("preset", "validate", str(bad))
    assert out.returncode == 1
    assert "bad.yaml:3: unknown key 'schedule.max_train_epoch'; did you mean 'schedule.max_train_epochs'?" in out.stdout


def test_preset_export_import_roundtrip(tmp_path) -> None:
    out = loratui("preset", "export", "--from", "sd15-anime", "--set", "network.network_dim=48",
                  "-o", str(tmp_path / "mine.yaml"))
    assert out.returncode == 0, out.stderr
    shown = loratui("preset", "show", str(tmp_path / "mine.yaml"), "--changed")
    assert "network_dim = 48" in shown.stdout and "clip_skip = 2" in shown.stdout
    again = loratui("preset", "import", str(tmp_path / "mine.yaml"))
    assert "network_dim: 48" in again.stdout


def test_preset_import_kohya_json_reports_ignored_keys(tmp_path) -> None:
    src = tmp_path / "gui.json"
    src.write_text(json.dumps({"LoRA_type": "Standard", "epoch": "4", "max_resolution": "512,512",
                               "use_wandb": False, "network_dim": "32"}))
    out = loratui("preset", "import", str(src), "-o", str(tmp_path / "p.yaml"))
    assert out.returncode == 0, out.stderr
    assert "ignored 1 kohya_ss key(s) with no loratui setting: use_wandb" in out.stderr
    text = (tmp_path / "p.yaml").read_text()
    assert "max_train_epochs: 4" in text and "network_dim: 32" in text


@pytest.mark.parametrize("args", [["preset", "show", "nope-preset"], ["preset", "import", "/nonexistent.json"]])
def test_missing_preset_is_one_clear_line(args) -> None:
    out = loratui(*args)
    assert out.returncode == 2
    assert out.stderr.startswith("loratui: error:") and out.stderr.count("\n") == 1
