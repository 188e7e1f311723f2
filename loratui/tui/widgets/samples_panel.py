"""The monitor's Samples panel: the images of the newest sampling round themselves, with their prompts.

Drawn with the Captions step's image preview (kitty/sixel where the terminal can, half-blocks otherwise, so
it works inside tmux over SSH). A round is the samples of one step: one image per sample prompt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Static

from loratui.tui.widgets.image_preview import ImagePreview

MAX_SHOWN = 3  # side by side, as many as the panel's width allows
MIN_COLUMNS = 12  # narrower than this, a half-block image is too small to recognise


def latest_round(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The samples written at the newest step (one per prompt), at most MAX_SHOWN of them."""
    if not samples:
        return []
    last = samples[-1]
    same = [s for s in samples if (s.get("step"), s.get("epoch")) == (last.get("step"), last.get("epoch"))]
    return same[:MAX_SHOWN]


def caption(round_: list[dict[str, Any]]) -> Text:
    """One line: which round is shown and its prompts, e.g. ``epoch 2 · step 40: sks toy | sks toy, red``."""
    first = round_[0]
    where = [f"epoch {first['epoch']}" if first.get("epoch") not in (None, "") else "",
             f"step {first['step']}" if first.get("step") is not None else ""]
    text = Text(" · ".join(w for w in where if w) or Path(first["path"]).name, style="bold", no_wrap=True,
                overflow="ellipsis")
    text.append(": " + " | ".join(str(s.get("prompt", "")) for s in round_))
    return text


class SamplesPanel(Vertical):
    DEFAULT_CSS = """
    SamplesPanel #sample-images { height: 1fr; }
    SamplesPanel ImagePreview { width: 1fr; min-height: 3; }
    SamplesPanel #sample-caption { height: 1; color: $text-muted; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.shown: list[Path] = []

    def compose(self) -> ComposeResult:
        with Horizontal(id="sample-images"):
            for index in range(MAX_SHOWN):
                yield ImagePreview(id=f"sample-{index}")
        yield Static("no samples yet", id="sample-caption")

    def on_mount(self) -> None:
        self.query_one("#sample-images").display = False

    def show_samples(self, samples: list[dict[str, Any]]) -> None:
        """Show the newest round of ``samples`` (the monitor's snapshot list); redraws only when it changed."""
        round_ = latest_round(samples)
        paths = [Path(s["path"]) for s in round_]
        if not round_ or paths == self.shown:
            return
        self.shown = paths
        self.query_one("#sample-images").display = True
        self._layout_images()
        self.query_one("#sample-caption", Static).update(caption(round_))

    def on_resize(self) -> None:
        self._layout_images()

    def _layout_images(self) -> None:
        fits = max(1, self.content_size.width // MIN_COLUMNS)
        for index, preview in enumerate(self.query(ImagePreview)):
            shown = index < min(len(self.shown), fits)
            preview.display = shown
            preview.show(self.shown[index] if shown else None)
