"""Step 2: every image with its caption and a preview; fast editing, batch tag tools, frequency, undo."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, Static, TextArea

from loratui.core.captions import journal, ops
from loratui.core.captions.text import CaptionDecodeError
from loratui.core.config import TrainingConfig
from loratui.core.dataset.report import DatasetReport
from loratui.tui.screens.dialogs import ConfirmDialog, TagToolDialog
from loratui.tui.screens.tagger_dialog import TaggerDialog
from loratui.tui.widgets.image_preview import ImagePreview

PREVIEW_DELAY = 0.12
# What the caption core raises for bad input or a busy dataset: one line naming the file, shown as it is.
CAPTION_ERRORS = (ops.CaptionError, CaptionDecodeError)


class CaptionsStep(Vertical):
    # Priority bindings on keys the filter box does not use, so they work from every focused widget. Ctrl+Z is
    # priority too: the editor's own undo would be a second history with a second meaning for the key.
    BINDINGS = [
        Binding("ctrl+s", "save", "Save", id="captions.save", priority=True, tooltip="Save the caption"),
        Binding("ctrl+z", "undo", "Undo", id="captions.undo", priority=True,
                tooltip="Undo: first the unsaved edit, then saved edits and tag tools, newest first"),
        Binding("ctrl+t", "tag_tools", "Tags", id="captions.tools", priority=True,
                tooltip="Batch tag tools (preview, then apply)"),
        Binding("ctrl+g", "next_problem", "Problem", id="captions.problem", priority=True,
                tooltip="Go to the next image with a problem"),
        Binding("ctrl+f", "focus_filter", "Filter", id="captions.filter", priority=True,
                tooltip="Filter the images by file name or tag"),
        # Not in the footer (it is full at 80 columns): F1 and the command palette list it.
        Binding("ctrl+l", "wd_tagger", "WD tagger", id="captions.wd", priority=True, show=False,
                tooltip="Tag images with a WD tagger (anime): missing captions, append or overwrite"),
    ]

    def __init__(self, config: TrainingConfig, plain_images: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.plain_images = plain_images
        self.files: list[ops.CaptionFile] = []
        self.shown: list[ops.CaptionFile] = []
        self.current: ops.CaptionFile | None = None
        self.problems: dict[Path, list[str]] = {}  # image or caption → what the dataset check said
        self.root: Path | None = None
        self._preview_timer = None

    def compose(self) -> ComposeResult:
        with Horizontal():
            with Vertical(id="caption-list"):
                yield Input(placeholder="filter: file name or tag (glob)", id="caption-filter", compact=True)
                table = DataTable(id="images", cursor_type="row", zebra_stripes=True)
                table.border_title = "Images"
                yield table
            with Vertical(id="caption-detail"):
                yield ImagePreview(plain=self.plain_images, id="preview")
                yield Static("", id="caption-file")
                yield Static("", id="caption-problem")
                yield TextArea("", id="editor", soft_wrap=True, show_line_numbers=False)
                freq = DataTable(id="tag-freq", cursor_type="none")
                freq.border_title = "Tag frequency"
                yield freq

    def on_mount(self) -> None:
        self.query_one("#images", DataTable).add_columns("", "file", "caption")
        self.query_one("#tag-freq", DataTable).add_columns("count", "tag")

    def first_focus(self) -> DataTable:
        return self.query_one("#images", DataTable)

    def config_updated(self, config: TrainingConfig) -> None:
        old_ext = self.config.dataset.caption_extension
        self.config = config
        if self.root is not None and config.dataset.caption_extension != old_ext:
            self.save_current()  # the edit belongs to the file it was typed for
            if not self.unsaved():  # an edit that could not be saved stays in the editor, never dropped
                self._reload_keeping_selection()  # the captions training will now read (or why there are none)

    def load(self, root: Path, report: DatasetReport | None = None) -> None:
        """(Re)read every caption under ``root``; keep the selection."""
        self.root = root
        if report is not None:
            self.problems = {}
            for finding in report.sorted_findings():
                line = f"{finding.severity}: {finding.message}; {finding.fix}"
                self.problems.setdefault(finding.path, []).append(line)
        selected = self.current.image if self.current else None
        pending = self.query_one("#editor", TextArea).text if self.unsaved() else None  # a refused save
        try:
            self.files = ops.load_captions(root, self.config.dataset.caption_extension)
        except CAPTION_ERRORS as exc:
            self._show_load_error(str(exc))
            return
        self.current = None
        self.apply_filter(select=selected)
        if pending is not None and self.current is not None and self.current.image == selected:
            self.query_one("#editor", TextArea).load_text(pending)  # a re-check must not drop the kept edit
        self.refresh_frequency()

    def _show_load_error(self, message: str) -> None:
        """No list rather than a wrong one: the captions cannot be read as configured (e.g. ``.png``)."""
        self.files, self.shown, self.current = [], [], None
        self.query_one("#images", DataTable).clear()
        self.query_one("#tag-freq", DataTable).clear()
        self.query_one("#editor", TextArea).load_text("")
        self.query_one("#caption-file", Static).update(Text("no captions listed", style="bold"))
        self.query_one("#caption-problem", Static).update(Text(message, style="bold red"))
        self.notify(message, title="Captions", severity="error", timeout=10)

    def apply_filter(self, select: Path | None = None) -> None:
        pattern = self.query_one("#caption-filter", Input).value.strip()
        self.shown = self.files if not pattern else [f for f in self.files if ops.matches(f, f"*{pattern}*")]
        table = self.query_one("#images", DataTable)
        table.clear()
        for item in self.shown:
            flag = Text("!", style="bold red") if item.image in self.problems or item.caption in self.problems else ""
            table.add_row(flag, Text(item.image.name), Text(item.text.replace("\n", " ⏎ ")[:80]),
                          key=str(item.image))
        row = next((i for i, f in enumerate(self.shown) if f.image == select), 0)
        if self.shown:
            table.move_cursor(row=row)
            self.show(self.shown[row])

    def refresh_frequency(self) -> None:
        table = self.query_one("#tag-freq", DataTable)
        table.clear()
        counts = ops.tag_frequency(self.files).get("*")
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if counts else []  # stable ties
        for tag, count in ranked[:50]:
            table.add_row(str(count), Text(tag))

    @on(Input.Changed, "#caption-filter")
    def filter_changed(self) -> None:
        self.save_current()
        self.apply_filter(select=self.current.image if self.current else None)

    @on(DataTable.RowHighlighted, "#images")
    def row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        row = event.data_table.cursor_row  # the row now, not when the (possibly stale) event was sent
        if 0 <= row < len(self.shown):
            self.show(self.shown[row])

    def show(self, item: ops.CaptionFile) -> None:
        if self.current is not None and self.current.image == item.image:
            return
        self.save_current()  # save on leave: an edit is never lost
        if self.unsaved():
            self._stay_on_current()  # the save was refused (message shown): leaving would drop the edit
            return
        self.current = item
        # Holding an arrow key over 10,000 rows must not decode every image: draw the preview once it settles.
        if self._preview_timer is not None:
            self._preview_timer.stop()
        self._preview_timer = self.set_timer(PREVIEW_DELAY, lambda: self.query_one("#preview", ImagePreview).show(
            self.current.image if self.current else None))
        status = "" if item.exists else " (no caption yet)"
        self.query_one("#caption-file", Static).update(Text(f"{item.caption.name}{status}"))
        problems = self.problems.get(item.image, []) + self.problems.get(item.caption, [])
        self.query_one("#caption-problem", Static).update(Text("\n".join(problems), style="yellow"))
        self.query_one("#editor", TextArea).load_text(item.text)

    def select_image(self, path: Path) -> None:
        item = next((f for f in self.files if path in (f.image, f.caption)), None)
        if item is None:
            self.notify(f"{path.name} is not an image with a caption slot here", severity="warning")
            return
        field = self.query_one("#caption-filter", Input)
        with field.prevent(Input.Changed):
            field.value = ""
        self.apply_filter(select=item.image)
        self.query_one("#editor", TextArea).focus()

    def save_current(self) -> bool:
        """Write the editor's text if it changed (journaled, so Undo reverts it). Returns True if it wrote."""
        if self.current is None or self.root is None:
            return False
        text = self.query_one("#editor", TextArea).text
        if text == self.current.text:
            return False
        # journal.apply takes the dataset's caption lock, the one `loratui captions` holds: never two writers.
        try:
            change = ops.edit(self.current, text)  # the file's own encoding, BOM and line endings
            journal.apply(self.root, [change], f"edit {self.current.caption.name}")
        except journal.CaptionLockError as exc:
            self.notify(f"{self.current.caption.name} not saved: another caption operation (pid {exc.holder}) is "
                        "changing this dataset; your edit is kept, Ctrl+S saves it once that one ends",
                        severity="error", timeout=10)
            return False
        except CAPTION_ERRORS as exc:
            self.notify(f"{exc}; your text is still in the editor", title="Not saved", severity="error", timeout=10)
            return False
        except OSError as exc:
            self.notify(f"could not save {self.current.caption}: {exc.strerror}; your text is still in the editor",
                        severity="error", timeout=10)
            return False
        self._replace_file(ops.CaptionFile(self.current.image, self.current.caption, change.new, True))
        return True

    def unsaved(self) -> bool:
        """True while the editor holds text that is not in the caption file (a save was refused or not tried)."""
        return self.current is not None and self.query_one("#editor", TextArea).text != self.current.text

    def _stay_on_current(self) -> None:
        table = self.query_one("#images", DataTable)
        row = next((i for i, f in enumerate(self.shown) if self.current and f.image == self.current.image), None)
        if row is not None and row != table.cursor_row:
            table.move_cursor(row=row)

    def _replace_file(self, item: ops.CaptionFile) -> None:
        self.files = [item if f.image == item.image else f for f in self.files]
        self.shown = [item if f.image == item.image else f for f in self.shown]
        self.current = item
        table = self.query_one("#images", DataTable)
        table.update_cell(str(item.image), table.ordered_columns[2].key, Text(item.text.replace("\n", " ⏎ ")[:80]))

    def action_save(self) -> None:
        if self.save_current():
            self.notify(f"saved {self.current.caption.name}")
            self.refresh_frequency()

    def action_undo(self) -> None:
        """One history: an unsaved edit is undone by putting back the saved text; then the journal, newest first."""
        if self.root is None:
            return
        editor = self.query_one("#editor", TextArea)
        if self.current is not None and editor.text != self.current.text:
            editor.load_text(self.current.text)
            self.notify(f"undid the unsaved edit of {self.current.caption.name}")
            return
        self._undo()

    def _undo(self, force: bool = False) -> None:
        try:
            undone = journal.undo(self.root, force=force)
        except journal.UndoConflict as exc:
            self.notify(str(exc), title="Not undone", severity="warning", timeout=10)
            self._offer_forced_undo(exc)
            return
        except CAPTION_ERRORS as exc:
            self.notify(str(exc), title="Not undone", severity="error", timeout=10)
            return
        if undone is None:
            self.notify("nothing to undo")
            return
        self.notify(f"undid: {undone[0]} ({undone[1]} file(s))")
        self._reload_keeping_selection()

    def _offer_forced_undo(self, conflict: journal.UndoConflict) -> None:
        """Name the hand-edited files and let the user discard those edits on purpose (a second, explicit yes)."""
        names = "\n".join(f"  {p.name}" for p in conflict.paths[:8])
        more = f"\n  and {len(conflict.paths) - 8} more" if len(conflict.paths) > 8 else ""
        question = (f"{len(conflict.paths)} caption(s) changed since '{conflict.operation}':\n{names}{more}\n"
                    "Undo anyway? Those edits are lost.")

        def answered(yes: bool | None) -> None:
            if yes:
                self._undo(force=True)

        self.app.push_screen(ConfirmDialog(question, yes="Undo anyway"), answered)

    def _reload_keeping_selection(self) -> None:
        """Re-read captions from disk (the editor must not re-save its stale text) and keep the selection."""
        selected = self.current.image if self.current else None
        self.current = None
        self.load(self.root)
        if selected is not None:
            self.apply_filter(select=selected)

    def action_tag_tools(self) -> None:
        if self.root is None:
            self.notify("check a dataset first", severity="warning")
            return
        self.save_current()
        if self.unsaved():
            return  # the reload after a batch would drop the edit the save just refused

        def apply(changes: list[ops.Change] | None) -> None:
            if not changes:
                return
            try:
                journal.apply(self.root, changes, f"tag tools ({len(changes)} captions)")
            except (*CAPTION_ERRORS, OSError) as exc:  # all or nothing: no caption was changed
                self.notify(f"tag tools not applied, no caption changed: {exc}", severity="error", timeout=10)
                self._reload_keeping_selection()  # e.g. a caption edited elsewhere: the next try sees it
                return
            self.notify(f"changed {len(changes)} caption(s); Ctrl+Z undoes it")
            self._reload_keeping_selection()

        self.app.push_screen(TagToolDialog(self.shown, self.root), apply)

    def action_wd_tagger(self) -> None:
        if self.root is None:
            self.notify("check a dataset first", severity="warning")
            return
        self.save_current()  # the tagger reads the captions from disk

        def tagged(summary: str | None) -> None:
            if summary:
                self.notify(f"{summary}; Ctrl+Z undoes it", timeout=8)
                self._reload_keeping_selection()

        uncaptioned = sum(1 for f in self.files if not f.text.strip())
        self.app.push_screen(TaggerDialog(self.root, self.config.dataset.caption_extension, len(self.files),
                                          uncaptioned), tagged)

    def action_next_problem(self) -> None:
        if not self.shown:
            return
        table = self.query_one("#images", DataTable)
        order = self.shown[table.cursor_row + 1:] + self.shown[: table.cursor_row + 1]
        item = next((f for f in order if f.image in self.problems or f.caption in self.problems), None)
        if item is None:
            self.notify("no image with a problem")
            return
        table.move_cursor(row=self.shown.index(item))

    def action_focus_filter(self) -> None:
        self.query_one("#caption-filter", Input).focus()
