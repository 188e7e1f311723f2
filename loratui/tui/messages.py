"""Messages the wizard's parts send when something happened (attributes flow down, messages up)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual.message import Message

from loratui.core.config import TrainingConfig
from loratui.core.dataset.report import DatasetReport


@dataclass
class ConfigChanged(Message):
    """A step changed the training config; every step re-reads it."""

    config: TrainingConfig
    source: str = ""


@dataclass
class DatasetScanned(Message):
    report: DatasetReport


@dataclass
class ShowImage(Message):
    """Jump to an image in the Captions step."""

    path: Path
