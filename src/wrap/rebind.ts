/**
 * Builds `rebind.so`, the `bind()` interposer of wrap mode, from `rebind.c` with the system C
 * compiler at first use, and caches it by source hash (`~/.cache/websockify/rebind-<hash>.so`).
 * Compiling here instead of shipping a binary keeps the program portable across architectures
 * and libc versions; the cost is a one-off ~0.3 s compile and a C compiler on the machine
 * (src/wrap/cc.ts).
 *
 * @module
 */

import { buildCached } from "./cc.ts";
import REBIND_SOURCE from "./rebind.c" with { type: "text" };

/** Options of {@link buildRebindLibrary}. */
export interface RebindOptions {
  /** Directory for the built library. @default "$XDG_CACHE_HOME/websockify" or "~/.cache/websockify" */
  readonly cacheDir?: string;
  /** Compilers to try, in order. @default [$CC, "cc", "gcc"] */
  readonly compilers?: readonly string[];
}

/** The C source of the interposer (for tests and diagnostics). */
export const REBIND_C: string = REBIND_SOURCE;

/**
 * Returns the absolute path of a built `rebind.so`, compiling it when the cache has none for
 * this source. Throws a `StartupError` when no compiler is found or compiling fails.
 */
export function buildRebindLibrary(options: RebindOptions = {}): Promise<string> {
  return buildCached({
    source: REBIND_C,
    name: "rebind",
    suffix: ".so",
    flags: ["-shared", "-fPIC", "-O2"],
    libraries: ["-ldl"],
    what: "rebind.so for wrap mode",
    ...(options.cacheDir !== undefined ? { cacheDir: options.cacheDir } : {}),
    ...(options.compilers !== undefined ? { compilers: options.compilers } : {}),
  });
}
