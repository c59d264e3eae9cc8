#!/usr/bin/env bash
# Issue 6's GPU checks as one prepared script (no data, no network; each step has its own time limit,
# so a slow compile cannot take the later steps with it: at most 9 minutes in all):
#   1. perf step: every variant on smallconv, resnet32 and vgg13, ratio to BP, with the speed options
#      as `auto` resolves them on CUDA (channels_last, bf16 autocast, cudnn.benchmark) but eager:
#      torch.compile of 30 models would take most of the budget;
#   2. perf step of bp, dfa and ssa-r0.25 on resnet32 compiled (compile=on), to see what compile adds;
#   3. perf epoch: one CIFAR-size epoch (50000 synthetic 32x32 images) of resnet32 with BP through the
#      suite's trainer (compiled, as `auto` is on CUDA) against a plain torchvision-DataLoader float32
#      loop of the same model.
# Every table goes to $OUT (default results/gpu_check) as .log, .csv and .json.
#
#   bash scripts/gpu_check.sh                                   # on the GPU machine, from the repo root
#   DEVICE=cpu STEPS=2 IMAGES=512 ARCHS=smallconv COMPILE_ARCH= bash scripts/gpu_check.sh   # CPU dry run
set -uo pipefail
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
status=0

step() {  # step NAME SECONDS COMMAND...: run it under a time limit, log to $OUT/NAME.log, go on if it fails
  local name=$1 limit=$2
  shift 2
  echo "== $name (at most ${limit} s)"
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    echo "== $name: exit $rc$([ "$rc" -eq 124 ] && echo ' (time limit)')" | tee -a "$OUT/$name.log"
    status=1
  fi
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi"
  "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'; } 2>&1 | tee "$OUT/device.log"

# shellcheck disable=SC2086  # ARCHS is a list of names
step perf_step 150 "$PYTHON" -m bench perf step --device "$DEVICE" --arch $ARCHS --steps "$STEPS" --warmup 5 \
    --set compile=off --out "$OUT/perf_step.csv"
if [ -n "$COMPILE_ARCH" ]; then
  step perf_step_compiled 180 "$PYTHON" -m bench perf step --device "$DEVICE" --arch "$COMPILE_ARCH" \
      --methods bp dfa ssa-r0.25 --steps "$STEPS" --warmup 5 --set compile=on --out "$OUT/perf_step_compiled.csv"
fi
step perf_epoch 210 "$PYTHON" -m bench perf epoch --device "$DEVICE" --arch resnet32 --method bp --images "$IMAGES" \
    --out "$OUT/perf_epoch.json"
exit $status
