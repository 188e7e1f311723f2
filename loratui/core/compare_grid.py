"""The checkpoint comparison grid without the ML stack: which checkpoints a run has, the grid's rows and columns,
where each cell sits in the picture, the labelled picture itself (PIL), and the manifest that viewers read.

A comparison lives in ``RUN/compare/<YYYYmmdd-HHMMSS>/``::

    compare.json        the manifest: rows (checkpoints), columns (weights), prompts, cell files, progress
    grid_00.png         one labelled grid per prompt: rows epochs, columns "no LoRA" then the weights
    cells/p00_r00_c01.png   the single images
    compare.log, pid, exit_status.json   when it runs in the background (as a trainer run does)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from loratui.core.atomic import atomic_write_text
from loratui.core.run import rundir

MANIFEST = "compare.json"
NO_LORA = "no LoRA"
# Our metadata key on a favourite copy (NAME-best.safetensors): the LoRA weight chosen in the grid.
BEST_WEIGHT_KEY = "ss_loratui_best_weight"
BEST_SOURCE_KEY = "ss_loratui_best_source"


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    label: str  # "epoch 3", "step 120", "final"
    order: int  # sort key: epoch or step, the final file last


def find_checkpoints(output_dir: Path, output_name: str) -> list[Checkpoint]:
    """``NAME-000001.safetensors`` … (epochs), ``NAME-step00000120.safetensors`` (stops) and ``NAME.safetensors``
    (final) in training order; ``-best`` copies and other files are not checkpoints of the run."""
    name = re.escape(output_name)
    epoch_re = re.compile(rf"^{name}-(\d{{6}})\.safetensors$")
    step_re = re.compile(rf"^{name}-step(\d+)\.safetensors$")
    found = []
    for path in output_dir.glob("*.safetensors") if output_dir.is_dir() else []:
        if m := epoch_re.match(path.name):
            found.append(Checkpoint(path, f"epoch {int(m.group(1))}", int(m.group(1))))
        elif m := step_re.match(path.name):
            found.append(Checkpoint(path, f"step {int(m.group(1))}", 10**9 + int(m.group(1))))
        elif path.name == f"{output_name}.safetensors":
            found.append(Checkpoint(path, "final", 10**12))
    return sorted(found, key=lambda c: c.order)


def select_checkpoints(available: list[Checkpoint], spec: str) -> list[Checkpoint]:
    """``all`` or a comma list of epoch numbers and ``final``: ``1,3,final``."""
    if spec.strip().lower() == "all":
        return available
    by_label = {c.label: c for c in available}
    chosen = []
    for part in (p.strip().lower() for p in spec.split(",") if p.strip()):
        label = part if part == "final" or part.startswith("step") else f"epoch {part.lstrip('0') or '0'}"
        if label not in by_label:
            have = ", ".join(c.label for c in available) or "none"
            raise ValueError(f"--epochs: no checkpoint for {part!r} (this run has: {have})")
        chosen.append(by_label[label])
    return chosen


def parse_weights(spec: str) -> list[float]:
    try:
        weights = [float(p) for p in spec.split(",") if p.strip()]
    except ValueError as exc:
        raise ValueError(f"--weights {spec!r}: give comma-separated numbers, such as 0.5,0.75,1.0") from exc
    if not weights:
        raise ValueError("--weights: give at least one weight, such as 1.0")
    return weights


def weight_label(weight: float) -> str:
    return f"{weight:g}"


def read_prompt_file(path: Path) -> list[str]:
    """kohya's prompt file: one prompt per line, blank lines and ``#`` comments skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the prompt file ({exc})") from exc
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise ValueError(f"{path}: no prompts in it (one per line, kohya's --n --w --h --d --l --s options)")
    return prompts


