#!/usr/bin/env bash
# The BloodMNIST federation with DPResNet (GroupNorm ResNet-9 style): 5, 10 and 20
# hospitals x {no DP, local update DP, client-level DP; no DP under SecAgg+, client-level
# DP with the noise at the clients under SecAgg+, and the same release with central
# noise}, seeds 0 1 2; then a table.
# The first private settings target the same epsilon (EPSILON, delta 1e-5) over all rounds:
# local update DP per sub-client against an untrusted server (--dp_level update_local),
# client-level DP per sub-client at the server (DP-FedAvg, --mode dpsgd, median clipping).
# The secure-aggregation rows run --strict_dp at noise multiplier Z: the distributed
# Skellam shares (--noise_at clients) and the server's Gaussian give the same epsilon.
#
#   bash run_blood_exp.sh                                    # synthetic-blood
#   DATA=real DATA_ROOT=folder_with_bloodmnist.npz bash run_blood_exp.sh
#   QUICK=1 bash run_blood_exp.sh                            # the whole grid at tiny sizes
#
# Environment [default]: DATA synthetic|real [synthetic]; DATA_ROOT folder holding
# bloodmnist.npz (real data); GPU [0]; JOBS [1]; SAVE [experiments/blood]; ROUNDS
# [15 synthetic, 50 real]; SEEDS ["0 1 2"]; EPSILON [10]; Z [1.0]; MODEL [dpresnet_small on
# synthetic, dpresnet on real]; QUICK=1. The synthetic federation keeps 800 training
# images in total, split evenly, so more hospitals means smaller ones.
set -euo pipefail
cd "$(dirname "$0")"
SWEEP=blood
DEFAULT_ROUNDS=$([ "${DATA:-synthetic}" = real ] && echo 50 || echo 15)
source scripts/sweep_env.sh

EPSILON=${EPSILON:-10}
Z=${Z:-1.0}
if [ "$DATA" = real ]; then
  data="bloodmnist"
  data_flags="--data bloodmnist --data_root ${DATA_ROOT:?set DATA_ROOT to the folder holding bloodmnist.npz}"
  MODEL=${MODEL:-dpresnet}
else
  data="synthetic-blood"
  data_flags="--data synthetic-blood"
  MODEL=${MODEL:-dpresnet_small}
fi
common="$data_flags --model $MODEL --batch 16 --lr 1e-3 --rounds $ROUNDS --gpu $GPU --save_path $SAVE"
quick=""
[ "$QUICK" = 1 ] && quick="--val_size 4 --test_size 4 --img_size 16 --batch 4 --rounds 2"

runs=()
for seed in $SEEDS; do
  for n in 5 10 20; do
    sizes="-N $n"
    [ "$DATA" = synthetic ] && sizes+=" --train_size $(( (QUICK == 1 ? 160 : 800) / n ))"
    base="$common $sizes $quick --seed $seed"
    runs+=("--mode fedavg $base"
           "--mode fedavg --dp_level update_local --local_epsilon $EPSILON --local_clip 1.0 $base"
           "--mode dpsgd --adaclip --epsilon $EPSILON --delta 1e-5 $base"
           "--mode fedavg --secure_agg secagg+ $base"
           "--mode dpsgd --strict_dp --noise_multiplier $Z --delta 1e-5 --secure_agg secagg+ --noise_at clients $base"
           "--mode dpsgd --strict_dp --noise_multiplier $Z --delta 1e-5 $base")
  done
done
sweep_and_report "$data" blood tools.sweep_report
