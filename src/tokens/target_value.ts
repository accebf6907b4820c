/**
 * Parses the target strings that token plugins read from files, HTTP APIs, JWT claims and Redis
 * values into a {@link Target}. One parser for all plugins, so every source accepts the same
 * forms: `host:port`, `[v6]:port`, unbracketed `v6:port` (split at the last colon, as upstream),
 * and upstream's `unix_socket:/path` convention for Unix socket targets.
 *
 * @module
 */

import type { Target } from "../types.ts";

/** Upstream's magic host name: the "port" is then the path of a Unix socket. */
export const UNIX_SOCKET_HOST = "unix_socket";

/** A target string that is not `host:port`; `message` says what is wrong with it. */
export class TargetValueError extends Error {
  override name = "TargetValueError";
}

/**
 * Parses `host:port` (split at the last colon, brackets around the host removed), or
 * `unix_socket:/path`. Surrounding whitespace is ignored.
 *
 * @throws {TargetValueError} when there is no port, the port is not 1 to 65535, or the host is
 * empty.
 */
export function parseTargetValue(text: string): Target {
  const value = text.trim();
  const unixPrefix = `${UNIX_SOCKET_HOST}:`;
  if (value.startsWith(unixPrefix)) return unixTarget(value.slice(unixPrefix.length));
  const colon = value.lastIndexOf(":");
  if (colon < 0) {
    throw new TargetValueError(`'${value}' is not host:port: add the port, e.g. '${value}:5900'`);
  }
  return targetFromHostPort(value.slice(0, colon), value.slice(colon + 1));
}

/**
 * Builds a target from separate host and port values, as JSON APIs and JWT claims carry them.
 * `port` may be a number or a decimal string; host `unix_socket` makes `port` a socket path.
 *
 * @throws {TargetValueError} when either value is unusable.
 */
export function targetFromHostPort(host: unknown, port: unknown): Target {
  if (typeof host !== "string") {
    throw new TargetValueError(`The host must be a string, got ${describe(host)}`);
  }
  if (host === UNIX_SOCKET_HOST) {
    if (typeof port !== "string") {
      throw new TargetValueError(`The unix socket path must be a string, got ${describe(port)}`);
    }
    return unixTarget(port);
  }
  const bare = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
  if (bare === "" || /[\s/[\]]/.test(bare)) {
    throw new TargetValueError(`'${host}' is not a valid host name or IP address`);
  }
  return { kind: "tcp", host: bare, port: parsePort(port) };
}

/** Validates a port given as a number or a decimal string. */
function parsePort(port: unknown): number {
  const text = typeof port === "number"
    ? String(port)
    : typeof port === "string"
    ? port.trim()
    : "";
  const value = /^[0-9]{1,5}$/.test(text) ? Number(text) : NaN;
  if (!(value >= 1 && value <= 65535)) {
    throw new TargetValueError(`'${String(port)}' is not a port number from 1 to 65535`);
  }
  return value;
}

function unixTarget(path: string): Target {
  const trimmed = path.trim();
  if (trimmed === "" || trimmed.includes("\0")) {
    throw new TargetValueError(`'${path}' is not a usable unix socket path`);
  }
  return { kind: "unix", path: trimmed };
}

function describe(value: unknown): string {
  return value === undefined ? "nothing" : JSON.stringify(value) ?? typeof value;
}

/** Formats a target for log lines: `host:port`, `[v6]:port` or `unix:/path`. */
export function formatTarget(target: Target): string {
  if (target.kind === "unix") return `unix:${target.path}`;
  return target.host.includes(":")
    ? `[${target.host}]:${target.port}`
    : `${target.host}:${target.port}`;
}