# --- layout and drawing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class GridLayout:
    rows: int
    cols: int
    cell_w: int
    cell_h: int
    label_w: int  # left margin holding the row labels
    header_h: int  # top margin holding the title and the column labels
    gap: int = 4

    @property
    def size(self) -> tuple[int, int]:
        return (self.label_w + self.cols * (self.cell_w + self.gap) + self.gap,
                self.header_h + self.rows * (self.cell_h + self.gap) + self.gap)

    def cell_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of a cell in the grid picture."""
        left = self.label_w + self.gap + col * (self.cell_w + self.gap)
        top = self.header_h + self.gap + row * (self.cell_h + self.gap)
        return left, top, left + self.cell_w, top + self.cell_h



def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def layout_for(row_labels: list[str], col_labels: list[str], cell_w: int, cell_h: int) -> GridLayout:
    font = _font()
    text_w = max(int(font.getlength(t)) for t in row_labels) if row_labels else 0
    line_h = int(sum(font.getbbox("Ag")[1::2])) + 4
    return GridLayout(len(row_labels), len(col_labels), cell_w, cell_h, label_w=text_w + 12, header_h=2 * line_h + 8)


def draw_grid(cells: list[list[Image.Image]], row_labels: list[str], col_labels: list[str], title: str) -> Image.Image:
    """The labelled grid: ``cells[row][col]`` (all one size), the title (prompt) above the column labels."""
    cell_w, cell_h = cells[0][0].size
    layout = layout_for(row_labels, col_labels, cell_w, cell_h)
    grid = Image.new("RGB", layout.size, (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    font = _font()
    draw.text((4, 4), _fit(title, font, layout.size[0] - 8), fill=(0, 0, 0), font=font)
    for col, label in enumerate(col_labels):
        left, top = layout.cell_box(0, col)[:2]
        text = _fit(label, font, cell_w)
        draw.text((left + (cell_w - font.getlength(text)) / 2, top - layout.header_h / 2), text, fill=(0, 0, 0),
                  font=font)
    for row, label in enumerate(row_labels):
        _, top, _, bottom = layout.cell_box(row, 0)
        draw.text((6, (top + bottom) / 2 - 6), label, fill=(0, 0, 0), font=font)
        for col in range(len(col_labels)):
            grid.paste(cells[row][col].convert("RGB"), layout.cell_box(row, col)[:2])
    return grid


def _fit(text: str, font: ImageFont.ImageFont, width: float) -> str:
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


# --- the manifest --------------------------------------------------------------------------------------


@dataclass
class Manifest:
    run: str
    rows: list[dict]  # {"label", "checkpoint"}
    columns: list[dict]  # {"label", "weight"}: weight None is the no-LoRA reference
    prompts: list[dict]  # {"prompt", "seed", "grid", "cells": [[file, ...], ...]}
    total: int
    done: int = 0
    finished: bool = False
    started: float = field(default_factory=time.time)

    def save(self, folder: Path) -> None:
        atomic_write_text(folder / MANIFEST, json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, folder: Path) -> Manifest:
        return cls(**json.loads((folder / MANIFEST).read_text()))


def cell_file(prompt: int, row: int, col: int) -> str:
    return f"cells/p{prompt:02d}_r{row:02d}_c{col:02d}.png"


def grid_file(prompt: int) -> str:
    return f"grid_{prompt:02d}.png"


def new_compare_dir(run_dir: Path, now: float | None = None) -> Path:
    base = run_dir / "compare" / time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    (path / "cells").mkdir(parents=True)
    return path


def latest_compare(run_dir: Path) -> Path | None:
    folders = sorted(p for p in (run_dir / "compare").glob("*") if (p / MANIFEST).exists())
    return folders[-1] if folders else None


# --- the background process ----------------------------------------------------------------------------


def compare_command(run_dir: Path, out_dir: Path, epochs: str = "all", weights: str = "0.5,0.75,1.0",
                    prompts: Path | None = None, seed: int | None = None) -> list[str]:
    return [sys.executable, "-m", "loratui", "compare", str(run_dir), "--out", str(out_dir), "--epochs", epochs,
            "--weights", weights, *(["--prompts", str(prompts)] if prompts else []),
            *(["--seed", str(seed)] if seed is not None else [])]


def launch_compare(run_dir: Path, epochs: str = "all", weights: str = "0.5,0.75,1.0", prompts: Path | None = None,
                   seed: int | None = None) -> Path:
    """Start ``loratui compare`` in its own session, as a trainer run is started (loratui.core.run.launch):
    it outlives the terminal; its folder gets ``compare.log``, ``pid`` and, at the end, ``exit_status.json``."""
    out_dir = new_compare_dir(run_dir)
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "DIFFUSERS_VERBOSITY": "error", "PYTHONUNBUFFERED": "1"}
    with open(out_dir / "compare.log", "ab") as log:
        proc = subprocess.Popen(compare_command(run_dir, out_dir, epochs, weights, prompts, seed),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env, close_fds=True)
    rundir.write_pid(out_dir, proc.pid)
    return out_dir
