"""A batch caption operation over 10,000 captions: seconds, files and bytes written (only changed files).

Run: .venv/bin/python tests/benchmarks/bench_captions.py [COUNT]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from loratui.core.captions import journal, ops


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "10_bench"
        folder.mkdir()
        for i in range(count):
            (folder / f"{i:05d}.png").write_bytes(b"")
            tags = "1girl, red hair, smile" if i % 4 else "1girl, blue hair"
            (folder / f"{i:05d}.txt").write_text(f"{tags}, image {i}")
        start = time.perf_counter()
        files = ops.load_captions(Path(tmp))
        changes = ops.plan(files, ops.merge_tags("happy", ["smile"]))
        journal.apply(Path(tmp), changes, "bench")
        seconds = time.perf_counter() - start
        written = sum(len(c.new) for c in changes)
        start = time.perf_counter()
        journal.undo(Path(tmp))
        undo_seconds = time.perf_counter() - start
    print(f"merge-tags over {count} captions: {seconds:.2f} s; changed {len(changes)} files, "
          f"{written:,} bytes written (unchanged files untouched); undo {undo_seconds:.2f} s")


if __name__ == "__main__":
    main()
