"""Start the real app in a real terminal (tmux), type keys, read the screen."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def _screen(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout


def _wait_for(session: str, text: str, timeout: float = 600) -> str:
    # a deadline of minutes, not seconds: the first screen needs the imports, slow on a busy 2-core machine
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        screen = _screen(session)
        if text in screen:
            return screen
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never appeared; screen:\n{_screen(session)}")


def test_wizard_in_tmux(demo_dir, tmp_path):
    session = f"loratui-smoke-{id(tmp_path)}"
    command = (f"LORATUI_HOME={tmp_path} LORATUI_PLAIN_IMAGES=1 {sys.executable} -m loratui "
               f"{demo_dir / 'dataset'} --preset {demo_dir / 'demo.yaml'}")
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24", command], check=True)
    try:
        screen = _wait_for(session, "10 images in 4_sks toy")
        assert "1 Dataset" in screen and "5 Train" in screen
        subprocess.run(["tmux", "send-keys", "-t", session, "C-n"], check=True)
        screen = _wait_for(session, "Tag frequency")
        assert "toy_00.png" in screen
        subprocess.run(["tmux", "send-keys", "-t", session, "C-n"], check=True)
        _wait_for(session, "Total steps")
        subprocess.run(["tmux", "send-keys", "-t", session, "C-q"], check=True)
        deadline = time.monotonic() + 300
        while subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode == 0:
            assert time.monotonic() < deadline, "the app did not quit on Ctrl+Q"
            time.sleep(0.2)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
