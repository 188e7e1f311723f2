"""Batch caption operations. Each one maps a caption's text to its new text; ``plan`` collects the changes
over a dataset so they can be previewed (a diff) before ``apply`` writes them."""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loratui.core.captions.text import NEW_FILE, decode, join_tags, map_lines, read_text, split_tags, tag_lists
from loratui.core.dataset.layout import IMAGE_EXTENSIONS

TextOp = Callable[[str], str]

# Extensions that are never caption text: writing a tag into them destroys the file.
BINARY_EXTENSIONS = frozenset({
    *IMAGE_EXTENSIONS, ".gif", ".tif", ".tiff", ".avif", ".heic", ".jxl", ".ico", ".psd", ".svg",
    ".npz", ".npy", ".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".onnx", ".gguf", ".pkl", ".pickle",
    ".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".zst", ".7z", ".rar", ".pdf", ".mp4", ".webm", ".mkv", ".mov",
    ".avi", ".mp3", ".wav", ".flac", ".exe", ".dll", ".so", ".dylib", ".pyc", ".db", ".sqlite",
})


class CaptionError(ValueError):
    """A caption operation that cannot run as asked; the message is one line naming the file or value."""


def check_caption_ext(ext: str) -> str:
    """The caption extension if it names a text file kind (``.txt``, ``.caption``); else ``CaptionError``."""
    if not ext.startswith(".") or len(ext) < 2:
        raise CaptionError(f"caption extension {ext!r} must start with a dot, e.g. .txt or .caption")
    if any(c in ext for c in "/\\\x00") or not ext.strip(".") or any(c.isspace() for c in ext):
        raise CaptionError(f"caption extension {ext!r} is not a file extension; use e.g. .txt or .caption")
    if ext.lower() in BINARY_EXTENSIONS:
        raise CaptionError(f"caption extension {ext!r} is an image or binary file type, not caption text; "
                           "use .txt or .caption")
    return ext


@dataclass(frozen=True)
class CaptionFile:
    image: Path
    caption: Path
    raw: bytes  # exact bytes on disk (b"" when missing)
    exists: bool

    @property
    def text(self) -> str:
        return decode(self.raw)[0]

    @property
    def folder(self) -> str:
        return self.image.parent.name


@dataclass(frozen=True)
class Change:
    path: Path
    old: bytes
    new: bytes
    existed: bool


def load_captions(root: Path, caption_ext: str = ".txt", pattern: str | None = None) -> list[CaptionFile]:
    """Every image's caption under ``root`` (one level of <repeats>_<name> folders, or flat), optionally
    filtered by a glob on the file name or a tag."""
    check_caption_ext(caption_ext)
    folders = [root, *sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))]
    files = []
    for folder in folders:
        for image in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()):
            caption = image.with_suffix(caption_ext)
            item = CaptionFile(image, caption, _read_bytes(caption), caption.exists())
            if pattern is None or matches(item, pattern):
                files.append(item)
    return files


def _read_bytes(caption: Path) -> bytes:
    try:
        return caption.read_bytes()
    except FileNotFoundError:
        return b""
    except OSError as exc:
        raise CaptionError(f"{caption}: cannot be read ({exc.strerror or exc}); fix or remove it first") from exc


def matches(item: CaptionFile, pattern: str) -> bool:
    if fnmatch.fnmatch(item.image.name, pattern) or fnmatch.fnmatch(str(item.image), pattern):
        return True
    return any(fnmatch.fnmatch(tag, pattern) for tags in tag_lists(item.text) for tag in tags)


def plan(files: list[CaptionFile], op: TextOp) -> list[Change]:
    """The changes ``op`` makes, each file written back in its own encoding and line ending. A caption that
    cannot be read faithfully stops the whole plan (``CaptionDecodeError`` names it): nothing is half done."""
    changes = []
    for item in files:
        text, fmt = read_text(item.raw, item.caption) if item.exists else ("", NEW_FILE)
        new = op(text)
        if new == text:
            continue
        new_raw = fmt.encode(new)
        if new_raw != item.raw:
            changes.append(Change(item.caption, item.raw, new_raw, item.exists))
    return changes


def edit(item: CaptionFile, new_text: str) -> Change:
    """The change that gives ``item`` the caption ``new_text`` (an editor's save), written in the file's own
    encoding and line ending; ``CaptionDecodeError`` when the file on disk cannot be read faithfully."""
    fmt = read_text(item.raw, item.caption)[1] if item.exists else NEW_FILE
    return Change(item.caption, item.raw, fmt.encode(new_text.replace("\r\n", "\n")), item.exists)


