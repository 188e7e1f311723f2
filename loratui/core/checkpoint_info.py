"""What a base-model checkpoint is, read from the safetensors header alone (no weights, no torch).

A ``.safetensors`` file starts with an 8-byte little-endian header length and a JSON header that names every
tensor with its dtype, shape and byte range. That is enough to tell the family (SD1 / SD2 / SDXL), whether
the file is a LoRA, an inpainting model or a truncated download, and how big the weights are. The key names
are those of the original (CompVis / Stability) single-file layout that model sites distribute; diffusers'
``infer_diffusers_model_type`` and sd-scripts' loaders key on the same tensors.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# Tensors whose presence (and shape) identify the architecture.
UNET_INPUT = "model.diffusion_model.input_blocks.0.0.weight"
SD1_CLIP = "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"
SD1_CLIP_FLAT = "cond_stage_model.transformer.embeddings.position_embedding.weight"
SD2_OPENCLIP = "cond_stage_model.model.token_embedding.weight"
SDXL_OPENCLIP = "conditioner.embedders.1.model.positional_embedding"
SDXL_REFINER_OPENCLIP = "conditioner.embedders.0.model.positional_embedding"
SDXL_LABEL_EMB = "model.diffusion_model.label_emb.0.0.weight"
# SD2's UNet cross-attends to 1024-wide OpenCLIP-H states (SD1: 768 CLIP-L); diffusers checks this tensor.
SD2_CROSS_ATTN = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"
V_PRED_MARKER = "v_pred"  # an empty tensor some v-prediction fine-tunes carry (read by ComfyUI)

FAMILY_NAMES = {"sd1": "SD1.x", "sd2": "SD2.x", "sdxl": "SDXL"}
HEADER_LIMIT = 100 * 1024 * 1024  # real headers are a few hundred KB; anything larger is not a safetensors file
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
               "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


class CheckpointError(ValueError):
    """The file cannot be read as a checkpoint at all; the message is one line with the fix."""


@dataclass
class CheckpointInfo:
    path: Path
    size_bytes: int
    format: str  # "safetensors", "pickle" or "diffusers"
    family: str | None = None  # "sd1", "sd2", "sdxl"; None when unknown
    prediction: str | None = None  # "epsilon", "v_prediction"; None when the file does not say
    dtype: str | None = None  # the UNet's storage dtype, e.g. "F16"
    parameters: int = 0
    parts: list[str] = field(default_factory=list)  # "unet", "vae", "text encoder", "text encoder 2"
    problem: str | None = None  # why it cannot be trained on (one line with the fix), or None

    @property
    def family_name(self) -> str:
        return FAMILY_NAMES.get(self.family or "", "unknown")

    @property
    def config_family(self) -> str | None:
        """The ``model.model_family`` value that fits this file (None when the file does not say)."""
        if self.family == "sd2":
            return "sd2-v" if self.prediction == "v_prediction" else "sd2" if self.prediction else None
        return self.family


def read_safetensors_header(path: Path) -> tuple[dict[str, dict], dict[str, str]]:
    """Tensor entries and ``__metadata__`` of a safetensors file; CheckpointError when it is not one."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: file is empty or truncated ({size} bytes); download it again")
        (length,) = struct.unpack("<Q", head)
        if length > HEADER_LIMIT:
            raise CheckpointError(f"{path}: not a safetensors file (bad header); check the file or download it again")
        raw = fh.read(length)
    if len(raw) < length:
        raise CheckpointError(f"{path}: file is truncated (header incomplete, {size} bytes); download it again")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not a safetensors file (header is not JSON); download it again") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (bad header); download it again")
    metadata = header.pop("__metadata__", None) or {}
    data_end = max((int(t["data_offsets"][1]) for t in header.values()), default=0)
    if 8 + length + data_end > size:
        missing = 8 + length + data_end - size
        raise CheckpointError(f"{path}: file is truncated ({_gib(missing)} missing of {_gib(8 + length + data_end)});"
                              " download it again")
    return header, metadata


def _gib(n: int) -> str:
    return f"{n / 1024**3:.2f} GiB" if n >= 1024**3 / 10 else f"{n / 1024**2:.1f} MiB"


