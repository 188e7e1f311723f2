import json
import os
import subprocess
import sys

from loratui.core.run import rundir
from loratui.core.run.events import EventTail, EventWriter, RunSnapshot, read_snapshot
from loratui.core.sample_prompts import parse_sample_prompt


def test_writer_buffers_steps_and_flushes_urgent_events(tmp_path):
    now = [1000.0]
    writer = EventWriter(tmp_path / "events.jsonl", flush_every=1.0, clock=lambda: now[0])
    tail = EventTail(tmp_path / "events.jsonl")
    writer.emit("start", total_steps=10, epochs=1)
    assert [e["type"] for e in tail.read_new()] == ["start"]
    writer.emit("step", step=1, loss=0.5)
    assert tail.read_new() == []  # buffered: no write per step
    now[0] += 1.5
    writer.emit("step", step=2, loss=0.4)
    assert [e["step"] for e in tail.read_new()] == [1, 2]
    writer.close()


def test_tail_ignores_half_written_and_corrupt_lines(tmp_path):
    path = tmp_path / "events.jsonl"
    tail = EventTail(path)
    assert tail.read_new() == []  # no file yet
    with open(path, "w") as fh:
        fh.write(json.dumps({"v": 1, "type": "step", "step": 1}) + "\n{garbage\n" + '{"v": 1, "type": "st')
    assert [e["step"] for e in tail.read_new()] == [1]
    with open(path, "a") as fh:
        fh.write('ep", "step": 2}\n')
    assert [e["step"] for e in tail.read_new()] == [2]


def test_snapshot_folds_events(tmp_path):
    snap = RunSnapshot()
    snap.apply_all([
        {"type": "start", "total_steps": 4, "epochs": 2, "device": "cpu"},
        {"type": "step", "step": 1, "epoch": 1, "loss": 0.3, "avg_loss": 0.3, "lrs": {"unet": 1e-4}, "it_per_s": 2.0},
        {"type": "checkpoint", "path": "a-000001.safetensors", "epoch": 1, "step": 2, "avg_loss": 0.25,
         "size_bytes": 10},
        {"type": "error", "message": "overcooked", "hint": "lower the learning rate"},
    ])
    assert (snap.total_steps, snap.step, snap.losses, snap.progress) == (4, 1, [0.3], 0.25)
    assert snap.checkpoints[0].path == "a-000001.safetensors"
    assert snap.error["hint"] == "lower the learning rate"


def test_run_states_and_listing(tmp_path):
    root = tmp_path / "runs"
    run = rundir.create_run_dir("mine", root, now=0)
    (run / rundir.CONFIG).write_text("version: 1\n")
    assert rundir.run_state(run) == "starting"
    rundir.write_pid(run, os.getpid())
    assert rundir.run_state(run) == "running"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    rundir.write_pid(run, dead.pid)
    assert rundir.run_state(run) == "dead"
    rundir.write_exit_status(run, 0, "done", "ok")
    assert rundir.run_state(run) == "done"
    assert [r.name for r in rundir.list_runs(root)] == [run.name]
    assert rundir.find_run(None, root) == run
    assert rundir.find_run(run.name[:8], root) == run
    assert read_snapshot(run / rundir.EVENTS).step == 0


def test_sample_prompt_syntax():
    p = parse_sample_prompt("a photo of sks, smiling --n lowres, blurry --w 640 --h 768 --d 42 --l 6.5 --s 28")
    assert (p.prompt, p.negative, p.width, p.height, p.seed, p.cfg_scale, p.steps) == (
        "a photo of sks, smiling", "lowres, blurry", 640, 768, 42, 6.5, 28)
    assert parse_sample_prompt("sks", default_size=1024).width == 1024
    import pytest

    with pytest.raises(ValueError, match="--x"):
        parse_sample_prompt("sks --x 3")
    with pytest.raises(ValueError, match="not a int"):
        parse_sample_prompt("sks --w wide")
