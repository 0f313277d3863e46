#!/usr/bin/env bash
# Run a federation across processes on this machine: one Flower SuperLink and one SuperNode
# per hospital (insecure gRPC on 127.0.0.1 only), then `flwr run` of this repository's app.
#
#   bash deploy/run_local.sh N [fed_train.py flags] [deployment flags: python -m deploy.simulate --help]
#   bash deploy/run_local.sh 3 --rounds 5 --mode dpsgd --noise_multiplier 1 --strict_dp --flower_secagg
#
# Telemetry and runtime dependency installation are off. Every process it starts is stopped
# by its process group when it ends, on failure or on Ctrl-C. Logs: $RUN_LOCAL_LOGS (default:
# a temporary folder, removed at the end unless the run failed). Exit status: 0 when the
# server wrote the run's summary, 1 otherwise.
set -euo pipefail
if [[ $# -lt 1 || ! "$1" =~ ^[0-9]+$ ]]; then
    echo "usage: bash deploy/run_local.sh N [fed_train.py flags]   (N: hospitals, one SuperNode each)" >&2
    exit 2
fi
N=$1; shift
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
BIN=$(dirname "$PY")
WORK=${RUN_LOCAL_LOGS:-$(mktemp -d "${TMPDIR:-/tmp}/flower-local.XXXXXX")}
mkdir -p "$WORK"
export PATH="$BIN:$PATH" PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" FLWR_HOME="$WORK/flwr"
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
export RAY_USAGE_STATS_ENABLED=0
PIDS=()
status=1

stop_all() {
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    for ((t = 0; t < 20; t++)); do  # up to 10 s to exit cleanly, then killed
        alive=0
        for pid in "${PIDS[@]}"; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.5
    done
    for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ -n "${RUN_LOCAL_LOGS:-}" || ( $status -ne 0 && $status -ne 2 ) ]]; then
        echo "run_local.sh: logs in $WORK" >&2
    else
        rm -rf "$WORK"  # a finished run, or flags refused before anything started
    fi
    exit $status
}
trap stop_all EXIT
trap 'echo "run_local.sh: interrupted; stopping every process it started" >&2; status=130; exit 130' INT TERM

"$PY" -m deploy.local_setup "$WORK" "$N" "$@" || { status=2; exit 2; }
read -r LINK NODE_PORT_LIST < "$WORK/ports"  # the SuperLink's one HTTP port (fleet, control, runtime), then each node's
read -r -a NODE_PORT <<< "$NODE_PORT_LIST"
RUN_DIR=$(cat "$WORK/run_dir")
mkdir -p "$FLWR_HOME"  # config.toml: the SuperLink connection `flwr run` uses
cat > "$FLWR_HOME/config.toml" <<TOML
[superlink]
default = "local-sites"

[superlink.local-sites]
address = "127.0.0.1:$LINK"
insecure = true
TOML

# setsid: each process leads its own group, so stopping the group also stops the app
# processes it spawned (flwr-serverapp, flwr-clientapp)
setsid "$BIN/flower-superlink" --insecure --isolation subprocess --database "$WORK/superlink.db" \
    --host 127.0.0.1 --port "$LINK" > "$WORK/superlink.log" 2>&1 &
PIDS+=($!)
# wait for the SuperLink to listen before the SuperNodes and `flwr run` connect
for ((t = 0; ; t++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$LINK") 2>/dev/null && break
    kill -0 "${PIDS[0]}" 2>/dev/null || { echo "run_local.sh: the SuperLink exited; see $WORK/superlink.log" >&2; exit 1; }
    ((t < 120)) || { echo "run_local.sh: the SuperLink did not listen on 127.0.0.1:$LINK within 60 s" >&2; exit 1; }
    sleep 0.5
done
for ((i = 0; i < N; i++)); do
    setsid "$BIN/flower-supernode" --insecure --superlink "127.0.0.1:$LINK" --host 127.0.0.1 --port "${NODE_PORT[$i]}" \
        --node-config "partition-id=$i num-partitions=$N" --max-retries 10 --max-wait-time 60 \
        > "$WORK/supernode$i.log" 2>&1 &
    PIDS+=($!)
done
echo "run_local.sh: SuperLink (pid ${PIDS[0]}) and $N SuperNodes (pids ${PIDS[*]:1}) on 127.0.0.1; logs in $WORK" >&2
echo "${PIDS[*]}" > "$WORK/pids"  # SuperLink, then SuperNode 0..N-1 (each leads its process group)

before=$(stat -c %Y "$RUN_DIR/summary.json" 2>/dev/null || echo none)
cd "$REPO"
"$BIN/flwr" run . local-sites --run-config "$WORK/run.toml" --stream 2>&1 | tee "$WORK/run.log" || true
after=$(stat -c %Y "$RUN_DIR/summary.json" 2>/dev/null || echo none)
if [[ "$after" != none && "$after" != "$before" ]]; then
    status=0
    echo "run_local.sh: done; results in $RUN_DIR" >&2
else
    grep -h "flower server: stopped" "$WORK"/*.log 2>/dev/null | head -1 >&2 || true
    echo "run_local.sh: the run did not finish (no summary in $RUN_DIR)" >&2
fi
