#!/bin/bash
# Where the CPU goes per message and per connection (issue 12, step 2): `perf record -g`
# (cpu-clock, no hardware counters in this VM) attached to the server for exactly the load
# generator's window, with JIT symbols (Deno: --v8-flags=--perf-basic-prof, Node:
# --perf-basic-prof). Samples are split into kernel / runtime native (the deno or node binary,
# libc, libstdc++) / JIT code of the runtime (node:*, ext:*, internal JS) / JIT code of ours
# (src/ or the bundle's main.mjs) / other, in µs per message using the CPU the server used in the
# window (utime + stime, as cpu_table.sh); the split is scripts/profile/perf_split.py.
#
#   scripts/profile/perf.sh [SERVERS...]     (default: deno-proxy node-proxy deno-ws-echo)
#   MODE=setup WARMUP_MS=8000 scripts/profile/perf.sh deno-proxy    (set-up loops, longer warm-up)
#
# Output: $OUT/perf-SERVER-MODE.data and .txt (perf report), and the split on stdout.
set -euo pipefail
source "$(dirname "$0")/_common.sh"
servers=("$@")
[ ${#servers[@]} -eq 0 ] && servers=(deno-proxy node-proxy deno-ws-echo)
SESSIONS=${SESSIONS:-1000}
PARALLEL=${PARALLEL:-4}
MODE=${MODE:-echo}
for s in "${servers[@]}"; do
  start_server "$s" --perf-basic-prof
  if [ "$MODE" = echo ]; then n=sessions=$SESSIONS; else n=parallel=$PARALLEL; fi
  client_keys "$s"
  data="$OUT/perf-$s-$MODE.data"
  line=$(WINDOW_CMD="exec perf record -q -e cpu-clock -F 1999 -g -p ${pid[$s]} -o $data" \
    taskset -c 1 "$OUT/loadgen" "$MODE" "${keys[@]}" "$n" warmup="${WARMUP_MS:-2000}" window=5000 size=32)
  echo "== $s $MODE: $line"
  perf report -i "$data" --no-children --sort dso,sym --stdio -g none 2>/dev/null >"$OUT/perf-$s-$MODE.txt"
  per=$(echo "$line" | grep -o '"usPer":[0-9.]*' | cut -d: -f2)
  echo "  CPU $per µs per $([ "$MODE" = echo ] && echo message || echo connection)"
  python3 "$here/scripts/profile/perf_split.py" "$OUT/perf-$s-$MODE.txt" "$per"
  stop "$s"
done
