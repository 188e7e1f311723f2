"""The training monitor: reads only the run directory, so it works the same after an SSH reconnect."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label, ProgressBar, RichLog, Sparkline, Static

from loratui.core import measured_speed
from loratui.core.gpu import detect_gpus
from loratui.core.planner import format_duration
from loratui.core.presets import PresetError, load_config
from loratui.core.run import rundir
from loratui.core.run.events import EventTail, RunSnapshot
from loratui.tui.screens.compare import CompareScreen
from loratui.tui.screens.dialogs import ConfirmDialog
from loratui.tui.widgets.samples_panel import SamplesPanel

POLL_SECONDS = 0.5  # a few UI updates per second, whatever the step rate
SPARK_POINTS = 120


def _size(n: int) -> str:
    return f"{n / 1024 ** 2:.1f} MiB" if n >= 1024 ** 2 else f"{n / 1024:.0f} KiB"


class MonitorScreen(Screen):
    BINDINGS = [
        Binding("s", "stop", "Stop", id="monitor.stop", tooltip="Stop training (finishes the step, saves)"),
        Binding("escape", "back", "Wizard", id="monitor.back", tooltip="Back to the wizard (training goes on)"),
        Binding("q", "leave", "Quit", id="monitor.quit", tooltip="Quit the app (a running trainer keeps going)"),
        Binding("c", "compare", "Compare checkpoints", id="monitor.compare",
                tooltip="Compare checkpoints: every epoch at several weights (once the run has finished)"),
    ]

    def __init__(self, run_dir: Path, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.clock = clock
        self.tail = EventTail(run_dir / rundir.EVENTS)
        self.log_tail = EventLogTail(run_dir / rundir.LOG)
        self.snapshot = RunSnapshot()
        self.shown_checkpoints = 0
        self.speed_recorded = False
        self.finished = False  # the footer offers Compare once the trainer has ended

    def compose(self) -> ComposeResult:
        yield Static(Text(f"Run {self.run_dir.name}", style="bold"), id="run-title")
        yield ProgressBar(id="run-progress", show_eta=False)
        yield Static("waiting for the trainer…", id="run-status")
        with Horizontal(id="spark-row"):
            with Vertical():
                yield Label("loss (raw)")
                yield Sparkline([], id="loss-raw", summary_function=max)
            with Vertical():
                yield Label("loss (average)")
                yield Sparkline([], id="loss-avg")
        with Horizontal(id="monitor-tables"):
            table = DataTable(id="checkpoints", cursor_type="row")
            table.border_title = "Checkpoints"
            yield table
            samples = SamplesPanel(id="samples")
            samples.border_title = "Samples"
            yield samples
        log = RichLog(id="trainer-log", max_lines=200, wrap=True)
        log.border_title = "trainer.log"
        yield log
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        table = self.query_one("#checkpoints", DataTable)
        table.add_column("file", width=28)  # long names are cut with "…" so loss and size stay readable at 80
        table.add_columns("ep", "step", "loss", "size")
        self.poll()
        self.set_interval(POLL_SECONDS, self.poll)

    def poll(self) -> None:
        """Fold new events into the snapshot and redraw once per batch of events."""
        events = self.tail.read_new()
        for line in self.log_tail.read_new():
            self.query_one("#trainer-log", RichLog).write(Text(line))
        if not events and self.snapshot.started_at is not None and self.snapshot.done is None:
            self._show_status()
            return
        self.snapshot.apply_all(events)
        self._show_snapshot()
        if not self.speed_recorded and self.snapshot.it_per_s and rundir.run_state(self.run_dir) != "running":
            self.speed_recorded = True
            self.record_speed()

    @work(thread=True, exclusive=True, exit_on_error=False, group="speed")
    def record_speed(self) -> None:
        """Keep the trainer's real speed for this device and model: the Steps screen's time estimate."""
        snap = self.snapshot
        try:
            cfg = load_config(self.run_dir / rundir.CONFIG)
        except PresetError:
            return  # a run without a readable config cannot say what resolution it measured
        device = "cpu"
        if not snap.device.startswith("cpu"):
            best = detect_gpus().best
            device = best.name if best else snap.device
        measured_speed.record(device, cfg, float(snap.it_per_s or 0))

    def _show_snapshot(self) -> None:
        snap = self.snapshot
        bar = self.query_one("#run-progress", ProgressBar)
        bar.update(total=snap.total_steps or None, progress=snap.step)
        self.query_one("#loss-raw", Sparkline).data = list(snap.losses[-SPARK_POINTS:])
        self.query_one("#loss-avg", Sparkline).data = list(snap.avg_losses[-SPARK_POINTS:])
        table = self.query_one("#checkpoints", DataTable)
        for row in snap.checkpoints[self.shown_checkpoints:]:
            loss = f"{row.avg_loss:.4f}" if row.avg_loss is not None else ""
            table.add_row(Text(Path(row.path).name, overflow="ellipsis", no_wrap=True), str(row.epoch or ""),
                          str(row.step), loss, _size(row.size_bytes))
        self.shown_checkpoints = len(snap.checkpoints)
        self.query_one(SamplesPanel).show_samples(snap.samples)
        self._show_status()

    def _show_status(self) -> None:
        snap = self.snapshot
        state = rundir.run_state(self.run_dir)
        if state in rundir.FINAL_STATES:
            snap.end()  # dead, stopped, done or failed: the last ETA the trainer sent no longer counts down
        if (state not in ("starting", "running", "stopping")) != self.finished:
            self.finished = not self.finished
            self.refresh_bindings()
        text = Text()
        text.append(f"{state}  ", style={"running": "bold green", "done": "bold cyan", "failed": "bold red",
                                         "dead": "bold red", "stopped": "bold yellow"}.get(state, "bold"))
        text.append(f"epoch {snap.epoch}/{snap.epochs}  step {snap.step}/{snap.total_steps}  ")
        if snap.avg_losses:
            text.append(f"loss {snap.losses[-1]:.4f} (avg {snap.avg_losses[-1]:.4f})  ")
        if snap.lrs:
            text.append("lr " + " ".join(f"{k} {v:.2e}" for k, v in snap.lrs.items()) + "  ")
        if snap.it_per_s:
            text.append(f"{snap.it_per_s:.2f} it/s  ")
        if snap.eta_s is not None and snap.done is None and state == "running":  # no ETA for an ended run
            stale = max(0.0, self.clock() - (snap.last_event_at or self.clock()))
            text.append(f"ETA {format_duration(max(0.0, snap.eta_s - stale))}  ")
        if snap.gpu_mem_gib:
            text.append(f"GPU {snap.gpu_mem_gib:.1f} GiB  ")
        if snap.device:
            text.append(f"[{snap.device}]", style="dim")
        if snap.error:
            text.append(f"\nerror: {snap.error.get('message')}\nhint: {snap.error.get('hint')}", style="bold red")
        elif snap.done:
            # A path is split at its folder, not wrapped mid-word: the file name, then where it is.
            final = Path(str(snap.done.get("final_path") or ""))
            text.append(f"\n{snap.done.get('state')}: {final.name}", style="cyan")
            if final.name:
                text.append(f"\n  in {final.parent}", style="dim")
        for warning in snap.warnings[-2:]:
            text.append(f"\nwarning: {warning}", style="yellow")
        self.query_one("#run-status", Static).update(text)

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        return self.finished if action == "compare" else True

    def action_stop(self) -> None:
        if rundir.run_state(self.run_dir) != "running":
            self.notify("the run is not running")
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                rundir.request_stop(self.run_dir)
                self.notify("stop requested: the trainer saves a checkpoint and exits")

        self.app.push_screen(ConfirmDialog("Stop training? The current step finishes and a checkpoint is saved.",
                                           yes="Stop"), confirmed)

    def action_back(self) -> None:
        """The wizard lies under the monitor both after Start training and in `loratui attach`."""
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()

    def leave_message(self) -> str:
        state = rundir.run_state(self.run_dir)
        if state == "running":
            return f"Training continues in the background. Re-attach with: loratui attach {self.run_dir.name}"
        return f"Run {self.run_dir.name} is {state}; its files are in {self.run_dir}"

    def action_compare(self) -> None:
        self.app.push_screen(CompareScreen(self.run_dir))

    def action_leave(self) -> None:
        self.app.exit(message=self.leave_message())


class EventLogTail:
    """New complete lines of the trainer's log (carriage-return progress lines are dropped)."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.partial = path, 0, b""

    def read_new(self) -> list[str]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read(256 * 1024)
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        # Split bytes, decode whole lines: a character cut by the read boundary is completed by the next read.
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()
        decoded = (line.decode("utf-8", "replace") for line in lines)
        return [line.rsplit("\r", 1)[-1] for line in decoded if line.strip()]
