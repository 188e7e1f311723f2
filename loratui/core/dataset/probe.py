"""Read what a check needs from an image's header, without decoding its pixels."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

# Pillow refuses to open images above twice its limit; we refuse above the limit itself, before decoding.
BOMB_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
_FORMAT_EXTENSIONS = {"PNG": (".png",), "JPEG": (".jpg", ".jpeg"), "WEBP": (".webp",), "BMP": (".bmp",)}


@dataclass(frozen=True)
class ImageProbe:
    size: tuple[int, int] | None = None
    format: str | None = None
    mode: str | None = None
    orientation: int = 1
    animated: bool = False
    truncated: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _looks_truncated(path: Path, fmt: str, file_size: int) -> bool:
    """Cheap end-of-file checks: PNG must end in IEND, JPEG in an EOI marker, RIFF/BMP sizes must match."""
    with open(path, "rb") as fh:
        if fmt == "PNG":
            fh.seek(max(0, file_size - 12))
            return b"IEND" not in fh.read()
        if fmt == "JPEG":
            fh.seek(max(0, file_size - 64))
            return b"\xff\xd9" not in fh.read()
        if fmt == "WEBP":
            head = fh.read(8)
            return int.from_bytes(head[4:8], "little") + 8 > file_size
        if fmt == "BMP":
            head = fh.read(6)
            return int.from_bytes(head[2:6], "little") > file_size
    return False


def probe_image(path: Path) -> ImageProbe:
    try:
        file_size = path.stat().st_size
    except OSError as exc:
        return ImageProbe(error=f"cannot be read ({exc.strerror})")
    if file_size == 0:
        return ImageProbe(error="empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                size, fmt, mode = im.size, im.format, im.mode
                if size[0] * size[1] > BOMB_PIXELS:
                    return ImageProbe(size=size, format=fmt, mode=mode,
                                      error=f"{size[0]}×{size[1]} is a decompression-bomb size; refused")
                # PNG keeps EXIF after the pixels, so reading it would decode the image: JPEG/WebP only.
                orientation = int(im.getexif().get(0x0112, 1) or 1) if fmt in ("JPEG", "WEBP") else 1
                animated = bool(getattr(im, "is_animated", False))
    except Image.DecompressionBombError:
        return ImageProbe(error="a decompression-bomb size; refused")
    except PermissionError:
        return ImageProbe(error="permission denied")
    except (OSError, SyntaxError, ValueError) as exc:
        return ImageProbe(error=f"not a readable image ({str(exc).splitlines()[0][:80]})")
    truncated = _looks_truncated(path, fmt, file_size)
    return ImageProbe(size, fmt, mode, orientation, animated, truncated)


def extension_matches(path: Path, fmt: str | None) -> bool:
    return fmt is None or path.suffix.lower() in _FORMAT_EXTENSIONS.get(fmt, (path.suffix.lower(),))
