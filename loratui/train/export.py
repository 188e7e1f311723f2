"""Save the trained network as a kohya/webui ``.safetensors`` LoRA with sd-scripts' metadata.

Keys: ``lora_unet_…`` / ``lora_te_…`` (``lora_te1_``/``lora_te2_`` for SDXL) with ``.lora_down.weight``,
``.lora_up.weight`` and the real ``.alpha`` (diffusers' own kohya converter writes alpha = rank, which loads
at the wrong strength); DoRA adds ``.dora_scale``. LoHa and LoKr use LyCORIS key names. Every write is atomic.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
import time
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


def file_names(part: AdaptedModel) -> dict[str, str]:
    """Module path → the name the file uses: sd-scripts' original-layout names for an SDXL UNet
    (``loratui.train.sdxl_names``), the kohya names of diffusers paths otherwise."""
    from loratui.train.sdxl_names import is_sdxl_unet, sdxl_unet_names

    if not part.is_text_encoder and is_sdxl_unet(part.model):
        return sdxl_unet_names(part.model, part.names)
    return part.names


def part_state_dict(part: AdaptedModel) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for path, name in file_names(part).items():
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
    """Every ``ss_*`` key sd-scripts' ``train_network.py`` writes for a LoRA run from a dataset folder, plus
    ``modelspec.*``. Values are ``str(value)`` as sd-scripts stores them, so ``None`` is written as ``"None"``
    where sd-scripts writes None (a setting left at its default).

    ``run_info`` comes from the trainer: ``session_id`` and ``started_at`` (fixed for the run), ``steps``,
    ``epoch``, ``finished_at``, ``total_steps``, ``batches_per_epoch``, ``num_processes``, dataset counts
    (``num_train_images``, ``num_reg_images``), ``dataset_dirs``, ``reg_dataset_dirs``, ``tag_frequency``,
    ``bucket_info`` and the live ``optimizer``."""
    net, opt, sched, data, adv = cfg.network, cfg.optimizer, cfg.schedule, cfg.dataset, cfg.advanced
    meta: dict[str, Any] = {
        # The trainer passes one id and start time per run; a one-off export without them gets fresh ones.
        "ss_session_id": run_info.get("session_id", random.randint(0, 2**32)),
        "ss_training_started_at": run_info.get("started_at", time.time()),
        "ss_output_name": cfg.saving.output_name,
        "ss_learning_rate": opt.learning_rate,
        "ss_text_encoder_lr": cfg.text_encoder_lr,  # the effective rates (the base rate when not set)
        "ss_unet_lr": cfg.unet_lr,
        "ss_num_train_images": run_info.get("num_train_images"),
        "ss_num_validation_images": 0,
        "ss_num_reg_images": run_info.get("num_reg_images", 0),
        "ss_num_batches_per_epoch": run_info.get("batches_per_epoch"),
        "ss_num_epochs": sched.max_train_epochs,
        "ss_gradient_checkpointing": adv.gradient_checkpointing,
        "ss_gradient_accumulation_steps": opt.gradient_accumulation_steps,
        "ss_max_train_steps": run_info.get("total_steps"),
        "ss_lr_warmup_steps": run_info.get("warmup_steps", 0),
        "ss_lr_scheduler": sched.lr_scheduler,
        "ss_network_module": _NETWORK_MODULE[net.network_type],
        "ss_network_dim": run_info.get("network_dim", net.network_dim),
        "ss_network_alpha": run_info.get("network_alpha", net.network_alpha),
        "ss_network_dropout": net.network_dropout or None,
        "ss_mixed_precision": cfg.precision.mixed_precision,
        "ss_full_fp16": cfg.precision.full_fp16,
        "ss_v2": cfg.model.model_family in ("sd2", "sd2-v"),
        "ss_base_model_version": _BASE_MODEL_VERSION[cfg.model.model_family],
        "ss_clip_skip": adv.clip_skip if adv.clip_skip > 1 else None,
        "ss_max_token_length": adv.max_token_length if adv.max_token_length != 75 else None,
        "ss_cache_latents": data.cache_latents,
        "ss_seed": sched.seed,
        "ss_lowram": False,
        "ss_noise_offset": adv.noise_offset or None,
        "ss_multires_noise_iterations": None,
        "ss_multires_noise_discount": 0.3,
        "ss_adaptive_noise_scale": None,
        "ss_zero_terminal_snr": False,
        "ss_training_comment": cfg.saving.training_comment or None,
        "ss_sd_scripts_commit_hash": "(unknown)",  # what sd-scripts writes when it is not a git checkout
        "ss_optimizer": optimizer_name(run_info.get("optimizer"), opt.optimizer_args, opt.optimizer_type),
        "ss_max_grad_norm": opt.max_grad_norm,
        "ss_caption_dropout_rate": data.caption_dropout_rate,
        "ss_caption_dropout_every_n_epochs": data.caption_dropout_every_n_epochs,
        "ss_caption_tag_dropout_rate": data.caption_tag_dropout_rate,
        "ss_face_crop_aug_range": None,
        "ss_prior_loss_weight": data.prior_loss_weight,
        "ss_min_snr_gamma": adv.min_snr_gamma,
        "ss_scale_weight_norms": net.scale_weight_norms,
        "ss_ip_noise_gamma": None,
        "ss_debiased_estimation": False,
        "ss_noise_offset_random_strength": False,
        "ss_ip_noise_gamma_random_strength": False,
        "ss_loss_type": "l2",
        "ss_huber_schedule": "snr",
        "ss_huber_scale": 1.0,
        "ss_huber_c": 0.1,
        "ss_fp8_base": False,
        "ss_fp8_base_unet": False,
        "ss_validation_seed": None,
        "ss_validation_split": 0.0,
        "ss_max_validation_steps": None,
        "ss_validate_every_n_epochs": None,
        "ss_validate_every_n_steps": None,
        "ss_resize_interpolation": None,
        # the train_data_dir branch (no dataset config file)
        "ss_batch_size_per_device": sched.train_batch_size,
        "ss_total_batch_size": sched.train_batch_size * run_info.get("num_processes", 1)
        * opt.gradient_accumulation_steps,
        "ss_resolution": f"{data.resolution},{data.resolution}",
        "ss_color_aug": False,
        "ss_flip_aug": data.flip_aug,
        "ss_random_crop": False,
        "ss_shuffle_caption": data.shuffle_caption,
        "ss_enable_bucket": data.enable_bucket,
        "ss_bucket_no_upscale": data.bucket_no_upscale,
        "ss_min_bucket_reso": data.min_bucket_reso if data.enable_bucket else None,
        "ss_max_bucket_reso": data.max_bucket_reso if data.enable_bucket else None,
        "ss_keep_tokens": data.keep_tokens,
        "ss_dataset_dirs": json.dumps(run_info.get("dataset_dirs", {})),
        "ss_reg_dataset_dirs": json.dumps(run_info.get("reg_dataset_dirs", {})),
        "ss_tag_frequency": json.dumps(run_info.get("tag_frequency", {})),
        "ss_bucket_info": json.dumps(run_info.get("bucket_info")),
    }
    network_args = _network_args(cfg)
    if network_args:
        meta["ss_network_args"] = json.dumps(network_args)
    meta.update(_model_file_keys("sd", cfg.model.pretrained_model_name_or_path))
    if cfg.model.vae:
        meta.update(_model_file_keys("vae", cfg.model.vae))
    meta["ss_training_finished_at"] = run_info.get("finished_at", time.time())
    meta["ss_steps"] = run_info.get("steps")
    meta["ss_epoch"] = run_info.get("epoch")
    strings = {k: _str(v) for k, v in meta.items()}
    strings.update({k: v for k, v in _modelspec(cfg, run_info).items() if v is not None})
    return strings


def _network_args(cfg: TrainingConfig) -> dict[str, str]:
    net = cfg.network
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
    return args


def _model_file_keys(kind: str, name: str) -> dict[str, str]:
    """``ss_{sd,vae}_model_hash``-style keys as train_network.py writes them: the hashes only when the path
    exists (a hub id gets the name alone), then the base name."""
    key_hash, key_new, key_name = (("ss_sd_model_hash", "ss_new_sd_model_hash", "ss_sd_model_name") if kind == "sd"
                                   else ("ss_vae_hash", "ss_new_vae_hash", "ss_vae_name"))
    path = Path(name)
    if not path.exists():
        return {key_name: name}
    legacy, full = base_model_hashes(path)
    return {key_hash: legacy, key_new: full, key_name: path.name}


def base_model_hashes(path: Path) -> tuple[str, str]:
    """(``model_hash``, ``calculate_sha256``) of sd-scripts' train_util for a base model path: the first
    8 hex of SHA-256 over 64 KiB at offset 1 MiB, and the SHA-256 of the whole file. A directory (a diffusers
    folder) gives ``"IsADirectory"`` for both, as sd-scripts' functions return on Linux."""
    if path.is_dir():
        return "IsADirectory", "IsADirectory"
    stat = path.stat()
    return _file_hashes(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _file_hashes(path: str, size: int, mtime_ns: int) -> tuple[str, str]:
    """Cached per (path, size, mtime): a multi-GB base model is read once per run, not once per checkpoint."""
    full = hashlib.sha256()
    with open(path, "rb") as fh:
        fh.seek(0x100000)
        legacy = hashlib.sha256(fh.read(0x10000)).hexdigest()[:8]
        fh.seek(0)
        for chunk in iter(lambda: fh.read(1024 * 1024), b""):
            full.update(chunk)
    return legacy, full.hexdigest()


def optimizer_name(optimizer: Any, optimizer_args: dict[str, Any], fallback: str) -> str:
    """sd-scripts' ``ss_optimizer``: the class's ``module.Name`` then ``(k=v,k=v)`` of the user's optimizer
    arguments (``train_util.get_optimizer``), e.g. ``torch.optim.adamw.AdamW(weight_decay=0.01)``."""
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the optimizer
    name = f"{type(inner).__module__}.{type(inner).__name__}" if inner is not None else fallback
    args = ",".join(f"{k}={v}" for k, v in optimizer_args.items())
    return f"{name}({args})" if args else name


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
    """(sshs_model_hash, sshs_legacy_hash) of a serialization (``addnet_hash_safetensors`` and
    ``addnet_hash_legacy``): SHA-256 of everything after the safetensors header; the first 8 hex of SHA-256
    over 64 KiB at offset 1 MiB."""
    header_len = int.from_bytes(serialized[:8], "little")
    model_hash = hashlib.sha256(serialized[8 + header_len:]).hexdigest()
    legacy = hashlib.sha256(serialized[0x100000:0x110000]).hexdigest()[:8]
    return model_hash, legacy


def serialize(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """The file's bytes with ``sshs_*`` hashes computed as ``precalculate_safetensors_hashes`` does: over a
    serialization holding the tensors and only the ``ss_*`` keys (user-editable keys such as ``modelspec.*``
    would otherwise shift the bytes the legacy hash reads at offset 1 MiB)."""
    from safetensors.torch import save

    base = save(tensors, metadata={k: v for k, v in metadata.items() if k.startswith("ss_")})
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

