"""Issue 9 class 6 in the wizard: a bug is one line and a crash report, never a traceback.

A worker's or a key action's exception shows a dialog (one line and the report's path) and the wizard keeps
working; an event handler's (Textual stops that widget) saves every edit and exits with that one line.
Each bug is planted with a test-only subclass: no real input makes these code paths raise.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from textual import work
from textual.binding import Binding
from textual.widgets import DataTable, TextArea

import loratui.tui.screens.wizard as wizard_module
from loratui.tui.app import CRASH_EXIT, LoraTuiApp, make_app
from loratui.tui.screens.dialogs import TextDialog
from loratui.tui.steps.captions import CaptionsStep
from loratui.tui.steps.dataset import DatasetStep
from loratui.tui.widgets.step_header import StepHeader

from .conftest import wait_until
from .test_wizard import _text

SIZE = (80, 24)
REPO = Path(__file__).resolve().parents[2]


class BuggyCheck(DatasetStep):
    """The dataset check's worker with a bug in it."""

    @work(thread=True, exclusive=True, exit_on_error=False, group="scan")
    def scan(self, folder: Path) -> None:
        raise KeyError("bug in the check")


class BuggyKeyApp(LoraTuiApp):
    BINDINGS = [Binding("ctrl+k", "buggy", "Buggy", priority=True)]

    def action_buggy(self) -> None:
        raise ZeroDivisionError("bug in an action")


def _crash_report(app) -> Path:
    """The report the dialog names; checks the dialog is one line and one path."""
    assert isinstance(app.screen, TextDialog)
    lines = _text(app, "#dialog-text Static").strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("crash report: ")
    return Path(lines[1].removeprefix("crash report: "))


async def test_a_bug_in_a_step_worker_is_a_dialog_and_the_wizard_goes_on(demo_dir, tmp_path, monkeypatch,
                                                                        allow_crash_reports):
    monkeypatch.setattr(wizard_module, "DatasetStep", BuggyCheck)
    app = make_app(dataset_dir=demo_dir / "dataset", preset=demo_dir / "demo.yaml", plain_images=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, TextDialog))
        assert "internal error: KeyError: 'bug in the check'" in _text(app, "#dialog-text Static")
        report = _crash_report(app)
        assert report.parent == tmp_path / "home" / "crash-reports"
        assert "Traceback" in report.read_text() and "bug in the check" in report.read_text()
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen.__class__.__name__ == "WizardScreen")
        assert "the check failed" in _text(app, "#dataset-summary")
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: app.screen.query_one(StepHeader).current == 1)
        await pilot.press("ctrl+q")
    assert app.return_code == 0


async def test_a_bug_in_a_key_action_is_a_dialog_and_the_wizard_goes_on(demo_dir, allow_crash_reports):
    app = BuggyKeyApp(make_app(dataset_dir=demo_dir / "dataset", preset=demo_dir / "demo.yaml").config,
                      plain_images=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.screen.query_one("#images", DataTable).row_count == 10)
        await pilot.press("ctrl+k")
        await wait_until(pilot, lambda: isinstance(app.screen, TextDialog))
        assert "internal error: ZeroDivisionError: bug in an action" in _text(app, "#dialog-text Static")
        assert "bug in an action" in _crash_report(app).read_text()
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen.__class__.__name__ == "WizardScreen")
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: app.screen.query_one(StepHeader).current == 1)
        # The captions still load and save: the app is whole, not just drawn.
        step = app.screen.query_one(CaptionsStep)
        await wait_until(pilot, lambda: step.current is not None)
        editor = app.screen.query_one("#editor", TextArea)
        editor.focus()
        await pilot.press("end", "!", "ctrl+s")
        await wait_until(pilot, lambda: step.current.caption.read_text().endswith("!"))


# An event handler with a bug, in a real (headless) run of the app: what reaches the terminal is one line.
BUGGY_HANDLER = textwrap.dedent("""
    import asyncio
    import sys
    from pathlib import Path
    from textual import on
    from textual.widgets import TextArea
    from loratui.tui import app as app_module
    from loratui.tui.screens import wizard as wizard_module

    class BuggyCaptions(wizard_module.CaptionsStep):
        @on(TextArea.Changed, "#editor")
        def buggy(self, event: TextArea.Changed) -> None:
            if event.text_area.text.endswith("boom"):
                raise RuntimeError("bug in a handler")

    async def drive(pilot):
        app = pilot.app
        while not [t for t in app.screen.query("#images") if t.row_count == 10]:
            await pilot.pause(0.05)
        await pilot.press("ctrl+n")
        editor = app.screen.query_one("#editor", TextArea)
        while not editor.text:
            await pilot.pause(0.05)
        editor.move_cursor(editor.document.end)
        editor.insert(", boom")  # typed, but not through pilot.press: that waits on the widget the bug stops
        while app.is_running:
            await asyncio.sleep(0.05)

    wizard_module.CaptionsStep = BuggyCaptions
    app = app_module.make_app(dataset_dir=Path(sys.argv[1]), plain_images=True)
    app.run(headless=True, size=(80, 24), auto_pilot=drive)
    sys.exit(app_module.exit_status(app))
""")


def test_a_bug_in_an_event_handler_saves_the_edit_and_exits_with_one_line(demo_dir, tmp_path,
                                                                          allow_crash_reports):
    caption = demo_dir / "dataset" / "4_sks toy" / "toy_00.txt"
    original = caption.read_text()
    env = {**os.environ, "PYTHONPATH": str(REPO), "LORATUI_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", BUGGY_HANDLER, str(demo_dir / "dataset")], capture_output=True,
                         text=True, env=env, timeout=1800)
    assert out.returncode == CRASH_EXIT, out.stderr
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("loratui: internal error: RuntimeError: bug in a handler")
    report = Path(lines[0].split("crash report: ", 1)[1].split("; saved", 1)[0])
    assert "bug in a handler" in report.read_text()
    assert "; saved toy_00.txt" in lines[0]
    assert caption.read_text() == original + ", boom"
