"""Step 5: a last look at the run, then launch the detached trainer and open its monitor."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Button, Static
from textual.worker import Worker, WorkerState

from loratui.core.config import TrainingConfig, check_config
from loratui.core.run.launch import launch_detached, prepare_run


class TrainStep(Vertical):
    def __init__(self, config: TrainingConfig, runs_root: Path | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.runs_root = runs_root

    def compose(self) -> ComposeResult:
        yield Static("", id="train-summary")
        yield Button("Start training", id="start", variant="success")
        yield Static("The trainer runs as its own process: close the app or lose SSH and it keeps going; "
                     "`loratui attach` shows it again.", id="train-note")

    def on_mount(self) -> None:
        self.config_updated(self.config)

    def config_updated(self, config: TrainingConfig) -> None:
        self.config = config
        cfg = config
        text = Text()
        text.append("Model      ", style="bold").append(f"{cfg.model.pretrained_model_name_or_path or '(not set)'} "
                                                     f"[{cfg.model.model_family}]\n")
        text.append("Dataset    ", style="bold").append(f"{cfg.dataset.train_data_dir or '(not set)'}\n")
        text.append("Network    ", style="bold").append(f"{cfg.network.network_type} rank {cfg.network.network_dim} "
                                                     f"alpha {cfg.network.network_alpha}\n")
        text.append("Schedule   ", style="bold").append(f"{cfg.schedule.max_train_epochs} epochs, batch "
                                                     f"{cfg.schedule.train_batch_size}, {cfg.optimizer.optimizer_type} "
                                                     f"lr {cfg.unet_lr:g}, {cfg.schedule.lr_scheduler}\n")
        text.append("Output     ", style="bold").append(f"{cfg.saving.output_name}.safetensors\n")
        errors = [i for i in check_config(cfg) if i.severity == "error"]
        for issue in errors:
            text.append(f"\nerror: {issue.path}: {issue.why}; {issue.fix}", style="bold red")
        self.query_one("#train-summary", Static).update(text)
        self.query_one("#start", Button).disabled = bool(errors)

    @on(Button.Pressed, "#start")
    def start(self) -> None:
        refuse = getattr(self.screen, "refuse_if_invalid", None)
        if refuse is not None and refuse():
            return  # a field shows a value the config does not hold: never train with another one
        self.query_one("#start", Button).disabled = True
        self.launch(self.config)

    @work(thread=True, exclusive=True, exit_on_error=False, group="launch")
    def launch(self, config: TrainingConfig) -> Path:
        run_dir = prepare_run(config, self.runs_root)
        launch_detached(run_dir)
        return run_dir

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "launch":
            return
        if event.state == WorkerState.SUCCESS:
            from loratui.tui.screens.monitor import MonitorScreen

            self.query_one("#start", Button).disabled = False
            self.app.push_screen(MonitorScreen(event.worker.result))
        elif event.state == WorkerState.ERROR:
            self.query_one("#start", Button).disabled = False
            if not self.app.report_if_bug(event.worker.error):  # a bug gets the crash dialog instead
                self.notify(f"the trainer could not start: {event.worker.error}", severity="error", timeout=15)
