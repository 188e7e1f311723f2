"""Single-file base models load offline: shipped configs, offline CLIP tokenizers, tiny original-layout files.

The tiny checkpoints use the real original (CompVis / Stability) key names and layout with small shapes; their
configs replace the shipped full-size ones through ``model_loading.CONFIG_ROOT``. The shipped configs are
checked separately against the published parameter counts of the real models.
"""

from __future__ import annotations

import socket

import pytest
import torch
from safetensors.torch import load_file, save_file

from loratui.core.config import TrainingConfig
from loratui.train import model_loading
from loratui.train.loop import run
from loratui.train.model_loading import ModelLoadError, load_models
from loratui.train.tiny_models import _tiny_components, build_tiny_single_file, vae_to_original
from loratui.train.tokenizers import clip_tokenizer

from .conftest import Recorder, make_config


@pytest.fixture
def offline(monkeypatch):
    """No hub access: the hub's offline switches on; any name lookup or connection fails the test loudly."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    attempts: list[object] = []

    def refuse(self, address):
        attempts.append(address)
        raise OSError(f"test is offline: connection to {address} refused")

    def resolve(host, *args, **kwargs):
        attempts.append(host)
        raise OSError(f"test is offline: name lookup of {host} refused")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    yield attempts
    assert not attempts, f"loading tried to connect to {attempts}"


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory):
    """family -> (checkpoint, config root) for tiny SD1, SD2-v and SDXL original-layout checkpoints."""
    root = tmp_path_factory.mktemp("single_files")
    return {family: build_tiny_single_file(root / family, family) for family in ("sd1", "sd2-v", "sdxl")}


def _cfg(checkpoint, family: str, **model) -> TrainingConfig:
    return TrainingConfig.model_validate(
        {"model": {"pretrained_model_name_or_path": str(checkpoint), "model_family": family, **model}})


# --- tokenizers ----------------------------------------------------------------------------------------------
def test_clip_tokenizer_gives_reference_ids():
    tok = clip_tokenizer()
    assert len(tok) == 49408
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (49406, 49407, 49407)
    # words CLIP has as single tokens (openai/clip-vit-large-patch14 ids)
    assert tok("hello world").input_ids == [49406, 3306, 1002, 49407]


def test_sdxl_second_tokenizer_pads_with_exclamation_mark():
    tok2 = clip_tokenizer(pad_token="!")
    ids = tok2("a photo of a cat", padding="max_length", max_length=77).input_ids
    assert ids[:7] == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tok2.pad_token_id == 0 and ids[7:] == [0] * 70
    first = clip_tokenizer()("a cat", padding="max_length", max_length=77).input_ids
    assert first[4:] == [49407] * 73  # SD1 / SDXL's first tokenizer pad with the end token


# --- shipped configs ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("family", "unet", "te"), [
    ("sd1", 859_520_964, [123_060_480]), ("sd2", 865_910_724, [340_387_840]),
    ("sd2-v", 865_910_724, [340_387_840]), ("sdxl", 2_567_463_684, [123_060_480, 694_659_840]),
])
def test_shipped_configs_build_the_published_architectures(family, unet, te):
    """Parameter counts of the real models (UNet, VAE 83,653,863, text encoders), built on the meta device."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = model_loading.SHIPPED_CONFIGS / family

    def count(module):
        return sum(p.numel() for p in module.parameters())

    with init_empty_weights():
        assert count(UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))) == unet
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        encoders = [CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))]
        if family == "sdxl":
            encoders.append(CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(folder / "text_encoder_2")))
    assert count(vae) == 83_653_863
    assert [count(e) for e in encoders] == te
    assert vae.config.scaling_factor == (0.13025 if family == "sdxl" else 0.18215)


