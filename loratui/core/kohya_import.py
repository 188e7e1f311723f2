"""Import a kohya_ss GUI JSON config (flat keys, string-typed numbers in old files) into a TrainingConfig."""

from __future__ import annotations

import contextlib
import json
import shlex
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from loratui.core.config import TrainingConfig
from loratui.core.presets import MAX_PRESET_BYTES, PresetError, bool_misuse

# GUI key → our dotted path, for keys whose meaning is the same
_DIRECT = {
    "pretrained_model_name_or_path": "model.pretrained_model_name_or_path",
    "vae": "model.vae",
    "train_data_dir": "dataset.train_data_dir",
    "reg_data_dir": "dataset.reg_data_dir",
    "caption_extension": "dataset.caption_extension",
    "enable_bucket": "dataset.enable_bucket",
    "min_bucket_reso": "dataset.min_bucket_reso",
    "max_bucket_reso": "dataset.max_bucket_reso",
    "bucket_reso_steps": "dataset.bucket_reso_steps",
    "bucket_no_upscale": "dataset.bucket_no_upscale",
    "shuffle_caption": "dataset.shuffle_caption",
    "keep_tokens": "dataset.keep_tokens",
    "keep_tokens_separator": "dataset.keep_tokens_separator",
    "caption_dropout_rate": "dataset.caption_dropout_rate",
    "caption_dropout_every_n_epochs": "dataset.caption_dropout_every_n_epochs",
    "caption_tag_dropout_rate": "dataset.caption_tag_dropout_rate",
    "flip_aug": "dataset.flip_aug",
    "prior_loss_weight": "dataset.prior_loss_weight",
    "cache_latents": "dataset.cache_latents",
    "cache_latents_to_disk": "dataset.cache_latents_to_disk",
    "max_data_loader_n_workers": "dataset.max_data_loader_n_workers",
    "network_dim": "network.network_dim",
    "network_alpha": "network.network_alpha",
    "conv_dim": "network.conv_dim",
    "conv_alpha": "network.conv_alpha",
    "network_dropout": "network.network_dropout",
    "rank_dropout": "network.rank_dropout",
    "module_dropout": "network.module_dropout",
    "network_weights": "network.network_weights",
    "dim_from_weights": "network.dim_from_weights",
    "scale_weight_norms": "network.scale_weight_norms",
    "stop_text_encoder_training": "network.stop_text_encoder_training_pct",
    "network_train_unet_only": "network.network_train_unet_only",
    "learning_rate": "optimizer.learning_rate",
    "unet_lr": "optimizer.unet_lr",
    "text_encoder_lr": "optimizer.text_encoder_lr",
    "max_grad_norm": "optimizer.max_grad_norm",
    "gradient_accumulation_steps": "optimizer.gradient_accumulation_steps",
    "epoch": "schedule.max_train_epochs",
    "max_train_steps": "schedule.max_train_steps",
    "train_batch_size": "schedule.train_batch_size",
    "lr_scheduler_num_cycles": "schedule.lr_scheduler_num_cycles",
    "lr_scheduler_power": "schedule.lr_scheduler_power",
    "lr_warmup": "schedule.lr_warmup_pct",
    "seed": "schedule.seed",
    "mixed_precision": "precision.mixed_precision",
    "save_precision": "precision.save_precision",
    "full_fp16": "precision.full_fp16",
    "full_bf16": "precision.full_bf16",
    "output_dir": "saving.output_dir",
    "output_name": "saving.output_name",
    "save_every_n_epochs": "saving.save_every_n_epochs",
    "save_last_n_epochs": "saving.save_last_n_epochs",
    "save_state": "saving.save_state",
    "training_comment": "saving.training_comment",
    "logging_dir": "saving.logging_dir",
    "sample_every_n_epochs": "sampling.sample_every_n_epochs",
    "sample_sampler": "sampling.sample_sampler",
    "clip_skip": "advanced.clip_skip",
    "gradient_checkpointing": "advanced.gradient_checkpointing",
    "noise_offset": "advanced.noise_offset",
    "min_snr_gamma": "advanced.min_snr_gamma",
    "cache_text_encoder_outputs": "advanced.cache_text_encoder_outputs",
    "max_token_length": "advanced.max_token_length",
}

# keys handled by a function below
_SPECIAL = {"LoRA_type", "sdxl", "v2", "v_parameterization", "max_resolution", "optimizer", "optimizer_args",
            "lr_scheduler", "sample_prompts", "max_train_epochs", "use_dora", "dora_wd", "xformers", "sdpa",
            "text_encoder_lr"}

