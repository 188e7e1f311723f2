"""What the detached trainer writes to ``trainer.log``: one readable line per noteworthy event.

The monitor's ``trainer.log`` panel tails that file. The trainer's events go to ``events.jsonl``; without
these lines the log held only library warnings and tracebacks, and stayed empty for a healthy run. Lines are
whole (no carriage-return progress, which a log tail cannot show) and step lines are spaced out in time, so
a fast run does not flood the log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from loratui.core.planner import format_duration

STEP_EVERY_S = 10.0  # at most one step line per this many seconds, besides the first and the last


_PART_NAMES = {"vae": "VAE", "text_encoders": "text encoders", "unet": "UNet"}


def start_line(e: dict) -> str:
    """The first line of a run: what trains, for how long, where; and, on a GPU, what waits on the CPU."""
    line = (f"training {e.get('images')} images ({e.get('images_with_repeats')} with repeats) for "
            f"{e.get('epochs')} epochs: {e.get('total_steps')} steps on {e.get('device')}")
    parked = [_PART_NAMES.get(part, part) for part in e.get("offloaded") or []]
    if parked and not str(e.get("device", "")).startswith("cpu"):
        line += f" ({' and '.join(parked)} on the CPU once cached, as sd-scripts does)"
    return line


class TrainerLog:
    """An event consumer (``console`` of the trainer) that writes log lines to ``stream``."""

    def __init__(self, stream: TextIO, clock: Callable[[], float] = time.monotonic,
                 every: float = STEP_EVERY_S) -> None:
        self.stream, self.clock, self.every = stream, clock, every
        self.total = 0
        self.last_step_at: float | None = None

    def __call__(self, kind: str, e: dict) -> None:
        line = self.line(kind, e)
        if line is not None:
            self.stream.write(line + "\n")
            self.stream.flush()  # the monitor reads the file while the run goes on

    def line(self, kind: str, e: dict) -> str | None:
        """The log line for one event, or None when it is not worth a line."""
        if kind == "start":
            self.total = int(e.get("total_steps") or 0)
            return start_line(e)
        if kind == "step":
            return self._step(e)
        if kind == "epoch_end":
            return f"epoch {e.get('epoch')} done at step {e.get('step')}, average loss {e.get('avg_loss', 0):.4f}"
        if kind == "checkpoint":
            return f"saved {e.get('path')} (epoch {e.get('epoch')}, step {e.get('step')})"
        if kind == "sample":
            return f"sample {e.get('path')}"
        if kind == "warning":
            return f"warning: {e.get('message')}"
        if kind == "error":
            return f"error: {e.get('message')} (hint: {e.get('hint')})"
        if kind == "done":
            return f"{e.get('state')}: {e.get('final_path') or 'no LoRA file'}"
        return None

    def _step(self, e: dict) -> str | None:
        now, step = self.clock(), int(e.get("step") or 0)
        due = self.last_step_at is None or now - self.last_step_at >= self.every or step >= self.total
        if not due:
            return None
        self.last_step_at = now
        rate = e.get("it_per_s")
        eta = format_duration(e["eta_s"]) if e.get("eta_s") is not None else "?"
        return (f"step {step}/{self.total} epoch {e.get('epoch')}: loss {e.get('loss', 0):.4f} "
                f"(average {e.get('avg_loss', 0):.4f}), {f'{rate:.2f} it/s' if rate else '? it/s'}, {eta} left")
