"""How each screen looks at 80×24 and 120×40 (pytest-textual-snapshot; update with --snapshot-update)."""

from __future__ import annotations

import pytest

from loratui.tui.app import make_app
from loratui.tui.steps.captions import CaptionsStep
from loratui.tui.widgets.image_preview import ImagePreview

from .conftest import wait_until
from .test_wizard import _fake_run

SIZES = [(80, 24), (120, 40)]
STEP_KEYS = {"dataset": [], "captions": ["ctrl+n"], "steps": ["ctrl+n"] * 2, "parameters": ["ctrl+n"] * 3,
             "train": ["ctrl+n"] * 4}


def _steady(pilot_keys: list[str]):
    async def run_before(pilot) -> None:
        await pilot.pause()
        await wait_until(pilot, lambda: pilot.app.screen.query_one("#images").row_count == 10)
        for key in pilot_keys:
            await pilot.press(key)
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        for widget in pilot.app.screen.query("Input, TextArea"):
            widget.cursor_blink = False  # a blinking cursor makes screenshots flaky
        # The image preview is drawn once the cursor settles: wait for it to show the selected image.
        step = pilot.app.screen.query_one(CaptionsStep)
        await wait_until(pilot, lambda: step.query_one(ImagePreview).path == (step.current and step.current.image))
        await pilot.pause()

    return run_before


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("step", list(STEP_KEYS))
def test_wizard_step_looks_right(snap_compare, snapshot_demo_dir, step, size):
    demo_dir = snapshot_demo_dir
    app = make_app(dataset_dir=demo_dir / "dataset", preset=demo_dir / "demo.yaml", plain_images=True)
    assert snap_compare(app, terminal_size=size, run_before=_steady(STEP_KEYS[step]))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_monitor_looks_right(snap_compare, tmp_path_factory, size):
    from pathlib import Path

    root = Path("/tmp/loratui-test-runs")
    import shutil

    shutil.rmtree(root, ignore_errors=True)
    run = _fake_run(root)
    app = make_app(attach=run, plain_images=True, clock=lambda: 140.0)

    async def run_before(pilot) -> None:
        await wait_until(pilot, lambda: pilot.app.screen.query("#checkpoints")
                         and pilot.app.screen.query_one("#checkpoints").row_count == 2)

    assert snap_compare(app, terminal_size=size, run_before=run_before)
