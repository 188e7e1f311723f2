"""Journaled batch writes: all or nothing, with an undo that never overwrites someone else's edit.

Before a batch touches any caption, its journal entry (every file's absolute path, old and new bytes, and the
dataset it is for) is written atomically; then each caption is replaced atomically. If a write fails, the files
already written are put back and the entry is removed: the batch is all or nothing. A process killed at any
moment leaves each caption fully old or fully new, and ``undo`` restores every file from the journal, to the
byte, after checking that each one is still what the operation wrote.

One operation at a time per dataset: ``dataset_lock`` (an ``fcntl`` lock on a file in the journal folder) is
taken by every writer here and is public so that the wizard holds the same lock around its own edits.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from loratui.core.atomic import atomic_write_bytes, atomic_write_text, fsync_dir
from loratui.core.captions.ops import CaptionError, Change

JOURNAL_DIR = ".loratui-journal"
LOCK_FILE = "lock"
FORMAT_VERSION = 2  # 2: absolute resolved paths and the dataset they belong to


class CaptionLockError(CaptionError):
    """Another caption operation holds this dataset."""

    holder = "?"  # the pid written in the lock file by the process that holds it


class UndoConflict(CaptionError):
    """Files changed since the operation; undo would discard those edits. Nothing was changed."""

    def __init__(self, operation: str, paths: list[Path]) -> None:
        self.operation, self.paths = operation, paths
        shown = ", ".join(str(p) for p in paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        super().__init__(f"{len(paths)} caption(s) changed since '{operation}': {shown}; undo would discard those "
                         "edits, so nothing was undone (use --force to undo anyway)")


# --- the per-dataset lock -------------------------------------------------------------------------------------

_held: dict[Path, list] = {}  # dataset -> [fd, depth]: the lock is re-entrant within this process
_held_guard = threading.Lock()


@contextlib.contextmanager
def dataset_lock(root: Path, wait: float = 0.0) -> Iterator[None]:
    """Hold the dataset's caption lock; ``CaptionLockError`` if another process keeps it past ``wait`` seconds."""
    key = Path(root).resolve()
    with _held_guard:
        if key in _held:
            _held[key][1] += 1
            fd = None
        else:
            fd = _acquire(key, wait)
            _held[key] = [fd, 1]
    try:
        yield
    finally:
        with _held_guard:
            _held[key][1] -= 1
            if _held[key][1] == 0:
                os.close(_held.pop(key)[0])  # closing the descriptor releases the lock


