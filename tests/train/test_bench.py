"""`loratui bench` on the CPU: the tiny architecture, two batch sizes, every field of the JSON."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch

from loratui.cli import main
from loratui.commands.bench import print_table
from loratui.core import bench_store

ROW_FIELDS = {"batch", "it_per_s", "images_per_s", "peak_vram_gib", "reserved_vram_gib", "nvml_used_gib",
              "estimated_vram_gib", "estimate_error_pct", "mfu_pct", "bare_it_per_s", "ratio", "oom"}
TOP_FIELDS = {"gpu", "device", "family", "resolution", "model", "weights", "settings", "warmup_steps", "timed_steps",
              "date", "torch", "flops_per_image", "bf16_peak_tflops", "rows", "largest_batch", "fastest", "notes",
              "stored", "resident"}


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory) -> tuple[int, dict, str, object]:
    """One bench run shared by the tests below (16 tiny steps; capsys is per test, so output is captured here)."""
    home = tmp_path_factory.mktemp("home")
    threads = torch.get_num_threads()
    # one thread: on a shared 2-core machine, OpenMP threads spin-waiting for each other make steps ~7× slower
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("LORATUI_HOME", str(home))
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(["bench", "--family", "tiny", "--steps", "3", "--warmup", "1", "--batch", "1,2",
                             "--json"])
    finally:
        torch.set_num_threads(threads)
    return code, json.loads(out.getvalue()), err.getvalue(), home


def test_bench_json_has_every_field(bench_run) -> None:
    code, result, _, _ = bench_run
    assert code == 0
    assert set(result) == TOP_FIELDS
    assert [r["batch"] for r in result["rows"]] == [1, 2]
    for row in result["rows"]:
        assert set(row) == ROW_FIELDS
        assert not row["oom"]
        assert row["it_per_s"] > 0 and row["images_per_s"] == pytest.approx(row["it_per_s"] * row["batch"], rel=2e-3)
        assert row["bare_it_per_s"] > 0 and row["ratio"] == pytest.approx(row["it_per_s"] / row["bare_it_per_s"],
                                                                          rel=0.01)
        # no GPU here: the memory and MFU columns are empty rather than invented
        assert row["peak_vram_gib"] is None and row["mfu_pct"] is None
    assert result["device"] == "cpu" and result["gpu"] is None
    assert result["family"] == "tiny" and result["resolution"] == 64 and result["weights"] == "random"
    assert result["resident"] == ["text_encoders", "unet"]  # the demo settings train them (and shuffle captions)
    assert result["flops_per_image"] > 0
    assert result["largest_batch"] == 2
    assert result["fastest"]["batch"] in (1, 2)
    assert any("no GPU" in note for note in result["notes"])


def test_bench_result_is_stored_for_the_planner(bench_run) -> None:
    _, result, _, home = bench_run
    stored = home / "bench" / "cpu" / "tiny-64-no-adamw-lora4-latents-te.json"
    assert result["stored"] == str(stored)
    assert bench_store.load_results(home / "bench")[0]["rows"][1]["batch"] == 2


def test_progress_goes_to_stderr_and_the_table_reads_the_result(bench_run, capsys) -> None:
    _, result, err, _ = bench_run
    assert "ours, batch 2" in err and "bare, batch 1" in err and "4/4" in err
    print_table(result)
    out = capsys.readouterr().out
    assert "CPU: tiny 64px, random weights" in out
    assert "largest batch that fits: 2" in out
    assert "note: no GPU: no VRAM figures and no MFU" in out


def test_sdxl_conditioning_and_cached_text_encoder_outputs_bench_on_cpu(capsys, monkeypatch, tmp_path) -> None:
    """The SDXL path (two text encoders, pooled embedding, time ids) in both loops, as bench_gpu.sh runs it."""
    monkeypatch.setenv("LORATUI_HOME", str(tmp_path))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(["bench", "--family", "tiny-sdxl", "--steps", "1", "--warmup", "0", "--batch", "2", "--json",
                     "--no-save", "--set", "network.network_train_unet_only=true",
                     "--set", "advanced.cache_text_encoder_outputs=true", "--set", "dataset.shuffle_caption=false"])
    finally:
        torch.set_num_threads(threads)
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and "stored" not in result
    assert result["family"] == "tiny-sdxl" and result["settings"]["cache_text_encoder_outputs"]
    assert not result["settings"]["train_text_encoder"]
    assert result["resident"] == ["unet"]  # latents and conditioning cached: the VAE and encoders left the device
    (row,) = result["rows"]
    assert row["images_per_s"] > 0 and row["ratio"] > 0


def test_bench_of_a_config_trains_the_checkpoint_it_names_in_both_loops(capsys, monkeypatch, tmp_path,
                                                                      tiny_sd1_dir, demo_dataset) -> None:
    """`loratui bench --config FILE`: the user's own model with its real tokenizer, in ours and the bare loop."""
    from loratui.core.presets import save_preset

    from .conftest import make_config

    monkeypatch.setenv("LORATUI_HOME", str(tmp_path))
    save_preset(make_config(tiny_sd1_dir, demo_dataset), tmp_path / "run.yaml")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(["bench", "--config", str(tmp_path / "run.yaml"), "--steps", "1", "--warmup", "0", "--batch",
                     "1", "--json", "--no-save"])
    finally:
        torch.set_num_threads(threads)
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["model"] == str(tiny_sd1_dir)
    assert result["resolution"] == 64  # the run's own, not the family's native 512
    (row,) = result["rows"]
    assert row["images_per_s"] > 0 and row["bare_it_per_s"] > 0


def test_bench_without_a_config_or_family_is_a_one_line_error(capsys) -> None:
    assert main(["bench"]) == 2
    assert "give --config FILE" in capsys.readouterr().err


def test_bad_batch_list_is_a_one_line_error(capsys) -> None:
    assert main(["bench", "--family", "tiny", "--batch", "1,x"]) == 2
    assert "--batch 1,x" in capsys.readouterr().err


def test_trainer_start_event_carries_the_measured_eta(tmp_path, monkeypatch, tiny_sd1_dir, demo_dataset) -> None:
    """The monitor's first ETA, before any step is timed, comes from a matching bench result."""
    from loratui.core.run.events import RunSnapshot
    from loratui.train.loop import run

    from .conftest import Recorder, make_config

    monkeypatch.setenv("LORATUI_HOME", str(tmp_path / "home"))
    cfg = make_config(tiny_sd1_dir, demo_dataset)
    rows = [{"batch": 2, "it_per_s": 0.5, "images_per_s": 1.0, "oom": False}]
    bench_store.save_result({"gpu": None, "family": "sd1", "resolution": 64, "settings": bench_store.settings_of(cfg),
                             "rows": rows})
    events = Recorder()
    (tmp_path / "run" / "state").mkdir(parents=True)
    run(cfg, tmp_path / "run", events)
    start = events.of("start")[0]
    assert start["eta_basis"] == "measured"
    assert start["eta_s"] == pytest.approx(3 * 2 / 1.0)  # 3 steps × 2 images ÷ 1 image/s
    snap = RunSnapshot()
    snap.apply({"type": "start", **start})
    assert snap.eta_s == start["eta_s"]
