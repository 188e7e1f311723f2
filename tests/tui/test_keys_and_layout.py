"""Issue 10 at 80×24: keys work from every focus, help and palette, everything fits, things say what they mean."""

from __future__ import annotations

import os

from textual.command import CommandList, CommandPalette
from textual.containers import ScrollableContainer
from textual.widgets import DataTable, Input, Static, TabbedContent, Tabs, TextArea
from textual.widgets._footer import FooterKey

from loratui.core import measured_speed
from loratui.core.demo_config import demo_config
from loratui.core.presets import load_config
from loratui.tui.app import make_app
from loratui.tui.screens.help import HelpScreen
from loratui.tui.screens.monitor import MonitorScreen
from loratui.tui.screens.wizard import WizardScreen
from loratui.tui.steps.captions import CaptionsStep
from loratui.tui.widgets.step_header import StepHeader

from .conftest import wait_until
from .test_wizard import _fake_run, _text

SIZE = (80, 24)


def _app(demo_dir):
    return make_app(dataset_dir=demo_dir / "dataset", preset=demo_dir / "demo.yaml", plain_images=True)


async def _ready(pilot, app) -> None:
    await wait_until(pilot, lambda: app.screen.query_one("#images", DataTable).row_count == 10)


def _step(app) -> int:
    return app.screen.query_one(StepHeader).current


async def test_screen_keys_work_from_text_fields(demo_dir):
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot, app)
        await pilot.press("ctrl+n")  # into Captions; the filter box may well have focus
        captions = app.screen.query_one(CaptionsStep)
        app.screen.query_one("#caption-filter", Input).focus()
        await pilot.press("ctrl+g")  # next problem: toy_03 (Ctrl+E would have been "end of line")
        await wait_until(pilot, lambda: captions.current is not None and captions.current.image.name == "toy_03.png")
        assert "crops 33%" in _text(app, "#caption-problem")  # and what the problem is
        app.screen.query_one("#caption-filter", Input).focus()
        await pilot.press("ctrl+n", "ctrl+n")
        await wait_until(pilot, lambda: _step(app) == 3)
        app.screen.query_one(TabbedContent).active = "tab-basic"
        out = app.screen.query_one("#field-saving--output_name", Input)
        out.focus()
        before = out.value
        await pilot.press("ctrl+s")  # export, from inside a field: the field keeps its value
        await wait_until(pilot, lambda: app.screen.__class__.__name__ == "PathDialog")
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, WizardScreen))
        assert out.value == before
        await pilot.press("ctrl+r")  # changed settings: a scrollable dialog that Esc closes
        await wait_until(pilot, lambda: app.screen.__class__.__name__ == "TextDialog")
        assert app.screen.query_one("#dialog-text").region.bottom <= SIZE[1]
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, WizardScreen))


async def test_help_screen_lists_the_keys_of_the_screen(demo_dir):
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot, app)
        await pilot.press("ctrl+n")
        app.screen.query_one("#images", DataTable).focus()
        await pilot.press("question_mark")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen))
        text = _text(app, "#help-table")
        for line in ("Go to the next image with a problem", "Batch tag tools", "Quit", "Next step", "Every key"):
            assert line in text
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, WizardScreen))
        app.screen.query_one("#caption-filter", Input).focus()
        await pilot.press("question_mark")  # in a text field ? is a character
        await wait_until(pilot, lambda: app.screen.query_one("#caption-filter", Input).value == "?")
        assert isinstance(app.screen, WizardScreen)
        await pilot.press("f1")  # F1 works everywhere
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen))


async def test_palette_lists_loratui_commands_first(demo_dir):
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette))
        commands = app.screen.query_one(CommandList)
        await wait_until(pilot, lambda: commands.option_count >= 6)
        first = [str(commands.get_option_at_index(i).prompt).split("\n")[0] for i in range(6)]
        assert first[:5] == ["Open dataset folder", "Load preset", "Export preset", "Attach to newest run",
                             "Check model"]


