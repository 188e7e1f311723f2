"""`loratui check-model PATH`: what a base-model checkpoint is, read from its header (no weights, no torch)."""

from __future__ import annotations

import argparse
from typing import get_args

from loratui.cli import CommandError
from loratui.core.checkpoint_info import CheckpointError, describe_checkpoint, describe_lines, loading_problem
from loratui.core.config import ModelFamily


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-model", help="family, prediction type, dtype and size of a base-model checkpoint")
    p.add_argument("path", help="a .safetensors / .ckpt checkpoint or a diffusers folder")
    p.add_argument("--family", choices=get_args(ModelFamily),
                   help="the model.model_family you plan to use; a disagreeing file is an error with the fix")
    p.set_defaults(func=cmd_check_model)


def cmd_check_model(args: argparse.Namespace) -> int:
    try:
        info = describe_checkpoint(args.path)
    except CheckpointError as exc:
        raise CommandError(str(exc)) from exc
    print("\n".join(describe_lines(info)))
    problem = loading_problem(info, args.family) if args.family else info.problem
    if problem:
        raise CommandError(problem)
    return 0
