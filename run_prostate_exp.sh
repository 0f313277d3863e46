#!/usr/bin/env bash
# Table 1, prostate MRI segmentation, of Jiang et al., "Client-Level Differential Privacy
# via Adaptive Intermediary in Federated Medical Imaging" (MICCAI 2023): DP-FedAvg,
# DP-FedAdam, DP-FedNova and DP2-RMSProp without DP and at z = 0.3, 0.5, 0.7 (delta 0.1),
# each with and without adaptive intermediaries (--ada_vn), seeds 0 1 2; then the report
# (Markdown table, CSV, privacy-utility plot).
#
#   bash run_prostate_exp.sh                                 # synthetic-prostate
#   DATA=real DATA_ROOT=prostate_root bash run_prostate_exp.sh
#   QUICK=1 bash run_prostate_exp.sh                         # whole grid at tiny sizes
#
# Environment [default]: DATA synthetic|real [synthetic]; DATA_ROOT the PNG root holding
# the six <Site>.json files (real data; SPLIT_DIR if the JSONs live elsewhere); GPU CUDA
# index or cpu [0]; JOBS runs in parallel [1]; SAVE results root [experiments/table1];
# ROUNDS [100]; SEEDS ["0 1 2"]; LR local learning rate [1e-3, the paper's]; ADAM_LR
# [0.03, the paper's, on real data; 0.003 on synthetic, see README]; RMSPROP_LR [1e-3]
# and RMSPROP_DP_LR [1e-4] (DP2-RMSProp without and with DP); QUICK=1 tiny
# synthetic sizes, 2 rounds, in SAVE [experiments/table1_quick]. Finished runs are
# skipped and interrupted ones resumed, so running the script again continues the sweep.
set -euo pipefail
cd "$(dirname "$0")"
SWEEP=table1
source scripts/sweep_env.sh

if [ "$DATA" = real ]; then
  data="prostate"
  data_flags="--data prostate --data_root ${DATA_ROOT:?set DATA_ROOT to the prostate PNG root}"
  data_flags+="${SPLIT_DIR:+ --split_dir $SPLIT_DIR}"
  common="$data_flags --batch 8 -N 6 --lr ${LR:-1e-3}"
  ADAM_LR=${ADAM_LR:-0.03}
else  # the paper's regime at one tenth of the six sites' slice counts (--scale paper; README)
  data="synthetic-prostate"
  common="--data synthetic-prostate --scale paper${LR:+ --lr $LR}"
  ADAM_LR=${ADAM_LR:-0.003}  # the paper's 0.03 wrecks the small U-Net (README, Table 1)
fi
common+=" -VN 1 --rounds $ROUNDS --gpu $GPU --save_path $SAVE"
if [ "$QUICK" = 1 ]; then
  common="--data synthetic-prostate -N 3 --train_size 8 --val_size 4 --test_size 4 --img_size 16 --batch 4"
  common+=" --rounds 2 --gpu $GPU --save_path $SAVE"
fi
adam="--adam_lr $ADAM_LR"

runs=()
for seed in $SEEDS; do
  runs+=("--mode fedavg $common --seed $seed"
         "--mode fedadam $common $adam --seed $seed"
         "--mode fednova $common --seed $seed"
         "--mode fed2rmsprop $common --rmsprop_lr ${RMSPROP_LR:-1e-3} --seed $seed")
  for z in 0.3 0.5 0.7; do
    for ours in "" "--ada_vn"; do
      dp="--adaclip --delta 0.1 --noise_multiplier $z $ours --seed $seed"
      runs+=("--mode dpsgd $common $dp"
             "--mode dpadam $common $adam $dp"
             "--mode dpnova $common $dp"
             "--mode dp2rmsprop $common --rmsprop_lr ${RMSPROP_DP_LR:-1e-4} $dp")
    done
  done
done
sweep_and_report "$data" table1_prostate
