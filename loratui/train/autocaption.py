"""BLIP auto-captioning through transformers (imports the ML stack, so it lives under train/)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from loratui.core.atomic import atomic_write_text
from loratui.core.captions.ops import load_captions


class CaptionModelError(RuntimeError):
    """The captioning model cannot be loaded; one line saying what to do."""


def load_blip(model: str):
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers import BlipForConditionalGeneration, BlipProcessor

    local = Path(model).is_dir()
    try:
        processor = BlipProcessor.from_pretrained(model, local_files_only=local)
        net = BlipForConditionalGeneration.from_pretrained(model, local_files_only=local)
    except (OSError, ValueError) as exc:
        raise CaptionModelError(f"{model}: cannot load a BLIP model ({str(exc).splitlines()[0][:120]}); give a "
                                "local folder with the weights, or a hub id on a machine that can download it") from exc
    return processor, net.eval()


def caption_folder(root: Path, model: str, prefix: str = "", overwrite: bool = False, caption_ext: str = ".txt",
                   max_new_tokens: int = 30) -> tuple[int, int]:
    """Caption every image without a caption (all with ``overwrite``); returns (written, skipped)."""
    import torch
    from PIL import Image, ImageOps

    files = load_captions(root, caption_ext)
    todo = [f for f in files if overwrite or not f.text.strip()]
    if not todo:
        return 0, len(files)
    processor, net = load_blip(model)
    for index, item in enumerate(todo, 1):
        with Image.open(item.image) as im:
            image = ImageOps.exif_transpose(im).convert("RGB")
        inputs = processor(images=image, return_tensors="pt")
        with torch.no_grad():
            ids = net.generate(**inputs, max_new_tokens=max_new_tokens)
        text = processor.decode(ids[0], skip_special_tokens=True).strip()
        atomic_write_text(item.caption, prefix + text)
        print(f"\rcaptioning {index}/{len(todo)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return len(todo), len(files) - len(todo)
