"""The training loop: one legible loop over epochs and bucketed batches, with accelerate for precision,
gradient accumulation and data parallelism. Everything it reports goes out as events (loratui.core.run)."""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from loratui.core.config import TrainingConfig
from loratui.core.placement import COMPONENTS, resident_during_steps, text_encoder_outputs_cached
from loratui.core.vram import what_to_lower
from loratui.train import data as D
from loratui.train import tb_log
from loratui.train.export import (
    build_metadata,
    checkpoint_filename,
    prune_checkpoints,
    save_dtype,
    save_lora,
    unique_output_path,
)
from loratui.train.model_loading import Models, load_models
from loratui.train.networks import attach_network, dims_from_weights
from loratui.train.offload import Offload
from loratui.train.optim import make_optimizer, make_scheduler, warmup_steps
from loratui.train.preflight import check_before_training
from loratui.train.state import load_state, save_state

Emit = Callable[..., None]


class TrainingFailed(RuntimeError):
    """A run that must stop: ``hint`` tells the user what to change."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass
class StopFlag:
    """Set by SIGTERM or a ``stop`` file; the loop checks it after every step."""

    requested: bool = False
    stop_file: Path | None = None

    def is_set(self) -> bool:
        return self.requested or (self.stop_file is not None and self.stop_file.exists())


@dataclass
class Progress:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    losses: deque = field(default_factory=lambda: deque(maxlen=1))


class Trainer:
    def __init__(self, cfg: TrainingConfig, run_dir: Path, emit: Emit, stop: StopFlag | None = None) -> None:
        from accelerate import Accelerator

        self.cfg, self.run_dir, self._emit, self.stop = cfg, run_dir, emit, stop or StopFlag()
        mixed = cfg.precision.mixed_precision
        if not torch.cuda.is_available() and mixed == "fp16":
            mixed = "no"  # fp16 autocast is a CUDA feature; bf16 works on CPU
        # accumulation is counted per epoch in train() (sd-scripts syncs at each epoch's end), not by accelerate
        self.accelerator = Accelerator(mixed_precision=mixed)
        self.mixed = mixed
        self.device = self.accelerator.device
        self.output_dir = Path(cfg.saving.output_dir) if cfg.saving.output_dir else run_dir / "output"
        self.last_saved: Path | None = None
        # where the frozen VAE / text encoders wait while the steps do not use them; None keeps them in place
        self.offload_device: torch.device | None = torch.device("cpu")
        self.tb = tb_log.open_log(cfg, run_dir, self.is_main)  # TensorBoard, fed from the events below

    # --- events ----------------------------------------------------------------------------------------
    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def emit(self, type_: str, **fields) -> None:
        if self.is_main:
            self._emit(type_, **fields)
            self.tb.on_event(type_, fields)

    def warn(self, message: str) -> None:
        self.emit("warning", message=message)

    # --- set-up ----------------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.cfg
        check_before_training(cfg, self.output_dir, self.run_dir)  # before hours of work, not after
        if cfg.precision.mixed_precision != self.mixed:
            self.warn(f"{cfg.precision.mixed_precision} mixed precision needs CUDA; training in fp32 on this machine")
        torch.manual_seed(cfg.schedule.seed)
        # One session id and start time per run, as sd-scripts' train_network.py sets them before its loop.
        self.session_id, self.started_at = random.randint(0, 2**32), time.time()
        self.data = D.load_dataset(cfg)
        for message in self.data.warnings:
            self.warn(message)
        self.world = self.accelerator.num_processes
        per_epoch_batches = D.steps_per_epoch(self.data, cfg.schedule.train_batch_size)
        self.batches_per_process = math.ceil(per_epoch_batches / self.world)
        self.steps_per_epoch = math.ceil(self.batches_per_process / cfg.optimizer.gradient_accumulation_steps)
        self.total_steps = self.steps_per_epoch * cfg.schedule.max_train_epochs
        if cfg.schedule.max_train_steps:
            self.total_steps = min(self.total_steps, cfg.schedule.max_train_steps)
        self.setup_models(load_models(cfg))  # the LR schedule it builds needs total_steps
        self.fill_caches()

    def setup_models(self, models: Models) -> None:
        """Precision, network, optimizer and accelerate around ``models``: all a step needs but the data.
        ``loratui bench`` calls it with models built in memory, so it times this exact set-up."""
        cfg = self.cfg
        self.models = models
        self._prepare_models(self.models)
        self.offload = Offload(self.models, self.device, self.offload_device)
        self.resident, self.offloaded = sorted(COMPONENTS), []  # until place_for_steps parks what steps skip
        dims = None
        if cfg.network.network_weights and cfg.network.dim_from_weights:
            dims = dims_from_weights(Path(cfg.network.network_weights))
        self.network = attach_network(cfg, self.models.unet, self.models.text_encoders, dims)
        if cfg.network.network_weights:
            from loratui.train.resume_weights import load_network_weights

            report = load_network_weights(self.network, Path(cfg.network.network_weights))
            self.warn(f"started from {cfg.network.network_weights} ({report.loaded} tensors loaded)")
            for message in report.warnings:
                self.warn(message)
        self._cast_trainable()
        self.optimizer = make_optimizer(cfg, self.network.param_groups(cfg.unet_lr, cfg.text_encoder_lr), self.warn)
        trained = [self.models.unet] + ([*self.models.text_encoders] if self.network.text_encoders else [])
        prepared = self.accelerator.prepare(*trained, self.optimizer)
        self.optimizer = prepared[-1]
        self.lr_scheduler = make_scheduler(cfg, self.optimizer, self.total_steps)
        self.models.unet = prepared[0]
        if self.network.text_encoders:
            self.models.text_encoders = list(prepared[1:-1])
        if cfg.advanced.compile:
            # compiled after accelerate wraps it so autocast is inside the graph; the first steps are slow
            self.models.unet = torch.compile(self.models.unet)

    def _prepare_models(self, m: Models) -> None:
        weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.mixed, torch.float32)
        self.weight_dtype = weight_dtype
        for model in (m.unet, m.vae, *m.text_encoders):
            model.requires_grad_(False)
            model.to(self.device, dtype=weight_dtype)
        m.vae.to(dtype=torch.float32)  # the VAE overflows in fp16; it only runs for caching and samples
        if self.cfg.advanced.gradient_checkpointing:
            m.unet.enable_gradient_checkpointing()
            m.unet.train()
            for te in m.text_encoders:
                te.gradient_checkpointing_enable()
        if self.device.type == "cuda":
            # TF32 for the fp32 parts (LoRA weights, VAE, loss); bf16/fp16 matmuls are unaffected
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            if self.cfg.advanced.channels_last:
                m.unet.to(memory_format=torch.channels_last)
        if not self.cfg.advanced.sdpa:
            from diffusers.models.attention_processor import AttnProcessor

            m.unet.set_attn_processor(AttnProcessor())

    def _cast_trainable(self) -> None:
        """LoRA weights train in fp32 unless full_fp16/full_bf16 asks otherwise."""
        p = self.cfg.precision
        dtype = torch.float16 if p.full_fp16 else torch.bfloat16 if p.full_bf16 else torch.float32
        for part in self.network.parts:
            for param in part.parameters():
                param.data = param.data.to(dtype)

    def _latent_cache(self) -> D.LatentCache | None:
        if not self.cfg.dataset.cache_latents:
            return None
        data = self.cfg.dataset
        disk = Path(data.train_data_dir) / ".loratui-cache" if data.cache_latents_to_disk else None
        cache = D.LatentCache(self.models.vae, self.device, torch.float32, disk)
        flips = (False, True) if self.cfg.dataset.flip_aug else (False,)
        for item in [*self.data.items, *self.data.reg_items]:
            for flip in flips:
                cache.get(item, flip)
        if disk is not None and cache.hits_on_disk:
            self.warn(f"reused {cache.hits_on_disk} cached latents from {disk}")
        return cache

    def fill_caches(self) -> None:
        """Latents and text-encoder outputs, when cached, then only what the steps use stays on the device.
        While the caches fill the UNet waits off the device (sd-scripts' ``cache_text_encoder_outputs_if_needed``
        does the same): the caching peak is then the encoders' alone, which matters most on small GPUs."""
        self.te_cache: dict[str, tuple] = {}
        caching = resident_during_steps(self.cfg) != COMPONENTS  # something is cached, so it will be parked
        single = self.accelerator.num_processes == 1  # a DDP-wrapped UNet must stay where its reducer put it
        with self.offload.aside("unet") if caching and single else contextlib.nullcontext():
            self.latents = self._latent_cache()
            self.place_for_steps()

    def place_for_steps(self) -> None:
        """After the caches are filled, the frozen parts the steps do not use leave the training device
        (``loratui.core.placement`` names the sd-scripts rules). Text-encoder outputs are cached up front then."""
        resident = resident_during_steps(self.cfg)
        if "text_encoders" not in resident:
            self._cache_all_captions()
        self.resident = sorted(resident)
        self.offloaded = self.offload.park(COMPONENTS - resident)

    def _cache_all_captions(self) -> None:
        """Every caption a step can see: the dataset's, and the empty one when whole captions drop."""
        data = self.cfg.dataset
        captions = {item.caption for item in [*self.data.items, *self.data.reg_items]}
        if data.caption_dropout_rate or data.caption_dropout_every_n_epochs:
            captions.add("")
        ordered = sorted(captions)
        for start in range(0, len(ordered), 16):  # a few at a time: peak memory stays that of a small batch
            self._text(ordered[start:start + 16])

    # --- one step ----------------------------------------------------------------------------------------
    def _latents_for(self, batch: list[D.Item], rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents and SDXL ``time_ids`` (original size, crop top-left, bucket) per item of the batch."""
        flips = [self.cfg.dataset.flip_aug and rng.random() < 0.5 for _ in batch]
        if self.latents is not None:
            cached = [self.latents.get(item, flip) for item, flip in zip(batch, flips, strict=True)]
            latents = self.to_device(torch.stack([latent for latent, _ in cached]))
            sizes = [size for _, size in cached]
        else:
            pixels = torch.stack([D.load_image(i.path, i.bucket, f) for i, f in zip(batch, flips, strict=True)])
            if self.device.type == "cuda":
                pixels = pixels.pin_memory()  # page-locked: the copy below runs asynchronously
            with torch.no_grad():
                pixels = pixels.to(self.device, torch.float32, non_blocking=True)
                dist = self.models.vae.encode(pixels).latent_dist
            latents = dist.sample() * self.models.vae.config.scaling_factor
            sizes = [item.size_condition for item in batch]
        time_ids = torch.tensor([size.time_ids(flip) for size, flip in zip(sizes, flips, strict=True)])
        return latents, time_ids

    def encode_text(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Conditioning as sd-scripts builds it (``SdTextEncodingStrategy`` / ``SdxlTextEncodingStrategy``
        ``encode_tokens``): hidden states and, for SDXL, the pooled embedding of the second encoder."""
        m, length = self.models, self.cfg.advanced.max_token_length
        with self.offload.on_device("text_encoders"):  # parked encoders come back for a caption not yet cached
            if m.is_sdxl:
                return _encode_sdxl(m.tokenizers, m.text_encoders, captions, length, self.device)
            tokenizer, encoder = m.tokenizers[0], m.text_encoders[0]
            return _encode_sd(tokenizer, encoder, captions, length, self.cfg.advanced.clip_skip, self.device), None

    def _text(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not text_encoder_outputs_cached(self.cfg):  # trained encoders, or captions that change every step
            return self.encode_text(captions)
        missing = [c for c in set(captions) if c not in self.te_cache]
        if missing:
            with torch.no_grad():
                states, pooled = self.encode_text(missing)
            for i, caption in enumerate(missing):
                self.te_cache[caption] = (states[i], None if pooled is None else pooled[i])
        states = torch.stack([self.te_cache[c][0] for c in captions])
        pooled = None if self.te_cache[captions[0]][1] is None else torch.stack([self.te_cache[c][1] for c in captions])
        return states, pooled

    def loss_for(self, batch: list[D.Item], gen: torch.Generator, rng: random.Random, epoch: int) -> torch.Tensor:
        cfg, m = self.cfg, self.models
        latents, time_ids = self._latents_for(batch, rng)
        latents = latents.to(self.device, self.weight_dtype)
        noise = torch.randn(latents.shape, generator=gen, device=gen.device).to(latents)
        if cfg.advanced.noise_offset:
            offset = torch.randn((latents.shape[0], latents.shape[1], 1, 1), generator=gen, device=gen.device)
            noise = noise + cfg.advanced.noise_offset * offset.to(latents)
        steps = m.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, steps, (latents.shape[0],), generator=gen, device=gen.device).to(self.device)
        noisy = m.noise_scheduler.add_noise(latents, noise, timesteps)
        captions = [D.process_caption(item.caption, cfg, rng, epoch) for item in batch]
        with torch.set_grad_enabled(bool(self.network.text_encoders) and self.network.train_text_encoder):
            hidden, pooled = self._text(captions)
        extra = {}
        if m.is_sdxl:
            time_ids = self.to_device(time_ids).to(hidden.dtype)
            extra = {"added_cond_kwargs": {"text_embeds": pooled.to(hidden.dtype), "time_ids": time_ids}}
        with self.accelerator.autocast():
            pred = m.unet(noisy, timesteps, hidden.to(self.weight_dtype), **extra).sample
        target = m.noise_scheduler.get_velocity(latents, noise, timesteps) if m.v_prediction else noise
        loss = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        if any(i.is_reg for i in batch):
            weights = torch.tensor([cfg.dataset.prior_loss_weight if i.is_reg else 1.0 for i in batch])
            loss = loss * self.to_device(weights)
        if cfg.advanced.min_snr_gamma:
            loss = loss * self._min_snr_weights(timesteps)
        return loss.mean()

    def _min_snr_weights(self, timesteps: torch.Tensor) -> torch.Tensor:
        scheduler = self.models.noise_scheduler
        scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(self.device)  # once; a per-step copy would sync
        alphas = scheduler.alphas_cumprod[timesteps]
        snr = alphas / (1 - alphas)
        clipped = torch.clamp(snr, max=self.cfg.advanced.min_snr_gamma)
        return clipped / (snr + 1) if self.models.v_prediction else clipped / snr

    # --- the loop --------------------------------------------------------------------------------------
    def train(self, resume_from: Path | None = None) -> Path | None:
        cfg = self.cfg
        p = Progress()
        if resume_from is not None:
            p = load_state(resume_from, self)
        p.losses = deque(p.losses, maxlen=max(1, self.steps_per_epoch))
        self._emit_start(p)
        timer = _Pace()
        stop_te_at = self.total_steps * cfg.network.stop_text_encoder_training_pct / 100
        log_every = 1 if self.device.type == "cpu" else 5
        for epoch in range(p.epoch, cfg.schedule.max_train_epochs):
            batches = D.epoch_batches(self.data, cfg.schedule.train_batch_size, cfg.schedule.seed, epoch)
            mine = batches[self.accelerator.process_index::self.world]
            mine += mine[: self.batches_per_process - len(mine)]  # every process runs the same count
            accumulate = cfg.optimizer.gradient_accumulation_steps
            for index in range(p.batch_in_epoch, len(mine)):
                if p.step >= self.total_steps:
                    break
                micro_batch = (epoch * len(mine) + index) * self.world + self.accelerator.process_index
                gen = self.generator(step_seed(cfg.schedule.seed, micro_batch, "noise"))
                rng = random.Random(step_seed(cfg.schedule.seed, micro_batch, "augment"))
                # sd-scripts (accelerate over its DataLoader) also steps at an epoch's last micro-batch
                sync = (index + 1) % accumulate == 0 or index + 1 == len(mine)
                loss = self.train_step(mine[index], gen, rng, epoch, sync)
                p.batch_in_epoch = index + 1
                if not sync:
                    continue
                p.step += 1
                if cfg.network.scale_weight_norms:
                    self.network.cap_norms(cfg.network.scale_weight_norms)  # no host sync
                if stop_te_at and self.network.train_text_encoder and p.step >= stop_te_at:
                    self.network.set_text_encoder_training(False)
                    self.warn(f"text encoder training stopped at step {p.step} "
                              f"({cfg.network.stop_text_encoder_training_pct}% of steps)")
                if p.step % log_every == 0 or p.step == self.total_steps:
                    value = loss.item()
                    if not math.isfinite(value):
                        raise TrainingFailed(f"overcooked: the loss became {value} at step {p.step}",
                                             "lower the learning rate (halve unet_lr and text_encoder_lr), or use "
                                             "bf16 instead of fp16")
                    p.losses.append(value)
                    timer.tick(p.step)
                    self._emit_step(p, value, timer, epoch)
                if self.stop.is_set():
                    return self._graceful_stop(p, epoch)
            p.epoch, p.batch_in_epoch = epoch + 1, 0
            self.emit("epoch_end", epoch=epoch + 1, step=p.step, avg_loss=_mean(p.losses))
            final = epoch + 1 == cfg.schedule.max_train_epochs or p.step >= self.total_steps
            self._end_of_epoch(p, epoch + 1, final)
            if final:
                break
        if resume_from is not None and self.last_saved is None:  # resumed after a failed final save
            self.save_checkpoint(p, checkpoint_filename(cfg.saving.output_name, None), p.epoch, final=True)
        return self.last_saved

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        return host_to_device(tensor, self.device)

    def generator(self, seed: int) -> torch.Generator:
        """Noise and timesteps are drawn on the training device: no host-to-device copy per step."""
        return torch.Generator(self.device).manual_seed(seed)

    def train_step(self, batch: list[D.Item], gen: torch.Generator, rng: random.Random, epoch: int,
                   sync: bool = True) -> torch.Tensor:
        """Forward and backward for one micro-batch and, when ``sync`` ends an accumulation group, the optimizer
        and LR step. Returns the loss without reading it (a GPU sync). ``loratui bench`` times this method."""
        with self._no_sync_unless(sync):
            loss = self.loss_for(batch, gen, rng, epoch)
            # divided by the full count also for an epoch's short last group, as accelerate does in sd-scripts
            self.accelerator.backward(loss / self.cfg.optimizer.gradient_accumulation_steps)
        if sync:
            self._optimizer_step()
        return loss

    def _optimizer_step(self) -> None:
        if self.cfg.optimizer.max_grad_norm:
            self.accelerator.clip_grad_norm_(self._trainable_params(), self.cfg.optimizer.max_grad_norm)
        self.lr_used = self.current_lrs()
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _trained_models(self) -> list[torch.nn.Module]:
        return [self.models.unet, *self.models.text_encoders] if self.network.text_encoders else [self.models.unet]

    def _trainable_params(self) -> list[torch.nn.Parameter]:
        return [p for g in self.optimizer.param_groups for p in g["params"] if p.requires_grad]

    def _no_sync_unless(self, sync: bool) -> contextlib.AbstractContextManager:
        """Skip the gradient all-reduce on micro-batches that only accumulate."""
        if sync:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        for model in self._trained_models():
            stack.enter_context(self.accelerator.no_sync(model))
        return stack

    def current_lrs(self) -> dict[str, float]:
        """The learning rate of each group for the next optimizer step (what the scheduler set)."""
        names = [g.get("name", str(i)) for i, g in enumerate(self.optimizer.param_groups)]
        lrs = self.lr_scheduler.get_last_lr()
        if len(lrs) != len(names):  # Adafactor's schedule reports one rate for the groups that have gradients
            lrs = [lrs[0]] * len(names)
        return dict(zip(names, lrs, strict=True))

    def _emit_start(self, p: Progress) -> None:
        buckets = {f"{w}x{h}": n for (w, h), n in _bucket_counts(self.data).items()}
        self.emit("start", total_steps=self.total_steps, epochs=self.cfg.schedule.max_train_epochs,
                  steps_per_epoch=self.steps_per_epoch, images=len(self.data.items),
                  reg_images=len(self.data.reg_items), images_with_repeats=self.data.images_with_repeats,
                  buckets=buckets, device=str(self.device), processes=self.world, step=p.step,
                  trainable_params=self.network.trainable_parameter_count(), output_dir=str(self.output_dir),
                  resident=self.resident, offloaded=self.offloaded, **self._first_eta(p))

    def _first_eta(self, p: Progress) -> dict:
        """The ETA before any step is timed: from a matching `loratui bench` result, else the rough estimate."""
        from loratui.core.speed import time_estimate

        gpu = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None
        estimate = time_estimate(self.total_steps - p.step, self.cfg, gpu)
        return {"eta_s": round(estimate.seconds, 1), "eta_basis": estimate.label}

    def _emit_step(self, p: Progress, loss: float, timer: _Pace, epoch: int) -> None:
        fields = {"step": p.step, "epoch": epoch + 1, "loss": round(loss, 6), "avg_loss": round(_mean(p.losses), 6),
                  "lrs": self.lr_used, "it_per_s": timer.rate, "eta_s": timer.eta(p.step, self.total_steps)}
        if self.device.type == "cuda":
            fields["gpu_mem_gib"] = round(torch.cuda.max_memory_allocated() / 1024**3, 2)
        self.emit("step", **fields)

    # --- saving ----------------------------------------------------------------------------------------
    def _run_info(self, p: Progress, epoch: int | None) -> dict:
        return {"total_steps": self.total_steps, "steps": p.step, "epoch": epoch,
                "session_id": self.session_id, "started_at": self.started_at, "optimizer": self.optimizer,
                "batches_per_epoch": self.batches_per_process, "num_processes": self.world,
                "num_train_images": self.data.images_with_repeats, "num_reg_images": self.data.layout.num_reg_images,
                "steps_per_epoch": self.steps_per_epoch, "warmup_steps": warmup_steps(self.cfg, self.total_steps),
                "dataset_dirs": self.data.dataset_dirs, "reg_dataset_dirs": self.data.reg_dataset_dirs,
                "tag_frequency": self.data.tag_frequency, "network_dim": self.network.dim,
                "network_alpha": self.network.alpha,
                "bucket_info": self.data.layout.bucket_info()}

    def save_checkpoint(self, p: Progress, name: str, epoch: int | None, final: bool = False) -> Path | None:
        if not self.is_main:
            return None
        path = self.output_dir / name
        if final:
            path, message = unique_output_path(path)
            if message:
                self.warn(message)
        meta = build_metadata(self.cfg, run_info=self._run_info(p, epoch))
        try:
            save_lora(self.network, path, meta, save_dtype(self.cfg.precision.save_precision))
        except OSError as exc:
            raise self._save_failed(p, path, exc) from exc
        self.last_saved = path
        self.emit("checkpoint", path=str(path), epoch=epoch, step=p.step, avg_loss=_mean(p.losses),
                  size_bytes=path.stat().st_size, final=final)
        return path

    def _save_failed(self, p: Progress, path: Path, exc: OSError) -> TrainingFailed:
        """A checkpoint could not be written: keep the trained state in the run directory so no work is lost."""
        try:
            save_state(self.run_dir / "state", self, p)
            kept = f"the training state is saved in {self.run_dir / 'state'}"
        except OSError as state_exc:
            kept = f"the training state could not be saved either ({state_exc.strerror or state_exc})"
        return TrainingFailed(f"could not save {path}: {exc.strerror or exc}; {kept}",
                              "fix the cause (free space, a writable saving.output_dir), then continue with "
                              f"`loratui train --resume {self.run_dir.name}`")

    def _end_of_epoch(self, p: Progress, epoch: int, final: bool) -> None:
        every = self.cfg.saving.save_every_n_epochs
        if final:
            self.save_checkpoint(p, checkpoint_filename(self.cfg.saving.output_name, None), epoch, final=True)
        elif every and epoch % every == 0:
            self.save_checkpoint(p, checkpoint_filename(self.cfg.saving.output_name, epoch), epoch)
            prune_checkpoints(self.output_dir, self.cfg.saving.output_name, self.cfg.saving.save_last_n_epochs)
        if self.cfg.saving.save_state and self.is_main:
            save_state(self.run_dir / "state", self, p)
        every_sample = self.cfg.sampling.sample_every_n_epochs
        if self.cfg.sampling.sample_prompts and every_sample and (epoch % every_sample == 0 or final):
            self._samples(p, epoch)

    def _graceful_stop(self, p: Progress, epoch: int) -> Path | None:
        self.warn(f"stop requested: saving at step {p.step}")
        name = f"{self.cfg.saving.output_name}-step{p.step:08d}.safetensors"
        path = self.save_checkpoint(p, name, epoch + 1)
        if self.is_main:
            save_state(self.run_dir / "state", self, p)
        raise GracefulStop(path)

    def _samples(self, p: Progress, epoch: int) -> None:
        if not self.is_main:
            return
        from loratui.train.sampling import render_samples

        try:
            with self.offload.on_device("vae", "text_encoders"):  # as sd-scripts' sample_images_common
                for path, prompt in render_samples(self, epoch, p.step):
                    self.emit("sample", path=str(path), prompt=prompt, epoch=epoch, step=p.step)
        except ValueError as exc:
            self.warn(f"samples skipped: {exc}")


class GracefulStop(Exception):
    def __init__(self, path: Path | None) -> None:
        super().__init__("stopped on request")
        self.path = path


class _Pace:
    """it/s over recent steps, skipping the first (warm-up) ones."""

    def __init__(self) -> None:
        self.marks: deque[tuple[int, float]] = deque(maxlen=20)

    def tick(self, step: int) -> None:
        self.marks.append((step, time.perf_counter()))

    @property
    def rate(self) -> float | None:
        if len(self.marks) < 2:
            return None
        (s0, t0), (s1, t1) = self.marks[0], self.marks[-1]
        return round((s1 - s0) / (t1 - t0), 4) if t1 > t0 else None

    def eta(self, step: int, total: int) -> float | None:
        rate = self.rate
        return round((total - step) / rate, 1) if rate else None


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def _bucket_counts(info: D.DatasetInfo) -> dict:
    counts: dict = {}
    for entry in D.epoch_entries(info):
        counts[entry.bucket] = counts.get(entry.bucket, 0) + 1
    return dict(sorted(counts.items()))


def host_to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host tensor → training device without a host sync: a copy from pageable memory waits for the GPU's queue,
    one from page-locked memory does not (the per-step latents, token ids, time ids and weights go this way)."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def token_ids(tokenizer, captions: list[str], max_token_length: int) -> torch.Tensor:
    """(batch, windows, 77) token ids as sd-scripts' ``TokenizeStrategy._get_input_ids`` makes them: one
    tokenisation to ``max_token_length + 2``, cut into windows of BOS + 75 tokens + the sequence's last token."""
    window = tokenizer.model_max_length
    if max_token_length + 2 <= window:
        return tokenizer(captions, padding="max_length", max_length=window, truncation=True,
                         return_tensors="pt").input_ids[:, None]
    full = tokenizer(captions, padding="max_length", max_length=max_token_length + 2, truncation=True,
                     return_tensors="pt").input_ids
    eos, pad, body = tokenizer.eos_token_id, tokenizer.pad_token_id, window - 2
    rows = []
    for ids in full:
        chunks = []
        for start in range(1, max_token_length + 2 - window + 2, body):
            chunk = torch.cat([ids[:1], ids[start:start + body], ids[-1:]])
            if pad != eos:  # SD2 / SDXL's second tokenizer pad with another token: end each window with EOS
                if int(chunk[-2]) not in (eos, pad):
                    chunk[-1] = eos
                if int(chunk[1]) == pad:
                    chunk[1] = eos
            chunks.append(chunk)
        rows.append(torch.stack(chunks))
    return torch.stack(rows)


def _merge_windows(states: torch.Tensor, batch: int, windows: int) -> torch.Tensor:
    """(batch·windows, 77, d) → (batch, 75·windows + 2, d): the first BOS, each window's 75 inner rows and the
    last row, as sd-scripts' ``encode_tokens`` joins them (so 150/225 tokens give 152/227 rows)."""
    flat = states.reshape(batch, -1, states.shape[-1])
    if windows == 1:
        return flat
    width = states.shape[1]
    parts = [flat[:, :1], *(flat[:, i:i + width - 2] for i in range(1, windows * width, width)), flat[:, -1:]]
    return torch.cat(parts, dim=1)


def _encode_sd(tokenizer, encoder, captions: list[str], max_token_length: int, clip_skip: int,
               device: torch.device) -> torch.Tensor:
    """SD1/SD2: ``last_hidden_state`` (final LayerNorm applied) at clip skip 1, as AUTOMATIC1111 and ComfyUI
    condition at inference; the clip_skip-th last layer through the final LayerNorm otherwise."""
    ids = host_to_device(token_ids(tokenizer, captions, max_token_length), device)
    batch, windows, width = ids.shape
    flat = ids.reshape(-1, width)
    if clip_skip <= 1:
        states = encoder(flat)[0]
    else:
        inner = _unwrap(encoder)
        layer = encoder(flat, output_hidden_states=True).hidden_states[-clip_skip]
        # transformers 5 moved the layers off `text_model` for CLIPTextModel
        states = getattr(inner, "text_model", inner).final_layer_norm(layer)
    return _merge_windows(states, batch, windows)


def _encode_sdxl(tokenizers, encoders, captions: list[str], max_token_length: int,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """SDXL (``SdxlTextEncodingStrategy._get_hidden_states_sdxl``): both encoders' penultimate layers without the
    final LayerNorm (sd-scripts' ``hidden_states[11]`` of CLIP-L's 13 is its ``[-2]``), concatenated; pooled =
    the second encoder's projection of its normed first-EOS token, from the first window."""
    ids1 = host_to_device(token_ids(tokenizers[0], captions, max_token_length), device)
    ids2 = host_to_device(token_ids(tokenizers[1], captions, max_token_length), device)
    batch, windows, width = ids1.shape
    flat1, flat2 = ids1.reshape(-1, width), ids2.reshape(-1, width)
    states1 = encoders[0](flat1, output_hidden_states=True).hidden_states[-2]
    out2 = encoders[1](flat2, output_hidden_states=True)
    first_eos = (flat2 == tokenizers[1].eos_token_id).int().argmax(dim=1)
    eos_states = out2.last_hidden_state[torch.arange(flat2.shape[0], device=device), first_eos]
    projection = _unwrap(encoders[1]).text_projection
    pooled = projection(eos_states.to(projection.weight.dtype)).to(eos_states.dtype)[::windows]
    states2 = out2.hidden_states[-2]
    hidden = torch.cat([_merge_windows(states1, batch, windows), _merge_windows(states2, batch, windows)], dim=-1)
    return hidden, pooled


def step_seed(seed: int, micro_batch: int, stream: str) -> int:
    """A 64-bit seed per (run seed, global micro-batch number, stream). The packing is one-to-one for a run's
    first 2**32 micro-batches and splitmix64's finaliser is a bijection, so no two micro-batches of a run share a
    seed, and nearby numbers still give unrelated streams."""
    tag = {"noise": 0, "augment": 1}[stream]
    x = ((seed & 0x7FFFFFFF) << 33 | (micro_batch & 0xFFFFFFFF) << 1 | tag) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


_MASK64 = (1 << 64) - 1


def run(cfg: TrainingConfig, run_dir: Path, emit: Emit, stop: StopFlag | None = None,
        resume_from: Path | None = None) -> Path | None:
    """Set up and train; raises TrainingFailed / GracefulStop for the process layer to report."""
    trainer = Trainer(cfg, run_dir, emit, stop)
    try:
        trainer.setup()
        return trainer.train(resume_from)
    except torch.OutOfMemoryError as exc:
        hint = f"lower the batch size or resolution, or {what_to_lower(cfg)}"
        raise TrainingFailed("CUDA out of memory", hint) from exc
