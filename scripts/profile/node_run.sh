#!/bin/sh
# Runs the proxy (main.ts, unchanged) under Node.js as a diagnostic (issue 12, step 2).
#
#   scripts/profile/node_run.sh [websockify arguments...]
#   NODE_FLAGS="--cpu-prof --cpu-prof-dir=/tmp/p" scripts/profile/node_run.sh 127.0.0.1:0 127.0.0.1:5900
#
# How: `deno bundle` (esbuild, offline once its npm package is cached) turns main.ts and its npm
# imports into one ES module; `import.meta.main` (undefined in Node 20) is replaced by `true` so
# main() runs; scripts/profile/node_shim.ts, bundled separately and loaded first with
# `node --import`, provides the `Deno.*` calls that start-up and the plain ws:// → TCP path make
# (anything else throws "not shimmed"). Node runs the same JS as Deno: the node:net listener,
# node:http upgrade, src/websocket/framer.ts and the node:net target.
# Output goes to $WEBSOCKIFY_NODE_DIR (default /tmp/websockify-node); rebuilt on every run.
set -eu
here=$(cd "$(dirname "$0")/../.." && pwd)
out=${WEBSOCKIFY_NODE_DIR:-/tmp/websockify-node}
mkdir -p "$out"
cd "$here"
deno bundle --quiet --platform deno --format esm main.ts -o "$out/main.bundle.mjs"
sed 's/import\.meta\.main/true/g' "$out/main.bundle.mjs" >"$out/main.mjs"
deno bundle --quiet --platform deno --format esm scripts/profile/node_shim.ts -o "$out/shim.mjs"
deno bundle --quiet --platform deno --format esm scripts/profile/ref_servers.ts -o "$out/ref_servers.mjs"
cd "$out"
if [ "${1-}" = "--build-only" ]; then exit 0; fi
# shellcheck disable=SC2086
exec node ${NODE_FLAGS-} --import ./shim.mjs ./main.mjs "$@"
