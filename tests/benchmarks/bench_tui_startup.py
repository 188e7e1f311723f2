"""Wizard start-up: import time of the UI, and time until the first screen is drawn (headless).

Run: .venv/bin/python tests/benchmarks/bench_tui_startup.py
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time


def import_seconds() -> float:
    code = "import time; t = time.perf_counter(); import loratui.tui.app; print(time.perf_counter() - t)"
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout for _ in range(5)]
    return min(float(r) for r in runs)


async def first_screen_seconds() -> float:
    from loratui.tui.app import make_app

    start = time.perf_counter()
    app = make_app(plain_images=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        return time.perf_counter() - start


def main() -> None:
    imported = import_seconds()
    drawn = asyncio.run(first_screen_seconds())
    heavy = subprocess.run([sys.executable, "-c", "import sys, loratui.tui.app; "
                            "print([m for m in ('torch', 'diffusers', 'peft') if m in sys.modules])"],
                           capture_output=True, text=True).stdout.strip()
    print(f"import loratui.tui.app: {imported * 1000:.0f} ms (best of 5); first screen drawn: "
          f"{drawn * 1000:.0f} ms; ML modules loaded: {heavy}")


if __name__ == "__main__":
    main()
