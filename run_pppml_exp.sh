#!/usr/bin/env bash
# The PPPML-HMI system (experiments/pppml/README.md): personalised FL with encrypted
# aggregation on the two synthetic chest-CT tasks, 5 hospitals.
#   part 1: FedAvg, Per-FedAvg FO, Per-FedAvg HF and the published code's alternating steps
#           (--client_algo sgd|perfedavg_fo|perfedavg_hf|pppml) x {plain, CKKS, cyclic}
#           aggregation, at --site_shift 1, on synthetic-chestct and synthetic-covidseg;
#   part 2: FedAvg and Per-FedAvg HF, plain, at --site_shift 0 and 2 (1 is part 1's);
# seeds 0 1 2. Every run scores the global model and each hospital's model adapted by
# --personalize_steps steps at --alpha on its own training split, then a table per task.
#
#   JOBS=2 bash run_pppml_exp.sh      # the sweep, the tables and the run records
#   QUICK=1 bash run_pppml_exp.sh     # the whole grid at tiny sizes (a smoke test)
#
# Environment [default]: GPU [0]; JOBS [1]; SAVE [experiments/pppml]; ROUNDS [20];
# SEEDS ["0 1 2"]; ALPHA [0.01]; BETA [0.001]; STEPS (personalising steps) [5]; QUICK=1.
set -euo pipefail
cd "$(dirname "$0")"
SWEEP=pppml
DEFAULT_ROUNDS=20
source scripts/sweep_env.sh
[ "${DATA}" = synthetic ] || { echo "run_pppml_exp.sh runs the synthetic tasks only (DATA=synthetic)" >&2; exit 2; }

ALPHA=${ALPHA:-0.01}
BETA=${BETA:-0.001}
STEPS=${STEPS:-5}
quick=""
[ "$QUICK" = 1 ] && quick="--train_size 12 --val_size 4 --test_size 4 --img_size 16 --rounds 2"
status=0
for data in synthetic-chestct synthetic-covidseg; do
  common="--data $data --rounds $ROUNDS --gpu $GPU --save_path $SAVE --alpha $ALPHA --beta $BETA"
  common+=" --personalize_steps $STEPS $quick"
  runs=()
  for seed in $SEEDS; do
    for algo in sgd perfedavg_fo perfedavg_hf pppml; do
      for agg in none ckks cyclic; do
        runs+=("--client_algo $algo --secure_agg $agg --seed $seed $common")
      done
    done
    for shift in 0 2; do
      for algo in sgd perfedavg_hf; do
        runs+=("--client_algo $algo --site_shift $shift --seed $seed $common")
      done
    done
  done
  sweep_and_report "$data" "$data" tools.sweep_report || status=$?
done
exit $status
