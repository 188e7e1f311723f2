import os
import subprocess
import sys

from PIL import Image

from loratui.core.resize import target_size


def test_target_sizes_are_multiples_of_64():
    assert target_size((1000, 700), 512) == (704, 512)
    assert target_size((512, 512), 512) == (512, 512)


def test_resize_copies_without_touching_originals(tmp_path):
    src = tmp_path / "data" / "3_cat"
    src.mkdir(parents=True)
    Image.new("RGB", (1000, 700), (1, 2, 3)).save(src / "a.jpg")
    (src / "a.txt").write_text("cat")
    before = (src / "a.jpg").read_bytes()
    out = subprocess.run([sys.executable, "-m", "loratui", "resize", str(tmp_path / "data"), "--to", "512",
                          "--out", str(tmp_path / "new")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert Image.open(tmp_path / "new" / "3_cat" / "a.jpg").size == (704, 512)
    assert (tmp_path / "new" / "3_cat" / "a.txt").read_text() == "cat"
    assert (src / "a.jpg").read_bytes() == before
    inside = subprocess.run([sys.executable, "-m", "loratui", "resize", str(tmp_path / "data"), "--out",
                             str(tmp_path / "data" / "x")], capture_output=True, text=True)
    assert inside.returncode == 2 and "outside the source" in inside.stderr


def test_caption_images_offline_without_weights_is_one_line(tmp_path):
    folder = tmp_path / "1_x"
    folder.mkdir()
    Image.new("RGB", (64, 64)).save(folder / "a.png")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "loratui", "caption-images", str(tmp_path), "--model",
                          "Salesforce/blip-image-captioning-base"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.startswith("loratui: error:")]
    assert len(lines) == 1 and "cannot load a BLIP model" in lines[0]
    assert "Traceback" not in out.stderr
    assert not (folder / "a.txt").exists()
