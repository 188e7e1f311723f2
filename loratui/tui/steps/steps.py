"""Step 3: repeats, epochs, batch, accumulation, save interval, VRAM → steps, checkpoints, time, VRAM; live."""

from __future__ import annotations

from pydantic import ValidationError
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Input, Label, Static
from textual.worker import Worker, WorkerState

from loratui.core.bench_store import find_result
from loratui.core.config import TrainingConfig, issues_from_validation_error
from loratui.core.dataset.report import DatasetReport
from loratui.core.gpu import GpuDetection, detect_gpus
from loratui.core.planner import FolderCount, format_duration, plan_from_config
from loratui.core.speed import time_estimate
from loratui.core.vram import estimate_vram, suggest_batch
from loratui.tui.messages import ConfigChanged

FIELDS = (
    ("schedule.max_train_epochs", "Epochs"),
    ("schedule.train_batch_size", "Batch size"),
    ("optimizer.gradient_accumulation_steps", "Grad accum."),
    ("saving.save_every_n_epochs", "Save every N ep."),
)
VRAM_ID = "plan-vram"


def field_id(path: str) -> str:
    return path.replace(".", "--")


class StepsStep(Vertical):
    def __init__(self, config: TrainingConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.report: DatasetReport | None = None
        self.gpus: GpuDetection | None = None
        self.errors: dict[str, str] = {}  # field id → one-line reason, in the order the user sees them

    def compose(self) -> ComposeResult:
        with Grid(id="steps-form"):
            for path, label in FIELDS:
                yield Label(label)
                yield Input(str(self.config.get(path)), id=field_id(path), type="integer", compact=True)
            yield Label("GPU memory GiB")
            yield Input("", id=VRAM_ID, type="number", compact=True,
                        placeholder="detecting…", tooltip="Plan for this much GPU memory (prefilled from the GPU)")
        yield Label("Repeats per folder (each image is seen this many times per epoch):", classes="section")
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
            vram = self.query_one(f"#{VRAM_ID}", Input)
            best = self.gpus.best
            vram.placeholder = "no GPU: type GiB"
            if best is not None and not vram.value:
                with vram.prevent(Input.Changed):
                    vram.value = f"{best.total_gib:.1f}"
            self.recalculate()

    def config_updated(self, config: TrainingConfig) -> None:
        if config == self.config:
            return  # our own change coming back: the fields already show it
        self.config = config
        for path, _ in FIELDS:
            field = self.query_one(f"#{field_id(path)}", Input)
            with field.prevent(Input.Changed):
                field.value = str(config.get(path))
            self._set_error(field, None)
        for field in self.query("Input.repeats").results(Input):
            with field.prevent(Input.Changed):
                field.value = str(config.dataset.repeats.get(field.name or "", field.value))
            self._set_error(field, None)
        self.recalculate()

    def dataset_scanned(self, report: DatasetReport) -> None:
        self.report = report
        box = self.query_one("#repeats", Vertical)
        box.remove_children()
        for name, info in report.folders.items():
            if info["repeats"] is None:
                continue
            repeats = self.config.dataset.repeats.get(name, info["repeats"])
            field = Input(str(repeats), type="integer", classes="repeats", name=name, compact=True)
            label = Label(f"{name} ({info['images']} images{', reg' if info['is_reg'] else ''})")
            box.mount(Horizontal(label, field, classes="repeats-row"))
        self.recalculate()

    def _set_error(self, field: Input, reason: str | None) -> None:
        key = field.id or f"repeats:{field.name}"
        if reason is None:
            self.errors.pop(key, None)
            field.remove_class("-invalid")
        else:
            self.errors[key] = reason
            field.add_class("-invalid")

    def first_problem(self) -> tuple[Widget, str] | None:
        """The first invalid field in screen order, with why (the wizard refuses Next on it)."""
        for field in self.query(Input).results(Input):
            key = field.id or f"repeats:{field.name}"
            if key in self.errors:
                return field, self.errors[key]
        return None

    def _label(self, field: Input) -> str:
        if "repeats" in field.classes:
            return f"repeats of {field.name}"
        return next((label for path, label in FIELDS if field_id(path) == field.id), "GPU memory")

    @on(Input.Changed)
    def value_changed(self, event: Input.Changed) -> None:
        event.stop()
        field = event.input
        if field.id == VRAM_ID:
            self._vram_changed(field)
            return
        try:
            number = int(event.value)
        except ValueError:
            self._set_error(field, f"{self._label(field)}: give a whole number")
            self.recalculate()
            return
        try:
            if "repeats" in field.classes:
                repeats = {**self.config.dataset.repeats, field.name or "": number}
                config = self.config.with_value("dataset.repeats", repeats)
            else:
                config = self.config.with_value((field.id or "").replace("--", "."), number)
        except ValidationError as exc:
            issue = issues_from_validation_error(exc)[0]
            self._set_error(field, f"{self._label(field)}: {issue.why}; {issue.fix}")
            self.recalculate()
            return
        self._set_error(field, None)
        self.config = config
        self.post_message(ConfigChanged(config, "steps"))
        self.recalculate()

    def _vram_changed(self, field: Input) -> None:
        text = field.value.strip()
        try:
            ok = not text or float(text) > 0
        except ValueError:
            ok = False
        self._set_error(field, None if ok else "GPU memory: give the GiB of the GPU to plan for, e.g. 24")
        self.recalculate()

    def vram_gib(self) -> float | None:
        text = self.query_one(f"#{VRAM_ID}", Input).value.strip()
        try:
            return float(text) if text and float(text) > 0 else None
        except ValueError:
            return None

    def _folders(self) -> list[FolderCount]:
        return self.report.folder_counts() if self.report else []

    def recalculate(self) -> None:
        plan_box = self.query_one("#plan", Static)
        if self.errors:
            # Never show a total computed from a value that is no longer on screen.
            reason = next(iter(self.errors.values()))
            plan_box.update(Text(f"{reason}\n(the plan is shown again once every field is valid)", style="bold red"))
            return
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

    def _time_row(self, total_steps: int) -> str:
        best = self.gpus.best if self.gpus else None
        timing = time_estimate(total_steps, self.config, best.name if best else None)
        where = best.name if best else "this CPU"
        how = f"measured: {timing.basis}" if timing.measured else "estimated; `loratui bench` measures it"
        return f"~{format_duration(timing.seconds)} on {where} ({how})"

    def _plan_table(self, plan) -> Table:
        cfg = self.config
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        reg = f" + {plan.reg_images} reg" if plan.reg_images else ""
        table.add_row("Images", f"{plan.images}{reg} ({plan.images_with_repeats} with repeats)")
        exact = "" if plan.exact_total is None else f"; exact {plan.exact_total} (per-bucket batches, as sd-scripts)"
        table.add_row("Total steps", Text.assemble((str(plan.total_steps), "bold green"),
                                                   f"  simple {plan.simple_total} = {plan.simple_formula}{exact}"))
        table.add_row("Steps per epoch", str(plan.steps_per_epoch))
        table.add_row("Checkpoints", f"{len(plan.checkpoint_epochs)}: after epoch "
                      + ", ".join(map(str, plan.checkpoint_epochs)))
        table.add_row("Time", self._time_row(plan.total_steps))
        vram = estimate_vram(cfg)
        table.add_row("VRAM estimate", f"{vram.peak_gib:.1f} GiB at batch {cfg.schedule.train_batch_size}")
        best = self.gpus.best if self.gpus else None
        if self.gpus is None:
            table.add_row("GPU", "detecting…")
        elif best is None:
            table.add_row("GPU", Text(self.gpus.message.split(":")[0] + "; trains on the CPU (slow)", style="yellow"))
        else:
            table.add_row("GPU", f"{best.name}, {best.total_gib:.1f} GiB ({self.gpus.source})")
        gib = self.vram_gib()
        if gib is not None:
            fill = max(plan.buckets.values()) if plan.buckets else plan.images_with_repeats
            name = best.name if best else None
            suggestion = suggest_batch(cfg, gib, gpu_name=name, fill_limit=fill or None,
                                       result=find_result(cfg, name) if name else None)
            table.add_row("Suggested batch", Text(f"for {gib:g} GiB: {suggestion.message}",
                                                  style="green" if suggestion.batch else "red"))
        for note in plan.notes:
            table.add_row("Note", Text(note, style="yellow"))
        return table
