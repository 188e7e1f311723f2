"""`loratui compare` on a tiny trained run: grid cells against the base pipeline, weight 0, the favourite copy,
and the background process.

Checkpoint names and prompt syntax follow sd-scripts (train_util ``get_epoch_ckpt_name`` and
``sample_image_inference``'s ``--n --w --h --d --l --s`` options).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loratui.cli import main
from loratui.core import compare_grid as G

from .conftest import make_config

PROMPTS = ["sks toy --w 64 --h 64 --s 3 --d 7", "a red circle --n blurry --w 64 --h 64 --s 3"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_sd1_dir) -> Path:
    """Two epochs of one step each, a checkpoint per epoch, with a learning rate high enough to show."""
    from loratui.core.demo import make_demo_dataset
    from loratui.core.run.launch import prepare_run
    from loratui.train.process import run_dir_training

    root = tmp_path_factory.mktemp("compare")
    data = make_demo_dataset(root / "data", count=2)
    (data / "4_sks toy").rename(data / "1_sks toy")
    cfg = make_config(tiny_sd1_dir, data, schedule__max_train_epochs=2, schedule__max_train_steps=None,
                      optimizer__learning_rate=0.05, saving__save_every_n_epochs=1, sampling__sample_prompts=PROMPTS)
    run_dir = prepare_run(cfg, root / "runs")
    assert run_dir_training(run_dir) == 0, (run_dir / "events.jsonl").read_text()[-2000:]
    assert sorted(p.name for p in (run_dir / "output").glob("*.safetensors")) == ["t-000001.safetensors",
                                                                                 "t.safetensors"]
    return run_dir


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(np.int16)


def _base_images(model_dir: Path) -> list[np.ndarray]:
    """The plain diffusers pipeline, no LoRA: what the reference column must show."""
    import torch
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(model_dir), local_files_only=True, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)  # the run's sampler
    pipe.set_progress_bar_config(disable=True)
    out = []
    for prompt, negative, seed in (("sks toy", "", 7), ("a red circle", "blurry", 6)):
        image = pipe(prompt, negative_prompt=negative, width=64, height=64, num_inference_steps=3,
                     guidance_scale=7.0, generator=torch.Generator().manual_seed(seed)).images[0]
        out.append(np.asarray(image).astype(np.int16))
    return out


@pytest.mark.slow
def test_grid_reference_column_is_the_base_model_and_weight_zero_matches_it(trained_run, tiny_sd1_dir, capsys):
    assert main(["compare", str(trained_run), "--weights", "0,1", "--seed", "5"]) == 0
    folder = G.latest_compare(trained_run)
    manifest = G.Manifest.load(folder)
    assert manifest.finished and manifest.done == manifest.total == 2 * (1 + 2 * 2)
    assert [r["label"] for r in manifest.rows] == ["epoch 1", "final"]
    assert [c["label"] for c in manifest.columns] == [G.NO_LORA, "0", "1"]
    assert str(folder / "grid_00.png") in capsys.readouterr().out
    base = _base_images(tiny_sd1_dir)
    for p, entry in enumerate(manifest.prompts):
        cells = [[_pixels(folder / f) for f in row] for row in entry["cells"]]
        for row in cells:
            assert np.array_equal(row[0], base[p]), "the no-LoRA column must be the base pipeline's output"
            assert np.array_equal(row[1], base[p]), "weight 0 must give the base model's output"
            assert np.abs(row[2] - base[p]).max() > 0, "weight 1 must show the LoRA"
        assert np.abs(cells[0][2] - cells[1][2]).max() > 0, "epoch 1 and the final LoRA differ"
        # the grid picture holds each single image at its labelled place
        layout = G.layout_for(["epoch 1", "final"], [G.NO_LORA, "0", "1"], 64, 64)
        grid = Image.open(folder / entry["grid"]).convert("RGB")
        assert grid.size == layout.size
        for r in range(2):
            for c in range(3):
                crop = np.asarray(grid.crop(layout.cell_box(r, c))).astype(np.int16)
                assert np.array_equal(crop, cells[r][c])


def test_favourite_copies_the_checkpoint_and_records_the_weight(trained_run, capsys):
    from safetensors.torch import load_file

    from loratui.train.export import read_metadata

    output = trained_run / "output"
    assert main(["compare", str(trained_run), "--favourite", "1", "--weight", "0.75"]) == 0
    best = output / "t-best.safetensors"
    source = output / "t-000001.safetensors"
    meta, source_meta = read_metadata(best), read_metadata(source)
    assert meta[G.BEST_WEIGHT_KEY] == "0.75" and meta[G.BEST_SOURCE_KEY] == "t-000001.safetensors"
    assert meta["ss_network_dim"] == source_meta["ss_network_dim"]
    assert meta["sshs_model_hash"] == source_meta["sshs_model_hash"], "same tensors, same model hash"
    a, b = load_file(str(best)), load_file(str(source))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    before = best.read_bytes()
    assert main(["compare", str(trained_run), "--favourite", "final", "--weight", "1"]) == 0
    assert best.read_bytes() == before, "an existing favourite is never overwritten"
    assert read_metadata(output / "t-best_v2.safetensors")[G.BEST_SOURCE_KEY] == "t.safetensors"
    assert "t-best" not in " ".join(c.label for c in G.find_checkpoints(output, "t"))


@pytest.mark.slow
def test_runs_in_the_background_like_training(trained_run, capsys):
    from loratui.core.run import rundir

    assert main(["compare", str(trained_run), "--epochs", "final", "--weights", "1", "--detach"]) == 0
    folder = Path(capsys.readouterr().out.strip())
    assert rundir.read_pid(folder) is not None
    deadline = time.monotonic() + 600
    while rundir.read_exit_status(folder) is None and time.monotonic() < deadline:
        time.sleep(0.5)
    status = rundir.read_exit_status(folder)
    assert status is not None and status["state"] == "done", (folder / "compare.log").read_text()[-2000:]
    manifest = json.loads((folder / G.MANIFEST).read_text())
    assert manifest["finished"] and [r["label"] for r in manifest["rows"]] == ["final"]
    assert (folder / "grid_00.png").exists() and (folder / "grid_01.png").exists()
    shutil.rmtree(folder)


@pytest.mark.parametrize(("args", "message"), [
    (["--epochs", "9"], "no checkpoint for '9' (this run has: epoch 1, final)"),
    (["--weights", "a,b"], "give comma-separated numbers"),
    (["--prompts", "missing.txt"], "cannot read the prompt file"),
])
def test_bad_input_is_one_line(trained_run, capsys, args, message):
    assert main(["compare", str(trained_run), *args]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and message in err


def test_unknown_run_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LORATUI_HOME", str(tmp_path))
    assert main(["compare", "nope"]) == 2
    assert "nope: no such run" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["loha", "lokr"])
def test_loha_and_lokr_runs_compare_through_the_trainers_network(tmp_path, tiny_sd1_dir, monkeypatch, kind):
    """diffusers cannot load LyCORIS files: the grid applies them through loratui's own network, where weight 0
    is exactly the base model and weight 1 is the trained LoRA."""
    from loratui.core.demo import make_demo_dataset
    from loratui.core.run.launch import prepare_run
    from loratui.train.process import run_dir_training

    monkeypatch.setenv("LORATUI_HOME", str(tmp_path / "home"))
    data = make_demo_dataset(tmp_path / "data", count=2)
    cfg = make_config(tiny_sd1_dir, data, network__network_type=kind, network__network_dim=4,
                      optimizer__learning_rate=0.05, schedule__max_train_steps=2, sampling__sample_prompts=PROMPTS[:1])
    run_dir = prepare_run(cfg, tmp_path / "runs")
    assert run_dir_training(run_dir) == 0, (run_dir / "events.jsonl").read_text()[-2000:]
    assert main(["compare", str(run_dir), "--weights", "0,1"]) == 0
    folder = G.latest_compare(run_dir)
    (entry,) = G.Manifest.load(folder).prompts
    (row,) = [[_pixels(folder / f) for f in cells] for cells in entry["cells"]]
    base = _base_images(tiny_sd1_dir)[0]
    assert np.array_equal(row[0], base) and np.array_equal(row[1], base)
    assert np.abs(row[2] - base).max() > 0
