"""Step 1: pick the dataset folder, run the checks in a worker, show findings and buckets."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Button, DataTable, Label, ProgressBar, Static
from textual.worker import Worker, WorkerState

from loratui.core.config import TrainingConfig
from loratui.core.dataset import scan_dataset
from loratui.core.dataset.report import DatasetReport
from loratui.core.planner import bucket_spec_from_config
from loratui.tui.messages import ConfigChanged, DatasetScanned, ShowImage
from loratui.tui.widgets.path_input import PathInput

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


class DatasetStep(Vertical):
    def __init__(self, config: TrainingConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.report: DatasetReport | None = None

    def compose(self) -> ComposeResult:
        yield Label("Dataset folder (the one holding <repeats>_<name> folders; → completes):")
        with Horizontal(classes="row"):
            yield PathInput(self.config.dataset.train_data_dir, id="dataset-path", compact=True)
            yield Button("Check", id="check", variant="primary", compact=True)
        yield ProgressBar(id="scan-progress", show_eta=False)
        yield Static("", id="dataset-summary")
        with Horizontal(id="dataset-tables"):
            findings = DataTable(id="findings", cursor_type="row", zebra_stripes=True)
            findings.border_title = "Findings (Enter: open the image)"
            yield findings
            buckets = DataTable(id="buckets", cursor_type="none")
            buckets.border_title = "Buckets"
            yield buckets
        yield Static("", id="finding-detail")

    def on_mount(self) -> None:
        self.query_one("#findings", DataTable).add_columns("severity", "file", "problem and fix")
        # sd-scripts fills buckets with each image repeated: the count is images × repeats, and says so.
        self.query_one("#buckets", DataTable).add_columns("bucket", "× repeats")
        if self.config.dataset.train_data_dir:
            self.start_scan()

    def config_updated(self, config: TrainingConfig) -> None:
        self.config = config

    @on(PathInput.Submitted, "#dataset-path")
    @on(Button.Pressed, "#check")
    def start_scan(self) -> None:
        path = self.query_one("#dataset-path", PathInput).value.strip()
        if not path:
            self.notify("type the dataset folder first", severity="warning")
            return
        if not Path(path).expanduser().is_dir():
            self.clear_report()
            self.query_one("#dataset-summary", Static).update(
                Text(f"{path}: not a folder; give the folder that holds your image folders", style="bold red"))
            return
        folder = str(Path(path).expanduser().resolve())
        if folder != self.config.dataset.train_data_dir:
            self.post_message(ConfigChanged(self.config.with_value("dataset.train_data_dir", folder), "dataset"))
        self.query_one("#dataset-summary", Static).update("checking…")
        self.scan(Path(folder))

    @work(thread=True, exclusive=True, exit_on_error=False, group="scan")
    def scan(self, folder: Path) -> DatasetReport:
        bar = self.query_one("#scan-progress", ProgressBar)

        def progress(done: int, total: int) -> None:
            self.app.call_from_thread(bar.update, total=total, progress=done)

        cfg = self.config
        return scan_dataset(folder, caption_ext=cfg.dataset.caption_extension, reg_dir=cfg.dataset.reg_data_dir,
                            resolution=cfg.dataset.resolution, bucket_spec=bucket_spec_from_config(cfg),
                            batch_size=cfg.schedule.train_batch_size, repeats_override=cfg.dataset.repeats,
                            progress=progress)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "scan":
            return
        if event.state == WorkerState.SUCCESS:
            self.show_report(event.worker.result)
        elif event.state == WorkerState.ERROR:
            self.clear_report()
            self.query_one("#dataset-summary", Static).update(
                Text(f"the check failed: {event.worker.error}", style="bold red"))
            self.app.report_if_bug(event.worker.error)  # not a bad folder but a bug: the crash dialog and report

    def clear_report(self) -> None:
        """A failed check must not leave the previous folder's findings and buckets on screen."""
        self.report = None
        self.query_one("#findings", DataTable).clear()
        self.query_one("#buckets", DataTable).clear()
        self.query_one("#finding-detail", Static).update("")
        self.query_one("#scan-progress", ProgressBar).update(total=None, progress=0)

    def first_problem(self) -> tuple[Widget, str] | None:
        """Next is refused while the typed folder is not one (the wizard would train on the old folder)."""
        field = self.query_one("#dataset-path", PathInput)
        path = field.value.strip()
        if not path:
            return field, "Dataset folder: type the folder that holds your <repeats>_<name> folders"
        if not Path(path).expanduser().is_dir():
            return field, f"{path}: not a folder; give the folder that holds your image folders"
        if str(Path(path).expanduser().resolve()) != self.config.dataset.train_data_dir:
            return field, "Dataset folder: press Enter (or Check) to check this folder first"
        return None

    @on(DataTable.RowHighlighted, "#findings")
    def finding_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """The whole finding for the selected row, wrapped, below the table (the column cuts it off)."""
        if self.report is None or event.row_key is None:
            return
        finding = self.report.sorted_findings()[int(event.row_key.value)]
        self.query_one("#finding-detail", Static).update(
            Text(f"{finding.path.name}: {finding.message}; {finding.fix}", style=SEVERITY_STYLE[finding.severity]))

    def show_report(self, report: DatasetReport) -> None:
        self.report = report
        counts = {s: sum(f.severity == s for f in report.findings) for s in SEVERITY_STYLE}
        folders = ", ".join(f"{name} ×{info['repeats']}" for name, info in report.folders.items())
        summary = Text(f"{len(report.images)} images in {folders or 'no folders'} — ")
        for severity, style in SEVERITY_STYLE.items():
            summary.append(f"{counts[severity]} {severity}(s) ", style=style)
        self.query_one("#dataset-summary", Static).update(summary)
        table = self.query_one("#findings", DataTable)
        table.clear()
        for index, finding in enumerate(report.sorted_findings()):
            table.add_row(Text(finding.severity, style=SEVERITY_STYLE[finding.severity]), Text(finding.path.name),
                          Text(f"{finding.message}; {finding.fix}"), key=str(index))
        buckets = self.query_one("#buckets", DataTable)
        buckets.clear()
        for (w, h), n in sorted(report.bucket_counts().items(), key=lambda kv: -kv[1]):
            buckets.add_row(f"{w}×{h}", str(n))
        self.post_message(DatasetScanned(report))

    @on(DataTable.RowSelected, "#findings")
    def open_finding(self, event: DataTable.RowSelected) -> None:
        if self.report is None:
            return
        finding = self.report.sorted_findings()[int(event.row_key.value)]
        self.post_message(ShowImage(finding.path))
