"""Caption list responsiveness at 10,000 images: load time, filter time and cursor-move time (headless).

Run: .venv/bin/python tests/benchmarks/bench_tui_captions.py [COUNT]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image


def make_dataset(root: Path, count: int) -> Path:
    folder = root / "data" / "10_bench"
    folder.mkdir(parents=True)
    Image.new("RGB", (64, 64), (200, 10, 10)).save(root / "t.png")
    data = (root / "t.png").read_bytes()
    for i in range(count):
        (folder / f"img_{i:05d}.png").write_bytes(data)
        (folder / f"img_{i:05d}.txt").write_text(f"sks, tag{i % 50}, {'smile' if i % 3 else 'frown'}")
    return root / "data"


async def measure(dataset: Path) -> dict[str, float]:
    from textual.widgets import DataTable, Input

    from loratui.tui.app import make_app
    from loratui.tui.steps.captions import CaptionsStep

    app = make_app(dataset_dir=dataset, plain_images=True)
    times = {}
    async with app.run_test(size=(120, 40)) as pilot:
        start = time.perf_counter()
        while app.screen.query_one("#images", DataTable).row_count == 0:
            await app.workers.wait_for_complete()
            await pilot.pause(0.01)
        times["scan + list 10k"] = time.perf_counter() - start
        await pilot.press("ctrl+n")
        table = app.screen.query_one("#images", DataTable)
        table.focus()
        start = time.perf_counter()
        for _ in range(50):
            await pilot.press("down")
        await pilot.pause()
        times["cursor move (per key)"] = (time.perf_counter() - start) / 50
        start = time.perf_counter()
        step = app.screen.query_one(CaptionsStep)
        app.screen.query_one("#caption-filter", Input).value = "frown"
        await pilot.pause()
        while table.row_count == len(step.files):
            await pilot.pause(0.01)
        times["filter to 'frown'"] = time.perf_counter() - start
    return times


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    with tempfile.TemporaryDirectory() as tmp:
        dataset = make_dataset(Path(tmp), count)
        times = asyncio.run(measure(dataset))
    print(", ".join(f"{k}: {v * 1000:.0f} ms" for k, v in times.items()) + f" ({count} images)")


if __name__ == "__main__":
    main()
