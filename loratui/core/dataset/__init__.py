"""Dataset scanning and checks: kohya layout, image headers, captions, duplicates, buckets (no torch)."""

from loratui.core.dataset.report import DatasetReport, Finding, ImageEntry
from loratui.core.dataset.scan import scan_dataset

__all__ = ["DatasetReport", "Finding", "ImageEntry", "scan_dataset"]
