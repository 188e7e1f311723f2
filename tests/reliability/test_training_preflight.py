"""Class 3 (no training): a run that cannot succeed is refused before it starts; no file is ever overwritten."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loratui.core.config import TrainingConfig
from loratui.core.presets import save_preset
from loratui.core.run import rundir
from loratui.core.run.events import read_snapshot
from loratui.core.run.launch import prepare_run, unused_output_name
from loratui.train.preflight import PreflightError, check_before_training, check_output_name

from .test_caption_safety import unwritable

REPO = Path(__file__).resolve().parents[2]


def small_dataset(root: Path, folder: str = "4_toy", count: int = 2) -> Path:
    (root / folder).mkdir(parents=True)
    for i in range(count):
        Image.new("RGB", (64, 64), (i * 40, 90, 160)).save(root / folder / f"{i}.png")
    return root


def config(dataset: Path | str, **saving) -> TrainingConfig:
    cfg = TrainingConfig().with_value("dataset.train_data_dir", str(dataset))
    for key, value in saving.items():
        cfg = cfg.with_value(f"saving.{key}", value)
    return cfg


def train_cli(cfg: TrainingConfig, home: Path) -> subprocess.CompletedProcess:
    path = save_preset(cfg, home / "run.yaml")
    env = {**os.environ, "PYTHONPATH": str(REPO), "LORATUI_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "loratui", "train", str(path), "--detach"], capture_output=True,
                          text=True, env=env, timeout=120)


@pytest.mark.parametrize(("setup", "expect"), [
    ("under_file", "is a file, not a folder"),
    ("no_dataset", "set dataset.train_data_dir"),
    ("zero_repeats", "0 repeats would train nothing"),
    ("dotdot", "is not a usable file name"),
    ("huge_disk", "MiB free"),
])
def test_train_refuses_before_starting_and_names_the_fix(tmp_path, setup, expect):
    data = small_dataset(tmp_path / "data")
    cfg = config(data)
    if setup == "under_file":
        (tmp_path / "afile").write_text("x")
        cfg = config(data, output_dir=str(tmp_path / "afile" / "out"))
    elif setup == "no_dataset":
        cfg = config("")
    elif setup == "zero_repeats":
        (data / "4_toy").rename(data / "0_toy")
    elif setup == "dotdot":
        cfg = config(data, output_name="..")
    else:  # an SDXL rank-1024 LoRA saved every epoch for 100,000 epochs fits on no disk
        cfg = cfg.with_value("model.model_family", "sdxl").with_value("network.network_dim", 1024)
        cfg = cfg.with_value("schedule.max_train_epochs", 100_000)
    out = train_cli(cfg, tmp_path)
    assert out.returncode == 2 and expect in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / "runs").exists() or rundir.list_runs(tmp_path / "runs") == []


@pytest.mark.parametrize("name", ["a\x00b", ".", " ", "a/b", "a\\b", "é" * 115])
def test_impossible_output_names_are_refused(name):
    with pytest.raises(PreflightError, match="output_name"):
        check_output_name(name)


def test_read_only_output_dir_is_refused(tmp_path):
    data = small_dataset(tmp_path / "data")
    out = tmp_path / "out"
    out.mkdir()
    with unwritable(out), pytest.raises(PreflightError, match="is not writable"):
        check_before_training(config(data), out)


def test_one_suffix_for_every_file_decided_once(tmp_path):
    data = small_dataset(tmp_path / "data")
    shared = tmp_path / "loras"
    shared.mkdir()
    earlier = {"t.safetensors": b"final", "t-000001.safetensors": b"epoch1", "t_v2-step00000003.safetensors": b"s"}
    for name, raw in earlier.items():
        (shared / name).write_bytes(raw)
    assert unused_output_name(shared, "t") == ("t_v3", f"{shared} already holds files named t; this run saves "
                                                       "every file as t_v3 instead (nothing is overwritten)")
    assert unused_output_name(shared, "other") == ("other", None)
    run = prepare_run(config(data, output_dir=str(shared), output_name="t"), tmp_path / "runs")
    assert "output_name: t_v3" in (run / rundir.CONFIG).read_text()  # frozen: a resume keeps the same names
    assert read_snapshot(run / rundir.EVENTS).warnings == [unused_output_name(shared, "t")[1]]
    assert {n: (shared / n).read_bytes() for n in earlier} == earlier


def test_images_check_reports_as_errors_are_left_out_with_one_warning_each(tmp_path):
    from loratui.train.data import load_dataset

    data = small_dataset(tmp_path / "data", count=3)
    folder = data / "4_toy"
    good = (folder / "0.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "garbage.png").write_bytes(b"not an image at all")
    Image.new("1", (10_000, 10_000)).save(folder / "bomb.png")  # 100 megapixels: a decompression bomb
    info = load_dataset(config(data).with_value("dataset.resolution", 64))
    assert sorted(i.path.name for i in info.items) == ["0.png", "1.png", "2.png"]
    for bad in ("truncated.png", "garbage.png", "bomb.png"):
        assert sum(str(folder / bad) in w and "left out of training" in w for w in info.warnings) == 1


def test_sixteen_bit_png_is_scaled_not_white(tmp_path):
    from loratui.train.data import load_image

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode in ("I;16", "I")
    pixels = load_image(tmp_path / "deep.png", (64, 64)).numpy()
    expected = np.round(ramp / 257.0) / 127.5 - 1.0
    np.testing.assert_allclose(pixels[0], expected, atol=1e-6)
    assert pixels.min() == -1.0 and pixels.max() == 1.0 and abs(pixels.mean()) < 0.01
