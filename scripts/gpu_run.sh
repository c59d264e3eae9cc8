#!/usr/bin/env bash
# The prepared GPU run (issue 18): a lent card's minutes turned into the suite's GPU speed table and a
# time-boxed CIFAR-10 grid with its table, figures and claims.md. One command, at most 9 minutes: every
# stage runs under its own time limit (the `stage` lines below; they add up to 540 s, which
# tests/test_gpu_run.py checks), so a slow stage cannot take the later ones with it.
#
#   1. device   the card, driver and torch;
#   2. perf     `perf step` of every rule on smallconv, vgg13 and resnet32, ratio to BP side by side, the
#               CUDA speed options as `auto` resolves them (channels_last, bf16 autocast, cudnn.benchmark)
#               except torch.compile (off: compiling 40 models would take the whole budget), smallconv
#               without BatchNorm (perf step builds each arch as it is);
#   3. decode   the CIFAR-10 JPEG tree decoded once into its cache, before the grid's runs read it;
#   4. grid     `python -m bench grid` (no Snakemake there): archs x methods x seeds in priority order,
#               JOBS runs packed on the card (the trainer's gpu slots), epochs sized from the perf table
#               (`--epochs auto`, bench/gridrun/runner.py estimate_epochs), cut at the deadline; a cut run is
#               reported as cut in status.csv and has no record;
#   5. report   table, figures and claims.md from the finished records;
#   6. pack     records, logs, table, figures and claims into $OUT (at most 8 files come back).
#
# On the GPU machine, from the repo root, with the JPEG tree carried in .data (ignored by git):
#   mkdir -p .data && cp -r ../shared/data/cifar10-jpeg .data/ && echo /.data/ >> .git/info/exclude
#   device run: carry [".data"], command `bash scripts/gpu_run.sh`, timeout_s 600
# CPU dry run (tests/test_gpu_run.py runs one in `make test`, on a tiny JPEG tree):
#   DEVICE=cpu ARCHS=smallconv METHODS="bp dfa" SEEDS=0 EPOCHS=1 PERF_STEPS=2 bash scripts/gpu_run.sh
# The environment values below are checked before anything runs (a bad one: one line naming it, exit 2),
# and a Ctrl-C or SIGTERM stops the running stage with the script (tests/test_scripts_env.py).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
DATA_DIR=${DATA_DIR:-.data}
DATASET=${DATASET:-cifar10-jpeg}
RESULTS=${RESULTS:-results/gpu_cifar10}
OUT=${OUT:-$RESULTS/out}
ARCHS=${ARCHS:-smallconv vgg13 resnet32}
METHODS=${METHODS:-bp dfa ssa ssa-no_align ssa-no_orth fa usf brsf frsf kp dgl predsim infopro pepita}
PERF_METHODS=${PERF_METHODS:-$METHODS svd_bp drtp fwdgrad}  # the grid's rules first: they size its epochs
SEEDS=${SEEDS:-0 1}
JOBS=${JOBS:-12}           # runs at a time: 16 CPU cores there, one process each plus the runner
EPOCHS=${EPOCHS:-auto}     # auto: sized from the perf table; a number forces it
MAX_EPOCHS=${MAX_EPOCHS:-30}
PACKING_GAIN=${PACKING_GAIN:-4}  # assumed: JOBS small-network runs on one H200 do this many times one run's work
PERF_STEPS=${PERF_STEPS:-30}
GRID_DEADLINE=${GRID_DEADLINE:-300}  # the grid stage's limit is this plus 30 s for stopping and status.csv
BATCH=${BATCH:-128}
DETERMINISTIC=${DETERMINISTIC:-false}  # true: cudnn.deterministic and no cudnn.benchmark (bench/run/determinism.py)
EXTRA_SETS=${EXTRA_SETS:-}  # more KEY=VALUE recipe settings of every grid run (the dry run forces CUDA's speed paths)
WHEELS=${WHEELS:-$DATA_DIR/wheels}

# Every value above is checked before anything runs (scripts/env_values.sh): one line and exit 2 otherwise.
# shellcheck source=scripts/env_values.sh
source scripts/env_values.sh
for name in PYTHON DATA_DIR RESULTS OUT WHEELS; do path_value "$name"; done
one_of DEVICE auto cpu cuda
one_of DETERMINISTIC true false
[[ $DATASET =~ $NAME_RE ]] || refuse DATASET "one dataset name of letters, digits, '_', '-', '.'"
for name in ARCHS METHODS PERF_METHODS; do
  words "$name" "$NAME_RE" "names separated by spaces, each of letters, digits, '_', '-', '.'"
