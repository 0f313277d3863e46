#!/usr/bin/env bash
# The intermediary fidelity study (experiments/intermediaries/README.md) on synthetic-ich in
# the paper's regime (--scale paper): for DP-FedAvg, DP-FedAdam, DP-FedNova and
# DP2-RMSProp at z = 0.5, 1.0, 1.5, DP alone vs DP + adaptive intermediaries vs fixed
# v = 2, 4, 8, seeds 0 1 2, and the four optimizers without DP.
#   1. server learning rates of FedAdam and DP2-RMSProp: a grid of non-private runs
#      (seed 0), chosen on validation (python -m tools.fidelity choose);
#   2. the Table 1 sweep (run_ich_exp.sh) with those rates, and its report;
#   3. the fixed splits (with DP, and FedAvg without DP), then the study's report.
# Environment [default]: SAVE [experiments/intermediaries/runs], JOBS [2], SEEDS ["0 1 2"],
# GPU [0]. Finished runs are skipped, so running it again continues the study.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=${PY:-.venv/bin/python}
SAVE=${SAVE:-experiments/intermediaries/runs}
RESULTS=experiments/intermediaries/results
export JOBS=${JOBS:-2} SEEDS=${SEEDS:-0 1 2} GPU=${GPU:-0} PY
common="--data synthetic-ich --scale paper --gpu $GPU"

grid=()
for lr in 0.0003 0.001 0.003 0.01 0.03; do grid+=("--mode fedadam --adam_lr $lr $common --seed 0 --save_path $SAVE/grid"); done
for lr in 0.0001 0.0003 0.001 0.003 0.01; do
  grid+=("--mode fed2rmsprop --rmsprop_lr $lr $common --seed 0 --save_path $SAVE/grid")
done
printf '%s\n' "${grid[@]}" | "$PY" -m tools.sweep --jobs "$JOBS"
eval "$("$PY" -m tools.fidelity choose "$SAVE/grid")"  # sets ADAM_LR and RMSPROP_LR
export ADAM_LR RMSPROP_LR
echo "server learning rates chosen on validation: --adam_lr $ADAM_LR --rmsprop_lr $RMSPROP_LR" >&2

SAVE="$SAVE/table1" bash run_ich_exp.sh
mkdir -p "$RESULTS" experiments/table1/results
# The README's Table 1: compact records of the runs, committed, and the report rebuilt from them.
"$PY" -m tools.archive "$SAVE/table1/synthetic-ich" --out experiments/table1/results/records
"$PY" -m tools.report experiments/table1/results/records/synthetic-ich --out experiments/table1/results/table1_ich

fixed=()
for seed in $SEEDS; do
  for v in 2 4 8; do  # without DP: what splitting costs by itself
    fixed+=("--mode fedavg $common -VN $v --seed $seed --save_path $SAVE/fixed_v")
  done
  for z in 0.5 1.0 1.5; do
    for v in 2 4 8; do
      dp="$common -VN $v --adaclip --delta 0.01 --noise_multiplier $z --seed $seed --save_path $SAVE/fixed_v"
      fixed+=("--mode dpsgd $dp" "--mode dpadam --adam_lr $ADAM_LR $dp" "--mode dpnova $dp"
              "--mode dp2rmsprop --rmsprop_lr $RMSPROP_LR $dp")
    done
  done
done
printf '%s\n' "${fixed[@]}" | "$PY" -m tools.sweep --jobs "$JOBS"
"$PY" -m tools.archive "$SAVE/fixed_v" --out "$RESULTS/records"
# The study's report, rebuilt from the committed records alone.
"$PY" -m tools.fidelity report experiments/table1/results/records/synthetic-ich "$RESULTS/records/synthetic-ich" \
  --out "$RESULTS/fidelity"
echo "report: $RESULTS/fidelity.* and experiments/table1/results/table1_ich.*" >&2
