"""Wizard test fixtures: a demo dataset at a fixed path (snapshots must not show random tmp paths)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from loratui.core.demo import make_demo_dataset
from loratui.core.demo_config import demo_config
from loratui.core.presets import save_preset

os.environ["LORATUI_PLAIN_IMAGES"] = "1"
FIXED = Path("/tmp/loratui-test-demo")


@pytest.fixture
def demo_dir() -> Path:
    """A fresh demo dataset and preset at a fixed location (the model folder is only named, not built)."""
    shutil.rmtree(FIXED, ignore_errors=True)
    make_demo_dataset(FIXED / "dataset")
    save_preset(demo_config(FIXED), FIXED / "demo.yaml")
    return FIXED


async def wait_until(pilot, condition, tries: int = 200) -> None:
    """Let the app run until ``condition()`` holds (workers and timers included); no fixed sleeps."""
    for _ in range(tries):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError("condition not reached")
