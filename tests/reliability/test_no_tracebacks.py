"""Class 6: an unexpected exception anywhere in a command is one line plus a crash report, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# A command with a bug: the captions command raises something no handler expects.
BUGGY = textwrap.dedent("""
    import sys
    import loratui.commands.captions as captions
    def buggy(args):
        raise KeyError("boom\\nsecond line")
    captions.cmd_captions = buggy
    from loratui.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_unexpected_exception_is_one_line_with_a_crash_report(tmp_path):
    (tmp_path / "data").mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "LORATUI_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", BUGGY, "captions", str(tmp_path / "data"), "dedupe"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 70
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert lines[0].startswith("loratui: internal error: KeyError:")
    report = Path(lines[0].rsplit("crash report: ", 1)[1])
    assert report.parent == tmp_path / "home" / "crash-reports"
    text = report.read_text()
    assert "Traceback" in text and "buggy" in text and "'dedupe'" in text
