"""Checks before a run spends hours: everything that would otherwise fail only at the first (or last) save.

Pure Python (no torch), so the CLI runs the same checks before it launches a detached trainer, and the
trainer runs them before it loads the model.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from loratui.core.config import TrainingConfig
from loratui.core.dataset.layout import find_folders
from loratui.core.vram import GIB, estimate_vram

# The longest file name the trainer derives from the output name: NAME_v99-step00000000.safetensors
_LONGEST_SUFFIX = len("_v99-step00000000.safetensors")
NAME_MAX = 255
MARGIN_BYTES = 64 * 1024**2  # events, log, samples, temp files


class PreflightError(ValueError):
    """A run that cannot succeed as configured; ``hint`` says what to change."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def check_output_name(name: str) -> None:
    if "\x00" in name or name.strip() in ("", ".", "..") or "/" in name or "\\" in name:
        raise PreflightError(f"saving.output_name {name!r} is not a usable file name",
                             "set saving.output_name to a plain name such as 'mychar' (no folders, no NUL)")
    if len(name.encode("utf-8")) + _LONGEST_SUFFIX > NAME_MAX:
        raise PreflightError(f"saving.output_name is {len(name.encode('utf-8'))} bytes long; checkpoint names "
                             f"would pass the {NAME_MAX}-byte file-name limit",
                             f"shorten saving.output_name to at most {NAME_MAX - _LONGEST_SUFFIX} characters")


def check_output_dir(folder: Path) -> None:
    """``folder`` exists (created if need be) and accepts a new file: not under a file, not read-only."""
    for parent in [folder, *folder.parents]:
        if parent.exists() and not parent.is_dir():
            raise PreflightError(f"output folder {folder}: {parent} is a file, not a folder",
                                 "set saving.output_dir to a folder (or leave it empty for the run directory)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".loratui-write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise PreflightError(f"output folder {folder} is not writable ({exc.strerror or exc})",
                             "set saving.output_dir to a folder you can write to, or fix its permissions") from exc


def check_dataset(cfg: TrainingConfig) -> None:
    """A dataset folder is set and exists, and no folder trains with zero repeats."""
    if not cfg.dataset.train_data_dir.strip():
        raise PreflightError("no dataset folder is set",
                             "set dataset.train_data_dir to the folder holding your <repeats>_<name> folders")
    root = Path(cfg.dataset.train_data_dir)
    if not root.is_dir():
        raise PreflightError(f"{root}: dataset folder not found", "set dataset.train_data_dir to an existing folder")
    try:
        folders, _flat = find_folders(root, cfg.dataset.caption_extension,
                                      repeats_override=cfg.dataset.repeats)
    except OSError as exc:
        raise PreflightError(f"{root}: cannot be read ({exc.strerror or exc})", "check the folder's permissions") \
            from exc
    for folder in folders:
        if folder.repeats is not None and folder.repeats <= 0 and folder.images:
            raise PreflightError(f"{folder.path}: {folder.repeats} repeats would train nothing",
                                 f"rename it to e.g. 10_{folder.class_tokens} or set dataset.repeats for it")


def estimated_save_bytes(cfg: TrainingConfig) -> int:
    """Free space the run's files need: every checkpoint it keeps, the resumable state (twice, while it is
    replaced atomically) and a margin. An upper-bound estimate from the model family, rank and optimizer."""
    lora_and_optimizer = estimate_vram(cfg).parts.get("lora + optimizer", 0.0) * GIB
    file_bytes = lora_and_optimizer / 4  # the file holds the weights only, in at most fp32
    epochs = cfg.schedule.max_train_epochs
    every = cfg.saving.save_every_n_epochs
    kept = epochs // every if every else 0
    if cfg.saving.save_last_n_epochs:
        kept = min(kept, cfg.saving.save_last_n_epochs)
    state = 2 * lora_and_optimizer if cfg.saving.save_state else 0
    return int((kept + 2) * file_bytes + state + MARGIN_BYTES)


def check_free_space(cfg: TrainingConfig, folders: list[Path]) -> None:
    need = estimated_save_bytes(cfg)
    for folder in folders:
        with contextlib.suppress(OSError):
            free = shutil.disk_usage(folder).free
            if free < need:
                raise PreflightError(f"{folder}: {free / 1024**2:.0f} MiB free, the run's checkpoints and state "
                                     f"need about {need / 1024**2:.0f} MiB",
                                     "free some space, save fewer checkpoints (saving.save_last_n_epochs) or "
                                     "point saving.output_dir at a larger disk")


def check_before_training(cfg: TrainingConfig, output_dir: Path, run_dir: Path | None = None) -> None:
    """Every check; raises ``PreflightError`` for the first problem."""
    check_output_name(cfg.saving.output_name)
    check_dataset(cfg)
    check_output_dir(output_dir)
    check_free_space(cfg, [output_dir, *([run_dir] if run_dir is not None else [])])
