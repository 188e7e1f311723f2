"""Which frozen parts of the base model stay on the training device while the steps run.

sd-scripts keeps on the GPU only what a step uses:
- ``train_network.py`` (``NetworkTrainer.train``): after ``new_cache_latents`` the VAE goes to the CPU
  (``vae.to("cpu")`` + ``clean_memory_on_device``); without latent caching it encodes every batch, so it stays.
- ``sdxl_train_network.py`` ``cache_text_encoder_outputs_if_needed``: with ``cache_text_encoder_outputs`` the text
  encoders go to the CPU in fp32 after caching (fp16 does not run on the CPU); otherwise they stay in the weight
  dtype because every step encodes its captions. Caching needs frozen encoders (``network_train_unet_only``) and
  fixed captions (``is_text_encoder_output_cacheable``: no shuffle or tag dropout).
- ``library/train_util.py`` ``sample_images_common``: the VAE comes to the device for sampling and goes back.

loratui follows the same rules for every family (it caches SD1/SD2 text-encoder outputs too); the trainer
uses its text-encoder cache exactly when ``text_encoder_outputs_cached`` says so.
A caption that only ever drops whole (``caption_dropout_rate``, ``caption_dropout_every_n_epochs``) becomes the
empty caption, which is cached with the others, so it does not keep the encoders on the device.
"""

from __future__ import annotations

from loratui.core.config import TrainingConfig

COMPONENTS = frozenset({"unet", "text_encoders", "vae"})


def captions_vary(cfg: TrainingConfig) -> bool:
    """Whether a step can see a caption that is neither a dataset caption nor the empty one."""
    return cfg.dataset.shuffle_caption or bool(cfg.dataset.caption_tag_dropout_rate)


def text_encoder_outputs_cached(cfg: TrainingConfig) -> bool:
    """The trainer reads conditioning from its cache (``Trainer._text``): asked for, the encoders frozen, and
    captions that stay the same from step to step (shuffled ones would fill the cache with one-off entries)."""
    return cfg.advanced.cache_text_encoder_outputs and not cfg.trains_text_encoder and not captions_vary(cfg)


def resident_during_steps(cfg: TrainingConfig) -> frozenset[str]:
    """The base components on the training device during the training steps, out of ``COMPONENTS``.

    The UNet always; the VAE only when latents are not cached; the text encoders when they train, when their
    outputs are not cached, or when shuffled / tag-dropped captions must be encoded anew at each step.
    """
    resident = {"unet"}
    if not cfg.dataset.cache_latents:
        resident.add("vae")
    if not text_encoder_outputs_cached(cfg):
        resident.add("text_encoders")
    return frozenset(resident)
