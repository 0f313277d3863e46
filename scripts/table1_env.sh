# Sourced by run_ich_exp.sh and run_prostate_exp.sh: environment -> settings, and the
# launcher that runs the sweep's lines and then the report.
if [ -z "${PY:-}" ]; then
  bash scripts/setup.sh
  PY=.venv/bin/python
fi
DATA=${DATA:-synthetic}
GPU=${GPU:-0}
JOBS=${JOBS:-1}
SEEDS=${SEEDS:-0 1 2}
ROUNDS=${ROUNDS:-100}
QUICK=${QUICK:-0}
case "$DATA" in
  synthetic|real) ;;
  *) echo "DATA must be 'synthetic' or 'real' (got '$DATA')" >&2; exit 2 ;;
esac
if [ "$QUICK" = 1 ]; then
  DATA=synthetic
  SAVE=${SAVE:-experiments/table1_quick}
else
  SAVE=${SAVE:-experiments/table1}
fi

# Run the lines in the array `runs` (finished runs skipped, interrupted ones resumed),
# then write the report for dataset $1 to $SAVE/$2.md, .csv and .png.
sweep_and_report() {
  local data=$1 out=$2 status=0
  printf '%s\n' "${runs[@]}" | "$PY" -m utils.sweep --jobs "$JOBS" || status=$?
  "$PY" -m utils.report "$SAVE/$data" --out "$SAVE/$out"
  echo "report: $SAVE/$out.md, $SAVE/$out.csv, $SAVE/$out.png" >&2
  return $status
}
