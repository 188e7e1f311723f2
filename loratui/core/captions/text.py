"""Caption text: comma-separated tags (booru style) or sentences, one variant per line.

Caption files come in UTF-8 (with or without a BOM) or UTF-16 (with a BOM), with LF or CRLF line ends. An
operation reads a file into plain text (no BOM, ``\\n`` line ends) and writes it back in the file's own
encoding and line ending, so a tag is never glued onto UTF-16 bytes nor put after a ``\\r``.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path

_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


class CaptionDecodeError(ValueError):
    """A caption file that is not text loratui can read back and write faithfully."""


@dataclass(frozen=True)
class TextFormat:
    """How a caption file is stored: its codec, its byte-order mark (b"" for none) and its line ending."""

    codec: str = "utf-8"
    bom: bytes = b""
    newline: str = "\n"

    def encode(self, text: str) -> bytes:
        return self.bom + text.replace("\n", self.newline).encode(self.codec)


NEW_FILE = TextFormat()


def read_text(raw: bytes, source: Path | str = "<caption>") -> tuple[str, TextFormat]:
    """Plain text (``\\n`` line ends, no BOM) and the file's format; ``CaptionDecodeError`` names the file."""
    codec, bom = "utf-8", b""
    for mark, name in _BOMS:
        if raw.startswith(mark):
            codec, bom = name, mark
            break
    try:
        text = raw[len(bom):].decode(codec)
    except UnicodeDecodeError as exc:
        raise CaptionDecodeError(f"{source}: not UTF-8 or UTF-16 text (byte {exc.start + len(bom)}); convert it "
                                 "to UTF-8 first (e.g. iconv -t UTF-8)") from exc
    if "\x00" in text:
        raise CaptionDecodeError(f"{source}: holds NUL characters, so it is not a caption text file; check the "
                                 "caption extension")
    crlf = "\r\n" in text
    if crlf and text.count("\r\n") != text.count("\n"):
        raise CaptionDecodeError(f"{source}: mixes CRLF and LF line ends; make them one kind first")
    return (text.replace("\r\n", "\n") if crlf else text), TextFormat(codec, bom, "\r\n" if crlf else "\n")


def decode(raw: bytes) -> tuple[str, bool]:
    """Text and whether it was read as declared; text that is not UTF-8/UTF-16 is read as Latin-1 so that a
    viewer or the trainer never crashes on it (operations refuse such files instead: ``read_text``)."""
    try:
        return read_text(raw)[0], True
    except CaptionDecodeError:
        return raw.decode("latin-1"), False


def split_tags(line: str) -> list[str]:
    return [t.strip() for t in line.split(",") if t.strip()]


def join_tags(tags: list[str]) -> str:
    return ", ".join(tags)


def map_lines(text: str, fn) -> str:
    """Apply ``fn`` to each non-empty line; lines it leaves equal keep their exact original bytes."""
    ending = "\n" if text.endswith("\n") else ""
    lines = text[: len(text) - len(ending)].split("\n") if text else [""]
    out = []
    for line in lines:
        new = fn(line) if line.strip() else line
        out.append(line if new == line else new)
    return "\n".join(out) + ending


def tag_lists(text: str) -> list[list[str]]:
    return [split_tags(line) for line in text.splitlines() if line.strip()]
