"""Save the trained network as a kohya/webui ``.safetensors`` LoRA with sd-scripts' metadata.

Keys: ``lora_unet_…`` / ``lora_te_…`` (``lora_te1_``/``lora_te2_`` for SDXL) with ``.lora_down.weight``,
``.lora_up.weight`` and the real ``.alpha`` (diffusers' own kohya converter writes alpha = rank, which loads
at the wrong strength); DoRA adds ``.dora_scale``. LoHa and LoKr use LyCORIS key names. Every write is atomic.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import torch

from loratui.core.atomic import atomic_write_bytes
from loratui.core.config import TrainingConfig
from loratui.train.networks import ADAPTER, AdaptedModel, AttachedNetwork

_BASE_MODEL_VERSION = {"sd1": "sd_v1", "sd2": "sd_v2", "sd2-v": "sd_v2", "sdxl": "sdxl_base_v1-0"}
_MODELSPEC_ARCH = {"sd1": "stable-diffusion-v1", "sd2": "stable-diffusion-v2-512",
                   "sd2-v": "stable-diffusion-v2-768-v", "sdxl": "stable-diffusion-xl-v1-base"}
_NETWORK_MODULE = {"lora": "networks.lora", "locon": "networks.lora", "loha": "lycoris.kohya",
                   "lokr": "lycoris.kohya"}


_LORA_KEYS = {"lora_A": "lora_down.weight", "lora_B": "lora_up.weight"}
# Parameters stored under their own name; dora_scale is (1, in[, 1, 1]), the layout A1111/ComfyUI/LyCORIS apply.
_LYCORIS_KEYS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2",
                 "lokr_w2_a", "lokr_w2_b", "lokr_t2", "dora_scale")


def layer_parameters(module: torch.nn.Module, name: str) -> dict[str, torch.Tensor]:
    """The live adapter parameters of one layer under their kohya/LyCORIS keys (no alpha, nothing folded)."""
    out: dict[str, torch.Tensor] = {}
    for attr, key in _LORA_KEYS.items():
        container = getattr(module, attr, None)
        if container is not None and ADAPTER in container:
            out[f"{name}.{key}"] = container[ADAPTER].weight
    for key in _LYCORIS_KEYS:
        container = getattr(module, key, None)
        if container is not None and ADAPTER in container:
            out[f"{name}.{key}"] = container[ADAPTER]
    if not out:
        raise ValueError(f"layer {name} has no adapter weights")
    return out


def _layer_tensors(module: torch.nn.Module, name: str) -> dict[str, torch.Tensor]:
    """What the file stores for one layer: its parameters plus the alpha the loaders expect."""
    out = layer_parameters(module, name)
    if f"{name}.lora_down.weight" in out:
        out[f"{name}.alpha"] = torch.tensor(float(module.lora_alpha[ADAPTER]))
    elif f"{name}.hada_w1_a" in out:
        out[f"{name}.alpha"] = torch.tensor(float(module.alpha[ADAPTER]))
    else:
        _fold_lokr_scale(module, name, out)
    return out


def _fold_lokr_scale(module: torch.nn.Module, name: str, out: dict[str, torch.Tensor]) -> None:
    rank, alpha = module.r[ADAPTER], float(module.alpha[ADAPTER])
    if f"{name}.lokr_w2_a" in out:
        out[f"{name}.alpha"] = torch.tensor(alpha)  # LyCORIS scales by alpha / rank like peft
        return
    # Neither factor low-rank: LyCORIS applies scale 1, peft alpha/r — fold peft's scale into w1.
    w1_key = f"{name}.lokr_w1" if f"{name}.lokr_w1" in out else f"{name}.lokr_w1_a"
    out[w1_key] = out[w1_key] * (alpha / rank)
    out[f"{name}.alpha"] = torch.tensor(float(rank))


def part_state_dict(part: AdaptedModel) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for path, name in part.names.items():
        tensors.update(_layer_tensors(part.model.get_submodule(path), name))
    return tensors


def kohya_state_dict(network: AttachedNetwork, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for part in network.parts:
        tensors.update(part_state_dict(part))
    return {k: v.detach().to("cpu", dtype=dtype).contiguous() for k, v in tensors.items()}


def save_dtype(name: str) -> torch.dtype:
    return {"float": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


# --- metadata --------------------------------------------------------------------------------------------------


def build_metadata(cfg: TrainingConfig, *, run_info: dict[str, Any]) -> dict[str, str]:
    """sd-scripts' ``ss_*`` keys plus ``modelspec.*``; all values are strings."""
    net, opt, sched, data = cfg.network, cfg.optimizer, cfg.schedule, cfg.dataset
    args: dict[str, str] = {}
    if net.network_type != "lora":
        args["algo"] = {"locon": "locon", "loha": "loha", "lokr": "lokr"}[net.network_type]
    if net.conv_dim is not None:
        args["conv_dim"] = str(net.conv_dim)
        args["conv_alpha"] = str(net.conv_alpha or net.conv_dim)
    if net.use_dora:
        args["dora_wd"] = "True"
        args["wd_on_output"] = "False"  # LyCORIS' name for the magnitude-per-input-column layout we save
    for key in ("rank_dropout", "module_dropout"):
        if getattr(net, key):
            args[key] = str(getattr(net, key))
    meta: dict[str, Any] = {
        "ss_session_id": str(run_info.get("session_id", uuid.uuid4().int % 2**31)),
        "ss_training_started_at": run_info.get("started_at", time.time()),
        "ss_training_finished_at": run_info.get("finished_at", time.time()),
        "ss_output_name": cfg.saving.output_name,
        "ss_training_comment": cfg.saving.training_comment,
        "ss_sd_model_name": Path(cfg.model.pretrained_model_name_or_path).name,
        "ss_base_model_version": _BASE_MODEL_VERSION[cfg.model.model_family],
        "ss_v2": cfg.model.model_family in ("sd2", "sd2-v"),
        "ss_v_parameterization": cfg.model.v_parameterization,
        "ss_network_module": _NETWORK_MODULE[net.network_type],
        "ss_network_dim": run_info.get("network_dim", net.network_dim),
        "ss_network_alpha": run_info.get("network_alpha", net.network_alpha),
        "ss_network_args": json.dumps(args) if args else None,
        "ss_network_dropout": net.network_dropout or None,
        "ss_learning_rate": opt.learning_rate,
        "ss_unet_lr": cfg.unet_lr,
        "ss_text_encoder_lr": cfg.text_encoder_lr,
        "ss_optimizer": _optimizer_name(cfg),
        "ss_lr_scheduler": sched.lr_scheduler,
        "ss_lr_warmup_steps": run_info.get("warmup_steps", 0),
        "ss_max_train_steps": run_info.get("total_steps"),
        "ss_steps": run_info.get("steps"),
        "ss_epoch": run_info.get("epoch"),
        "ss_num_epochs": sched.max_train_epochs,
        "ss_num_train_images": run_info.get("num_train_images"),
        "ss_num_reg_images": run_info.get("num_reg_images", 0),
        "ss_num_batches_per_epoch": run_info.get("steps_per_epoch"),
        "ss_batch_size_per_device": sched.train_batch_size,
        "ss_total_batch_size": sched.train_batch_size * opt.gradient_accumulation_steps,
        "ss_gradient_accumulation_steps": opt.gradient_accumulation_steps,
        "ss_gradient_checkpointing": cfg.advanced.gradient_checkpointing,
        "ss_max_grad_norm": opt.max_grad_norm,
        "ss_seed": sched.seed,
        "ss_resolution": f"({data.resolution}, {data.resolution})",
        "ss_enable_bucket": data.enable_bucket,
        "ss_min_bucket_reso": data.min_bucket_reso,
        "ss_max_bucket_reso": data.max_bucket_reso,
        "ss_bucket_no_upscale": data.bucket_no_upscale,
        "ss_bucket_info": json.dumps(run_info["bucket_info"]) if "bucket_info" in run_info else None,
        "ss_clip_skip": cfg.advanced.clip_skip,
        "ss_mixed_precision": cfg.precision.mixed_precision,
        "ss_full_fp16": cfg.precision.full_fp16,
        "ss_cache_latents": data.cache_latents,
        "ss_caption_dropout_rate": data.caption_dropout_rate,
        "ss_caption_dropout_every_n_epochs": data.caption_dropout_every_n_epochs,
        "ss_caption_tag_dropout_rate": data.caption_tag_dropout_rate,
        "ss_shuffle_caption": data.shuffle_caption,
        "ss_keep_tokens": data.keep_tokens,
        "ss_flip_aug": data.flip_aug,
        "ss_prior_loss_weight": data.prior_loss_weight,
        "ss_noise_offset": cfg.advanced.noise_offset or None,
        "ss_min_snr_gamma": cfg.advanced.min_snr_gamma,
        "ss_scale_weight_norms": net.scale_weight_norms,
        "ss_dataset_dirs": json.dumps(run_info.get("dataset_dirs", {})),
        "ss_reg_dataset_dirs": json.dumps(run_info.get("reg_dataset_dirs", {})),
        "ss_tag_frequency": json.dumps(run_info.get("tag_frequency", {})),
        "ss_new_sd_model_hash": None,
    }
    meta.update(_modelspec(cfg, run_info))
    return {k: _str(v) for k, v in meta.items() if v is not None}


