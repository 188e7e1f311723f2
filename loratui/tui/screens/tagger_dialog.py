"""Tag images with a WD tagger from the Captions step, through a `loratui caption-images --tagger wd` process.

The tagger needs onnxruntime (and maybe a hub download), which the TUI never imports: a child process does the
work, so its memory goes when it ends and the UI keeps drawing. The command writes through the caption journal,
so the Captions step's Ctrl+Z undoes a tagging run like any other caption change.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Button, Input, Label, ProgressBar, Select, Static

from loratui.commands.dataset import WD_DEFAULT_MODEL
from loratui.tui.screens.dialogs import DIALOG_CSS

MODES = [("missing captions only", "missing"), ("append to captions", "append"), ("overwrite captions", "overwrite")]


@dataclass
class TagRequest:
    """What the dialog's fields ask for; ``args`` is the command line that does it."""

    root: Path
    model: str
    mode: str
    general: float
    character: float
    caption_ext: str = ".txt"

    def args(self, dry_run: bool) -> list[str]:
        args = [sys.executable, "-m", "loratui", "caption-images", str(self.root), "--tagger", "wd",
                "--model", self.model, "--mode", self.mode, "--general-threshold", str(self.general),
                "--character-threshold", str(self.character), "--caption-ext", self.caption_ext]
        return [*args, "--dry-run"] if dry_run else args


def parse_threshold(name: str, text: str) -> float:
    """A threshold field's value; ValueError with a one-line reason for anything but a number in (0, 1]."""
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"{name} threshold: give a number between 0 and 1, e.g. 0.35") from None
    if not 0 < value <= 1:
        raise ValueError(f"{name} threshold {value}: use a value between 0 and 1")
    return value


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


class TaggerDialog(ModalScreen[str | None]):
    """Pick the tagger and options, preview the diff (a dry run), then tag; dismisses with the summary line."""

    DEFAULT_CSS = DIALOG_CSS.format(name="TaggerDialog") + """
    TaggerDialog Horizontal.options { height: 1; margin-top: 1; }
    TaggerDialog Horizontal.options Label { width: auto; padding: 0 1 0 0; }
    TaggerDialog Horizontal.options Input, TaggerDialog Horizontal.options Select { margin-top: 0; }
    TaggerDialog #tag-mode { width: 26; margin-right: 2; }
    TaggerDialog #tag-general, TaggerDialog #tag-character { width: 7; margin-right: 2; }
    TaggerDialog #tag-progress { margin-top: 1; }
    TaggerDialog #tag-output-box { height: auto; max-height: 8; border: round $panel; margin-top: 1; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="tagger.cancel")]

    @dataclass
    class Finished(Message):
        """The tagger process ended (``code`` 0: it worked); its output, for the dialog to show."""

        dry_run: bool
        code: int
        stdout: str
        stderr: str

    def __init__(self, root: Path, caption_ext: str, images: int, uncaptioned: int) -> None:
        super().__init__()
        self.root, self.caption_ext = root, caption_ext
        self.images, self.uncaptioned = images, uncaptioned
        self.proc: subprocess.Popen | None = None
        self._refocus: Widget | None = None

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text(f"Tag with a WD tagger — {self.images} image(s), {self.uncaptioned} without a caption",
                             style="bold"))
            yield Label("Tagger: a hub id, or a folder with model.onnx and selected_tags.csv (works offline)")
            yield Input(WD_DEFAULT_MODEL, placeholder="hub id, or a folder with model.onnx and selected_tags.csv",
                        id="tag-model", compact=True, tooltip="WD 1.4 / v3 tagger: hub id or local folder")
            with Horizontal(classes="options"):
                yield Select(MODES, value="missing", allow_blank=False, id="tag-mode", compact=True)
                yield Label("general ≥")
                yield Input("0.35", id="tag-general", compact=True)
                yield Label("character ≥")
                yield Input("0.85", id="tag-character", compact=True)
            yield ProgressBar(id="tag-progress", show_eta=False, show_percentage=False)
            with VerticalScroll(id="tag-output-box"):
                yield Static("Preview shows what would change; Tag writes it (Ctrl+Z on Captions undoes it)",
                             id="tag-output")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel", compact=True)
                yield Button("Preview", id="preview", compact=True)
                yield Button("Tag", id="tag", variant="primary", compact=True)

    def on_mount(self) -> None:
        self.query_one("#tag-progress").display = False
        self.query_one("#tag-model", Input).focus()

    def request(self) -> TagRequest:
        """The fields as a request; ValueError with a one-line reason when one is not usable."""
        model = self.query_one("#tag-model", Input).value.strip()
        if not model:
            raise ValueError("give the tagger: a hub id such as SmilingWolf/wd-vit-tagger-v3, or a local folder")
        return TagRequest(self.root, model, str(self.query_one("#tag-mode", Select).value),
                          parse_threshold("general", self.query_one("#tag-general", Input).value),
                          parse_threshold("character", self.query_one("#tag-character", Input).value),
                          self.caption_ext)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            self.action_cancel()
        elif event.button.id in ("preview", "tag"):
            self.start(dry_run=event.button.id == "preview")

    def start(self, dry_run: bool) -> None:
        if self.proc is not None:
            return
        try:
            request = self.request()
        except ValueError as exc:
            self._show(Text(str(exc), style="bold red"))
            return
        try:
            # Started here, not in the worker, so that Cancel always has a process to stop.
            self.proc = subprocess.Popen(request.args(dry_run), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True)
        except OSError as exc:
            self._show(Text(f"cannot start the tagger: {exc.strerror}", style="bold red"))
            return
        self._busy(True)
        what = "previewing" if dry_run else "tagging"
        self._show(Text(f"{what} with {request.model}… (the first run may download the model)", style="italic"))
        self._wait(self.proc, dry_run)

    @work(thread=True, exclusive=True, exit_on_error=False, group="wd-tagger")
    def _wait(self, proc: subprocess.Popen, dry_run: bool) -> None:
        stdout, stderr = proc.communicate()
        self.post_message(self.Finished(dry_run, proc.returncode, stdout, stderr))

    def on_tagger_dialog_finished(self, message: Finished) -> None:
        self.proc = None
        self._busy(False)
        if message.code != 0:
            reason = last_line(message.stderr) or f"the tagger stopped (exit status {message.code})"
            self._show(Text(reason.removeprefix("error: "), style="bold red"))
            return
        if message.dry_run:
            self._show(Text(message.stdout.rstrip() or "no caption would change"))
            return
        summary = last_line(message.stdout).split(";")[0]  # the CLI's undo hint names a command; Ctrl+Z here
        self.dismiss(summary or "tagging finished")

    def _busy(self, busy: bool) -> None:
        if busy:
            self._refocus = self.focused  # a disabled button drops the focus; give it back afterwards
        self.query_one("#tag-progress").display = busy
        for button in ("#preview", "#tag"):
            self.query_one(button, Button).disabled = busy
        if not busy and self._refocus is not None:
            self._refocus.focus()

    def _show(self, text: Text) -> None:
        self.query_one("#tag-output", Static).update(text)

    def action_cancel(self) -> None:
        self._stop()
        self.dismiss(None)

    def on_unmount(self) -> None:
        self._stop()  # quitting the app with the dialog open must not leave a tagger writing captions later

    def _stop(self) -> None:
        """Stop a running tagger: it writes only at its end, so stopping it changes no caption."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
