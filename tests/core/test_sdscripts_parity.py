"""The six datasets of issue 14: `loratui plan --dataset`, `loratui check`, the wizard's Steps step and the
trainer's `start` event all give sd-scripts' batches per epoch.

Every expected number is derived by hand below from sd-scripts (HEAD 48d368f) ``library/train_util.py`` and
``library/config_util.py``; the function each case exercises is named in its comment. Resolution 512, bucket
steps 64, min 256, max 1024 (sd-scripts' defaults), one epoch.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console

from loratui.cli import main
from loratui.core.config import TrainingConfig
from loratui.core.dataset import scan_dataset
from loratui.core.planner import bucket_spec_from_config

Size = tuple[int, int]


@dataclass
class Case:
    batch: int
    expected: int  # batches per epoch, derived by hand in the comment above the case
    train: dict[str, list[Size]]
    reg: dict[str, list[Size]] = field(default_factory=dict)
    exif_rotated: dict[str, list[Size]] = field(default_factory=dict)  # JPEGs stored at Size, EXIF orientation 6
    no_upscale: bool = False
    num_reg_images: int = 0  # sd-scripts' num_reg_images: reg images × folder repeats, before balancing


CASES = {
    # 1. BucketManager.select_bucket: ar_errors = |bucket aspect − 620/900|; 384×640 (0.6) and 448×576 (0.778)
    #    are both 0.0889 away and np.argmin keeps the first in make_bucket_resolutions' sorted list: 384×640.
    #    Buckets: 384×640 ← 3 ties, 448×576 ← the exact 448×576 image (its own size is a bucket).
    #    Batch 2: ceil(3/2) + ceil(1/2) = 2 + 1 = 3.  (Old loratui: all four in 448×576 → 2.)
    "bucket-tie": Case(batch=2, expected=3, train={"1_tie": [(620, 900)] * 3 + [(448, 576)]}),
    # 2. select_bucket with no_upscale: above 512² the image is resized to area 512² keeping aspect, then
    #    round_to_steps on width and on height, the closer aspect wins, bucket = size rounded down to 64:
    #    1400×1000 → (605.8, 432.7): width 576 → aspect 1.5, height 384 → width 538 → aspect 1.333 (closer to
    #    1.4) → 538×384 → bucket 512×384. 1000×333 → (887.3, 295.5): 832/256 = 3.25 vs 768/256 = 3.0 (closer to
    #    3.003) → 769×256 → 768×256. 1024×768 → (591.2, 443.4): 576/384 = 1.5 vs 512/384 = 1.333 → 512×384.
    #    512×384 and 768×256 are under the area: kept, bucket = their own size.
    #    Buckets 512×384: 3, 768×256: 2; batch 4: 1 + 1 = 2.  (Old loratui: 576×384, 832×256, … → 4.)
    "no-upscale": Case(batch=4, expected=2, no_upscale=True,
                       train={"1_big": [(1400, 1000), (1000, 333), (1024, 768), (512, 384), (768, 256)]}),
    # 3. DreamBoothDataset.__init__: num_train_images = 5 × 10 = 50; reg 4 × 1 = 4 < 50, so the first loop
    #    registers all 4 (n = 4), later loops add one repeat each round-robin until n = 50 → 50 reg entries.
    #    BaseDataset.make_buckets puts train and reg in the same 512×512 bucket: 100 entries, batch 4 → 25.
    #    (Old plan: ceil(50/4) × 2 = 26.)
    "reg-merge": Case(batch=4, expected=25, num_reg_images=4,
                      train={"10_a": [(512, 512)] * 5}, reg={"1_reg": [(512, 512)] * 4}),
    # 4. DreamBoothDataset.__init__: num_train_images = 10 × 1 = 10; the first reg image is registered with its
    #    folder's 50 repeats (n = 50 ≥ 10, loop ends): 50 reg entries, the other two reg images unused.
    #    num_reg_images = 3 × 50 = 150. One 512×512 bucket of 60; batch 3 → 20 (batch 1 would be 60).
    "reg-above-train": Case(batch=3, expected=20, num_reg_images=150,
                            train={"1_a": [(512, 512)] * 10}, reg={"50_reg": [(512, 512)] * 3}),
    # 5. BaseDataset.get_image_size reads the stored size with imagesize (no EXIF): three JPEGs stored 768×512
    #    with orientation 6 bucket as landscape 640×384 (aspect 1.667 is the closest to 1.5), the portrait PNG
    #    as 384×640. Batch 2: ceil(3/2) + ceil(1/2) = 3.  (Rotating first would give 384×640: 4 → 2.)
    "exif": Case(batch=2, expected=3, train={"1_x": [(512, 768)]}, exif_rotated={"1_x": [(768, 512)] * 3}),
    # 6. config_util.generate_dreambooth_subsets_config_by_subdirs: "5_".split("_") = ["5", ""] → 5 repeats,
    #    class tokens "". 3 images × 5 = 15 in 512×512; batch 2 → 8.
    "folder-5_": Case(batch=2, expected=8, train={"5_": [(512, 512)] * 3}),
}


def _write(root: Path, folders: dict[str, list[Size]], exif: dict[str, list[Size]] | None = None) -> None:
    colour = 0
    for name, sizes in folders.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, size in enumerate(sizes):
            colour += 7
            Image.new("RGB", size, (colour % 255, 90, 160)).save(root / name / f"img{i:02d}.png")
    for name, sizes in (exif or {}).items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, size in enumerate(sizes):
            tag = Image.Exif()
            tag[0x0112] = 6  # rotate 90° when shown
            Image.new("RGB", size, (40, i * 40, 90)).save(root / name / f"rot{i:02d}.jpg", exif=tag)


def _dataset(tmp_path: Path, case: Case) -> tuple[Path, Path | None]:
    root, reg = tmp_path / "data", tmp_path / "reg"
    _write(root, case.train, case.exif_rotated)
    if case.reg:
        _write(reg, case.reg)
    return root, (reg if case.reg else None)


def _config(root: Path, reg: Path | None, case: Case, model: Path | str = "unused") -> TrainingConfig:
    return TrainingConfig.model_validate({
        "model": {"pretrained_model_name_or_path": str(model)},
        "dataset": {"train_data_dir": str(root), "reg_data_dir": str(reg) if reg else None, "resolution": 512,
                    "bucket_no_upscale": case.no_upscale, "cache_latents": False},
        "network": {"network_dim": 2, "network_alpha": 1.0},
        "schedule": {"max_train_epochs": 1, "train_batch_size": case.batch},
        "precision": {"mixed_precision": "no", "save_precision": "float"},
        "saving": {"output_name": "parity"},
    })


def _plan_cli(capsys, root: Path, reg: Path | None, case: Case) -> int:
    argv = ["plan", "--dataset", str(root), "--epochs", "1", "--batch", str(case.batch), "--vram", "24"]
    if reg:
        argv += ["--set", f"dataset.reg_data_dir={reg}"]
    if case.no_upscale:
        argv += ["--set", "dataset.bucket_no_upscale=true"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    return int(next(line for line in out.splitlines() if line.startswith("steps per epoch:")).split()[-1])


def _check_cli(capsys, root: Path, reg: Path | None, case: Case) -> int:
    argv = ["check", str(root), "--json", "--batch", str(case.batch)]
    argv += ["--reg", str(reg)] if reg else []
    argv += ["--bucket-no-upscale"] if case.no_upscale else []
    main(argv)
    data = json.loads(capsys.readouterr().out)
    assert data["batch_size"] == case.batch
    return data["batches_per_epoch"]


async def _wizard_steps(cfg: TrainingConfig) -> int:
    """The Steps step mounted in an app, fed the dataset scan as the wizard's Dataset step makes it."""
    from textual.app import App
    from textual.widgets import Static

    from loratui.tui.steps.steps import StepsStep

    data = cfg.dataset
    report = scan_dataset(data.train_data_dir, reg_dir=data.reg_data_dir, resolution=data.resolution,
                          bucket_spec=bucket_spec_from_config(cfg), batch_size=cfg.schedule.train_batch_size)

    class Host(App):
        def compose(self):
            yield StepsStep(cfg)

    app = Host()
    async with app.run_test() as pilot:
        step = app.query_one(StepsStep)
        step.dataset_scanned(report)
        await pilot.pause()
        console = Console(file=io.StringIO(), width=200, record=True)
        console.print(step.query_one("#plan", Static).content)
        text = console.export_text()
    line = next(row for row in text.splitlines() if row.startswith("Steps per epoch"))
    return int(line.split()[-1])


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from loratui.train.tiny_models import build_tiny_sd1

    return build_tiny_sd1(tmp_path_factory.mktemp("tiny_sd1"))


