"""loratui's own folder: ``$LORATUI_HOME``, by default ``~/.loratui`` (runs, bench results, measured speeds,
crash reports, kept caption edits, the wizard's last settings)."""

from __future__ import annotations

import os
from pathlib import Path


def loratui_home() -> Path:
    home = os.environ.get("LORATUI_HOME")
    return Path(home) if home else Path.home() / ".loratui"
