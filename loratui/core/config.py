"""The training configuration: one pydantic model, the single source of truth.

Field names follow sd-scripts' command-line flags so that people who know kohya recognise them. Defaults are
kohya's where they are sane; where we deviate, the field's comment says why. Every field has a one-line help
text (its ``description``) that the parameter form shows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ModelFamily = Literal["sd1", "sd2", "sd2-v", "sdxl"]
NetworkType = Literal["lora", "locon", "loha", "lokr"]
OptimizerType = Literal["AdamW", "AdamW8bit", "Lion", "Adafactor", "SGDNesterov", "Prodigy", "DAdaptAdam"]
SchedulerType = Literal[
    "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"
]
MixedPrecision = Literal["no", "fp16", "bf16"]
SavePrecision = Literal["float", "fp16", "bf16"]
Sampler = Literal["ddim", "euler", "euler_a", "dpmsolver++", "pndm", "lms"]

FAMILY_RESOLUTION = {"sd1": 512, "sd2": 512, "sd2-v": 768, "sdxl": 1024}
EIGHT_BIT_OPTIMIZERS = {"AdamW8bit"}
ADAPTIVE_OPTIMIZERS = {"Prodigy", "DAdaptAdam"}


class Section(BaseModel):
    """A group of settings. Unknown keys are errors: a typo must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(Section):
    pretrained_model_name_or_path: str = Field(
        "", description="Base model: a diffusers folder, a .safetensors checkpoint, or a hub id."
    )
    model_family: ModelFamily = Field(
        "sd1", description="Architecture of the base model: sd1 (1.x), sd2, sd2-v (768 v-prediction) or sdxl."
    )
    vae: str | None = Field(None, description="Optional VAE to use instead of the base model's own.")
    allow_pickle: bool = Field(
        False, description="Allow .ckpt/.pt pickle checkpoints (loaded with weights_only); off for safety."
    )

    @property
    def v_parameterization(self) -> bool:
        return self.model_family == "sd2-v"

    @property
    def is_sdxl(self) -> bool:
        return self.model_family == "sdxl"


class DatasetSection(Section):
    train_data_dir: str = Field(
        "", description="Folder holding <repeats>_<name> subfolders of images and captions."
    )
    reg_data_dir: str | None = Field(
        None, description="Optional regularisation folder (same layout); doubles the steps per epoch."
    )
    repeats: dict[str, Annotated[int, Field(ge=1, le=10_000)]] = Field(
        default_factory=dict,
        description="Override repeats per subfolder (folder name: repeats) without renaming folders.",
    )
    caption_extension: str = Field(".txt", description="Extension of caption files next to each image.")
    resolution: int = Field(512, ge=64, le=4096, description="Training resolution in pixels (square side).")
    enable_bucket: bool = Field(True, description="Group images by aspect ratio instead of square-cropping.")
    min_bucket_reso: int = Field(256, ge=64, le=8192, description="Smallest bucket side in pixels.")
    max_bucket_reso: int = Field(1024, ge=64, le=8192, description="Largest bucket side in pixels.")
    bucket_reso_steps: int = Field(
        64, ge=8, le=1024, description="Bucket sides are multiples of this (64; 32 for SDXL)."
    )
    bucket_no_upscale: bool = Field(False, description="Never enlarge small images to fill a bucket.")
    shuffle_caption: bool = Field(False, description="Shuffle comma-separated tags each time an image is used.")
    keep_tokens: int = Field(0, ge=0, le=255, description="Leading tags kept in place when shuffling (activation tag).")
    keep_tokens_separator: str = Field("", description="Tags before it stay first, after a second one stay last "
                                                       "when shuffling (sd-scripts' '|||'); '' for off.")
    caption_dropout_rate: float = Field(0.0, ge=0, le=1, description="Chance to train an image with no caption.")
    caption_dropout_every_n_epochs: int = Field(
        0, ge=0, le=100_000, description="Drop all captions every N epochs (0: off)."
    )
    caption_tag_dropout_rate: float = Field(0.0, ge=0, le=1, description="Chance to drop each tag (not kept ones).")
    flip_aug: bool = Field(False, description="Randomly mirror images; avoid for asymmetric subjects or text.")
    prior_loss_weight: float = Field(1.0, ge=0, le=1000, description="Loss weight of regularisation images.")
    cache_latents: bool = Field(True, description="Encode images once with the VAE; much faster, no augments.")
    cache_latents_to_disk: bool = Field(False, description="Keep cached latents on disk, reused across runs.")
    max_data_loader_n_workers: int = Field(0, ge=0, le=64, description="Data-loader worker processes (0: main one).")


