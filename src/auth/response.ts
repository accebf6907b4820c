/**
 * The one place an {@link AuthError} becomes bytes on the wire: a complete HTTP/1.1 response
 * (status line, `Content-Type`, `Content-Length`, `Connection: close`, the error's extra headers,
 * a short text body), written either to a node `ServerResponse` (file requests) or to the raw
 * socket of node's `'upgrade'` event (WebSocket requests), then the connection is closed.
 *
 * Upstream answers upgrade denials with no body and no `Content-Length`, so clients cannot tell a
 * complete answer from a cut connection; this always sends both.
 *
 * @module
 */

import * as http from "node:http";
import type { Duplex } from "node:stream";
import { getLogger } from "@logtape/logtape";
import { AuthError, errorMessage } from "../errors.ts";

/** How long a denied upgrade socket may linger after the answer before it is destroyed (ms). */
const LINGER_MS = 2000;

/**
 * Answers `error` on `target` and closes the connection; logs the denial (with `logDetail`, which
 * is never sent) against `peer`. Reason phrase and header values are stripped of control
 * characters, so a plugin cannot split the response. Safe to call on a destroyed socket.
 */
export function writeAuthError(
  target: http.ServerResponse | Duplex,
  error: AuthError,
  peer = "-",
): void {
  const reason = printable(error.message) || http.STATUS_CODES[error.status] || "Error";
  const detail = error.logDetail === undefined ? "" : `: ${error.logDetail}`;
  getLogger(["websockify", "auth"]).warn`${peer}: ${error.status} ${reason}${detail}`;
  const body = new TextEncoder().encode(`${error.status} ${reason}\n`);
  const headers: Record<string, string> = {
    "Content-Type": "text/plain; charset=utf-8",
    "Content-Length": String(body.byteLength),
    Connection: "close",
  };
  for (const [name, value] of Object.entries(error.headers)) {
    if (/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) headers[name] = printable(value);
  }
  if (target instanceof http.ServerResponse) {
    writeToResponse(target, error.status, reason, headers, body);
  } else {
    writeToSocket(target, error.status, reason, headers, body);
  }
}

/**
 * Maps anything an auth plugin threw to an `AuthError`: an `AuthError` as is, anything else to
 * 500 (a broken plugin denies; it never allows), with the original message for the log only.
 */
export function toAuthError(error: unknown): AuthError {
  if (error instanceof AuthError) return error;
  return new AuthError("Internal Server Error", {
    status: 500,
    logDetail: `auth plugin failed: ${errorMessage(error)}`,
  });
}

function writeToResponse(
  response: http.ServerResponse,
  status: number,
  reason: string,
  headers: Record<string, string>,
  body: Uint8Array,
): void {
  if (response.headersSent || response.destroyed) {
    response.destroy();
    return;
  }
  response.shouldKeepAlive = false;
  response.writeHead(status, reason, headers);
  response.end(body);
}

function writeToSocket(
  socket: Duplex,
  status: number,
  reason: string,
  headers: Record<string, string>,
  body: Uint8Array,
): void {
  if (socket.destroyed || !socket.writable) {
    socket.destroy();
    return;
  }
  const head = [`HTTP/1.1 ${status} ${reason}`];
  for (const [name, value] of Object.entries(headers)) head.push(`${name}: ${value}`);
  const bytes = new TextEncoder().encode(`${head.join("\r\n")}\r\n\r\n`);
  // Half-close after the answer and keep reading, so unread request bytes do not turn our FIN
  // into a RST that could discard the answer; destroy if the client never closes its side.
  const timer = setTimeout(() => socket.destroy(), LINGER_MS);
  socket.once("close", () => clearTimeout(timer));
  socket.on("error", () => socket.destroy());
  socket.resume();
  socket.write(bytes);
  socket.end(body);
}

/** Drops control characters (CR, LF, NUL, DEL, ...) so a value fits on one header line. */
function printable(text: string): string {
  // deno-lint-ignore no-control-regex -- stripping control characters is the point
  return text.replace(/[\x00-\x1f\x7f]/g, "").trim();
}
