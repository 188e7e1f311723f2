"""The monitor at 80×24 shows the newest sample images themselves (half-blocks, as inside tmux), and offers
"Compare checkpoints" in its footer once the run has finished — not while it trains."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image
from textual.widgets._footer import FooterKey

from loratui.core.run import rundir
from loratui.tui.app import make_app
from loratui.tui.screens.compare import CompareScreen
from loratui.tui.screens.monitor import MonitorScreen
from loratui.tui.widgets.image_preview import ImagePreview
from loratui.tui.widgets.samples_panel import SamplesPanel

from .conftest import wait_until
from .test_wizard import _text

SIZE = (80, 24)
# (step, prompt index, prompt, colour): the round at step 40 has two prompts; the older round is not shown
SAMPLES = [(20, 0, "sks toy, red circle", (0, 255, 0)), (40, 0, "sks toy, red circle", (255, 0, 0)),
           (40, 1, "sks toy on a table", (0, 0, 255))]


def _training_run(root: Path) -> Path:
    """A run whose trainer has started and sampled twice, with no exit status yet."""
    run = root / "20260101-000000-demo-lora"
    (run / "samples").mkdir(parents=True)
    (run / rundir.CONFIG).write_text("version: 1\n")
    events = [{"v": 1, "type": "start", "t": 100.0, "total_steps": 80, "epochs": 4, "device": "cpu"}]
    for step, index, prompt, colour in SAMPLES:
        path = run / "samples" / f"demo-lora_e{step // 20:06d}_{index:02d}.png"
        Image.new("RGB", (64, 64), colour).save(path)
        events.append({"v": 1, "type": "sample", "t": 100.0 + step, "path": str(path), "prompt": prompt,
                       "epoch": step // 20, "step": step})
    (run / rundir.EVENTS).write_text("".join(json.dumps(e) + "\n" for e in events))
    return run


def _footer(app) -> list[str]:
    return [key.description for key in app.screen.query(FooterKey)]


async def test_samples_panel_shows_the_newest_images_and_compare_comes_when_finished(tmp_path):
    run = _training_run(tmp_path)
    app = make_app(attach=run, plain_images=True, clock=lambda: 140.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen))
        panel = app.screen.query_one(SamplesPanel)
        await wait_until(pilot, lambda: len(panel.shown) == 2)
        def shown() -> list[str]:
            return [p.path.name for p in panel.query(ImagePreview) if p.display and p.path]

        assert shown() == ["demo-lora_e000002_00.png"]  # 16 columns at 80×24: room for one image
        preview = next(p for p in panel.query(ImagePreview) if p.display)
        assert not preview.query("#preview-note") and preview.children  # an image widget, not a note
        assert preview.region.width > 2 and preview.region.height > 2 and preview.region.bottom <= SIZE[1] - 1
        assert "epoch 2 · step 40: sks toy, red circle | sks toy on a table" in _text(app, "#sample-caption")
        screen = app.export_screenshot()
        assert "#ff0000" in screen  # the newest round's first image is on screen
        assert "#00ff00" not in screen  # the older round's image is not

        await pilot.resize_terminal(120, 40)  # wider: both prompts' images side by side
        await wait_until(pilot, lambda: shown() == ["demo-lora_e000002_00.png", "demo-lora_e000002_01.png"])
        await wait_until(pilot, lambda: "#0000ff" in app.export_screenshot())
        await pilot.resize_terminal(*SIZE)
        await wait_until(pilot, lambda: len(shown()) == 1)

        assert "Compare checkpoints" not in _footer(app)  # still training: nothing to compare yet
        await pilot.press("c")
        await pilot.pause()
        assert isinstance(app.screen, MonitorScreen)

        rundir.write_exit_status(run, 0, "done", "finished")
        await wait_until(pilot, lambda: "Compare checkpoints" in _footer(app))
        key = next(k for k in app.screen.query(FooterKey) if k.description == "Compare checkpoints")
        assert key.region.right <= SIZE[0] and key.region.width >= len(key.description) + 2  # readable at 80
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen))
