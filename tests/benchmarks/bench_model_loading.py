"""Peak RAM (RSS) of loading a full-size SD1.5 single-file checkpoint with loratui's offline loader.

Run: .venv/bin/python tests/benchmarks/bench_model_loading.py [CHECKPOINT.safetensors] [--family sd1]
Without a file it builds a random-weight SD1.5-architecture checkpoint (fp16, ~2 GB) in a temp folder first.
Loading runs in a fresh subprocess, so the peak belongs to loading alone; it is printed next to the RSS of the
same process after importing torch/diffusers/transformers, and as a multiple of the file size. The goal: no
more than one copy of the weights in RAM at a time (peak - imports <= ~1.1 x the file size).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, os, resource, sys
os.environ["HF_HUB_OFFLINE"] = "1"
def rss_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
from loratui.core.config import TrainingConfig
from loratui.train.model_loading import load_models
import diffusers, torch, transformers  # noqa: F401  (the import baseline)
base = rss_kib("VmRSS:")
model = {"pretrained_model_name_or_path": sys.argv[1], "model_family": sys.argv[2]}
cfg = TrainingConfig.model_validate({"model": model})
models = load_models(cfg)
loaded = {"imports_kib": base, "peak_kib": rss_kib("VmHWM:"), "after_kib": rss_kib("VmRSS:")}
# safetensors maps the file: weights page in when first read. Read every one, as training does.
for module in (models.unet, models.vae, *models.text_encoders):
    for tensor in module.state_dict().values():
        tensor.sum()
loaded["read_peak_kib"] = rss_kib("VmHWM:")
print(json.dumps(loaded))
"""


def main(argv: list[str]) -> int:
    family = "sd1"
    if "--family" in argv:
        family = argv[argv.index("--family") + 1]
        argv = [a for a in argv if a not in ("--family", family)]
    with tempfile.TemporaryDirectory() as tmp:
        if argv:
            checkpoint = Path(argv[0])
        else:
            from loratui.train.tiny_models import build_sd15_single_file

            print("building a random SD1.5-architecture checkpoint (fp16) ...", flush=True)
            checkpoint = build_sd15_single_file(Path(tmp) / "sd15.safetensors")
        env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "DIFFUSERS_VERBOSITY": "error"}
        out = subprocess.run([sys.executable, "-c", CHILD, str(checkpoint), family], capture_output=True, text=True,
                             env=env, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        size = checkpoint.stat().st_size
    gib = 1024**3
    peak, base = result["peak_kib"] * 1024, result["imports_kib"] * 1024
    print(f"checkpoint:              {size / gib:.2f} GiB ({checkpoint.name})")
    print(f"RSS after imports:       {base / gib:.2f} GiB")
    print(f"peak RSS while loading:  {peak / gib:.2f} GiB  (+{(peak - base) / gib:.2f} GiB = "
          f"{(peak - base) / size:.2f} x the file)")
    print(f"RSS once loaded:         {result['after_kib'] * 1024 / gib:.2f} GiB (weights still mapped, not read)")
    read = result["read_peak_kib"] * 1024
    print(f"peak after reading every weight once: {read / gib:.2f} GiB  (+{(read - base) / gib:.2f} GiB = "
          f"{(read - base) / size:.2f} x the file)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