done
words SEEDS '^[0-9]{1,9}$' "whole numbers >= 0 separated by spaces"
whole JOBS 1 4096
whole EPOCHS 1 100000 auto
whole MAX_EPOCHS 1 100000
[[ $PACKING_GAIN =~ ^[0-9]{1,6}(\.[0-9]{1,6})?$ && $PACKING_GAIN =~ [1-9] ]] ||
  refuse PACKING_GAIN "a number > 0 of digits and at most one '.', such as 4 or 2.5"
whole PERF_STEPS 1 100000
whole GRID_DEADLINE 1 86400
whole BATCH 1 1000000
if [ -n "$EXTRA_SETS" ]; then
  words EXTRA_SETS '^[a-z][a-z0-9_]*=[][A-Za-z0-9_.,:+-]+$' \
    "KEY=VALUE settings separated by spaces, KEY of a-z, 0-9, '_', VALUE of letters, digits and _.,:+-[]"
fi
read -r -d '' -a archs <<<"$ARCHS"
read -r -d '' -a methods <<<"$METHODS"
read -r -d '' -a perf_methods <<<"$PERF_METHODS"
read -r -d '' -a seeds <<<"$SEEDS"
read -r -d '' -a extra_sets <<<"$EXTRA_SETS"

GRID_LIMIT=$((GRID_DEADLINE + 30))
RECIPE=(--set device="$DEVICE" --set batch_size="$BATCH" --set batchnorm=true --set compile=off
        --set deterministic="$DETERMINISTIC")
