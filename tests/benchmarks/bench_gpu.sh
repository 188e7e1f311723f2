#!/usr/bin/env bash
# GPU proof for `loratui bench` (issue 12): the whole bench on one datacenter GPU in under 8 minutes.
#
#   SD1.5  512 px, batch 1,2,4,8, bf16: AdamW and AdamW8bit, gradient checkpointing off and on
#   SDXL  1024 px, batch 1,2,4,   bf16: AdamW, gradient checkpointing on, UNet only, cached text-encoder outputs
#
# Random weights with the real architectures (no download). The trainer's own step ("ours") is compared with
# a bare diffusers+peft loop for the AdamW runs. Results: one JSON per run and a summary in $OUT (or
# /tmp/loratui-bench-gpu-out), plus the VRAM estimator's refit from the measured peaks.
#
# Run from the repository root:  bash tests/benchmarks/bench_gpu.sh
#
# A machine where only torch (CUDA) is installed needs the other packages as wheels in .whl/ (no network
# needed there; they are installed into a private folder, nothing system-wide). On a machine with network:
#
#   bash tests/benchmarks/bench_gpu.sh --download-wheels      # fills .whl/ for CPython 3.12, x86-64 Linux
#
# Wheels it needs (the project's tested versions): diffusers transformers peft accelerate huggingface-hub
# tokenizers safetensors pydantic pydantic-core annotated-types typing-inspection typing-extensions pyyaml pillow
# numpy regex requests filelock importlib-metadata zipp nvidia-ml-py packaging psutil tqdm hf-xet fsspec, and
# bitsandbytes for the AdamW8bit runs (skipped with a note when it is missing). On an image that already has
# transformers/peft/accelerate/safetensors (such as this workplace's H200 one) only diffusers, pydantic,
# pydantic-core, annotated-types, typing-inspection, importlib-metadata and bitsandbytes are missing.
set -uo pipefail

WHEELS=(diffusers==0.42.1 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types typing-inspection==0.4.5
        importlib-metadata bitsandbytes==0.50.2)
PY=${PYTHON:-python3}

if [[ "${1:-}" == "--download-wheels" ]]; then
    mkdir -p .whl
    for wheel in "${WHEELS[@]}"; do
        "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 --platform any -d .whl "$wheel" || echo "could not fetch $wheel"
    done
    ls -la .whl
    exit 0
fi

OUT_DIR=${OUT:-/tmp/loratui-bench-gpu-out}
mkdir -p "$OUT_DIR"
SITE=/tmp/loratui-site
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
        || { echo "bench_gpu: installing the wheels in .whl/ failed"; exit 1; }
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}:$SITE"
export LORATUI_HOME=/tmp/loratui-bench-home TRANSFORMERS_VERBOSITY=error DIFFUSERS_VERBOSITY=error PYTHONUNBUFFERED=1
rm -rf "$LORATUI_HOME"

missing=$("$PY" - <<'EOF'
import importlib.util
need = ["torch", "diffusers", "transformers", "peft", "accelerate", "safetensors", "pydantic", "yaml", "PIL"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
EOF
)
if [[ -n "$missing" ]]; then
    echo "bench_gpu: missing Python packages: $missing (put their wheels in .whl/; see the top of this script)"
    exit 1
fi
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible'; print(torch.cuda.get_device_name(), 'torch', torch.__version__)" || exit 1
have_bnb=1
"$PY" -c "import bitsandbytes" 2>/dev/null || { have_bnb=0; echo "note: bitsandbytes missing: AdamW8bit runs skipped"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee "$OUT_DIR/gpu.txt"

START=$SECONDS
status=0
bench() {  # name, then loratui bench arguments
    local name=$1; shift
    echo "== $name ($((SECONDS - START)) s so far)"
    if timeout 300 "$PY" -m loratui bench --json "$@" >"$OUT_DIR/$name.json" 2>"$OUT_DIR/$name.log"; then
        "$PY" - "$OUT_DIR/$name.json" <<'EOF'
import json, sys
from loratui.commands.bench import print_table
print_table(json.load(open(sys.argv[1])))
EOF
    else
        echo "bench_gpu: $name failed; last lines of its log:"; tail -n 20 "$OUT_DIR/$name.log" | tr '\r' '\n' | tail -n 20
        status=1
    fi
}

SD15=(--family sd1 --resolution 512 --batch 1,2,4,8 --set precision.mixed_precision=bf16)
bench sd15-adamw "${SD15[@]}" --set optimizer.optimizer_type=AdamW
bench sd15-adamw-gc "${SD15[@]}" --set optimizer.optimizer_type=AdamW --set advanced.gradient_checkpointing=true --no-bare
if [[ $have_bnb == 1 ]]; then
    bench sd15-adamw8bit "${SD15[@]}" --set optimizer.optimizer_type=AdamW8bit
    bench sd15-adamw8bit-gc "${SD15[@]}" --set optimizer.optimizer_type=AdamW8bit \
        --set advanced.gradient_checkpointing=true
fi
bench sdxl-gc --family sdxl --resolution 1024 --batch 1,2,4 --set precision.mixed_precision=bf16 \
    --set advanced.gradient_checkpointing=true --set network.network_train_unet_only=true \
    --set advanced.cache_text_encoder_outputs=true

echo "== VRAM estimator against the measured peaks"
"$PY" - <<'EOF' | tee "$OUT_DIR/vram-fit.txt"
from loratui.core.vram import fit_from_bench
for f in fit_from_bench():
    print(f"{f.family} {f.resolution}px gc={'on' if f.gradient_checkpointing else 'off'}: measured peak = "
          f"{f.base_gib:.2f} + {f.per_image_gib:.3f} × batch GiB ({f.points} points); "
          f"estimator's worst error {f.estimator_error_pct}%")
EOF
echo "bench_gpu: done in $((SECONDS - START)) s; results in $OUT_DIR"
exit $status
