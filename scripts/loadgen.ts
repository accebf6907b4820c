/**
 * Builds `scripts/loadgen.c` (the bench's C load generator and TCP target; its CLI is in the
 * file's header) with the system C compiler, `-O2`, and caches the binary by source hash, as wrap
 * mode does with rebind.c (both through src/wrap/cc.ts).
 *
 * ```ts
 * import { buildLoadgen } from "./loadgen.ts";
 * const loadgen = await buildLoadgen(); // absolute path of the binary
 * ```
 *
 * @module
 */

import { buildCached } from "../src/wrap/cc.ts";

const SOURCE_URL = new URL("./loadgen.c", import.meta.url);

/** Returns the path of a built loadgen, compiling it when the cache has none for this source. */
export function buildLoadgen(): Promise<string> {
  return buildScript(SOURCE_URL, "loadgen", "the bench's load generator (scripts/loadgen.c)");
}

/** Returns the path of a built scripts/floor_proxy.c (the bench's "floor" column), as above. */
export function buildFloorProxy(): Promise<string> {
  const source = new URL("./floor_proxy.c", import.meta.url);
  return buildScript(source, "floor_proxy", "the bench's C floor proxy (scripts/floor_proxy.c)");
}

async function buildScript(source: URL, name: string, what: string): Promise<string> {
  return await buildCached({ source: await Deno.readTextFile(source), name, flags: ["-O2"], what });
}
