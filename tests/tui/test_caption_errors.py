"""Issue 9 meets issue 10 at 80×24: the caption core's one-line errors reach the wizard as messages, never as a
crash; no file changes wrongly and no edit is lost. Each test asserts what the screen shows and the bytes on
disk."""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from textual.widgets import Button, DataTable, Input, Select, TextArea

from loratui.core.captions import journal
from loratui.core.presets import load_config, save_preset
from loratui.core.run import rundir
from loratui.tui.app import make_app
from loratui.tui.messages import ConfigChanged
from loratui.tui.screens.dialogs import ConfirmDialog, TagToolDialog
from loratui.tui.screens.monitor import MonitorScreen
from loratui.tui.steps.captions import CaptionsStep
from loratui.tui.widgets.step_header import StepHeader

from .conftest import wait_until
from .test_wizard import _text

SIZE = (80, 24)
LATIN1 = b"caf\xe9 toy, red"  # a Latin-1 byte: not UTF-8, so an operation must refuse to rewrite it


def _app(demo_dir: Path):
    return make_app(dataset_dir=demo_dir / "dataset", preset=demo_dir / "demo.yaml", plain_images=True)


def _captions(demo_dir: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted((demo_dir / "dataset").rglob("*.txt"))}


def _caption(demo_dir: Path, n: int) -> Path:
    return demo_dir / "dataset" / "4_sks toy" / f"toy_{n:02d}.txt"


def _messages(app) -> str:
    return "\n".join(str(n.message) for n in app._notifications)


@contextlib.contextmanager
def _held_lock(root: Path) -> Iterator[None]:
    """Another writer holding the dataset's caption lock (its own open file, as a second loratui would)."""
    folder = root / journal.JOURNAL_DIR
    folder.mkdir(exist_ok=True)
    fd = os.open(folder / journal.LOCK_FILE, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.pwrite(fd, b"4242\n", 0)
        yield
    finally:
        os.close(fd)


async def _to_captions(pilot, app) -> CaptionsStep:
    await wait_until(pilot, lambda: app.screen.query_one("#images", DataTable).row_count == 10)
    await pilot.press("ctrl+n")
    step = app.screen.query_one(CaptionsStep)
    await wait_until(pilot, lambda: step.current is not None and step.current.image.name == "toy_00.png")
    return step


async def _open_tag_tools(pilot, app, tool: str, first: str, second: str = "") -> TagToolDialog:
    await pilot.press("ctrl+t")
    await wait_until(pilot, lambda: isinstance(app.screen, TagToolDialog))
    dialog = app.screen
    dialog.query_one("#tool", Select).value = tool
    await pilot.pause()
    dialog.query_one("#first", Input).value = first
    dialog.query_one("#second", Input).value = second
    await pilot.click("#preview")
    return dialog


# --- 1. tag tools ---------------------------------------------------------------------------------------------


async def test_preview_names_a_caption_that_cannot_be_decoded(demo_dir):
    _caption(demo_dir, 3).write_bytes(LATIN1)
    before = _captions(demo_dir)
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        await _to_captions(pilot, app)
        dialog = await _open_tag_tools(pilot, app, "activation", "mytoy")
        await wait_until(pilot, lambda: "not UTF-8 or UTF-16" in _text(app, "#diff-text"))
        shown = _text(app, "#diff-text")
        assert "toy_03.txt" in shown and "iconv" in shown  # names the file and the fix
        assert dialog.query_one("#apply", Button).disabled
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, TagToolDialog))
        assert app.is_running
    assert _captions(demo_dir) == before


async def test_preview_of_a_bad_group_reference_is_one_line(demo_dir):
    before = _captions(demo_dir)
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        await _to_captions(pilot, app)
        dialog = await _open_tag_tools(pilot, app, "regex", "(toy)", r"\2")
        await wait_until(pilot, lambda: "bad regular expression" in _text(app, "#diff-text"))
        assert "invalid group reference 2" in _text(app, "#diff-text")
        assert dialog.query_one("#apply", Button).disabled
    assert _captions(demo_dir) == before


async def test_apply_while_another_writer_holds_the_lock_changes_nothing(demo_dir):
    before = _captions(demo_dir)
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        await _to_captions(pilot, app)
        await _open_tag_tools(pilot, app, "activation", "mytoy")
        await wait_until(pilot, lambda: "10 caption(s) will change" in _text(app, "#diff-text"))
        with _held_lock(demo_dir / "dataset"):
            await pilot.click("#apply")
            await wait_until(pilot, lambda: "another caption operation (pid 4242)" in _messages(app))
        assert not isinstance(app.screen, TagToolDialog) and app.is_running
        assert _captions(demo_dir) == before
        assert journal.last_operation(demo_dir / "dataset") is None


