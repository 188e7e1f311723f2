"""Issue 10 at 80×24: no keypress loses work, and what the screen shows is what will be used."""

from __future__ import annotations

import os
import signal

from textual.widgets import DataTable, Input, TextArea

from loratui.core.captions import journal
from loratui.tui.app import make_app
from loratui.tui.widgets.step_header import StepHeader

from .conftest import edit_first_caption, wait_until
from .test_wizard import _text

SIZE = (80, 24)


def _app(demo_dir):
    return make_app(dataset_dir=demo_dir / "dataset", preset=demo_dir / "demo.yaml", plain_images=True)


def _messages(app) -> str:
    return "\n".join(str(n.message) for n in app._notifications)



async def test_quit_with_a_pending_edit_saves_it(demo_dir):
    app = _app(demo_dir)
    caption = demo_dir / "dataset" / "4_sks toy" / "toy_00.txt"
    original = caption.read_text()
    async with app.run_test(size=SIZE) as pilot:
        await edit_first_caption(pilot, app, ", smiling")
        assert caption.read_text() == original  # not saved yet
        await pilot.press("ctrl+q")
    assert caption.read_text() == original + ", smiling"


async def test_ctrl_c_twice_quits_and_saves_the_edit(demo_dir):
    app = _app(demo_dir)
    caption = demo_dir / "dataset" / "4_sks toy" / "toy_00.txt"
    original = caption.read_text()
    async with app.run_test(size=SIZE) as pilot:
        await edit_first_caption(pilot, app, ", happy")
        await pilot.press("ctrl+c")
        await wait_until(pilot, lambda: "press Ctrl+C again" in _messages(app))
        assert app.is_running and caption.read_text() == original  # once only warns (and copies nothing away)
        await pilot.press("ctrl+c")
    assert caption.read_text() == original + ", happy"


async def test_closing_the_terminal_sighup_saves_the_edit(demo_dir):
    app = _app(demo_dir)
    caption = demo_dir / "dataset" / "4_sks toy" / "toy_00.txt"
    original = caption.read_text()
    async with app.run_test(size=SIZE) as pilot:
        await edit_first_caption(pilot, app, ", hung up")
        assert app._hangup_installed  # without the handler the signal would end the test process
        os.kill(os.getpid(), signal.SIGHUP)
        await wait_until(pilot, lambda: caption.read_text() == original + ", hung up")
    assert app.return_code == 129


async def test_ctrl_z_has_one_meaning_and_one_history(demo_dir):
    app = _app(demo_dir)
    caption = demo_dir / "dataset" / "4_sks toy" / "toy_00.txt"
    original = caption.read_bytes()
    root = demo_dir / "dataset"
    async with app.run_test(size=SIZE) as pilot:
        await edit_first_caption(pilot, app, ", draft")
        editor = app.screen.query_one("#editor", TextArea)
        await pilot.press("ctrl+z")  # the unsaved edit goes; nothing is written
        await wait_until(pilot, lambda: editor.text == original.decode())
        assert caption.read_bytes() == original and journal.last_operation(root) is None
        await pilot.press("end", *", kept", "ctrl+s")
        await wait_until(pilot, lambda: caption.read_text().endswith(", kept"))
        await pilot.press("ctrl+z")  # now the saved edit is undone, on disk, to the byte
        await wait_until(pilot, lambda: caption.read_bytes() == original)
        assert editor.text == original.decode()
        await pilot.press("down", "up")  # leaving and coming back saves nothing new
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: app.screen.query_one(StepHeader).current == 2)
    assert caption.read_bytes() == original and journal.last_operation(root) is None


