"""The result of a dataset scan: images, findings, buckets."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from loratui.core.buckets import Size
from loratui.core.dataset_plan import EpochLayout, SourceImage
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
    layout: EpochLayout | None = None  # one epoch as sd-scripts lays it out (set by the scan)
    batch_size: int = 1

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    def sorted_findings(self) -> list[Finding]:
        return sorted(self.findings, key=lambda f: (SEVERITY_ORDER[f.severity], str(f.path), f.code))

    def source_images(self) -> list[SourceImage]:
        """The readable images of folders sd-scripts trains, in its order (training folders, then reg)."""
        usable = [i for i in self.images if i.size is not None and i.repeats >= 1]
        ordered = [i for i in usable if not i.is_reg] + [i for i in usable if i.is_reg]
        return [SourceImage(str(i.path), i.size, i.repeats, i.is_reg) for i in ordered]  # type: ignore[arg-type]

    def bucket_counts(self) -> dict[Size, int]:
        """Images-with-repeats per bucket, training and reg together (what the trainer batches over)."""
        return self.layout.bucket_counts if self.layout else {}

    def batches_per_epoch(self, batch: int) -> int:
        """Batches per epoch at ``batch``: the same figure as `loratui plan` and the trainer."""
        return self.layout.batches(batch) if self.layout else 0

    def folder_counts(self) -> list[FolderCount]:
        """Per-folder counts with image sizes, for the exact step figure."""
        result = []
        for name, info in self.folders.items():
            if info["repeats"] is None or info["repeats"] < 1:
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
            "batch_size": self.batch_size,
            "batches_per_epoch": self.batches_per_epoch(self.batch_size),
        }
        return json.dumps(data, indent=2, ensure_ascii=False)
