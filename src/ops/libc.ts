/**
 * libc's socket functions through FFI, shared by the libc dialer (src/targets/libc_dial.ts) and the
 * accept sweep (src/listen/libc_accept.ts): the symbols, the Linux constants both use, errno
 * names, and one loader that decides once per process whether libc can be used.
 *
 * @module
 */

import { constants } from "node:os";

export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const EINTR = 4;

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  accept4: { parameters: ["i32", "pointer", "pointer", "i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

/** The libc functions the dialer and the accept sweep call. */
export type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** errno number → its name (`ECONNREFUSED`), for node-style error messages. */
const ERRNO_NAMES = new Map<number, string>(
  Object.entries(constants.errno).map(([name, value]) => [value as number, name]),
);

/** The name of an errno value (`ECONNREFUSED`), or `errno N` for one node does not name. */
export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `errno ${errno}`;
}

let loaded: Libc | null | undefined;

/**
 * libc's socket functions, or `undefined` when they cannot be used here: not Linux, no FFI
 * permission, or no `libc.so.6` (musl). Decided once per process.
 */
export function openLibc(): Libc | undefined {
  if (loaded !== undefined) return loaded ?? undefined;
  loaded = null;
  if (Deno.build.os !== "linux") return undefined;
  if (Deno.permissions.querySync?.({ name: "ffi" }).state !== "granted") return undefined;
  try {
    loaded = Deno.dlopen("libc.so.6", SYMBOLS).symbols;
  } catch {
    return undefined;
  }
  return loaded;
}

/** errno after a failed libc call. */
export function lastErrno(libc: Libc): number {
  return new Deno.UnsafePointerView(libc.__errno_location()!).getInt32();
}