async def test_apply_after_a_caption_changed_on_disk_keeps_that_change(demo_dir):
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        await _to_captions(pilot, app)
        await _open_tag_tools(pilot, app, "activation", "mytoy")
        await wait_until(pilot, lambda: "10 caption(s) will change" in _text(app, "#diff-text"))
        _caption(demo_dir, 5).write_bytes(b"edited elsewhere")
        before = _captions(demo_dir)
        await pilot.click("#apply")
        await wait_until(pilot, lambda: "changed since it was read" in _messages(app))
        assert "toy_05.txt" in _messages(app)
        assert _captions(demo_dir) == before  # all or nothing: the other nine are untouched too
        table = app.screen.query_one("#images", DataTable)
        await wait_until(pilot, lambda: str(table.get_row_at(5)[2]) == "edited elsewhere")  # list re-read


# --- 2. undo --------------------------------------------------------------------------------------------------


async def _apply_activation_tag(pilot, app, demo_dir) -> None:
    await _open_tag_tools(pilot, app, "activation", "mytoy")
    await wait_until(pilot, lambda: "10 caption(s) will change" in _text(app, "#diff-text"))
    await pilot.click("#apply")
    await wait_until(pilot, lambda: _caption(demo_dir, 0).read_text().startswith("mytoy, "))


async def test_undo_after_a_hand_edit_asks_and_undo_anyway_restores(demo_dir):
    original = _captions(demo_dir)
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        await _to_captions(pilot, app)
        await _apply_activation_tag(pilot, app, demo_dir)
        _caption(demo_dir, 2).write_bytes(b"hand edit")  # outside the wizard, after the op
        after_edit = _captions(demo_dir)
        await pilot.press("ctrl+z")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        assert "toy_02.txt" in _messages(app) and "nothing was undone" in _messages(app)
        question = str(app.screen.question)
        assert "toy_02.txt" in question and "Undo anyway?" in question
        await pilot.click("#no")  # Cancel: the hand edit and the op both stay
        await wait_until(pilot, lambda: not isinstance(app.screen, ConfirmDialog))
        assert _captions(demo_dir) == after_edit
        await pilot.press("ctrl+z")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.click("#yes")  # Undo anyway
        await wait_until(pilot, lambda: _captions(demo_dir) == original)
        await wait_until(pilot, lambda: "undid: tag tools" in _messages(app))
        assert journal.last_operation(demo_dir / "dataset") is None


async def test_undo_while_another_writer_holds_the_lock_is_a_message(demo_dir):
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        await _to_captions(pilot, app)
        await _apply_activation_tag(pilot, app, demo_dir)
        applied = _captions(demo_dir)
        with _held_lock(demo_dir / "dataset"):
            await pilot.press("ctrl+z")
            await wait_until(pilot, lambda: "another caption operation" in _messages(app))
        assert _captions(demo_dir) == applied and app.is_running
        assert journal.last_operation(demo_dir / "dataset") is not None  # still there to undo later


async def test_undo_of_a_damaged_journal_entry_is_a_message(demo_dir):
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        await _to_captions(pilot, app)
        await _apply_activation_tag(pilot, app, demo_dir)
        applied = _captions(demo_dir)
        entry = next((demo_dir / "dataset" / journal.JOURNAL_DIR).glob("*.json"))
        entry.write_text("{not json")
        await pilot.press("ctrl+z")
        await wait_until(pilot, lambda: "journal entry is damaged" in _messages(app))
        assert _captions(demo_dir) == applied and app.is_running


# --- 3. loading -----------------------------------------------------------------------------------------------


async def test_an_image_caption_extension_lists_nothing_and_says_why(demo_dir):
    preset = demo_dir / "demo.yaml"
    save_preset(load_config(preset).with_value("dataset.caption_extension", ".png"), preset)
    images = {p: p.read_bytes() for p in (demo_dir / "dataset").rglob("*.png")}
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        step = app.screen.query_one(CaptionsStep)
        await wait_until(pilot, lambda: "image or binary file type" in _messages(app))
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: app.screen.query_one(StepHeader).current == 1)
        assert "'.png' is an image or binary file type" in _text(app, "#caption-problem")
        assert app.screen.query_one("#images", DataTable).row_count == 0 and step.current is None
        await pilot.press("ctrl+s", "ctrl+z")  # the step's keys still work on the empty list
        await wait_until(pilot, lambda: "nothing to undo" in _messages(app))
        assert app.is_running
    assert {p: p.read_bytes() for p in images} == images


async def test_changing_the_caption_extension_in_parameters_reloads_the_list(demo_dir):
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        step = await _to_captions(pilot, app)
        app.screen.post_message(ConfigChanged(app.config.with_value("dataset.caption_extension", ".png"),
                                              "parameters"))
        await wait_until(pilot, lambda: app.screen.query_one("#images", DataTable).row_count == 0)
        assert "image or binary file type" in _text(app, "#caption-problem") and step.files == []
        app.screen.post_message(ConfigChanged(app.config.with_value("dataset.caption_extension", ".txt"),
                                              "parameters"))
        await wait_until(pilot, lambda: app.screen.query_one("#images", DataTable).row_count == 10)


