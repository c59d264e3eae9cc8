#!/usr/bin/env bash
# Regenerate, in place, every committed table, claims.md and findings.md under results/ from the records
# committed beside them (no training), with the code of this checkout. After it, `git diff --stat
# results/` lists what the current code reports differently from the committed files: nothing, when a
# change of the report wing or the record reader left every result as it was.
#   scripts/regenerate_results.sh            (from the repository root, after `make setup`)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DATASET=cifar10-jpeg  # every committed evidence folder is on the real CIFAR-10 JPEG tree

table_and_claims() {  # folder archs methods seeds [published-as]
  local runs=results/$1/runs out=results/$1/paper
  echo "== $1"
  $PY -m bench aggregate --runs-dir "$runs" --dataset $DATASET --out-dir "$out" --archs $2 \
    --methods $3 --seeds $4 ${5:+--published-as $5}
  $PY -m bench claims --datasets $DATASET --runs-dir "$runs" --out "$out/claims.md"
}
rows_of() {  # the methods of a committed table, in its order (the reference-match tables list their own)
  tail -n +2 "results/$1/paper/$DATASET"_table.csv | cut -d, -f2 | tr '\n' ' '
}
sweep() {  # config output-folder records-folder
  echo "== $2"
  $PY -m bench sweep-report --dataset $DATASET --config config/config.yaml --config "$1" \
    --records "$3"/runs/$DATASET/*/*/*/record.json --out-dir "$2"
}

table_and_claims cpu_biotorch_lenet lenet "bp fa dfa usf brsf frsf kp drtp fwdgrad svd_bp ssa" 0 cifar10
table_and_claims cpu_biotorch_lenet_exact lenet "bp fa dfa usf brsf frsf fa-lr_1e3 dfa-lr_1e3 dfa-shared" 0 cifar10
table_and_claims cpu_robustness_cifar10 smallconv "bp fa dfa usf brsf frsf kp ssa" "0 1" cifar10
table_and_claims cpu_rules_cifar10 smallconv "bp fa dfa usf brsf frsf kp drtp fwdgrad svd_bp ssa dgl predsim pred sim infopro pepita" "0 1" cifar10
table_and_claims cpu_cifar10 "smallconv mlp3" \
  "bp dfa svd_bp ssa ssa-no_align ssa-no_orth ssa-ce_only ssa-fixed_rank" "0 1 2"
table_and_claims reference_match smallconv "$(rows_of reference_match)" "0 1"
table_and_claims reference_match_keys smallconv "$(rows_of reference_match_keys)" "0 1"
sweep config/sweep_ssa.yaml results/sweep_ssa results/sweep_ssa
sweep config/sweep_ssa_stage2.yaml results/sweep_ssa/stage2 results/sweep_ssa/stage2
sweep config/sweep_feedback_nobn.yaml results/sweep_ssa/feedback_nobn/sweep/$DATASET results/sweep_ssa/feedback_nobn
sweep config/cpu_local_k_cifar10.yaml results/cpu_local_k_cifar10/sweep/$DATASET results/cpu_local_k_cifar10
rm -f results/cpu_local_k_cifar10/sweep/$DATASET/findings.md  # written for SSA's design space: nothing on K
git diff --stat -- results/
