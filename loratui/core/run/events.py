"""The trainer's event log: append-only JSON lines, schema version 1 (see docs/events.md).

Every line is one object with ``v`` (schema version), ``type``, ``t`` (unix time) and the type's fields.
The writer buffers and flushes at least once a second, so logging never slows a training step; readers tail
the file by byte offset and only ever see whole lines.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
EVENT_TYPES = ("start", "step", "epoch_end", "checkpoint", "sample", "warning", "error", "done")
# Events a viewer must see at once; steps may wait for the next flush.
_URGENT = {"start", "checkpoint", "sample", "warning", "error", "done", "epoch_end"}


class EventWriter:
    """Append events to ``events.jsonl``; buffered, flushed every ``flush_every`` seconds or on urgent events."""

    def __init__(self, path: Path, flush_every: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the writer
        self._pending: list[str] = []
        self._flush_every = flush_every
        self._clock = clock
        self._last_flush = clock()

    def emit(self, type_: str, **fields: Any) -> None:
        if type_ not in EVENT_TYPES:
            raise ValueError(f"unknown event type {type_!r}")
        record = {"v": SCHEMA_VERSION, "type": type_, "t": round(self._clock(), 3), **fields}
        self._pending.append(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        if type_ in _URGENT or self._clock() - self._last_flush >= self._flush_every:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            # One write call per batch keeps lines whole for readers.
            self._fh.write("".join(self._pending))
            self._pending.clear()
        self._fh.flush()
        self._last_flush = self._clock()

    def close(self) -> None:
        if not self._fh.closed:
            self.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventTail:
    """Read new complete lines of an event log since the last call; tolerant of a missing or half-written file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.offset = 0
        self._partial = b""
        self.skipped = 0  # lines that were not a readable event (garbage, truncated by a crash or a full disk)

    def read_new(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        except OSError:  # a folder in its place, no permission: say "unreadable", never stop the viewer
            self.skipped = max(self.skipped, 1)
            return []
        self.offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # the last piece has no newline yet
        events = []
        for line in lines:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except (ValueError, RecursionError):  # bad JSON, bad UTF-8, absurd nesting
                event = None
            if isinstance(event, dict) and isinstance(event.get("type"), str):
                events.append(event)
            else:
                self.skipped += 1  # a corrupt line (disk full, crash) must not stop a viewer
        return events


@dataclass
class CheckpointRow:
    path: str
    epoch: int | None
    step: int
    avg_loss: float | None
    size_bytes: int


@dataclass
class RunSnapshot:
    """Everything a viewer shows, folded from the events seen so far."""

    total_steps: int = 0
    epochs: int = 0
    step: int = 0
    epoch: int = 0
    losses: list[float] = field(default_factory=list)
    avg_losses: list[float] = field(default_factory=list)
    lrs: dict[str, float] = field(default_factory=dict)
    it_per_s: float | None = None
    eta_s: float | None = None
    gpu_mem_gib: float | None = None
    device: str = ""
    checkpoints: list[CheckpointRow] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None
    done: dict[str, Any] | None = None
    started_at: float | None = None
    last_event_at: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
    unreadable_events: int = 0  # lines or events that could not be read and were skipped

    @property
    def progress(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0

    @property
    def finished(self) -> bool:
        return self.done is not None or self.error is not None

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one event in; an event with missing or wrongly typed fields is counted and skipped, never raised."""
        kind = event.get("type")
        if kind not in EVENT_TYPES:
            return  # a newer trainer's event type: not an error
        t = event.get("t")
        if isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t):
            self.last_event_at = float(t)
        try:
            getattr(self, f"_on_{kind}")(event)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            self.unreadable_events += 1

    def end(self) -> None:
        """The run is over (dead, finished, failed): no ETA counts down any more."""
        self.eta_s = None

    def apply_all(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            self.apply(event)

    def _on_start(self, e: dict[str, Any]) -> None:
        self.total_steps = int(e.get("total_steps", 0))
        self.epochs = int(e.get("epochs", 0))
        self.step = int(e.get("step", 0))
        self.device = str(e.get("device", ""))
        self.started_at = e.get("t")
        self.eta_s = _number(e.get("eta_s", self.eta_s))  # measured (bench) or estimated until steps are timed
        self.info = {k: v for k, v in e.items() if k not in ("v", "type", "t")}

    def _on_step(self, e: dict[str, Any]) -> None:
        self.step = int(e["step"])
        self.epoch = int(e.get("epoch", self.epoch))
        loss, avg = _number(e.get("loss")), _number(e.get("avg_loss"))
        if loss is not None or avg is not None:  # both lists grow together: viewers index them alike
            self.losses.append(loss if loss is not None else avg)
            self.avg_losses.append(avg if avg is not None else loss)
        self.lrs = {str(k): float(v) for k, v in dict(e.get("lrs", self.lrs)).items()}
        self.it_per_s = _number(e.get("it_per_s", self.it_per_s))
        self.eta_s = _number(e.get("eta_s", self.eta_s))
        self.gpu_mem_gib = _number(e.get("gpu_mem_gib", self.gpu_mem_gib))

    def _on_epoch_end(self, e: dict[str, Any]) -> None:
        self.epoch = int(e.get("epoch", self.epoch))

    def _on_checkpoint(self, e: dict[str, Any]) -> None:
        epoch = e.get("epoch")
        self.checkpoints.append(CheckpointRow(str(e["path"]), None if epoch is None else int(epoch),
                                              int(e.get("step", 0)), _number(e.get("avg_loss")),
                                              int(e.get("size_bytes", 0))))

    def _on_sample(self, e: dict[str, Any]) -> None:
        self.samples.append({**e, "path": str(e["path"]), "prompt": str(e.get("prompt", "")),
                             "epoch": e.get("epoch", "")})

    def _on_warning(self, e: dict[str, Any]) -> None:
        self.warnings.append(str(e.get("message", "")))

    def _on_error(self, e: dict[str, Any]) -> None:
        self.error = e
        self.end()

    def _on_done(self, e: dict[str, Any]) -> None:
        self.done = e
        self.end()


def _number(value: Any) -> float | None:
    """A finite float or None: a viewer does arithmetic on these."""
    if value is None:
        return None
    number = float(value)
    if isinstance(value, bool) or not math.isfinite(number):
        raise ValueError(f"not a number: {value!r}")
    return number


def read_snapshot(events_path: Path) -> RunSnapshot:
    """Fold a whole event log; unreadable lines are skipped and counted in ``unreadable_events``."""
    snapshot = RunSnapshot()
    tail = EventTail(events_path)
    try:
        events = tail.read_new()
    except OSError:
        events, tail.skipped = [], 1
    snapshot.apply_all(events)
    snapshot.unreadable_events += tail.skipped
    return snapshot
