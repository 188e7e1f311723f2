"""Step 4: the config as a grouped form built from the config model, with help, validation and presets."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import Button, Input, Label, Select, Static, Switch, TabbedContent, TabPane, TextArea

from loratui.core.config import FieldSpec, TrainingConfig, check_config, issues_from_validation_error, iter_fields
from loratui.core.presets import PresetError, diff_from_defaults, list_presets, load_config, save_preset
from loratui.tui.messages import ConfigChanged
from loratui.tui.screens.dialogs import PathDialog, TextDialog
from loratui.tui.widgets.model_info import ModelInfo

BASIC = {
    "model.pretrained_model_name_or_path", "model.model_family", "dataset.train_data_dir", "dataset.reg_data_dir",
    "dataset.resolution", "saving.output_name", "saving.output_dir", "schedule.max_train_epochs",
    "schedule.train_batch_size", "precision.mixed_precision", "precision.save_precision", "schedule.seed",
    "advanced.clip_skip",
}
TABS = ("Basic", "Network", "Optimizer", "Advanced", "Samples")
TABS_HINT = "←/→ switch tabs; Tab goes into the fields; the focused field's help and errors show here"


def tab_for(path: str) -> str:
    if path in BASIC:
        return "Basic"
    section = path.split(".", 1)[0]
    if section == "network":
        return "Network"
    if section == "optimizer" or path.startswith("schedule.lr_"):
        return "Optimizer"
    if section == "sampling":
        return "Samples"
    return "Advanced"


def _base_type(annotation: Any) -> Any:
    """``int | None`` → int; ``dict[str, int]`` → dict."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0]) if len(args) == 1 else str
    return origin or annotation


def control_id(path: str) -> str:
    return "field-" + path.replace(".", "--")


def path_of(widget_id: str) -> str:
    return widget_id.removeprefix("field-").replace("--", ".")


# What an optional setting does when it is left empty (a dim "empty" read like a value).
UNSET = {
    "model.vae": "unset: the model's own VAE",
    "dataset.reg_data_dir": "unset: no regularisation images",
    "network.conv_dim": "unset: no conv layers (plain LoRA)",
    "network.conv_alpha": "unset: 1 (when conv_dim is set)",
    "network.network_weights": "unset: start from zero (a new LoRA)",
    "network.scale_weight_norms": "unset: no norm cap",
    "optimizer.unet_lr": "unset: same as learning_rate",
    "optimizer.text_encoder_lr": "unset: same as learning_rate",
    "schedule.max_train_steps": "unset: the epochs decide",
    "saving.save_last_n_epochs": "unset: keep every checkpoint",
    "saving.logging_dir": "unset: no extra logs",
    "advanced.min_snr_gamma": "unset: off",
}


def placeholder_for(spec: FieldSpec) -> str:
    return UNSET.get(spec.path, "unset: the default behaviour")


def make_control(spec: FieldSpec, value: Any) -> Widget:
    kind = _base_type(spec.annotation)
    wid = control_id(spec.path)
    if spec.choices:
        return Select([(str(c), c) for c in spec.choices], value=value, allow_blank=False, id=wid, compact=True)
    if kind is bool:
        return Switch(value=bool(value), id=wid)
    if kind is list:
        return TextArea("\n".join(value), id=wid, classes="prompts")
    return Input(control_text(spec, value), id=wid, placeholder=placeholder_for(spec) if kind is not dict
                 else "{key: value} (unset: none)", compact=True)


def control_text(spec: FieldSpec, value: Any) -> str:
    """What a text field shows for ``value``."""
    if _base_type(spec.annotation) is dict:
        return yaml.safe_dump(value, default_flow_style=True).strip() if value else ""
    return "" if value is None else str(value)


def parse_value(spec: FieldSpec, widget: Widget) -> Any:
    kind = _base_type(spec.annotation)
    if isinstance(widget, Select):
        return widget.value
    if isinstance(widget, Switch):
        return widget.value
    if isinstance(widget, TextArea):
        return [line.strip() for line in widget.text.splitlines() if line.strip()]
    text = widget.value.strip()
    if kind is dict:
        return yaml.safe_load(text) if text else {}
    if not text:
        return None if typing.get_origin(spec.annotation) in (typing.Union, types.UnionType) else ""
    return text


class FieldScroll(VerticalScroll, can_focus=False):
    """A tab's fields: Tab goes from the tab bar straight to the first field (the focused field scrolls in)."""