async def test_next_refuses_an_invalid_field_and_training_uses_the_shown_value(demo_dir):
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.screen.query_one("#images", DataTable).row_count == 10)
        await pilot.press("ctrl+n", "ctrl+n")
        await wait_until(pilot, lambda: "simple 80" in _text(app, "#plan"))
        epochs = app.screen.query_one("#schedule--max_train_epochs", Input)
        epochs.focus()
        await pilot.press("end", "backspace", "0")
        await wait_until(pilot, lambda: epochs.has_class("-invalid"))
        assert "simple 80" not in _text(app, "#plan")  # no total from a value no longer shown
        app.screen.query_one("#saving--save_every_n_epochs", Input).focus()
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: "Epochs:" in _messages(app))
        assert app.screen.query_one(StepHeader).current == 2
        assert app.screen.focused is epochs
        await pilot.press("backspace", "6")
        await wait_until(pilot, lambda: "simple 120" in _text(app, "#plan"))
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: app.screen.query_one(StepHeader).current == 3)
        app.screen.query_one("#param-tabs").active = "tab-network"
        dim = app.screen.query_one("#field-network--network_dim", Input)
        dim.focus()
        await pilot.press("ctrl+a", "ctrl+k", "-", "4")
        await wait_until(pilot, lambda: dim.value == "-4" and dim.has_class("-invalid"))
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: "network_dim" in _messages(app))
        assert app.screen.query_one(StepHeader).current == 3 and app.screen.focused is dim
        await pilot.press("ctrl+a", "ctrl+k", "8", "ctrl+n")
        await wait_until(pilot, lambda: app.screen.query_one(StepHeader).current == 4)
        summary = _text(app, "#train-summary")
        assert "rank 8" in summary and "6 epochs" in summary
    assert app.config.network.network_dim == 8 and app.config.schedule.max_train_epochs == 6


async def test_loading_a_preset_updates_the_focused_field_and_clears_errors(demo_dir, tmp_path):
    preset = tmp_path / "alpha.yaml"
    preset.write_text("version: 1\nnetwork:\n  network_alpha: 2.0\n  network_dim: 16\n")
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.screen.query_one("#images", DataTable).row_count == 10)
        await pilot.press("ctrl+n", "ctrl+n", "ctrl+n")
        app.screen.query_one("#param-tabs").active = "tab-network"
        alpha = app.screen.query_one("#field-network--network_alpha", Input)
        alpha.focus()
        await pilot.press("ctrl+a", "ctrl+k", "x")
        await wait_until(pilot, lambda: alpha.has_class("-invalid"))
        await wait_until(pilot, lambda: "network_alpha" in _text(app, "#config-issues"))
        await pilot.press("ctrl+o")  # from inside the text field
        await wait_until(pilot, lambda: app.screen.__class__.__name__ == "PathDialog")
        app.screen.query_one("#path", Input).value = str(preset)
        app.screen.query_one("#path", Input).focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen.__class__.__name__ == "WizardScreen")
        await wait_until(pilot, lambda: alpha.value == "2.0")
        assert app.screen.query_one("#field-network--network_dim", Input).value == "16"
        assert not alpha.has_class("-invalid")
        issues = _text(app, "#config-issues")
        assert "network_alpha" not in issues and "no problems found" in issues
    assert app.config.network.network_alpha == 2.0


async def test_error_clears_when_the_value_is_fixed(demo_dir):
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+n", "ctrl+n", "ctrl+n")
        app.screen.query_one("#param-tabs").active = "tab-network"
        dim = app.screen.query_one("#field-network--network_dim", Input)
        dim.focus()
        await pilot.press("ctrl+a", "ctrl+k", "0")
        await wait_until(pilot, lambda: "network.network_dim" in _text(app, "#config-issues"))
        await pilot.press("backspace", "3", "2")
        await wait_until(pilot, lambda: app.config.network.network_dim == 32)
        assert "network.network_dim" not in _text(app, "#config-issues")
        assert "error" not in _text(app, "#field-help").lower()


async def test_quit_keeps_changed_settings_as_a_preset(demo_dir, tmp_path):
    from loratui.core.presets import load_config

    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.screen.query_one("#images", DataTable).row_count == 10)
        await pilot.press("ctrl+n", "ctrl+n")
        epochs = app.screen.query_one("#schedule--max_train_epochs", Input)
        epochs.focus()
        await pilot.press("end", "backspace", "7")
        await wait_until(pilot, lambda: app.config.schedule.max_train_epochs == 7)
        await pilot.press("ctrl+q")
    saved = tmp_path / "home" / "last-settings.yaml"  # $LORATUI_HOME of this test
    assert load_config(saved).schedule.max_train_epochs == 7
