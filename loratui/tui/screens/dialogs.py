"""Modal questions: confirm, ask for a path, and the caption batch-tool dialog with a preview."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from loratui.core.captions import ops

DIALOG_CSS = """
{name} {{ align: center middle; }}
{name} > Vertical {{ width: 90%; max-width: 100; height: auto; max-height: 100%; border: thick $primary;
                    background: $surface; padding: 0 1; }}
{name} Input, {name} Select {{ margin-top: 1; }}
{name} Horizontal.buttons {{ height: auto; align-horizontal: right; margin-top: 1; }}
{name} Button {{ margin-left: 1; }}
"""


class ConfirmDialog(ModalScreen[bool]):
    DEFAULT_CSS = DIALOG_CSS.format(name="ConfirmDialog")
    BINDINGS = [Binding("escape", "dismiss(False)", "Cancel", id="dialog.cancel")]

    def __init__(self, question: str, yes: str = "Yes") -> None:
        super().__init__()
        self.question, self.yes = question, yes

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text(self.question))
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="no", compact=True)
                yield Button(self.yes, id="yes", variant="warning", compact=True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class PathDialog(ModalScreen[Path | None]):
    """Ask for a file path (load or export a preset)."""

    DEFAULT_CSS = DIALOG_CSS.format(name="PathDialog")
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="dialog.cancel")]

    def __init__(self, title: str, value: str = "", choices: list[tuple[str, str]] | None = None) -> None:
        super().__init__()
        self.title_text, self.value, self.choices = title, value, choices or []

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text)
            if self.choices:
                yield Select(self.choices, prompt="shipped presets", id="choice", compact=True)
            yield Input(self.value, placeholder="path/to/file.yaml", id="path", compact=True)
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel", compact=True)
                yield Button("OK", id="ok", variant="primary", compact=True)

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.value is not Select.BLANK:
            self.query_one("#path", Input).value = str(event.value)

    def on_input_submitted(self) -> None:
        self._finish()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self._finish()
        else:
            self.dismiss(None)

    def _finish(self) -> None:
        value = self.query_one("#path", Input).value.strip()
        self.dismiss(Path(value).expanduser() if value else None)


TAG_TOOLS = {
    "activation": ("Activation tag first", "tag", None),
    "prefix": ("Add prefix", "text", None),
    "suffix": ("Add suffix", "text", None),
    "replace": ("Search and replace", "find", "replace with"),
    "regex": ("Regex replace", "pattern", "replacement"),
    "merge": ("Merge synonym tags", "target tag", "synonyms, comma separated"),
    "remove": ("Remove tags", "tags, comma separated", None),
    "prune": ("Prune rare tags", "minimum count", None),
    "dedupe": ("Remove repeated tags", None, None),
    "sort": ("Sort tags (keep first)", "tags to keep in front", None),
}


def build_tag_op(tool: str, first: str, second: str, files: list[ops.CaptionFile]) -> ops.TextOp:
    """The operation a dialog's fields describe; ValueError with a one-line reason when they are incomplete."""
    tags = [t.strip() for t in first.split(",") if t.strip()]
    needs_first = TAG_TOOLS[tool][1] is not None
    if needs_first and not first.strip():
        raise ValueError(f"give the {TAG_TOOLS[tool][1]}")
    if tool == "activation":
        return ops.activation_tag(first)
    if tool == "prefix":
        return ops.prefix(first)
    if tool == "suffix":
        return ops.suffix(first)
    if tool in ("replace", "regex"):
        return ops.replace(first, second, regex=tool == "regex")
    if tool == "merge":
        return ops.merge_tags(first.strip(), [t.strip() for t in second.split(",") if t.strip()])
    if tool == "remove":
        return ops.remove_tags(tags)
    if tool == "prune":
        if not first.strip().isdigit():
            raise ValueError("the minimum count must be a whole number")
        return ops.prune_rare(files, int(first))
    if tool == "dedupe":
        return ops.dedupe_tags()
    return ops.sort_tags(int(first) if first.strip().isdigit() else 0)


class TagToolDialog(ModalScreen[list[ops.Change] | None]):
    """Pick a batch tag operation, preview its diff, then apply (the caller writes with the journal)."""

    DEFAULT_CSS = DIALOG_CSS.format(name="TagToolDialog") + """
    TagToolDialog #diff { height: auto; max-height: 8; border: round $panel; }
    """
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="dialog.cancel")]

    def __init__(self, files: list[ops.CaptionFile], root: Path) -> None:
        super().__init__()
        self.files, self.root = files, root
        self.changes: list[ops.Change] | None = None

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Batch tag tools — {len(self.files)} caption(s)")
            yield Select([(label, key) for key, (label, _, _) in TAG_TOOLS.items()], value="activation",
                         allow_blank=False, id="tool", compact=True)
            yield Input(placeholder="tag", id="first", compact=True)
            yield Input(placeholder="", id="second", compact=True)
            with VerticalScroll(id="diff"):
                yield Static("press Preview to see the changes", id="diff-text")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel", compact=True)
                yield Button("Preview", id="preview", compact=True)
                yield Button("Apply", id="apply", variant="primary", disabled=True, compact=True)

    def on_mount(self) -> None:
        self._update_fields("activation")

    def on_select_changed(self, event: Select.Changed) -> None:
        self._update_fields(str(event.value))

    def _update_fields(self, tool: str) -> None:
        _, first, second = TAG_TOOLS[tool]
        for widget_id, label in (("#first", first), ("#second", second)):
            field = self.query_one(widget_id, Input)
            field.display = label is not None
            field.placeholder = label or ""
        self._invalidate()

    def on_input_changed(self) -> None:
        self._invalidate()

    def _invalidate(self) -> None:
        self.changes = None
        self.query_one("#apply", Button).disabled = True

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            self.dismiss(None)
        elif event.button.id == "preview":
            self.preview()
        elif event.button.id == "apply" and self.changes is not None:
            self.dismiss(self.changes)

    def preview(self) -> None:
        tool = str(self.query_one("#tool", Select).value)
        try:
            op = build_tag_op(tool, self.query_one("#first", Input).value, self.query_one("#second", Input).value,
                              self.files)
            changes = ops.plan(self.files, op)  # refuses a caption it cannot decode, naming the file
        except ValueError as exc:  # ops.CaptionError and CaptionDecodeError: one line, shown as it is
            self.query_one("#diff-text", Static).update(Text(str(exc), style="bold red"))
            return
        self.changes = changes
        diff = ops.diff(self.changes[:200], self.root) or "no caption would change"
        summary = f"{len(self.changes)} caption(s) will change\n"
        self.query_one("#diff-text", Static).update(Text(summary + diff))
        self.query_one("#apply", Button).disabled = not self.changes


class TextDialog(ModalScreen[None]):
    """A long text to read (the changed settings): scrolls inside the dialog, Esc or Enter closes it."""

    DEFAULT_CSS = DIALOG_CSS.format(name="TextDialog") + """
    TextDialog #dialog-text { height: auto; max-height: 14; }
    """
    BINDINGS = [Binding("escape", "dismiss(None)", "Close", id="dialog.close")]

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self.title_text, self.text = title, text

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text(self.title_text, style="bold"))
            with VerticalScroll(id="dialog-text"):
                yield Static(Text(self.text))
            with Horizontal(classes="buttons"):
                yield Button("Close", id="close", variant="primary", compact=True)

    def on_mount(self) -> None:
        self.query_one("#close", Button).focus()

    def on_button_pressed(self) -> None:
        self.dismiss(None)
