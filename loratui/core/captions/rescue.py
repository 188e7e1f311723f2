"""Caption edits the wizard could not write as it closed (the terminal hung up while another caption operation
held the dataset's lock, a read-only file…) are kept here, so that no edit is ever lost:
``$LORATUI_HOME/unsaved-captions/<time>-<caption name>`` holds the text exactly as typed, and a ``.target``
file beside it names the caption it belongs to. The wizard lists them when it next starts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from loratui.core.atomic import atomic_write_text
from loratui.core.home import loratui_home

FOLDER = "unsaved-captions"
TARGET = ".target"


@dataclass(frozen=True)
class KeptEdit:
    text_file: Path  # the edit, as typed
    caption: Path  # the caption file it was meant for


def folder() -> Path:
    return loratui_home() / FOLDER


def keep(caption: Path, text: str, where: Path | None = None) -> Path:
    """Write ``text`` for ``caption`` to the rescue folder (never over an earlier one); returns its path."""
    where = where or folder()
    where.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, n = where / f"{stamp}-{caption.name}", 1
    while path.exists() or path.with_name(path.name + TARGET).exists():
        n += 1  # "<time>.2-a.txt" sorts after "<time>-a.txt": the names keep the order they were written in
        path = where / f"{stamp}.{n}-{caption.name}"
    atomic_write_text(path, text)
    atomic_write_text(path.with_name(path.name + TARGET), str(Path(caption).resolve()))
    return path


def kept(where: Path | None = None) -> list[KeptEdit]:
    """The edits kept so far, oldest first (a damaged or half-written entry is skipped, not fatal)."""
    where = where or folder()
    found = []
    for target in sorted(where.glob(f"*{TARGET}")):
        text_file = target.with_name(target.name.removesuffix(TARGET))
        try:
            caption = Path(target.read_text(encoding="utf-8").strip())
        except (OSError, UnicodeDecodeError):
            continue
        if text_file.is_file():
            found.append(KeptEdit(text_file, caption))
    return found
