"""Pilot tests: each wizard step as a user sees and drives it."""

from __future__ import annotations

import json
from pathlib import Path

from textual.widgets import DataTable, Input, Static, TextArea

from loratui.core.run import rundir
from loratui.tui.app import make_app
from loratui.tui.screens.monitor import MonitorScreen
from loratui.tui.widgets.step_header import StepHeader

from .conftest import wait_until


def _text(app, selector: str) -> str:
    """What a Static shows, as plain text (Rich tables included)."""
    from rich.console import Console

    content = app.screen.query_one(selector, Static).render()
    renderable = getattr(content, "_renderable", content)
    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(renderable)
    return console.export_text()


async def test_dataset_step_checks_and_lists_findings(demo_dir):
    app = make_app(dataset_dir=demo_dir / "dataset", preset=demo_dir / "demo.yaml", plain_images=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.screen.query_one("#findings", DataTable).row_count > 0)
        assert "10 images in 4_sks toy ×4" in _text(app, "#dataset-summary")
        buckets = app.screen.query_one("#buckets", DataTable)
        assert buckets.get_row_at(0) == ["64×64", "40"]


async def test_bad_folder_is_a_message_not_a_crash(tmp_path):
    app = make_app(plain_images=True)
    async with app.run_test(size=(100, 30)) as pilot:
        app.screen.query_one("#dataset-path", Input).value = str(tmp_path / "missing")
        await pilot.click("#check")
        await wait_until(pilot, lambda: "not a folder" in _text(app, "#dataset-summary"))


