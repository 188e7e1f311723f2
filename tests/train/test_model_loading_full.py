"""A FULL-size SD1.5-architecture checkpoint (random fp16 weights, original single-file layout) trains offline.

Built once per test session (~1 min, ~2 GB). The saved LoRA must hold exactly the module set kohya's
sd-scripts makes for SD1.5 (networks/lora.py ``LoRANetwork``: UNet Transformer2DModel linears and 1x1 convs,
text-encoder CLIPAttention + CLIPMLP): 192 UNet + 72 text-encoder modules.
"""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from loratui.core.demo import make_demo_dataset
from loratui.train.loop import run
from loratui.train.tiny_models import build_sd15_single_file

from .conftest import Recorder, make_config
from .test_model_loading import offline  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def sd15_file(tmp_path_factory):
    return build_sd15_single_file(tmp_path_factory.mktemp("sd15") / "sd15-random.safetensors")


def test_full_size_sd15_single_file_trains_two_steps_offline(offline, sd15_file, tmp_path):  # noqa: F811
    data = make_demo_dataset(tmp_path / "data", count=2)
    cfg = make_config(sd15_file, data, model__model_family="sd1", dataset__resolution=256,
                      dataset__min_bucket_reso=256, dataset__max_bucket_reso=256, schedule__train_batch_size=1,
                      schedule__max_train_steps=2)
    rec = Recorder()
    final = run(cfg, tmp_path / "run", rec)
    assert [s["step"] for s in rec.of("step")] == [1, 2]
    assert all(s["loss"] == s["loss"] for s in rec.of("step")), "loss must not be NaN"
    modules = {k.split(".")[0] for k in load_file(str(final)) if k.endswith(".lora_down.weight")}
    assert sum(m.startswith("lora_unet_") for m in modules) == 192
    assert sum(m.startswith("lora_te_") for m in modules) == 72
    assert len(modules) == 264
