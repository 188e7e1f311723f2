"""TensorBoard logs of a run, written from the trainer's own events so the loop needs no extra bookkeeping.

Folder and tag names follow sd-scripts so dashboards made for kohya runs work: ``logging_dir/<log_prefix>
<YYYYmmddHHMMSS>`` (train_util ``prepare_accelerator``), ``loss/current``, ``loss/average``,
``loss/epoch_average``, ``lr/unet``, ``lr/textencoder`` (train_network ``generate_step_logs``). Without
``saving.logging_dir`` the logs go to the run directory's ``logs/``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from loratui.core.config import TrainingConfig

LOGS = "logs"
# our param-group names → kohya's lr tag names
LR_NAMES = {"unet": "unet", "text_encoder": "textencoder"}


def log_folder(cfg: TrainingConfig, run_dir: Path, now: float | None = None) -> Path:
    root = Path(cfg.saving.logging_dir).expanduser() if cfg.saving.logging_dir else run_dir / LOGS
    prefix = getattr(cfg.saving, "log_prefix", None) or ""
    return root / (prefix + time.strftime("%Y%m%d%H%M%S", time.localtime(now)))


class TensorBoardLog:
    """Feed it the trainer's events (``on_event``); it writes the ones TensorBoard can show."""

    def __init__(self, folder: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.writer = SummaryWriter(log_dir=str(folder), flush_secs=30)

    def on_event(self, type_: str, fields: dict[str, Any]) -> None:
        if type_ == "step":
            step = fields["step"]
            self.writer.add_scalar("loss/current", fields["loss"], step)
            self.writer.add_scalar("loss/average", fields["avg_loss"], step)
            for name, lr in fields.get("lrs", {}).items():
                self.writer.add_scalar(f"lr/{LR_NAMES.get(name, name)}", lr, step)
        elif type_ == "epoch_end":
            self.writer.add_scalar("loss/epoch_average", fields["avg_loss"], fields["epoch"])
            self.writer.flush()  # an epoch's worth survives a crash or a kill
        elif type_ == "sample":
            self._sample(Path(fields["path"]), fields.get("prompt", ""), fields["step"])
        elif type_ == "checkpoint":
            self.writer.flush()

    def _sample(self, path: Path, prompt: str, step: int) -> None:
        import numpy as np
        from PIL import Image

        try:
            with Image.open(path) as im:
                pixels = np.asarray(im.convert("RGB"))
        except OSError:
            return  # a sample that cannot be read is already reported by the sampler
        index = path.stem.rsplit("_", 1)[-1]  # NAME_e000001_00.png: one image series per prompt
        self.writer.add_image(f"samples/prompt_{index}", pixels, step, dataformats="HWC")
        if prompt:
            self.writer.add_text(f"samples/prompt_{index}", prompt, step)

    def close(self) -> None:
        self.writer.close()


class NullLog:
    """What other processes get (accelerate's trackers log on the main one only), or a trainer without
    the tensorboard package: training must not fail for want of a dashboard."""

    def on_event(self, type_: str, fields: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def open_log(cfg: TrainingConfig, run_dir: Path, main_process: bool) -> TensorBoardLog | NullLog:
    if not main_process:
        return NullLog()
    try:
        return TensorBoardLog(log_folder(cfg, run_dir))
    except ImportError:
        print("tensorboard is not installed: no TensorBoard logs for this run (pip install tensorboard)",
              file=sys.stderr)
        return NullLog()
