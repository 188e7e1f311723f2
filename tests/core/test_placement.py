"""What stays on the training device during the steps: sd-scripts' rules (train_network.py after
``new_cache_latents``; sdxl_train_network.py ``cache_text_encoder_outputs_if_needed``)."""

from __future__ import annotations

import pytest

from loratui.core.config import TrainingConfig
from loratui.core.placement import COMPONENTS, resident_during_steps


def _cfg(**changes: object) -> TrainingConfig:
    cfg = TrainingConfig()
    for path, value in changes.items():
        cfg = cfg.with_value(path.replace("__", "."), value)
    return cfg


FROZEN_CACHED = {"network__network_train_unet_only": True, "advanced__cache_text_encoder_outputs": True}


@pytest.mark.parametrize(("changes", "resident"), [
    # the defaults: latents cached, text encoders trained (their LoRA runs every step)
    ({}, {"unet", "text_encoders"}),
    ({"dataset__cache_latents": False}, {"unet", "text_encoders", "vae"}),
    # frozen encoders whose outputs are not cached still encode every step (SD1/SD2 and SDXL alike)
    ({"network__network_train_unet_only": True}, {"unet", "text_encoders"}),
    (FROZEN_CACHED, {"unet"}),
    ({**FROZEN_CACHED, "dataset__cache_latents": False}, {"unet", "vae"}),
    ({**FROZEN_CACHED, "model__model_family": "sdxl"}, {"unet"}),
    # a text-encoder learning rate of 0 freezes the encoders as network_train_unet_only does
    ({"optimizer__text_encoder_lr": 0.0, "advanced__cache_text_encoder_outputs": True}, {"unet"}),
    # caching asked for while the encoders train: the cache cannot apply (the config check calls it an error)
    ({"advanced__cache_text_encoder_outputs": True}, {"unet", "text_encoders"}),
    # shuffled or tag-dropped captions are new text at each step: the encoders stay
    ({**FROZEN_CACHED, "dataset__shuffle_caption": True}, {"unet", "text_encoders"}),
    ({**FROZEN_CACHED, "dataset__caption_tag_dropout_rate": 0.1}, {"unet", "text_encoders"}),
    # a whole caption dropped is the empty caption, cached with the others
    ({**FROZEN_CACHED, "dataset__caption_dropout_rate": 0.1}, {"unet"}),
    ({**FROZEN_CACHED, "dataset__caption_dropout_every_n_epochs": 2}, {"unet"}),
])
def test_resident_components(changes: dict, resident: set[str]) -> None:
    got = resident_during_steps(_cfg(**changes))
    assert got == frozenset(resident) and got <= COMPONENTS
