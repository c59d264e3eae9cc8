#!/usr/bin/env bash
# Issue 6's GPU checks as one prepared script (about 5 minutes on one H100/H200; no data, no network):
#   1. perf step: every variant on smallconv, resnet32 and vgg13, ratio to BP, with the speed options
#      as `auto` resolves them on CUDA (channels_last, bf16 autocast, cudnn.benchmark) but eager:
#      torch.compile of 30 models would take most of the budget;
#   2. perf step of bp, dfa and ssa-r0.25 on resnet32 compiled (compile=on), to see what compile adds;
#   3. perf epoch: one CIFAR-size epoch (50000 synthetic 32x32 images) of resnet32 with BP through the
#      suite's trainer against a plain torchvision-DataLoader float32 loop of the same model.
# Every table goes to $OUT (default results/gpu_check) as .log, .csv and .json.
#
#   bash scripts/gpu_check.sh                                   # on the GPU machine, from the repo root
#   DEVICE=cpu STEPS=2 IMAGES=512 ARCHS=smallconv COMPILE_ARCH= bash scripts/gpu_check.sh   # CPU dry run
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/gpu_check}
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-30}
IMAGES=${IMAGES:-50000}
ARCHS=${ARCHS:-smallconv resnet32 vgg13}
COMPILE_ARCH=${COMPILE_ARCH-resnet32}  # empty: skip step 2
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi"
  "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'; } 2>&1 | tee "$OUT/device.log"

echo "== 1. perf step, eager, auto speed options"
# shellcheck disable=SC2086  # ARCHS is a list of names
"$PYTHON" -m bench perf step --device "$DEVICE" --arch $ARCHS --steps "$STEPS" --warmup 5 --set compile=off \
    --out "$OUT/perf_step.csv" 2>&1 | tee "$OUT/perf_step.log"

if [ -n "$COMPILE_ARCH" ]; then
  echo "== 2. perf step, compiled"
  "$PYTHON" -m bench perf step --device "$DEVICE" --arch "$COMPILE_ARCH" --methods bp dfa ssa-r0.25 --steps "$STEPS" \
      --warmup 5 --set compile=on --out "$OUT/perf_step_compiled.csv" 2>&1 | tee "$OUT/perf_step_compiled.log"
fi

echo "== 3. perf epoch: resnet32 BP, suite trainer vs plain DataLoader loop"
"$PYTHON" -m bench perf epoch --device "$DEVICE" --arch resnet32 --method bp --images "$IMAGES" \
    --out "$OUT/perf_epoch.json" 2>&1 | tee "$OUT/perf_epoch.log"
