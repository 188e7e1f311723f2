"""The training loop: one legible loop over epochs and bucketed batches, with accelerate for precision,
gradient accumulation and data parallelism. Everything it reports goes out as events (loratui.core.run)."""

from __future__ import annotations

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
from loratui.core.vram import what_to_lower
from loratui.train import data as D
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
from loratui.train.optim import lr_multiplier, make_optimizer, warmup_steps
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
        self.accelerator = Accelerator(mixed_precision=mixed,
                                       gradient_accumulation_steps=cfg.optimizer.gradient_accumulation_steps)
        self.mixed = mixed
        self.device = self.accelerator.device
        self.output_dir = Path(cfg.saving.output_dir) if cfg.saving.output_dir else run_dir / "output"
        self.last_saved: Path | None = None

    # --- events ----------------------------------------------------------------------------------------
    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def emit(self, type_: str, **fields) -> None:
        if self.is_main:
            self._emit(type_, **fields)

    def warn(self, message: str) -> None:
        self.emit("warning", message=message)

    # --- set-up ----------------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.cfg
        if cfg.precision.mixed_precision != self.mixed:
            self.warn(f"{cfg.precision.mixed_precision} mixed precision needs CUDA; training in fp32 on this machine")
        torch.manual_seed(cfg.schedule.seed)
        self.data = D.load_dataset(cfg)
        for message in self.data.warnings:
            self.warn(message)
        self.setup_models(load_models(cfg))
        self.world = self.accelerator.num_processes
        per_epoch_batches = D.steps_per_epoch(self.data, cfg.schedule.train_batch_size)
        self.batches_per_process = math.ceil(per_epoch_batches / self.world)
        self.steps_per_epoch = math.ceil(self.batches_per_process / cfg.optimizer.gradient_accumulation_steps)
        self.total_steps = self.steps_per_epoch * cfg.schedule.max_train_epochs
        if cfg.schedule.max_train_steps:
            self.total_steps = min(self.total_steps, cfg.schedule.max_train_steps)
        self.lr_factor = lr_multiplier(cfg, self.total_steps)
        self.latents = self._latent_cache()
        self.te_cache: dict[str, tuple] = {}

    def setup_models(self, models: Models) -> None:
        """Precision, network, optimizer and accelerate around ``models``: all a step needs but the data.
        ``loratui bench`` calls it with models built in memory, so it times this exact set-up."""
        cfg = self.cfg
        self.models = models
        self._prepare_models(self.models)
        dims = None
        if cfg.network.network_weights and cfg.network.dim_from_weights:
            dims = dims_from_weights(Path(cfg.network.network_weights))
        self.network = attach_network(cfg, self.models.unet, self.models.text_encoders, dims)
        if cfg.network.network_weights:
            from loratui.train.resume_weights import load_kohya_weights

            loaded = load_kohya_weights(self.network, Path(cfg.network.network_weights))
            self.warn(f"started from {cfg.network.network_weights} ({loaded} tensors loaded)")
        self._cast_trainable()
        self.optimizer = make_optimizer(cfg, self.network.param_groups(cfg.unet_lr, cfg.text_encoder_lr), self.warn)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        trained = [self.models.unet] + ([*self.models.text_encoders] if self.network.text_encoders else [])
        prepared = self.accelerator.prepare(*trained, self.optimizer)
        self.optimizer = prepared[-1]
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

    # --- one step ----------------------------------------------------------------------------------------
    def _latents_for(self, batch: list[D.Item], rng: random.Random) -> torch.Tensor:
        flips = [self.cfg.dataset.flip_aug and rng.random() < 0.5 for _ in batch]
        if self.latents is not None:
            latents = [self.latents.get(item, flip) for item, flip in zip(batch, flips, strict=True)]
            return self.to_device(torch.stack(latents))
        pixels = torch.stack([D.load_image(i.path, i.bucket, f) for i, f in zip(batch, flips, strict=True)])
        with torch.no_grad():
            dist = self.models.vae.encode(self.to_device(pixels).float()).latent_dist
        return dist.sample() * self.models.vae.config.scaling_factor

    def encode_text(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Hidden states (clip skip applied) and, for SDXL, the pooled embedding of the second encoder."""
        m = self.models
        hidden, pooled = [], None
        chunks = self.cfg.advanced.max_token_length // 75
        for index, (tok, te) in enumerate(zip(m.tokenizers, m.text_encoders, strict=True)):
            ids = self.to_device(_chunked_ids(tok, captions, chunks))
            states, pool = [], None
            for chunk in ids.split(tok.model_max_length, dim=1):
                out = te(chunk, output_hidden_states=True)
                if m.is_sdxl:
                    states.append(out.hidden_states[-2])  # SDXL is conditioned on the penultimate layer
                    if index == 1 and pool is None:
                        pool = out.text_embeds if hasattr(out, "text_embeds") else out[0]
                else:
                    layer = out.hidden_states[-self.cfg.advanced.clip_skip]
                    if self.cfg.advanced.clip_skip > 1:
                        inner = _unwrap(te)
                        # transformers 5 moved the layers off `text_model` for CLIPTextModel
                        layer = getattr(inner, "text_model", inner).final_layer_norm(layer)
                    states.append(layer)
            hidden.append(torch.cat(states, dim=1))
            pooled = pool if pool is not None else pooled
        return torch.cat(hidden, dim=-1), pooled

    def _text(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not (self.cfg.advanced.cache_text_encoder_outputs and not self.network.text_encoders):
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
        latents = self._latents_for(batch, rng).to(self.device, self.weight_dtype)
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
            h, w = batch[0].bucket[1], batch[0].bucket[0]
            time_ids = self.to_device(torch.tensor([[h, w, 0, 0, h, w]] * len(batch), dtype=hidden.dtype))
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
            for index in range(p.batch_in_epoch, len(mine)):
                if p.step >= self.total_steps:
                    break
                gen = self.generator(cfg.schedule.seed * 7919 + p.step * 31 + index)
                rng = random.Random(cfg.schedule.seed * 104729 + epoch * 10007 + index)
                loss = self.train_step(mine[index], gen, rng, epoch)
                p.batch_in_epoch = index + 1
                if not self.accelerator.sync_gradients:
                    continue
                p.step += 1
                self._set_lr(p.step)
                if cfg.network.scale_weight_norms:
                    self.network.apply_max_norm(cfg.network.scale_weight_norms)
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
        return self.last_saved

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """Host tensor → training device without a host sync: a copy from pageable memory waits for the GPU,
        one from page-locked memory does not (the per-step latents, token ids and conditioning go this way)."""
        if self.device.type != "cuda":
            return tensor.to(self.device)
        return tensor.pin_memory().to(self.device, non_blocking=True)

    def generator(self, seed: int) -> torch.Generator:
        """Noise and timesteps are drawn on the training device: no host-to-device copy per step."""
        return torch.Generator(self.device).manual_seed(seed)

    def train_step(self, batch: list[D.Item], gen: torch.Generator, rng: random.Random, epoch: int) -> torch.Tensor:
        """Forward, backward and optimizer step for one batch; returns the loss without reading it (a GPU sync)."""
        with self.accelerator.accumulate(*self._trained_models()):
            loss = self.loss_for(batch, gen, rng, epoch)
            self.accelerator.backward(loss)
            if self.accelerator.sync_gradients and self.cfg.optimizer.max_grad_norm:
                self.accelerator.clip_grad_norm_(self._trainable_params(), self.cfg.optimizer.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss

    def _trained_models(self) -> list[torch.nn.Module]:
        return [self.models.unet, *self.models.text_encoders] if self.network.text_encoders else [self.models.unet]

    def _trainable_params(self) -> list[torch.nn.Parameter]:
        return [p for g in self.optimizer.param_groups for p in g["params"] if p.requires_grad]

    def _set_lr(self, step: int) -> None:
        factor = self.lr_factor(min(step, self.total_steps - 1))
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor

    def _emit_start(self, p: Progress) -> None:
        buckets = {f"{w}x{h}": n for (w, h), n in _bucket_counts(self.data).items()}
        self.emit("start", total_steps=self.total_steps, epochs=self.cfg.schedule.max_train_epochs,
                  steps_per_epoch=self.steps_per_epoch, images=len(self.data.items),
                  reg_images=len(self.data.reg_items), images_with_repeats=self.data.images_with_repeats,
                  buckets=buckets, device=str(self.device), processes=self.world, step=p.step,
                  trainable_params=self.network.trainable_parameter_count(), output_dir=str(self.output_dir),
                  **self._first_eta(p))

    def _first_eta(self, p: Progress) -> dict:
        """The ETA before any step is timed: from a matching `loratui bench` result, else the rough estimate."""
        from loratui.core.speed import time_estimate

        gpu = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None
        estimate = time_estimate(self.total_steps - p.step, self.cfg, gpu)
        return {"eta_s": round(estimate.seconds, 1), "eta_basis": estimate.label}

    def _emit_step(self, p: Progress, loss: float, timer: _Pace, epoch: int) -> None:
        lrs = {g.get("name", str(i)): g["lr"] for i, g in enumerate(self.optimizer.param_groups)}
        fields = {"step": p.step, "epoch": epoch + 1, "loss": round(loss, 6), "avg_loss": round(_mean(p.losses), 6),
                  "lrs": lrs, "it_per_s": timer.rate, "eta_s": timer.eta(p.step, self.total_steps)}
        if self.device.type == "cuda":
            fields["gpu_mem_gib"] = round(torch.cuda.max_memory_allocated() / 1024**3, 2)
        self.emit("step", **fields)

    # --- saving ----------------------------------------------------------------------------------------
    def _run_info(self, p: Progress, epoch: int | None) -> dict:
        return {"total_steps": self.total_steps, "steps": p.step, "epoch": epoch,
                "num_train_images": self.data.images_with_repeats, "num_reg_images": len(self.data.reg_items),
                "steps_per_epoch": self.steps_per_epoch, "warmup_steps": warmup_steps(self.cfg, self.total_steps),
                "dataset_dirs": self.data.dataset_dirs, "reg_dataset_dirs": self.data.reg_dataset_dirs,
                "tag_frequency": self.data.tag_frequency, "network_dim": self.network.dim,
                "network_alpha": self.network.alpha,
                "bucket_info": {f"{w}x{h}": n for (w, h), n in _bucket_counts(self.data).items()}}

    def save_checkpoint(self, p: Progress, name: str, epoch: int | None, final: bool = False) -> Path | None:
        if not self.is_main:
            return None
        path = self.output_dir / name
        if final:
            path, message = unique_output_path(path)
            if message:
                self.warn(message)
        meta = build_metadata(self.cfg, run_info=self._run_info(p, epoch))
        save_lora(self.network, path, meta, save_dtype(self.cfg.precision.save_precision))
        self.last_saved = path
        self.emit("checkpoint", path=str(path), epoch=epoch, step=p.step, avg_loss=_mean(p.losses),
                  size_bytes=path.stat().st_size, final=final)
        return path

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


def _chunked_ids(tokenizer, captions: list[str], chunks: int) -> torch.Tensor:
    """Token ids in ``chunks`` windows of 77 (BOS + 75 + EOS/pad), as sd-scripts does for long captions."""
    if chunks == 1:
        return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                         return_tensors="pt").input_ids
    body = 75
    rows = []
    for caption in captions:
        ids = tokenizer(caption, add_special_tokens=False, truncation=False).input_ids[: body * chunks]
        row = []
        for c in range(chunks):
            part = ids[c * body:(c + 1) * body]
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            row += [tokenizer.bos_token_id, *part, tokenizer.eos_token_id] + [pad] * (body - len(part))
        rows.append(row)
    return torch.tensor(rows)


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
