"""The monitor's trainer.log panel shows the trainer's lines while the run goes on.

It stayed empty on `loratui demo`: the detached trainer sent its events only to events.jsonl and printed
nothing, so trainer.log (its stdout) held no line for a healthy run. The trainer now writes one line per
event there (``TrainerLog``); this fake run writes the log exactly as the trainer does.
"""

from __future__ import annotations

import json
import os

from textual.widgets import RichLog

from loratui.core.run import rundir
from loratui.core.run.trainer_log import TrainerLog
from loratui.tui.app import make_app
from loratui.tui.screens.monitor import MonitorScreen

from .conftest import wait_until

START = {"total_steps": 80, "epochs": 4, "images": 10, "images_with_repeats": 40, "device": "cpu"}


def _step(s: int) -> dict:
    return {"step": s, "epoch": 1 + (s - 1) // 20, "loss": 1.2 - s / 100, "avg_loss": 1.1 - s / 200,
            "lrs": {"unet": 1e-3}, "it_per_s": 4.0, "eta_s": (80 - s) / 4}


class FakeTrainer:
    """Appends to events.jsonl and trainer.log as the trainer process does (``run_dir_training`` + TrainerLog)."""

    def __init__(self, run) -> None:
        self.run, self.now = run, 0.0
        self.log = TrainerLog(open(run / rundir.LOG, "a", encoding="utf-8"), clock=lambda: self.now)  # noqa: SIM115

    def emit(self, kind: str, **fields) -> None:
        with open(self.run / rundir.EVENTS, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"v": 1, "type": kind, "t": 100.0 + self.now, **fields}) + "\n")
        self.log(kind, fields)


def _panel(app) -> str:
    return "\n".join(strip.text for strip in app.screen.query_one("#trainer-log", RichLog).lines)


async def test_trainer_log_panel_shows_lines_during_a_run(tmp_path):
    run = tmp_path / "runs" / "20260101-000000-demo-lora"
    (run / "output").mkdir(parents=True)
    (run / rundir.CONFIG).write_text("version: 1\n")
    rundir.write_pid(run, os.getpid())  # a live process: the run reads as running, not finished
    trainer = FakeTrainer(run)
    trainer.emit("start", **START)
    trainer.emit("step", **_step(1))
    app = make_app(attach=run, plain_images=True, clock=lambda: 140.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen))
        assert rundir.run_state(run) == "running"
        await wait_until(pilot, lambda: "step 1/80" in _panel(app))
        assert "training 10 images (40 with repeats) for 4 epochs: 80 steps on cpu" in _panel(app)
        for s in range(2, 21):  # 19 more steps within 10 s: one step line for them, not 19
            trainer.now += 0.25
            trainer.emit("step", **_step(s))
        trainer.now += 10
        trainer.emit("step", **_step(21))
        trainer.emit("checkpoint", path=str(run / "output" / "demo-lora-000001.safetensors"), epoch=1, step=21,
                     avg_loss=1.0, size_bytes=120_000)
        await wait_until(pilot, lambda: "demo-lora-000001.safetensors (epoch 1, step 21)" in _panel(app))
        panel = _panel(app)
        assert "step 21/80 epoch 2: loss 0.9900 (average 0.9950), 4.00 it/s, 15s left" in panel
        assert not any(f"step {s}/80" in panel for s in range(2, 21))  # spaced out: the log is not flooded
    trainer.log.stream.close()


def test_log_tail_keeps_a_character_cut_by_the_read_boundary(tmp_path):
    from loratui.tui.screens.monitor import EventLogTail

    log = tmp_path / rundir.LOG
    tail = EventLogTail(log)
    data = "warning: caption für toy_00\n".encode()
    cut = data.index("ü".encode()) + 1  # inside the two bytes of ü, as a read that ends there sees it
    log.write_bytes(data[:cut])
    assert tail.read_new() == []
    log.write_bytes(data)
    assert tail.read_new() == ["warning: caption für toy_00"]
