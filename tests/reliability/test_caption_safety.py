"""Class 2: caption operations touch only caption files, all or nothing, and undo never discards an edit."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loratui.core.atomic import atomic_write_bytes
from loratui.core.captions import journal, ops

REPO = Path(__file__).resolve().parents[2]
PNG = bytes.fromhex("89504e470d0a1a0a") + b"fake image body"


def loratui(*args: str, cwd: Path | None = None, umask: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    preexec = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.run([sys.executable, "-m", "loratui", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120, preexec_fn=preexec)


def dataset(root: Path, captions: dict[str, bytes | None], folder: str = "10_sks") -> Path:
    (root / folder).mkdir(parents=True, exist_ok=True)
    for stem, raw in captions.items():
        (root / folder / f"{stem}.png").write_bytes(PNG)
        if raw is not None:
            (root / folder / f"{stem}.txt").write_bytes(raw)
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".loratui-journal" not in p.parts}


def one_line_error(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    return lines[0]


@pytest.mark.parametrize("ext", [".png", "txt"])
def test_image_binary_and_dotless_caption_extensions_are_refused(tmp_path, ext):
    root = dataset(tmp_path / "data", {"a": b"1girl\n"})
    before = snapshot(root)
    line = one_line_error(loratui("captions", str(root), "activation-tag", "sks", "--caption-ext", ext))
    assert f"caption extension {ext!r}" in line
    assert snapshot(root) == before


@pytest.mark.parametrize("ext", [".PNG", ".jpg", ".webp", ".npz", ".safetensors", ".", "", "../x", ". txt", ".a/b"])
def test_every_non_text_caption_extension_is_refused_before_reading(tmp_path, ext):
    root = dataset(tmp_path / "data", {"a": b"1girl\n"})
    with pytest.raises(ops.CaptionError, match="caption extension"):
        ops.load_captions(root, ext)
    assert ops.check_caption_ext(".caption") == ".caption"


def test_undo_from_another_folder_touches_only_its_own_dataset(tmp_path):
    one = dataset(tmp_path / "one", {"a": b"red\n"})
    two = dataset(tmp_path / "two", {"a": b"blue\n"})
    assert loratui("captions", "one", "prefix", "sks, ", cwd=tmp_path).returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = loratui("captions", str(one), "undo", cwd=elsewhere)
    assert out.returncode == 0, out.stderr
    assert (one / "10_sks" / "a.txt").read_bytes() == b"red\n"
    assert (two / "10_sks" / "a.txt").read_bytes() == b"blue\n"
    # A journal entry copied into another dataset is refused there, naming the dataset it was for.
    assert loratui("captions", str(one), "prefix", "sks, ").returncode == 0
    (two / ".loratui-journal").mkdir()
    entry = next((one / ".loratui-journal").glob("*.json"))
    (two / ".loratui-journal" / entry.name).write_bytes(entry.read_bytes())
    line = one_line_error(loratui("captions", str(two), "undo"))
    assert f"recorded for the dataset {one.resolve()}" in line
    assert (one / "10_sks" / "a.txt").read_bytes() == b"sks, red\n"
    assert (two / "10_sks" / "a.txt").read_bytes() == b"blue\n"


def test_undo_after_a_hand_edit_refuses_and_lists_the_file_unless_forced(tmp_path):
    root = dataset(tmp_path / "data", {"a": b"red\n", "b": b"blue\n"})
    assert loratui("captions", str(root), "activation-tag", "sks").returncode == 0
    edited = root / "10_sks" / "b.txt"
    edited.write_bytes(b"sks, blue, my hand edit\n")
    line = one_line_error(loratui("captions", str(root), "undo"))
    assert str(edited.resolve()) in line and "--force" in line
    assert edited.read_bytes() == b"sks, blue, my hand edit\n"
    assert (root / "10_sks" / "a.txt").read_bytes() == b"sks, red\n"  # nothing undone
    assert loratui("captions", str(root), "undo", "--force").returncode == 0
    assert snapshot(root)["10_sks/a.txt"] == b"red\n" and edited.read_bytes() == b"blue\n"


def test_a_second_operation_on_a_locked_dataset_refuses_clearly(tmp_path):
    root = dataset(tmp_path / "data", {"a": b"red\n"})
    with journal.dataset_lock(root):  # what the wizard holds while it writes
        line = one_line_error(loratui("captions", str(root), "prefix", "sks, "))
        assert "another caption operation" in line and str(os.getpid()) in line
    assert (root / "10_sks" / "a.txt").read_bytes() == b"red\n"
    assert loratui("captions", str(root), "prefix", "sks, ").returncode == 0


@contextlib.contextmanager
def unwritable(folder: Path):
    """Make ``folder`` refuse new files: read-only for a normal user, immutable (chattr +i) for root."""
    folder.chmod(0o555)
    probe = folder / ".probe"
    try:
        probe.touch()
    except OSError:
        yield
        folder.chmod(0o755)
        return
    probe.unlink()
    folder.chmod(0o755)
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a folder unwritable here")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_failure_part_way_rolls_the_batch_back_and_names_the_file(tmp_path):
    root = dataset(tmp_path / "data", {"a": b"red\n", "b": b"blue\n"}, folder="1_first")
    dataset(root, {"c": b"green\n"}, folder="2_second")
    before = snapshot(root)
    with unwritable(root / "2_second"):
        line = one_line_error(loratui("captions", str(root), "activation-tag", "sks"))
    assert f"{(root / '2_second' / 'c.txt').resolve()}: cannot be written" in line
    assert "no caption was changed (2 already written were put back)" in line
    assert snapshot(root) == before
    assert loratui("captions", str(root), "undo").stdout.strip() == "nothing to undo"


@pytest.mark.parametrize(("raw", "expect"), [
    (b"\xef\xbb\xbfred, hair\r\n", b"\xef\xbb\xbfsks, red, hair\r\n"),  # UTF-8 with BOM and CRLF
    ("\ufeffred, hair\n".encode("utf-16-le"), "\ufeffsks, red, hair\n".encode("utf-16-le")),
    ("\ufeffred, hair\r\n".encode("utf-16-be"), "\ufeffsks, red, hair\r\n".encode("utf-16-be")),
    (b"red\r\nblue", b"sks, red\r\nsks, blue"),
])
def test_encoding_and_line_endings_are_kept(tmp_path, raw, expect):
    root = dataset(tmp_path / "data", {"a": raw})
    assert loratui("captions", str(root), "activation-tag", "sks").returncode == 0
    assert (root / "10_sks" / "a.txt").read_bytes() == expect
    assert loratui("captions", str(root), "suffix", ", end").returncode == 0
    text = (root / "10_sks" / "a.txt").read_bytes()
    assert b", end\r" in text.replace(b"\x00", b"") or b"\r" not in raw
    assert loratui("captions", str(root), "undo").returncode == 0
    assert loratui("captions", str(root), "undo").returncode == 0
    assert (root / "10_sks" / "a.txt").read_bytes() == raw


def test_undecodable_caption_is_refused_naming_the_file(tmp_path):
    root = dataset(tmp_path / "data", {"a": b"red\n", "b": "café".encode("latin-1")})
    before = snapshot(root)
    line = one_line_error(loratui("captions", str(root), "activation-tag", "sks"))
    assert "b.txt: not UTF-8 or UTF-16 text" in line
    assert snapshot(root) == before


def test_activation_tag_is_idempotent_also_with_several_tags(tmp_path):
    root = dataset(tmp_path / "data", {"a": b"man, smile\n", "b": b"ohwx, beard\n", "c": None})
    assert loratui("captions", str(root), "activation-tag", "ohwx, man").returncode == 0
    once = snapshot(root)
    assert once["10_sks/a.txt"] == b"ohwx, man, smile\n" and once["10_sks/c.txt"] == b"ohwx, man"
    again = loratui("captions", str(root), "activation-tag", "ohwx, man")
    assert "no caption changed" in again.stdout
    assert snapshot(root) == once


@pytest.mark.parametrize("args", [
    ["activation-tag", ""], ["activation-tag", "  "], ["activation-tag", ", ,"], ["prefix", " "],
    ["replace", "", "x"], ["remove-tags", ","], ["merge-tags", " ", "a"], ["replace", "(a)", r"\2", "--regex"],
    ["replace", "(a)", r"\2", "--regex", "--dry-run"], ["replace", "(", "x", "--regex"],
])
def test_empty_or_bad_arguments_are_one_line_errors(tmp_path, args):
    root = dataset(tmp_path / "data", {"a": b"a, b\n"})
    before = snapshot(root)
    one_line_error(loratui("captions", str(root), *args))
    assert snapshot(root) == before


def test_an_operation_that_changes_nothing_records_nothing(tmp_path):
    root = dataset(tmp_path / "data", {"a": b"red\n"})
    assert loratui("captions", str(root), "prefix", "sks, ").returncode == 0
    assert "no caption changed" in loratui("captions", str(root), "remove-tags", "absent").stdout
    assert loratui("captions", str(root), "undo").stdout.startswith("undid 'prefix")
    assert (root / "10_sks" / "a.txt").read_bytes() == b"red\n"


def test_written_files_keep_their_mode_and_new_ones_follow_the_umask(tmp_path):
    root = dataset(tmp_path / "data", {"a": b"red\n", "b": None})
    (root / "10_sks" / "a.txt").chmod(0o640)
    assert loratui("captions", str(root), "activation-tag", "sks", umask=0o022).returncode == 0
    assert stat.S_IMODE((root / "10_sks" / "a.txt").stat().st_mode) == 0o640
    assert stat.S_IMODE((root / "10_sks" / "b.txt").stat().st_mode) == 0o644
    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "new.bin", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.bin").stat().st_mode) == 0o640


def test_a_name_near_the_length_limit_is_still_written_atomically(tmp_path):
    stem = "x" * 240
    root = dataset(tmp_path / "data", {stem: b"red\n"})
    assert loratui("captions", str(root), "prefix", "sks, ").returncode == 0
    assert (root / "10_sks" / f"{stem}.txt").read_bytes() == b"sks, red\n"


# --- property-based: any caption bytes, any operation arguments ---------------------------------------------

caption_bytes = st.one_of(
    st.binary(max_size=30),
    st.text(max_size=30).map(lambda t: t.encode("utf-8")),
    st.text(max_size=20).map(lambda t: "\ufeff".join(["", t]).encode("utf-16-le")),
    st.text(alphabet="ab, \r\n", max_size=20).map(str.encode),
)
op_args = st.tuples(st.sampled_from(["activation_tag", "prefix", "suffix", "replace", "regex", "remove", "merge",
                                     "dedupe", "sort"]), st.text(max_size=6), st.text(max_size=6))


def build(name: str, a: str, b: str) -> ops.TextOp:
    return {"activation_tag": lambda: ops.activation_tag(a), "prefix": lambda: ops.prefix(a),
            "suffix": lambda: ops.suffix(a), "replace": lambda: ops.replace(a, b),
            "regex": lambda: ops.replace(a, b, regex=True), "remove": lambda: ops.remove_tags([a]),
            "merge": lambda: ops.merge_tags(a, [b]), "dedupe": ops.dedupe_tags, "sort": ops.sort_tags}[name]()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(caption_bytes, min_size=1, max_size=3), op_args)
def test_any_captions_and_arguments_give_our_errors_or_an_exact_undo(tmp_path_factory, raws, args):
    root = tmp_path_factory.mktemp("ds")
    dataset(root, {f"i{n}": raw for n, raw in enumerate(raws)})
    (root / "10_sks" / "keep.bin").write_bytes(b"not a caption")
    before = snapshot(root)
    try:
        changes = ops.plan(ops.load_captions(root), build(*args))
        journal.apply(root, changes, "prop")
    except ValueError:  # CaptionError / CaptionDecodeError: our one-line errors
        assert snapshot(root) == before
        return
    after = snapshot(root)
    assert {k for k in after if after[k] != before.get(k)} <= {f"10_sks/i{n}.txt" for n in range(len(raws))}
    if changes:
        journal.undo(root)
    assert snapshot(root) == before


def test_an_editor_save_keeps_the_file_format(tmp_path):
    root = dataset(tmp_path / "data", {"a": "\ufeffred\r\nblue\r\n".encode("utf-16-le"), "b": None})
    files = {f.image.name: f for f in ops.load_captions(root)}
    assert files["a.png"].text == "red\nblue\n"
    journal.apply(root, [ops.edit(files["a.png"], "red, sks\nblue\n"), ops.edit(files["b.png"], "new")], "edit")
    assert (root / "10_sks" / "a.txt").read_bytes() == "\ufeffred, sks\r\nblue\r\n".encode("utf-16-le")
    assert (root / "10_sks" / "b.txt").read_bytes() == b"new"


def test_a_caption_that_cannot_be_read_is_one_line(tmp_path):
    root = dataset(tmp_path / "data", {"a": None})
    (root / "10_sks" / "a.txt").mkdir()  # a folder where the caption should be
    line = one_line_error(loratui("captions", str(root), "prefix", "x, "))
    assert "a.txt: cannot be read" in line
