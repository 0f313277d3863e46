#!/usr/bin/env bash
# The chest-radiograph fairness study: centralised training (-N 1) with sample-level
# DP-SGD (Opacus) at epsilon in {inf, 10, 5, 1} (delta 1e-5), seeds 0 1 2, on
# synthetic-cxr (four findings, sex and age-group attributes); then a results table, a
# fairness table (subgroup accuracy and statistical parity differences) and the Pearson
# correlation between epsilon and each parity difference.
#
#   bash run_cxr_exp.sh
#   QUICK=1 bash run_cxr_exp.sh                              # the whole grid at tiny sizes
#
# Environment [default]: GPU [0]; JOBS [1]; SAVE [experiments/cxr]; ROUNDS (epochs of
# centralised training) [10]; SEEDS ["0 1 2"]; EPSILONS ["10 5 1"]; MODEL
# [resnet9_small; resnet9 is the full-width network]; MAX_GRAD_NORM [1.0]; QUICK=1.
# There is no real chest-radiograph loader with demographic attributes yet, so DATA=real
# is refused.
set -euo pipefail
cd "$(dirname "$0")"
SWEEP=cxr
DEFAULT_ROUNDS=10
source scripts/sweep_env.sh
if [ "$DATA" = real ]; then
  echo "run_cxr_exp.sh: no real chest-radiograph loader with sex/age attributes exists yet; use DATA=synthetic" >&2
  exit 2
fi
EPSILONS=${EPSILONS:-10 5 1}
common="--data synthetic-cxr -N 1 --model ${MODEL:-resnet9_small} --rounds $ROUNDS --gpu $GPU --save_path $SAVE"
[ "$QUICK" = 1 ] && common+=" --train_size 32 --val_size 16 --test_size 32 --img_size 16 --batch 8 --rounds 2"
dp="--dp_level sample --max_grad_norm ${MAX_GRAD_NORM:-1.0} --sample_delta 1e-5"

runs=()
for seed in $SEEDS; do
  runs+=("$common --seed $seed")  # epsilon = inf
  for eps in $EPSILONS; do
    runs+=("$common $dp --sample_epsilon $eps --seed $seed")
  done
done
sweep_and_report synthetic-cxr cxr utils.sweep_report
