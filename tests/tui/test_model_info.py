"""The Parameters step shows what the base model file is (read from its header in a worker, no torch) and
refuses Next on a model_family that disagrees with it, with the one-line fix `loratui check-model` gives.

Follows the header detection of tests/core/test_checkpoint_info.py (real original-layout key names; sd-scripts'
``model_util.load_models_from_stable_diffusion_checkpoint`` and diffusers key on the same tensors)."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import DataTable, Input, Select

from loratui.core.demo_config import demo_config
from loratui.core.presets import save_preset
from loratui.tui.app import make_app
from loratui.tui.widgets.model_info import ModelInfo
from loratui.tui.widgets.step_header import StepHeader
from tests.core.test_checkpoint_info import SD1, SDXL, write_header

from .conftest import wait_until
from .test_wizard import _text

SIZE = (80, 24)


def _app(demo_dir: Path, model: Path, family: str = "sd1"):
    config = demo_config(demo_dir).with_value("model.pretrained_model_name_or_path", str(model))
    save_preset(config.with_value("model.model_family", family), demo_dir / "preset.yaml")
    return make_app(dataset_dir=demo_dir / "dataset", preset=demo_dir / "preset.yaml", plain_images=True)


async def _to_parameters(pilot) -> None:
    await wait_until(pilot, lambda: pilot.app.screen.query_one("#images", DataTable).row_count == 10)
    await pilot.press("ctrl+n", "ctrl+n", "ctrl+n")
    await wait_until(pilot, lambda: pilot.app.screen.query_one(StepHeader).current == 3)


async def test_wrong_family_is_shown_with_the_fix_and_next_refuses_it(demo_dir, tmp_path):
    sdxl = write_header(tmp_path / "anime-xl.safetensors", SDXL)
    app = _app(demo_dir, sdxl, family="sd1")
    async with app.run_test(size=SIZE) as pilot:
        await _to_parameters(pilot)
        info = app.screen.query_one(ModelInfo)
        await wait_until(pilot, lambda: "SDXL" in _text(app, "#model-info"))
        shown = _text(app, "#model-info")
        assert "SDXL · epsilon · F16" in shown
        assert "both text encoders (CLIP ViT-L and OpenCLIP ViT-bigG)" in shown
        assert "this is an SDXL checkpoint; set model.model_family: sdxl" in shown
        assert info.region.bottom <= SIZE[1] - 1  # on screen at 80×24, under the two model fields
        assert "set model.model_family: sdxl" in _text(app, "#config-issues")
        family = app.screen.query_one("#field-model--model_family", Select)
        assert family.has_class("-invalid")

        await pilot.press("ctrl+n")  # refused: the step stays, the family field has focus
        await pilot.pause()
        assert app.screen.query_one(StepHeader).current == 3
        assert app.screen.focused is family

        family.value = "sdxl"  # as the user picks it in the list
        await wait_until(pilot, lambda: "set model.model_family" not in _text(app, "#model-info"))
        assert info.problem is None and not family.has_class("-invalid")
        assert "set model.model_family" not in _text(app, "#config-issues")
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: app.screen.query_one(StepHeader).current == 4)


async def test_info_follows_the_model_path_field(demo_dir, tmp_path):
    sd1 = write_header(tmp_path / "photo-v15.safetensors", SD1, dtype="F32")
    app = _app(demo_dir, tmp_path / "missing.safetensors", family="sdxl")
    async with app.run_test(size=SIZE) as pilot:
        await _to_parameters(pilot)
        await wait_until(pilot, lambda: "file not found" in _text(app, "#model-info"))
        assert app.screen.query_one(ModelInfo).problem is None  # maybe a hub id: the trainer decides
        field = app.screen.query_one("#field-model--pretrained_model_name_or_path", Input)
        field.focus()
        field.value = str(sd1)
        await wait_until(pilot, lambda: "SD1.x" in _text(app, "#model-info"))
        shown = _text(app, "#model-info")
        assert "SD1.x · epsilon · F32" in shown and "the text encoder (CLIP ViT-L)" in shown
        assert "this is an SD1.x checkpoint; set model.model_family: sd1" in shown

        field.value = "stabilityai/stable-diffusion-xl-base-1.0"
        await wait_until(pilot, lambda: "a hub id; the trainer downloads it" in _text(app, "#model-info"))

        lora = write_header(tmp_path / "style.safetensors", {
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": [4, 320, 1, 1]})
        field.value = str(lora)
        await wait_until(pilot, lambda: "this is a LoRA file" in _text(app, "#model-info"))
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.screen.focused is field and app.screen.query_one(StepHeader).current == 3
