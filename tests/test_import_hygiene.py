"""The wizard and the core must start without the ML stack: importing them may not pull in torch & co."""

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "diffusers", "peft", "transformers", "accelerate", "bitsandbytes")


@pytest.mark.parametrize("module", ["loratui.core", "loratui.cli", "loratui.tui"])
def test_module_imports_without_ml_stack(module: str) -> None:
    code = (
        "import importlib, json, pkgutil, sys\n"
        f"pkg = importlib.import_module({module!r})\n"
        # import every submodule too, so a lazy import hidden in a leaf module is caught
        "for info in pkgutil.walk_packages(getattr(pkg, '__path__', []), pkg.__name__ + '.'):\n"
        "    importlib.import_module(info.name)\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_cli_builds_all_commands_without_ml_stack() -> None:
    code = (
        "import json, sys\n"
        "from loratui.cli import build_parser\n"
        "build_parser()\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
