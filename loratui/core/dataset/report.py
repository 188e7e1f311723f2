"""The result of a dataset scan: images, findings, buckets."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from loratui.core.buckets import Size
from loratui.core.planner import FolderCount

Severity = Literal["error", "warning", "info"]
SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Finding:
    severity: Severity
    code: str
    path: Path
    message: str
    fix: str

    def line(self) -> str:
        return f"{self.severity}: {self.path}: {self.message}; {self.fix}"


@dataclass
class ImageEntry:
    path: Path
    folder: str
    repeats: int
    is_reg: bool
    size: tuple[int, int] | None
    caption_path: Path | None
    bucket: Size | None = None
    crop_fraction: float = 0.0


@dataclass
class DatasetReport:
    root: Path
    flat: bool = False
    images: list[ImageEntry] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    folders: dict[str, dict] = field(default_factory=dict)  # name → {repeats, images, is_reg}

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    def sorted_findings(self) -> list[Finding]:
        return sorted(self.findings, key=lambda f: (SEVERITY_ORDER[f.severity], str(f.path), f.code))

    def bucket_counts(self, include_reg: bool = False) -> Counter[Size]:
        """Images-with-repeats per bucket (what the step planner and trainer batch over)."""
        counts: Counter[Size] = Counter()
        for image in self.images:
            if image.bucket is not None and (include_reg or not image.is_reg):
                counts[image.bucket] += image.repeats
        return counts

    def folder_counts(self) -> list[FolderCount]:
        """Per-folder counts with image sizes, for the exact step figure."""
        result = []
        for name, info in self.folders.items():
            if info["repeats"] is None:
                continue
            sizes = tuple(i.size for i in self.images if i.folder == name and i.size is not None)
            result.append(FolderCount(name, len(sizes), info["repeats"], info["is_reg"], sizes))
        return result

    def to_json(self) -> str:
        def encode(obj: object) -> object:
            return str(obj) if isinstance(obj, Path) else obj

        data = {
            "root": str(self.root),
            "flat": self.flat,
            "folders": self.folders,
            "images": len(self.images),
            "findings": [{k: encode(v) for k, v in asdict(f).items()} for f in self.sorted_findings()],
            "buckets": {f"{w}x{h}": n for (w, h), n in sorted(self.bucket_counts().items())},
        }
        return json.dumps(data, indent=2, ensure_ascii=False)