# --- loading tiny single files -------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["sd1", "sd2-v", "sdxl"])
def test_single_file_loads_offline_with_the_written_weights(monkeypatch, offline, tiny_files, family):
    checkpoint, configs = tiny_files[family]
    monkeypatch.setattr(model_loading, "CONFIG_ROOT", configs)
    models = load_models(_cfg(checkpoint, family))
    unet, vae, encoders = _tiny_components(family.split("-")[0], seed=0)  # same seed: the same weights
    for loaded, written in [(models.unet, unet), (models.vae, vae), *zip(models.text_encoders, encoders,
                                                                           strict=True)]:
        want = written.state_dict()
        got = loaded.state_dict()
        assert set(got) == set(want)
        for key, value in want.items():
            torch.testing.assert_close(got[key].reshape(value.shape), value, rtol=0, atol=0, msg=key)
    assert models.v_prediction == (family == "sd2-v")
    assert models.vae.config.scaling_factor == (0.13025 if family == "sdxl" else 0.18215)
    assert models.tokenizers[0]("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    if family == "sdxl":
        assert models.tokenizers[1].pad_token_id == 0


@pytest.mark.parametrize("family", ["sd2-v", "sdxl"])
def test_single_file_trains_a_step(monkeypatch, offline, tiny_files, demo_dataset, tmp_path, family):
    checkpoint, configs = tiny_files[family]
    monkeypatch.setattr(model_loading, "CONFIG_ROOT", configs)
    cfg = make_config(checkpoint, demo_dataset, model__model_family=family, schedule__max_train_steps=1)
    rec = Recorder()
    final = run(cfg, tmp_path, rec)
    assert [s["step"] for s in rec.of("step")] == [1]
    keys = load_file(str(final))
    te_prefixes = ("lora_te1_", "lora_te2_") if family == "sdxl" else ("lora_te_",)
    assert any(k.startswith("lora_unet_") for k in keys)
    assert all(any(k.startswith(p) for k in keys) for p in te_prefixes)


def test_wrong_family_is_one_line_with_the_fix(offline, tiny_files):
    checkpoint, _ = tiny_files["sdxl"]
    with pytest.raises(ModelLoadError) as err:
        load_models(_cfg(checkpoint, "sd1"))
    assert str(err.value) == f"{checkpoint}: this is an SDXL checkpoint; set model.model_family: sdxl"


def test_lora_file_as_base_model_is_named(offline, tmp_path):
    lora = tmp_path / "my_lora.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8)}, str(lora))
    with pytest.raises(ModelLoadError) as err:
        load_models(_cfg(lora, "sd1"))
    assert str(err.value).startswith(f"{lora}: this is a LoRA file, not a base model; set it as network.network_w")


def test_missing_and_truncated_files_are_named(offline, tmp_path, tiny_files):
    with pytest.raises(ModelLoadError, match="file not found"):
        load_models(_cfg(tmp_path / "nope.safetensors", "sd1"))
    checkpoint, _ = tiny_files["sd1"]
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(checkpoint.read_bytes()[:-1000])
    with pytest.raises(ModelLoadError, match=r"cut.safetensors: file is truncated .* download it again"):
        load_models(_cfg(cut, "sd1"))


def test_pickle_checkpoint_needs_allow_pickle_and_loads_weights_only(monkeypatch, offline, tiny_files, tmp_path):
    checkpoint, configs = tiny_files["sd1"]
    monkeypatch.setattr(model_loading, "CONFIG_ROOT", configs)
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": load_file(str(checkpoint))}, ckpt)
    with pytest.raises(ModelLoadError, match="allow_pickle"):
        load_models(_cfg(ckpt, "sd1"))
    models = load_models(_cfg(ckpt, "sd1", allow_pickle=True))
    unet, _, _ = _tiny_components("sd1", seed=0)
    torch.testing.assert_close(models.unet.conv_in.weight, unet.conv_in.weight, rtol=0, atol=0)


@pytest.mark.parametrize("layout", ["bare", "first_stage_model"])
def test_vae_override_from_a_single_file_keeps_the_family_latent_scale(monkeypatch, offline, tiny_files, tmp_path,
                                                                      layout):
    """Issue 13 item 5: an SDXL model with a VAE file still scales latents by SDXL's 0.13025."""
    checkpoint, configs = tiny_files["sdxl"]
    monkeypatch.setattr(model_loading, "CONFIG_ROOT", configs)
    _, vae, _ = _tiny_components("sdxl", seed=7)  # different weights from the checkpoint's own VAE
    state = vae_to_original(vae.state_dict())
    if layout == "bare":  # how standalone VAE files are usually distributed
        state = {k.removeprefix("first_stage_model."): v for k, v in state.items()}
    vae_file = tmp_path / "vae.safetensors"
    save_file(state, str(vae_file))
    models = load_models(_cfg(checkpoint, "sdxl", vae=str(vae_file)))
    assert models.vae.config.scaling_factor == 0.13025
    torch.testing.assert_close(models.vae.encoder.conv_in.weight, vae.encoder.conv_in.weight, rtol=0, atol=0)


def test_vae_override_from_a_diffusers_folder(monkeypatch, offline, tiny_files, tmp_path):
    checkpoint, configs = tiny_files["sd1"]
    monkeypatch.setattr(model_loading, "CONFIG_ROOT", configs)
    _, vae, _ = _tiny_components("sd1", seed=7)
    vae.register_to_config(scaling_factor=0.5)  # a wrong factor in the VAE's own config must not win
    vae.save_pretrained(tmp_path / "myvae")
    models = load_models(_cfg(checkpoint, "sd1", vae=str(tmp_path / "myvae")))
    assert models.vae.config.scaling_factor == 0.18215
    torch.testing.assert_close(models.vae.encoder.conv_in.weight, vae.encoder.conv_in.weight, rtol=0, atol=0)


def test_loratui_train_with_the_wrong_family_fails_with_one_line(tmp_path, tiny_files, demo_dataset):
    """As a user runs it: `loratui train` on an SDXL file configured as sd1 ends with the fix, no traceback."""
    from loratui.core.presets import save_preset
    from loratui.core.run import rundir
    from loratui.core.run.events import read_snapshot

    from .test_process import loratui

    checkpoint, _ = tiny_files["sdxl"]
    config = save_preset(make_config(checkpoint, demo_dataset, model__model_family="sd1"), tmp_path / "run.yaml")
    out = loratui("train", str(config), home=tmp_path)
    assert out.returncode == 1
    run_dir = rundir.list_runs(tmp_path / "runs")[0].path
    error = read_snapshot(run_dir / rundir.EVENTS).error["message"]
    assert error == f"{checkpoint}: this is an SDXL checkpoint; set model.model_family: sdxl"
    log = run_dir / rundir.LOG
    assert "Traceback" not in out.stdout + out.stderr + (log.read_text() if log.exists() else "")


@pytest.mark.parametrize(("family", "shown"), [("sd1", "SD1.x (model.model_family: sd1)"), ("sd2-v", "SD2.x"),
                                               ("sdxl", "SDXL (model.model_family: sdxl)")])
def test_check_model_names_the_family_of_each_test_checkpoint(tiny_files, family, shown):
    import subprocess
    import sys

    checkpoint, _ = tiny_files[family]
    out = subprocess.run([sys.executable, "-m", "loratui", "check-model", str(checkpoint), "--family", family],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"family:      {shown}\n" in out.stdout
    assert "dtype:       F32" in out.stdout
