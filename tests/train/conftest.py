"""Shared tiny models and datasets for the trainer tests (built once per session, offline)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def tiny_sd1_dir(tmp_path_factory) -> Path:
    from loratui.train.tiny_models import build_tiny_sd1

    return build_tiny_sd1(tmp_path_factory.mktemp("tiny_sd1"))


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory) -> Path:
    from loratui.train.tiny_models import build_tiny_sdxl

    return build_tiny_sdxl(tmp_path_factory.mktemp("tiny_sdxl"))


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory) -> Path:
    from loratui.core.demo import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("demo_data"), count=6)


def make_config(model_dir: Path, dataset: Path, **changes):
    """A fast CPU config over the tiny model; ``changes`` are ``section__key=value``."""
    from loratui.core.config import TrainingConfig

    cfg = TrainingConfig.model_validate({
        "model": {"pretrained_model_name_or_path": str(model_dir)},
        "dataset": {"train_data_dir": str(dataset), "resolution": 64, "min_bucket_reso": 64, "max_bucket_reso": 128},
        "network": {"network_dim": 4, "network_alpha": 2.0},
        "optimizer": {"learning_rate": 1e-3},
        "schedule": {"max_train_epochs": 1, "train_batch_size": 2, "max_train_steps": 3},
        "precision": {"mixed_precision": "no", "save_precision": "float"},
        "saving": {"output_name": "t"},
    })
    for key, value in changes.items():
        cfg = cfg.with_value(key.replace("__", "."), value)
    return cfg


class Recorder:
    """Collects events as the trainer emits them."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def __call__(self, type_: str, **fields) -> None:
        self.events.append((type_, fields))

    def of(self, type_: str) -> list[dict]:
        return [f for t, f in self.events if t == type_]
