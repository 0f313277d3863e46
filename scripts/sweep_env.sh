# Sourced by the run_*_exp.sh sweep scripts: environment -> settings, and the launcher
# that runs the sweep's lines and then its report.
if [ -z "${PY:-}" ]; then
  bash scripts/setup.sh
  PY=.venv/bin/python
fi
DATA=${DATA:-synthetic}
GPU=${GPU:-0}
JOBS=${JOBS:-1}
SEEDS=${SEEDS:-0 1 2}
ROUNDS=${ROUNDS:-${DEFAULT_ROUNDS:-100}}  # DEFAULT_ROUNDS: set by the sweep script
QUICK=${QUICK:-0}
case "$DATA" in
  synthetic|real) ;;
  *) echo "DATA must be 'synthetic' or 'real' (got '$DATA')" >&2; exit 2 ;;
esac
if [ "$QUICK" = 1 ]; then
  DATA=synthetic
  SAVE=${SAVE:-experiments/${SWEEP}_quick}
else
  SAVE=${SAVE:-experiments/${SWEEP}}
fi

# Run the lines in the array `runs` (finished runs skipped, interrupted ones resumed),
# then write the report for dataset $1 to $SAVE/$2.* with report module $3
# (tools.report: Table 1 layout and plot; tools.sweep_report: one row per setting) and the
# finished runs' compact records to $SAVE/records (what a study commits beside its table).
# Interrupted (exit 130), the report of what finished is still written, marked partial.
sweep_and_report() {
  local data=$1 out=$2 report=${3:-tools.report} status=0
  printf '%s\n' "${runs[@]}" | "$PY" -m tools.sweep --jobs "$JOBS" || status=$?
  "$PY" -m "$report" "$SAVE/$data" --out "$SAVE/$out"
  "$PY" -m tools.archive "$SAVE/$data" --out "$SAVE/records"
  echo "report: $SAVE/$out.*; run records: $SAVE/records/$data" >&2
  return $status
}
