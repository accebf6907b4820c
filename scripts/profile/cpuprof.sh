#!/bin/bash
# V8 CPU profiles of the proxy on Deno and on Node (issue 12, step 2): `--cpu-prof` for a load
# run (MODE=setup: PARALLEL loops of handshake + 1 echo + close; MODE=echo: SESSIONS echoing
# sessions), written when the proxy exits on SIGTERM, then split by cpuprofile_split.ts into ours /
# npm / runtime JS / V8 entries and the top functions by self time. The profile covers the whole
# process life (start-up is a few per cent of it); WARMUP_MS (default 8000) lets the JIT settle.
#
#   MODE=setup scripts/profile/cpuprof.sh [deno-proxy] [node-proxy]
set -euo pipefail
source "$(dirname "$0")/_common.sh"
servers=("$@")
[ ${#servers[@]} -eq 0 ] && servers=(deno-proxy node-proxy)
MODE=${MODE:-setup}
SESSIONS=${SESSIONS:-1000}
PARALLEL=${PARALLEL:-4}
for s in "${servers[@]}"; do
  dir="$OUT/cpuprof-$s-$MODE"
  rm -rf "$dir"
  case $s in
  deno-proxy) start_server "$s" "" "--cpu-prof --cpu-prof-dir=$dir" ;;
  node-proxy) start_server "$s" "--cpu-prof --cpu-prof-dir=$dir" ;;
  *) echo "cpuprof.sh profiles deno-proxy and node-proxy only" >&2 && exit 2 ;;
  esac
  if [ "$MODE" = echo ]; then n=sessions=$SESSIONS; else n=parallel=$PARALLEL; fi
  client_keys "$s"
  line=$(taskset -c 1 "$OUT/loadgen" "$MODE" "${keys[@]}" "$n" warmup="${WARMUP_MS:-8000}" window=5000 size=32)
  stop "$s"
  echo "== $s $MODE: $line"
  deno run -A "$here/scripts/profile/cpuprofile_split.ts" "$dir"/*.cpuprofile "${ROWS:-25}"
done
