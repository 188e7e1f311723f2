"""WD-family image tagger (SmilingWolf's v1.4 and v3 models: ``model.onnx`` + ``selected_tags.csv``) run through
onnxruntime, and the caption changes it proposes.

The preprocessing follows sd-scripts' ``finetune/tag_images_by_wd14_tagger.py`` (``preprocess_image``): alpha
composited on white, RGB→BGR, padded to a white square, resized to the model's input size, float32 in 0–255,
NHWC. Output ``i`` is the sigmoid of row ``i`` of the CSV (category 9 rating, 0 general, 4 character).

Tag text follows what the webui tagger writes and the webui's prompt parser expects: underscores become spaces
except in kaomoji (``^_^`` would lose its meaning), and parentheses are escaped (``\\(`` ``\\)``) because a bare
``(`` is attention syntax in the webui.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from loratui.core.captions import journal, ops
from loratui.core.captions.text import join_tags, map_lines, split_tags

MODEL_FILE = "model.onnx"
TAGS_FILE = "selected_tags.csv"
RATING, GENERAL, CHARACTER = "9", "0", "4"
# The kaomoji list of SmilingWolf's reference tagger space: the tags whose underscore is part of the face.
KAOMOJI = frozenset({
    "0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9", ">_o", "@_@",
    "^_^", "o_o", "u_u", "x_x", "|_|", "||_||",
})
Mode = Literal["missing", "append", "overwrite"]


class TaggerModelError(RuntimeError):
    """The tagger model cannot be loaded or run; one line saying what to do."""


@dataclass(frozen=True)
class TagOptions:
    general_threshold: float = 0.35
    character_threshold: float = 0.85
    rating: bool = False  # add the most likely rating tag (sd-scripts --use_rating_tags)
    exclude: Sequence[str] = ()  # tags never written, in any spelling (long_hair, long hair)
    max_tags: int | None = None  # keep the most confident ones
    replace_underscores: bool = True
    escape: bool = True
    activation_tag: str = ""  # kept first in every caption


@dataclass(frozen=True)
class Tag:
    name: str  # as in the CSV
    category: str


def format_tag(name: str, options: TagOptions) -> str:
    text = name.replace("_", " ") if options.replace_underscores and name not in KAOMOJI else name
    return text.replace("(", "\\(").replace(")", "\\)") if options.escape else text


def _canonical(tag: str) -> str:
    """One spelling for comparisons: unescaped, underscores as spaces, lower case."""
    return tag.replace("\\(", "(").replace("\\)", ")").replace("_", " ").strip().lower()


def select_tags(probs: Sequence[float], tags: Sequence[Tag], options: TagOptions) -> list[str]:
    """The caption tags for one image's outputs: thresholded, excluded, sorted by confidence, capped."""
    excluded = {_canonical(t) for t in options.exclude}
    picked: list[tuple[float, str]] = []
    best_rating: tuple[float, str] | None = None
    for p, tag in zip(probs, tags, strict=True):
        p = float(p)
        if tag.category == RATING:
            best_rating = max(best_rating or (p, tag.name), (p, tag.name))
        elif (tag.category == CHARACTER and p >= options.character_threshold) or (
                tag.category != CHARACTER and p >= options.general_threshold):
            picked.append((p, tag.name))
    picked.sort(key=lambda pn: -pn[0])  # stable: equal confidences keep the CSV order
    names = [format_tag(n, options) for _, n in picked]
    names = [n for n in names if _canonical(n) not in excluded]
    if options.max_tags is not None:
        names = names[: options.max_tags]
    if options.rating and best_rating and _canonical(best_rating[1]) not in excluded:
        names.insert(0, format_tag(best_rating[1], options))
    return names


def caption_text(old: str, tags: list[str], mode: Mode, activation_tag: str = "") -> str:
    """The new caption: ``tags`` alone (missing/overwrite) or added after the existing tags of each line
    (append); the activation tag then goes first through the shared caption operation."""
    if mode == "append" and old.strip():
        def add(line: str) -> str:
            have = {_canonical(t) for t in split_tags(line)}
            return join_tags([*split_tags(line), *[t for t in tags if _canonical(t) not in have]])
        text = map_lines(old, add)
    else:
        text = join_tags(tags)
    return ops.activation_tag(activation_tag)(text) if activation_tag.strip() else text


# --- the model --------------------------------------------------------------------------------------------


def read_tags(csv_path: Path) -> list[Tag]:
    try:
        with csv_path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise TaggerModelError(f"{csv_path}: cannot read the tag list ({exc.strerror})") from exc
    header = rows[0] if rows else []
    if header[:3] != ["tag_id", "name", "category"]:
        raise TaggerModelError(f"{csv_path}: not a WD tag list (expected the header tag_id,name,category,...)")
    return [Tag(row[1], row[2]) for row in rows[1:] if len(row) >= 3]


