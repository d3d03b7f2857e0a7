#!/usr/bin/env bash
# Benchmark of the wasm invoke path, with its peer measured in the same run.
#
#   nimbus: a wasm32-wasip1 echo function, invoked over Lambda's Invoke API on loopback
#   peer:   `wasmtime serve -S cli=y -O pooling-allocator=y` (wasmtime-cli 48) serving a
#           wasi:http echo component (bench/peer-echo)
#
# Load generator: wrk on the same machine, POSTing the same 17-byte JSON body to both.
# Prints warm latency at c=1, throughput at c=32 (medians of ROUNDS alternating nimbus/peer
# rounds), the telemetry thread's share of the node's CPU, cold starts and idle RSS.
#   usage: bench/run.sh   (DURATION=10s, ROUNDS=3 by default; PEER_WASMTIME=/path/to/wasmtime)
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

cp "$ROOT/bench/post.lua" "$tmp/post.lua"

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

# CPU time (ticks) of a process, and of its threads named $2 (as /proc shows names: at most 15
# characters, so nimbus-telemetry is nimbus-telemetr).
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
thread_ticks() {
  local sum=0 t
  for t in /proc/$1/task/*; do
    if [[ $(cat "$t/comm" 2>/dev/null) == "$2" ]]; then
      sum=$((sum + $(awk '{print $14+$15}' "$t/stat")))
    fi
  done
  echo "$sum"
}

nimbus_round() { # -> "p50 p99 rps telemetry_share_percent idle_rss_fresh_kb idle_rss_after_kb"
  rm -rf "$tmp/data"
  "$NIMBUS" up --listen "127.0.0.1:$NIMBUS_PORT" --data-dir "$tmp/data" --config "$ROOT/bench/nimbus-bench.toml" >"$tmp/nimbus.out" 2>"$tmp/nimbus.err" &
  local NPID=$!
  for _ in $(seq 100); do grep -q listening "$tmp/nimbus.out" 2>/dev/null && break; sleep 0.05; done
  sleep 0.5
  local idle_fresh idle_after
  idle_fresh=$(rss_kb "$NPID")
  python3 bench/deploy_echo.py "$NIMBUS_PORT" "$ECHO_WASM"
  local url="http://127.0.0.1:$NIMBUS_PORT/2015-03-31/functions/echo/invocations"
  curl -sf -d '{"hello":"world"}' "$url" >/dev/null
  local p50 p99 rps t0 tt0 t1 tt1
  read -r p50 p99 _ < <(run_wrk "$url" 1 1)
  t0=$(cpu_ticks "$NPID"); tt0=$(thread_ticks "$NPID" nimbus-telemetr)
  read -r _ _ rps < <(run_wrk "$url" 2 32)
  t1=$(cpu_ticks "$NPID"); tt1=$(thread_ticks "$NPID" nimbus-telemetr)
  sleep 1
  idle_after=$(rss_kb "$NPID")
  kill -TERM "$NPID"; wait "$NPID" || true
  echo "$p50 $p99 $rps $(awk -v a=$((tt1 - tt0)) -v b=$((t1 - t0)) 'BEGIN {printf "%.1f", b ? 100 * a / b : 0}') $idle_fresh $idle_after"
}

peer_round() { # -> "p50 p99 rps"
  "$PEER_WASMTIME" serve -S cli=y -O pooling-allocator=y --addr "127.0.0.1:$PEER_PORT" "$PEER_WASM" >"$tmp/peer.out" 2>&1 &
  local pid=$!; pids+=($pid)
  for _ in $(seq 100); do curl -sf -d '{}' "http://127.0.0.1:$PEER_PORT/" >/dev/null 2>&1 && break; sleep 0.1; done
  local url="http://127.0.0.1:$PEER_PORT/" p50 p99 rps
  read -r p50 p99 _ < <(run_wrk "$url" 1 1)
  read -r _ _ rps < <(run_wrk "$url" 2 32)
  kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  echo "$p50 $p99 $rps"
}

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {if (NR % 2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }

ROUNDS=${ROUNDS:-3}
n_p50s=(); n_p99s=(); n_rpss=(); n_tel=(); p_p50s=(); p_p99s=(); p_rpss=(); ratios=()
for round in $(seq "$ROUNDS"); do
  echo "== round $round: nimbus" >&2
  read -r a b c d idle_fresh idle_after < <(nimbus_round)
  n_p50s+=("$a"); n_p99s+=("$b"); n_rpss+=("$c"); n_tel+=("$d")
  echo "== round $round: peer (wasmtime serve)" >&2
  read -r e f g < <(peer_round)
  p_p50s+=("$e"); p_p99s+=("$f"); p_rpss+=("$g")
  ratios+=("$(awk -v n="$c" -v p="$g" 'BEGIN {printf "%.2f", n / p}')")
  echo "   nimbus p50 ${a} µs p99 ${b} µs ${c} req/s (telemetry ${d} % of CPU) | peer p50 ${e} µs p99 ${f} µs ${g} req/s" >&2
done
n_p50=$(echo "${n_p50s[*]}" | median); n_p99=$(echo "${n_p99s[*]}" | median); n_rps=$(echo "${n_rpss[*]}" | median)
n_tel_m=$(echo "${n_tel[*]}" | median)
p_p50=$(echo "${p_p50s[*]}" | median); p_p99=$(echo "${p_p99s[*]}" | median); p_rps=$(echo "${p_rpss[*]}" | median)
ratio=$(echo "${ratios[*]}" | median)

echo "== cold starts" >&2
cold_create=$(python3 bench/coldstart.py create 50 "$NIMBUS" "$ECHO_WASM")
cold_restart=$(python3 bench/coldstart.py restart 10 "$NIMBUS" "$ECHO_WASM")

cat <<EOF2
Medians of ${ROUNDS} alternating rounds (nimbus, peer, nimbus, peer, ...), ${DURATION} per measurement.

| measurement | nimbus | wasmtime serve (peer) |
|---|---|---|
| warm latency, c=1, p50 | ${n_p50} µs (rounds: ${n_p50s[*]}) | ${p_p50} µs (rounds: ${p_p50s[*]}) |
| warm latency, c=1, p99 | ${n_p99} µs (rounds: ${n_p99s[*]}) | ${p_p99} µs (rounds: ${p_p99s[*]}) |
| throughput, c=32 | ${n_rps} req/s (rounds: ${n_rpss[*]}) | ${p_rps} req/s (rounds: ${p_rpss[*]}) |
| throughput ratio nimbus/peer, median of per-round ratios | ${ratio}× (rounds: ${ratios[*]}) | |
| telemetry thread's share of the node's CPU at c=32 | ${n_tel_m} % (rounds: ${n_tel[*]}) | |
| idle RSS, fresh node (last round) | $((idle_fresh / 1024)) MiB | |
| idle RSS, after the load above (last round) | $((idle_after / 1024)) MiB | |

${cold_create}
${cold_restart}
EOF2