class NetworkSection(Section):
    network_type: NetworkType = Field(
        "lora", description="lora (attention only), locon (+conv layers), loha (Hadamard) or lokr (Kronecker)."
    )
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA): often better, ~20% slower.")
    # sd-scripts defaults to dim 4 / alpha 1; guides use 16-128. 16/8 is a sane start for characters.
    network_dim: int = Field(16, ge=1, le=1024, description="Rank: capacity and file size of the LoRA.")
    network_alpha: float = Field(
        8.0, gt=0, le=65536, description="Scales the update by alpha/rank; half the rank is a common choice."
    )
    conv_dim: int | None = Field(None, ge=1, le=1024, description="Rank of conv layers (LoCon/LoHa/LoKr only).")
    conv_alpha: float | None = Field(None, gt=0, le=65536, description="Alpha of conv layers (LoCon/LoHa/LoKr only).")
    network_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA's hidden activations.")
    rank_dropout: float = Field(0.0, ge=0, lt=1, description="Chance to drop each rank during a step.")
    module_dropout: float = Field(0.0, ge=0, lt=1, description="Chance to skip a whole LoRA module for a step.")
    network_train_unet_only: bool = Field(False, description="Train only the UNet; leave the text encoder alone.")
    network_weights: str | None = Field(None, description="Start from an existing LoRA file (resume or refine).")
    dim_from_weights: bool = Field(False, description="Take rank and alpha from network_weights.")
    scale_weight_norms: float | None = Field(
        None, gt=0, le=1e6, description="Cap each module's weight norm (1.0 typical); tames overcooking."
    )
    stop_text_encoder_training_pct: int = Field(
        0, ge=0, le=100, description="Stop training the text encoder after this % of steps (0: never)."
    )


class OptimizerSection(Section):
    # sd-scripts defaults to AdamW; AdamW8bit is the GUI default but needs CUDA to save memory.
    optimizer_type: OptimizerType = Field("AdamW", description="Optimizer; AdamW8bit saves memory on CUDA.")
    optimizer_args: dict[str, Any] = Field(
        default_factory=dict, description="Extra optimizer arguments, e.g. weight_decay: 0.01, betas: [0.9, 0.99]."
    )
    learning_rate: float = Field(1e-4, gt=0, description="Base learning rate (1e-4 typical; 1.0 for Prodigy).")
    unet_lr: float | None = Field(None, gt=0, description="UNet learning rate; the base rate when empty.")
    text_encoder_lr: float | None = Field(
        None, ge=0, description="Text-encoder learning rate; ~1/2-1/10 of the UNet's (5e-5 typical)."
    )
    max_grad_norm: float = Field(1.0, ge=0, le=1e6, description="Clip gradients to this norm (0: no clipping).")
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024, description="Batches summed per optimizer step.")


class ScheduleSection(Section):
    max_train_epochs: int = Field(10, ge=1, le=100_000, description="Passes over the dataset (with repeats).")
    max_train_steps: int | None = Field(
        None, ge=1, le=100_000_000, description="Stop after this many steps instead of epochs."
    )
    train_batch_size: int = Field(1, ge=1, le=1024, description="Images per step; raise it as far as VRAM allows.")
    # sd-scripts defaults to constant; the kohya GUI and the guides use cosine.
    lr_scheduler: SchedulerType = Field("cosine", description="How the learning rate changes over the run.")
    lr_scheduler_num_cycles: int = Field(1, ge=1, le=10_000, description="Restarts for cosine_with_restarts.")
    lr_scheduler_power: float = Field(1.0, gt=0, le=1000, description="Exponent for the polynomial scheduler.")
    lr_warmup_pct: float = Field(0.0, ge=0, le=100, description="Warm-up, as a % of total steps (GUI style).")
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Random seed; same seed and data give the same run.")


class PrecisionSection(Section):
    # kohya defaults to fp16; bf16 avoids fp16's overflow NaNs and every rented Ampere+ GPU supports it.
    mixed_precision: MixedPrecision = Field("bf16", description="Compute precision: bf16 (Ampere+), fp16, or no.")
    save_precision: SavePrecision = Field("fp16", description="Precision of the saved LoRA file.")
    full_fp16: bool = Field(False, description="Keep LoRA weights in fp16 too (less VRAM, less stable).")
    full_bf16: bool = Field(False, description="Keep LoRA weights in bf16 too (less VRAM).")


