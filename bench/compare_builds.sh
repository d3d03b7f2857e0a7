#!/usr/bin/env bash
# One round of the wasm echo benchmark against one nimbus binary, for comparing two builds in
# alternating rounds:
#
#   for r in 1 2 3 4; do bench/compare_builds.sh OLD 19201; bench/compare_builds.sh NEW 19202; done
#
# Prints c=1 p50/p99, c=32 throughput and p99, the telemetry thread's share of the node's CPU
# during the c=32 load, the node's RSS and the data directory's size afterwards.
# DURATION=5s per measurement by default.
set -euo pipefail
BIN=$1; PORT=$2; D=${DURATION:-5s}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$ROOT/bench/post.lua" "$tmp/post.lua"
"$BIN" up --listen "127.0.0.1:$PORT" --data-dir "$tmp/data" --config "$ROOT/bench/nimbus-bench.toml" >"$tmp/out" 2>"$tmp/err" &
PID=$!
for _ in $(seq 100); do grep -q listening "$tmp/out" 2>/dev/null && break; sleep 0.05; done
python3 "$ROOT/bench/deploy_echo.py" "$PORT" "$ROOT/target/fixtures/echo.wasm"
URL=http://127.0.0.1:$PORT/2015-03-31/functions/echo/invocations
curl -sf -d '{}' "$URL" >/dev/null
# /proc shows at most 15 characters of a thread's name.
telemetry_ticks() {
  local sum=0 t
  for t in /proc/$PID/task/*; do
    [[ $(cat "$t/comm" 2>/dev/null) == nimbus-telemetr* ]] && sum=$((sum + $(awk '{print $14+$15}' "$t/stat")))
  done
  echo "$sum"
}
o1=$(wrk -t1 -c1 -d"$D" --latency -s "$tmp/post.lua" "$URL")
t0=$(awk '{print $14+$15}' "/proc/$PID/stat"); tt0=$(telemetry_ticks)
o2=$(wrk -t2 -c32 -d"$D" --latency -s "$tmp/post.lua" "$URL")
t1=$(awk '{print $14+$15}' "/proc/$PID/stat"); tt1=$(telemetry_ticks)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")
kill -TERM "$PID"; wait "$PID" || true
echo "p50=$(awk '$1=="50%"{print $2}' <<<"$o1") p99=$(awk '$1=="99%"{print $2}' <<<"$o1")" \
  "rps32=$(awk '/Requests\/sec/{print $2}' <<<"$o2") p99_32=$(awk '$1=="99%"{print $2}' <<<"$o2")" \
  "telemetry=$(( t1 > t0 ? 100 * (tt1 - tt0) / (t1 - t0) : 0 ))% rss=${rss}kB data=$(du -sm "$tmp/data" | cut -f1)MB"
