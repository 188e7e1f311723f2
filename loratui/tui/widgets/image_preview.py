"""Preview an image in the terminal: kitty/sixel graphics where the terminal can, half-blocks otherwise."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image as PILImage
from PIL import ImageOps
from textual.app import ComposeResult
from textual.containers import Container
from textual.widgets import Static


def _image_class(plain: bool):
    # Imported late: textual-image asks the terminal for its cell size at import.
    from textual_image.widget import HalfcellImage, Image

    return HalfcellImage if plain or os.environ.get("LORATUI_PLAIN_IMAGES") else Image


class ImagePreview(Container):
    DEFAULT_CSS = """
    ImagePreview { height: 1fr; min-height: 6; }
    ImagePreview > Static { color: $text-muted; }
    """

    def __init__(self, plain: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.plain = plain
        self.path: Path | None = None

    def compose(self) -> ComposeResult:
        yield Static("no image selected", id="preview-note")

    def show(self, path: Path | None) -> None:
        if path == self.path:
            return
        self.path = path
        self.remove_children()
        if path is None:
            self.mount(Static("no image selected"))
            return
        try:
            with PILImage.open(path) as im:
                im.draft("RGB", (256, 256))
                image = ImageOps.exif_transpose(im).convert("RGB")
                image.thumbnail((256, 256))
        except (OSError, ValueError) as exc:
            self.mount(Static(f"cannot preview {path.name}: {str(exc).splitlines()[0]}"))
            return
        widget = _image_class(self.plain)(image)
        widget.styles.width = "auto"
        widget.styles.height = "1fr"
        self.mount(widget)
