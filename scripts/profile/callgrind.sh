#!/bin/bash
# Instructions per echoed message (issue 12, step 2): the machine has no hardware counters and is
# shared, so this counts instructions with valgrind's callgrind, which is noise-free. Each server
# runs under `valgrind --tool=callgrind` (slow: ~50×, so SESSIONS defaults to 100 and the servers
# are saturated, unlike cpu_table.sh's moderate load); counters are zeroed when the load
# generator's window opens and dumped when it closes (`callgrind_control -z/-d` from WINDOW_CMD),
# and the dump's total is divided by the echoes counted in the window.
#
#   scripts/profile/callgrind.sh [SERVERS...]   (default: net-relay-deno deno-relay-4k
#                                                min-proxy-net min-proxy-deno deno-proxy)
set -euo pipefail
export WRAP="valgrind --tool=callgrind --trace-children=yes --smc-check=all-non-file"
export START_TRIES=${START_TRIES:-3000}
source "$(dirname "$0")/_common.sh"
servers=("$@")
[ ${#servers[@]} -eq 0 ] && servers=(net-relay-deno deno-relay-4k min-proxy-net min-proxy-deno deno-proxy)
SESSIONS=${SESSIONS:-100}
for s in "${servers[@]}"; do
  WRAP="$WRAP --callgrind-out-file=$OUT/callgrind-$s.%p" start_server "$s"
  p=${pid[$s]}
  rm -f "$OUT/callgrind-$s.$p".*
  cmd="callgrind_control -z $p >/dev/null; trap 'callgrind_control -d $p >/dev/null; exit 0' INT;"
  cmd+=" while :; do sleep 0.2; done"
  line=$(WINDOW_CMD="$cmd" taskset -c 1 "$OUT/loadgen" echo "$(route_of "$s")" "${port[$s]}" \
    "$SESSIONS" "${WARMUP_MS:-10000}" "${WINDOW_MS:-10000}" "$p")
  count=$(echo "$line" | grep -o '"count":[0-9]*' | cut -d: -f2)
  dump=$(ls -t "$OUT/callgrind-$s.$p".* | head -1)
  ir=$(grep -m1 '^summary:\|^totals:' "$dump" | awk '{print $2}')
  echo "== $s: $line"
  echo "$s: $ir instructions for $count echoes: $((ir / (count > 0 ? count : 1))) per message"
  stop "$s"
done