# --- 4. editor save -------------------------------------------------------------------------------------------


async def _edit_first_line(pilot, app, step: CaptionsStep, text: str) -> None:
    editor = app.screen.query_one("#editor", TextArea)
    editor.focus()
    editor.move_cursor((0, 0))
    await pilot.press("end", *text, "ctrl+s")
    await wait_until(pilot, lambda: step.current is not None and not step.unsaved())


async def test_editor_save_keeps_utf16_bom_and_crlf(demo_dir):
    caption = _caption(demo_dir, 0)
    caption.write_bytes(codecs.BOM_UTF16_LE + "sks toy, red\r\nsks toy, blue\r\n".encode("utf-16-le"))
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        step = await _to_captions(pilot, app)
        assert app.screen.query_one("#editor", TextArea).text == "sks toy, red\nsks toy, blue\n"
        await _edit_first_line(pilot, app, step, ", smiling")
        assert caption.read_bytes() == (codecs.BOM_UTF16_LE
                                        + "sks toy, red, smiling\r\nsks toy, blue\r\n".encode("utf-16-le"))
        await pilot.press("ctrl+z")  # the journaled save undoes to the byte
        original = codecs.BOM_UTF16_LE + "sks toy, red\r\nsks toy, blue\r\n".encode("utf-16-le")
        await wait_until(pilot, lambda: caption.read_bytes() == original)


async def test_editor_save_keeps_utf8_bom_and_crlf(demo_dir):
    caption = _caption(demo_dir, 0)
    caption.write_bytes(codecs.BOM_UTF8 + b"sks toy, red\r\nsks toy, blue")
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        step = await _to_captions(pilot, app)
        await _edit_first_line(pilot, app, step, ", happy")
    assert caption.read_bytes() == codecs.BOM_UTF8 + b"sks toy, red, happy\r\nsks toy, blue"


async def test_editor_save_of_an_undecodable_caption_keeps_the_edit(demo_dir):
    caption = _caption(demo_dir, 0)
    caption.write_bytes(LATIN1)
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        step = await _to_captions(pilot, app)
        editor = app.screen.query_one("#editor", TextArea)
        editor.focus()
        await pilot.press("end", *", smiling", "ctrl+s")
        await wait_until(pilot, lambda: "not UTF-8 or UTF-16" in _messages(app))
        assert "toy_00.txt" in _messages(app) and "still in the editor" in _messages(app)
        assert editor.text == "café toy, red, smiling" and caption.read_bytes() == LATIN1
        app.screen.query_one("#images", DataTable).focus()
        await pilot.press("down")  # leaving refuses too, and stays: the edit is not dropped
        await pilot.pause()
        assert step.current.image.name == "toy_00.png" and editor.text == "café toy, red, smiling"
        assert caption.read_bytes() == LATIN1 and journal.last_operation(demo_dir / "dataset") is None
        await pilot.press("ctrl+q")  # quitting would drop it: refused, with the way out
        await wait_until(pilot, lambda: "Ctrl+Z drops the edit" in _messages(app))
        assert app.is_running and editor.text == "café toy, red, smiling"
        await pilot.press("ctrl+z", "ctrl+q")  # the user drops the edit on purpose; now it quits
        await wait_until(pilot, lambda: not app.is_running)
    assert caption.read_bytes() == LATIN1


# --- 5. monitor -----------------------------------------------------------------------------------------------


def _dead_run(root: Path) -> Path:
    """A run whose trainer died mid-run: events up to step 10 of 80 with an ETA, a pid that is not alive."""
    run = root / "20260101-000000-dead-lora"
    run.mkdir(parents=True)
    (run / rundir.CONFIG).write_text("version: 1\n")
    events = [
        {"v": 1, "type": "start", "t": 100.0, "total_steps": 80, "epochs": 4, "device": "cpu", "eta_s": 40.0},
        *({"v": 1, "type": "step", "t": 100.0 + s, "step": s, "epoch": 1, "loss": 1.0, "avg_loss": 1.0,
           "lrs": {"unet": 1e-3}, "it_per_s": 2.0, "eta_s": (80 - s) / 2} for s in range(1, 11)),
    ]
    (run / rundir.EVENTS).write_text("".join(json.dumps(e) + "\n" for e in events))
    child = subprocess.Popen(["true"])
    child.wait()  # reaped: its pid names no live process
    rundir.write_pid(run, child.pid)
    return run


async def test_monitor_on_a_dead_run_shows_dead_and_no_eta(tmp_path):
    run = _dead_run(tmp_path)
    assert rundir.run_state(run) == "dead"
    app = make_app(attach=run, plain_images=True, clock=lambda: 110.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen))
        await wait_until(pilot, lambda: "step 10/80" in _text(app, "#run-status"))
        status = _text(app, "#run-status")
        assert status.startswith("dead") and "ETA" not in status
        assert app.screen.snapshot.eta_s is None  # ended: nothing left to count down
