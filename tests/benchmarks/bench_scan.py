"""Scan speed: 10,000 generated images of mixed sizes and formats. Prints images/s and peak memory.

Run: .venv/bin/python tests/benchmarks/bench_scan.py [COUNT]
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from loratui.core.dataset import scan_dataset

SIZES = ((512, 512), (768, 512), (512, 768), (1024, 1024), (640, 448))
FORMATS = (("png", "PNG"), ("jpg", "JPEG"), ("webp", "WEBP"))


def make_images(root: Path, count: int) -> None:
    folder = root / "10_bench"
    folder.mkdir(parents=True)
    templates = {}
    for size in SIZES:
        for ext, fmt in FORMATS:
            path = root / f"t.{ext}"
            Image.new("RGB", size, (size[0] % 255, 90, 160)).save(path, fmt)
            templates[(size, ext)] = path.read_bytes()
            path.unlink()
    keys = list(templates)
    for i in range(count):
        size, ext = keys[i % len(keys)]
        # a unique trailing byte keeps files distinct for the duplicate check
        (folder / f"img_{i:05d}.{ext}").write_bytes(templates[(size, ext)] + i.to_bytes(4, "little"))
        (folder / f"img_{i:05d}.txt").write_text(f"bench, image {i}")


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_images(root, count)
        scan_dataset(root)  # warm the disk cache, as the goal states
        start = time.perf_counter()
        report = scan_dataset(root)
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"scanned {len(report.images)} images in {seconds:.2f} s: {len(report.images) / seconds:,.0f} images/s; "
          f"peak RSS {peak:.0f} MiB; {len(report.findings)} findings")


if __name__ == "__main__":
    main()
