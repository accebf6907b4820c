/**
 * The one place an {@link AuthError} becomes bytes on the wire: a complete HTTP/1.1 response
 * (status line, `Content-Type`, `Content-Length`, `Connection: close`, the error's extra headers,
 * the HTML error page), written either to a node `ServerResponse` (file requests) or to the raw
 * socket of node's `'upgrade'` event (WebSocket requests), then the connection is closed.
 *
 * Upstream answers upgrade denials with no body and no `Content-Length`, so clients cannot tell a
 * complete answer from a cut connection; this always sends both.
 *
 * @module
 */

import * as http from "node:http";
import type { Duplex } from "node:stream";
import { AuthError, errorMessage } from "../errors.ts";
import { errorPage, errorResponse, printable, safeHeaders } from "../http/http_response.ts";
import { getLog } from "../ops/log.ts";

/** How long a denied upgrade socket may linger after the answer before it is destroyed (ms). */
const LINGER_MS = 2000;

/**
 * Answers `error` on `target` and closes the connection; logs the denial (with `logDetail`, which
 * is never sent) against `peer`. The response is the same HTML error page as every other error
 * (`errorResponse()` in `src/http/http_response.ts`) with `Connection: close` and `Content-Length`.
 * Reason phrase and header values are stripped of control characters and header names are
 * checked, so a plugin cannot split the response. Safe to call on a destroyed socket.
 */
export function writeAuthError(
  target: http.ServerResponse | Duplex | AnswerSocket,
  error: AuthError,
  peer: string,
): void {
  const reason = printable(error.message) || http.STATUS_CODES[error.status] || "Error";
  const detail = error.logDetail === undefined ? "" : `: ${error.logDetail}`;
  getLog("auth").child({ peer }).info(
    `Authentication failed: ${error.status} ${reason}${detail}`,
  );
  const headers = safeHeaders(error.headers);
  if (target instanceof http.ServerResponse) {
    writeToResponse(target, error.status, reason, headers);
  } else {
    writeToSocket(target, errorResponse(error.status, reason, headers));
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
): void {
  if (response.headersSent || response.destroyed) {
    response.destroy();
    return;
  }
  const body = new TextEncoder().encode(errorPage(status, reason));
  response.shouldKeepAlive = false;
  response.writeHead(status, reason, {
    "Server": "WebSockify Deno",
    "Connection": "close",
    "Content-Type": "text/html;charset=utf-8",
    "Content-Length": String(body.byteLength),
    ...headers,
  });
  response.end(body);
}

/** What an answer on a raw connection needs: a `node:net` socket or an epoll-loop `FdSocket`. */
interface AnswerSocket {
  readonly destroyed: boolean;
  readonly writable: boolean;
  destroy(): unknown;
  resume(): unknown;
  once(event: "close", listener: () => void): unknown;
  on(event: "error", listener: () => void): unknown;
  end(data: string): unknown;
}

function writeToSocket(socket: Duplex | AnswerSocket, response: string): void {
  if (socket.destroyed || !socket.writable) {
    socket.destroy();
    return;
  }
  // Half-close after the answer and keep reading, so unread request bytes do not turn our FIN
  // into a RST that could discard the answer; destroy if the client never closes its side.
  const timer = setTimeout(() => socket.destroy(), LINGER_MS);
  socket.once("close", () => clearTimeout(timer));
  socket.on("error", () => socket.destroy());
  socket.resume();
  socket.end(response);
}
