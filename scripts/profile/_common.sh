# Shared by the scripts/profile/*.sh drivers (sourced, not run): builds the C load generator and
# target (scripts/loadgen.c, the bench's; CLI in its header comment) and the Node bundle into $OUT,
# and starts the servers under test by name, pinned to CPU 0, with the C target on CPU 1. Every
# process started here is killed by PID when the driver exits.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${OUT:-/tmp/websockify-profile}
# The start task's flags (src/ops/v8_flags.ts, V8_FLAGS): the proxy is profiled as users run it.
V8_FLAGS=--optimize-for-size
ALL_SERVERS=(deno-proxy node-proxy deno-ws-echo deno-relay net-relay-deno net-relay-node)
# Also startable by name: deno-relay-4k (the Deno.Conn relay with 4 KiB read buffers), and
# min-proxy-net / min-proxy-deno / min-proxy-deno-nowait (scripts/profile/min_ws_proxy.ts: a
# minimal ws proxy, a floor).
mkdir -p "$OUT"
cc -O2 -Wall -o "$OUT/loadgen" "$here/scripts/loadgen.c"
WEBSOCKIFY_NODE_DIR="$OUT/node" "$here/scripts/profile/node_run.sh" --build-only
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
declare -A port pid

# start NAME CPU COMMAND...: runs COMMAND (after $WRAP, e.g. valgrind), waits for a port on its
# stdout or stderr (START_TRIES × 0.1 s, default 10 s).
start() {
  local name=$1 cpu=$2
  shift 2
  # A fresh file even if an earlier process of that name still writes to the old one.
  rm -f "$OUT/$name.out" "$OUT/$name.err"
  # shellcheck disable=SC2086
  taskset -c "$cpu" ${WRAP-} "$@" >"$OUT/$name.out" 2>"$OUT/$name.err" &
  pid[$name]=$!
  pids+=($!)
  for _ in $(seq "${START_TRIES:-100}"); do
    local p
    p=$(grep -aho '"port":[0-9]*\|Listen on 127.0.0.1:[0-9]*' "$OUT/$name.out" "$OUT/$name.err" |
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

# start_server NAME [RUNTIME FLAGS] [DENO RUN FLAGS]: one of ALL_SERVERS, proxying or relaying to
# the target. For Deno servers the flags go to DENO_V8_FLAGS (with the start task's for the
# proxy) and the third argument to `deno run`; for Node ones the flags go to node.
start_server() {
  local s=$1 flags=${2-} tp=${port[target]} run=${3-}
  local v8=$V8_FLAGS${flags:+,$flags}
  # shellcheck disable=SC2086
  case $s in
  deno-proxy) start "$s" 0 env DENO_V8_FLAGS="$v8" deno run $run -A --unstable-net "$here/main.ts" 127.0.0.1:0 "127.0.0.1:$tp" ;;
  # shellcheck disable=SC2086
  node-proxy) start "$s" 0 node $flags --import "$OUT/node/shim.mjs" "$OUT/node/main.mjs" 127.0.0.1:0 "127.0.0.1:$tp" ;;
  deno-ws-echo) start "$s" 0 env ${flags:+DENO_V8_FLAGS=$flags} deno run $run -A "$here/scripts/profile/ref_servers.ts" ws-echo ;;
  deno-relay) start "$s" 0 env ${flags:+DENO_V8_FLAGS=$flags} deno run $run -A "$here/scripts/profile/ref_servers.ts" deno-relay "$tp" ;;
  deno-relay-4k) start "$s" 0 env ${flags:+DENO_V8_FLAGS=$flags} deno run $run -A "$here/scripts/profile/ref_servers.ts" deno-relay "$tp" 4096 ;;
  net-relay-deno) start "$s" 0 env ${flags:+DENO_V8_FLAGS=$flags} deno run $run -A "$here/scripts/profile/ref_servers.ts" net-relay "$tp" ;;
  min-proxy-net) start "$s" 0 env ${flags:+DENO_V8_FLAGS=$flags} deno run $run -A "$here/scripts/profile/min_ws_proxy.ts" net "$tp" ;;
  min-proxy-deno) start "$s" 0 env ${flags:+DENO_V8_FLAGS=$flags} deno run $run -A "$here/scripts/profile/min_ws_proxy.ts" deno "$tp" ;;
  min-proxy-deno-nowait) start "$s" 0 env ${flags:+DENO_V8_FLAGS=$flags} deno run $run -A "$here/scripts/profile/min_ws_proxy.ts" deno-nowait "$tp" ;;
  # shellcheck disable=SC2086
  net-relay-node) start "$s" 0 node $flags "$OUT/node/ref_servers.mjs" net-relay "$tp" ;;
  *) echo "unknown server $s" >&2 && exit 2 ;;
  esac
}

# stop NAME: kills the server by PID and waits for it to exit.
stop() {
  kill "${pid[$1]}" 2>/dev/null || true
  wait "${pid[$1]}" 2>/dev/null || true
}

# client_keys NAME: sets keys=(...), the loadgen keys that reach server NAME: its port, server=PID
# (CPU and memory of its process tree), ws=0 (raw TCP) for the relays, and mode=0 for deno-ws-echo
# (an echo server with no target behind it: no mode message for the target).
client_keys() {
  keys=("port=${port[$1]}" "server=${pid[$1]}")
  case $1 in
  *relay*) keys+=(ws=0) ;;
  deno-ws-echo) keys+=(ws=1 mode=0) ;;
  *) keys+=(ws=1) ;;
  esac
}

start target 1 "$OUT/loadgen" target port=0
