"""Build the offline demo: a tiny SD1-architecture model, a generated dataset and its config."""

from __future__ import annotations

import sys
from pathlib import Path

from loratui.core.demo import make_demo_dataset
from loratui.core.demo_config import demo_config
from loratui.core.presets import save_preset


def prepare_demo(demo_dir: Path) -> Path:
    """Create (or reuse) everything the demo needs under ``demo_dir``; returns the config file."""
    from loratui.train.tiny_models import build_tiny_sd1

    demo_dir = Path(demo_dir).resolve()
    if not (demo_dir / "model" / "model_index.json").exists():
        build_tiny_sd1(demo_dir / "model")
    if not (demo_dir / "dataset").exists():
        make_demo_dataset(demo_dir / "dataset")
    config = demo_dir / "demo.yaml"
    save_preset(demo_config(demo_dir), config, comment="The loratui demo: a tiny offline model, 10 images")
    return config


if __name__ == "__main__":  # `python -m loratui.train.demo DIR`: used by the wizard, which never imports torch
    print(prepare_demo(Path(sys.argv[1] if len(sys.argv) > 1 else "loratui-demo")))