def resolve_model(model: str) -> tuple[Path, Path]:
    """``model.onnx`` and ``selected_tags.csv`` from a local folder, or downloaded once from a hub id."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        missing = [n for n in (MODEL_FILE, TAGS_FILE) if not (folder / n).is_file()]
        if missing:
            raise TaggerModelError(f"{folder}: missing {', '.join(missing)}; a WD tagger folder holds "
                                   f"{MODEL_FILE} and {TAGS_FILE}")
        return folder / MODEL_FILE, folder / TAGS_FILE
    if Path(model).suffix or model.count("/") != 1:
        raise TaggerModelError(f"{model}: no such folder; give a folder with {MODEL_FILE} and {TAGS_FILE}, or a "
                               "hub id such as SmilingWolf/wd-vit-tagger-v3")
    from huggingface_hub import hf_hub_download

    try:
        return (Path(hf_hub_download(model, MODEL_FILE)), Path(hf_hub_download(model, TAGS_FILE)))
    except Exception as exc:  # offline, unknown repo, gated: all end the same way for the user
        first = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise TaggerModelError(f"{model}: cannot download the tagger ({first}); download {MODEL_FILE} and "
                               f"{TAGS_FILE} into a folder and give that folder") from exc


class WdTagger:
    def __init__(self, model: str) -> None:
        import onnxruntime as ort

        model_path, tags_path = resolve_model(model)
        self.tags = read_tags(tags_path)
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        try:
            self.session = ort.InferenceSession(str(model_path), providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise TaggerModelError(f"{model_path}: not a loadable ONNX model ({str(exc)[:120]})") from exc
        info = self.session.get_inputs()[0]
        self.input_name = info.name
        self.size = info.shape[1] if isinstance(info.shape[1], int) else 448
        self.fixed_batch = info.shape[0] if isinstance(info.shape[0], int) else None
        outputs = self.session.get_outputs()[0].shape[-1]
        if isinstance(outputs, int) and outputs != len(self.tags):
            raise TaggerModelError(f"{tags_path}: {len(self.tags)} tags but the model has {outputs} outputs; "
                                   "use the selected_tags.csv that came with the model")

    def preprocess(self, path: Path):
        import numpy as np
        from PIL import Image, ImageOps

        with Image.open(path) as im:
            image = ImageOps.exif_transpose(im)
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                rgba = image.convert("RGBA")
                image = Image.new("RGB", rgba.size, (255, 255, 255))
                image.paste(rgba, mask=rgba.split()[3])
            else:
                image = image.convert("RGB")
        side = max(image.size)
        square = Image.new("RGB", (side, side), (255, 255, 255))
        square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        # sd-scripts: area when shrinking, Lanczos when enlarging; PIL's BOX is its area filter
        resample = Image.Resampling.BOX if side >= self.size else Image.Resampling.LANCZOS
        square = square.resize((self.size, self.size), resample)
        return np.asarray(square, dtype=np.float32)[:, :, ::-1]  # RGB → BGR

    def predict(self, arrays: list):
        """Sigmoid outputs for preprocessed images, one row per image."""
        import numpy as np

        batch = np.ascontiguousarray(np.stack(arrays))
        n = len(arrays)
        if self.fixed_batch and n < self.fixed_batch:
            batch = np.concatenate([batch, np.zeros((self.fixed_batch - n, *batch.shape[1:]), np.float32)])
        return self.session.run(None, {self.input_name: batch})[0][:n]


# --- the caption operation --------------------------------------------------------------------------------


@dataclass
class TagResult:
    changes: list[ops.Change]
    tagged: int  # images run through the model
    total: int
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # unreadable images


def plan_tags(root: Path, model: str, options: TagOptions, mode: Mode = "missing", caption_ext: str = ".txt",
              batch_size: int = 8, progress: Callable[[int, int], None] | None = None) -> TagResult:
    """Tag the images that ``mode`` covers and return the caption changes (nothing is written)."""
    files = ops.load_captions(root, caption_ext)
    todo = [f for f in files if mode != "missing" or not f.text.strip()]
    result = TagResult([], len(todo), len(files))
    if not todo:
        return result
    tagger = WdTagger(model)
    done = 0
    for start in range(0, len(todo), batch_size):
        chunk = todo[start: start + batch_size]
        readable, arrays = [], []
        for item in chunk:
            try:
                arrays.append(tagger.preprocess(item.image))
                readable.append(item)
            except OSError as exc:  # PIL's UnidentifiedImageError is an OSError too
                result.skipped.append((item.image, str(exc)))
        if readable:
            for item, probs in zip(readable, tagger.predict(arrays), strict=True):
                new = caption_text(item.text, select_tags(probs, tagger.tags, options), mode,
                                   options.activation_tag)
                result.changes += ops.plan([item], lambda _text, new=new: new)
        done += len(chunk)
        if progress:
            progress(done, len(todo))
    return result


def tag_folder(root: Path, model: str, options: TagOptions, mode: Mode = "missing", caption_ext: str = ".txt",
               batch_size: int = 8, dry_run: bool = False) -> tuple[TagResult, Path | None]:
    """Plan and (unless ``dry_run``) write the changes through the caption journal, so `captions undo` reverts
    them; shows a progress bar on stderr."""
    from tqdm import tqdm

    with tqdm(total=0, desc="tagging", unit="img", file=sys.stderr, disable=None) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        result = plan_tags(root, model, options, mode, caption_ext, batch_size, progress)
    if dry_run:
        return result, None
    return result, journal.apply(root, result.changes, f"caption-images --tagger wd ({mode})")
