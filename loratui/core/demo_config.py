"""The demo run's settings: a tiny model and dataset, CPU-friendly, through every feature the wizard shows."""

from __future__ import annotations

from pathlib import Path

from loratui.core.config import TrainingConfig


def demo_config(demo_dir: Path) -> TrainingConfig:
    demo_dir = Path(demo_dir).resolve()
    return TrainingConfig.model_validate({
        "model": {"pretrained_model_name_or_path": str(demo_dir / "model"), "model_family": "sd1"},
        "dataset": {"train_data_dir": str(demo_dir / "dataset"), "resolution": 64, "min_bucket_reso": 64,
                    "max_bucket_reso": 128, "shuffle_caption": True, "keep_tokens": 1},
        "network": {"network_dim": 4, "network_alpha": 2.0},
        "optimizer": {"optimizer_type": "AdamW", "learning_rate": 1e-3, "text_encoder_lr": 5e-4},
        "schedule": {"max_train_epochs": 4, "train_batch_size": 2, "lr_scheduler": "cosine", "lr_warmup_pct": 5},
        "precision": {"mixed_precision": "no", "save_precision": "fp16"},
        "saving": {"output_name": "demo-lora", "save_every_n_epochs": 1,
                   "training_comment": "loratui demo: activation tag 'sks toy'"},
        "sampling": {"sample_every_n_epochs": 2,
                     "sample_prompts": ["sks toy, red circle --n blurry --w 64 --h 64 --d 1 --l 5 --s 4"]},
    })
