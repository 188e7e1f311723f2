"""WD tagger: a tiny ONNX model built offline with the real tagger's signature (NHWC 448×448 BGR float input, one
sigmoid per row of selected_tags.csv) drives `loratui caption-images --tagger wd`.

Follows sd-scripts finetune/tag_images_by_wd14_tagger.py (``preprocess_image`` and ``run_batch``): ratings are
category 9, general 0, character 4; general and character tags have their own thresholds.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loratui.cli import main

# (name, category, probability for a red image, for a blue image)
TAGS = [
    ("general", "9", 0.70, 0.10),
    ("sensitive", "9", 0.20, 0.80),
    ("questionable", "9", 0.05, 0.05),
    ("explicit", "9", 0.01, 0.01),
    ("1girl", "0", 0.95, 0.10),
    ("long_hair", "0", 0.60, 0.10),
    ("^_^", "0", 0.40, 0.10),
    ("solo", "0", 0.80, 0.50),
    ("low_tag", "0", 0.30, 0.10),
    ("blue_sky", "0", 0.10, 0.90),
    ("miku_(vocaloid)", "4", 0.90, 0.10),
    ("other_char", "4", 0.80, 0.10),
]
RED_CAPTION = "1girl, miku \\(vocaloid\\), solo, long hair, ^_^"


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


@pytest.fixture(scope="module")
def tiny_tagger(tmp_path_factory) -> Path:
    """logits = mean(BGR pixels / 255) @ W: a pure red image selects W's R row, a pure blue one its B row."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder = tmp_path_factory.mktemp("wd-tagger")
    weights = np.zeros((3, len(TAGS)), np.float32)
    weights[2] = [_logit(t[2]) for t in TAGS]  # BGR: index 2 is red
    weights[0] = [_logit(t[3]) for t in TAGS]
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input_1", "axes"], ["mean"], keepdims=0),
            helper.make_node("Mul", ["mean", "inv255"], ["scaled"]),
            helper.make_node("MatMul", ["scaled", "W"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], ["predictions_sigmoid"]),
        ],
        "tiny_wd",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["batch", 448, 448, 3])],
        [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, ["batch", len(TAGS)])],
        [numpy_helper.from_array(np.array([1, 2], np.int64), "axes"),
         numpy_helper.from_array(np.array(1 / 255, np.float32), "inv255"),
         numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, folder / "model.onnx")
    lines = ["tag_id,name,category,count", *[f'{i},"{n}",{c},100' for i, (n, c, _, _) in enumerate(TAGS)]]
    (folder / "selected_tags.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def dataset(tmp_path) -> Path:
    folder = tmp_path / "data" / "10_girl"
    folder.mkdir(parents=True)
    Image.new("RGB", (64, 64), (255, 0, 0)).save(folder / "red.png")
    Image.new("RGB", (48, 64), (0, 0, 255)).save(folder / "blue.png")
    (folder / "blue.txt").write_text("my caption, solo")
    return tmp_path / "data"


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["caption-images", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_missing_only_thresholds_order_escaping_kaomoji(tiny_tagger, dataset, capsys):
    code, out, _ = _run(capsys, str(dataset), "--tagger", "wd", "--model", str(tiny_tagger))
    assert code == 0
    assert "tagged 1 image(s), changed 1 of 2 caption(s)" in out
    # sorted by confidence; low_tag (0.30 < 0.35) and other_char (0.80 < 0.85) left out; rating off by default
    assert (dataset / "10_girl" / "red.txt").read_text() == RED_CAPTION
    assert (dataset / "10_girl" / "blue.txt").read_text() == "my caption, solo"


def test_thresholds_rating_exclude_max_and_activation_tag(tiny_tagger, dataset, capsys):
    code, _, _ = _run(capsys, str(dataset), "--tagger", "wd", "--model", str(tiny_tagger), "--general-threshold",
                      "0.5", "--character-threshold", "0.75", "--rating", "--exclude", "long hair, solo",
                      "--max-tags", "2", "--activation-tag", "sks girl")
    assert code == 0
    assert (dataset / "10_girl" / "red.txt").read_text() == "sks girl, general, 1girl, miku \\(vocaloid\\)"


def test_append_and_overwrite(tiny_tagger, dataset, capsys):
    base = [str(dataset), "--tagger", "wd", "--model", str(tiny_tagger)]
    assert _run(capsys, *base, "--mode", "append")[0] == 0
    # blue: 0.9 blue sky and 0.5 solo pass; solo is there already
    assert (dataset / "10_girl" / "blue.txt").read_text() == "my caption, solo, blue sky"
    assert (dataset / "10_girl" / "red.txt").read_text() == RED_CAPTION
    assert _run(capsys, *base, "--mode", "overwrite", "--keep-underscores", "--no-escape")[0] == 0
    assert (dataset / "10_girl" / "blue.txt").read_text() == "blue_sky, solo"
    assert (dataset / "10_girl" / "red.txt").read_text() == "1girl, miku_(vocaloid), solo, long_hair, ^_^"


def test_dry_run_shows_diff_and_undo_restores_exactly(tiny_tagger, dataset, capsys):
    base = [str(dataset), "--tagger", "wd", "--model", str(tiny_tagger), "--mode", "overwrite"]
    code, out, _ = _run(capsys, *base, "--dry-run")
    assert code == 0
    assert "-my caption, solo" in out and "+blue sky, solo" in out and f"+{RED_CAPTION}" in out
    assert "2 of 2 caption(s) would change (dry run)" in out
    assert not (dataset / "10_girl" / "red.txt").exists()
    assert _run(capsys, *base)[0] == 0
    assert (dataset / "10_girl" / "red.txt").exists()
    assert main(["captions", str(dataset), "undo"]) == 0
    assert "2 file(s) restored" in capsys.readouterr().out
    assert not (dataset / "10_girl" / "red.txt").exists()
    assert (dataset / "10_girl" / "blue.txt").read_bytes() == b"my caption, solo"


def test_preprocessing_pads_white_and_feeds_bgr(tiny_tagger, tmp_path):
    from loratui.train.tagger_wd import WdTagger

    Image.new("RGB", (100, 50), (255, 0, 0)).save(tmp_path / "wide.png")
    array = WdTagger(str(tiny_tagger)).preprocess(tmp_path / "wide.png")
    assert array.shape == (448, 448, 3) and array.dtype == np.float32
    assert array[0, 224].tolist() == [255.0, 255.0, 255.0]  # padding above: white
    assert array[224, 224].tolist() == pytest.approx([0.0, 0.0, 255.0], abs=1)  # red in BGR order


def test_bad_model_folder_is_one_line_error(tmp_path, dataset, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = _run(capsys, str(dataset), "--tagger", "wd", "--model", str(tmp_path / "empty"))
    assert code == 2
    assert err.strip().count("\n") == 0 and "missing model.onnx, selected_tags.csv" in err


def test_hub_id_offline_is_one_line_error(dataset, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(dataset.parent / "hf-home"))
    code, _, err = _run(capsys, str(dataset), "--tagger", "wd", "--model", "SmilingWolf/not-here-tagger")
    assert code == 2
    assert err.strip().count("\n") == 0 and "download model.onnx and selected_tags.csv into a folder" in err


def test_unreadable_image_is_named_and_the_rest_tagged(tiny_tagger, dataset, capsys):
    (dataset / "10_girl" / "broken.png").write_bytes(b"not a png")
    code, _out, err = _run(capsys, str(dataset), "--tagger", "wd", "--model", str(tiny_tagger))
    assert code == 1
    assert "broken.png" in err and "skipped" in err
    assert (dataset / "10_girl" / "red.txt").read_text() == RED_CAPTION
    assert not (dataset / "10_girl" / "broken.txt").exists()
