"""The CLIP tokenizers of SD1.x / SD2.x / SDXL, built offline from the BPE file shipped in this package.

``model_configs/clip/bpe_simple_vocab_16e6.txt.gz`` is OpenAI CLIP's byte-pair merge list, taken unchanged from
the ``open-clip-torch`` wheel (MIT, see ``LICENSE-open_clip`` beside it). CLIP's vocabulary is derived from it
by a fixed rule: the 256 byte symbols, the same with ``</w>``, one entry per merge (the first 48,894), then
``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407). Every SD text encoder uses that vocabulary; they
differ only in the pad token: SD1/SD2 pad with ``<|endoftext|>``, SDXL's second (OpenCLIP) tokenizer pads with
``!`` (id 0).
"""

from __future__ import annotations

import functools
import gzip
import json
import tempfile
from pathlib import Path

BPE_FILE = Path(__file__).parent / "model_configs" / "clip" / "bpe_simple_vocab_16e6.txt.gz"
VOCAB_SIZE = 49408
MERGES_USED = VOCAB_SIZE - 2 * 256 - 2  # 48,894 merges; the file holds more than CLIP's vocabulary uses
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP's reversible byte -> printable character table, in byte order of the vocabulary."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)  # bytes that are not printable map past the Latin-1 range
            extra += 1
    return [chr(code) for code in codes]


@functools.lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """CLIP's vocabulary (token -> id) and merge list, built from the shipped BPE file."""
    lines = gzip.decompress(BPE_FILE.read_bytes()).decode("utf-8").split("\n")
    merges = lines[1:1 + MERGES_USED]  # line 0 is the "#version" header
    symbols = _byte_symbols()
    tokens = [*symbols, *(s + "</w>" for s in symbols), *(m.replace(" ", "") for m in merges), BOS, EOS]
    return {token: index for index, token in enumerate(tokens)}, merges


def clip_tokenizer(pad_token: str = EOS, model_max_length: int = 77):
    """A transformers ``CLIPTokenizer`` equal to openai/clip-vit-large-patch14's (``pad_token="!"``: SDXL's 2nd)."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    with tempfile.TemporaryDirectory(prefix="loratui-clip-") as folder:
        # Files rather than in-memory objects: the constructor's arguments differ between transformers 4 and 5.
        vocab_file, merges_file = Path(folder) / "vocab.json", Path(folder) / "merges.txt"
        vocab_file.write_text(json.dumps(vocab), encoding="utf-8")
        merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        return CLIPTokenizer(str(vocab_file), str(merges_file), pad_token=pad_token, model_max_length=model_max_length)


def tokenizers_for(family: str) -> dict[str, object]:
    """The ``tokenizer`` (and, for SDXL, ``tokenizer_2``) pipeline components of a model family."""
    if family == "sdxl":
        return {"tokenizer": clip_tokenizer(), "tokenizer_2": clip_tokenizer(pad_token="!")}
    return {"tokenizer": clip_tokenizer()}
