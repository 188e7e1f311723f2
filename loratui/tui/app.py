"""The app: an app factory for the CLI and tests, the command palette, quitting safely, and the screens."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path

from textual.actions import ActionParseResult
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.dom import DOMNode
from textual.screen import Screen
from textual.worker import WorkerFailed

from loratui.core.captions import rescue
from loratui.core.config import TrainingConfig
from loratui.core.crash import one_line, write_crash_report
from loratui.core.home import loratui_home
from loratui.core.presets import PresetError, load_config, save_preset
from loratui.core.run import rundir
from loratui.tui.screens.dialogs import TextDialog
from loratui.tui.screens.help import HelpScreen
from loratui.tui.screens.monitor import MonitorScreen
from loratui.tui.screens.wizard import WizardScreen

DOUBLE_PRESS_SECONDS = 2.0  # Ctrl+C twice within this quits
EXPECTED_ERRORS = (ValueError, OSError)  # loratui's one-line errors derive from ValueError; OSError: the system's
CRASH_EXIT = 70  # as the CLI's top level


def settings_path() -> Path:
    """Where the wizard keeps changed settings on quit: ``$LORATUI_HOME/last-settings.yaml``."""
    return loratui_home() / "last-settings.yaml"


class LoraCommands(Provider):
    """One provider for the palette, so the order is fixed: loratui's commands, then Textual's (theme, keys…)."""

    def _commands(self) -> list[SystemCommand]:
        app = self.app
        assert isinstance(app, LoraTuiApp)
        builtin = sorted(App.get_system_commands(app, self.screen), key=lambda command: command.title)
        return [*app.loratui_commands(), *builtin]

    async def discover(self) -> Hits:
        for command in self._commands():
            if command.discover:
                yield DiscoveryHit(command.title, command.callback, help=command.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for command in self._commands():
            if (score := matcher.match(command.title)) > 0:
                yield Hit(score, matcher.highlight(command.title), command.callback, help=command.help)


class LoraTuiApp(App):
    CSS_PATH = Path(__file__).parent / "app.tcss"  # absolute: subclasses live elsewhere
    TITLE = "loratui"
    COMMANDS = {LoraCommands}
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True,
                tooltip="Quit; a caption being edited is saved first"),
        Binding("ctrl+c", "ctrl_c_quit", "Quit (press twice)", id="app.ctrl_c", priority=True, show=False),
        Binding("f1", "help", "Help", id="app.help", priority=True, tooltip="Every key of this screen"),
        Binding("question_mark", "help", "Help", id="app.help_key", show=False,
                tooltip="Help (outside text fields)"),
    ]

    def __init__(self, config: TrainingConfig, *, attach: Path | None = None, runs_root: Path | None = None,
                 plain_images: bool = False, clock: Callable[[], float] | None = None,
                 startup_error: str | None = None) -> None:
        super().__init__()
        self.config = config
        self.start_config = config  # settings changed since start are kept on quit (see save_pending)
        self.attach = attach
        self.runs_root = runs_root
        self.plain_images = plain_images
        self.clock = clock
        self.startup_error = startup_error
        self._last_ctrl_c = -DOUBLE_PRESS_SECONDS
        self.crash_line: str | None = None  # set when a bug ended the app (see _handle_exception)
        self._quit_unsaved = False  # a second Ctrl+Q quits even with a caption edit that could not be saved

    def get_default_screen(self) -> Screen:
        return WizardScreen(self.config, plain_images=self.plain_images, runs_root=self.runs_root)

    def on_mount(self) -> None:
        self._watch_hangup()
        if self.startup_error:
            self.notify(self.startup_error, severity="error", timeout=15)
        self._list_kept_edits()
        if self.attach is not None:
            self.push_screen(self._monitor(self.attach))

    # -- quitting never loses an edit ------------------------------------------------------------------------

    def _watch_hangup(self) -> None:
        """Closing the terminal sends SIGHUP: save pending edits before exiting, as Ctrl+Q does."""
        if not hasattr(signal, "SIGHUP"):
            return
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._hangup)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no unix signals
            return
        self._hangup_installed = True

    def _hangup(self) -> None:
        self.save_pending()
        self.keep_unsaved()
        self.exit(return_code=129)

    def keep_unsaved(self) -> str | None:
        """As the app closes: an edit its file refused (locked dataset, read-only file) goes to the rescue
        folder instead of being dropped. Returns where, for the exit line."""
        wizard = self._wizard()
        captions = wizard.query_one("#captions") if wizard is not None else None
        if captions is None or not captions.unsaved():
            return None
        text = captions.query_one("#editor").text
        try:
            return str(rescue.keep(captions.current.caption, text))
        except OSError:
            return None  # nowhere to write: the refusal was already shown while the app could show it

    def _list_kept_edits(self) -> None:
        edits = rescue.kept()
        if edits:
            last = edits[-1]
            self.notify(f"{len(edits)} caption edit(s) could not be saved when loratui closed; they are in "
                        f"{rescue.folder()} (the newest: cp '{last.text_file}' '{last.caption}')",
                        severity="warning", timeout=20)

    def on_unmount(self) -> None:
        if getattr(self, "_hangup_installed", False):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)

    def save_pending(self) -> list[str]:
        """Write every unsaved edit of every screen; returns what was saved (for the exit message).

        The caption being edited goes to its file; settings changed in Steps/Parameters go to a preset in
        loratui's home, so that quitting (or a closed terminal) never throws typed values away."""
        wizard = self._wizard()
        saved = wizard.save_pending() if wizard is not None else []
        if self.config != self.start_config:
            path = settings_path()
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                save_preset(self.config, path, comment="The wizard's settings when it was closed")
            except OSError as exc:
                self.notify(f"{path}: cannot save the settings ({exc.strerror})", severity="error")
            else:
                saved.append(f"the settings to {path} (reopen with --preset {path})")
        return saved

    async def action_quit(self) -> None:
        saved = self.save_pending()
        wizard = self._wizard()
        if wizard is not None and wizard.query_one("#captions").unsaved() and not self._quit_unsaved:
            # The save was refused (another process holds the captions) and said why: quitting would drop it.
            self._quit_unsaved = True
            self.notify("the caption edit is not saved (see above): Ctrl+Z drops the edit, or Ctrl+Q again quits "
                        f"and keeps it in {rescue.folder()}",
                        severity="warning", timeout=10)
            return
        kept = self.keep_unsaved()  # a second Ctrl+Q: quit, but the refused edit is kept, not dropped
        if kept:
            saved.append(f"the unsaved caption edit to {kept}")
        self.exit(message=f"saved {', '.join(saved)}" if saved else None)

    async def action_ctrl_c_quit(self) -> None:
        now = time.monotonic()
        if now - self._last_ctrl_c <= DOUBLE_PRESS_SECONDS:
            await self.action_quit()
            return
        self._last_ctrl_c = now
        self.notify("press Ctrl+C again to quit (edits are saved), or Ctrl+Q", title="Quit?",
                    timeout=DOUBLE_PRESS_SECONDS)

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        return not (action == "help" and isinstance(self.screen, HelpScreen))

    # -- no tracebacks: a bug is one line and a crash report ------------------------------------------------

    def report_crash(self, error: BaseException) -> str | None:
        """A bug in a worker or a key's action: write a crash report and show it in a dialog; the app goes on."""
        report = write_crash_report(sys.argv[1:], error)
        self.push_screen(TextDialog("loratui hit a bug; your work is safe and the wizard keeps working (Esc)",
                                    f"internal error: {one_line(error)}\n"
                                    f"crash report: {report or 'could not be written'}"))
        return report

    def report_if_bug(self, error: BaseException | None) -> bool:
        """For a worker's error handler: an error loratui does not expect is reported as a crash. True if so."""
        if error is None or isinstance(error, EXPECTED_ERRORS):
            return False
        self.report_crash(error)
        return True

    async def run_action(self, action: str | ActionParseResult, default_namespace: DOMNode | None = None,
                         namespaces: Mapping[str, DOMNode] | None = None) -> bool:
        # Every key binding runs through here: a bug in an action must not end the app with a traceback.
        try:
            return await super().run_action(action, default_namespace, namespaces)
        except Exception as error:
            self.report_crash(error)
            return True

    def _handle_exception(self, error: Exception) -> None:
        # Textual calls this (it has no public hook) for an exception nothing caught; its default prints a
        # traceback and exits. A worker's exception has stopped nothing else, so the app keeps working. An
        # event handler's has stopped that widget's message loop (Textual does), so the app cannot go on
        # safely: save every edit, write the report and exit with one line instead of a traceback.
        if isinstance(error, WorkerFailed) and self.is_running:
            self.report_crash(error.error)
            return
        report = write_crash_report(sys.argv[1:], error)
        try:
            saved = self.save_pending()
            kept = self.keep_unsaved()
            saved += [f"the unsaved caption edit to {kept}"] if kept else []
        except Exception:  # the bug may be in the state save_pending reads: the report is what matters now
            saved = []
        line = f"loratui: internal error: {one_line(error)}; crash report: {report or 'could not be written'}"
        self.crash_line = line + (f"; saved {', '.join(saved)}" if saved else "")  # exit_status prints it
        self.exit(return_code=CRASH_EXIT)

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.screen))

    # -- the command palette: loratui's own commands first ---------------------------------------------------

    def loratui_commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand("Open dataset folder", "Go to the Dataset step", partial(self.goto_step, 0))
        yield SystemCommand("Load preset", "Load a YAML preset into the parameters", self.load_preset)
        yield SystemCommand("Export preset", "Save the current settings as a YAML preset", self.export_preset)
        yield SystemCommand("Attach to newest run", "Open the monitor of the newest training run",
                            self.attach_newest)
        yield SystemCommand("Check model", "Check the base model file of these settings", self.check_model)
        yield SystemCommand("Tag images with a WD tagger", "Tag the dataset's images (Captions step, Ctrl+L)",
                            self.wd_tagger)
        yield SystemCommand("Help: keys of this screen", "Every key of the current screen (F1)", self.action_help)

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

    def check_model(self) -> None:
        self.goto_step(3)
        self.screen.query_one("#parameters").check_model()

    def wd_tagger(self) -> None:
        self.goto_step(1)
        self.screen.query_one("#captions").action_wd_tagger()

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
    # A bug inside the app is a dialog (workers, key actions) or a saved exit with one line and a crash report
    # (LoraTuiApp._handle_exception); one outside it reaches the CLI's top level, which writes the report.
    app.run()
    return exit_status(app)


def exit_status(app: LoraTuiApp) -> int:
    """After ``app.run()``: print the crash line, if the app crashed, as the CLI prints errors; the exit status."""
    if app.crash_line:
        print(app.crash_line, file=sys.stderr)  # one line, unwrapped: Textual's console would wrap it at 80
    return app.return_code or 0
