"""Stored bench results and the planner's measured path (`loratui plan` after `loratui bench`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loratui.cli import main
from loratui.core import bench_store
from loratui.core.config import TrainingConfig
from loratui.core.speed import time_estimate
from loratui.core.vram import fit_from_bench, suggest_batch

H100 = "NVIDIA H100 80GB HBM3"


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LORATUI_HOME", str(tmp_path))
    return tmp_path


def _result(cfg: TrainingConfig, gpu: str | None = H100, rows: list[dict] | None = None) -> dict:
    """A result as `loratui bench --json` prints it (only the fields the store and planner read)."""
    rows = rows if rows is not None else [
        {"batch": 1, "it_per_s": 10.0, "images_per_s": 10.0, "peak_vram_gib": 4.0, "estimated_vram_gib": 4.4,
         "oom": False},
        {"batch": 2, "it_per_s": 9.0, "images_per_s": 18.0, "peak_vram_gib": 5.0, "estimated_vram_gib": 5.5,
         "oom": False},
        {"batch": 4, "it_per_s": 5.0, "images_per_s": 20.0, "peak_vram_gib": 7.0, "estimated_vram_gib": 7.0,
         "oom": False},
        {"batch": 8, "oom": True},
    ]
    return {"gpu": gpu, "family": cfg.model.model_family, "resolution": cfg.dataset.resolution,
            "settings": bench_store.settings_of(cfg), "rows": rows, "date": "2026-11-30T22:00:00+00:00"}


def test_results_live_under_loratui_home_per_gpu_family_resolution_and_settings(home) -> None:
    cfg = TrainingConfig()
    path = bench_store.save_result(_result(cfg))
    assert path == home / "bench" / "nvidia-h100-80gb-hbm3" / "sd1-512-bf16-adamw-lora16-latents-te.json"
    assert json.loads(path.read_text())["schema"] == bench_store.SCHEMA_VERSION
    assert bench_store.find_result(cfg, H100)["rows"][0]["it_per_s"] == 10.0
    # another GPU, resolution or setting that changes speed is another result
    assert bench_store.find_result(cfg, "NVIDIA A100-SXM4-80GB") is None
    assert bench_store.find_result(cfg.with_value("dataset.resolution", 768), H100) is None
    assert bench_store.find_result(cfg.with_value("advanced.gradient_checkpointing", True), H100) is None
    assert bench_store.find_result(cfg.with_value("optimizer.learning_rate", 3e-4), H100) is not None


def test_a_broken_result_file_is_ignored(home) -> None:
    cfg = TrainingConfig()
    path = bench_store.save_result(_result(cfg))
    path.write_text("{not json")
    assert bench_store.find_result(cfg, H100) is None
    assert bench_store.load_results() == []


def test_figures_between_measured_batches_are_interpolated() -> None:
    result = _result(TrainingConfig())
    exact = bench_store.images_per_s_at(result, 2)
    assert exact.value == 18.0 and exact.exact
    between = bench_store.images_per_s_at(result, 3)
    assert 18.0 < between.value < 20.0 and not between.exact
    assert bench_store.images_per_s_at(result, 16).value == 20.0  # flat past the largest that fitted
    assert bench_store.peak_vram_at(result, 3).value == pytest.approx(6.0)
    assert bench_store.first_oom_batch(result) == 8


def test_time_is_measured_when_a_result_matches_and_estimated_otherwise() -> None:
    cfg = TrainingConfig().with_value("schedule.train_batch_size", 2)
    assert not time_estimate(1000, cfg, H100).measured
    bench_store.save_result(_result(cfg))
    got = time_estimate(1000, cfg, H100)
    assert got.measured and got.label == "measured"
    assert got.seconds == pytest.approx(1000 * 2 / 18.0)


def test_batch_suggestion_uses_measured_speed_and_stops_below_the_measured_oom() -> None:
    cfg = TrainingConfig()
    result = _result(cfg)
    got = suggest_batch(cfg, 80.0, gpu_name=H100, result=result)
    # batch 2 gives 18 of the best 20 images/s: 90%, so the smaller batch wins
    assert got.batch == 2
    assert "90% of the top speed (measured)" in got.message
    assert "fewer steps" in got.message
    assert "up to 7 fits" in got.message  # batch 8 ran out of memory in the bench


def test_vram_fit_from_bench_results() -> None:
    cfg = TrainingConfig()
    fits = fit_from_bench([_result(cfg)])
    assert len(fits) == 1
    fit = fits[0]
    assert (fit.family, fit.resolution, fit.gradient_checkpointing, fit.points) == ("sd1", 512, False, 3)
    assert fit.per_image_gib == pytest.approx(1.0, abs=0.05)  # 4, 5, 7 GiB at batch 1, 2, 4
    assert fit.base_gib == pytest.approx(3.0, abs=0.1)
    assert fit.estimator_error_pct == 10.0


def test_plan_prints_measured_time_vram_and_cost(capsys) -> None:
    cfg = TrainingConfig().with_value("schedule.train_batch_size", 2)
    bench_store.save_result(_result(cfg))
    code = main(["plan", "--images", "10", "--repeats", "20", "--epochs", "10", "--batch", "2", "--gpu", H100,
                 "--vram", "80", "--price", "2.50"])
    out = capsys.readouterr().out
    assert code == 0
    assert "measured VRAM:     5.0 GiB at batch 2" in out
    # 1000 steps × 2 images ÷ 18 images/s = 111 s
    assert f"time (measured):   ~1m 51s on {H100} (loratui bench, at this batch)" in out
    assert f"cost (measured):   ~{1000 * 2 / 18 / 3600 * 2.5:.2f} at 2.5 per GPU-hour × 1 GPU" in out


def test_plan_without_a_bench_says_estimated(capsys) -> None:
    code = main(["plan", "--images", "10", "--repeats", "20", "--epochs", "10", "--vram", "24", "--price", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "estimated VRAM:" in out and "time (estimated):" in out and "cost (estimated):" in out
    assert "run `loratui bench` to measure" in out


def test_negative_price_is_a_one_line_error(capsys) -> None:
    assert main(["plan", "--images", "10", "--vram", "24", "--price", "-1"]) == 2
    assert "--price must be >= 0" in capsys.readouterr().err