_LORA_TYPES = {
    "standard": "lora", "lora": "lora", "kohya locon": "locon", "locon": "locon", "lycoris/locon": "locon",
    "lycoris/loha": "loha", "loha": "loha", "lycoris/lokr": "lokr", "lokr": "lokr",
}
_OPTIMIZERS = {
    "adamw": "AdamW", "adamw8bit": "AdamW8bit", "pagedadamw8bit": "AdamW8bit", "lion": "Lion",
    "lion8bit": "Lion", "pagedlion8bit": "Lion", "adafactor": "Adafactor", "sgdnesterov": "SGDNesterov",
    "sgdnesterov8bit": "SGDNesterov", "prodigy": "Prodigy", "dadaptadam": "DAdaptAdam",
    "dadaptation": "DAdaptAdam", "dadaptadamw": "DAdaptAdam",
}
_SCHEDULERS = {"constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"}
# values the GUI writes for "not set"
_EMPTY = ("", None)


@dataclass
class KohyaImport:
    config: TrainingConfig
    ignored: dict[str, Any] = field(default_factory=dict)  # GUI key → value we did not use
    notes: list[str] = field(default_factory=list)  # values we changed on the way in


def _number(value: Any) -> Any:
    """Old GUI files store numbers as strings ("1e-4", "10")."""
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                return float(text)
            except ValueError:
                return value
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@contextlib.contextmanager
def _about(gui: dict[str, Any], key: str) -> Iterator[None]:
    """Turn a malformed value of one GUI key into a one-line ``PresetError`` naming that key."""
    try:
        yield
    except PresetError:
        raise
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:
        raise PresetError(f"kohya key '{key}' = {_shown(gui.get(key))}: {exc}") from exc


def _resolution(value: Any) -> tuple[int, int]:
    """``"512,768"`` or ``"512"`` → (width, height)."""
    parts = [p.strip() for p in str(value).split(",")]
    if len(parts) > 2 or not all(p.isdigit() for p in parts):
        raise ValueError("expected WIDTH,HEIGHT such as 512,512")
    width = int(parts[0])
    return width, int(parts[1]) if len(parts) == 2 else width


def parse_optimizer_args(text: str) -> dict[str, Any]:
    """``weight_decay=0.01 betas=0.9,0.99`` → ``{"weight_decay": 0.01, "betas": [0.9, 0.99]}``."""
    args: dict[str, Any] = {}
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"cannot split into key=value arguments ({exc}); check the quotes") from exc
    for token in tokens:
        key, sep, raw = token.partition("=")
        if not sep:
            raise ValueError(f"optimizer argument '{token}' is not key=value")
        parts = [_number(p) for p in raw.split(",")] if "," in raw else [_number(raw)]
        value = parts if len(parts) > 1 else parts[0]
        if isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        args[key] = value
    return args


def _set(out: dict[str, dict[str, Any]], path: str, value: Any) -> None:
    section, name = path.split(".", 1)
    out.setdefault(section, {})[name] = value


