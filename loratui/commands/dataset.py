"""`loratui check`, `resize` and `caption-images`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loratui.cli import CommandError
from loratui.core.buckets import BucketSpec
from loratui.core.dataset import scan_dataset
from loratui.core.dataset.report import DatasetReport

WD_DEFAULT_MODEL = "SmilingWolf/wd-v1-4-convnext-tagger-v2"  # sd-scripts' default tagger


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="check a dataset: layout, images, captions, duplicates, buckets")
    p.add_argument("dataset", help="the folder with <repeats>_<name> subfolders")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--caption-ext", default=".txt", help="caption file extension (default .txt)")
    p.add_argument("--reg", help="regularisation folder")
    p.add_argument("--resolution", type=int, default=512, help="training resolution (default 512)")
    p.add_argument("--batch", type=int, default=1, help="batch size: batches per epoch and partial batches")
    p.add_argument("--bucket-no-upscale", action="store_true",
                   help="bucket as sd-scripts' --bucket_no_upscale does (never enlarge images)")
    p.add_argument("--near-duplicates", action="store_true", help="also find near duplicates (decodes images)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("resize", help="copy a dataset with images cropped/resized to multiples of 64")
    p.add_argument("dataset")
    p.add_argument("--to", type=int, default=512, help="short side in pixels (default 512)")
    p.add_argument("--out", required=True, help="new folder (the originals are never touched)")
    p.set_defaults(func=cmd_resize)

    p = sub.add_parser("caption-images", help="caption images with BLIP or tag them with a WD tagger "
                                              "(skips images that have captions)")
    p.add_argument("dataset")
    p.add_argument("--tagger", choices=("blip", "wd"), default="blip",
                   help="blip: sentences (photos); wd: booru tags with a WD 1.4/v3 ONNX tagger (anime)")
    p.add_argument("--model", help=f"hub id or local folder (required for blip; wd default {WD_DEFAULT_MODEL})")
    p.add_argument("--prefix", default="", help="blip: text put before every caption, e.g. 'sks person, '")
    p.add_argument("--overwrite", action="store_true", help="also re-caption images that have a caption")
    p.add_argument("--caption-ext", default=".txt")
    wd = p.add_argument_group("wd tagger")
    wd.add_argument("--mode", choices=("missing", "append", "overwrite"), default=None,
                    help="missing: only images without a caption (default); append: add new tags; overwrite")
    wd.add_argument("--general-threshold", type=float, default=0.35, help="default 0.35")
    wd.add_argument("--character-threshold", type=float, default=0.85, help="default 0.85")
    wd.add_argument("--rating", action="store_true", help="add the most likely rating tag (off by default)")
    wd.add_argument("--exclude", default="", help="comma-separated tags never written")
    wd.add_argument("--max-tags", type=int, help="keep only the N most confident tags")
    wd.add_argument("--activation-tag", default="", help="tag kept first in every caption, e.g. 'sks girl'")
    wd.add_argument("--keep-underscores", action="store_true", help="write long_hair, not long hair")
    wd.add_argument("--no-escape", action="store_true", help="write (cosplay), not \\(cosplay\\)")
    wd.add_argument("--batch-size", type=int, default=8)
    wd.add_argument("--dry-run", action="store_true", help="show the diff, change nothing")
    p.set_defaults(func=cmd_caption_images)


def print_report(report: DatasetReport) -> None:
    for name, info in report.folders.items():
        repeats = "no repeats (skipped)" if info["repeats"] is None else f"{info['repeats']} repeats"
        kind = " [reg]" if info["is_reg"] else ""
        print(f"{name}{kind}: {info['images']} images, {repeats}")
    counts = report.bucket_counts()
    if counts:
        print("buckets (images × repeats, reg included):")
        for (w, h), n in sorted(counts.items(), key=lambda kv: -kv[1]):
            print(f"  {w:>4}×{h:<4} {n}")
        print(f"batches per epoch: {report.batches_per_epoch(report.batch_size)} at batch {report.batch_size} "
              "(as sd-scripts runs it; `loratui plan` and the trainer give the same)")
    for finding in report.sorted_findings():
        print(finding.line())
    totals = {s: sum(f.severity == s for f in report.findings) for s in ("error", "warning", "info")}
    print(f"{len(report.images)} images: {totals['error']} error(s), {totals['warning']} warning(s), "
          f"{totals['info']} note(s)")


def cmd_check(args: argparse.Namespace) -> int:
    if not Path(args.dataset).is_dir():
        raise CommandError(f"{args.dataset}: not a folder; give the folder that holds your image folders")
    if args.batch < 1:
        raise CommandError(f"--batch {args.batch}: use 1 or more")
    spec = BucketSpec(resolution=(args.resolution, args.resolution), no_upscale=args.bucket_no_upscale)
    report = scan_dataset(args.dataset, caption_ext=args.caption_ext, reg_dir=args.reg, resolution=args.resolution,
                          bucket_spec=spec, batch_size=args.batch, near_duplicates=args.near_duplicates)
    if args.json:
        print(report.to_json())
    else:
        print_report(report)
    return 1 if report.errors else 0


def cmd_resize(args: argparse.Namespace) -> int:
    from loratui.core.resize import resize_dataset

    src = Path(args.dataset)
    if not src.is_dir():
        raise CommandError(f"{src}: not a folder")
    if args.to < 64 or args.to % 64:
        raise CommandError(f"--to {args.to}: use a multiple of 64, such as 512 or 768")
    try:
        problems = resize_dataset(src, Path(args.out), args.to)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    for path, problem in problems:
        print(f"skipped {path}: {problem}", file=sys.stderr)
    print(f"wrote {args.out}")
    return 1 if problems else 0


def cmd_caption_images(args: argparse.Namespace) -> int:
    if not Path(args.dataset).is_dir():
        raise CommandError(f"{args.dataset}: not a folder; give the dataset folder")
    if args.tagger == "wd":
        return _tag_images_wd(args)
    if not args.model:
        raise CommandError("--model is required with the BLIP captioner: a hub id or a local folder")
    from loratui.train.autocaption import CaptionModelError, caption_folder

    try:
        written, skipped = caption_folder(Path(args.dataset), args.model, prefix=args.prefix,
                                          overwrite=args.overwrite, caption_ext=args.caption_ext)
    except CaptionModelError as exc:
        raise CommandError(str(exc)) from exc
    print(f"captioned {written} image(s); {skipped} already had captions")
    return 0


def _tag_images_wd(args: argparse.Namespace) -> int:
    from loratui.train.tagger_wd import TaggerModelError, TagOptions, tag_folder

    root = Path(args.dataset)
    mode = args.mode or ("overwrite" if args.overwrite else "missing")
    for name in ("general_threshold", "character_threshold"):
        if not 0 < getattr(args, name) <= 1:
            raise CommandError(f"--{name.replace('_', '-')} {getattr(args, name)}: use a value between 0 and 1")
    if args.batch_size < 1 or (args.max_tags is not None and args.max_tags < 1):
        raise CommandError("--batch-size and --max-tags must be at least 1")
    options = TagOptions(general_threshold=args.general_threshold, character_threshold=args.character_threshold,
                         rating=args.rating, exclude=[t.strip() for t in args.exclude.split(",") if t.strip()],
                         max_tags=args.max_tags, replace_underscores=not args.keep_underscores,
                         escape=not args.no_escape, activation_tag=args.activation_tag)
    try:
        result, entry = tag_folder(root, args.model or WD_DEFAULT_MODEL, options, mode, args.caption_ext,
                                   args.batch_size, dry_run=args.dry_run)
    except TaggerModelError as exc:
        raise CommandError(str(exc)) from exc
    for path, problem in result.skipped:
        print(f"skipped {path}: {problem}", file=sys.stderr)
    if args.dry_run:
        from loratui.core.captions.ops import diff

        print(diff(result.changes, root), end="")
        print(f"{len(result.changes)} of {result.total} caption(s) would change (dry run)")
    else:
        print(f"tagged {result.tagged} image(s), changed {len(result.changes)} of {result.total} caption(s)"
              + (f"; `loratui captions {root} undo` reverts it" if entry else ""))
    return 1 if result.skipped else 0
