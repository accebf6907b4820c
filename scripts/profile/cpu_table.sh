#!/bin/bash
# CPU per message and per connection of the proxy on Deno and on Node, and of reference servers
# (issue 12, step 2). Servers under test on CPU 0; the C target and the C load generator
# (scripts/profile/loadgen.c) on CPU 1. Each figure is the server's utime+stime from
# /proc/PID/stat over the load generator's window divided by the echoes or connections in it.
#
#   scripts/profile/cpu_table.sh [ROUNDS] [SERVERS...]     (defaults: 3, all of them)
#   SESSIONS=1000 WINDOW_MS=5000 SETUP_MS=3000 PARALLEL=4 scripts/profile/cpu_table.sh 3
#
# Servers: deno-proxy node-proxy deno-ws-echo deno-relay net-relay-deno net-relay-node.
# Every round runs each server in turn (echo with SESSIONS sessions of 32 B, then set-up with
# PARALLEL loops of handshake + 1 echo + close), so a noisy stretch does not fall on one server.
# Raw JSON lines go to $OUT/results.jsonl (default OUT=/tmp/websockify-profile); a summary of
# medians (min–max) is printed at the end. All processes started here are killed by PID on exit.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
rounds=${1:-3}
shift || true
servers=("$@")
[ ${#servers[@]} -eq 0 ] && servers=(deno-proxy node-proxy deno-ws-echo deno-relay net-relay-deno net-relay-node)
OUT=${OUT:-/tmp/websockify-profile}
SESSIONS=${SESSIONS:-1000}
WARMUP_MS=${WARMUP_MS:-2000}
WINDOW_MS=${WINDOW_MS:-5000}
SETUP_MS=${SETUP_MS:-3000}
PARALLEL=${PARALLEL:-4}
V8_FLAGS=--sqrt-allocation-limits,--sqrt-allocation-limits-max-growing-factor=1.5
mkdir -p "$OUT"
cc -O2 -Wall -o "$OUT/loadgen" "$here/scripts/profile/loadgen.c"
WEBSOCKIFY_NODE_DIR="$OUT/node" "$here/scripts/profile/node_run.sh" --build-only
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# start NAME CPU COMMAND...: runs COMMAND, waits for a port on its stdout or stderr.
declare -A port pid
start() {
  local name=$1 cpu=$2
  shift 2
  taskset -c "$cpu" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err" &
  pid[$name]=$!
  pids+=($!)
  for _ in $(seq 100); do
    local p
    p=$(grep -ho '"port":[0-9]*\|Listen on 127.0.0.1:[0-9]*' "$OUT/$name.out" "$OUT/$name.err" |
      grep -o '[0-9]*$' | head -1 || true)
    if [ -n "$p" ]; then
      port[$name]=$p
      return
    fi
    sleep 0.1
  done
  echo "$name did not start: $(cat "$OUT/$name.err")" >&2
  exit 1
}

start target 1 "$OUT/loadgen" target 0
tp=${port[target]}
for s in "${servers[@]}"; do
  case $s in
  deno-proxy) start "$s" 0 env DENO_V8_FLAGS=$V8_FLAGS deno run -A --unstable-net "$here/main.ts" 127.0.0.1:0 "127.0.0.1:$tp" ;;
  node-proxy) start "$s" 0 node --import "$OUT/node/shim.mjs" "$OUT/node/main.mjs" 127.0.0.1:0 "127.0.0.1:$tp" ;;
  deno-ws-echo) start "$s" 0 deno run -A "$here/scripts/profile/ref_servers.ts" ws-echo ;;
  deno-relay) start "$s" 0 deno run -A "$here/scripts/profile/ref_servers.ts" deno-relay "$tp" ;;
  net-relay-deno) start "$s" 0 deno run -A "$here/scripts/profile/ref_servers.ts" net-relay "$tp" ;;
  net-relay-node) start "$s" 0 node "$OUT/node/ref_servers.mjs" net-relay "$tp" ;;
  *) echo "unknown server $s" >&2 && exit 2 ;;
  esac
done

: >"$OUT/results.jsonl"
for r in $(seq "$rounds"); do
  for s in "${servers[@]}"; do
    route=ws
    case $s in *relay*) route=tcp ;; esac
    for mode in echo setup; do
      if [ $mode = echo ]; then n=$SESSIONS w=$WINDOW_MS; else n=$PARALLEL w=$SETUP_MS; fi
      line=$(taskset -c 1 "$OUT/loadgen" $mode $route "${port[$s]}" "$n" "$WARMUP_MS" "$w" "${pid[$s]}")
      rss=$(awk '/VmRSS/ {print $2}' "/proc/${pid[$s]}/status")
      echo "{\"server\":\"$s\",\"round\":$r,\"rssKib\":$rss,${line#\{}" | tee -a "$OUT/results.jsonl"
      sleep 1
    done
  done
done

python3 - "$OUT/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def fmt(xs, f="{:.0f}"):
    return f.format(statistics.median(xs)) + " (" + f.format(min(xs)) + "–" + f.format(max(xs)) + ")"
print("| server | echo µs CPU/msg | echo msg/s | echo CPU share | set-up µs CPU/conn | set-up conn/s |")
print("| --- | --- | --- | --- | --- | --- |")
for s in dict.fromkeys(r["server"] for r in rows):
    e = [r for r in rows if r["server"] == s and r["mode"] == "echo"]
    u = [r for r in rows if r["server"] == s and r["mode"] == "setup"]
    print(f"| {s} | {fmt([r['usPer'] for r in e], '{:.1f}')} | {fmt([r['rate'] for r in e])} | "
          f"{fmt([r['serverCpuShare'] for r in e], '{:.2f}')} | {fmt([r['usPer'] for r in u])} | "
          f"{fmt([r['rate'] for r in u])} |")
PY
