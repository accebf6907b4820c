/**
 * Dials targets: TCP with `node:net` (`src/targets/socket_target.ts`), Unix sockets with `Deno.connect`,
 * and (through `src/targets/target_tls.ts`) TLS, all with a connect timeout so a black-holed host cannot
 * hang a session. Host names are resolved here: IPv4 addresses first, as upstream, but unlike
 * upstream every address is tried in turn, so `localhost` reaches a service on `::1` only too.
 *
 * @module
 */

import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import type { TargetTlsConfig } from "../config.ts";
import { errorMessage, TargetError } from "../errors.ts";
import { DialTimeout } from "./libc_dial.ts";
import { SocketConnection } from "./socket_target.ts";
import { dialTlsTarget } from "./target_tls.ts";
import type { Target, TargetConnection } from "../types.ts";

/** Options of {@link dialTarget}. */
export interface DialOptions {
  /** Milliseconds allowed for connecting; 0 means no limit. */
  readonly timeoutMs: number;
  /** TLS towards the target (`--ssl-target`). */
  readonly tls: TargetTlsConfig;
}

/** Describes a target for log lines: `host:port`, `[v6]:port` or the socket path. */
export function describeTarget(target: Target): string {
  if (target.kind === "unix") return target.path;
  return target.host.includes(":")
    ? `[${target.host}]:${target.port}`
    : `${target.host}:${target.port}`;
}

/** Connects to `target`; throws {@link TargetError} with the reason on failure or timeout. */
export async function dialTarget(target: Target, options: DialOptions): Promise<TargetConnection> {
  const { timeoutMs } = options;
  const connecting = connect(target, options);
  // The usual case, on every session's set-up, is bounded by the libc dial itself: no timer and
  // no race of promises for it.
  if (timeoutMs <= 0 || dialBoundsTimeout(target, options)) {
    return await wrapErrors(connecting, timeoutMs);
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(timedOut(timeoutMs)),
      timeoutMs,
    );
  });
  try {
    return await Promise.race([wrapErrors(connecting, timeoutMs), timeout]);
  } catch (error) {
    // A connect that completes after the timeout must not leak its socket.
    connecting.then((connection) => connection.close(), () => {});
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Whether {@link connect} ends at the timeout by itself: a plain TCP dial to an IP literal through
 * libc, whose `DialTimeout` {@link wrapErrors} reports as the timeout.
 */
function dialBoundsTimeout(target: Target, options: DialOptions): boolean {
  return target.kind === "tcp" && !options.tls.enabled && isIpLiteral(target.host) &&
    SocketConnection.boundsTimeout(target.host);
}

async function connect(target: Target, options: DialOptions): Promise<TargetConnection> {
  if (target.kind === "unix") {
    return await Deno.connect({ transport: "unix", path: target.path });
  }
  if (options.tls.enabled) {
    return await dialTlsTarget(target.host, target.port, {
      config: options.tls,
      timeoutMs: options.timeoutMs,
    });
  }
  // node:net rather than Deno.connect: fair with thousands of sessions (src/targets/socket_target.ts).
  if (isIpLiteral(target.host)) {
    return await SocketConnection.connect(target.host, target.port, options.timeoutMs);
  }
  const addresses = preferIpv4(await lookup(target.host, { all: true }));
  let lastError: unknown = new Error(`'${target.host}' has no addresses`);
  for (const { address } of addresses) {
    try {
      return await SocketConnection.connect(address, target.port, options.timeoutMs);
    } catch (error) {
      lastError = error;
    }
  }
  throw lastError;
}

/** The last host {@link isIpLiteral} found to be an IP address. */
let lastIpLiteral = "";

/**
 * Whether `host` is an IP address. A proxy dials the same target again and again, so the last
 * host that was one is remembered: `net.isIP` runs two regular expressions, and a dial asks twice.
 */
export function isIpLiteral(host: string): boolean {
  if (host === lastIpLiteral) return true;
  if (isIP(host) === 0) return false;
  lastIpLiteral = host;
  return true;
}

/** Orders resolved addresses IPv4 first (upstream's order), keeping the resolver's order within. */
export function preferIpv4<T extends { family: number }>(addresses: readonly T[]): T[] {
  return [
    ...addresses.filter((entry) => entry.family === 4),
    ...addresses.filter((entry) => entry.family !== 4),
  ];
}

async function wrapErrors(
  connecting: Promise<TargetConnection>,
  timeoutMs = 0,
): Promise<TargetConnection> {
  try {
    return await connecting;
  } catch (error) {
    if (error instanceof TargetError) throw error;
    if (error instanceof DialTimeout) throw timedOut(timeoutMs);
    throw new TargetError(errorMessage(error), { cause: error });
  }
}

function timedOut(timeoutMs: number): TargetError {
  return new TargetError(`timed out after ${timeoutMs / 1000} s`);
}
