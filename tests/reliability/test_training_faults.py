"""Class 3 (short real runs on the tiny model): a failed late save loses no work; a full disk says so."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from loratui.core.presets import save_preset
from loratui.core.run import rundir
from loratui.core.run.events import EventTail

from ..train.conftest import Recorder, make_config
from .test_caption_safety import unwritable
from .test_training_preflight import small_dataset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from loratui.train.tiny_models import build_tiny_sd1

    return build_tiny_sd1(tmp_path_factory.mktemp("tiny_sd1"))


@pytest.mark.slow
def test_late_save_failure_keeps_the_state_and_resume_finishes(tmp_path, tiny_model):
    from loratui.train.loop import TrainingFailed, run

    data = small_dataset(tmp_path / "data", folder="1_toy", count=2)
    out = tmp_path / "loras"
    cfg = make_config(tiny_model, data, schedule__max_train_steps=None, schedule__max_train_epochs=2,
                      schedule__train_batch_size=2, saving__output_dir=str(out), saving__save_every_n_epochs=0)
    run_dir = tmp_path / "run"
    (run_dir / "state").mkdir(parents=True)
    events = Recorder()
    with contextlib.ExitStack() as later:

        def emit(type_: str, **fields) -> None:
            events(type_, **fields)
            if type_ == "epoch_end" and fields["epoch"] == 2:  # the output disk goes read-only near the end
                later.enter_context(unwritable(out))

        with pytest.raises(TrainingFailed) as info:
            run(cfg, run_dir, emit)
    assert len(events.of("step")) == 2  # all the training happened before the save failed
    assert f"could not save {out / 't.safetensors'}" in str(info.value)
    assert f"the training state is saved in {run_dir / 'state'}" in str(info.value)
    assert f"loratui train --resume {run_dir.name}" in info.value.hint
    resumed = Recorder()
    final = run(cfg, run_dir, resumed, resume_from=run_dir / "state")
    assert final == out / "t.safetensors" and final.exists()
    assert resumed.of("step") == []  # nothing trained twice


FILL_WHEN_TRAINING = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    runs = Path(sys.argv[1])
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if any('"type": "step"' in p.read_text() for p in runs.glob("*/events.jsonl")):
            break
        time.sleep(0.05)
    with open(runs / "filler", "wb") as fh:  # another program takes every free byte
        try:
            while True:
                fh.write(b"\\0" * 65536)
                fh.flush()
        except OSError:
            pass
""")


@pytest.mark.slow
def test_disk_full_mid_run_ends_with_an_error_event_and_exit_status(tmp_path, tiny_model):
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs user and mount namespaces to give the run a small disk of its own")
    data = small_dataset(tmp_path / "data", folder="1_toy", count=2)
    cfg = make_config(tiny_model, data, schedule__max_train_steps=None, schedule__max_train_epochs=4,
                      schedule__train_batch_size=1)
    config = save_preset(cfg, tmp_path / "run.yaml")
    home, copy = tmp_path / "home", tmp_path / "copy"
    home.mkdir()
    (tmp_path / "fill.py").write_text(FILL_WHEN_TRAINING)
    # In a private mount namespace: a small disk of its own for the runs (big enough for the pre-flight's
    # estimate); fill it once training is under way; train in the foreground; copy the run directory out
    # before the namespace (and its disk) goes away.
    script = (f"mount -t tmpfs -o size=200m tmpfs {home} && mkdir {home}/runs && "
              f"{{ {sys.executable} {tmp_path / 'fill.py'} {home}/runs & }} && FILL=$! && "
              f"{sys.executable} -m loratui train {config}; echo $? > {tmp_path / 'code'}; kill $FILL; "
              f"cp -r {home}/runs {copy}")
    env = {**os.environ, "PYTHONPATH": str(REPO), "LORATUI_HOME": str(home)}
    out = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=env, timeout=900, capture_output=True,
                         text=True)
    assert (tmp_path / "code").read_text().strip() == "1", out.stdout[-2000:] + out.stderr[-2000:]
    run_dir = next(p for p in copy.iterdir() if p.is_dir())
    status = json.loads((run_dir / rundir.EXIT_STATUS).read_text())
    assert status["state"] == "failed" and status["code"] == 1
    assert "No space left on device" in status["message"] or "disk full" in status["message"]
    tail = EventTail(run_dir / rundir.EVENTS)
    last = tail.read_new()[-1]
    assert last["type"] == "error" and last["message"] == status["message"]
    assert not (run_dir / ".space-reserve").exists()
