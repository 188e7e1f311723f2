"""The trainer's view of a dataset: kohya's folder and caption rules, buckets, epoch batches."""

from __future__ import annotations

import random

from PIL import Image

from loratui.core.config import TrainingConfig
from loratui.train.data import epoch_batches, load_dataset, process_caption, steps_per_epoch


def _cfg(root, **changes) -> TrainingConfig:
    cfg = TrainingConfig().with_value("dataset.train_data_dir", str(root))
    for key, value in changes.items():
        cfg = cfg.with_value(key.replace("__", "."), value)
    return cfg


def test_kohya_rules_for_folders_and_captions(tmp_path):
    good = tmp_path / "3_sks dog"
    good.mkdir()
    for name, size in (("a", (512, 512)), ("b", (768, 512)), ("c", (512, 512))):
        Image.new("RGB", size).save(good / f"{name}.png")
    (good / "a.txt").write_text("sks dog, grass\nsecond variant")
    (good / "b.txt").write_bytes("café".encode("latin-1"))
    skipped = tmp_path / "no prefix"
    skipped.mkdir()
    Image.new("RGB", (64, 64)).save(skipped / "x.png")
    info = load_dataset(_cfg(tmp_path))
    captions = {i.path.name: i.caption for i in info.items}
    assert captions == {"a.png": "sks dog, grass", "b.png": "café", "c.png": "sks dog"}
    assert {i.repeats for i in info.items} == {3}
    assert any("no '<repeats>_' prefix" in w for w in info.warnings)
    assert any("not UTF-8" in w for w in info.warnings)
    assert info.dataset_dirs == {"3_sks dog": {"n_repeats": 3, "img_count": 3}}


def test_batches_never_mix_buckets_and_replay_per_epoch(tmp_path):
    folder = tmp_path / "2_x"
    folder.mkdir()
    for i in range(5):
        Image.new("RGB", (768, 512) if i % 2 else (512, 512)).save(folder / f"{i}.png")
    info = load_dataset(_cfg(tmp_path))
    batches = epoch_batches(info, 2, seed=1, epoch=0)
    assert all(len({item.bucket for item in batch}) == 1 for batch in batches)
    assert sum(len(b) for b in batches) == 10
    assert len(batches) == steps_per_epoch(info, 2) == 5  # 6 square → 3 batches, 4 landscape → 2
    names = [[i.path.name for i in b] for b in batches]
    assert names == [[i.path.name for i in b] for b in epoch_batches(info, 2, seed=1, epoch=0)]


def test_caption_shuffle_keeps_the_activation_tag_first():
    cfg = _cfg("/x", dataset__shuffle_caption=True, dataset__keep_tokens=1)
    rng = random.Random(0)
    seen = {process_caption("sks, a, b, c, d", cfg, rng, 0) for _ in range(20)}
    assert len(seen) > 1 and all(c.startswith("sks, ") for c in seen)
    dropped = _cfg("/x", dataset__caption_dropout_rate=1.0)
    assert process_caption("sks, a", dropped, rng, 0) == ""


def test_missing_caption_warns_and_root_images_are_not_trained(tmp_path):
    """sd-scripts' ``DreamBoothDataset`` reads only subfolders and warns about images without a caption file."""
    folder = tmp_path / "2_sks toy"
    folder.mkdir()
    Image.new("RGB", (64, 64)).save(folder / "a.png")
    Image.new("RGB", (64, 64)).save(tmp_path / "loose.png")
    info = load_dataset(_cfg(tmp_path))
    assert [i.path.name for i in info.items] == ["a.png"] and info.items[0].caption == "sks toy"
    assert any("a.txt: no caption file" in w and "'sks toy'" in w for w in info.warnings)
    assert any("directly in the dataset folder are not trained" in w for w in info.warnings)
    assert info.items[0].original_size == (64, 64)


def test_keep_tokens_separator_as_sd_scripts_process_caption():
    """``BaseDataset.process_caption``: tags before ``|||`` stay first, after a second ``|||`` stay last."""
    cfg = _cfg("/x", dataset__shuffle_caption=True, dataset__keep_tokens_separator="|||", dataset__keep_tokens=3)
    rng = random.Random(0)
    caption = "sks, toy ||| a, b, c, d ||| best quality, masterpiece"
    seen = {process_caption(caption, cfg, rng, 0) for _ in range(30)}
    assert len(seen) > 1
    for text in seen:
        tags = text.split(", ")
        assert tags[:2] == ["sks", "toy"] and tags[-2:] == ["best quality", "masterpiece"]
        assert sorted(tags[2:-2]) == ["a", "b", "c", "d"] and "|||" not in text
    dropped = _cfg("/x", dataset__caption_tag_dropout_rate=1.0, dataset__keep_tokens_separator="|||")
    assert process_caption(caption, dropped, rng, 0) == "sks, toy, best quality, masterpiece"
    # without shuffle or tag dropout sd-scripts passes the caption through, separator and all
    plain = _cfg("/x", dataset__keep_tokens_separator="|||")
    assert process_caption(caption, plain, rng, 0) == caption


def test_a_separator_without_shuffle_is_flagged():
    from loratui.core.config import check_config

    flagged = [i for i in check_config(_cfg("/x", dataset__keep_tokens_separator="|||"), cuda_available=False)
               if i.path == "dataset.keep_tokens_separator"]
    assert flagged and "trained literally" in flagged[0].why
    shuffled = _cfg("/x", dataset__keep_tokens_separator="|||", dataset__shuffle_caption=True)
    assert not [i for i in check_config(shuffled, cuda_available=False) if i.path == "dataset.keep_tokens_separator"]
