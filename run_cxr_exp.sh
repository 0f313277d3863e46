#!/usr/bin/env bash
# The chest-radiograph fairness study (Tayebi Arasteh et al., "Preserving fairness and
# diagnostic accuracy in private large-scale AI models for medical imaging", Commun Med
# 2024): centralised training (-N 1) of a GroupNorm ResNet-9 with NAdam and a logical batch
# of 128 over physical batches of 32, without DP and with sample-level DP-SGD (Opacus) at
# epsilon 10, 5 and 1 (delta 6e-6, per-sample clip 1.5), seeds 0 1 2. Each run picks
# per-finding Youden thresholds on validation and reports test AUC, accuracy, sensitivity,
# specificity, subgroup metrics and parity differences with 95% bootstrap intervals (1,000
# resamples); the report adds the cost of each epsilon against no DP, the Pearson
# correlation of epsilon with each parity difference and a plot of them.
#
#   bash run_cxr_exp.sh                                       # synthetic-cxr (the preset)
#   DATA=real IMAGE_DIR=root SPLIT_DIR=tables bash run_cxr_exp.sh   # CheXpert-style tables
#   QUICK=1 bash run_cxr_exp.sh                               # the whole grid at tiny sizes
#
# Environment [default]: DATA synthetic|real [synthetic]; IMAGE_DIR the folder the tables'
# Path column is under and SPLIT_DIR the folder of train/valid/test.csv (real data; also
# FINDINGS comma-separated columns [CheXpert's five] and UNCERTAIN zeros|ones [zeros]);
# GPU [0]; JOBS [1]; SAVE [experiments/cxr]; ROUNDS (epochs) [5 synthetic, 20 real];
# SEEDS ["0 1 2"]; EPSILONS ["10 5 1"]; MODEL [resnet9_small synthetic, resnet9 real];
# LR [1e-3 synthetic, 2e-4 real]; IMG_SIZE [the preset's: 32 synthetic, 224 real];
# MAX_GRAD_NORM [1.5]; QUICK=1.
set -euo pipefail
cd "$(dirname "$0")"
SWEEP=cxr
DEFAULT_ROUNDS=5
[ "${DATA:-synthetic}" = real ] && DEFAULT_ROUNDS=20
source scripts/sweep_env.sh
EPSILONS=${EPSILONS:-10 5 1}
if [ "$DATA" = real ]; then
  data=chest-xray
  : "${IMAGE_DIR:?set IMAGE_DIR to the folder the table paths are under}"
  : "${SPLIT_DIR:?set SPLIT_DIR to the folder of train.csv, valid.csv, test.csv}"
  common="--data chest-xray --image_dir \"$IMAGE_DIR\" --split_dir \"$SPLIT_DIR\""
  common+="${FINDINGS:+ --findings \"$FINDINGS\"} --uncertain ${UNCERTAIN:-zeros} --model ${MODEL:-resnet9}"
  common+=" --lr ${LR:-2e-4}"
else
  data=synthetic-cxr
  common="--data synthetic-cxr --model ${MODEL:-resnet9_small}${LR:+ --lr $LR}"
fi
common+="${IMG_SIZE:+ --img_size $IMG_SIZE} -N 1 --local_opt nadam --batch 128 --rounds $ROUNDS --gpu $GPU"
common+=" --save_path $SAVE"
[ "$QUICK" = 1 ] && common="--data synthetic-cxr -N 1 --local_opt nadam --train_size 32 --val_size 16 \
--test_size 32 --img_size 16 --batch 8 --rounds 2 --bootstrap 50 --gpu $GPU --save_path $SAVE"
dp="--dp_level sample --physical_batch 32 --max_grad_norm ${MAX_GRAD_NORM:-1.5} --sample_delta 6e-6"

runs=()
for seed in $SEEDS; do
  runs+=("$common --seed $seed")  # epsilon = inf
  for eps in $EPSILONS; do
    runs+=("$common $dp --sample_epsilon $eps --seed $seed")
  done
done
sweep_and_report "$data" cxr tools.sweep_report
