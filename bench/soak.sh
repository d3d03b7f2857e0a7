#!/usr/bin/env bash
# Soak: sustained load on one wasm echo function, watching memory, disk and metering.
#
#   usage: bench/soak.sh [DURATION_S]     (600 by default; CONNECTIONS=32, SAMPLE_S=15)
#
# Starts a node on a fresh data directory with the default configuration, runs
# `wrk -t2 -c$CONNECTIONS` for DURATION_S seconds against the echo function's Invoke API, and
# samples the node's RSS and the data directory's size every SAMPLE_S seconds. Afterwards it
# compares the invocations `nimbus usage` reports with the requests wrk completed (plus the one
# warm-up call) and with the node's own count of invocations, and prints the samples and a
# summary.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SECONDS_TOTAL=${1:-600}
CONNECTIONS=${CONNECTIONS:-32}
SAMPLE_S=${SAMPLE_S:-15}
PORT=${NIMBUS_PORT:-19091}
NIMBUS=$ROOT/target/release/nimbus
ECHO_WASM=$ROOT/target/fixtures/echo.wasm

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
if [[ -z ${SKIP_BUILD:-} ]]; then
  cargo build --release -p nimbus >&2
  bash tests/fixtures/build.sh >&2
fi

tmp=$(mktemp -d)
pid=
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

cp "$ROOT/bench/post.lua" "$tmp/post.lua"

"$NIMBUS" up --listen "127.0.0.1:$PORT" --data-dir "$tmp/data" --config "$ROOT/bench/nimbus-bench.toml" >"$tmp/nimbus.out" 2>"$tmp/nimbus.err" &
pid=$!
for _ in $(seq 100); do grep -q listening "$tmp/nimbus.out" 2>/dev/null && break; sleep 0.05; done
export NIMBUS_ENDPOINT="http://127.0.0.1:$PORT"
python3 bench/deploy_echo.py "$PORT" "$ECHO_WASM"
URL="http://127.0.0.1:$PORT/2015-03-31/functions/echo/invocations"
curl -sf -d '{"hello":"world"}' "$URL" >/dev/null

rss_mb() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$pid/status"; }
data_mb() { du -sm "$tmp/data" | cut -f1; }
echo "t_s rss_mb data_mb" >"$tmp/samples"
echo "0 $(rss_mb) $(data_mb)" >>"$tmp/samples"
wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_TOTAL}s" -s "$tmp/post.lua" "$URL" >"$tmp/wrk.out" &
wrk_pid=$!
start=$(date +%s)
while kill -0 "$wrk_pid" 2>/dev/null; do
  sleep "$SAMPLE_S"
  kill -0 "$wrk_pid" 2>/dev/null || break
  echo "$(($(date +%s) - start)) $(rss_mb) $(data_mb)" >>"$tmp/samples"
done
wait "$wrk_pid"
sleep 2
echo "after $(rss_mb) $(data_mb)" >>"$tmp/samples"

requests=$(awk '/requests in/ {print $1}' "$tmp/wrk.out")
errors=$(awk '/Non-2xx|Socket errors/' "$tmp/wrk.out")
# The report is read until it stops changing: the last records are written within a second.
usage=0
for _ in $(seq 20); do
  now=$("$NIMBUS" usage --endpoint "$NIMBUS_ENDPOINT" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"]["invocations"])')
  [[ $now == "$usage" ]] && break
  usage=$now; sleep 1
done
# The node's own count of invocations that ran, from its metrics.
ran=$(curl -sf "$NIMBUS_ENDPOINT/metrics" | awk '/^nimbus_invocations_total\{function="echo"\}/ {print $2}')
cat "$tmp/samples"
echo
cat "$tmp/wrk.out"
python3 - "$tmp/samples" "$requests" "$usage" "$SAMPLE_S" "$ran" "$CONNECTIONS" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:]]
requests, usage, step, ran, conns = (int(a) for a in sys.argv[2:7])
timed = [(int(r[0]), float(r[1]), int(r[2])) for r in rows if r[0] != "after"]
after = [r for r in rows if r[0] == "after"][0]
rss_max = max(r[1] for r in timed)
late = [r for r in timed if r[0] >= 60]
# wrk counts the requests it saw answered; those still in flight on its connections when it
# stopped ran too (at most one per connection), so the client's count is a lower bound.
print(f"requests answered (wrk) + warm-up: {requests + 1}; invocations that ran (node metrics): {ran}")
exact = usage == ran and 0 <= usage - (requests + 1) <= conns
print(f"invocations metered (nimbus usage): {usage}  -> {'exact' if exact else 'MISMATCH'}"
      f" (metered - wrk = {usage - requests - 1}, at most {conns} in flight when wrk stopped)")
print(f"RSS: max {rss_max:.1f} MB during the load, {float(after[1]):.1f} MB after")
if late:
    print(f"data directory after the first minute: min {min(r[2] for r in late)} MB, max {max(r[2] for r in late)} MB; after the load {after[2]} MB")
PY
[[ -z $errors ]] || { echo "wrk reported errors: $errors"; exit 1; }
# The warm-up call plus wrk's requests ran; metering must match the node's own count.
[[ $usage == "$ran" ]] || { echo "metered $usage invocations, but $ran ran"; exit 1; }
