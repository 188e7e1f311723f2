"""Text conditioning as sd-scripts builds it: ``library/strategy_sd.py`` ``SdTextEncodingStrategy.encode_tokens``
and ``library/strategy_sdxl.py`` ``SdxlTextEncodingStrategy._get_hidden_states_sdxl`` / ``_pool_workaround``."""

from __future__ import annotations

import pytest
import torch

from loratui.train.loop import Trainer

from .conftest import Recorder, make_config

CAPTIONS = ["a photo of sks dog", "red car, night, city"]


def _trainer(tmp_path, model_dir, dataset, **changes) -> Trainer:
    trainer = Trainer(make_config(model_dir, dataset, **changes), tmp_path, Recorder())
    trainer.setup()
    return trainer


def _ids(tokenizer, captions=CAPTIONS) -> torch.Tensor:
    return tokenizer(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


@pytest.fixture(scope="module")
def sd1(tmp_path_factory, tiny_sd1_dir, demo_dataset) -> Trainer:
    return _trainer(tmp_path_factory.mktemp("sd1"), tiny_sd1_dir, demo_dataset)


@torch.no_grad()
def test_sd1_clip_skip_1_is_the_normed_last_hidden_state(sd1):
    """sd-scripts without clip skip: ``text_encoder(tokens)[0]``, the final LayerNorm applied."""
    encoder, tokenizer = sd1.models.text_encoders[0], sd1.models.tokenizers[0]
    out = encoder(_ids(tokenizer), output_hidden_states=True)
    hidden, pooled = sd1.encode_text(CAPTIONS)
    assert pooled is None and hidden.shape == (2, 77, 32)
    torch.testing.assert_close(hidden, out.last_hidden_state, atol=1e-5, rtol=0)
    assert not torch.allclose(hidden, out.hidden_states[-1], atol=1e-3), "the raw last layer is not normed"


@torch.no_grad()
def test_sd1_clip_skip_2_is_the_penultimate_layer_through_the_final_layer_norm(sd1):
    encoder, tokenizer = sd1.models.text_encoders[0], sd1.models.tokenizers[0]
    sd1.cfg = sd1.cfg.with_value("advanced.clip_skip", 2)
    try:
        hidden, _ = sd1.encode_text(CAPTIONS)
    finally:
        sd1.cfg = sd1.cfg.with_value("advanced.clip_skip", 1)
    layer = encoder(_ids(tokenizer), output_hidden_states=True).hidden_states[-2]
    want = getattr(encoder, "text_model", encoder).final_layer_norm(layer)
    torch.testing.assert_close(hidden, want, atol=1e-5, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize(("length", "rows"), [(150, 152), (225, 227)])
def test_long_captions_give_sd_scripts_row_count(sd1, length, rows):
    """``_get_input_ids`` cuts one tokenisation into windows of BOS + 75 + last token; ``encode_tokens`` keeps the
    first BOS, each window's 75 inner rows and the very last row: 75·n + 2 rows."""
    encoder, tokenizer = sd1.models.text_encoders[0], sd1.models.tokenizers[0]
    sd1.cfg = sd1.cfg.with_value("advanced.max_token_length", length)
    long_caption = ", ".join(["red car"] * 60)  # 180 tokens: spills into the third window at 225
    try:
        hidden, _ = sd1.encode_text([CAPTIONS[0], long_caption])
    finally:
        sd1.cfg = sd1.cfg.with_value("advanced.max_token_length", 75)
    assert hidden.shape == (2, rows, 32)
    # a short caption's first window is exactly its 77-token encoding (the tiny tokenizer pads with EOS, as SD1)
    short = encoder(_ids(tokenizer, CAPTIONS[:1])).last_hidden_state
    torch.testing.assert_close(hidden[:1, :76], short[:, :76], atol=1e-5, rtol=0)
    # the long caption's second window, encoded on its own, gives rows 76..150
    full = tokenizer(long_caption, padding="max_length", max_length=length + 2, truncation=True,
                     return_tensors="pt").input_ids[0]
    window = torch.cat([full[:1], full[76:151], full[-1:]])[None]
    torch.testing.assert_close(hidden[1:, 76:151], encoder(window).last_hidden_state[:, 1:76], atol=1e-5, rtol=0)


@torch.no_grad()
def test_sdxl_conditioning_matches_sd_scripts(tmp_path, tiny_sdxl_dir, demo_dataset):
    trainer = _trainer(tmp_path, tiny_sdxl_dir, demo_dataset, model__model_family="sdxl",
                       dataset__bucket_reso_steps=32)
    (te1, te2), (tok1, tok2) = trainer.models.text_encoders, trainer.models.tokenizers
    ids1, ids2 = _ids(tok1), _ids(tok2)
    out1 = te1(ids1, output_hidden_states=True)
    out2 = te2(ids2, output_hidden_states=True)
    hidden, pooled = trainer.encode_text(CAPTIONS)
    # te1: the penultimate layer (sd-scripts' hidden_states[11] of CLIP-L's 13); te2: its penultimate, not normed
    torch.testing.assert_close(hidden, torch.cat([out1.hidden_states[-2], out2.hidden_states[-2]], dim=-1),
                               atol=1e-5, rtol=0)
    # pooled: te2's text_projection of the normed hidden state at the first EOS token
    eos = (ids2 == tok2.eos_token_id).int().argmax(dim=1)
    want = te2.text_projection(out2.last_hidden_state[torch.arange(2), eos])
    torch.testing.assert_close(pooled, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(pooled, out2.text_embeds, atol=1e-5, rtol=0)
