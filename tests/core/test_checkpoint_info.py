"""Family detection from the safetensors header alone, and `loratui check-model`.

Headers use the real original-layout key names and full-size shapes of each family (the tensors diffusers'
``infer_diffusers_model_type`` keys on); the data area is a sparse file, so no weights are written or read.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from loratui.core.checkpoint_info import (
    CheckpointError,
    describe_checkpoint,
    family_mismatch,
    ram_needed,
    ram_problem,
)

DTYPE_BYTES = {"F16": 2, "F32": 4, "BF16": 2}
SD1 = {
    "model.diffusion_model.input_blocks.0.0.weight": [320, 4, 3, 3],
    "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": [320, 768],
    "model.diffusion_model.out.2.weight": [4, 320, 3, 3],
    "first_stage_model.encoder.conv_in.weight": [128, 3, 3, 3],
    "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": [49408, 768],
    "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": [77, 768],
}
SD2 = {
    "model.diffusion_model.input_blocks.0.0.weight": [320, 4, 3, 3],
    "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": [320, 1024],
    "first_stage_model.encoder.conv_in.weight": [128, 3, 3, 3],
    "cond_stage_model.model.token_embedding.weight": [49408, 1024],
    "cond_stage_model.model.positional_embedding": [77, 1024],
}
SDXL = {
    "model.diffusion_model.input_blocks.0.0.weight": [320, 4, 3, 3],
    "model.diffusion_model.label_emb.0.0.weight": [1280, 2816],
    "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": [640, 2048],
    "first_stage_model.encoder.conv_in.weight": [128, 3, 3, 3],
    "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight": [77, 768],
    "conditioner.embedders.1.model.positional_embedding": [77, 1280],
    "conditioner.embedders.1.model.text_projection": [1280, 1280],
}
SDXL_REFINER = {
    "model.diffusion_model.input_blocks.0.0.weight": [384, 4, 3, 3],
    "model.diffusion_model.label_emb.0.0.weight": [1536, 2560],
    "first_stage_model.encoder.conv_in.weight": [128, 3, 3, 3],
    "conditioner.embedders.0.model.positional_embedding": [77, 1280],
}
LORA = {
    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": [4, 320, 1, 1],
    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": [320, 4, 1, 1],
    "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": [],
}


def write_header(path: Path, shapes: dict[str, list[int]], dtype: str = "F16", metadata: dict | None = None,
                 cut: int = 0) -> Path:
    """A safetensors file with these tensors (zeros, sparse on disk); ``cut`` bytes missing from its end."""
    header: dict[str, object] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, shape in shapes.items():
        size = DTYPE_BYTES[dtype]
        for dim in shape:
            size *= dim
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        fh.truncate(8 + len(raw) + offset - cut)
    return path


@pytest.mark.parametrize(("shapes", "family", "prediction", "config_family"), [
    (SD1, "sd1", "epsilon", "sd1"), (SD2, "sd2", None, None), (SDXL, "sdxl", "epsilon", "sdxl"),
])
def test_family_from_header(tmp_path, shapes, family, prediction, config_family):
    info = describe_checkpoint(write_header(tmp_path / "m.safetensors", shapes))
    assert (info.family, info.prediction, info.config_family, info.problem) == (family, prediction, config_family,
                                                                                  None)
    assert info.dtype == "F16"
    assert info.parameters == sum(_numel(s) for s in shapes.values())
    assert "unet" in info.parts and "vae" in info.parts and "text encoder" in info.parts


def test_v_prediction_from_the_file_marker_or_modelspec(tmp_path):
    marked = describe_checkpoint(write_header(tmp_path / "a.safetensors", {**SDXL, "v_pred": [0]}))
    assert (marked.family, marked.prediction) == ("sdxl", "v_prediction")
    spec = describe_checkpoint(write_header(tmp_path / "b.safetensors", SD2,
                                            metadata={"modelspec.prediction_type": "v"}))
    assert (spec.family, spec.prediction, spec.config_family) == ("sd2", "v_prediction", "sd2-v")


def test_lora_inpainting_and_refiner_are_refused_with_the_reason(tmp_path):
    lora = describe_checkpoint(write_header(tmp_path / "l.safetensors", LORA))
    assert lora.problem.startswith("this is a LoRA file, not a base model; set it as network.network_weights")
    inpaint = {**SD1, "model.diffusion_model.input_blocks.0.0.weight": [320, 9, 3, 3]}
    info = describe_checkpoint(write_header(tmp_path / "i.safetensors", inpaint))
    assert info.family == "sd1" and info.problem.startswith("this is an inpainting SD1.x model")
    refiner = describe_checkpoint(write_header(tmp_path / "r.safetensors", SDXL_REFINER))
    assert refiner.problem.startswith("this is an SDXL refiner")


def test_truncated_empty_and_foreign_files_are_errors(tmp_path):
    with pytest.raises(CheckpointError, match=r"t.safetensors: file is truncated \(1.0 MiB missing"):
        describe_checkpoint(write_header(tmp_path / "t.safetensors", SD1, cut=1024 * 1024))
    (tmp_path / "e.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="file is empty or truncated"):
        describe_checkpoint(tmp_path / "e.safetensors")
    (tmp_path / "x.safetensors").write_text("<html>Sign in to download</html>")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        describe_checkpoint(tmp_path / "x.safetensors")
    with pytest.raises(CheckpointError, match=r"file not found; check model\.pretrained_model_name_or_path"):
        describe_checkpoint(tmp_path / "missing.safetensors")


def test_family_mismatch_names_the_setting(tmp_path):
    sdxl = describe_checkpoint(write_header(tmp_path / "x.safetensors", SDXL))
    assert family_mismatch(sdxl, "sd1") == "this is an SDXL checkpoint; set model.model_family: sdxl"
    assert family_mismatch(sdxl, "sdxl") is None
    sd1 = describe_checkpoint(write_header(tmp_path / "1.safetensors", SD1))
    assert family_mismatch(sd1, "sd2-v") == "this is an SD1.x checkpoint; set model.model_family: sd1"
    sd2 = describe_checkpoint(write_header(tmp_path / "2.safetensors", SD2))
    assert family_mismatch(sd2, "sd2") is None and family_mismatch(sd2, "sd2-v") is None  # file does not say
    assert family_mismatch(sd2, "sdxl") == ("this is an SD2.x checkpoint; set model.model_family: sd2 (or sd2-v "
                                            "for a 768 v-prediction model)")
    sd2v = describe_checkpoint(write_header(tmp_path / "v.safetensors", SD2,
                                            metadata={"modelspec.prediction_type": "v"}))
    assert family_mismatch(sd2v, "sd2") == "this is a v-prediction SD2.x checkpoint; set model.model_family: sd2-v"


def test_not_enough_ram_is_one_line_with_the_numbers(tmp_path):
    info = describe_checkpoint(write_header(tmp_path / "m.safetensors", SDXL))
    assert ram_problem(info, ram_needed(info)) is None
    assert ram_problem(info, None) is None  # unknown: do not block
    message = ram_problem(info, 512 * 1024**2)
    assert message.startswith("not enough free RAM to load it (needs about ") and "0.50 GiB available" in message


def _numel(shape: list[int]) -> int:
    n = 1
    for dim in shape:
        n *= dim
    return n


# --- the command ---------------------------------------------------------------------------------------------
def check_model(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loratui", "check-model", *args], capture_output=True, text=True)


def test_check_model_prints_what_the_file_is(tmp_path):
    out = check_model(str(write_header(tmp_path / "xl.safetensors", SDXL)))
    assert out.returncode == 0, out.stderr
    assert "family:      SDXL (model.model_family: sdxl)" in out.stdout
    assert "prediction:  epsilon" in out.stdout and "dtype:       F16" in out.stdout
    assert "trains:      a LoRA on the UNet and both text encoders" in out.stdout


def test_check_model_wrong_family_is_one_line(tmp_path):
    out = check_model(str(write_header(tmp_path / "xl.safetensors", SDXL)), "--family", "sd1")
    assert out.returncode == 2
    assert out.stderr == "loratui: error: this is an SDXL checkpoint; set model.model_family: sdxl\n"


def test_check_model_on_a_lora_and_a_missing_file(tmp_path):
    out = check_model(str(write_header(tmp_path / "l.safetensors", LORA)))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "this is a LoRA file" in out.stderr
    out = check_model(str(tmp_path / "none.safetensors"))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "file not found" in out.stderr


@pytest.mark.parametrize(("width", "prediction", "family", "config_family"), [
    (768, "epsilon", "sd1", "sd1"), (1024, "v_prediction", "sd2", "sd2-v"), (2048, "epsilon", "sdxl", "sdxl"),
])
def test_diffusers_folder_family_from_its_configs(tmp_path, width, prediction, family, config_family):
    (tmp_path / "unet").mkdir()
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "model_index.json").write_text(json.dumps({"unet": ["diffusers", "UNet2DConditionModel"]}))
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"cross_attention_dim": width, "in_channels": 4}))
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps({"prediction_type": prediction}))
    info = describe_checkpoint(tmp_path)
    assert (info.format, info.family, info.config_family, info.problem) == ("diffusers", family, config_family, None)
