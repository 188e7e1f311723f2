"""Class 5: a damaged run (garbage events, bad exit status) never breaks the run list, attach or the monitor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from loratui.core.run import rundir
from loratui.core.run.events import EventTail, RunSnapshot, read_snapshot

REPO = Path(__file__).resolve().parents[2]


def loratui(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "LORATUI_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "loratui", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def make_run(root: Path, name: str, events: bytes, now: float) -> Path:
    run = rundir.create_run_dir(name, root, now=now)
    (run / rundir.CONFIG).write_text("version: 1\n")
    (run / rundir.EVENTS).write_bytes(events)
    return run


GOOD = (json.dumps({"v": 1, "type": "start", "t": 1.0, "total_steps": 10, "epochs": 1}) + "\n"
        + json.dumps({"v": 1, "type": "step", "t": 2.0, "step": 3, "loss": 0.2, "avg_loss": 0.25}) + "\n")


def test_runs_lists_every_run_and_marks_the_damaged_one(tmp_path):
    root = tmp_path / "runs"
    good = make_run(root, "good", GOOD.encode(), now=0)
    rundir.write_exit_status(good, 0, "done", "ok")
    bad = make_run(root, "bad", GOOD.encode() + b'{"v": 1, "type": "step", "step": "three"}\n\xff\xfe{garb\n[1]\n',
                   now=100)
    bad_status = make_run(root, "badstatus", GOOD.encode(), now=200)
    (bad_status / rundir.EXIT_STATUS).write_text("[1, 2")
    out = loratui("runs", home=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines()}
    assert rows[good.name][:3] == ["done", "step", "3/10"]
    assert rows[bad.name][:3] == ["unreadable", "step", "3/10"]
    assert rows[bad_status.name][0] == "unreadable"
    assert f"{bad / rundir.EVENTS}: skipped 3 unreadable line(s)" in out.stderr
    assert "Traceback" not in out.stderr


def test_error_or_done_event_and_end_stop_the_eta():
    snap = RunSnapshot()
    snap.apply_all([{"type": "start", "t": 1, "total_steps": 5}, {"type": "step", "t": 2, "step": 1, "eta_s": 40}])
    assert snap.eta_s == 40 and not snap.finished
    snap.apply({"type": "error", "t": 3, "message": "disk full", "hint": "free space"})
    assert snap.eta_s is None and snap.finished
    alive = RunSnapshot()
    alive.apply({"type": "step", "step": 1, "eta_s": 40})
    alive.end()  # what a viewer calls when the run is dead
    assert alive.eta_s is None


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                       max_size=3), max_leaves=8)
event_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["start", "step", "epoch_end", "checkpoint", "sample", "warning", "error", "done",
                              "other"])},
    optional={k: json_values for k in ("t", "step", "loss", "avg_loss", "lrs", "eta_s", "path", "epoch",
                                       "total_steps", "epochs", "prompt", "size_bytes", "it_per_s")})


@settings(max_examples=100, deadline=None)
@given(st.lists(event_like | json_values, max_size=6), st.binary(max_size=40))
def test_any_event_log_folds_without_raising(tmp_path_factory, events, garbage):
    path = tmp_path_factory.mktemp("ev") / "events.jsonl"
    lines = [json.dumps(e, allow_nan=True).encode() for e in events]
    path.write_bytes(b"\n".join([*lines, garbage]) + b"\n")
    snap = read_snapshot(path)  # must not raise
    assert snap.unreadable_events <= len(lines) + garbage.count(b"\n") + 1
    assert snap.eta_s is None or isinstance(snap.eta_s, float)
    assert all(isinstance(row.avg_loss, (float, type(None))) for row in snap.checkpoints)


def test_tail_counts_skipped_lines(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"type": "step", "step": 1}\nnot json\n\xff\n')
    tail = EventTail(path)
    assert len(tail.read_new()) == 1 and tail.skipped == 2


def test_a_start_event_with_a_damaged_eta_is_skipped_not_kept(tmp_path):
    """The start event's first ETA is a number a viewer does arithmetic on: anything else marks the line
    unreadable, as for every other event."""
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps({"type": "start", "total_steps": 4, "eta_s": []}) + "\n"
                    + json.dumps({"type": "step", "step": 1, "eta_s": 30}) + "\n")
    snap = read_snapshot(path)
    assert snap.unreadable_events == 1 and snap.eta_s == 30.0