def diff(changes: list[Change], root: Path | None = None) -> str:
    out = []
    for change in changes:
        name = str(change.path.relative_to(root)) if root else str(change.path)
        old = decode(change.old)[0].splitlines(keepends=True)
        new = decode(change.new)[0].splitlines(keepends=True)
        lines = difflib.unified_diff(old, new, f"a/{name}", f"b/{name}", n=0)
        out += [line if line.endswith("\n") else line + "\n" for line in lines]
    return "".join(out)


# --- operations ----------------------------------------------------------------------------------------------


def _tags_arg(value: str, what: str) -> list[str]:
    tags = split_tags(value)
    if not tags:
        raise CaptionError(f"{what} {value!r} is empty; give at least one tag")
    if "\n" in value or "\r" in value:
        raise CaptionError(f"{what} {value!r} holds a line break; a tag is part of one line")
    return tags


def _text_arg(value: str, what: str) -> str:
    if not value.strip(" ,\t\r\n"):
        raise CaptionError(f"{what} {value!r} is empty; give some text")
    if "\n" in value or "\r" in value:
        raise CaptionError(f"{what} {value!r} holds a line break; each line of a caption is its own variant")
    return value


def activation_tag(tag: str) -> TextOp:
    """Put ``tag`` first on every line (moved if present, added if not). ``"ohwx, man"`` is two tags that go
    first together; running the op again changes nothing."""
    tags = _tags_arg(tag, "activation tag")

    def op(text: str) -> str:
        if not text.strip():
            return join_tags(tags)
        return map_lines(text, lambda line: join_tags([*tags, *[t for t in split_tags(line) if t not in tags]]))

    return op


def keep_tokens_for(tag: str) -> int:
    """The keep_tokens value that keeps an activation tag in front when shuffling: its comma parts."""
    return len(split_tags(tag)) or 1


def prefix(text_to_add: str) -> TextOp:
    _text_arg(text_to_add, "prefix")
    return lambda text: map_lines(text, lambda line: line if line.startswith(text_to_add) else text_to_add + line)


def suffix(text_to_add: str) -> TextOp:
    _text_arg(text_to_add, "suffix")
    return lambda text: map_lines(text, lambda line: line if line.endswith(text_to_add) else line + text_to_add)


def replace(old: str, new: str, regex: bool = False) -> TextOp:
    if not old:
        raise CaptionError("the search text is empty; give the text to replace")
    if regex:
        try:
            pattern = re.compile(old)
            pattern.sub(new, "")  # checks the replacement's group references (\2, \g<x>) now, not mid-batch
        except (re.error, IndexError) as exc:
            raise CaptionError(f"bad regular expression {old!r} -> {new!r}: {exc}") from exc
        return lambda text: pattern.sub(new, text)
    return lambda text: text.replace(old, new)


def _tag_op(fn: Callable[[list[str]], list[str]]) -> TextOp:
    return lambda text: map_lines(text, lambda line: join_tags(fn(split_tags(line))))


def _dedupe(tags: list[str]) -> list[str]:
    return list(dict.fromkeys(tags))


def merge_tags(target: str, synonyms: list[str]) -> TextOp:
    """Replace each synonym tag with ``target`` (once)."""
    target = join_tags(_tags_arg(target, "target tag"))
    names = {t for s in synonyms for t in _tags_arg(s, "synonym")}
    return _tag_op(lambda tags: _dedupe([target if t in names else t for t in tags]))


def remove_tags(names: list[str]) -> TextOp:
    drop = {t for name in names for t in _tags_arg(name, "tag")}
    return _tag_op(lambda tags: [t for t in tags if t not in drop])


def dedupe_tags() -> TextOp:
    return _tag_op(_dedupe)


def sort_tags(keep: int = 0) -> TextOp:
    if keep < 0:
        raise CaptionError(f"--keep {keep}: give 0 or more leading tags to keep")
    return _tag_op(lambda tags: tags[:keep] + sorted(tags[keep:]))


def tag_frequency(files: list[CaptionFile], per_folder: bool = False) -> dict[str, Counter[str]]:
    """Tag counts (each tag once per caption), over all captions or per folder."""
    result: dict[str, Counter[str]] = {}
    for item in files:
        key = item.folder if per_folder else "*"
        counter = result.setdefault(key, Counter())
        counter.update(list(dict.fromkeys(t for tags in tag_lists(item.text) for t in tags)))  # once per caption
    return result


def prune_rare(files: list[CaptionFile], min_count: int, keep: list[str] | None = None) -> TextOp:
    counts = tag_frequency(files)["*"] if files else Counter()
    protected = set(keep or [])
    rare = {t for t, n in counts.items() if n < min_count and t not in protected}
    return remove_tags(sorted(rare))
