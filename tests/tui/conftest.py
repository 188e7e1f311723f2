"""Wizard test fixtures: a demo dataset in pytest's temporary folder (a fixed path only for snapshots, which
must not show random tmp paths)."""

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


@pytest.fixture(autouse=True)
def _own_home(tmp_path, monkeypatch, request):
    """Runs and measured speeds go to the test's own folder, never to ~/.loratui.

    The wizard turns a bug into a dialog and keeps going, so a test could pass over one: any crash report
    written during a test fails it, with the traceback, unless the test asks for ``allow_crash_reports``."""
    monkeypatch.setenv("LORATUI_HOME", str(tmp_path / "home"))
    yield
    if "allow_crash_reports" not in request.fixturenames:
        reports = sorted((tmp_path / "home" / "crash-reports").glob("*.txt"))
        assert not reports, f"the app hit a bug:\n{reports[0].read_text()}"


@pytest.fixture
def allow_crash_reports() -> None:
    """For tests that plant a bug on purpose (see test_crash_dialog.py)."""


def _make_demo(root: Path) -> Path:
    make_demo_dataset(root / "dataset")
    save_preset(demo_config(root), root / "demo.yaml")
    return root


@pytest.fixture
def demo_dir(tmp_path) -> Path:
    """A fresh demo dataset and preset (the model folder is only named, not built)."""
    return _make_demo(tmp_path / "demo")


@pytest.fixture
def snapshot_demo_dir() -> Path:
    """The demo at a fixed location: screenshots show the path."""
    shutil.rmtree(FIXED, ignore_errors=True)
    return _make_demo(FIXED)


async def wait_until(pilot, condition, tries: int = 600) -> None:
    """Let the app run until ``condition()`` holds (workers and timers included); no fixed sleeps."""
    for _ in range(tries):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError("condition not reached")


async def edit_first_caption(pilot, app, text: str):
    """Go to Captions, type ``text`` at the end of the first caption and leave it unsaved; returns the editor."""
    from textual.widgets import DataTable, TextArea

    from loratui.tui.steps.captions import CaptionsStep

    await wait_until(pilot, lambda: app.screen.query_one("#images", DataTable).row_count == 10)
    await pilot.press("ctrl+n")
    step = app.screen.query_one(CaptionsStep)
    await wait_until(pilot, lambda: step.current is not None and step.current.image.name == "toy_00.png")
    editor = app.screen.query_one("#editor", TextArea)
    editor.focus()
    await pilot.press("end", *text)
    await wait_until(pilot, lambda: editor.text.endswith(text))
    return editor
