"""kohya's folder layout: ``<repeats>_<class tokens>`` subfolders of images with same-stem caption files."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CAPTION_EXTENSIONS = (".txt", ".caption")
TOOL_DIRS = (".loratui-cache", ".loratui-journal")


@dataclass
class Folder:
    path: Path
    repeats: int | None  # None: no '<repeats>_' prefix (sd-scripts skips it)
    class_tokens: str
    is_reg: bool = False
    images: list[Path] = field(default_factory=list)
    captions: list[Path] = field(default_factory=list)
    other: list[Path] = field(default_factory=list)
    loops: list[Path] = field(default_factory=list)  # entries that are symlink loops


def parse_folder_name(name: str) -> tuple[int | None, str]:
    """sd-scripts' rule (``config_util.generate_dreambooth_subsets_config_by_subdirs``): split the name at '_';
    the first part read as an integer is the repeats, the rest joined by '_' the class tokens. So ``5_`` (and
    ``5``) train with 5 repeats and empty class tokens; a name whose first part is not an integer has none."""
    tokens = name.split("_")
    try:
        repeats = int(tokens[0])
    except ValueError:
        return None, name
    return repeats, "_".join(tokens[1:])


def _is_loop(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def _list_folder(folder: Folder, caption_ext: str) -> Folder:
    for entry in sorted(folder.path.iterdir()):
        if entry.is_symlink() and _is_loop(entry):
            folder.loops.append(entry)
        elif entry.name.startswith("."):
            continue
        elif entry.is_dir():
            folder.other.append(entry)
        elif entry.suffix.lower() in IMAGE_EXTENSIONS:
            folder.images.append(entry)
        elif entry.suffix.lower() in {caption_ext.lower(), *CAPTION_EXTENSIONS}:
            folder.captions.append(entry)
        else:
            folder.other.append(entry)
    return folder


def find_folders(root: Path, caption_ext: str = ".txt", is_reg: bool = False,
                 repeats_override: dict[str, int] | None = None) -> tuple[list[Folder], bool]:
    """The dataset's folders (``root`` itself last when images lie in it), and whether ``root`` is a flat folder of
    images (no subfolders)."""
    overrides = repeats_override or {}
    subdirs = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")
               and not (p.is_symlink() and _is_loop(p))]
    folders = []
    for sub in subdirs:
        repeats, tokens = parse_folder_name(sub.name)
        folders.append(_list_folder(Folder(sub, overrides.get(sub.name, repeats), tokens, is_reg), caption_ext))
    # Images directly in ``root`` are listed (to say so) but never trained: sd-scripts' DreamBoothDataset reads
    # only ``<repeats>_<name>`` subfolders, so the root's listing has no repeat count.
    root_listing = _list_folder(Folder(root, None, root.name, is_reg), caption_ext)
    flat = not folders and bool(root_listing.images)
    return [*folders, *([root_listing] if root_listing.loops or root_listing.images else [])], flat
