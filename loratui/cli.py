"""The ``loratui`` command line: the wizard by default, and a plain command for every wizard step.

Each command group lives in ``loratui.commands.<group>`` and exposes ``register(subparsers)``; a command sets
``func`` on its parser, which takes the parsed args and returns the exit code. Modules are imported here, but
none of them may import torch at module level: the ML stack is imported inside the command that needs it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from loratui import __version__
from loratui.core.crash import one_line, write_crash_report  # write_crash_report: also imported from here

# Order is the order of `loratui --help`.
COMMAND_MODULES = ("wizard", "dataset", "captions", "plan", "bench", "preset", "train", "check_model",
                   "compare")


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit code 2, no traceback."""


def build_parser() -> tuple[argparse.ArgumentParser, set[str]]:
    """The parser and the names of its commands."""
    parser = argparse.ArgumentParser(
        prog="loratui",
        description="Train Stable Diffusion LoRAs from the terminal. With no command, opens the wizard.",
    )
    parser.add_argument("--version", action="version", version=f"loratui {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"loratui.commands.{name}")
        module.register(sub)
    return parser, set(sub.choices)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser, commands = build_parser()
    # `loratui [DATASET_DIR] [--preset FILE]` opens the wizard: anything that is not a command goes to it.
    if "wizard" in commands and (not args_list or (
        args_list[0] not in commands and args_list[0] not in ("-h", "--help", "--version")
    )):
        args_list = ["wizard", *args_list]
    args = parser.parse_args(args_list)
    if not hasattr(args, "func"):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except CommandError as exc:
        print(f"loratui: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("loratui: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line for the user, the traceback in a file for the report
        report = write_crash_report(args_list)
        where = f"; crash report: {report}" if report else ""
        print(f"loratui: internal error: {one_line(exc)}{where}", file=sys.stderr)
        return 70
