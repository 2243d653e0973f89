#!/usr/bin/env bash
# make demo: broker + tidegate + device_sim on 127.0.0.1, data and alerts flowing.
# Stops everything on Ctrl-C or after DEMO_SECONDS (default 45; 0 = until Ctrl-C).
# Every TICK seconds (DEMO_TICK, default 5) it prints the counters and the newest record in
# the lake; everything the broker delivers on alerts/# and errors/# is printed as it comes
# (the shipped hot-alerts rule republishes on alerts/<thing>, alerts go to
# alerts/<thing>/<alert>). DEMO_DIR (default demo-data), DEMO_CERTS (default certs/out) and
# DEMO_BIN (default $B/rel) move what it writes and runs, as the tests do.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
B=${B:-build}
BIN=${DEMO_BIN:-$REPO/$B/rel}
SECONDS_BOUND=${DEMO_SECONDS:-45}
TICK=${DEMO_TICK:-5}
THINGS=${DEMO_THINGS:-5}
RATE=${DEMO_RATE:-5}
DEMO=${DEMO_DIR:-$REPO/demo-data}
CERTS=${DEMO_CERTS:-$REPO/certs/out}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

rm -rf "$DEMO"; mkdir -p "$DEMO"
certs/make-certs.sh "$CERTS" --things "$THINGS" >/dev/null
PORT=$(free_port); HTTP=$(free_port)
conf=$(certs/render-broker-conf.sh --certs "$CERTS" --port "$PORT" --dir "$DEMO/broker" --log "$DEMO/broker/mosquitto.log" | tail -1)

cat > "$DEMO/tidegate.conf" <<CONF
# demo configuration (see README "Configuration")
gateway_id = gw-demo
data_dir = $DEMO/data
[broker]
port = $PORT
ca_file = $CERTS/ca.crt
cert_file = $CERTS/gateway.crt
key_file = $CERTS/gateway.key
subscribe = devices/+/telemetry
[ingest]
rules_dir = $REPO/rules
schemas_dir = $REPO/rules/schemas
[http]
port = $HTTP
[sink lake]
type = file
path = $DEMO/lake
rotate_age = 10s
CONF

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo; echo "== stopping"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -d "$DEMO/lake/telemetry" ]; then
    n=$(find "$DEMO/lake/telemetry" -name '*.json' -exec cat {} + | wc -l)
    q=$(find "$DEMO/lake" -path '*quarantine*' -name '*.json' -exec cat {} + 2>/dev/null | wc -l)
    echo "== lake: $n telemetry records, $q quarantined, under $DEMO/lake"
    find "$DEMO/lake" -name '*.json' | head -5 | sed 's/^/   /'
  fi
  echo "== logs: $DEMO/tidegate.log $DEMO/broker/mosquitto.log"
}
trap cleanup INT TERM EXIT

mosquitto -c "$conf" >"$DEMO/broker/stdout.log" 2>&1 & pids+=($!)
for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.05; done
echo "== broker: mosquitto mTLS on 127.0.0.1:$PORT"

"$BIN/tidegate" run -c "$DEMO/tidegate.conf" 2>"$DEMO/tidegate.log" & pids+=($!)
for i in $(seq 100); do curl -sf "127.0.0.1:$HTTP/healthz" >/dev/null && break; sleep 0.1; done
echo "== tidegate: ops http://127.0.0.1:$HTTP/metrics, lake $DEMO/lake"

mosquitto_sub -h 127.0.0.1 -p "$PORT" --cafile "$CERTS/ca.crt" --cert "$CERTS/ops.crt" --key "$CERTS/ops.key" \
  -t 'alerts/#' -t 'errors/#' -v -V mqttv5 2>/dev/null > >(sed -u 's/^/   [broker] /') & pids+=($!)

dur=$SECONDS_BOUND; [ "$dur" -eq 0 ] && dur=86400
"$BIN/device_sim" --host 127.0.0.1 --port "$PORT" --cafile "$CERTS/ca.crt" --certs-dir "$CERTS/things" \
  --things "$THINGS" --rate "$RATE" --duration "$dur" --qos 1 --seed 1 \
  --spike dev-0002:6:5:45 --spike dev-0004:14:4:42 --hostile-rate 0.01 >"$DEMO/device_sim.log" 2>&1 & sim=$!; pids+=($sim)
echo "== device_sim: $THINGS things x $RATE msg/s for ${dur}s (spikes on dev-0002 and dev-0004, 1% hostile)"

end=$((SECONDS + dur))
while kill -0 "$sim" 2>/dev/null && [ $SECONDS -lt $end ]; do
  sleep "$TICK"
  m=$(curl -s "127.0.0.1:$HTTP/metrics" | grep -E '^tidegate_(messages_(accepted|quarantined)|outbox_rows|sink_records_total.*ok)' | tr '\n' ' ')
  echo "== $(date -u +%H:%M:%S) $m"
  # the newest record: the last whole line of the file written last (the in-progress file
  # while one is open), not whichever rotated file find happens to list last
  f=$(find "$DEMO/lake/telemetry" -type f -name '*.json*' -printf '%T@ %p\n' 2>/dev/null | sort -n | tail -1 | cut -d' ' -f2-)
  [ -n "$f" ] && case $f in
    *.gz*) ;;  # gzip members are only whole at rotation
    *) tail -c 65536 "$f" | sed -n '$!p;$ { /}$/p }' | tail -n 1 | cut -c1-200 | sed 's/^/   [lake] /' ;;
  esac
done
wait "$sim" 2>/dev/null || true
tail -n 1 "$DEMO/device_sim.log"
