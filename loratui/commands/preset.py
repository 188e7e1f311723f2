"""`loratui preset …`: list, show, validate, export and import presets (YAML, or kohya_ss GUI JSON)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loratui.cli import CommandError
from loratui.core.config import TrainingConfig, check_config, iter_fields
from loratui.core.kohya_import import import_kohya_json
from loratui.core.presets import (
    PresetError,
    apply_overrides,
    diff_from_defaults,
    dump_preset,
    list_presets,
    load_config,
    resolve_preset,
    save_preset,
)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("preset", help="list, show, validate, export and import YAML presets")
    actions = parser.add_subparsers(dest="preset_command", metavar="ACTION", required=True)

    p = actions.add_parser("list", help="the presets that ship with loratui")
    p.set_defaults(func=cmd_list)

    p = actions.add_parser("show", help="every setting with its help (or those of one preset)")
    p.add_argument("preset", nargs="?", help="a preset file or shipped preset name")
    p.add_argument("--changed", action="store_true", help="only settings that differ from the defaults")
    p.set_defaults(func=cmd_show)

    p = actions.add_parser("validate", help="check preset files; exit 1 on an error")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=cmd_validate)

    p = actions.add_parser("export", help="write settings (a preset plus --set overrides) as a sparse YAML preset")
    p.add_argument("--from", dest="source", help="start from this preset or config instead of the defaults")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set network.network_dim=32 (repeatable)")
    p.add_argument("-o", "--output", required=True, help="the YAML file to write")
    p.set_defaults(func=cmd_export)

    p = actions.add_parser("import", help="read a YAML preset or a kohya_ss GUI .json config; write our YAML")
    p.add_argument("file")
    p.add_argument("-o", "--output", help="the YAML preset to write (default: print it)")
    p.set_defaults(func=cmd_import)


def load_preset_or_exit(name_or_path: str) -> TrainingConfig:
    try:
        return load_config(resolve_preset(name_or_path))
    except PresetError as exc:
        raise CommandError(str(exc)) from exc


def cmd_list(args: argparse.Namespace) -> int:
    for info in list_presets():
        print(f"{info.name:<20} {info.description}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    cfg = load_preset_or_exit(args.preset) if args.preset else TrainingConfig()
    changed = {path for path, _default, _value in diff_from_defaults(cfg)}
    section = None
    for spec in iter_fields():
        if args.changed and spec.path not in changed:
            continue
        if spec.section != section:
            section = spec.section
            print(f"{section}:")
        mark = "*" if spec.path in changed else " "
        print(f" {mark} {spec.name} = {cfg.get(spec.path)!r}\n      {spec.help}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    failed = False
    for name in args.files:
        try:
            cfg = load_config(name)
        except PresetError as exc:
            print(f"error: {exc}")
            failed = True
            continue
        # A preset leaves the model and dataset to the user: only report what the preset itself decides.
        problems = [i for i in check_config(cfg) if i.path not in (
            "model.pretrained_model_name_or_path", "dataset.train_data_dir")]
        for issue in problems:
            print(f"{issue.severity}: {name}: {issue.path} = {issue.value!r}: {issue.why}; {issue.fix}")
        errors = sum(i.severity == "error" for i in problems)
        failed |= bool(errors)
        if not errors:
            print(f"ok: {name}" + (f" ({len(problems)} note(s) above)" if problems else ""))
    return 1 if failed else 0


def cmd_export(args: argparse.Namespace) -> int:
    cfg = load_preset_or_exit(args.source) if args.source else TrainingConfig()
    try:
        cfg = apply_overrides(cfg, args.overrides)
        path = save_preset(cfg, args.output, comment="Exported by loratui preset export")
    except PresetError as exc:
        raise CommandError(str(exc)) from exc
    print(f"wrote {path} ({len(diff_from_defaults(cfg))} settings differ from the defaults)")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        if path.suffix.lower() == ".json":
            result = import_kohya_json(path)
            cfg = result.config
            for note in result.notes:
                print(f"note: {note}", file=sys.stderr)
            if result.ignored:
                keys = ", ".join(sorted(result.ignored))
                print(f"ignored {len(result.ignored)} kohya_ss key(s) with no loratui setting: {keys}",
                      file=sys.stderr)
            comment = f"Imported from kohya_ss config {path.name}"
        else:
            cfg = load_config(path)
            comment = f"Imported from {path.name}"
    except PresetError as exc:
        raise CommandError(str(exc)) from exc
    if args.output:
        try:
            save_preset(cfg, args.output, comment=comment)
        except PresetError as exc:
            raise CommandError(str(exc)) from exc
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(dump_preset(cfg, comment))
    return 0
