"""The app: an app factory for the CLI and tests, the command palette, and the wizard / monitor screens."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

from textual.app import App
from textual.binding import Binding
from textual.command import Hit, Hits, Provider
from textual.screen import Screen

from loratui.core.config import TrainingConfig
from loratui.core.presets import PresetError, load_config
from loratui.core.run import rundir
from loratui.tui.screens.monitor import MonitorScreen
from loratui.tui.screens.wizard import WizardScreen


class LoraCommands(Provider):
    """The app's actions in the command palette (Ctrl+P)."""

    async def search(self, query: str) -> Hits:
        app = self.app
        assert isinstance(app, LoraTuiApp)
        commands = [
            ("Open dataset folder", "Go to the Dataset step", partial(app.goto_step, 0)),
            ("Load preset", "Load a YAML preset into the parameters", app.load_preset),
            ("Export preset", "Save the current settings as a YAML preset", app.export_preset),
            ("Attach to newest run", "Open the monitor of the newest training run", app.attach_newest),
        ]
        matcher = self.matcher(query)
        for name, help_text, callback in commands:
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)


class LoraTuiApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "loratui"
    COMMANDS = App.COMMANDS | {LoraCommands}
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True)]

    def __init__(self, config: TrainingConfig, *, attach: Path | None = None, runs_root: Path | None = None,
                 plain_images: bool = False, clock: Callable[[], float] | None = None,
                 startup_error: str | None = None) -> None:
        super().__init__()
        self.config = config
        self.attach = attach
        self.runs_root = runs_root
        self.plain_images = plain_images
        self.clock = clock
        self.startup_error = startup_error

    def get_default_screen(self) -> Screen:
        return WizardScreen(self.config, plain_images=self.plain_images, runs_root=self.runs_root)

    def on_mount(self) -> None:
        if self.startup_error:
            self.notify(self.startup_error, severity="error", timeout=15)
        if self.attach is not None:
            self.push_screen(self._monitor(self.attach))

    def _monitor(self, run_dir: Path) -> MonitorScreen:
        return MonitorScreen(run_dir, clock=self.clock) if self.clock else MonitorScreen(run_dir)

    def _wizard(self) -> WizardScreen | None:
        screens = [s for s in self.screen_stack if isinstance(s, WizardScreen)]
        return screens[0] if screens else None

    def goto_step(self, index: int) -> None:
        if (wizard := self._wizard()) is not None:
            while self.screen is not wizard:
                self.pop_screen()
            wizard.go(index)

    def load_preset(self) -> None:
        self.goto_step(3)
        self.screen.query_one("#parameters").action_load_preset()

    def export_preset(self) -> None:
        self.goto_step(3)
        self.screen.query_one("#parameters").action_export_preset()

    def attach_newest(self) -> None:
        run_dir = rundir.find_run(None, self.runs_root)
        if run_dir is None:
            self.notify("no training runs yet", severity="warning")
            return
        self.push_screen(self._monitor(run_dir))


def make_app(dataset_dir: Path | None = None, preset: Path | None = None, attach: Path | None = None,
             runs_root: Path | None = None, plain_images: bool = False,
             clock: Callable[[], float] | None = None) -> LoraTuiApp:
    """Build the app from the command line's arguments; a bad preset becomes a message, not a crash."""
    config, error = TrainingConfig(), None
    if preset is not None:
        try:
            config = load_config(preset)
        except PresetError as exc:
            error = str(exc)
    if dataset_dir is not None:
        config = config.with_value("dataset.train_data_dir", str(Path(dataset_dir).expanduser().resolve()))
    return LoraTuiApp(config, attach=attach, runs_root=runs_root, plain_images=plain_images, clock=clock,
                      startup_error=error)


def run_wizard(dataset_dir: Path | None = None, preset: Path | None = None, demo: bool = False,
               attach: Path | None = None) -> int:
    # textual-image asks the terminal about itself when imported; that must happen before Textual takes
    # over the terminal, or the terminal's reply is typed into the focused input.
    import textual_image.widget  # noqa: F401

    plain = bool(os.environ.get("LORATUI_PLAIN_IMAGES"))
    app = make_app(dataset_dir, preset, attach, plain_images=plain)
    app.run()
    if app.return_code:
        return app.return_code
    return 0
