"""`loratui captions DATASET_DIR <op>`: batch tag operations with --dry-run diffs, frequency and undo."""

from __future__ import annotations

import argparse
from pathlib import Path

from loratui.cli import CommandError
from loratui.core.captions import journal, ops


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("captions", help="batch caption/tag operations with preview and undo")
    parser.add_argument("dataset")
    # Options shared by every operation, accepted after the operation's name.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--caption-ext", default=".txt")
    common.add_argument("--filter", help="only captions whose image name or a tag matches this glob")
    common.add_argument("--dry-run", action="store_true", help="show the diff, change nothing")
    actions = parser.add_subparsers(dest="op", metavar="OP", required=True)

    def op(name: str, help_: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help_, parents=[common])
        p.set_defaults(func=cmd_captions)
        return p

    op("activation-tag", "put a tag first in every caption (moved if present)").add_argument("tag")
    op("prefix", "add text at the start of every caption").add_argument("text")
    op("suffix", "add text at the end of every caption").add_argument("text")
    p = op("replace", "search and replace text")
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--regex", action="store_true")
    p = op("merge-tags", "replace synonym tags by one tag")
    p.add_argument("target")
    p.add_argument("synonyms", nargs="+")
    op("remove-tags", "remove tags").add_argument("tags", nargs="+")
    p = op("prune", "remove tags used fewer than N times")
    p.add_argument("--min-count", type=int, required=True)
    p.add_argument("--keep", nargs="*", default=[], help="tags never pruned")
    op("dedupe", "remove repeated tags within a caption")
    op("sort", "sort tags alphabetically").add_argument("--keep", type=int, default=0, help="leading tags to keep")
    p = op("freq", "tag frequency table")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--per-folder", action="store_true")
    op("undo", "revert the last caption operation exactly").add_argument(
        "--force", action="store_true", help="undo even where a caption was edited since the operation")


def _text_op(args: argparse.Namespace, files: list[ops.CaptionFile]) -> ops.TextOp:
    name = args.op
    if name == "activation-tag":
        return ops.activation_tag(args.tag)
    if name == "prefix":
        return ops.prefix(args.text)
    if name == "suffix":
        return ops.suffix(args.text)
    if name == "replace":
        return ops.replace(args.old, args.new, args.regex)
    if name == "merge-tags":
        return ops.merge_tags(args.target, args.synonyms)
    if name == "remove-tags":
        return ops.remove_tags(args.tags)
    if name == "prune":
        return ops.prune_rare(files, args.min_count, args.keep)
    if name == "dedupe":
        return ops.dedupe_tags()
    return ops.sort_tags(args.keep)


def cmd_captions(args: argparse.Namespace) -> int:
    root = Path(args.dataset)
    if not root.is_dir():
        raise CommandError(f"{root}: not a folder; give the dataset folder")
    try:
        return _run(root, args)
    except ValueError as exc:  # CaptionError, CaptionDecodeError: one line naming the file or value
        raise CommandError(str(exc)) from exc


def _run(root: Path, args: argparse.Namespace) -> int:
    if args.op == "undo":
        undone = journal.undo(root, force=args.force)
        print("nothing to undo" if undone is None else f"undid '{undone[0]}' ({undone[1]} file(s) restored)")
        return 0
    if args.op == "freq":
        _print_frequency(ops.load_captions(root, args.caption_ext, args.filter), args)
        return 0
    text_op = _text_op(args, []) if args.op != "prune" else None  # bad arguments fail before any file is read
    if args.dry_run:
        files = ops.load_captions(root, args.caption_ext, args.filter)
        changes = ops.plan(files, text_op or _text_op(args, files))
        print(ops.diff(changes, root), end="")
        print(f"{len(changes)} of {len(files)} caption(s) would change (dry run)")
        return 0
    # Read, plan and write under the dataset's lock: a second operation cannot interleave with this one.
    with journal.dataset_lock(root):
        files = ops.load_captions(root, args.caption_ext, args.filter)
        changes = ops.plan(files, text_op or _text_op(args, files))
        entry = journal.apply(root, changes, " ".join([args.op, *_describe(args)]))
    if entry is None:
        print(f"no caption changed ({len(files)} checked); nothing recorded")
    else:
        print(f"changed {len(changes)} of {len(files)} caption(s); `loratui captions {root} undo` reverts it")
    if args.op == "activation-tag":
        print(f"set dataset.keep_tokens to {ops.keep_tokens_for(args.tag)} to keep it first when shuffling")
    return 0


def _print_frequency(files: list[ops.CaptionFile], args: argparse.Namespace) -> None:
    for folder, counter in ops.tag_frequency(files, args.per_folder).items():
        if args.per_folder:
            print(f"{folder}:")
        for tag, count in counter.most_common(args.top):
            print(f"{count:6d}  {tag}")


def _describe(args: argparse.Namespace) -> list[str]:
    return [str(v) for k, v in vars(args).items() if k in ("tag", "text", "old", "new", "target") and v]
