"""Caption text: comma-separated tags (booru style) or sentences, one variant per line."""

from __future__ import annotations

from pathlib import Path

from loratui.core.atomic import atomic_write_bytes


def decode(raw: bytes) -> tuple[str, bool]:
    """Text and whether it was valid UTF-8; anything else is read as Latin-1 so nothing is lost or crashes."""
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("latin-1"), False


def read_caption(path: Path) -> str:
    return decode(path.read_bytes())[0] if path.exists() else ""


def save_caption(path: Path, text: str) -> None:
    """Atomic single-caption save (the editor's Save)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def split_tags(line: str) -> list[str]:
    return [t.strip() for t in line.split(",") if t.strip()]


def join_tags(tags: list[str]) -> str:
    return ", ".join(tags)


def map_lines(text: str, fn) -> str:
    """Apply ``fn`` to each non-empty line; lines it leaves equal keep their exact original bytes."""
    ending = "\n" if text.endswith("\n") else ""
    lines = text[: len(text) - len(ending)].split("\n") if text else [""]
    out = []
    for line in lines:
        new = fn(line) if line.strip() else line
        out.append(line if new == line else new)
    return "\n".join(out) + ending


def tag_lists(text: str) -> list[list[str]]:
    return [split_tags(line) for line in text.splitlines() if line.strip()]
