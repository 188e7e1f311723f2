"""BLIP captioning with a tiny, randomly initialised BLIP built offline by the test (real transformers code)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory) -> Path:
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    folder = tmp_path_factory.mktemp("blip")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "photo", "of", "red", "toy", "circle"]
    (folder / "vocab.txt").write_text("\n".join(vocab))
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), bos_token="[DEC]")
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    torch.manual_seed(0)
    text = {"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "encoder_hidden_size": 32, "bos_token_id": 5, "pad_token_id": 0,
            "sep_token_id": 3}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8}
    model = BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision, projection_dim=32))
    model.save_pretrained(folder / "model")
    processor.save_pretrained(folder / "model")
    return folder / "model"


def test_captions_only_images_without_one(tiny_blip, tmp_path):
    folder = tmp_path / "5_toy"
    folder.mkdir()
    Image.new("RGB", (64, 64), (200, 0, 0)).save(folder / "new.png")
    Image.new("RGB", (64, 64), (0, 0, 200)).save(folder / "done.png")
    (folder / "done.txt").write_text("my own caption")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    out = subprocess.run([sys.executable, "-m", "loratui", "caption-images", str(tmp_path), "--model",
                          str(tiny_blip), "--prefix", "sks toy, "], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "captioned 1 image(s); 1 already had captions" in out.stdout
    written = (folder / "new.txt").read_text()
    assert written.startswith("sks toy, ") and len(written) > len("sks toy, ")
    assert (folder / "done.txt").read_text() == "my own caption"