class _Started(Exception):
    """Raised from the event sink at the `start` event: the figure is known, no step needs to run."""


def _trainer_start(tmp_path: Path, cfg: TrainingConfig) -> tuple[dict, dict[str, str]]:
    """The trainer's real `start` event (the run is cut there), and the metadata of a file it then saves."""
    from loratui.train.export import read_metadata
    from loratui.train.loop import Progress, Trainer

    events: list[tuple[str, dict]] = []

    def sink(kind: str, **fields) -> None:
        events.append((kind, fields))
        if kind == "start":
            raise _Started

    trainer = Trainer(cfg, tmp_path / "run", sink)
    trainer.setup()
    with pytest.raises(_Started):
        trainer.train()
    path = trainer.save_checkpoint(Progress(), "parity-000001.safetensors", 1)
    start = next(fields for kind, fields in events if kind == "start")
    return start, read_metadata(path)


@pytest.mark.parametrize("name", list(CASES))
async def test_plan_check_wizard_and_trainer_give_sd_scripts_batches(name, tmp_path, capsys, tiny_model):
    case = CASES[name]
    root, reg = _dataset(tmp_path, case)
    cfg = _config(root, reg, case, tiny_model)
    assert _plan_cli(capsys, root, reg, case) == case.expected
    assert _check_cli(capsys, root, reg, case) == case.expected
    assert await _wizard_steps(cfg) == case.expected
    start, meta = _trainer_start(tmp_path, cfg)
    assert start["steps_per_epoch"] == case.expected
    assert meta["ss_num_batches_per_epoch"] == str(case.expected)
    assert meta["ss_num_reg_images"] == str(case.num_reg_images)
    info = json.loads(meta["ss_bucket_info"])
    assert sum(b["count"] for b in info["buckets"].values()) == sum(start["buckets"].values())


def test_exif_rotation_is_named_in_check(tmp_path, capsys):
    case = CASES["exif"]
    root, _ = _dataset(tmp_path, case)
    main(["check", str(root)])
    out = capsys.readouterr().out
    rotated = [line for line in out.splitlines() if "rot00.jpg" in line and "EXIF orientation 6" in line]
    assert rotated and "768×512" in rotated[0] and "sideways" in rotated[0]


def test_folder_5_underscore_trains_with_5_repeats(tmp_path, capsys):
    root, _ = _dataset(tmp_path, CASES["folder-5_"])
    main(["check", str(root)])
    out = capsys.readouterr().out
    assert "5_: 3 images, 5 repeats" in out
    assert "skips" not in out
    assert "trains with an empty caption" in out  # class tokens "" and no caption file: sd-scripts uses ""
