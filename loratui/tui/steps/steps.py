"""Step 3: repeats, epochs, batch, accumulation, save interval → steps, checkpoints, time, VRAM; live."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Grid, Vertical, VerticalScroll
from textual.widgets import Input, Label, Static
from textual.worker import Worker, WorkerState

from loratui.core.bench_store import find_result
from loratui.core.config import TrainingConfig
from loratui.core.dataset.report import DatasetReport
from loratui.core.gpu import GpuDetection, detect_gpus
from loratui.core.planner import FolderCount, format_duration, plan_from_config
from loratui.core.speed import time_estimate
from loratui.core.vram import estimate_vram, suggest_batch
from loratui.tui.messages import ConfigChanged

FIELDS = (
    ("schedule.max_train_epochs", "Epochs"),
    ("schedule.train_batch_size", "Batch size"),
    ("optimizer.gradient_accumulation_steps", "Grad accumulation"),
    ("saving.save_every_n_epochs", "Save every N epochs"),
)


class StepsStep(VerticalScroll):
    def __init__(self, config: TrainingConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.report: DatasetReport | None = None
        self.gpus: GpuDetection | None = None

    def compose(self) -> ComposeResult:
        with Grid(id="steps-form"):
            for path, label in FIELDS:
                yield Label(label)
                yield Input(str(self.config.get(path)), id=path.replace(".", "--"), type="integer")
        yield Label("Repeats per folder:", classes="section")
        yield Vertical(id="repeats")
        yield Static("", id="plan")

    def on_mount(self) -> None:
        self.detect()
        self.recalculate()

    @work(thread=True, exclusive=True, exit_on_error=False, group="gpu")
    def detect(self) -> GpuDetection:
        return detect_gpus()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "gpu" and event.state == WorkerState.SUCCESS:
            self.gpus = event.worker.result
            self.recalculate()

    def config_updated(self, config: TrainingConfig) -> None:
        self.config = config
        for path, _ in FIELDS:
            field = self.query_one(f"#{path.replace('.', '--')}", Input)
            if field.value != str(config.get(path)) and not field.has_focus:
                with field.prevent(Input.Changed):
                    field.value = str(config.get(path))
        self.recalculate()

    def dataset_scanned(self, report: DatasetReport) -> None:
        self.report = report
        box = self.query_one("#repeats", Vertical)
        box.remove_children()
        for name, info in report.folders.items():
            if info["repeats"] is None:
                continue
            repeats = self.config.dataset.repeats.get(name, info["repeats"])
            field = Input(str(repeats), type="integer", classes="repeats", name=name)
            field.border_title = f"{name} ({info['images']} images{', reg' if info['is_reg'] else ''})"
            box.mount(field)
        self.recalculate()

    @on(Input.Changed)
    def value_changed(self, event: Input.Changed) -> None:
        event.stop()
        try:
            number = int(event.value)
        except ValueError:
            event.input.add_class("-invalid")
            return
        try:
            if "repeats" in event.input.classes:
                folder = event.input.name or ""
                repeats = {**self.config.dataset.repeats, folder: number}
                config = self.config.with_value("dataset.repeats", repeats)
            else:
                config = self.config.with_value(event.input.id.replace("--", "."), number)
        except ValueError:
            event.input.add_class("-invalid")
            return
        event.input.remove_class("-invalid")
        self.config = config
        self.post_message(ConfigChanged(config, "steps"))
        self.recalculate()

    def _folders(self) -> list[FolderCount]:
        return self.report.folder_counts() if self.report else []

    def recalculate(self) -> None:
        plan_box = self.query_one("#plan", Static)
        folders = self._folders()
        if not folders:
            plan_box.update(Text("check a dataset in step 1 to count its images", style="italic"))
            return
        try:
            plan = plan_from_config(self.config, folders)
        except ValueError as exc:
            plan_box.update(Text(str(exc), style="bold red"))
            return
        plan_box.update(self._plan_table(plan))

    def _plan_table(self, plan) -> Table:
        cfg = self.config
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        reg = f" + {plan.reg_images} reg" if plan.reg_images else ""
        table.add_row("Images", f"{plan.images}{reg} ({plan.images_with_repeats} with repeats)")
        formula = f"{plan.images_with_repeats} × {plan.epochs} ÷ {plan.batch}" + (" × 2" if plan.reg_images else "")
        table.add_row("Total steps", Text(str(plan.total_steps), style="bold green"))
        table.add_row("  simple", f"{plan.simple_total} ({formula})")
        if plan.exact_total is not None:
            table.add_row("  exact", f"{plan.exact_total} (per-bucket batches, as sd-scripts runs it)")
        table.add_row("Steps per epoch", str(plan.steps_per_epoch))
        table.add_row("Checkpoints", f"{len(plan.checkpoint_epochs)}: after epoch "
                      + ", ".join(map(str, plan.checkpoint_epochs)))
        best = self.gpus.best if self.gpus else None
        timing = time_estimate(plan.total_steps, cfg, best.name if best else None)
        where = best.name if best else "this CPU"
        table.add_row("Time estimate", f"~{format_duration(timing.seconds)} on {where} "
                      f"({'measured' if timing.measured else 'rough'})")
        vram = estimate_vram(cfg)
        table.add_row("VRAM estimate", f"{vram.peak_gib:.1f} GiB at batch {cfg.schedule.train_batch_size}")
        if self.gpus is None:
            table.add_row("GPU", "detecting…")
        elif best is None:
            table.add_row("GPU", self.gpus.message)
        else:
            fill = max(plan.buckets.values()) if plan.buckets else plan.images_with_repeats
            suggestion = suggest_batch(cfg, best.total_gib, gpu_name=best.name, fill_limit=fill or None,
                                       result=find_result(cfg, best.name))
            table.add_row("GPU", f"{best.name}, {best.total_gib:.1f} GiB ({self.gpus.source})")
            table.add_row("Suggested batch", Text(suggestion.message, style="green" if suggestion.batch else "red"))
        for note in plan.notes:
            table.add_row("Note", Text(note, style="yellow"))
        return table
