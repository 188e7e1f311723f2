"""The base model's checkpoint info on the Parameters step: family, prediction, dtype, size, what is trained.

Read from the safetensors header alone (``loratui.core.checkpoint_info``, no torch) in a worker thread, so a
slow disk or a network mount never blocks the UI. A ``model_family`` that disagrees with the file gets the
same one-line fix as ``loratui check-model``, and the wizard's Next refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import work
from textual.message import Message
from textual.widgets import Static

from loratui.core.checkpoint_info import (
    PICKLE_SUFFIXES,
    CheckpointError,
    CheckpointInfo,
    describe_checkpoint,
    describe_lines,
    family_mismatch,
)

FORMATS = {"safetensors": "file", "pickle": "pickle file", "diffusers": "diffusers folder"}
Key = tuple[str, str]  # (model path, model_family): what the shown info was read for


@dataclass
class ModelProblem:
    """A reason the wizard refuses Next: the config path of the field to fix, and the one-line fix."""

    path: str
    reason: str


def summary(info: CheckpointInfo) -> str:
    """One line: family, prediction, dtype, size (the long form is ``loratui check-model``)."""
    lines = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in describe_lines(info)}
    family = "family unknown" if info.family_name == "unknown" else info.family_name
    parts = [family if info.format != "pickle" else "family not read from a pickle file"]
    if info.format == "safetensors":
        prediction = {"epsilon": "epsilon", "v_prediction": "v-prediction"}.get(info.prediction or "",
                                                                                  "prediction not stated")
        parts += [prediction, info.dtype or "dtype unknown", f"{info.parameters / 1e6:,.0f} M parameters"]
    elif info.format == "diffusers" and info.prediction:
        parts.append(info.prediction.replace("_", "-"))
    parts.append(f"{lines['size']} {FORMATS.get(info.format, info.format)}")
    return " · ".join(parts)


def trains_line(info: CheckpointInfo) -> str | None:
    """What will be trained, worded as ``loratui check-model`` words it."""
    return next((line.split(":", 1)[1].strip() for line in describe_lines(info) if line.startswith("trains:")),
                None)


def looks_like_hub_id(text: str) -> bool:
    """``owner/name`` (not a checkpoint file name): what a model hub id looks like, not a local path."""
    file_like = Path(text).suffix.lower() in (".safetensors", *PICKLE_SUFFIXES)
    return text.count("/") == 1 and not text.startswith(("/", ".", "~")) and not file_like


def problem_for(info: CheckpointInfo, family: str) -> ModelProblem | None:
    """Why this file cannot be trained as configured: the file itself (a LoRA, an inpainting model) or a
    ``model_family`` that disagrees with it."""
    if info.problem:
        return ModelProblem("model.pretrained_model_name_or_path", info.problem)
    mismatch = family_mismatch(info, family)
    return ModelProblem("model.model_family", mismatch) if mismatch else None


class ModelInfo(Static):
    """Shows what the configured base model is; ``problem`` says what Next must refuse (None when fine)."""

    DEFAULT_CSS = """
    ModelInfo { height: auto; padding: 0 1; margin-bottom: 1; border-left: outer $panel; }
    """

    @dataclass
    class Checked(Message):
        """The model file was read (or could not be): the Parameters step marks the field to fix."""

        key: Key
        problem: ModelProblem | None

    @dataclass
    class Read(Message):
        """The worker read the file (``info``) or could not (``error``); only the widget handles it."""

        key: Key
        info: CheckpointInfo | None
        error: str | None

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.key: Key | None = None
        self.problem: ModelProblem | None = None

    def check(self, path: str, family: str, force: bool = False) -> None:
        """Read the model again when its path or family changed (or ``force``); the result arrives later."""
        key = (path.strip(), family)
        if key == self.key and not force:
            return
        self.key, self.problem = key, None
        if not key[0]:
            self.update(Text("base model: not set (model.pretrained_model_name_or_path on Basic)", style="yellow"))
            return
        self.update(Text(f"base model: reading {key[0]}…", style="dim"))
        self._read(key)

    @work(thread=True, exclusive=True, exit_on_error=False, group="model-info")
    def _read(self, key: Key) -> None:
        try:
            self.post_message(self.Read(key, describe_checkpoint(key[0]), None))
        except CheckpointError as exc:
            hub_id = not Path(key[0]).expanduser().exists() and looks_like_hub_id(key[0])
            error = f"{key[0]}: a hub id; the trainer downloads it (only local files are checked here)"
            self.post_message(self.Read(key, None, error if hub_id else str(exc)))
        except OSError as exc:  # a permission error or a vanished mount: say so, never a traceback
            self.post_message(self.Read(key, None, f"{key[0]}: cannot be read ({exc.strerror})"))

    def on_model_info_read(self, message: Read) -> None:
        message.stop()
        if message.key != self.key:
            return  # an older read finished after a newer one started
        text = Text()
        if message.info is None:
            # A missing file may be a hub id the trainer downloads; the trainer's own check decides.
            text.append(f"base model: {message.error}", style="yellow")
            self.problem = None
        else:
            info = message.info
            text.append("base model: ", style="bold")
            text.append(summary(info))
            if trains := trains_line(info):
                text.append(f"\ntrains: {trains}", style="dim")
            self.problem = problem_for(info, message.key[1])
            if self.problem is not None:
                text.append(f"\n{self.problem.reason}", style="bold red")
        self.update(text)
        self.post_message(self.Checked(message.key, self.problem))
