#!/usr/bin/env bash
# The PPPML-HMI system (experiments/pppml/README.md): personalised FL with encrypted
# aggregation on the two synthetic chest-CT tasks, 5 hospitals.
#   part 1: FedAvg, Per-FedAvg FO, Per-FedAvg HF and the published code's alternating steps
#           (--client_algo sgd|perfedavg_fo|perfedavg_hf|pppml) x {plain, CKKS, cyclic}
#           aggregation, at --site_shift 2 (strong heterogeneity), on synthetic-chestct
#           and synthetic-covidseg;
#   part 2: FedAvg and Per-FedAvg FO, plain, at --site_shift 0 (IID) and 1;
# seeds 0 1 2. Every run scores the global model and each hospital's model adapted by
# --personalize_steps steps at --alpha on its own training split, then a table per task.
# Step sizes (from a short calibration on seed 0 at --site_shift 2, in the README):
# FedAvg's local Adam at --lr 3e-3; Per-FedAvg's plain SGD steps need a large outer step
# (--beta 0.1 on chestct, 0.3 on covidseg); `pppml`'s odd steps are a fresh Adam's first
# step at --beta, about beta times the gradient's sign, so it keeps the small 0.005.
#
#   JOBS=2 bash run_pppml_exp.sh      # the sweep, the tables (SAVE/<task>.md, SAVE/gap.md), the records
#   QUICK=1 bash run_pppml_exp.sh     # the whole grid at tiny sizes (a smoke test)
#
# Environment [default]: GPU [0]; JOBS [1]; SAVE [experiments/pppml]; ROUNDS [20 chestct,
# 40 covidseg]; SEEDS ["0 1 2"]; LR [3e-3]; ALPHA [0.03]; STEPS (personalising steps) [5];
# SHIFT (part 1) [2]; QUICK=1.
set -euo pipefail
cd "$(dirname "$0")"
SWEEP=pppml
ROUNDS_SET=${ROUNDS:-}
source scripts/sweep_env.sh
[ "${DATA}" = synthetic ] || { echo "run_pppml_exp.sh runs the synthetic tasks only (DATA=synthetic)" >&2; exit 2; }

LR=${LR:-3e-3}
ALPHA=${ALPHA:-0.03}
STEPS=${STEPS:-5}
SHIFT=${SHIFT:-2}
quick=""
[ "$QUICK" = 1 ] && quick="--train_size 12 --val_size 4 --test_size 4 --img_size 16 --rounds 2"
beta() {  # the outer step of each client algorithm on each task
  case "$1:$2" in
    perfedavg_*:synthetic-chestct) echo 0.1 ;;
    perfedavg_*:synthetic-covidseg) echo 0.3 ;;
    *) echo 0.005 ;;
  esac
}
status=0
for data in synthetic-chestct synthetic-covidseg; do
  rounds=${ROUNDS_SET:-$([ "$data" = synthetic-chestct ] && echo 20 || echo 40)}
  common="--data $data --rounds $rounds --gpu $GPU --save_path $SAVE --lr $LR --alpha $ALPHA"
  common+=" --personalize_steps $STEPS $quick"
  runs=()
  for seed in $SEEDS; do
    for algo in sgd perfedavg_fo perfedavg_hf pppml; do
      for agg in none ckks cyclic; do
        runs+=("--client_algo $algo --beta $(beta $algo $data) --site_shift $SHIFT --secure_agg $agg --seed $seed $common")
      done
    done
    for shift in 0 1; do
      for algo in sgd perfedavg_fo; do
        runs+=("--client_algo $algo --beta $(beta $algo $data) --site_shift $shift --seed $seed $common")
      done
    done
  done
  sweep_and_report "$data" "$data" tools.sweep_report || status=$?
done
# the headline: personalised against conventional FL, paired by seed, per site shift
"$PY" -m tools.personal_gap "$SAVE/records" --out "$SAVE/gap"
exit $status
