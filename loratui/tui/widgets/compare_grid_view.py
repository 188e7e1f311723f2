"""A comparison grid picture with one highlighted cell, drawn with the same terminal image widget as the
Captions preview (kitty/sixel where the terminal can, half-blocks otherwise)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image as PILImage
from PIL import ImageDraw
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Container
from textual.widgets import Static

from loratui.core import compare_grid as G
from loratui.tui.widgets.image_preview import _image_class

MAX_SIDE = 768  # terminals show a few hundred pixels at most; big grids are shrunk before drawing


def highlighted(grid: PILImage.Image, layout: G.GridLayout, row: int, col: int) -> PILImage.Image:
    """A copy of the grid, shrunk to ``MAX_SIDE``, with a frame around cell (row, col)."""
    image = grid.convert("RGB")
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = layout.cell_box(row, col)
    width = max(3, max(image.size) // 150)
    draw.rectangle((left - width, top - width, right + width - 1, bottom + width - 1), outline=(255, 200, 0),
                   width=width)
    image.thumbnail((MAX_SIDE, MAX_SIDE))
    return image


class CompareGridView(Container):
    DEFAULT_CSS = """
    CompareGridView { height: 1fr; }
    CompareGridView > #grid-note { height: auto; color: $text-muted; }
    """

    def __init__(self, plain: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.plain = plain
        self._widget = None

    def compose(self) -> ComposeResult:
        yield Static("no comparison yet", id="grid-note")

    def show(self, grid_path: Path | None, layout: G.GridLayout | None, row: int, col: int, caption: str) -> None:
        note = self.query_one("#grid-note", Static)
        note.update(Text(caption))
        if grid_path is None or layout is None:
            if self._widget is not None:
                self._widget.remove()
                self._widget = None
            return
        try:
            with PILImage.open(grid_path) as im:
                image = highlighted(im, layout, row, col)
        except (OSError, ValueError) as exc:
            note.update(Text(f"cannot show {grid_path.name}: {str(exc).splitlines()[0]}"))
            return
        if self._widget is None:
            self._widget = _image_class(self.plain)(image)
            self._widget.styles.width = "auto"
            self._widget.styles.height = "1fr"
            self.mount(self._widget)
        else:
            self._widget.image = image
