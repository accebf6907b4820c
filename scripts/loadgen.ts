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
export async function buildLoadgen(): Promise<string> {
  return await buildCached({
    source: await Deno.readTextFile(SOURCE_URL),
    name: "loadgen",
    flags: ["-O2"],
    what: "the bench's load generator (scripts/loadgen.c)",
  });
}

const FLOOR_SOURCE_URL = new URL("./floor_proxy.c", import.meta.url);

/** Returns the path of a built scripts/floor_proxy.c (the bench's "floor" column), as above. */
export async function buildFloorProxy(): Promise<string> {
  return await buildCached({
    source: await Deno.readTextFile(FLOOR_SOURCE_URL),
    name: "floor_proxy",
    flags: ["-O2"],
    what: "the bench's C floor proxy (scripts/floor_proxy.c)",
  });
}
