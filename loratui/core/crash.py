"""Crash reports: an unexpected exception becomes one line for the user and a file with the traceback.

Shared by the CLI's top level and the wizard (which must not import the CLI), so both name the same folder.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path

from loratui import __version__
from loratui.core.atomic import atomic_write_text
from loratui.core.home import loratui_home


def crash_dir() -> Path:
    return loratui_home() / "crash-reports"


def one_line(error: BaseException) -> str:
    """``Type: message`` on one line, short enough for a terminal or a dialog."""
    return " ".join(f"{type(error).__name__}: {error}".split())[:300]


def write_crash_report(argv: list[str], error: BaseException | None = None) -> str | None:
    """Write ``error``'s traceback (default: the exception being handled) to the crash folder; its path or None."""
    trace = "".join(traceback.format_exception(error)) if error is not None else traceback.format_exc()
    text = f"loratui {__version__} on Python {sys.version.split()[0]}\nargv: {argv!r}\n\n{trace}"
    folder = crash_dir()
    stamp = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Never overwrite: two crashes in one second (a worker, then a handler) get two files.
        path = next(p for n in range(1000) if not (p := folder / f"{stamp}{f'-{n}' if n else ''}.txt").exists())
        atomic_write_text(path, text)
    except (OSError, StopIteration):
        return None
    return str(path)
