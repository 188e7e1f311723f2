"""The wizard: one screen, a step header and a ContentSwitcher; every step stays mounted so Back keeps it."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import ContentSwitcher, Footer

from loratui.core.config import TrainingConfig
from loratui.tui.messages import ConfigChanged, DatasetScanned, ShowImage
from loratui.tui.steps.captions import CaptionsStep
from loratui.tui.steps.dataset import DatasetStep
from loratui.tui.steps.parameters import ParametersStep
from loratui.tui.steps.steps import StepsStep
from loratui.tui.steps.train import TrainStep
from loratui.tui.widgets.step_header import STEPS, StepHeader

STEP_IDS = tuple(name.lower() for name in STEPS)


class WizardScreen(Screen):
    BINDINGS = [
        Binding("ctrl+n", "next", "Next", id="wizard.next", priority=True),
        Binding("ctrl+b", "back", "Back", id="wizard.back", priority=True),
    ]

    def __init__(self, config: TrainingConfig, plain_images: bool = False, runs_root: Path | None = None) -> None:
        super().__init__()
        self.config = config
        self.plain_images = plain_images
        self.runs_root = runs_root

    def compose(self) -> ComposeResult:
        yield StepHeader(id="step-header")
        with ContentSwitcher(initial="dataset", id="steps"):
            yield DatasetStep(self.config, id="dataset")
            yield CaptionsStep(self.config, plain_images=self.plain_images, id="captions")
            yield StepsStep(self.config, id="steps-step")
            yield ParametersStep(self.config, id="parameters")
            yield TrainStep(self.config, runs_root=self.runs_root, id="train")
        yield Footer()

    @property
    def index(self) -> int:
        return self.query_one(StepHeader).current

    def _step_widgets(self):
        return [self.query_one(f"#{sid if sid != 'steps' else 'steps-step'}") for sid in STEP_IDS]

    def go(self, index: int) -> None:
        index = max(0, min(len(STEPS) - 1, index))
        widgets = self._step_widgets()
        current = widgets[self.index]
        if isinstance(current, CaptionsStep):
            current.save_current()  # leaving the editor saves it
        self.query_one(StepHeader).current = index
        self.query_one("#steps", ContentSwitcher).current = widgets[index].id
        first = next((w for w in widgets[index].query("*") if w.focusable), None)
        if first is not None:
            first.focus()
        self.refresh_bindings()

    def action_next(self) -> None:
        self.go(self.index + 1)

    def action_back(self) -> None:
        self.go(self.index - 1)

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "next":
            return self.index < len(STEPS) - 1
        if action == "back":
            return self.index > 0
        return True

    @on(ConfigChanged)
    def config_changed(self, event: ConfigChanged) -> None:
        self.config = event.config
        self.app.config = event.config
        for widget in self._step_widgets():
            widget.config_updated(event.config)

    @on(DatasetScanned)
    def dataset_scanned(self, event: DatasetScanned) -> None:
        self.query_one(CaptionsStep).load(event.report.root, event.report)
        self.query_one(StepsStep).dataset_scanned(event.report)

    @on(ShowImage)
    def show_image(self, event: ShowImage) -> None:
        self.go(STEP_IDS.index("captions"))
        self.query_one(CaptionsStep).select_image(event.path)
