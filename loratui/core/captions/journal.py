"""Journaled batch writes with exact undo.

Before a batch touches any caption, its journal entry (every file's old and new bytes) is written
atomically; then each caption is replaced atomically. A process killed at any moment therefore leaves each
caption fully old or fully new, and ``undo`` restores every file from the journal, to the byte.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

from loratui.core.atomic import atomic_write_bytes, atomic_write_text, fsync_dir
from loratui.core.captions.ops import Change

JOURNAL_DIR = ".loratui-journal"


def _entries(root: Path) -> list[Path]:
    folder = root / JOURNAL_DIR
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def _encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def apply(root: Path, changes: list[Change], operation: str) -> Path | None:
    """Write ``changes`` (journal first); returns the journal entry, or None when nothing changes."""
    if not changes:
        return None
    folder = root / JOURNAL_DIR
    folder.mkdir(exist_ok=True)
    number = int(_entries(root)[-1].stem.split("-")[0]) + 1 if _entries(root) else 1
    entry = folder / f"{number:06d}-{int(time.time())}.json"
    record = {
        "operation": operation,
        "time": time.time(),
        "changes": [{"path": str(c.path), "old": _encode(c.old), "new": _encode(c.new), "existed": c.existed}
                    for c in changes],
    }
    atomic_write_text(entry, json.dumps(record))
    for change in changes:
        atomic_write_bytes(change.path, change.new, sync_dir=False)
    for folder in {c.path.parent for c in changes}:
        fsync_dir(folder)
    return entry


def last_operation(root: Path) -> str | None:
    entries = _entries(root)
    return json.loads(entries[-1].read_text())["operation"] if entries else None


def undo(root: Path) -> tuple[str, int] | None:
    """Revert the newest journaled operation; returns (operation, files restored) or None if there is none."""
    entries = _entries(root)
    if not entries:
        return None
    record = json.loads(entries[-1].read_text())
    for change in record["changes"]:
        path = Path(change["path"])
        if change["existed"]:
            atomic_write_bytes(path, base64.b64decode(change["old"]), sync_dir=False)
        else:
            path.unlink(missing_ok=True)
    for folder in {Path(c["path"]).parent for c in record["changes"]}:
        fsync_dir(folder)
    entries[-1].unlink()
    return record["operation"], len(record["changes"])
