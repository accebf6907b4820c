#!/bin/bash
# Syscalls per message and per connection (issue 12, step 2): `strace -c -f` attached to the
# server for exactly the load generator's window (WINDOW_CMD, see scripts/loadgen.c), divided by
# the echoes (SESSIONS sessions of 32 B) or by the connections (PARALLEL loops of handshake + 1
# echo + close) counted in that window. strace slows the server down; the counts per message stay.
#
#   scripts/profile/syscalls.sh [SERVERS...]     (default: all, see _common.sh)
#
# Output: $OUT/strace-SERVER-MODE.txt (raw) and a table of calls per message / per connection.
set -euo pipefail
source "$(dirname "$0")/_common.sh"
servers=("$@")
[ ${#servers[@]} -eq 0 ] && servers=("${ALL_SERVERS[@]}")
SESSIONS=${SESSIONS:-1000}
PARALLEL=${PARALLEL:-4}
for s in "${servers[@]}"; do
  start_server "$s"
  client_keys "$s"
  for mode in echo setup; do
    if [ $mode = echo ]; then n=sessions=$SESSIONS; else n=parallel=$PARALLEL; fi
    f="$OUT/strace-$s-$mode.txt"
    line=$(WINDOW_CMD="exec strace -c -f -o $f -p ${pid[$s]}" taskset -c 1 "$OUT/loadgen" \
      $mode "${keys[@]}" "$n" warmup=2000 window="${WINDOW_MS:-4000}" size=32)
    # Echoes (echo: "messages") or connections (setup: "completed") counted in the window.
    count=$(echo "$line" | grep -o '"\(messages\|completed\)":[0-9]*' | cut -d: -f2)
    echo "== $s $mode: $count in the window"
    # strace -c rows: % time, seconds, usecs/call, calls, [errors], syscall (and the total row).
    awk -v n="$count" '$1 ~ /^[0-9.]+$/ && NF >= 5 && n > 0 {
        printf "  %-16s %8.2f calls %8.2f errors\n", $NF, $4 / n, (NF == 6 ? $5 / n : 0)
      }' "$f"
  done
  stop "$s"
done
