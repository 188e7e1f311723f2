"""The trainer's log lines (what the monitor's trainer.log panel shows)."""

from __future__ import annotations

import io

from loratui.core.run.trainer_log import TrainerLog


def _log(every: float = 10.0):
    now = [0.0]
    out = io.StringIO()
    return TrainerLog(out, clock=lambda: now[0], every=every), out, now


def test_every_noteworthy_event_is_one_whole_line():
    log, out, _ = _log()
    log("start", {"total_steps": 4, "epochs": 1, "images": 2, "images_with_repeats": 4, "device": "cuda:0"})
    log("warning", {"message": "bucket 64x64 has one image"})
    log("checkpoint", {"path": "/o/x.safetensors", "epoch": 1, "step": 4})
    log("error", {"message": "disk full", "hint": "free space"})
    log("done", {"state": "stopped", "final_path": "/o/x.safetensors"})
    log("gpu_stats", {"x": 1})  # not a line
    assert out.getvalue().splitlines() == [
        "training 2 images (4 with repeats) for 1 epochs: 4 steps on cuda:0",
        "warning: bucket 64x64 has one image",
        "saved /o/x.safetensors (epoch 1, step 4)",
        "error: disk full (hint: free space)",
        "stopped: /o/x.safetensors",
    ]
    assert "\r" not in out.getvalue()


def test_step_lines_are_spaced_out_but_the_first_and_last_are_kept():
    log, out, now = _log(every=10.0)
    log("start", {"total_steps": 100})
    for step in range(1, 101):
        now[0] = step * 0.5  # 2 it/s: one line per 20 steps
        log("step", {"step": step, "epoch": 1, "loss": 0.5, "avg_loss": 0.5, "it_per_s": 2.0, "eta_s": 1.0})
    steps = [line.split()[1] for line in out.getvalue().splitlines() if line.startswith("step ")]
    assert steps == ["1/100", "21/100", "41/100", "61/100", "81/100", "100/100"]


def test_the_start_line_says_what_waits_on_the_cpu_only_on_a_gpu():
    start = {"total_steps": 4, "epochs": 1, "images": 2, "images_with_repeats": 4,
             "offloaded": ["text_encoders", "vae"]}
    on_gpu, on_cpu = _log()[0], _log()[0]
    assert on_gpu.line("start", {**start, "device": "cuda:0"}) == (
        "training 2 images (4 with repeats) for 1 epochs: 4 steps on cuda:0 "
        "(text encoders and VAE on the CPU once cached, as sd-scripts does)")
    assert on_cpu.line("start", {**start, "device": "cpu"}).endswith("4 steps on cpu")
