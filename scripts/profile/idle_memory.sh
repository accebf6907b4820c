#!/bin/bash
# What an idle session costs (issue 12, step 2), in two passes per server:
#  1. RSS (/proc/PID/status VmRSS) of a fresh server before and while SESSIONS (default 1,000)
#     sessions sit idle after one 32-byte echo each;
#  2. the same with the inspector on: V8 heap snapshots before and during (heap_diff.ts), summed
#     by constructor/closure name and divided by SESSIONS. (Snapshots allocate, so RSS is taken
#     in pass 1 only.)
# In both passes a first round of the same sessions is opened and closed before "before", so code
# compiled and buffers pooled on first use are not counted.
#
#   scripts/profile/idle_memory.sh [SERVERS...]     (default: deno-proxy node-proxy deno-ws-echo)
set -euo pipefail
source "$(dirname "$0")/_common.sh"
servers=("$@")
[ ${#servers[@]} -eq 0 ] && servers=(deno-proxy node-proxy deno-ws-echo)
SESSIONS=${SESSIONS:-1000}
inspect=$((20000 + RANDOM % 20000))
heap() { deno run -A "$here/scripts/profile/heap_diff.ts" "$@"; }
rss_of() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# Each session echoes one 32-byte message (echo=1, also for deno-ws-echo's mode=0), then idles.
idle() { "$OUT/loadgen" idle "${keys[@]}" sessions="$SESSIONS" size=32 echo=1 hold="$1"; }
for s in "${servers[@]}"; do
  start_server "$s"
  client_keys "$s"
  idle 500 >/dev/null
  sleep 2
  rss0=$(rss_of "${pid[$s]}")
  line=$(WINDOW_CMD="sleep 2; awk '/VmRSS/ {print \$2}' /proc/${pid[$s]}/status >$OUT/rss-$s" idle 0)
  rss1=$(cat "$OUT/rss-$s")
  stop "$s"
  echo "== $s: $line"
  echo "RSS: $rss0 → $rss1 KiB: $(((rss1 - rss0) * 100 / SESSIONS))/100 KiB per session"
  inspect=$((inspect + 1))
  case $s in
  *node*) start_server "$s" "--inspect=127.0.0.1:$inspect" ;;
  *) start_server "$s" "" "--inspect=127.0.0.1:$inspect" ;;
  esac
  sleep 1
  client_keys "$s"
  idle 500 >/dev/null
  sleep 2
  heap snapshot "$inspect" "$OUT/heap-$s-before.json" >/dev/null
  cmd="deno run -A $here/scripts/profile/heap_diff.ts snapshot $inspect $OUT/heap-$s-after.json"
  WINDOW_CMD="$cmd >/dev/null" idle 0 >/dev/null
  heap diff "$OUT/heap-$s-before.json" "$OUT/heap-$s-after.json" "$SESSIONS" "${ROWS:-25}"
  stop "$s"
done
