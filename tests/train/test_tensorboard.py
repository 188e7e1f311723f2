"""TensorBoard event files from a real tiny run, read back with TensorBoard's own reader.

Tag and folder names follow sd-scripts train_network.py ``generate_step_logs`` and train_util.py
``prepare_accelerator`` (``logging_dir/<log_prefix><timestamp>``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from loratui.train.loop import run

from .conftest import Recorder, make_config


def _read(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = [p for p in folder.iterdir() if p.is_dir()]
    assert len(runs) == 1, f"one timestamped log folder expected in {folder}: {runs}"
    assert list(runs[0].glob("events.out.tfevents.*")), "no event file written"
    acc = EventAccumulator(str(runs[0]), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def test_loss_lrs_and_samples_are_logged_in_the_run_logs_folder(tmp_path, tiny_sd1_dir, demo_dataset):
    cfg = make_config(tiny_sd1_dir, demo_dataset, sampling__sample_every_n_epochs=1,
                      sampling__sample_prompts=["sks toy --w 64 --h 64 --s 2 --d 3"])
    rec = Recorder()
    run(cfg, tmp_path, rec)
    acc = _read(tmp_path / "logs")
    tags = acc.Tags()
    losses = [(e.step, e.value) for e in acc.Scalars("loss/current")]
    assert losses == [(s["step"], pytest.approx(s["loss"], rel=1e-5)) for s in rec.of("step")]
    assert [e.step for e in acc.Scalars("loss/average")] == [1, 2, 3]
    lrs = [e.value for e in acc.Scalars("lr/unet")]
    assert lrs == [pytest.approx(s["lrs"]["unet"], rel=1e-5) for s in rec.of("step")]
    if "text_encoder" in rec.of("step")[0]["lrs"]:
        assert "lr/textencoder" in tags["scalars"]
    epoch = acc.Scalars("loss/epoch_average")
    assert [e.step for e in epoch] == [1] and epoch[0].value == pytest.approx(rec.of("epoch_end")[0]["avg_loss"])
    image = acc.Images("samples/prompt_00")[0]
    assert image.step == 3 and (image.width, image.height) == (64, 64)


def test_logging_dir_setting_is_honoured(tmp_path, tiny_sd1_dir, demo_dataset):
    cfg = make_config(tiny_sd1_dir, demo_dataset, saving__logging_dir=str(tmp_path / "tb"),
                      schedule__max_train_steps=1)
    run(cfg, tmp_path / "run", Recorder())
    acc = _read(tmp_path / "tb")
    assert [e.step for e in acc.Scalars("loss/current")] == [1]
    assert not (tmp_path / "run" / "logs").exists()


def test_training_without_the_tensorboard_package_logs_nothing_and_goes_on(tmp_path, monkeypatch, capsys):
    import sys

    from loratui.core.config import TrainingConfig
    from loratui.train.tb_log import NullLog, open_log

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    log = open_log(TrainingConfig(), tmp_path, main_process=True)
    assert isinstance(log, NullLog)
    log.on_event("step", {"step": 1, "loss": 0.1, "avg_loss": 0.1, "lrs": {}})
    assert not (tmp_path / "logs").exists()
    assert "pip install tensorboard" in capsys.readouterr().err
