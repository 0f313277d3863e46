#!/usr/bin/env bash
# Set up .venv if needed, then run fed_train.py (default job unless flags are given).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python fed_train.py "$@"
