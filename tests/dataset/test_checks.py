"""A folder made of every bad case gives one finding each, with no traceback and nothing modified."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from loratui.core.dataset import scan_dataset


def _png(path: Path, size=(512, 512), mode="RGB", colour=(200, 30, 30)) -> Path:
    Image.new(mode, size, colour if mode in ("RGB", "RGBA", "CMYK") else 100).save(path)
    return path


def _good(folder: Path, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        _png(folder / f"ok_{i:02d}.png", colour=(i * 12 % 255, 80, 160))
        (folder / f"ok_{i:02d}.txt").write_text(f"sks person, photo {i}")


@pytest.fixture
def bad_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    good = root / "10_sks person"
    good.mkdir(parents=True)
    _good(good, 3)
    png = (good / "ok_00.png").read_bytes()
    (good / "truncated.png").write_bytes(png[: len(png) // 2])
    (good / "truncated.txt").write_text("x")
    (good / "garbage.png").write_bytes(b"this is not an image at all")
    (good / "garbage.txt").write_text("x")
    _png(tmp_path / "real.png", colour=(1, 2, 3))
    (good / "liar.jpg").write_bytes((tmp_path / "real.png").read_bytes())
    (good / "liar.txt").write_text("x")
    (good / "zero.png").write_bytes(b"")
    (good / "zero.txt").write_text("x")
    bomb = Image.new("1", (12000, 12000))
    bomb.save(good / "bomb.png")
    (good / "bomb.txt").write_text("x")
    _png(good / "small.png", size=(256, 256), colour=(9, 9, 9))
    (good / "small.txt").write_text("x")
    _png(good / "odd.png", size=(520, 600), colour=(8, 8, 8))
    (good / "odd.txt").write_text("x")
    _png(good / "wide.png", size=(2560, 512), colour=(7, 7, 7))
    (good / "wide.txt").write_text("x")
    rotated = Image.new("RGB", (512, 576), (6, 6, 6))
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(good / "rotated.jpg", exif=exif)
    (good / "rotated.txt").write_text("x")
    _png(good / "alpha.png", mode="RGBA", colour=(5, 5, 5, 0))
    (good / "alpha.txt").write_text("x")
    Image.new("CMYK", (512, 512), (0, 0, 0, 40)).save(good / "cmyk.jpg")
    (good / "cmyk.txt").write_text("x")
    Image.new("I;16", (512, 512), 4000).save(good / "deep.png")
    (good / "deep.txt").write_text("x")
    frames = [Image.new("RGB", (512, 512), (c, 0, 0)) for c in (10, 200)]
    frames[0].save(good / "anim.webp", save_all=True, append_images=frames[1:])
    (good / "anim.txt").write_text("x")
    _png(good / "nocap.png", colour=(4, 4, 4))
    _png(good / "emptycap.png", colour=(3, 3, 3))
    (good / "emptycap.txt").write_text("   ")
    (good / "orphan.txt").write_text("lonely caption")
    _png(good / "twin.png", colour=(2, 2, 2))
    _png(good / "twin.jpg".replace(".jpg", ".bmp"), colour=(2, 2, 3))
    (good / "twin.txt").write_text("x")
    _png(good / "latin.png", colour=(1, 1, 1))
    (good / "latin.txt").write_bytes("café, crème".encode("latin-1"))
    (good / "zcopy.png").write_bytes((good / "ok_01.png").read_bytes())
    (good / "zcopy.txt").write_text("x")
    (good / "loop").symlink_to(good / "loop")
    nofolder = root / "extra pictures"
    nofolder.mkdir()
    _png(nofolder / "skipped.png", colour=(11, 11, 11))
    return root


EXPECTED = {
    "truncated": "truncated.png", "unreadable": "garbage.png", "wrong-extension": "liar.jpg",
    "empty-file": "zero.png", "bomb": "bomb.png", "small": "small.png", "not-64": "odd.png", "aspect": "wide.png",
    "exif-rotated": "rotated.jpg", "alpha": "alpha.png", "cmyk": "cmyk.jpg", "16-bit": "deep.png",
    "animated": "anim.webp", "missing-caption": "nocap.png", "empty-caption": "emptycap.txt",
    "orphan-caption": "orphan.txt", "same-stem": "twin.bmp", "not-utf8": "latin.txt", "duplicate": "zcopy.png",
    "symlink-loop": "loop", "no-repeats": "extra pictures",
}


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and not p.is_symlink()}


def test_every_bad_case_gives_one_finding_and_nothing_changes(bad_dataset):
    before = _snapshot(bad_dataset)
    report = scan_dataset(bad_dataset, resolution=512)
    by_code: dict[str, list[str]] = {}
    for finding in report.findings:
        by_code.setdefault(finding.code, []).append(finding.path.name)
    for code, name in EXPECTED.items():
        assert by_code.get(code) == [name], f"{code}: {by_code.get(code)}"
    assert all(f.fix and f.message for f in report.findings)
    assert _snapshot(bad_dataset) == before


def test_cli_check_exit_code_and_json(bad_dataset, tmp_path):
    env = {**os.environ}
    out = subprocess.run([sys.executable, "-m", "loratui", "check", str(bad_dataset), "--json"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 1
    data = json.loads(out.stdout)
    assert {"truncated", "symlink-loop", "no-repeats"} <= {f["code"] for f in data["findings"]}
    assert "Traceback" not in out.stderr
    human = subprocess.run([sys.executable, "-m", "loratui", "check", str(bad_dataset)], capture_output=True,
                           text=True)
    assert "sd-scripts silently skips" in human.stdout
    assert "error(s)" in human.stdout.splitlines()[-1]


def test_clean_dataset_passes_with_buckets(tmp_path):
    folder = tmp_path / "data" / "5_cat"
    folder.mkdir(parents=True)
    _good(folder, 16)
    _png(folder / "land.png", size=(768, 512), colour=(50, 60, 70))
    (folder / "land.txt").write_text("cat")
    report = scan_dataset(tmp_path / "data", resolution=512, batch_size=2)
    assert report.errors == []
    assert report.bucket_counts() == {(512, 512): 80, (640, 384): 5}
    assert any(f.code == "partial-batch" for f in report.findings)
    counts = report.folder_counts()
    assert counts[0].repeats == 5 and len(counts[0].sizes) == 17


def test_flat_folder_is_an_error_as_sd_scripts_trains_only_subfolders(tmp_path):
    """sd-scripts' DreamBoothDataset reads only <repeats>_<name> subfolders: a flat folder trains nothing."""
    _good(tmp_path, 2)
    report = scan_dataset(tmp_path)
    flat = [f for f in report.findings if f.code == "flat-folder"]
    assert report.flat and flat and flat[0].severity == "error" and "10_" in flat[0].fix
    assert report.batches_per_epoch(1) == 0


