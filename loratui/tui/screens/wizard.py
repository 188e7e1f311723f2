"""The wizard: one screen, a step header and a ContentSwitcher; every step stays mounted so Back keeps it."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widget import Widget
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
Problem = tuple[Widget, str]  # the first invalid field of a step and a one-line reason


class WizardScreen(Screen):
    BINDINGS = [
        Binding("ctrl+n", "next", "Next", id="wizard.next", priority=True,
                tooltip="Next step (refused while a field is invalid)"),
        Binding("ctrl+b", "back", "Back", id="wizard.back", priority=True, tooltip="Previous step"),
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
        yield Footer(compact=True, show_command_palette=False)  # at 80 columns every shown key stays readable

    @property
    def index(self) -> int:
        return self.query_one(StepHeader).current

    def _step_widgets(self) -> list[Widget]:
        return [self.query_one(f"#{sid if sid != 'steps' else 'steps-step'}") for sid in STEP_IDS]

    def save_pending(self) -> list[str]:
        """Save what a step holds unsaved (the caption being edited); the app calls this before quitting."""
        captions = self.query_one(CaptionsStep)
        return [captions.current.caption.name] if captions.save_current() and captions.current else []

    def go(self, index: int) -> None:
        index = max(0, min(len(STEPS) - 1, index))
        widgets = self._step_widgets()
        current = widgets[self.index]
        if isinstance(current, CaptionsStep):
            current.save_current()  # leaving the editor saves it
        self.query_one(StepHeader).current = index
        self.query_one("#steps", ContentSwitcher).current = widgets[index].id
        # The focus chain skips hidden widgets (other tabs, other steps): focus the first one the user sees,
        # or the one the step names (Captions: the image list, so arrows and keys act on images).
        preferred = getattr(widgets[index], "first_focus", None)
        first = preferred() if preferred else next((w for w in self.focus_chain if widgets[index] in w.ancestors),
                                                    None)
        if first is not None:
            first.focus()
        if isinstance(widgets[index], TrainStep):
            widgets[index].config_updated(self.config)
        self.refresh_bindings()

    def problem(self, upto: int | None = None) -> tuple[int, Problem] | None:
        """The first invalid field in steps 0..upto (all when None), with its step index."""
        widgets = self._step_widgets()
        for index, widget in enumerate(widgets[: (upto + 1) if upto is not None else None]):
            found = widget.first_problem() if hasattr(widget, "first_problem") else None
            if found is not None:
                return index, found
        return None

    def refuse_if_invalid(self, upto: int | None = None) -> bool:
        """Show and focus the first invalid field; True when there was one (Next and Start then refuse)."""
        found = self.problem(upto)
        if found is None:
            return False
        index, (widget, reason) = found
        if index != self.index:
            self.go(index)
        widget.focus()
        self.notify(reason, title="Fix this first", severity="error", timeout=8)
        return True

    def action_next(self) -> None:
        if self.refuse_if_invalid(self.index):
            return
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