def _apply_special(gui: dict[str, Any], out: dict[str, dict[str, Any]], result: KohyaImport) -> None:
    if gui.get("sdxl"):
        _set(out, "model.model_family", "sdxl")
    elif gui.get("v2"):
        _set(out, "model.model_family", "sd2-v" if gui.get("v_parameterization") else "sd2")
    lora_type = str(gui.get("LoRA_type", "Standard")).strip().lower()
    if lora_type in _LORA_TYPES:
        _set(out, "network.network_type", _LORA_TYPES[lora_type])
    else:
        result.ignored["LoRA_type"] = gui["LoRA_type"]
        result.notes.append(f"LoRA_type {_shown(gui['LoRA_type'])} is not supported; using plain LoRA")
    if gui.get("use_dora") or gui.get("dora_wd"):
        _set(out, "network.use_dora", True)
    if gui.get("max_resolution") not in _EMPTY:
        with _about(gui, "max_resolution"):
            w, h = _resolution(gui["max_resolution"])
        _set(out, "dataset.resolution", w)
        if h != w:
            result.notes.append(f"max_resolution {gui['max_resolution']} is not square; using {w} (the width)")
    if gui.get("optimizer") not in _EMPTY:
        name = _OPTIMIZERS.get(str(gui["optimizer"]).lower())
        if name is None:
            result.ignored["optimizer"] = gui["optimizer"]
            result.notes.append(f"optimizer {_shown(gui['optimizer'])} is not supported; using AdamW")
        else:
            _set(out, "optimizer.optimizer_type", name)
            if name.lower() != str(gui["optimizer"]).lower():
                result.notes.append(f"optimizer '{gui['optimizer']}' imported as {name}")
    if gui.get("optimizer_args") not in _EMPTY:
        with _about(gui, "optimizer_args"):
            _set(out, "optimizer.optimizer_args", parse_optimizer_args(str(gui["optimizer_args"])))
    if gui.get("lr_scheduler") not in _EMPTY:
        if str(gui["lr_scheduler"]) in _SCHEDULERS:
            _set(out, "schedule.lr_scheduler", str(gui["lr_scheduler"]))
        else:
            result.ignored["lr_scheduler"] = gui["lr_scheduler"]
            result.notes.append(f"lr_scheduler {_shown(gui['lr_scheduler'])} is not supported; using cosine")
    if gui.get("max_train_epochs") not in _EMPTY and _number(gui["max_train_epochs"]) not in (0, ""):
        # An explicit max_train_epochs overrides "epoch" in sd-scripts.
        _set(out, "schedule.max_train_epochs", _number(gui["max_train_epochs"]))
    if gui.get("text_encoder_lr") not in _EMPTY:
        _set(out, "optimizer.text_encoder_lr", _number(gui["text_encoder_lr"]))
    prompts = gui.get("sample_prompts")
    if prompts not in _EMPTY:
        lines = [p.strip() for p in str(prompts).splitlines() if p.strip() and not p.startswith("#")]
        _set(out, "sampling.sample_prompts", lines)
    for key in ("xformers", "sdpa"):
        if key in gui and gui[key] not in _EMPTY:
            on = gui[key] not in (False, "none", "None", "false")
            if key == "sdpa" or (key == "xformers" and on):
                _set(out, "advanced.sdpa", True)


def _unset(value: Any) -> bool:
    """The GUI writes 0 or "" for optional numbers it leaves unset."""
    return value in _EMPTY or (value == 0 and not isinstance(value, bool))


_OPTIONAL_NUMBERS = {"unet_lr", "max_train_steps", "save_last_n_epochs", "conv_dim", "conv_alpha",
                     "scale_weight_norms", "min_snr_gamma"}


def import_kohya_dict(gui: dict[str, Any]) -> KohyaImport:
    out: dict[str, dict[str, Any]] = {}
    result = KohyaImport(config=TrainingConfig())
    for key, value in gui.items():
        if key in _SPECIAL:
            continue
        if key not in _DIRECT:
            result.ignored[key] = value
            continue
        if key in _OPTIONAL_NUMBERS and _unset(_number(value)):
            continue
        if value in _EMPTY:
            continue
        _set(out, _DIRECT[key], _number(value))
    _apply_special(gui, out, result)
    misuse = bool_misuse(out)
    if misuse is not None:
        path = ".".join(misuse[0][:2])
        gui_key = next((k for k, v in _DIRECT.items() if v == path), path)
        raise PresetError(f"kohya key '{gui_key}' = {misuse[1]!r}: give a number, not true/false")
    try:
        result.config = TrainingConfig.model_validate(out)
    except ValidationError as exc:
        err = exc.errors()[0]
        path = ".".join(str(p) for p in err["loc"][:2])
        gui_key = next((k for k, v in _DIRECT.items() if v == path), path)
        raise PresetError(f"kohya key '{gui_key}' = {_shown(err.get('input'))}: {err['msg']}") from exc
    return result


def import_kohya_json(path: str | Path) -> KohyaImport:
    path = Path(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise PresetError(f"{path}: not a file (a folder?); give the kohya_ss .json config file")
        if info.st_size > MAX_PRESET_BYTES:
            raise PresetError(f"{path}: {info.st_size:,} bytes is far too large for a kohya_ss config")
        gui = json.loads(path.read_text(encoding="utf-8"))
    except PresetError:
        raise
    except FileNotFoundError as exc:
        raise PresetError(f"{path}: no such file") from exc
    except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, absurd nesting
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise PresetError(f"{path}: not a kohya_ss JSON config ({reason}); export it again from the GUI") from exc
    except OSError as exc:
        raise PresetError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if not isinstance(gui, dict):
        raise PresetError(f"{path}: a kohya_ss config is a JSON object of settings")
    try:
        return import_kohya_dict(gui)
    except PresetError as exc:
        raise PresetError(f"{path}: {exc}") from exc
