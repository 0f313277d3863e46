#!/usr/bin/env bash
# No DP, and DP-FedAvg with and without adaptive intermediaries, on both synthetic tasks,
# 3 seeds (the README's client-level DP table). Rounds default to each dataset's preset
# (ICH 40, prostate 30); ROUNDS, JOBS (parallel runs) and SAVE are overridable. Finished
# runs are refused as existing, so re-running the script resumes the sweep.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SAVE=${SAVE:-experiments/dp_table}
ROUNDS=${ROUNDS:-}
JOBS=${JOBS:-2}
runs=()
for seed in 0 1 2; do
  runs+=("--data synthetic-ich --mode fedavg --seed $seed" "--data synthetic-prostate --mode fedavg --seed $seed")
  for z in 0.5 1.0 1.5; do
    for ada in "" "--ada_vn"; do
      runs+=("--data synthetic-ich --mode dpsgd --adaclip -N 20 --delta 0.01 --noise_multiplier $z $ada --seed $seed")
    done
  done
  for z in 0.3 0.5 0.7; do
    for ada in "" "--ada_vn"; do
      runs+=("--data synthetic-prostate --mode dpsgd --adaclip -N 6 --delta 0.1 --noise_multiplier $z $ada --seed $seed")
    done
  done
done
printf '%s\n' "${runs[@]}" | OMP_NUM_THREADS=1 xargs -P "$JOBS" -I{} sh -c \
  "$PY fed_train.py ${ROUNDS:+--rounds $ROUNDS} --save_path $SAVE --no_progress {} > /dev/null 2>&1 || echo 'skipped or failed: {}'"