for pair in "${extra_sets[@]}"; do RECIPE+=(--set "$pair"); done
export PYTHONUNBUFFERED=1 PYTHON DATASET DATA_DIR RESULTS OUT ARCHS METHODS SEEDS
mkdir -p "$RESULTS/stages" "$OUT"
# The GPU machine's python3 has torch, torchvision, pandas and matplotlib, no network: the end-of-run
# measures' pure-Python packages travel as wheels in $WHEELS (made here, before the run, with
#   pip download --no-deps -d .data/wheels torchmetrics lightning-utilities torchattacks==3.5.1 tqdm
# ) and are installed into the results folder. torchattacks also needs scipy: without it the grid
# runs without the robustness attacks (attack_subset=0), and says so.
if ! "$PYTHON" -c "import torchmetrics, torchattacks" 2>/dev/null && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  "$PYTHON" -m pip install --quiet --no-index --no-deps --target "$RESULTS/site" "$WHEELS"/*.whl &&
    export PYTHONPATH="$RESULTS/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$PYTHON" -c "import torchattacks" 2>/dev/null; then
  echo "== torchattacks does not import here: the grid runs without the robustness attacks (attack_subset=0)"
  RECIPE+=(--set attack_subset=0)
fi
status=0

# A signal to the script stops the stage that is running, with everything it started, before the script
# exits 130 (Ctrl-C), 143 (SIGTERM) or 129 (SIGHUP): timeout runs each stage in a process group of its
# own, where a Ctrl-C at the terminal does not reach, and passes the signal it gets on to that group
# (SIGKILL 5 s later). A stopped grid keeps its checkpoints: the same command resumes it.
STAGE_PID=""
STAGE_NAME=""
stop() {  # stop CODE SIGNAL
  trap - INT TERM HUP
  echo "== SIG$2${STAGE_NAME:+: stopping the $STAGE_NAME stage}; exit $1" >&2
  if [ -n "$STAGE_PID" ]; then
    kill -s "$2" "$STAGE_PID" 2>/dev/null
    wait "$STAGE_PID"
  fi
  exit "$1"
}
trap 'stop 130 INT' INT
trap 'stop 143 TERM' TERM
trap 'stop 129 HUP' HUP

stage() {  # stage NAME SECONDS COMMAND...: run it under a time limit, log to RESULTS/stages/NAME.log, go on if it fails
  # (a function of this script runs as `bash -c NAME`: timeout runs programs, and the functions are exported)
  local name=$1 limit=$2 log="$RESULTS/stages/$1.log" out tee_pid rc
  shift 2
  echo "== $name (at most ${limit} s) $(date -u +%H:%M:%S)"
  # In the background, so that the script's trap runs while it waits (bash runs a trap only between
  # commands); tee -i: a Ctrl-C does not cut the log short.
  exec {out}> >(tee -i "$log")
  tee_pid=$!
  timeout --kill-after=5 "$limit" "$@" >&"$out" 2>&1 {out}>&- &
  STAGE_PID=$! STAGE_NAME=$name
  wait "$STAGE_PID"
  rc=$?
  STAGE_PID="" STAGE_NAME=""
  exec {out}>&-
  wait "$tee_pid"  # the stage's last lines are in its log before the next line is written
  if [ "$rc" -ne 0 ]; then
    echo "== $name: exit $rc$([ "$rc" -eq 124 ] && echo ' (time limit)')" | tee -a "$log"
    status=1
  fi
}

device_line() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "device",
      torch.cuda.get_device_name() if torch.cuda.is_available() else "none")'
  # No .git travels to the GPU machine: the code is named by the hash of its files (and the commit where git is).
  echo "code $(git rev-parse HEAD 2>/dev/null || echo 'no git here')" \
       "sha256 $(find bench methods -name '*.py' | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)"
}

decode() {
  "$PYTHON" -c 'import sys; from bench import data
d = data.load(sys.argv[1], "cpu", sys.argv[2]); print(sys.argv[1], len(d.train_y), "train", len(d.test_y), "test")
open(sys.argv[3], "w").write(str(len(d.train_y)))' "$DATASET" "$DATA_DIR" "$RESULTS/train_images"
}

report() {  # ARCHS, METHODS and SEEDS come as the checked strings (an exported function sees no arrays)
  local archs methods seeds
  read -r -d '' -a archs <<<"$ARCHS"
  read -r -d '' -a methods <<<"$METHODS"
  read -r -d '' -a seeds <<<"$SEEDS"
  local common=(--runs-dir "$RESULTS/runs" --dataset "$DATASET" --archs "${archs[@]}" --methods "${methods[@]}"
                --seeds "${seeds[@]}")
  "$PYTHON" -m bench aggregate "${common[@]}" --out-dir "$RESULTS/paper" --allow-missing --published-as cifar10 &&
  "$PYTHON" -m bench plot "${common[@]}" --out-dir "$RESULTS/paper/figures" &&
  "$PYTHON" -m bench claims --datasets "$DATASET" --runs-dir "$RESULTS/runs" --out "$RESULTS/paper/claims.md"
}

pack() {  # everything but checkpoints in one archive; the files a reader wants first beside it
  tar czf "$OUT/gpu_cifar10.tar.gz" --exclude=checkpoint.pt --exclude=out -C "$(dirname "$RESULTS")" -- "$(basename "$RESULTS")"
  cp "$RESULTS/stages/device.log" "$RESULTS/perf_step.csv" "$RESULTS/status.csv" "$OUT/" 2>/dev/null
  cp "$RESULTS/paper/${DATASET}_table.md" "$RESULTS/paper/claims.md" "$OUT/" 2>/dev/null
  ls -l "$OUT"
}

{
export -f device_line decode report pack
stage device 15 bash -c device_line
stage perf 75 "$PYTHON" -m bench perf step --device "$DEVICE" --arch "${archs[@]}" --methods "${perf_methods[@]}" \
    --steps "$PERF_STEPS" --warmup 3 --batch-size "$BATCH" --set compile=off --out "$RESULTS/perf_step.csv"
stage decode 45 bash -c decode
epochs=(--epochs "$EPOCHS" --max-epochs "$MAX_EPOCHS" --packing-gain "$PACKING_GAIN" --perf-table "$RESULTS/perf_step.csv"
        --train-images "$(cat "$RESULTS/train_images" 2>/dev/null || echo 50000)")
if [ "$EPOCHS" = auto ] && [ ! -s "$RESULTS/perf_step.csv" ]; then
  echo "== no perf table: the grid runs 5 epochs"; epochs=(--epochs 5)
fi
stage grid "$GRID_LIMIT" "$PYTHON" -m bench grid --dataset "$DATASET" --data-dir "$DATA_DIR" \
    --archs "${archs[@]}" --methods "${methods[@]}" --seeds "${seeds[@]}" --results "$RESULTS" --jobs "$JOBS" \
    --gpu-slots "$JOBS" --deadline-s "$GRID_DEADLINE" "${epochs[@]}" "${RECIPE[@]}"
stage report 60 bash -c report
stage pack 15 bash -c pack
} 2>&1
exit $status
