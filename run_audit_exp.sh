#!/usr/bin/env bash
# The empirical privacy audit of every mechanism that protects a unit: synthetic-ICH,
# 5 hospitals x 2 sub-clients, K canaries (--audit_canaries), seeds 0 1 2; then
# `python -m attacks.audit` on every run and a table of the ledger's epsilon against the
# one-run lower bound and the one-shot estimate.
#
#   bash run_audit_exp.sh               # the study (experiments/attacks/README.md)
#   QUICK=1 bash run_audit_exp.sh       # the whole grid at tiny sizes
#
# Environment [default]: GPU [0]; JOBS [1]; SAVE [experiments/attacks]; ROUNDS [10];
# SEEDS ["0 1 2"]; CANARIES [1000; 300 under secure aggregation, whose protocol runs
# once per canary]; QUICK=1.
set -euo pipefail
cd "$(dirname "$0")"
SWEEP=attacks
DEFAULT_ROUNDS=10
source scripts/sweep_env.sh

CANARIES=${CANARIES:-1000}
SECAGG_CANARIES=${SECAGG_CANARIES:-300}
common="--data synthetic-ich -N 5 -VN 2 --train_size 32 --rounds $ROUNDS --gpu $GPU --save_path $SAVE"
[ "$QUICK" = 1 ] && common+=" --val_size 4 --test_size 4 --img_size 16 --rounds 2" && CANARIES=20 && SECAGG_CANARIES=20
audit="--audit_canaries $CANARIES"
client="--mode dpsgd --delta 1e-5"

runs=()
for seed in $SEEDS; do
  base="$common --seed $seed"
  runs+=("$client --noise_multiplier 1.0 $audit $base"
         "$client --noise_multiplier 3.0 $audit $base"
         "$client --noise_multiplier 1.0 -sr 0.5 --client_sampling poisson $audit $base"
         "$client --noise_multiplier 1.0 --subclient_split paper $audit $base"
         "$client --noise_multiplier 1.0 --audit_unit hospital $audit $base"
         "--mode fedavg --dp_level update_local --local_noise 1.0 --local_clip 1.0 --local_delta 1e-5 $audit $base"
         "$client --strict_dp --noise_multiplier 1.0 --secure_agg secagg+ --noise_at clients --secagg_neighbours 8 --audit_canaries $SECAGG_CANARIES $base")
done
status=0
printf '%s\n' "${runs[@]}" | "$PY" -m tools.sweep --jobs "$JOBS" || status=$?
mkdir -p "$SAVE/results"
"$PY" -m attacks.audit "$SAVE"/synthetic-ich/seed*/*/ --table "$SAVE/results/audit" > "$SAVE/results/audit.log"
"$PY" -m tools.archive "$SAVE/synthetic-ich" --out "$SAVE/results/audit_records"
echo "table: $SAVE/results/audit.md; every audit: $SAVE/results/audit.log; run records: $SAVE/results/audit_records" >&2
exit $status
