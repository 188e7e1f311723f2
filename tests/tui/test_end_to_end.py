"""The whole wizard by keyboard: demo dataset → caption edit → steps → parameters → training of the tiny model
→ a checkpoint row in the monitor → quit → re-attach and see the same run."""

from __future__ import annotations

import os
import time

import pytest
from textual.widgets import DataTable, RichLog, Static, TextArea

from loratui.core.run import rundir
from loratui.tui.app import make_app
from loratui.tui.screens.monitor import MonitorScreen
from loratui.tui.widgets.step_header import StepHeader

from .conftest import wait_until


@pytest.fixture
def demo_with_model(tmp_path):
    from loratui.train.demo import prepare_demo

    config = prepare_demo(tmp_path / "demo")  # pytest's own folder: concurrent runs do not share it
    return tmp_path / "demo", config


@pytest.mark.slow
async def test_wizard_trains_the_demo_and_reattaches(demo_with_model, tmp_path):
    demo, config = demo_with_model
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    runs = tmp_path / "runs"
    app = make_app(dataset_dir=demo / "dataset", preset=config, runs_root=runs, plain_images=True)
    caption = demo / "dataset" / "4_sks toy" / "toy_00.txt"
    async with app.run_test(size=(100, 34)) as pilot:
        await wait_until(pilot, lambda: app.screen.query_one("#images", DataTable).row_count == 10)
        await pilot.press("ctrl+n")  # Captions
        editor = app.screen.query_one("#editor", TextArea)
        editor.focus()
        await pilot.press("end", *", cute")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: caption.read_text().endswith(", cute"))
        await pilot.press("ctrl+n", "ctrl+n", "ctrl+n")  # Steps, Parameters, Train
        await wait_until(pilot, lambda: app.screen.query_one(StepHeader).current == 4)
        assert not app.screen.query_one("#start").disabled
        await pilot.click("#start")
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen))
        monitor = app.screen
        deadline = time.monotonic() + 900  # generous: a loaded 2-core box is slow
        while monitor.query_one("#checkpoints", DataTable).row_count == 0:
            assert time.monotonic() < deadline, "no checkpoint within fifteen minutes"
            await pilot.pause(0.5)
        run_dir = monitor.run_dir
        # The trainer.log panel shows the real trainer's lines while it trains (it once stayed empty).
        log = monitor.query_one("#trainer-log", RichLog)
        await wait_until(pilot, lambda: "step 1/" in "".join(strip.text for strip in log.lines))
        assert "training 10 images (40 with repeats)" in "".join(strip.text for strip in log.lines)
        first = str(monitor.query_one("#checkpoints", DataTable).get_row_at(0)[0])
        assert first == "demo-lora-000001.safetensors"
        await pilot.press("q")  # quit: training goes on
    assert rundir.run_state(run_dir) in ("running", "done")

    again = make_app(attach=rundir.find_run(None, runs), runs_root=runs, plain_images=True)
    async with again.run_test(size=(100, 34)) as pilot:
        await wait_until(pilot, lambda: isinstance(again.screen, MonitorScreen))
        assert again.screen.run_dir == run_dir
        table = again.screen.query_one("#checkpoints", DataTable)
        await wait_until(pilot, lambda: table.row_count >= 1)
        assert str(table.get_row_at(0)[0]) == first
        assert run_dir.name in str(again.screen.query_one("#run-title", Static).render())
    rundir.request_stop(run_dir)
    deadline = time.monotonic() + 600
    while rundir.read_exit_status(run_dir) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert rundir.run_state(run_dir) in ("done", "stopped")
