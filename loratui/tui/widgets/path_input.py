"""A path input that completes folder names as you type (→ accepts the suggestion)."""

from __future__ import annotations

from pathlib import Path

from textual.suggester import Suggester
from textual.widgets import Input


class FolderSuggester(Suggester):
    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        if not value:
            return None
        path = Path(value).expanduser()
        parent, stem = (path, "") if value.endswith("/") else (path.parent, path.name)
        try:
            names = sorted(p.name for p in parent.iterdir() if p.is_dir() and p.name.startswith(stem)
                           and not p.name.startswith("."))
        except OSError:
            return None
        if not names:
            return None
        base = value if value.endswith("/") else value[: len(value) - len(stem)]
        return base + names[0] + "/"


class PathInput(Input):
    def __init__(self, value: str = "", **kwargs) -> None:
        super().__init__(value=value, suggester=FolderSuggester(), **kwargs)
