"""loratui: train Stable Diffusion LoRAs from a terminal wizard."""

__version__ = "0.1.0"