async def test_every_wizard_step_fits_80x24_with_a_readable_footer(demo_dir):
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot, app)
        for index in range(5):
            await wait_until(pilot, lambda index=index: _step(app) == index)
            await pilot.pause()
            screen = app.screen
            header = screen.query_one(StepHeader)
            assert header.region.y == 0 and header.region.height == 1  # the breadcrumb never scrolls away
            step = screen.query_one("#steps").visible_content
            assert not step.is_scrollable or step.max_scroll_y == 0, f"step {index} scrolls"
            for child in step.children:  # every part of the step lies above the footer
                if child.display:
                    assert child.region.bottom <= SIZE[1] - 1, f"step {index}: {child} is cut off"
            keys = list(screen.query(FooterKey))
            assert keys and all(k.region.right <= SIZE[0] and k.region.width >= len(k.description) + 2 for k in keys)
            if index < 4:
                await pilot.press("ctrl+n")


async def test_steps_vram_field_drives_the_batch_suggestion_and_time_says_measured(demo_dir):
    # a run of this config on this machine measured 2 it/s at batch 2: 4 img/s
    measured_speed.record("cpu", demo_config(demo_dir), it_per_s=2.0)
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot, app)
        await pilot.press("ctrl+n", "ctrl+n")
        await wait_until(pilot, lambda: "Time" in _text(app, "#plan"))
        plan = _text(app, "#plan")
        assert "40s on this CPU (measured" in plan  # 80 steps × 2 images ÷ 4 images/s
        vram = app.screen.query_one("#plan-vram", Input)
        assert "no GPU" in vram.placeholder  # nothing detected here: the user may plan for a GPU
        vram.focus()
        await pilot.press(*"24")
        await wait_until(pilot, lambda: "for 24 GiB" in _text(app, "#plan"))


async def test_optional_fields_say_what_unset_means(demo_dir):
    app = make_app(plain_images=True)  # the defaults leave the text encoder's rate unset
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+n", "ctrl+n", "ctrl+n")
        field = app.screen.query_one("#field-optimizer--text_encoder_lr", Input)
        assert field.value == "" and field.placeholder == "unset: same as learning_rate"


async def test_tag_tools_dialog_keeps_its_buttons_on_screen_after_a_preview(demo_dir):
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot, app)
        await pilot.press("ctrl+n", "ctrl+t")
        await wait_until(pilot, lambda: app.screen.__class__.__name__ == "TagToolDialog")
        app.screen.query_one("#first", Input).value = "mytoy"
        await pilot.click("#preview")
        await wait_until(pilot, lambda: "10 caption(s) will change" in _text(app, "#diff-text"))
        for button in ("#cancel", "#preview", "#apply"):
            widget = app.screen.query_one(button)
            assert widget.region.bottom <= SIZE[1] and widget.region.width >= len(str(widget.label))
        assert isinstance(app.screen.query_one("#diff"), ScrollableContainer)


async def test_bad_folder_clears_old_findings_and_buckets(demo_dir, tmp_path):
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot, app)
        assert app.screen.query_one("#buckets", DataTable).row_count == 1
        assert app.screen.query_one("#buckets", DataTable).columns  # labelled as a count with repeats
        assert "× repeats" in [str(c.label) for c in app.screen.query_one("#buckets", DataTable).columns.values()]
        field = app.screen.query_one("#dataset-path", Input)
        field.value = str(tmp_path / "missing")
        field.focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: "not a folder" in _text(app, "#dataset-summary"))
        assert app.screen.query_one("#findings", DataTable).row_count == 0
        assert app.screen.query_one("#buckets", DataTable).row_count == 0
        await pilot.press("ctrl+n")  # and Next refuses the folder that is not one
        await wait_until(pilot, lambda: any("not a folder" in str(n.message) for n in app._notifications))
        assert _step(app) == 0