async def test_bad_preset_is_reported_in_the_app(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nnetwork:\n  netwrk_dim: 3\n")
    app = make_app(preset=bad, plain_images=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        assert any("did you mean 'network.network_dim'" in n.message for n in app._notifications)


async def test_finding_opens_the_image_and_edit_is_saved_on_leave_with_undo(demo_dir):
    app = make_app(dataset_dir=demo_dir / "dataset", preset=demo_dir / "demo.yaml", plain_images=True)
    caption = demo_dir / "dataset" / "4_sks toy" / "toy_03.txt"
    original = caption.read_bytes()
    async with app.run_test(size=(100, 30)) as pilot:
        findings = app.screen.query_one("#findings", DataTable)
        await wait_until(pilot, lambda: findings.row_count > 1)
        findings.focus()
        await pilot.press("down", "enter")  # the first toy_03.png finding
        await wait_until(pilot, lambda: app.screen.query_one(StepHeader).current == 1)
        editor = app.screen.query_one("#editor", TextArea)
        await wait_until(pilot, lambda: editor.text == original.decode())
        editor.focus()
        await pilot.press("end", *", smiling")
        await pilot.press("ctrl+n")  # leaving the step saves
        await wait_until(pilot, lambda: app.screen.query_one(StepHeader).current == 2)
        assert caption.read_text() == original.decode() + ", smiling"
        await pilot.press("ctrl+b")
        await pilot.press("ctrl+z")
        await wait_until(pilot, lambda: caption.read_bytes() == original)
        assert app.screen.query_one("#editor", TextArea).text == original.decode()


async def test_tag_tools_preview_then_apply(demo_dir):
    app = make_app(dataset_dir=demo_dir / "dataset", preset=demo_dir / "demo.yaml", plain_images=True)
    async with app.run_test(size=(100, 34)) as pilot:
        await wait_until(pilot, lambda: app.screen.query_one("#images", DataTable).row_count == 10)
        await pilot.press("ctrl+n")
        await pilot.press("ctrl+t")
        await wait_until(pilot, lambda: app.screen.__class__.__name__ == "TagToolDialog")
        app.screen.query_one("#first", Input).value = "mytoy"
        await pilot.click("#preview")
        await wait_until(pilot, lambda: "10 caption(s) will change" in _text(app, "#diff-text"))
        assert all(p.read_text().startswith("sks toy") for p in (demo_dir / "dataset").rglob("*.txt"))
        await pilot.click("#apply")
        await wait_until(pilot, lambda: app.screen.__class__.__name__ == "WizardScreen")
        assert all(p.read_text().startswith("mytoy, sks toy") for p in (demo_dir / "dataset").rglob("*.txt"))
        table = app.screen.query_one("#images", DataTable)
        assert str(table.get_row_at(0)[2]).startswith("mytoy, sks toy")


async def test_steps_recalculate_as_you_type(demo_dir):
    app = make_app(dataset_dir=demo_dir / "dataset", preset=demo_dir / "demo.yaml", plain_images=True)
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_until(pilot, lambda: app.screen.query_one("#images", DataTable).row_count == 10)
        await pilot.press("ctrl+n", "ctrl+n")
        await wait_until(pilot, lambda: "simple 80 = 40 × 4 ÷ 2" in _text(app, "#plan"))
        epochs = app.screen.query_one("#schedule--max_train_epochs", Input)
        epochs.focus()
        await pilot.press("end", "backspace", "1", "0")
        await wait_until(pilot, lambda: "simple 200 = 40 × 10 ÷ 2" in _text(app, "#plan"))
        assert app.config.schedule.max_train_epochs == 10
        repeats = app.screen.query_one("Input.repeats", Input)
        repeats.value = "8"
        await wait_until(pilot, lambda: "simple 400 = 80 × 10 ÷ 2" in _text(app, "#plan"))
        assert app.config.dataset.repeats == {"4_sks toy": 8}


async def test_parameters_validate_and_show_help(demo_dir):
    app = make_app(dataset_dir=demo_dir / "dataset", preset=demo_dir / "demo.yaml", plain_images=True)
    async with app.run_test(size=(110, 40)) as pilot:
        await pilot.press("ctrl+n", "ctrl+n", "ctrl+n")
        await pilot.pause()
        app.screen.query_one("#param-tabs").active = "tab-network"
        dim = app.screen.query_one("#field-network--network_dim", Input)
        dim.focus()
        await wait_until(pilot, lambda: "capacity and file size" in _text(app, "#field-help"))
        dim.value = "0"
        await wait_until(pilot, lambda: dim.has_class("-invalid"))
        assert "network.network_dim" in _text(app, "#field-help")
        dim.value = "32"
        await wait_until(pilot, lambda: app.config.network.network_dim == 32)
        alpha = app.screen.query_one("#field-network--network_alpha", Input)
        alpha.value = "64"
        await wait_until(pilot, lambda: "alpha is above the rank" in _text(app, "#config-issues"))


def _fake_run(root: Path) -> Path:
    run = root / "20260101-000000-demo-lora"
    (run / "output").mkdir(parents=True)
    (run / rundir.CONFIG).write_text("version: 1\n")
    events = [
        {"v": 1, "type": "start", "t": 100.0, "total_steps": 80, "epochs": 4, "device": "cpu"},
        *({"v": 1, "type": "step", "t": 100.0 + s, "step": s, "epoch": 1 + (s - 1) // 20, "loss": 1.2 - s / 100,
           "avg_loss": 1.1 - s / 200, "lrs": {"unet": 1e-3}, "it_per_s": 4.0, "eta_s": (80 - s) / 4}
          for s in range(1, 41)),
        {"v": 1, "type": "checkpoint", "t": 120.0, "path": str(run / "output" / "demo-lora-000001.safetensors"),
         "epoch": 1, "step": 20, "avg_loss": 1.0, "size_bytes": 120_000},
        {"v": 1, "type": "checkpoint", "t": 140.0, "path": str(run / "output" / "demo-lora-000002.safetensors"),
         "epoch": 2, "step": 40, "avg_loss": 0.9, "size_bytes": 120_000},
    ]
    (run / rundir.EVENTS).write_text("".join(json.dumps(e) + "\n" for e in events))
    (run / rundir.LOG).write_text("training 10 images\n")
    rundir.write_exit_status(run, 0, "stopped", "stopped on request")
    return run


async def test_monitor_reads_the_run_directory(tmp_path):
    run = _fake_run(tmp_path)
    app = make_app(attach=run, plain_images=True, clock=lambda: 140.0)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen))
        table = app.screen.query_one("#checkpoints", DataTable)
        await wait_until(pilot, lambda: table.row_count == 2)
        assert str(table.get_row_at(1)[0]) == "demo-lora-000002.safetensors"
        status = _text(app, "#run-status")
        assert "stopped" in status and "step 40/80" in status and "4.00 it/s" in status