def _acquire(root: Path, wait: float) -> int:
    folder = root / JOURNAL_DIR
    try:
        folder.mkdir(exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise CaptionError(f"{folder}: cannot create the caption lock ({exc.strerror}); is the dataset "
                           "folder writable?") from exc
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
                os.close(fd)
                error = CaptionLockError(f"{root}: another caption operation (pid {holder}) is changing this "
                                         "dataset; wait for it to finish and run this again")
                error.holder = holder
                raise error from None
            time.sleep(0.05)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # who holds it, for the message above
    return fd


# --- journal entries ------------------------------------------------------------------------------------------


def _entries(root: Path) -> list[Path]:
    folder = root / JOURNAL_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.json") if p.stem.split("-")[0].isdigit())


def _encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _current(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _put(path: Path, data: bytes | None) -> None:
    """Make ``path`` hold ``data`` (None: not exist)."""
    if data is None:
        path.unlink(missing_ok=True)
    else:
        atomic_write_bytes(path, data, sync_dir=False)


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def apply(root: Path, changes: list[Change], operation: str) -> Path | None:
    """Write ``changes`` all or nothing (journal first); the journal entry, or None when nothing changes.

    Raises ``CaptionError`` (one line naming the file and the reason) when a file changed since it was read or
    a write fails; in both cases every caption is as it was before.
    """
    changes = [c for c in changes if c.new != c.old or not c.existed]
    if not changes:
        return None  # recording an empty entry would make the next undo a no-op instead of the real last op
    root = Path(root).resolve()
    with dataset_lock(root):
        targets = [(Path(c.path).resolve(), c) for c in changes]
        for path, change in targets:
            if not _inside(path, root):
                raise CaptionError(f"{path}: not inside the dataset {root}; nothing was changed")
            if _current(path) != (change.old if change.existed else None):
                raise CaptionError(f"{path}: changed since it was read (edited elsewhere?); nothing was changed, "
                                   "run the operation again")
        entry = _write_entry(root, operation, targets)
        _write_all(root, entry, targets)
    return entry


def _write_entry(root: Path, operation: str, targets: list[tuple[Path, Change]]) -> Path:
    folder = root / JOURNAL_DIR
    entries = _entries(root)
    number = int(entries[-1].stem.split("-")[0]) + 1 if entries else 1
    entry = folder / f"{number:06d}-{int(time.time())}.json"
    record = {
        "version": FORMAT_VERSION,
        "dataset": str(root),
        "operation": operation,
        "time": time.time(),
        "changes": [{"path": str(path), "old": _encode(c.old), "new": _encode(c.new), "existed": c.existed}
                    for path, c in targets],
    }
    try:
        atomic_write_text(entry, json.dumps(record))
    except OSError as exc:
        raise CaptionError(f"{entry}: cannot write the undo journal ({_why(exc)}); nothing was changed") from exc
    return entry


def _write_all(root: Path, entry: Path, targets: list[tuple[Path, Change]]) -> None:
    done: list[tuple[Path, Change]] = []
    for path, change in targets:
        try:
            _put(path, change.new)
        except OSError as exc:
            _roll_back(root, entry, done, f"{path}: cannot be written ({_why(exc)})")
        done.append((path, change))
    for folder in {path.parent for path, _ in targets}:
        fsync_dir(folder)


def _roll_back(root: Path, entry: Path, done: list[tuple[Path, Change]], reason: str) -> None:
    """Put back the files a failed batch already wrote, then raise ``CaptionError`` saying what happened."""
    stuck = []
    for path, change in reversed(done):
        try:
            _put(path, change.old if change.existed else None)
        except OSError:
            stuck.append(path)
    if stuck:
        # Keep the entry: `undo` can finish the job once the cause is fixed.
        raise CaptionError(f"{reason}; {len(stuck)} file(s) could not be put back (e.g. {stuck[0]}): fix the cause "
                           f"and run `loratui captions {root} undo`")
    entry.unlink(missing_ok=True)
    raise CaptionError(f"{reason}; no caption was changed ({len(done)} already written were put back)")


def last_operation(root: Path) -> str | None:
    entries = _entries(root)
    if not entries:
        return None
    try:
        return str(json.loads(entries[-1].read_text())["operation"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _read_entry(root: Path, entry: Path) -> tuple[str, list[dict]]:
    """The entry's operation and changes, after checking it belongs to ``root`` and touches nothing outside."""
    try:
        record = json.loads(entry.read_text(encoding="utf-8"))
        operation, changes, dataset = str(record["operation"]), list(record["changes"]), record.get("dataset")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CaptionError(f"{entry}: the undo journal entry is damaged ({exc}); nothing was undone") from exc
    if dataset is None:
        raise CaptionError(f"{entry}: written by an older loratui with relative paths, so the dataset it was for "
                           "is unknown; nothing was undone (check the captions by hand, then delete the entry)")
    if Path(str(dataset)) != root:
        raise CaptionError(f"{entry}: recorded for the dataset {dataset}, not {root}; nothing was undone")
    for change in changes:
        path = Path(str(change.get("path", "")))
        if not path.is_absolute() or not _inside(path, root):
            raise CaptionError(f"{entry}: names {path}, outside {root}; nothing was undone")
    return operation, changes


def undo(root: Path, force: bool = False) -> tuple[str, int] | None:
    """Revert the newest journaled operation; (operation, files restored), or None if there is none.

    Each file must still hold what the operation wrote; otherwise ``UndoConflict`` lists them and nothing is
    changed, unless ``force``. Files already back to their old bytes (an interrupted batch) are left alone.
    """
    root = Path(root).resolve()
    with dataset_lock(root):
        entries = _entries(root)
        if not entries:
            return None
        operation, changes = _read_entry(root, entries[-1])
        plan, conflicts = [], []
        for change in changes:
            path = Path(change["path"])
            old = base64.b64decode(change["old"]) if change["existed"] else None
            now = _current(path)
            if now == old:
                continue
            if now != base64.b64decode(change["new"]):
                conflicts.append(path)
            plan.append((path, old))
        if conflicts and not force:
            raise UndoConflict(operation, conflicts)
        failed = []
        for path, old in plan:
            try:
                _put(path, old)
            except OSError as exc:
                failed.append(f"{path} ({_why(exc)})")
        for folder in {path.parent for path, _ in plan}:
            fsync_dir(folder)
        if failed:
            raise CaptionError(f"undo of '{operation}' could not restore {len(failed)} file(s), e.g. {failed[0]}; "
                               "fix the cause and run undo again (restored files are kept)")
        entries[-1].unlink()
    return operation, len(changes)
