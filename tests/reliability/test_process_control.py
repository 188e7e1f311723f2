"""Class 1: process control never hits a bystander.

`loratui stop` runs in a child process whose ``os.kill`` refuses pids <= 0 and logs every call, so that a
regression cannot SIGTERM every process of the user (the test runner included) while proving nothing was sent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from loratui.core.run import rundir

REPO = Path(__file__).resolve().parents[2]

GUARDED_STOP = textwrap.dedent("""
    import json, os, sys
    calls = []
    real_kill = os.kill
    def guarded_kill(pid, sig):
        calls.append([pid, int(sig)])
        if pid <= 0:
            raise SystemExit(f"refused kill({pid}, {sig})")
        return real_kill(pid, sig)
    os.kill = guarded_kill
    from loratui.cli import main
    code = main(["stop", *sys.argv[2:]])
    open(sys.argv[1], "w").write(json.dumps({"code": code, "signals": [c for c in calls if c[1] != 0]}))
""")


def guarded_stop(tmp_path: Path, *args: str) -> tuple[dict, str]:
    report = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "LORATUI_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", GUARDED_STOP, str(report), *args], capture_output=True, text=True,
                         env=env, timeout=120)
    return json.loads(report.read_text()), out.stderr


@pytest.fixture
def bystander():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc
    proc.kill()
    proc.wait()


def make_run(tmp_path: Path) -> Path:
    run = rundir.create_run_dir("forged", tmp_path / "home" / "runs", now=0)
    (run / rundir.CONFIG).write_text("version: 1\n")
    return run


@pytest.mark.parametrize("forged", ["-1", "0", "-4242", "nan", "99999999999", '{"pid": true}', ""])
def test_stop_with_a_forged_pid_signals_nothing_and_says_dead(tmp_path, forged):
    run = make_run(tmp_path)
    (run / rundir.PID).write_text(forged)
    result, stderr = guarded_stop(tmp_path, str(run))
    assert result == {"code": 2, "signals": []}
    assert "not running (state: dead)" in stderr or "state: starting" in stderr
    assert not (run / rundir.STOP).exists()


@pytest.mark.parametrize("style", ["plain", "record"])
def test_stop_never_signals_an_unrelated_process_that_reuses_the_pid(tmp_path, bystander, style):
    run = make_run(tmp_path)
    # The run's trainer died; its pid now belongs to an unrelated program (the bystander).
    record = str(bystander.pid) if style == "plain" else json.dumps(
        {"pid": bystander.pid, "start": "1", "cmdline": "python -m loratui.train " + str(run)})
    (run / rundir.PID).write_text(record)
    assert rundir.run_state(run) == "dead"
    result, stderr = guarded_stop(tmp_path, run.name)
    assert result == {"code": 2, "signals": []}
    assert "state: dead" in stderr
    assert bystander.poll() is None  # still alive
    assert not (run / rundir.STOP).exists()


def test_stop_on_a_folder_that_is_not_a_run_writes_nothing(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / rundir.PID).write_text(str(os.getpid()))
    result, stderr = guarded_stop(tmp_path, str(folder))
    assert result == {"code": 2, "signals": []}
    assert "no such running run" in stderr
    assert sorted(p.name for p in folder.iterdir()) == [rundir.PID]


def test_stop_signals_the_verified_trainer(tmp_path):
    run = make_run(tmp_path)
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", str(run)])
    try:
        rundir.write_pid(run, trainer.pid)  # what launch_detached records: pid, start time, command line
        assert rundir.run_state(run) == "running"
        result, _ = guarded_stop(tmp_path, run.name)
        assert result["code"] == 0 and result["signals"] == [[trainer.pid, 15]]
        assert trainer.wait(timeout=60) == -15
        assert (run / rundir.STOP).exists()
    finally:
        trainer.kill()
        trainer.wait()
