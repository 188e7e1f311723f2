"""Atomic file writes: temp file in the same folder, fsync, rename. A reader sees the old file or the new one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", sync_dir: bool = True) -> Iterator[IO]:
    """Open a temp file beside ``path``; on a clean exit it replaces ``path``, on error it is removed.

    ``sync_dir=False`` lets a batch writer fsync the folder once at the end (``fsync_dir``) instead of per file.
    """
    if mode not in ("w", "wb"):
        raise ValueError("atomic_open writes only ('w' or 'wb')")
    target = Path(path)
    # A short prefix: a name near the 255-byte limit must still leave room for the temp file's own name.
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:64]}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8", "newline": ""} if mode == "w" else {})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp makes 0600: an existing file keeps the mode the user gave it, a new one gets what the umask
        # allows, as if written with open().
        try:
            file_mode = target.stat().st_mode & 0o7777
        except FileNotFoundError:
            file_mode = 0o666 & ~current_umask()
        os.chmod(tmp, file_mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync_dir:
        fsync_dir(target.parent)


def current_umask() -> int:
    """The process umask, read without changing it where /proc shows it (changing it is not thread-safe)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every platform can open a directory)."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, sync_dir: bool = True) -> None:
    with atomic_open(path, "wb", sync_dir) as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)