def test_loose_images_beside_subfolders_are_not_counted(tmp_path):
    _good(tmp_path, 2)
    sub = tmp_path / "3_thing"
    sub.mkdir()
    _good(sub, 2)
    report = scan_dataset(tmp_path)
    assert any(f.code == "loose-images" and f.severity == "warning" for f in report.findings)
    assert sum(report.bucket_counts().values()) == 2 * 3  # only the subfolder, with its repeats


def test_missing_folder_is_a_finding_not_a_crash(tmp_path):
    report = scan_dataset(tmp_path / "nope")
    assert [f.code for f in report.findings] == ["no-folder"]


def test_near_duplicates_are_optional(tmp_path):
    folder = tmp_path / "1_x"
    folder.mkdir()
    base = Image.linear_gradient("L").convert("RGB").resize((512, 512))
    base.save(folder / "a.png")
    base.point(lambda v: min(255, v + 3)).save(folder / "b.png")
    assert not any(f.code == "near-duplicate" for f in scan_dataset(tmp_path).findings)
    assert any(f.code == "near-duplicate" for f in scan_dataset(tmp_path, near_duplicates=True).findings)


def test_progress_callback_reaches_total(tmp_path):
    folder = tmp_path / "1_x"
    folder.mkdir()
    _good(folder, 3)
    seen = []
    scan_dataset(tmp_path, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (3, 3)
