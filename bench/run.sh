#!/usr/bin/env bash
# Benchmark of the wasm invoke path, with its peer measured in the same run.
#
#   nimbus: a wasm32-wasip1 echo function, invoked over Lambda's Invoke API on loopback
#   peer:   `wasmtime serve -S cli=y -O pooling-allocator=y` (wasmtime-cli 48) serving a
#           wasi:http echo component (bench/peer-echo)
#
# Load generator: wrk on the same machine, POSTing the same 17-byte JSON body to both.
# Prints warm latency at c=1, throughput at c=32, cold starts and idle RSS.
#   usage: bench/run.sh            (DURATION=10s by default; PEER_WASMTIME=/path/to/wasmtime)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
DURATION=${DURATION:-10s}
PEER_ROOT=${PEER_ROOT:-$ROOT/.cache/peer}
PEER_WASMTIME=${PEER_WASMTIME:-$PEER_ROOT/bin/wasmtime}
NIMBUS_PORT=${NIMBUS_PORT:-19081}
PEER_PORT=${PEER_PORT:-19082}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
if [[ ! -x $PEER_WASMTIME ]]; then
  echo "installing wasmtime-cli 48 into $PEER_ROOT (a long build)" >&2
  cargo install wasmtime-cli --version 48.0.8 --locked --root "$PEER_ROOT"
fi
if [[ -z ${SKIP_BUILD:-} ]]; then
  cargo build --release -p nimbus >&2
fi
bash tests/fixtures/build.sh >&2
(cd bench/peer-echo && cargo build --release --target wasm32-wasip2 >&2)
NIMBUS=$ROOT/target/release/nimbus
ECHO_WASM=$ROOT/target/fixtures/echo.wasm
PEER_WASM=$ROOT/bench/peer-echo/target/wasm32-wasip2/release/peer_echo.wasm

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

cat >"$tmp/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"hello":"world"}'
wrk.headers["Content-Type"] = "application/json"
LUA

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# wrk --latency prints "50%  123.00us"; normalise to microseconds.
to_us() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); print v} else if (v ~ /ms$/) {sub(/ms$/,"",v); print v*1000} else if (v ~ /s$/) {sub(/s$/,"",v); print v*1000000}}'; }
run_wrk() { # url threads conns -> "p50_us p99_us rps"
  local out
  out=$(wrk -t"$2" -c"$3" -d"$DURATION" --latency -s "$tmp/post.lua" "$1")
  local p50 p99 rps
  p50=$(awk '$1=="50%" {print $2}' <<<"$out" | to_us)
  p99=$(awk '$1=="99%" {print $2}' <<<"$out" | to_us)
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  if grep -q "Non-2xx" <<<"$out"; then echo "wrk saw errors against $1:" >&2; echo "$out" >&2; exit 1; fi
  echo "$p50 $p99 $rps"
}

echo "== nimbus" >&2
"$NIMBUS" up --listen "127.0.0.1:$NIMBUS_PORT" --data-dir "$tmp/data" >"$tmp/nimbus.out" 2>"$tmp/nimbus.err" &
pids+=($!); NPID=$!
for _ in $(seq 100); do grep -q listening "$tmp/nimbus.out" 2>/dev/null && break; sleep 0.05; done
sleep 0.5
idle_fresh=$(rss_kb "$NPID")
python3 - "$NIMBUS_PORT" "$ECHO_WASM" <<'PY'
import base64, io, json, sys, zipfile, http.client
port, wasm = int(sys.argv[1]), open(sys.argv[2], "rb").read()
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w") as z: z.writestr("echo.wasm", wasm)
c = http.client.HTTPConnection("127.0.0.1", port)
c.request("POST", "/2015-03-31/functions", json.dumps({"FunctionName": "echo", "Runtime": "wasm32-wasip1",
  "Handler": "echo.wasm", "Role": "r", "Code": {"ZipFile": base64.b64encode(buf.getvalue()).decode()}}))
r = c.getresponse(); assert r.status == 201, r.read()
PY
NURL="http://127.0.0.1:$NIMBUS_PORT/2015-03-31/functions/echo/invocations"
curl -sf -d '{"hello":"world"}' "$NURL" >/dev/null
read -r n_p50 n_p99 _ < <(run_wrk "$NURL" 1 1)
read -r _ _ n_rps < <(run_wrk "$NURL" 2 32)
sleep 1
idle_after=$(rss_kb "$NPID")
kill -TERM "$NPID"; wait "$NPID" || true

echo "== peer: wasmtime serve" >&2
"$PEER_WASMTIME" serve -S cli=y -O pooling-allocator=y --addr "127.0.0.1:$PEER_PORT" "$PEER_WASM" >"$tmp/peer.out" 2>&1 &
pids+=($!); PPID_=$!
for _ in $(seq 100); do curl -sf -d '{}' "http://127.0.0.1:$PEER_PORT/" >/dev/null 2>&1 && break; sleep 0.1; done
PURL="http://127.0.0.1:$PEER_PORT/"
read -r p_p50 p_p99 _ < <(run_wrk "$PURL" 1 1)
read -r _ _ p_rps < <(run_wrk "$PURL" 2 32)
kill "$PPID_" 2>/dev/null || true

echo "== cold starts" >&2
cold_create=$(python3 bench/coldstart.py create 50 "$NIMBUS" "$ECHO_WASM")
cold_restart=$(python3 bench/coldstart.py restart 10 "$NIMBUS" "$ECHO_WASM")

cat <<EOF2
| measurement | nimbus | wasmtime serve (peer) |
|---|---|---|
| warm latency, c=1, p50 | ${n_p50} µs | ${p_p50} µs |
| warm latency, c=1, p99 | ${n_p99} µs | ${p_p99} µs |
| throughput, c=32 | ${n_rps} req/s | ${p_rps} req/s |
| idle RSS, fresh node | $((idle_fresh / 1024)) MiB | |
| idle RSS, after the load above | $((idle_after / 1024)) MiB | |

${cold_create}
${cold_restart}
EOF2
