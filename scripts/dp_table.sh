#!/usr/bin/env bash
# DP-FedAvg with and without adaptive intermediaries on both synthetic tasks, 3 seeds
# (the README's client-level DP table). ROUNDS and JOBS (parallel runs) are overridable.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SAVE=${SAVE:-experiments/dp_table}
ROUNDS=${ROUNDS:-20}
JOBS=${JOBS:-2}
runs=()
for seed in 0 1 2; do
  for z in 0.5 1.0 1.5; do
    for ada in "" "--ada_vn"; do
      runs+=("--data synthetic-ich -N 20 --delta 0.01 --noise_multiplier $z $ada --seed $seed")
    done
  done
  for z in 0.3 0.5 0.7; do
    for ada in "" "--ada_vn"; do
      runs+=("--data synthetic-prostate -N 6 --delta 0.1 --noise_multiplier $z $ada --seed $seed")
    done
  done
done
printf '%s\n' "${runs[@]}" | OMP_NUM_THREADS=1 xargs -P "$JOBS" -I{} sh -c \
  "$PY fed_train.py --mode dpsgd --adaclip --rounds $ROUNDS --save_path $SAVE --no_progress {} > /dev/null 2>&1 || echo 'failed: {}'"