def describe_checkpoint(path: str | Path) -> CheckpointInfo:
    """Family, prediction type, dtype and size of a base model; raises CheckpointError for unreadable files."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"{path}: file not found; check model.pretrained_model_name_or_path")
    if path.is_dir():
        return _describe_folder(path)
    size = path.stat().st_size
    if path.suffix.lower() in PICKLE_SUFFIXES:
        # Reading a pickle's keys means unpickling it; the trainer does that weights-only when allowed.
        return CheckpointInfo(path, size, "pickle")
    if path.suffix.lower() != ".safetensors":
        raise CheckpointError(f"{path}: not a .safetensors or .ckpt checkpoint; give the model file itself")
    header, metadata = read_safetensors_header(path)
    info = CheckpointInfo(path, size, "safetensors")
    _classify(info, header, metadata)
    return info


def _describe_folder(path: Path) -> CheckpointInfo:
    index = path / "model_index.json"
    if not index.is_file():
        raise CheckpointError(f"{path}: a folder but not a diffusers model (no model_index.json)")
    try:
        classes = json.loads(index.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}/model_index.json: cannot be read ({exc})") from exc
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    info = CheckpointInfo(path, size, "diffusers", parts=[p for p in ("unet", "vae", "text_encoder",
                                                                    "text_encoder_2") if p in classes])
    unet = _read_json(path / "unet" / "config.json")
    width = unet.get("cross_attention_dim")
    # the text encoder's width tells the family: CLIP-L 768 (SD1), OpenCLIP-H 1024 (SD2), both concatenated 2048
    info.family = "sdxl" if "text_encoder_2" in classes else {768: "sd1", 1024: "sd2", 2048: "sdxl"}.get(width)
    said = _read_json(path / "scheduler" / "scheduler_config.json").get("prediction_type")
    info.prediction = said if said in ("epsilon", "v_prediction") else None
    if unet.get("in_channels", 4) != 4:
        info.problem = (f"this is a {unet['in_channels']}-channel (inpainting/instruct) model; LoRA training needs "
                        "a standard 4-channel text-to-image model")
    return info


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _classify(info: CheckpointInfo, header: dict[str, dict], metadata: dict[str, str]) -> None:
    keys = header.keys()
    info.parameters = sum(_numel(t["shape"]) for t in header.values())
    unet_dtypes = Counter(t["dtype"] for k, t in header.items() if k.startswith("model.diffusion_model."))
    all_dtypes = Counter(t["dtype"] for t in header.values())
    info.dtype = (unet_dtypes or all_dtypes).most_common(1)[0][0] if header else None
    if any(k.startswith(("lora_unet_", "lora_te", "lycoris_")) or ".lora_down." in k or ".lora_A." in k
           for k in keys):
        info.problem = ("this is a LoRA file, not a base model; set it as network.network_weights and give a full "
                        "checkpoint as model.pretrained_model_name_or_path")
        return
    if UNET_INPUT not in header:
        info.problem = ("no Stable Diffusion UNet in this file (no model.diffusion_model.* tensors); give a full "
                        "SD1.x, SD2.x or SDXL checkpoint")
        return
    info.parts = _parts(keys)
    info.family = _family(header)
    info.prediction = _prediction(info.family, header, metadata)
    in_channels = header[UNET_INPUT]["shape"][1]
    if in_channels != 4:
        kind = "an inpainting" if in_channels == 9 else f"a {in_channels}-channel (instruct/depth)"
        info.problem = (f"this is {kind} {info.family_name} model; LoRA training needs a standard 4-channel "
                        "text-to-image checkpoint of the same family")
    elif info.family is None:
        refiner = SDXL_REFINER_OPENCLIP in header
        info.problem = ("this is an SDXL refiner, which LoRA training does not support; use an SDXL base model"
                        if refiner else "unknown architecture (not SD1.x, SD2.x or SDXL); give one of those")
    elif "text encoder" not in info.parts or "unet" not in info.parts:
        info.problem = "this checkpoint lacks the text encoder; give a full checkpoint (UNet, VAE and text encoder)"


def _parts(keys) -> list[str]:
    parts = []
    if any(k.startswith("model.diffusion_model.") for k in keys):
        parts.append("unet")
    if any(k.startswith("first_stage_model.") for k in keys):
        parts.append("vae")
    if any(k.startswith(("cond_stage_model.", "conditioner.embedders.0.")) for k in keys):
        parts.append("text encoder")
    if any(k.startswith("conditioner.embedders.1.") for k in keys):
        parts.append("text encoder 2")
    return parts


def _family(header: dict[str, dict]) -> str | None:
    if SDXL_OPENCLIP in header or (SDXL_LABEL_EMB in header and SDXL_REFINER_OPENCLIP not in header):
        return "sdxl"
    if SD2_OPENCLIP in header or (SD2_CROSS_ATTN in header and header[SD2_CROSS_ATTN]["shape"][-1] == 1024):
        return "sd2"
    if SDXL_REFINER_OPENCLIP in header:
        return None
    if SD1_CLIP in header or SD1_CLIP_FLAT in header or SD2_CROSS_ATTN in header:
        return "sd1"
    return None


def _prediction(family: str | None, header: dict[str, dict], metadata: dict[str, str]) -> str | None:
    said = (metadata.get("modelspec.prediction_type") or "").lower()
    if V_PRED_MARKER in header or said in ("v", "v_prediction"):
        return "v_prediction"
    if said in ("epsilon", "eps"):
        return "epsilon"
    # SD2 768-v and SD2 512-base have the same tensors: only the file's own marker can tell them apart.
    return None if family == "sd2" else "epsilon"


def _numel(shape: list[int]) -> int:
    n = 1
    for dim in shape:
        n *= int(dim)
    return n


def family_mismatch(info: CheckpointInfo, configured: str) -> str | None:
    """One line telling how to fix ``model.model_family`` when it disagrees with the file, else None."""
    if info.family is None:
        return None
    if configured.split("-")[0] != info.family:
        fix = info.config_family or "sd2 (or sd2-v for a 768 v-prediction model)"
        return f"this is an {info.family_name} checkpoint; set model.model_family: {fix}"
    if info.family == "sd2" and info.config_family and info.config_family != configured:
        kind = "v-prediction" if info.prediction == "v_prediction" else "epsilon-prediction"
        return f"this is a {kind} SD2.x checkpoint; set model.model_family: {info.config_family}"
    return None


def loading_problem(info: CheckpointInfo, configured: str) -> str | None:
    """The first reason this file cannot be trained with ``model_family: configured`` (one line), or None."""
    return info.problem or family_mismatch(info, configured)


def describe_lines(info: CheckpointInfo, configured: str | None = None) -> list[str]:
    """Human-readable summary for ``loratui check-model`` and the wizard."""
    prediction = {"epsilon": "epsilon", "v_prediction": "v-prediction"}.get(
        info.prediction or "", "not stated in the file (SD2 512-base: epsilon, 768-v: v-prediction)")
    lines = [
        f"file:        {info.path}",
        f"format:      {info.format}",
        f"size:        {_gib(info.size_bytes)}",
    ]
    if info.format == "safetensors":
        lines += [
            f"family:      {info.family_name}" + (f" (model.model_family: {info.config_family})"
                                                  if info.config_family else ""),
            f"prediction:  {prediction}",
            f"dtype:       {info.dtype or 'unknown'}",
            f"parameters:  {info.parameters / 1e6:,.0f} M",
            f"contains:    {', '.join(info.parts) or 'no model parts'}",
        ]
    elif info.format == "pickle":
        lines.append("family:      not read from pickle files (set model.model_family yourself; needs allow_pickle)")
    if info.problem is None and info.family:
        encoders = {"sd1": "the text encoder (CLIP ViT-L)", "sd2": "the text encoder (OpenCLIP ViT-H)",
                    "sdxl": "both text encoders (CLIP ViT-L and OpenCLIP ViT-bigG)"}[info.family]
        lines.append(f"trains:      a LoRA on the UNet and {encoders}; the VAE stays frozen")
    return lines


# Loading holds the file's tensors once (the models take them over), plus the Python and torch runtime:
# tests/benchmarks/bench_model_loading.py measured 2.44 GiB for a 1.99 GiB SD1.5 file, 0.32 GiB of it imports.
LOAD_OVERHEAD_BYTES = 1024**3


def ram_needed(info: CheckpointInfo) -> int:
    """Bytes of free RAM that loading this checkpoint takes (one copy of the weights plus the runtime)."""
    return info.size_bytes + LOAD_OVERHEAD_BYTES


def ram_problem(info: CheckpointInfo, available: int | None) -> str | None:
    """One line when ``available`` bytes of RAM cannot hold the model while it loads, else None."""
    need = ram_needed(info)
    if available is None or available >= need:
        return None
    return (f"not enough free RAM to load it (needs about {_gib(need)}, {_gib(available)} available); close other "
            "programs or use a machine with more memory")