class ParametersStep(Vertical):
    # Priority, and keys a text field does not use: they work whichever field has focus.
    BINDINGS = [
        Binding("ctrl+o", "load_preset", "Load", id="params.load", priority=True, tooltip="Load a preset"),
        Binding("ctrl+s", "export_preset", "Export", id="params.export", priority=True,
                tooltip="Export (save) the settings as a preset"),
        Binding("ctrl+r", "show_diff", "Changed", id="params.diff", priority=True,
                tooltip="Review the settings changed from the defaults"),
    ]

    def __init__(self, config: TrainingConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.specs = {spec.path: spec for spec in iter_fields()}
        self.errors: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        with TabbedContent(*TABS, id="param-tabs"):
            for tab in TABS:
                with TabPane(tab, id=f"tab-{tab.lower()}"), FieldScroll():
                    for spec in self.specs.values():
                        if tab_for(spec.path) != tab:
                            continue
                        with Horizontal(classes="field"):
                            yield Label(spec.name, classes="field-label")
                            yield make_control(spec, self.config.get(spec.path))
                        if spec.path == "model.model_family":
                            yield ModelInfo(id="model-info")
        yield Static("", id="field-help")
        yield Static("", id="config-issues")
        with Horizontal(classes="buttons"):
            yield Button("Load preset", id="load", compact=True)
            yield Button("Export preset", id="export", compact=True)
            yield Button("Changed settings", id="diff", compact=True)

    def on_mount(self) -> None:
        self.query_one("#field-help", Static).update(Text(TABS_HINT, style="italic"))
        self.show_issues()

    def config_updated(self, config: TrainingConfig) -> None:
        if config == self.config:
            return
        self.config = config
        self.refresh_controls()
        self.show_issues()

    def refresh_controls(self) -> None:
        """Every field, the focused one too, shows the config's value (after a load or import); old errors go."""
        for path, spec in self.specs.items():
            widget = self.query_one(f"#{control_id(path)}")
            value = self.config.get(path)
            with widget.prevent(Input.Changed, Select.Changed, Switch.Changed, TextArea.Changed):
                if isinstance(widget, Select | Switch):
                    widget.value = value
                elif isinstance(widget, TextArea):
                    if widget.text != "\n".join(value):
                        widget.load_text("\n".join(value))
                elif widget.value != control_text(spec, value):
                    widget.value = control_text(spec, value)
            widget.remove_class("-invalid")
        self.errors.clear()
        if self.screen.focused is not None:
            self._show_help(self.screen.focused)

    def first_problem(self) -> tuple[Widget, str] | None:
        """The first invalid field in form order, and why (the wizard refuses Next on it)."""
        for path in self.specs:
            if path in self.errors:
                widget = self.query_one(f"#{control_id(path)}")
                self.query_one("#param-tabs", TabbedContent).active = f"tab-{tab_for(path).lower()}"
                return widget, self.errors[path]
        if (model := self.query_one(ModelInfo).problem) is not None:  # the file disagrees with the settings
            self.query_one("#param-tabs", TabbedContent).active = "tab-basic"
            return self.query_one(f"#{control_id(model.path)}"), model.reason
        return None

    def on_descendant_focus(self, event) -> None:
        self._show_help(event.widget)

    def _show_help(self, widget: Widget) -> None:
        widget_id = getattr(widget, "id", None) or ""
        if widget_id.startswith("field-"):
            path = path_of(widget_id)
            spec = self.specs[path]
            help_text = Text(f"{path}: ", style="bold")
            help_text.append(spec.help)
            if spec.choices:
                help_text.append(f"  [{' | '.join(map(str, spec.choices))}]", style="dim")
            if path in self.errors:
                help_text.append(f"\n{self.errors[path]}", style="bold red")
            self.query_one("#field-help", Static).update(help_text)
        else:
            self.query_one("#field-help", Static).update(Text(TABS_HINT, style="italic"))

    @on(Input.Changed)
    @on(Select.Changed)
    @on(Switch.Changed)
    @on(TextArea.Changed)
    def field_changed(self, event) -> None:
        widget = event.control if hasattr(event, "control") else event.text_area
        widget_id = widget.id or ""
        if not widget_id.startswith("field-"):
            return
        event.stop()
        path = path_of(widget_id)
        spec = self.specs[path]
        try:
            config = self.config.with_value(path, parse_value(spec, widget))
        except (ValidationError, yaml.YAMLError) as exc:
            message = (str(issues_from_validation_error(exc)[0]) if isinstance(exc, ValidationError)
                       else f"{path}: not valid YAML")
            self.errors[path] = message
            widget.add_class("-invalid")
            self._show_help(widget)
            self.show_issues()
            return
        self.errors.pop(path, None)
        widget.remove_class("-invalid")
        self._show_help(widget)  # the error under the help goes once the value is fixed
        if config != self.config:
            self.config = config
            self.post_message(ConfigChanged(config, "parameters"))
            self.show_issues()

    @on(ModelInfo.Checked)
    def model_checked(self) -> None:
        self.show_issues()

    def _mark_model_fields(self, model_info: ModelInfo) -> None:
        """The field the model file disagrees with is marked like an invalid value (until the next read)."""
        for path in ("model.pretrained_model_name_or_path", "model.model_family"):
            if path not in self.errors:
                bad = model_info.problem is not None and model_info.problem.path == path
                self.query_one(f"#{control_id(path)}").set_class(bad, "-invalid")

    def show_issues(self) -> None:
        issues = check_config(self.config)
        model_info = self.query_one(ModelInfo)
        model_info.check(self.config.model.pretrained_model_name_or_path or "", self.config.model.model_family)
        self._mark_model_fields(model_info)
        text = Text()
        for message in self.errors.values():
            text.append(f"{message}\n", style="bold red")
        if model_info.problem is not None:
            text.append(f"{model_info.problem.reason}\n", style="bold red")
        for issue in issues:
            style = {"error": "bold red", "warning": "yellow", "info": "cyan"}[issue.severity]
            text.append(f"{issue.severity}: {issue.path}: {issue.why}; {issue.fix}\n", style=style)
        if not issues and not self.errors and model_info.problem is None:
            text.append("no problems found in these settings", style="green")
        text.rstrip()
        self.query_one("#config-issues", Static).update(text)

    @on(Button.Pressed, "#load")
    def action_load_preset(self) -> None:
        choices = [(f"{p.name} — {p.description[:50]}", str(p.path)) for p in list_presets()]

        def loaded(path: Path | None) -> None:
            if path is None:
                return
            try:
                preset = load_config(path)
            except PresetError as exc:
                self.notify(str(exc), severity="error", timeout=10)
                return
            # A preset decides training settings; keep the model and dataset the user already chose.
            keep = {"model.pretrained_model_name_or_path": self.config.model.pretrained_model_name_or_path,
                    "dataset.train_data_dir": self.config.dataset.train_data_dir}
            for key, value in keep.items():
                if value and not preset.get(key):
                    preset = preset.with_value(key, value)
            self.config = preset  # refresh even when equal: a field may still show rejected text
            self.refresh_controls()
            self.show_issues()
            self.post_message(ConfigChanged(preset, "parameters"))
            self.notify(f"loaded {path.name}")

        self.app.push_screen(PathDialog("Load a preset (YAML):", choices=choices), loaded)

    @on(Button.Pressed, "#export")
    def action_export_preset(self) -> None:
        if (problem := self.first_problem()) is not None:
            widget, reason = problem  # exporting now would write the old value, not the one on screen
            widget.focus()
            self.notify(reason, title="Fix this first", severity="error")
            return
        def export(path: Path | None) -> None:
            if path is None:
                return
            try:
                save_preset(self.config, path, comment="Exported from the loratui wizard")
            except OSError as exc:
                self.notify(f"{path}: cannot write ({exc.strerror})", severity="error")
                return
            self.notify(f"exported {len(diff_from_defaults(self.config))} changed setting(s) to {path}")

        self.app.push_screen(PathDialog("Export the settings as a YAML preset:", "my-preset.yaml"), export)

    @on(Button.Pressed, "#diff")
    def action_show_diff(self) -> None:
        rows = diff_from_defaults(self.config)
        text = "\n".join(f"{path}: {default!r} → {value!r}" for path, default, value in rows) or "all defaults"
        self.app.push_screen(TextDialog(f"Changed from the defaults ({len(rows)})", text))

    def check_model(self) -> None:
        """The palette's "Check model": read the file again (it may have changed on disk) and show what it is."""
        self.query_one("#param-tabs", TabbedContent).active = "tab-basic"
        model_info = self.query_one(ModelInfo)
        model_info.check(self.config.model.pretrained_model_name_or_path or "", self.config.model.model_family,
                         force=True)
        self.call_after_refresh(model_info.scroll_visible)
