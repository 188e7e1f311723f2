"""Issue 9 class 2 in the wizard: caption saves take the dataset lock every caption writer takes.

While another process holds it (``loratui captions DIR ...`` running), a save is refused in one line and the
edit stays in the editor; once the lock is free, the same save writes the file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from textual.widgets import DataTable

from loratui.core.captions import rescue
from loratui.tui.app import make_app
from loratui.tui.steps.captions import CaptionsStep

from .conftest import edit_first_caption, wait_until

SIZE = (80, 24)
HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from loratui.core.captions.journal import dataset_lock
    with dataset_lock(Path(sys.argv[1])):
        print("held", flush=True)
        sys.stdin.read()  # hold until the test closes our stdin
""")


def _hold_lock(dataset):
    """Another process holding the dataset's caption lock, as `loratui captions` does while it writes."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(dataset)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"  # blocks until the lock is really taken
    return proc


def _release(proc) -> None:
    proc.stdin.close()
    proc.wait(timeout=600)


def _app(demo_dir):
    return make_app(dataset_dir=demo_dir / "dataset", preset=demo_dir / "demo.yaml", plain_images=True)


def _first_caption(demo_dir):
    """The dataset, the caption the tests edit, and its bytes before the edit."""
    dataset = demo_dir / "dataset"
    caption = dataset / "4_sks toy" / "toy_00.txt"
    return dataset, caption, caption.read_bytes()


def _messages(app) -> str:
    return "\n".join(str(n.message) for n in app._notifications)



async def test_a_locked_dataset_refuses_the_save_and_keeps_the_edit(demo_dir):
    dataset, caption, original = _first_caption(demo_dir)
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        editor = await edit_first_caption(pilot, app, ", red")
        holder = _hold_lock(dataset)
        try:
            await pilot.press("ctrl+s")
            await wait_until(pilot, lambda: "toy_00.txt not saved: another caption operation" in _messages(app))
            assert f"pid {holder.pid}" in _messages(app)
            assert caption.read_bytes() == original
            assert editor.text == original.decode() + ", red"
            # Leaving the image would drop the edit: the wizard stays on it instead.
            app.screen.query_one("#images", DataTable).focus()
            await pilot.press("down")
            await pilot.pause()
            assert app.screen.query_one(CaptionsStep).current.image.name == "toy_00.png"
            assert editor.text == original.decode() + ", red"
            assert caption.read_bytes() == original
        finally:
            _release(holder)
        editor.focus()
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: caption.read_bytes() == original + b", red")
        assert "saved toy_00.txt" in _messages(app)


async def test_tag_tools_on_a_locked_dataset_change_nothing(demo_dir):
    dataset = demo_dir / "dataset"
    before = {p: p.read_bytes() for p in dataset.rglob("*.txt")}
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.screen.query_one("#images", DataTable).row_count == 10)
        await pilot.press("ctrl+n", "ctrl+t")
        await wait_until(pilot, lambda: app.screen.__class__.__name__ == "TagToolDialog")
        app.screen.query_one("#first").value = "mytoy"
        await pilot.click("#preview")
        await wait_until(pilot, lambda: not app.screen.query_one("#apply").disabled)
        holder = _hold_lock(dataset)
        try:
            await pilot.click("#apply")
            await wait_until(pilot, lambda: "tag tools not applied, no caption changed" in _messages(app))
            assert {p: p.read_bytes() for p in dataset.rglob("*.txt")} == before
        finally:
            _release(holder)
        assert app.is_running


async def test_quit_with_an_edit_the_lock_refused_asks_first(demo_dir):
    dataset, caption, original = _first_caption(demo_dir)
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        editor = await edit_first_caption(pilot, app, ", blue")
        holder = _hold_lock(dataset)
        try:
            await pilot.press("ctrl+q")
            await wait_until(pilot, lambda: "Ctrl+Q again quits and keeps it in" in _messages(app))
            assert app.is_running and editor.text.endswith(", blue")
        finally:
            _release(holder)
        await pilot.press("ctrl+q")  # the lock is free now: quitting saves the edit
    assert caption.read_bytes() == original + b", blue"


async def test_closing_the_terminal_while_the_lock_refuses_the_save_keeps_the_edit(demo_dir):
    """SIGHUP cannot ask: the edit its file refused goes to the rescue folder, and the next start lists it."""
    dataset, caption, original = _first_caption(demo_dir)
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        editor = await edit_first_caption(pilot, app, ", hung up while locked")
        typed = editor.text
        holder = _hold_lock(dataset)
        try:
            os.kill(os.getpid(), signal.SIGHUP)
            await wait_until(pilot, lambda: rescue.kept() != [])
        finally:
            _release(holder)
    assert app.return_code == 129 and caption.read_bytes() == original
    (kept,) = rescue.kept()
    assert kept.caption == caption.resolve() and kept.text_file.read_text() == typed

    again = _app(demo_dir)
    async with again.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: "could not be saved when loratui closed" in _messages(again))
        assert str(kept.text_file) in _messages(again)


async def test_quitting_anyway_keeps_the_refused_edit(demo_dir):
    dataset, caption, original = _first_caption(demo_dir)
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        editor = await edit_first_caption(pilot, app, ", quit anyway")
        typed = editor.text
        holder = _hold_lock(dataset)
        try:
            await pilot.press("ctrl+q")
            await wait_until(pilot, lambda: "Ctrl+Q again" in _messages(app))
            await pilot.press("ctrl+q")
            await wait_until(pilot, lambda: not app.is_running)
        finally:
            _release(holder)
    assert caption.read_bytes() == original
    (kept,) = rescue.kept()
    assert kept.text_file.read_text() == typed