def _optimizer_name(cfg: TrainingConfig) -> str:
    args = " ".join(f"{k}={v}" for k, v in cfg.optimizer.optimizer_args.items())
    return f"{cfg.optimizer.optimizer_type}({args})" if args else cfg.optimizer.optimizer_type


def _modelspec(cfg: TrainingConfig, run_info: dict[str, Any]) -> dict[str, Any]:
    family = cfg.model.model_family
    arch = f"{_MODELSPEC_ARCH[family]}/{'lora' if cfg.network.network_type == 'lora' else 'lycoris'}"
    res = cfg.dataset.resolution
    return {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": arch,
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models" if family == "sdxl"
        else "diffusers",
        "modelspec.title": cfg.saving.output_name,
        "modelspec.description": cfg.saving.training_comment or None,
        "modelspec.resolution": f"{res}x{res}",
        "modelspec.prediction_type": "v" if cfg.model.v_parameterization else "epsilon",
        "modelspec.date": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(run_info.get("finished_at"))),
        "modelspec.encoder_layer": str(cfg.advanced.clip_skip) if cfg.advanced.clip_skip > 1 else None,
    }


def _str(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


# --- hashes and saving -------------------------------------------------------------------------------------


def model_hashes(serialized: bytes) -> tuple[str, str]:
    """(sshs_model_hash, sshs_legacy_hash) as sd-scripts computes them on a serialized file.

    model hash: SHA-256 of everything after the safetensors header; legacy: first 8 hex of SHA-256 over
    64 KiB at offset 1 MiB of the file.
    """
    header_len = int.from_bytes(serialized[:8], "little")
    model_hash = hashlib.sha256(serialized[8 + header_len:]).hexdigest()
    legacy = hashlib.sha256(serialized[0x100000:0x110000]).hexdigest()[:8]
    return model_hash, legacy


def serialize(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    from safetensors.torch import save

    base = save(tensors, metadata={k: v for k, v in metadata.items() if not k.startswith("sshs_")})
    model_hash, legacy = model_hashes(base)
    return save(tensors, metadata={**metadata, "sshs_model_hash": model_hash, "sshs_legacy_hash": legacy})


def save_lora(network: AttachedNetwork, path: Path, metadata: dict[str, str], dtype: torch.dtype) -> Path:
    """Write the LoRA atomically: a reader (or a crash) sees the old file or the complete new one."""
    data = serialize(kohya_state_dict(network, dtype), metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return path


def checkpoint_filename(output_name: str, epoch: int | None) -> str:
    """``NAME-000002.safetensors`` for an epoch checkpoint, ``NAME.safetensors`` for the final file."""
    return f"{output_name}-{epoch:06d}.safetensors" if epoch is not None else f"{output_name}.safetensors"


def unique_output_path(path: Path) -> tuple[Path, str | None]:
    """Never overwrite: ``NAME.safetensors`` exists → ``NAME_v2.safetensors`` and a message saying so."""
    if not path.exists():
        return path, None
    n = 2
    while (candidate := path.with_name(f"{path.stem}_v{n}{path.suffix}")).exists():
        n += 1
    return candidate, f"{path.name} already exists; saving as {candidate.name} instead"


def prune_checkpoints(output_dir: Path, output_name: str, keep_last_n: int | None) -> list[Path]:
    """Delete all but the newest ``keep_last_n`` epoch checkpoints of ``output_name``; return what was removed."""
    if not keep_last_n:
        return []
    pattern = re.compile(rf"^{re.escape(output_name)}-(\d{{6}})\.safetensors$")
    epochs = sorted((int(m.group(1)), p) for p in output_dir.glob("*.safetensors") if (m := pattern.match(p.name)))
    removed = [p for _, p in epochs[:-keep_last_n]]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def read_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        return dict(fh.metadata() or {})

