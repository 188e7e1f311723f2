"""Scan a dataset folder and report every problem with its file and the fix. Reads headers, never modifies."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from loratui.core.buckets import BucketSpec, assign_bucket, make_buckets
from loratui.core.dataset.layout import Folder, find_folders
from loratui.core.dataset.probe import ImageProbe, extension_matches, probe_image
from loratui.core.dataset.report import DatasetReport, Finding, ImageEntry
from loratui.core.dataset_plan import layout_epoch

MIN_IMAGES = 15  # the guides' minimum for a usable LoRA
MAX_ASPECT = 4.0
Progress = Callable[[int, int], None]


def scan_dataset(
    root: str | Path,
    *,
    caption_ext: str = ".txt",
    reg_dir: str | Path | None = None,
    resolution: int = 512,
    bucket_spec: BucketSpec | None = None,
    batch_size: int = 1,
    near_duplicates: bool = False,
    repeats_override: dict[str, int] | None = None,
    progress: Progress | None = None,
) -> DatasetReport:
    """Check ``root`` (and an optional regularisation folder). ``progress(done, total)`` is called as images
    are read."""
    root = Path(root)
    report = DatasetReport(root)
    if not root.is_dir():
        report.findings.append(Finding("error", "no-folder", root, "not a folder",
                                       "give the folder that holds your <repeats>_<name> image folders"))
        return report
    spec = bucket_spec or BucketSpec(resolution=(resolution, resolution))
    folders, report.flat = find_folders(root, caption_ext, repeats_override=repeats_override)
    if reg_dir:
        reg_root = Path(reg_dir)
        if reg_root.is_dir():
            folders += find_folders(reg_root, caption_ext, is_reg=True, repeats_override=repeats_override)[0]
        else:
            report.findings.append(Finding("error", "no-folder", reg_root, "regularisation folder not found",
                                           "fix the path or leave the regularisation folder empty"))
    _check_layout(report, folders, Path(reg_dir) if reg_dir else None)
    total = sum(len(f.images) for f in folders if f.repeats is not None)
    done = 0
    buckets = make_buckets(spec) if spec.enabled and not spec.no_upscale else None
    for folder in folders:
        if folder.repeats is None or folder.repeats < 1:
            continue  # reported once as no-repeats / zero-repeats: sd-scripts never reads these images
        for image in folder.images:
            _check_image(report, folder, image, caption_ext, resolution, spec, buckets)
            done += 1
            if progress is not None and (done % 50 == 0 or done == total):
                progress(done, total)
        _check_captions(report, folder, caption_ext)
    report.batch_size = batch_size
    report.layout = layout_epoch(report.source_images(), spec)
    _check_counts(report)
    _check_duplicates(report, near_duplicates)
    _check_buckets(report, batch_size)
    return report


def _add(report: DatasetReport, severity: str, code: str, path: Path, message: str, fix: str) -> None:
    report.findings.append(Finding(severity, code, path, message, fix))  # type: ignore[arg-type]


def _check_layout(report: DatasetReport, folders: list[Folder], reg_root: Path | None) -> None:
    for folder in folders:
        report.folders[folder.path.name] = {"repeats": folder.repeats, "images": len(folder.images),
                                            "is_reg": folder.is_reg}
        for loop in folder.loops:
            _add(report, "error", "symlink-loop", loop, "symbolic link loop", "remove or fix the link")
        if folder.path in (report.root, reg_root):
            _check_loose_images(report, folder)
        elif folder.repeats is None and folder.images:
            _add(report, "error", "no-repeats", folder.path,
                 f"folder has no repeat count, so sd-scripts silently skips its {len(folder.images)} images",
                 f"rename it to e.g. '10_{folder.path.name}' (10 repeats)")
        if folder.repeats is not None and folder.repeats < 1:
            _add(report, "error", "zero-repeats", folder.path,
                 f"repeat count {folder.repeats} trains none of its images (sd-scripts skips the folder)",
                 "use at least 1 repeat")


def _check_loose_images(report: DatasetReport, folder: Folder) -> None:
    """Images directly in the dataset (or regularisation) folder: sd-scripts trains only its subfolders."""
    if not folder.images:
        return
    fix = f"move them into a subfolder such as '10_{folder.path.name}' (10 repeats, class tokens from the name)"
    if report.flat and folder.path == report.root:
        _add(report, "error", "flat-folder", folder.path,
             f"{len(folder.images)} images sit directly in the dataset folder; sd-scripts (and loratui) train only "
             "<repeats>_<name> subfolders, so none would be trained", fix)
    else:
        _add(report, "warning", "loose-images", folder.path,
             f"{len(folder.images)} image(s) directly in this folder are not trained (sd-scripts ignores them)", fix)


def _check_image(report: DatasetReport, folder: Folder, image: Path, caption_ext: str, resolution: int,
                 spec: BucketSpec, buckets: list) -> None:
    probe = probe_image(image)
    if not probe.ok:
        error = probe.error or "unreadable"
        if "truncated" in error:
            _add(report, "error", "truncated", image, "the file is cut short (truncated download or copy)",
                 "copy or download it again")
            return
        code = next((c for key, c in (("0 bytes", "empty-file"), ("bomb", "bomb"), ("permission", "permission"))
                     if key in error), "unreadable")
        _add(report, "error", code, image, error, "replace or delete the file")
        return
    _image_findings(report, image, probe, resolution)
    caption = image.with_suffix(caption_ext)
    entry = ImageEntry(image, folder.path.name, folder.repeats or 0, folder.is_reg, probe.size,
                       caption if caption.exists() else None)
    if probe.size and folder.repeats:
        # The stored size, as sd-scripts buckets it (imagesize, EXIF orientation not read).
        assignment = assign_bucket(probe.size, spec, buckets)
        entry.bucket, entry.crop_fraction = assignment.bucket, assignment.crop_fraction
    report.images.append(entry)


def _image_findings(report: DatasetReport, image: Path, probe: ImageProbe, resolution: int) -> None:
    w, h = probe.size or (0, 0)
    if probe.truncated:
        _add(report, "error", "truncated", image, "the file is cut short (truncated download or copy)",
             "copy or download it again")
    if not extension_matches(image, probe.format):
        _add(report, "warning", "wrong-extension", image, f"is a {probe.format} file with a {image.suffix} name",
             f"rename it to .{(probe.format or '').lower().replace('jpeg', 'jpg')}")
    if probe.animated:
        _add(report, "warning", "animated", image, "animated image: only the first frame is trained",
             "export the frame you want as a still image")
    if probe.orientation not in (0, 1):
        turned = "sideways" if probe.orientation >= 5 else "upside down or mirrored"
        _add(report, "warning", "exif-rotated", image,
             f"EXIF orientation {probe.orientation}: viewers turn it, but sd-scripts (and loratui, to match it) "
             f"ignore the tag, so training buckets it as {w}×{h} and sees it {turned}",
             "save the image with the rotation applied to its pixels (e.g. `exiftran -ai`, or rotate and re-save)")
    _mode_findings(report, image, probe.mode or "")
    if min(w, h) < resolution:
        _add(report, "warning", "small", image, f"{w}×{h} is smaller than the training resolution {resolution}",
             "it will be upscaled and look soft; use a larger source or enable bucket_no_upscale")
    elif w % 64 or h % 64:
        _add(report, "info", "not-64", image, f"{w}×{h} is not a multiple of 64",
             "buckets crop it slightly; `loratui resize` crops to multiples of 64 without touching originals")
    if w and h and max(w, h) / min(w, h) > MAX_ASPECT:
        _add(report, "warning", "aspect", image, f"extreme aspect ratio {max(w, h) / min(w, h):.1f}:1",
             "crop it closer to the subject; buckets stop at 4:1")


def _mode_findings(report: DatasetReport, image: Path, mode: str) -> None:
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and image.suffix.lower() == ".png"):
        _add(report, "warning", "alpha" if mode != "P" else "palette", image,
             f"{mode} image: transparent areas train as black",
             "flatten it onto the background you want (RGB)")
    elif mode == "CMYK":
        _add(report, "warning", "cmyk", image, "CMYK image: colours shift when converted",
             "convert it to RGB in an image editor")
    elif mode.startswith("I;16") or mode in ("I", "F"):
        _add(report, "warning", "16-bit", image, f"{mode} (high bit depth) image is reduced to 8 bits",
             "export it as 8-bit RGB")
    elif mode in ("L", "1"):
        _add(report, "info", "grayscale", image, "grayscale image", "fine if the subject is meant to be grey")


def _read_caption(path: Path) -> tuple[str | None, bool]:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig"), True
    except UnicodeDecodeError:
        return raw.decode("latin-1"), False


def _check_captions(report: DatasetReport, folder: Folder, caption_ext: str) -> None:
    stems: dict[str, list[Path]] = defaultdict(list)
    for image in folder.images:
        stems[image.stem].append(image)
    for _stem, images in stems.items():
        if len(images) > 1:
            names = ", ".join(p.name for p in images)
            _add(report, "error", "same-stem", images[0], f"{names} share one caption file",
                 "rename one so each image has its own caption")
    for image in folder.images:
        caption = image.with_suffix(caption_ext)
        if not caption.exists():
            fallback = (f"the folder's class tokens '{folder.class_tokens}'" if folder.class_tokens
                        else "an empty caption (the folder name has no class tokens)")
            _add(report, "warning", "missing-caption", image, f"no {caption_ext} caption: trains with {fallback}",
                 "write a caption or run `loratui caption-images`")
            continue
        try:
            text, utf8 = _read_caption(caption)
        except OSError as exc:
            _add(report, "error", "unreadable-caption", caption, f"cannot be read ({exc.strerror})",
                 "fix its permissions")
            continue
        if not utf8:
            _add(report, "warning", "not-utf8", caption, "caption is not UTF-8 (read as Latin-1)",
                 "re-save it as UTF-8 so accents and symbols survive")
        if not text.strip():
            _add(report, "error", "empty-caption", caption, "empty caption file (sd-scripts stops on it)",
                 "write a caption or delete the file to fall back to the class tokens")
    image_stems = {p.stem for p in folder.images}
    for caption in folder.captions:
        if caption.suffix.lower() == caption_ext.lower() and caption.stem not in image_stems:
            _add(report, "warning", "orphan-caption", caption, "caption without an image",
                 "delete it, or restore its image")


def _check_counts(report: DatasetReport) -> None:
    train = [i for i in report.images if not i.is_reg]
    if 0 < len(train) < MIN_IMAGES:
        _add(report, "warning", "few-images", report.root, f"only {len(train)} training images",
             f"the guides recommend {MIN_IMAGES} or more varied images")
    if not train and not any(f.code in ("no-repeats",) for f in report.findings):
        _add(report, "error", "no-images", report.root, "no training images found",
             "put .png/.jpg/.webp/.bmp images in <repeats>_<name> subfolders")


def _check_duplicates(report: DatasetReport, near: bool) -> None:
    by_hash: dict[str, list[Path]] = defaultdict(list)
    for image in report.images:
        with open(image.path, "rb") as fh:
            by_hash[hashlib.blake2b(fh.read(), digest_size=16).hexdigest()].append(image.path)
    exact = set()
    for paths in by_hash.values():
        for dup in paths[1:]:
            exact.add(dup)
            _add(report, "warning", "duplicate", dup, f"exact duplicate of {paths[0].name}",
                 "delete one copy (duplicates are trained twice as often)")
    if near:
        from loratui.core.dataset.similar import near_duplicate_pairs

        for a, b, distance in near_duplicate_pairs([i.path for i in report.images if i.path not in exact]):
            _add(report, "info", "near-duplicate", b, f"looks almost the same as {a.name} (distance {distance})",
                 "keep the better one unless they differ on purpose")


def _check_buckets(report: DatasetReport, batch_size: int) -> None:
    for image in report.images:
        if image.crop_fraction > 0.25:
            _add(report, "info", "crop", image.path, f"bucket {image.bucket[0]}×{image.bucket[1]} crops "
                 f"{image.crop_fraction:.0%} of the image", "crop it yourself to keep what matters")
    if batch_size > 1:
        for (w, h), count in sorted(report.bucket_counts().items()):
            if count % batch_size:
                _add(report, "info", "partial-batch", report.root,
                     f"bucket {w}×{h} holds {count} images-with-repeats, not a multiple of batch {batch_size}",
                     "its last batch is smaller; harmless, but counts as a full step")