class SavingSection(Section):
    output_dir: str = Field("", description="Where LoRA files go; empty: the run directory's output folder.")
    output_name: str = Field(
        "lora", min_length=1, max_length=200, description="File name of the LoRA, without extension."
    )
    save_every_n_epochs: int = Field(
        1, ge=0, le=100_000, description="Save a checkpoint every N epochs (0: only at the end)."
    )
    save_last_n_epochs: int | None = Field(
        None, ge=1, le=100_000, description="Keep only the newest N epoch checkpoints."
    )
    save_state: bool = Field(True, description="Save optimizer state with checkpoints so a run can resume.")
    training_comment: str = Field("", description="Free text stored in the file's metadata (trigger words...).")
    logging_dir: str | None = Field(None, description="Also write TensorBoard-style logs here (optional).")

    @field_validator("output_name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if "/" in value or "\\" in value or value.endswith(".safetensors"):
            raise ValueError("give a bare name such as 'mychar', without folders or extension")
        return value


class SamplingSection(Section):
    sample_every_n_epochs: int = Field(0, ge=0, le=100_000, description="Render sample images every N epochs (0: off).")
    sample_prompts: list[str] = Field(
        default_factory=list,
        description="Prompts in kohya syntax: text --n negative --w 512 --h 512 --d seed --l cfg --s steps.",
    )
    sample_sampler: Sampler = Field("euler_a", description="Sampler used for sample images.")


class AdvancedSection(Section):
    clip_skip: int = Field(1, ge=1, le=12, description="Use the text encoder's Nth-last layer; 2 for anime models.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations: far less VRAM, ~20% slower.")
    noise_offset: float = Field(0.0, ge=0, le=1, description="Adds brightness range (0.05-0.1); 0: off.")
    min_snr_gamma: float | None = Field(
        None, gt=0, le=1000, description="Min-SNR loss weighting (5 typical); empty: off."
    )
    cache_text_encoder_outputs: bool = Field(
        False, description="Encode captions once (text encoder frozen, no shuffle or dropout)."
    )
    sdpa: bool = Field(True, description="Use PyTorch scaled-dot-product attention (fast, memory-efficient).")
    max_token_length: Literal[75, 150, 225] = Field(75, description="Caption token limit: 75, 150 or 225.")
    compile: bool = Field(False, description="torch.compile the UNet (CUDA): faster steps after a slow start.")
    channels_last: bool = Field(False, description="channels_last UNet memory layout (CUDA); measure with bench.")


class TrainingConfig(BaseModel):
    """Every setting of a training run, grouped as the parameter form shows them."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    model: ModelSection = Field(default_factory=ModelSection)
    dataset: DatasetSection = Field(default_factory=DatasetSection)
    network: NetworkSection = Field(default_factory=NetworkSection)
    optimizer: OptimizerSection = Field(default_factory=OptimizerSection)
    schedule: ScheduleSection = Field(default_factory=ScheduleSection)
    precision: PrecisionSection = Field(default_factory=PrecisionSection)
    saving: SavingSection = Field(default_factory=SavingSection)
    sampling: SamplingSection = Field(default_factory=SamplingSection)
    advanced: AdvancedSection = Field(default_factory=AdvancedSection)

    @property
    def unet_lr(self) -> float:
        return self.optimizer.unet_lr or self.optimizer.learning_rate

    @property
    def text_encoder_lr(self) -> float:
        lr = self.optimizer.text_encoder_lr
        return self.optimizer.learning_rate if lr is None else lr

    @property
    def trains_text_encoder(self) -> bool:
        return not self.network.network_train_unet_only and self.text_encoder_lr > 0

    def get(self, path: str) -> Any:
        """The value at a dotted path such as ``network.network_dim``."""
        section, name = split_path(path)
        return getattr(getattr(self, section), name)

    def with_value(self, path: str, value: Any) -> TrainingConfig:
        """A validated copy with one field changed; raises ``ValidationError`` on a bad value."""
        data = self.model_dump()
        section, name = split_path(path)
        data[section][name] = value
        return TrainingConfig.model_validate(data)


SECTIONS: tuple[str, ...] = tuple(TrainingConfig.model_fields)


def split_path(path: str) -> tuple[str, str]:
    section, _, name = path.partition(".")
    if section not in SECTIONS or not name:
        raise KeyError(f"unknown setting '{path}'")
    fields = section_model(section).model_fields
    if name not in fields:
        raise KeyError(f"unknown setting '{path}'")
    return section, name


def section_model(section: str) -> type[Section]:
    annotation = TrainingConfig.model_fields[section].annotation
    assert isinstance(annotation, type) and issubclass(annotation, Section)
    return annotation


@dataclass(frozen=True)
class FieldSpec:
    """What a form needs to show one setting."""

    path: str
    help: str
    default: Any
    annotation: Any
    choices: tuple[Any, ...] = ()

    @property
    def section(self) -> str:
        return self.path.split(".", 1)[0]

    @property
    def name(self) -> str:
        return self.path.split(".", 1)[1]


def _choices(annotation: Any) -> tuple[Any, ...]:
    if getattr(annotation, "__origin__", None) is Literal:
        return get_args(annotation)
    return ()


def iter_fields() -> Iterator[FieldSpec]:
    """Every setting, in form order, with its help text, default and choices."""
    for section in SECTIONS:
        for name, info in section_model(section).model_fields.items():
            default = info.get_default(call_default_factory=True)
            yield FieldSpec(f"{section}.{name}", info.description or "", default, info.annotation,
                            _choices(info.annotation))


def field_spec(path: str) -> FieldSpec:
    for spec in iter_fields():
        if spec.path == path:
            return spec
    raise KeyError(f"unknown setting '{path}'")


# --- validation messages a person can act on ---------------------------------------------------------------

Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class ConfigIssue:
    """One problem with a configuration: where, what value, why, and how to fix it."""

    severity: Severity
    path: str
    value: Any
    why: str
    fix: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.path} = {self.value!r}: {self.why}; {self.fix}"


def issues_from_validation_error(exc: ValidationError) -> list[ConfigIssue]:
    """Turn pydantic's errors into ConfigIssues with dotted paths and a fix."""
    issues = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            why, fix = "unknown setting", "remove it or check its spelling"
        elif kind == "literal_error":
            why = "not one of the allowed values"
            fix = f"use {err.get('ctx', {}).get('expected', 'an allowed value')}"
        else:
            why, fix = err["msg"], _fix_for(path)
        issues.append(ConfigIssue("error", path, err.get("input"), why, fix))
    return issues


def _fix_for(path: str) -> str:
    try:
        spec = field_spec(path)
    except KeyError:
        return "see `loratui preset show` for the valid settings"
    return f"default is {spec.default!r} ({spec.help})"


def check_config(cfg: TrainingConfig, cuda_available: bool | None = None) -> list[ConfigIssue]:
    """Cross-field warnings that a valid config can still deserve. ``cuda_available=None`` skips CUDA checks."""
    found: list[ConfigIssue] = []

    def add(severity: Severity, path: str, why: str, fix: str) -> None:
        found.append(ConfigIssue(severity, path, cfg.get(path), why, fix))

    net, opt, sched, data = cfg.network, cfg.optimizer, cfg.schedule, cfg.dataset
    if not cfg.model.pretrained_model_name_or_path:
        add("error", "model.pretrained_model_name_or_path", "no base model is set",
            "give a diffusers folder, a .safetensors checkpoint or a hub id")
    if not data.train_data_dir:
        add("error", "dataset.train_data_dir", "no dataset folder is set",
            "give the folder that holds your <repeats>_<name> image folders")
    if net.network_alpha > net.network_dim and not net.dim_from_weights:
        add("warning", "network.network_alpha", f"alpha is above the rank ({net.network_dim}), which "
            "amplifies updates and overcooks easily", f"use alpha <= {net.network_dim} (half the rank is common)")
    if net.network_type == "lora" and (net.conv_dim or net.conv_alpha):
        add("warning", "network.conv_dim", "conv rank is ignored by plain LoRA",
            "set network_type to locon to train conv layers, or clear conv_dim")
    if net.use_dora and net.network_type in ("loha", "lokr"):
        add("error", "network.use_dora", f"DoRA is trained for lora and locon only, not {net.network_type}",
            "set network_type to lora or locon, or turn DoRA off")
    if net.network_dropout and net.network_type in ("loha", "lokr"):
        add("error", "network.network_dropout", f"{net.network_type} has no plain dropout (LyCORIS does not "
            "implement it either)", "use rank_dropout or module_dropout, or set network_dropout to 0")
    if net.dim_from_weights and not net.network_weights:
        add("error", "network.dim_from_weights", "needs network_weights to read the rank from",
            "set network.network_weights or turn dim_from_weights off")
    if sched.lr_scheduler == "constant" and sched.lr_warmup_pct > 0:
        add("warning", "schedule.lr_warmup_pct", "the constant scheduler ignores warm-up",
            "use constant_with_warmup, or set warm-up to 0")
    if sched.lr_scheduler == "constant_with_warmup" and sched.lr_warmup_pct == 0:
        add("info", "schedule.lr_warmup_pct", "constant_with_warmup with no warm-up is plain constant",
            "set a warm-up % (5-10 is typical)")
    if sched.lr_scheduler != "cosine_with_restarts" and sched.lr_scheduler_num_cycles > 1:
        add("info", "schedule.lr_scheduler_num_cycles", "cycles only apply to cosine_with_restarts",
            "switch the scheduler or set cycles to 1")
    step = 32 if cfg.model.is_sdxl else 64
    if data.resolution % step:
        add("warning", "dataset.resolution", f"not a multiple of {step}",
            f"use {round(data.resolution / step) * step}")
    if data.enable_bucket and data.bucket_reso_steps % (32 if cfg.model.is_sdxl else 64):
        add("warning", "dataset.bucket_reso_steps", "sd-scripts expects bucket steps of 64 (32 for SDXL)",
            "use 64")
    if data.min_bucket_reso > data.max_bucket_reso:
        add("error", "dataset.min_bucket_reso", "larger than max_bucket_reso",
            "swap them or lower min_bucket_reso")
    if data.enable_bucket and data.max_bucket_reso < data.resolution:
        add("warning", "dataset.max_bucket_reso", "below the training resolution",
            f"set it to at least {data.resolution}")
    native = FAMILY_RESOLUTION[cfg.model.model_family]
    if cfg.model.is_sdxl and data.resolution < 768:
        add("warning", "dataset.resolution", "SDXL trained below 768 px gives blurry, broken results",
            "use 1024 (or at least 768)")
    elif not cfg.model.is_sdxl and data.resolution > 2 * native:
        add("warning", "dataset.resolution", f"far above the model's native {native} px",
            f"use {native}-{native + 256} px; larger only costs VRAM")
    if opt.optimizer_type in EIGHT_BIT_OPTIMIZERS and cuda_available is False:
        add("warning", "optimizer.optimizer_type", "8-bit optimizers only save memory on CUDA GPUs",
            "use AdamW on this machine (the trainer falls back to it)")
    if opt.optimizer_type in ADAPTIVE_OPTIMIZERS and opt.learning_rate < 0.1:
        add("warning", "optimizer.learning_rate", f"{opt.optimizer_type} finds its own step size and "
            "expects a learning rate near 1.0", "set learning_rate (and unet/text lrs) to 1.0")
    if opt.optimizer_type not in ADAPTIVE_OPTIMIZERS and cfg.unet_lr > 1e-2:
        add("warning", "optimizer.learning_rate", "very high for a LoRA; it will overcook quickly",
            "use 1e-4 to 5e-4")
    if cfg.advanced.cache_text_encoder_outputs:
        if cfg.trains_text_encoder:
            add("error", "advanced.cache_text_encoder_outputs", "cannot cache text-encoder outputs while "
                "training the text encoder", "set network_train_unet_only or turn caching off")
        if data.shuffle_caption or data.caption_tag_dropout_rate:
            add("warning", "advanced.cache_text_encoder_outputs", "shuffled or tag-dropped captions change at "
                "every step, so they are encoded every step and the text encoders stay in VRAM",
                "turn shuffle_caption and caption_tag_dropout_rate off to cache them")
    if data.keep_tokens and not data.shuffle_caption and not data.caption_tag_dropout_rate:
        add("info", "dataset.keep_tokens", "keep_tokens only matters with shuffle or tag dropout",
            "turn on shuffle_caption, or leave it")
    if data.keep_tokens_separator and not data.shuffle_caption and not data.caption_tag_dropout_rate:
        add("warning", "dataset.keep_tokens_separator", f"without shuffle or tag dropout the separator "
            f"'{data.keep_tokens_separator}' stays in the captions and is trained literally (as in sd-scripts)",
            "turn on shuffle_caption, or remove the separator from the captions")
    if cfg.advanced.clip_skip > 1 and cfg.model.is_sdxl:
        add("warning", "advanced.clip_skip", "SDXL models are not trained with clip skip",
            "set clip_skip to 1")
    if cfg.precision.mixed_precision == "fp16" and cfg.precision.full_bf16:
        add("error", "precision.full_bf16", "full_bf16 needs bf16 mixed precision",
            "set mixed_precision to bf16")
    if cfg.precision.mixed_precision == "bf16" and cfg.precision.full_fp16:
        add("error", "precision.full_fp16", "full_fp16 needs fp16 mixed precision",
            "set mixed_precision to fp16")
    if cfg.sampling.sample_every_n_epochs and not cfg.sampling.sample_prompts:
        add("warning", "sampling.sample_prompts", "sampling is on but there are no prompts",
            "add at least one prompt, or set sample_every_n_epochs to 0")
    return found
