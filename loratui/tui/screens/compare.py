"""Compare checkpoints from the monitor: start `loratui compare` in the background, watch its manifest, move a
highlight over the grid's cells, show one cell larger, mark the favourite; and the run's latest sample images.

Everything heavy runs in other processes (the comparison, the favourite copy); this screen only reads files.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image as PILImage
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Label, Static

from loratui.core import compare_grid as G
from loratui.core.run import rundir
from loratui.tui.widgets.compare_grid_view import CompareGridView
from loratui.tui.widgets.image_preview import ImagePreview

POLL_SECONDS = 1.0


def latest_samples(run_dir: Path, count: int = 1) -> list[Path]:
    """The newest sample images (their names sort by epoch, then prompt)."""
    return sorted((run_dir / "samples").glob("*.png"))[-count:]


class CellDialog(ModalScreen[None]):
    """One cell, larger."""

    DEFAULT_CSS = """
    CellDialog { align: center middle; }
    CellDialog > Vertical { width: 90%; height: 90%; border: thick $primary; background: $surface; padding: 0 1; }
    """
    BINDINGS = [Binding("escape,enter", "dismiss(None)", "Close", id="compare.cell.close")]

    def __init__(self, path: Path, title: str) -> None:
        super().__init__()
        self.path, self.title_text = path, title

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text(self.title_text), id="cell-title")
            yield ImagePreview(id="cell-image")

    def on_mount(self) -> None:
        self.query_one(ImagePreview).show(self.path)


class CompareScreen(Screen):
    DEFAULT_CSS = """
    CompareScreen #compare-body { height: 1fr; }
    CompareScreen CompareGridView { width: 3fr; border: round $primary; }
    CompareScreen #samples-side { width: 1fr; border: round $primary; }
    CompareScreen #compare-status { height: auto; padding: 0 1; }
    """
    BINDINGS = [
        Binding("n", "new", "New comparison", id="compare.new"),
        Binding("up", "move(-1, 0)", "Up", show=False, id="compare.up"),
        Binding("down", "move(1, 0)", "Down", show=False, id="compare.down"),
        Binding("left", "move(0, -1)", "Left", show=False, id="compare.left"),
        Binding("right", "move(0, 1)", "Right", show=False, id="compare.right"),
        Binding("enter", "open_cell", "Larger", id="compare.open"),
        Binding("f", "favourite", "Favourite", id="compare.favourite"),
        Binding("right_square_bracket", "prompt(1)", "Next prompt", id="compare.next"),
        Binding("left_square_bracket", "prompt(-1)", "Prev prompt", show=False, id="compare.prev"),
        Binding("escape", "app.pop_screen", "Back", id="compare.back"),
    ]

    @dataclass
    class FavouriteDone(Message):
        ok: bool
        text: str

    def __init__(self, run_dir: Path, weights: str = "0.5,0.75,1.0") -> None:
        super().__init__()
        self.run_dir, self.weights = run_dir, weights
        self.folder: Path | None = G.latest_compare(run_dir)
        self.manifest: G.Manifest | None = None
        self.grid_layout: G.GridLayout | None = None
        self.row = self.col = self.prompt = 0
        self.shown: tuple | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text(f"Compare checkpoints: {self.run_dir.name}", style="bold"), id="compare-title")
        yield Static("", id="compare-status")
        with Horizontal(id="compare-body"):
            view = CompareGridView(id="grid-view")
            view.border_title = "Grid (arrows, Enter: larger, f: favourite)"
            yield view
            with Vertical(id="samples-side") as side:
                side.border_title = "Latest sample"
                yield Label("", id="sample-caption")
                yield ImagePreview(id="sample-image")
        yield Footer()

    def on_mount(self) -> None:
        self.poll()
        self.set_interval(POLL_SECONDS, self.poll)

    # --- reading the comparison ------------------------------------------------------------------------
    def poll(self) -> None:
        samples = latest_samples(self.run_dir)
        self.query_one("#sample-caption", Label).update(Text(samples[-1].name if samples else "no samples yet"))
        self.query_one("#sample-image", ImagePreview).show(samples[-1] if samples else None)
        if self.folder is None or not (self.folder / G.MANIFEST).exists():
            self._status("no comparison yet: press n to render every checkpoint at weights " + self.weights)
            return
        try:
            self.manifest = G.Manifest.load(self.folder)
        except (OSError, ValueError):
            return  # being replaced right now: the next poll reads it
        self._show()

    def _status(self, text: str, style: str = "") -> None:
        self.query_one("#compare-status", Static).update(Text(text, style=style))

    def _show(self) -> None:
        m, folder = self.manifest, self.folder
        assert m is not None and folder is not None
        state = rundir.run_state(folder)
        if not m.finished:
            failed = state in ("failed", "dead")
            status = rundir.read_exit_status(folder) or {}
            self._status(f"comparison {state}: {status.get('message', '')} (see {folder / 'compare.log'})" if failed
                         else f"rendering {m.done}/{m.total} images…", "bold red" if failed else "")
            self.query_one(CompareGridView).show(None, None, 0, 0, f"{folder.name}: not finished")
            return
        entry = m.prompts[self.prompt]
        self.grid_layout = self.grid_layout or self._layout(folder, m)
        row, col = m.rows[self.row], m.columns[self.col]
        key = (folder, self.prompt, self.row, self.col)
        self._status(f"{len(m.prompts)} prompt(s): {entry['prompt']}  (seed {entry['seed']})")
        if key != self.shown:
            self.shown = key
            caption = f"prompt {self.prompt + 1}/{len(m.prompts)}  ▸ {row['label']} × {col['label']}"
            self.query_one(CompareGridView).show(folder / entry["grid"], self.grid_layout, self.row, self.col, caption)

    @staticmethod
    def _layout(folder: Path, m: G.Manifest) -> G.GridLayout:
        with PILImage.open(folder / m.prompts[0]["cells"][0][0]) as im:
            w, h = im.size
        return G.layout_for([r["label"] for r in m.rows], [c["label"] for c in m.columns], w, h)

    def selected(self) -> tuple[dict, dict, Path] | None:
        """(row, column, cell file) under the highlight, when a finished comparison is shown."""
        m = self.manifest
        if m is None or not m.finished or self.folder is None:
            return None
        return m.rows[self.row], m.columns[self.col], self.folder / m.prompts[self.prompt]["cells"][self.row][self.col]

    # --- keys ------------------------------------------------------------------------------------------
    def action_move(self, drow: int, dcol: int) -> None:
        if self.selected() is None:
            return
        assert self.manifest is not None
        self.row = min(max(self.row + drow, 0), len(self.manifest.rows) - 1)
        self.col = min(max(self.col + dcol, 0), len(self.manifest.columns) - 1)
        self._show()

    def action_prompt(self, step: int) -> None:
        if self.selected() is None:
            return
        assert self.manifest is not None
        self.prompt = (self.prompt + step) % len(self.manifest.prompts)
        self._show()

    def action_open_cell(self) -> None:
        chosen = self.selected()
        if chosen is not None:
            row, col, path = chosen
            self.app.push_screen(CellDialog(path, f"{row['label']} × {col['label']}"))

    def action_new(self) -> None:
        if self.folder is not None and rundir.run_state(self.folder) == "running":
            self.notify("a comparison is already rendering")
            return
        state = rundir.run_state(self.run_dir)
        if state in ("running", "starting", "stopping"):
            self.notify("the run is still training; compare when it has finished", severity="warning")
            return
        self.folder = G.launch_compare(self.run_dir, weights=self.weights)
        self.grid_layout, self.shown, self.row, self.col, self.prompt = None, None, 0, 0, 0
        self.notify(f"comparing in the background: {self.folder}")
        self.poll()

    def action_favourite(self) -> None:
        chosen = self.selected()
        if chosen is None:
            return
        row, col, _ = chosen
        if col["weight"] is None:
            self.notify("pick a weight column: the no-LoRA column has no checkpoint", severity="warning")
            return
        self._favourite(row["checkpoint"], col["weight"])

    @work(thread=True, exclusive=True, group="favourite", exit_on_error=False)
    def _favourite(self, checkpoint: str, weight: float) -> None:
        # A separate process: the copy needs safetensors/torch, which the TUI never imports.
        out = subprocess.run([sys.executable, "-m", "loratui", "compare", str(self.run_dir), "--favourite",
                              checkpoint, "--weight", str(weight)], capture_output=True, text=True)
        text = (out.stdout if out.returncode == 0 else out.stderr).strip().splitlines()
        self.post_message(self.FavouriteDone(out.returncode == 0, text[-1] if text else "no output"))

    def on_compare_screen_favourite_done(self, message: FavouriteDone) -> None:
        self.notify(message.text, severity="information" if message.ok else "error", timeout=8)
