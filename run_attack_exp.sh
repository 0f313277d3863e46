#!/usr/bin/env bash
# Gradient inversion against every protection (experiments/attacks/README.md): one round
# of a 3-hospital synthetic-ICH federation, the target holding one batch, plain SGD.
#   LeNet, one image, 1 and 3 local steps: every scenario, iDLG and Inverting Gradients
#   LeNet, batches of 4 and 16, 1 and 3 steps: no protection and client-level DP z = 0.5
#   the small CNN (GroupNorm, ReLU), one image: no protection and client-level DP z = 1.0
#   DenseNet-121 (the paper's model), one 64 px image: no protection, Inverting Gradients
#
#   bash run_attack_exp.sh              # writes experiments/attacks/results/<part>/
#
# Environment [default]: OUT [experiments/attacks/results]; THREADS [2].
set -euo pipefail
cd "$(dirname "$0")"
if [ -z "${PY:-}" ]; then
  bash scripts/setup.sh
  PY=.venv/bin/python
fi
OUT=${OUT:-experiments/attacks/results}
THREADS=${THREADS:-2}
invert() { local part=$1; shift; "$PY" -m attacks.invert --out "$OUT/$part" --threads "$THREADS" "$@"; }
invert lenet_one_image --models lenet --batches 1 --steps 1,3
invert lenet_batches --models lenet --batches 4,16 --steps 1,3 --scenarios "none,client DP z=0.5" --restarts 1
invert cnn --models cnn --batches 1 --steps 1 --scenarios "none,client DP z=1.0"
invert densenet121 --models densenet121 --img_size 64 --batches 1 --steps 1 --scenarios none --methods ig \
  --ig_iterations 60 --restarts 1
