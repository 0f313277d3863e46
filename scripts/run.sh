#!/usr/bin/env bash
# Set up .venv if needed, then run fed_train.py. With no arguments: the default job, the
# paper's method (DP-FedAvg, median clipping, adaptive intermediaries) on synthetic-ich.
# With arguments: exactly those flags.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ $# -eq 0 ]; then
  set -- --scale paper --mode dpsgd --adaclip --ada_vn --noise_multiplier 1.0 --delta 0.01
fi
exec .venv/bin/python fed_train.py "$@"
