"""The monitor's Compare checkpoints view over a finished comparison folder (grids drawn by the core, no ML
stack in this process): highlight moves, a cell opens larger, the favourite is copied by a `loratui compare`
process, and the latest sample image is shown."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from loratui.core import compare_grid as G
from loratui.core.demo_config import demo_config
from loratui.core.presets import dump_full_config
from loratui.core.run import rundir
from loratui.tui.app import make_app
from loratui.tui.screens.compare import CellDialog, CompareScreen
from loratui.tui.widgets.compare_grid_view import CompareGridView, highlighted

from .conftest import wait_until

ROWS, COLS = ["epoch 1", "final"], [G.NO_LORA, "0.5", "1"]


def _finished_run(tmp_path: Path) -> Path:
    run = tmp_path / "20260101-000000-demo-lora"
    (run / "output").mkdir(parents=True)
    (run / "samples").mkdir()
    cfg = demo_config(tmp_path)
    (run / rundir.CONFIG).write_text(dump_full_config(cfg))
    rundir.write_exit_status(run, 0, "done", "finished")
    from safetensors.numpy import save_file

    for name in ("demo-lora-000001", "demo-lora"):
        save_file({"lora_unet_x.lora_up.weight": np.ones((2, 2), np.float16)},
                  str(run / "output" / f"{name}.safetensors"), metadata={"ss_network_dim": "4"})
    Image.new("RGB", (64, 64), (0, 200, 0)).save(run / "samples" / "demo-lora_e000004_00.png")
    folder = G.new_compare_dir(run)
    colours = [[(40 * r + 20 * c, 0, 0) for c in range(3)] for r in range(2)]
    cells = [[Image.new("RGB", (64, 64), colours[r][c]) for c in range(3)] for r in range(2)]
    manifest = G.Manifest(run=str(run), rows=[{"label": "epoch 1", "checkpoint": str(run / "output" /
                                               "demo-lora-000001.safetensors")},
                                              {"label": "final", "checkpoint": str(run / "output" /
                                                                                    "demo-lora.safetensors")}],
                          columns=[{"label": G.NO_LORA, "weight": None}, {"label": "0.5", "weight": 0.5},
                                   {"label": "1", "weight": 1.0}],
                          prompts=[{"prompt": "sks toy", "seed": 1, "grid": G.grid_file(0),
                                    "cells": [[G.cell_file(0, r, c) for c in range(3)] for r in range(2)]}],
                          total=5, done=5, finished=True)
    for r in range(2):
        for c in range(3):
            cells[r][c].save(folder / G.cell_file(0, r, c))
    G.draw_grid(cells, ROWS, COLS, "sks toy").save(folder / G.grid_file(0))
    manifest.save(folder)
    rundir.write_exit_status(folder, 0, "done", "")
    return run


def test_highlight_frames_the_chosen_cell():
    layout = G.layout_for(ROWS, COLS, 64, 64)
    grid = G.draw_grid([[Image.new("RGB", (64, 64), (0, 0, 0))] * 3] * 2, ROWS, COLS, "t")
    image = highlighted(grid, layout, 1, 2)
    left, top = layout.cell_box(1, 2)[:2]
    assert image.getpixel((left - 1, top + 10)) == (255, 200, 0)
    assert image.getpixel((left + 10, top + 10)) == (0, 0, 0)
    other_left, other_top = layout.cell_box(0, 0)[:2]
    assert image.getpixel((other_left - 1, other_top + 10)) != (255, 200, 0)


async def test_compare_view_moves_opens_and_marks_the_favourite(tmp_path):
    run = _finished_run(tmp_path)
    app = make_app(attach=run, plain_images=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: pilot.app.screen.query("#checkpoints"))
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, CompareScreen))
        screen = pilot.app.screen
        note = lambda: str(screen.query_one(CompareGridView).query_one("#grid-note").render())  # noqa: E731
        await wait_until(pilot, lambda: "epoch 1 × no LoRA" in note())
        assert "demo-lora_e000004_00.png" in str(screen.query_one("#sample-caption").render())
        await pilot.press("f")  # the reference column has no checkpoint
        await pilot.pause()
        assert not (run / "output" / "demo-lora-best.safetensors").exists()
        await pilot.press("down", "right", "right", "right")
        await wait_until(pilot, lambda: "final × 1" in note())
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, CellDialog))
        assert pilot.app.screen.path.name == "p00_r01_c02.png"
        await pilot.press("escape")
        await wait_until(pilot, lambda: pilot.app.screen is screen)
        await pilot.press("up", "left", "f")  # epoch 1 at 0.5
        await wait_until(pilot, lambda: (run / "output" / "demo-lora-best.safetensors").exists(), tries=2000)
    from safetensors import safe_open

    with safe_open(str(run / "output" / "demo-lora-best.safetensors"), "np") as fh:
        meta = fh.metadata()
    assert meta[G.BEST_WEIGHT_KEY] == "0.5" and meta[G.BEST_SOURCE_KEY] == "demo-lora-000001.safetensors"
    assert json.loads((G.latest_compare(run) / G.MANIFEST).read_text())["finished"]
