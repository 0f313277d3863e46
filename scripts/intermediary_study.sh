#!/usr/bin/env bash
# Why do intermediaries not help on synthetic-ich? (README, "Do intermediaries help?")
# Seeds 0-2 (SEEDS), 20 rounds: the cost of splitting without DP (-VN 1/2/4), DP at z = 1 with a fixed
# -VN 1/2/4, and the same with 4x larger hospitals (256 training images each), plus --ada_vn.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SAVE=${SAVE:-experiments/intermediary_study}
JOBS=${JOBS:-2}
SEEDS=${SEEDS:-0 1 2}
common="--data synthetic-ich -N 20 --rounds 20 --no_progress --save_path $SAVE"
dp="--mode dpsgd --adaclip --noise_multiplier 1.0 --delta 0.01"
runs=()
for seed in $SEEDS; do
  for vn in 1 2 4; do
    runs+=("--seed $seed --mode fedavg -VN $vn --exp nodp_n64_vn$vn")
    runs+=("--seed $seed $dp -VN $vn --exp dp_n64_vn$vn")
    runs+=("--seed $seed $dp -VN $vn --train_size 256 --exp dp_n256_vn$vn")
  done
  runs+=("--seed $seed $dp --ada_vn --exp dp_n64_adavn")
  runs+=("--seed $seed $dp --ada_vn --train_size 256 --exp dp_n256_adavn")
  runs+=("--seed $seed --mode fedavg --train_size 256 --exp nodp_n256_vn1")
done
printf '%s\n' "${runs[@]}" | OMP_NUM_THREADS=1 xargs -P "$JOBS" -I{} sh -c \
  "$PY fed_train.py $common {} > /dev/null 2>&1 || echo 'skipped or failed: {}'"
