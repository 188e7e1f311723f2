"""The trainer as a user runs it: the CLI, a detached process, signals, two processes, the demo."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loratui.core.presets import save_preset
from loratui.core.run import rundir
from loratui.core.run.events import read_snapshot

from .conftest import make_config

ENV = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "DIFFUSERS_VERBOSITY": "error"}
# Limits only catch a hang: a loaded 2-core box can take many minutes for what takes seconds when idle, so
# every wait is on an event (a step, an exit status, the process ending) with a generous deadline.
WAIT_S = 15 * 60
RUN_S = 30 * 60  # a whole command that trains (the demo, two processes)


def loratui(*args: str, home: Path, cwd: Path | None = None, timeout: int = RUN_S) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loratui", *args], capture_output=True, text=True, cwd=cwd,
                          env={**ENV, "LORATUI_HOME": str(home)}, timeout=timeout)


def wait_for(condition, timeout: float = WAIT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_detached_run_survives_sighup_stops_gracefully_and_resumes(tmp_path, tiny_sd1_dir, demo_dataset):
    cfg = make_config(tiny_sd1_dir, demo_dataset, schedule__max_train_steps=None, schedule__max_train_epochs=30)
    config = save_preset(cfg, tmp_path / "run.yaml")
    out = loratui("train", str(config), "--detach", home=tmp_path)
    assert out.returncode == 0, out.stderr
    run_dir = Path(out.stdout.strip().splitlines()[-1])
    events = run_dir / rundir.EVENTS
    wait_for(lambda: read_snapshot(events).step >= 2, what="two training steps")
    # trainer.log (the monitor's panel) has the trainer's own lines while it trains, not only at the end.
    log = run_dir / rundir.LOG
    wait_for(lambda: "step 1/" in log.read_text(), what="a step line in trainer.log")
    assert "training 6 images (24 with repeats) for 30 epochs" in log.read_text()
    pid = rundir.read_pid(run_dir)
    hung_up_at = read_snapshot(events).step
    os.kill(pid, signal.SIGHUP)  # what a dropped SSH link sends
    wait_for(lambda: read_snapshot(events).step > hung_up_at, what="a step after SIGHUP")
    assert rundir.run_state(run_dir) == "running"
    listed = loratui("runs", home=tmp_path)
    assert run_dir.name in listed.stdout and "running" in listed.stdout

    stop = loratui("stop", run_dir.name, home=tmp_path)
    assert stop.returncode == 0, stop.stderr
    wait_for(lambda: rundir.read_exit_status(run_dir) is not None, what="the trainer to exit")
    status = rundir.read_exit_status(run_dir)
    assert (status["code"], status["state"]) == (0, "stopped")
    snapshot = read_snapshot(events)
    stopped_at = snapshot.step
    assert snapshot.checkpoints[-1].path.endswith(f"t-step{stopped_at:08d}.safetensors")
    assert (run_dir / "state" / "training_state.pt").exists()

    resumed = loratui("train", "--resume", run_dir.name, "--detach", home=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    wait_for(lambda: read_snapshot(events).step > stopped_at, what="the resumed run to step")
    loratui("stop", run_dir.name, home=tmp_path)
    wait_for(lambda: rundir.read_exit_status(run_dir) is not None, what="the resumed trainer to exit")
    assert rundir.run_state(run_dir) == "stopped"


def test_sigkill_while_saving_leaves_previous_checkpoint(tmp_path):
    target = tmp_path / "lora.safetensors"
    script = (
        "import sys\n"
        "from loratui.core.atomic import atomic_write_bytes\n"
        f"atomic_write_bytes({str(target)!r}, b'previous checkpoint')\n"
        "print('saved', flush=True)\n"
        f"atomic_write_bytes({str(target)!r}, b'x' * (1 << 31))\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "saved"
    wait_for(lambda: any(p.name.endswith(".tmp") and p.stat().st_size > (1 << 20) for p in tmp_path.iterdir()),
             what="the second save to be under way")
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert target.read_bytes() == b"previous checkpoint"


def test_bad_config_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nnetwork:\n  network_dimm: 8\n")
    out = loratui("train", str(bad), home=tmp_path)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "did you mean 'network.network_dim'" in out.stderr


def test_missing_model_fails_with_hint_in_the_run_directory(tmp_path, demo_dataset):
    cfg = make_config(tmp_path / "no-such-model", demo_dataset)
    config = save_preset(cfg, tmp_path / "run.yaml")
    out = loratui("train", str(config), home=tmp_path)
    assert out.returncode == 1
    run_dir = rundir.list_runs(tmp_path / "runs")[0].path
    snapshot = read_snapshot(run_dir / rundir.EVENTS)
    assert "no-such-model" in snapshot.error["message"]
    assert rundir.run_state(run_dir) == "failed"


@pytest.mark.slow
def test_two_process_data_parallel_run(tmp_path, tiny_sd1_dir, demo_dataset):
    from loratui.core.run.launch import prepare_run

    cfg = make_config(tiny_sd1_dir, demo_dataset, schedule__max_train_steps=None, schedule__max_train_epochs=1)
    run_dir = prepare_run(cfg, tmp_path / "runs")
    out = subprocess.run(
        # torchrun is what `accelerate launch --multi_gpu` runs; on CPU, Accelerator picks gloo from its env.
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
         "-m", "loratui.train", str(run_dir)],
        capture_output=True, text=True, env={**ENV, "ACCELERATE_USE_CPU": "true"}, timeout=RUN_S)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    snapshot = read_snapshot(run_dir / rundir.EVENTS)
    assert snapshot.info["processes"] == 2
    # 6 images × 4 repeats = 24 per epoch, batch 2 → 12 batches, split over 2 processes → 6 steps
    assert snapshot.total_steps == 6 and snapshot.step == 6
    assert snapshot.done["state"] == "done"
    assert Path(snapshot.checkpoints[-1].path).exists()


@pytest.mark.slow
def test_demo_headless_trains_and_loads_in_diffusers(tmp_path):
    out = loratui("demo", "--headless", "--dir", str(tmp_path / "demo"), home=tmp_path, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(line for line in out.stdout.splitlines() if line.startswith("your LoRA: "))
    lora = Path(line.removeprefix("your LoRA: "))
    assert lora.exists() and lora.name == "demo-lora.safetensors"

    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "demo" / "model")
    ids = pipe.tokenizer(["sks toy"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    x, t = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([500])
    with torch.no_grad():
        before = pipe.unet(x, t, pipe.text_encoder(ids)[0]).sample
    pipe.load_lora_weights(str(lora))
    with torch.no_grad():
        after = pipe.unet(x, t, pipe.text_encoder(ids)[0]).sample
    assert (after - before).abs().max() > 1e-4, "the trained LoRA must change the model"
