#!/bin/bash
# CPU per message and per connection of the proxy on Deno and on Node, and of reference servers
# (issue 12, step 2). Servers under test on CPU 0; the C target and the C load generator
# (scripts/loadgen.c) on CPU 1. Each figure is the server's utime+stime from /proc/PID/stat over
# the load generator's window divided by the echoes or connections in it (its usPer).
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
source "$(dirname "$0")/_common.sh"
rounds=${1:-3}
shift || true
servers=("$@")
[ ${#servers[@]} -eq 0 ] && servers=("${ALL_SERVERS[@]}")
SESSIONS=${SESSIONS:-1000}
WARMUP_MS=${WARMUP_MS:-2000}
WINDOW_MS=${WINDOW_MS:-5000}
SETUP_MS=${SETUP_MS:-3000}
PARALLEL=${PARALLEL:-4}
for s in "${servers[@]}"; do start_server "$s"; done

: >"$OUT/results.jsonl"
for r in $(seq "$rounds"); do
  for s in "${servers[@]}"; do
    client_keys "$s"
    for mode in echo setup; do
      if [ $mode = echo ]; then n=sessions=$SESSIONS w=$WINDOW_MS; else n=parallel=$PARALLEL w=$SETUP_MS; fi
      line=$(taskset -c 1 "$OUT/loadgen" $mode "${keys[@]}" "$n" warmup="$WARMUP_MS" window="$w" size=32)
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
    e = [r for r in rows if r["server"] == s and r["test"] == "echo"]
    u = [r for r in rows if r["server"] == s and r["test"] == "setup"]
    print(f"| {s} | {fmt([r['usPer'] for r in e], '{:.1f}')} | {fmt([r['rate'] for r in e])} | "
          f"{fmt([r['serverCpu'] for r in e], '{:.2f}')} | {fmt([r['usPer'] for r in u])} | "
          f"{fmt([r['rate'] for r in u])} |")
PY
