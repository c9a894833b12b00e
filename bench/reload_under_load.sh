#!/usr/bin/env bash
# Latency under steady load with and without config reloads (one every 200 ms).
# Server pinned to CPU 0, wrk to CPU 1; prints wrk's p50/p90/p99/max for both runs.
#   bash bench/reload_under_load.sh [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-10}
CONNECTIONS=${2:-16}
WORK=$(mktemp -d)
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
sed "s|model_repository: \"../models\"|model_repository: \"$PWD/models\"|" conf/model_router_rules.yml > "$WORK/rules.yml"
PORT=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
taskset -c 0 .venv/bin/python app.py --config "$WORK/rules.yml" --port "$PORT" --state-file "$WORK/state.json" \
  --log-level WARNING 2>"$WORK/server.log" &
SERVER=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/health/ready" >/dev/null && break; sleep 0.1; done
cat > "$WORK/predict.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"asset_class":"crypto","horizon_ms":30000,"symbol":"ETH/USDT","features":{"order_imbalance":0.3,"spread_bps":1.2,"trade_flow":0.5,"return_1s":0.001,"volume_z":0.1}}'
LUA
run() { taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --latency -s "$WORK/predict.lua" \
  "http://127.0.0.1:$PORT/predict" | grep -E "Requests/sec|^ +(50|90|99)%|Latency" ; }
taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d2s -s "$WORK/predict.lua" "http://127.0.0.1:$PORT/predict" >/dev/null
echo "== steady load, no reloads (${SECONDS_PER_RUN}s, c=$CONNECTIONS)"
run
echo "== steady load, config rewritten every 200 ms (file watcher reloads)"
( end=$((SECONDS + SECONDS_PER_RUN)); i=0
  while [ $SECONDS -lt $end ]; do
    i=$((i + 1)); sed -i "s/priority: 1[0-9]*$/priority: 1$((i % 9))/" "$WORK/rules.yml"; sleep 0.2
  done ) &
CHURN=$!
run
wait $CHURN
echo "reloads applied: $(curl -s "http://127.0.0.1:$PORT/stats" | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["load_count"])')"
echo "reproduce: bash bench/reload_under_load.sh $SECONDS_PER_RUN $CONNECTIONS"
