"""The Captions step's WD tagger dialog at 80×24: a `loratui caption-images --tagger wd` child process (the TUI
never imports onnxruntime) with the tiny offline ONNX tagger of tests/dataset/test_wd_tagger.py. Preview is a
dry run; Tag writes through the caption journal, the list reloads, and Ctrl+Z undoes it.

Follows sd-scripts finetune/tag_images_by_wd14_tagger.py (general and character thresholds, as there)."""

from __future__ import annotations

from PIL import Image
from textual.widgets import DataTable, Input

from loratui.tui.screens.help import HelpScreen
from loratui.tui.screens.tagger_dialog import TaggerDialog
from loratui.tui.steps.captions import CaptionsStep
from tests.dataset.test_wd_tagger import RED_CAPTION, tiny_tagger  # noqa: F401 (a fixture)

from .conftest import wait_until
from .test_keys_and_layout import SIZE, _app, _ready
from .test_wizard import _text


def _caption_cell(app, name: str) -> str:
    """The caption column of an image's row in the Captions list, as shown."""
    table = app.screen.query_one("#images", DataTable)
    row = next(i for i in range(table.row_count) if str(table.get_row_at(i)[1]) == name)
    return str(table.get_row_at(row)[2])


async def test_tagger_previews_tags_and_undoes(demo_dir, tiny_tagger, tmp_path):  # noqa: F811
    folder = next((demo_dir / "dataset").iterdir())
    Image.new("RGB", (64, 64), (255, 0, 0)).save(folder / "toy_05.png")  # red: the tiny tagger's "miku" image
    (folder / "toy_05.txt").unlink()
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot, app)
        await pilot.press("ctrl+n", "ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, TaggerDialog))
        dialog = app.screen
        assert "10 image(s), 1 without a caption" in str(dialog.query_one("Label").render())
        for button in ("#cancel", "#preview", "#tag"):  # the whole dialog fits 80×24
            assert dialog.query_one(button).region.bottom <= SIZE[1]

        dialog.query_one("#tag-model", Input).value = str(tmp_path)  # no model.onnx there
        await pilot.click("#preview")
        await wait_until(pilot, lambda: "missing model.onnx" in _text(app, "#tag-output"), tries=2000)

        dialog.query_one("#tag-model", Input).value = str(tiny_tagger)
        await pilot.click("#preview")
        await wait_until(pilot, lambda: "would change (dry run)" in _text(app, "#tag-output"), tries=2000)
        preview = _text(app, "#tag-output")
        assert "1 of 10 caption(s) would change" in preview and f"+{RED_CAPTION}" in preview
        assert not (folder / "toy_05.txt").exists()  # a preview writes nothing
        assert dialog.focused is dialog.query_one("#preview")  # busy buttons were disabled; the focus came back

        dialog.query_one("#tag-general", Input).value = "0.5"  # drops ^_^ (0.40)
        await pilot.click("#tag")
        await wait_until(pilot, lambda: isinstance(app.screen.query_one("#captions"), CaptionsStep)
                         and not isinstance(app.screen, TaggerDialog), tries=2000)
        expected = "1girl, miku \\(vocaloid\\), solo, long hair"
        assert (folder / "toy_05.txt").read_text() == expected
        assert _caption_cell(app, "toy_05.png") == expected  # the list shows the new caption
        assert _caption_cell(app, "toy_00.png") != ""  # captioned images are left alone in "missing" mode

        app.screen.query_one("#images", DataTable).focus()
        await pilot.press("ctrl+z")
        await wait_until(pilot, lambda: _caption_cell(app, "toy_05.png") == "")
        assert not (folder / "toy_05.txt").exists()


async def test_threshold_must_be_a_number_and_cancel_closes(demo_dir):
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot, app)
        await pilot.press("ctrl+n", "ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, TaggerDialog))
        app.screen.query_one("#tag-character", Input).value = "high"
        await pilot.click("#tag")
        await pilot.pause()
        assert "character threshold: give a number between 0 and 1" in _text(app, "#tag-output")
        assert app.screen.proc is None  # nothing was started
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, TaggerDialog))
        await pilot.press("f1")  # not in the full footer: the help lists the key
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen))
        assert "Tag images with a WD tagger" in _text(app, "#help-table")
