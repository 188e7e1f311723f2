from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from loratui.core.captions import journal, ops


def _dataset(root: Path, captions: dict[str, bytes]) -> Path:
    folder = root / "10_sks"
    folder.mkdir(parents=True)
    for stem, raw in captions.items():
        Image.new("RGB", (8, 8)).save(folder / f"{stem}.png")
        if raw is not None:
            (folder / f"{stem}.txt").write_bytes(raw)
    return root


def _all_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.rglob("*.txt"))}


CAPTIONS = {
    "a": b"1girl, red hair, smile, red hair\n",
    "b": b"a photo of a woman, outdoors\nsecond variant, smile",
    "c": "\ufeffcafé, crème\r\n".encode("utf-16-le"),  # the BOM is added by the encoding below
    "d": b"",
    "e": None,
}


@pytest.mark.parametrize(("op", "expect_a"), [
    (ops.activation_tag("sks"), b"sks, 1girl, red hair, smile, red hair\n"),
    (ops.prefix("sks, "), b"sks, 1girl, red hair, smile, red hair\n"),
    (ops.suffix(", best"), b"1girl, red hair, smile, red hair, best\n"),
    (ops.replace("red", "blue"), b"1girl, blue hair, smile, blue hair\n"),
    (ops.replace(r"(\w+) hair", r"\1_hair", regex=True), b"1girl, red_hair, smile, red_hair\n"),
    (ops.merge_tags("happy", ["smile", "grin"]), b"1girl, red hair, happy\n"),
    (ops.remove_tags(["smile"]), b"1girl, red hair, red hair\n"),
    (ops.dedupe_tags(), b"1girl, red hair, smile\n"),
    (ops.sort_tags(keep=1), b"1girl, red hair, red hair, smile\n"),
])
def test_operations_and_undo_round_trip_to_the_byte(tmp_path, op, expect_a):
    root = _dataset(tmp_path, CAPTIONS)
    before = _all_bytes(root)
    changes = ops.plan(ops.load_captions(root), op)
    journal.apply(root, changes, "test")
    assert (root / "10_sks" / "a.txt").read_bytes() == expect_a
    assert journal.undo(root)[0] == "test"
    assert _all_bytes(root) == before
    assert not (root / "10_sks" / "e.txt").exists()


def test_untouched_captions_keep_their_bytes(tmp_path):
    root = _dataset(tmp_path, CAPTIONS)
    changes = ops.plan(ops.load_captions(root), ops.replace("outdoors", "indoors"))
    assert [c.path.name for c in changes] == ["b.txt"]
    journal.apply(root, changes, "r")
    assert (root / "10_sks" / "c.txt").read_bytes() == CAPTIONS["c"]  # UTF-16 with CRLF untouched
    assert (root / "10_sks" / "b.txt").read_bytes() == b"a photo of a woman, indoors\nsecond variant, smile"


def test_activation_tag_fills_missing_and_empty_captions(tmp_path):
    root = _dataset(tmp_path, CAPTIONS)
    journal.apply(root, ops.plan(ops.load_captions(root), ops.activation_tag("sks")), "tag")
    assert (root / "10_sks" / "e.txt").read_text() == "sks"
    assert (root / "10_sks" / "d.txt").read_text() == "sks"
    assert (root / "10_sks" / "b.txt").read_text() == "sks, a photo of a woman, outdoors\nsks, second variant, smile"
    assert ops.keep_tokens_for("sks") == 1


def test_dry_run_diff_and_filter(tmp_path):
    root = _dataset(tmp_path, CAPTIONS)
    files = ops.load_captions(root, pattern="smile")
    assert [f.image.name for f in files] == ["a.png", "b.png"]
    text = ops.diff(ops.plan(files, ops.remove_tags(["smile"])), root)
    assert "-1girl, red hair, smile, red hair" in text and "+1girl, red hair, red hair" in text
    assert _all_bytes(root) == _all_bytes(root)


def test_frequency_and_prune(tmp_path):
    root = _dataset(tmp_path, CAPTIONS)
    files = ops.load_captions(root)
    freq = ops.tag_frequency(files)["*"]
    assert freq["smile"] == 2 and freq["red hair"] == 1
    changes = ops.plan(files, ops.prune_rare(files, min_count=2))
    journal.apply(root, changes, "prune")
    assert (root / "10_sks" / "a.txt").read_text() == "smile\n"


def test_bad_regex_is_a_clear_error():
    with pytest.raises(ValueError, match="bad regular expression"):
        ops.replace("(", "x", regex=True)


def test_single_edit_save_is_atomic_and_undoable(tmp_path):
    root = _dataset(tmp_path, CAPTIONS)
    path = root / "10_sks" / "a.txt"
    change = ops.Change(path, path.read_bytes(), b"edited", True)
    journal.apply(root, [change], "edit a.txt")
    assert path.read_bytes() == b"edited"
    journal.undo(root)
    assert path.read_bytes() == CAPTIONS["a"]
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_killed_batch_leaves_each_caption_old_or_new_and_undo_restores(tmp_path):
    folder = tmp_path / "data" / "1_x"
    folder.mkdir(parents=True)
    old = {}
    for i in range(3000):
        raw = f"tag{i}, common, other".encode()
        (folder / f"{i:05d}.txt").write_bytes(raw)
        (folder / f"{i:05d}.png").write_bytes(b"")  # names are enough for captions
        old[f"{i:05d}.txt"] = raw
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from loratui.core.captions import journal, ops\n"
        f"root = Path({str(tmp_path / 'data')!r})\n"
        "changes = ops.plan(ops.load_captions(root), ops.activation_tag('sks'))\n"
        "journal.apply(root, changes, 'kill me')\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until the batch is part-way through
        if sum((folder / n).read_bytes().startswith(b"sks, ") for n in list(old)[::100]) >= 3:
            break
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    now = {n: (folder / n).read_bytes() for n in old}
    new_count = sum(raw == b"sks, " + old[n] for n, raw in now.items())
    assert all(raw in (old[n], b"sks, " + old[n]) for n, raw in now.items())
    assert 0 < new_count < len(old), "the kill must land mid-batch for this test to mean anything"
    out = subprocess.run([sys.executable, "-m", "loratui", "captions", str(tmp_path / "data"), "undo"],
                         capture_output=True, text=True)
    assert "undid 'kill me'" in out.stdout
    assert {n: (folder / n).read_bytes() for n in old} == old


def test_cli_dry_run_changes_nothing(tmp_path):
    root = _dataset(tmp_path, CAPTIONS)
    before = _all_bytes(root)
    out = subprocess.run([sys.executable, "-m", "loratui", "captions", str(root), "activation-tag", "sks",
                          "--dry-run"], capture_output=True, text=True)
    assert out.returncode == 0 and "+sks, 1girl" in out.stdout and "would change (dry run)" in out.stdout
    assert _all_bytes(root) == before
