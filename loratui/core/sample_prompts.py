"""Sample prompts in kohya's syntax: ``text --n negative --w 512 --h 512 --d seed --l cfg --s steps``."""

from __future__ import annotations

import re
from dataclasses import dataclass

_OPTION = re.compile(r"\s--([a-z])\s+")


@dataclass(frozen=True)
class SamplePrompt:
    prompt: str
    negative: str = ""
    width: int = 512
    height: int = 512
    seed: int | None = None
    cfg_scale: float = 7.0
    steps: int = 20


_FIELDS = {"n": ("negative", str), "w": ("width", int), "h": ("height", int), "d": ("seed", int),
           "l": ("cfg_scale", float), "s": ("steps", int)}


def parse_sample_prompt(line: str, default_size: int = 512) -> SamplePrompt:
    """Parse one prompt line; unknown options are an error naming the option."""
    parts = _OPTION.split(" " + line.strip())
    values: dict[str, object] = {"prompt": parts[0].strip(), "width": default_size, "height": default_size}
    for flag, raw in zip(parts[1::2], parts[2::2], strict=True):
        if flag not in _FIELDS:
            raise ValueError(f"unknown sample option --{flag} in {line!r}; use --n --w --h --d --l --s")
        name, kind = _FIELDS[flag]
        try:
            values[name] = kind(raw.strip())
        except ValueError as exc:
            raise ValueError(f"--{flag} {raw.strip()!r} in {line!r} is not a {kind.__name__}") from exc
    if not values["prompt"]:
        raise ValueError(f"sample prompt {line!r} has no text before its options")
    return SamplePrompt(**values)  # type: ignore[arg-type]
