/**
 * A `Deno` global for running the proxy's bundle under Node.js (a diagnostic, issue 12; see
 * `scripts/profile/node_run.sh`). It covers what the plain ws:// → TCP path and start-up call:
 * arguments, cwd, exit, stdout/stderr writes, signal listeners, pid, hostname, env, errors,
 * `unrefTimer`, `inspect`, `stat`/`lstat`/`readTextFile` (errors mapped to `Deno.errors`), and `globalThis.addEventListener` for the unload/error events. Anything else (TLS files, Unix sockets, wrap mode, daemon, stdio
 * programs, token plugins) throws "not shimmed" when it is reached, so a diagnostic run never
 * silently does something different from Deno.
 *
 * Under Deno this module does nothing (the real `Deno` is there).
 *
 * @module
 */

import fs from "node:fs";
import os from "node:os";
import process from "node:process";
import util from "node:util";

class NotFound extends Error {}
class PermissionDenied extends Error {}
class AlreadyExists extends Error {}
class ConnectionRefused extends Error {}
class Interrupted extends Error {}
class BadResource extends Error {}

function notShimmed(name: string): () => never {
  return () => {
    throw new Error(`Deno.${name} is not shimmed for the Node.js diagnostic run`);
  };
}

/** Node's fs errors as the Deno.errors classes the proxy tests with `instanceof`. */
function denoError(error: unknown): unknown {
  const code = (error as { code?: string }).code;
  const message = (error as Error).message;
  if (code === "ENOENT") return new NotFound(message);
  if (code === "EACCES" || code === "EPERM") return new PermissionDenied(message);
  if (code === "EEXIST") return new AlreadyExists(message);
  return error;
}

function fileInfo(stats: fs.Stats): Record<string, unknown> {
  return {
    isFile: stats.isFile(),
    isDirectory: stats.isDirectory(),
    isSymlink: stats.isSymbolicLink(),
    size: stats.size,
    mtime: stats.mtime,
    mode: stats.mode,
  };
}

async function mapped<T>(run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    throw denoError(error);
  }
}

function writer(fd: number): { writeSync(data: Uint8Array): number; rid: number } {
  return { rid: fd, writeSync: (data: Uint8Array) => fs.writeSync(fd, data) };
}

const shim: Record<string, unknown> = {
  args: process.argv.slice(2),
  pid: process.pid,
  build: { os: process.platform, arch: process.arch },
  version: { deno: "node-shim", v8: process.versions.v8, typescript: "" },
  noColor: true,
  mainModule: "file://" + (process.argv[1] ?? ""),
  cwd: () => process.cwd(),
  exit: (code?: number) => process.exit(code),
  execPath: () => process.execPath,
  hostname: () => os.hostname(),
  inspect: (value: unknown, options?: util.InspectOptions) => util.inspect(value, options),
  umask: (mask?: number) => (mask === undefined ? process.umask() : process.umask(mask)),
  unrefTimer: (timer: unknown) => {
    (timer as { unref?: () => void }).unref?.();
  },
  addSignalListener: (signal: string, handler: () => void) => process.on(signal, handler),
  removeSignalListener: (signal: string, handler: () => void) => process.off(signal, handler),
  readTextFile: (path: string) => mapped(() => fs.promises.readFile(path, "utf8")),
  stat: (path: string) => mapped(async () => fileInfo(await fs.promises.stat(path))),
  lstat: (path: string) => mapped(async () => fileInfo(await fs.promises.lstat(path))),
  stdout: writer(1),
  stderr: writer(2),
  env: {
    get: (name: string) => process.env[name],
    set: (name: string, value: string) => {
      process.env[name] = value;
    },
    has: (name: string) => name in process.env,
    delete: (name: string) => {
      delete process.env[name];
    },
    toObject: () => ({ ...process.env }),
  },
  errors: {
    NotFound,
    PermissionDenied,
    AlreadyExists,
    ConnectionRefused,
    Interrupted,
    BadResource,
  },
  permissions: { querySync: () => ({ state: "granted" }), query: () => ({ state: "granted" }) },
};
for (
  const name of [
    "connect",
    "connectTls",
    "startTls",
    "listen",
    "listenDatagram",
    "open",
    "openSync",
    "statSync",
    "readDir",
    "watchFs",
    "Command",
    "kill",
    "makeTempDir",
    "makeTempFileSync",
    "remove",
    "removeSync",
    "writeTextFile",
  ]
) {
  shim[name] = notShimmed(name);
}

/** Deno's window events that src/ops/log.ts listens to, mapped to process events. */
const EVENTS: Record<string, string> = {
  unload: "exit",
  error: "uncaughtExceptionMonitor",
  unhandledrejection: "unhandledRejection",
};

if (!("Deno" in globalThis)) {
  Reflect.set(globalThis, "Deno", shim);
  Reflect.set(globalThis, "addEventListener", (type: string, listener: () => void) => {
    const event = EVENTS[type];
    if (event === undefined) throw new Error(`addEventListener("${type}") is not shimmed`);
    process.on(event, listener);
  });
}
