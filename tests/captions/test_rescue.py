"""The rescue folder for caption edits the wizard could not write as it closed."""

from __future__ import annotations

from pathlib import Path

from loratui.core.captions import rescue


def test_kept_edits_never_overwrite_each_other_and_name_their_caption(tmp_path: Path) -> None:
    caption = tmp_path / "data" / "10_x" / "a.txt"
    first = rescue.keep(caption, "first draft", tmp_path / "kept")
    second = rescue.keep(caption, "second draft, é", tmp_path / "kept")  # the same second: a new name
    assert first != second
    edits = rescue.kept(tmp_path / "kept")
    assert [e.text_file.read_text(encoding="utf-8") for e in edits] == ["first draft", "second draft, é"]
    assert {e.caption for e in edits} == {caption.resolve()}


def test_a_damaged_entry_is_skipped(tmp_path: Path) -> None:
    where = tmp_path / "kept"
    good = rescue.keep(tmp_path / "b.txt", "kept text", where)
    (where / "orphan.txt.target").write_text(str(tmp_path / "c.txt"))  # its text file is gone
    (where / "bad.target").write_bytes(b"\xff\xfe\xfa")
    (where / "bad").write_text("x")
    assert [e.text_file for e in rescue.kept(where)] == [good]
    assert rescue.kept(tmp_path / "nothing-here") == []