async def test_finding_text_is_shown_whole_for_the_selected_row(demo_dir):
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        findings = app.screen.query_one("#findings", DataTable)
        await wait_until(pilot, lambda: findings.row_count > 1)
        findings.focus()
        await pilot.press("down")
        await wait_until(pilot, lambda: "toy_03.png" in _text(app, "#finding-detail"))
        assert "crops 33%" in _text(app, "#finding-detail")


async def test_monitor_escape_goes_back_to_the_wizard_and_records_speed(tmp_path):
    run = _fake_run(tmp_path / "runs")
    app = make_app(attach=run, plain_images=True, clock=lambda: 140.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen))
        monitor = app.screen
        await wait_until(pilot, lambda: monitor.query_one("#checkpoints", DataTable).row_count == 2)
        row = monitor.query_one("#checkpoints", DataTable)
        assert row.region.right <= SIZE[0] and row.region.height >= 5
        assert "KiB" in str(row.get_row_at(0)[4])
        size_column = list(row.columns.values())[4]  # loss and size are not cut off at 80 columns
        assert sum(c.get_render_width(row) for c in row.columns.values()) <= row.content_region.width
        assert size_column.label
        assert "in the background" not in monitor.leave_message()  # the run has ended
        ran = load_config(run / "config.yaml")  # 4 it/s at its batch
        expected = 4.0 * ran.schedule.train_batch_size
        await wait_until(pilot, lambda: abs((measured_speed.images_per_second("cpu", ran) or 0) - expected) < 1e-6)
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, WizardScreen))


async def test_editor_keeps_the_text_area_history_out(demo_dir):
    """Ctrl+Y (the text area's redo) cannot bring back a text that Ctrl+Z took away: one history only."""
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot, app)
        await pilot.press("ctrl+n")
        editor = app.screen.query_one("#editor", TextArea)
        editor.focus()
        original = editor.text
        await pilot.press("end", *"xy", "ctrl+z")
        await wait_until(pilot, lambda: editor.text == original)
        await pilot.press("ctrl+y")
        await pilot.pause()
        assert editor.text == original
        assert isinstance(app.screen.query_one("#caption-problem"), Static)


async def test_focus_is_visible_in_every_theme_and_tab_order_follows_the_layout(demo_dir):
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot, app)
        await pilot.press("ctrl+n", "ctrl+n", "ctrl+n")
        await wait_until(pilot, lambda: _step(app) == 3)
        assert isinstance(app.screen.focused, Tabs)  # the tabs first, not 18 Tabs away
        await pilot.press("tab")
        field = app.screen.focused
        assert field.id == "field-model--pretrained_model_name_or_path"  # then the first field of the tab
        for theme in ("textual-dark", "textual-light", "nord", "gruvbox", "solarized-light"):
            app.theme = theme
            await pilot.pause()
            focused_edge = field.styles.border_left
            field.blur()
            await pilot.pause()
            assert field.styles.border_left != focused_edge, theme  # focus draws an accent bar
            field.focus()
            await pilot.pause()


async def test_steps_prefill_gpu_memory_from_the_detected_gpu(demo_dir, tmp_path, monkeypatch):
    """A GPU reported by nvidia-smi (a stand-in script on PATH) fills the GPU memory field and the suggestion."""
    from loratui.core import gpu

    monkeypatch.setattr(gpu, "_from_nvml", lambda: None)  # this machine's NVML, if any, must not answer first
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '0, NVIDIA GeForce RTX 4090, 24576, 24000'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    app = _app(demo_dir)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot, app)
        await pilot.press("ctrl+n", "ctrl+n")
        vram = app.screen.query_one("#plan-vram", Input)
        await wait_until(pilot, lambda: vram.value == "24.0")
        plan = _text(app, "#plan")
        assert "RTX 4090" in plan and "for 24 GiB" in plan and "(estimated" in plan
