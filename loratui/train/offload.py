"""Move the frozen VAE and text encoders off the training device while the steps do not use them.

The rules (what stays) are ``loratui.core.placement.resident_during_steps``; this module only moves modules and
brings them back for the moments that need them (samples, a caption missing from the cache). Modules are moved
in place, so every reference (``Models``, a sampling pipeline) stays valid.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch

from loratui.train.model_loading import Models

# CPU matmuls in fp16 are slow or missing, so parked text encoders wait in fp32 as in sd-scripts'
# cache_text_encoder_outputs_if_needed; fp16/bf16 → fp32 → fp16/bf16 is exact, so nothing changes on return.
PARKED_DTYPE = torch.float32


class Offload:
    """Parks named components on ``offload_device`` and remembers where (device, dtype) each one trained."""

    def __init__(self, models: Models, device: torch.device, offload_device: torch.device | None) -> None:
        self.models, self.device, self.offload_device = models, device, offload_device
        self.parked: frozenset[str] = frozenset()
        self._homes: dict[str, list[tuple[torch.device, torch.dtype]]] = {}

    def modules(self, name: str) -> list[torch.nn.Module]:
        if name == "unet":
            return [self.models.unet]
        return [self.models.vae] if name == "vae" else list(self.models.text_encoders)

    @contextmanager
    def aside(self, name: str) -> Iterator[None]:
        """Keep ``name`` off the training device, in its own dtype, for the block: the UNet while the caches
        fill, as sd-scripts does, so that caching never needs the UNet's memory on top of the encoders'."""
        if self.offload_device is None:
            yield
            return
        modules = self.modules(name)
        homes = [_place(module) for module in modules]
        for module in modules:
            module.to(self.offload_device)
        self.parked |= {name}
        self._release()
        try:
            yield
        finally:
            for module, (device, _) in zip(modules, homes, strict=True):
                module.to(device)
            self.parked -= {name}

    def park(self, names: Iterable[str]) -> list[str]:
        """Move ``names`` off the training device; returns those moved, sorted (none without an offload device)."""
        if self.offload_device is None:
            return []
        moved = sorted(set(names) - self.parked - {"unet"})  # the UNet runs every step
        if not moved:
            return []  # nothing to free: no empty_cache, which would cost a sync on every step
        for name in moved:
            self._homes[name] = [_place(module) for module in self.modules(name)]
            for module in self.modules(name):
                module.to(self.offload_device, PARKED_DTYPE)
        self.parked |= frozenset(moved)
        self._release()
        return moved

    @contextmanager
    def on_device(self, *names: str) -> Iterator[None]:
        """Bring parked ``names`` back where they trained (device and dtype) for the block, then park them again.
        Components that are already on the device are left alone, so this costs nothing for them."""
        back = [name for name in names if name in self.parked]
        for name in back:
            for module, (device, dtype) in zip(self.modules(name), self._homes[name], strict=True):
                module.to(device, dtype)
        self.parked -= frozenset(back)
        try:
            yield
        finally:
            self.park(back)

    def _release(self) -> None:
        """Hand the freed blocks back to the driver, so the steps (and nvidia-smi) see the space."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _place(module: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    param = next(module.parameters())
    return param.device, param.dtype
