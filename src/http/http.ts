/**
 * HTTP on accepted connections: routes WebSocket upgrades and plain requests, answers malformed
 * and unsupported requests with upstream's statuses, and maps typed errors to HTTP responses in
 * one place ({@link httpErrorOf}).
 *
 * @module
 */

import http from "node:http";
import type { Duplex } from "node:stream";
import type { Socket } from "node:net";
import tls from "node:tls";
import { WebSocketChannel } from "../websocket/channel.ts";
import { AuthError, errorMessage, HttpError, TokenLookupError } from "../errors.ts";
import { writeAuthError } from "../auth/response.ts";
import { checkUpgrade, switchingProtocolsResponse } from "../websocket/handshake.ts";
import { negotiateDeflate } from "../websocket/deflate.ts";
import { errorPage, errorResponse } from "./http_response.ts";
import { connectionInfo, moveToEpoll } from "../listen/listener.ts";
import { FdSocket } from "../ops/epoll.ts";
import { clientIdentityOf } from "../listen/tls.ts";
import type { Log } from "../ops/log.ts";
import type { ClientIdentity, RequestInfo } from "../types.ts";
import { clientAddress, logPeer } from "../listen/client_address.ts";
import { parseUpgradeHead, type UpgradeHead } from "./upgrade_head.ts";

export { parseUpgradeHead };

/** What the server does with routed requests. */
export interface HttpHandlers {
  /**
   * Decides whether an upgrade may proceed (origin, token, auth) and returns what the session
   * needs; throws a typed error to refuse (mapped by {@link httpErrorOf}).
   */
  admit(request: RequestInfo): Promise<unknown>;
  /** Called instead of `onWebSocket` when the client left while `admit` ran. */
  onAbandoned?: (admitted: unknown) => void;
  /**
   * Runs a session on an accepted WebSocket; `log` is `log` above with the request's peer
   * ({@link logPeer}), the one the handshake's lines went to.
   */
  onWebSocket(
    channel: WebSocketChannel,
    request: RequestInfo,
    admitted: unknown,
    log: Log,
  ): void;
  /** Serves a plain request; absent means 405 for GET/HEAD as upstream without `--web`. */
  onRequest?: (req: http.IncomingMessage, res: http.ServerResponse, request: RequestInfo) => void;
  /** Largest client message in bytes (close 1009 above). */
  readonly maxMessageSize: number;
  /** `--permessage-deflate`: accept the compression extension when a client offers it. */
  readonly permessageDeflate?: boolean;
  readonly log: Log;
  /**
   * Told of refusals made here, for metrics: a malformed upgrade or an unreadable request
   * (`bad_request`), a wrong method, a plain request where no `--web` serves one
   * (`not_upgrade`), a request still incomplete after `--header-timeout` (`header_timeout`), an
   * internal failure.
   */
  onRefused?: (
    reason: "bad_request" | "method" | "not_upgrade" | "header_timeout" | "internal",
  ) => void;
}

const KNOWN_METHODS = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);

/** The parts of a request {@link handleUpgrade} reads (an `IncomingMessage` or a fast-path head). */
interface UpgradeRequest {
  readonly method?: string | undefined;
  readonly url?: string | undefined;
  readonly rawHeaders: readonly string[];
  /** node:http's header object, or the fast path's map (lower-case names). */
  readonly headers:
    | Readonly<Record<string, string | string[] | undefined>>
    | ReadonlyMap<string, string>;
  readonly socket: Socket | FdSocket;
}

const handlersOf = new WeakMap<http.Server, HttpHandlers>();
const closed = new WeakSet<http.Server>();

/** How long a kept-alive connection may wait for its next request (node adds 1 s). */
const KEEP_ALIVE_TIMEOUT_MS = 5000;

/**
 * Creates the `node:http` server that accepted sockets are handed to ({@link serveConnection}).
 * `headerTimeoutMs` (`--header-timeout`; 0 = none) bounds every request's headers after the
 * first on a kept-alive connection; the listener's own timer covers the first. Stop it with
 * {@link closeHttpServer}.
 */
export function createHttpServer(handlers: HttpHandlers, headerTimeoutMs: number): http.Server {
  const server = http.createServer({
    maxHeaderSize: 16 * 1024,
    headersTimeout: headerTimeoutMs,
    // The sweep that enforces headersTimeout: one timer for the server, not one per connection.
    connectionsCheckingInterval: Math.max(250, Math.min(1000, headerTimeoutMs / 4)),
  });
  handlersOf.set(server, handlers);
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  // The server never listens (our listener hands it sockets), and node:http closes a connection
  // after its first response when its server is not listening: without this, every `--web`
  // connection would serve one request (a browser loading noVNC opens dozens). "listening" also
  // starts the sweep above (a system timer: it does not keep the process alive).
  Object.defineProperty(server, "listening", {
    configurable: true,
    get: () => !closed.has(server),
  });
  server.emit("listening");

  server.on("upgrade", (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    upgrade(handlers, req, socket as Socket, head);
  });

  server.on("request", (req: http.IncomingMessage, res: http.ServerResponse) => {
    connectionInfo(req.socket)?.headersDone();
    const request = requestInfo(req);
    const method = req.method ?? "";
    if (handlers.onRequest && (method === "GET" || method === "HEAD")) {
      handlers.onRequest(req, res, request);
      return;
    }
    const status = KNOWN_METHODS.has(method) ? 405 : 501;
    const reason = status === 405 ? "Method Not Allowed" : `Unsupported method ('${method}')`;
    // Without --web, a plain request on this port is a WebSocket client whose upgrade headers
    // were lost on the way (a front proxy without `proxy_set_header Upgrade`) or a stray probe.
    if (!handlers.onRequest) handlers.onRefused?.("not_upgrade");
    handlers.log.child({ peer: logPeer(request) }).info(
      `code ${status}, message ${reason}: "${method} ${req.url}"`,
    );
    sendError(res, status, reason, method === "HEAD");
  });

  server.on("clientError", (error: Error & { code?: string }, socket: Duplex) => {
    if (error.code === "ERR_HTTP_REQUEST_TIMEOUT") {
      // node's headersTimeout (ours) or requestTimeout (its 300 s for a whole request) ran out.
      // As the listener does for a first request that is late: closed without an answer.
      handlers.log.child({ peer: connectionInfo(socket)?.peer ?? "unknown" }).debug(
        `Closing a client whose request did not arrive in time (headers within ` +
          `${headerTimeoutMs / 1000} s, --header-timeout; the whole request within ` +
          `${server.requestTimeout / 1000} s)`,
      );
      handlers.onRefused?.("header_timeout");
      return void socket.destroy();
    }
    const writable = socket.writable && !(socket as Socket).destroyed;
    if (!writable || error.code === "ECONNRESET") return void socket.destroy();
    const tooLarge = error.code === "HPE_HEADER_OVERFLOW";
    handlers.onRefused?.("bad_request");
    socket.end(
      tooLarge
        ? errorResponse(431, "Request Header Fields Too Large")
        : errorResponse(400, "Bad request syntax"),
    );
  });
  return server;
}

/**
 * Stops `server` taking more requests: idle kept-alive connections close now, busy ones after
 * their response; upgraded connections (sessions) are not its to close.
 */
export function closeHttpServer(server: http.Server): void {
  if (closed.has(server)) return;
  closed.add(server);
  server.close();
}

/**
 * Serves an accepted, paused connection. A plain connection whose buffered first data is a
 * complete, simple WebSocket upgrade (see {@link parseUpgradeHead}) is answered without node:http,
 * which costs a parser, an `IncomingMessage` and its listeners per connection; everything else
 * (plain HTTP, partial heads, anything unusual) goes to node:http with its bytes untouched.
 */
export function serveConnection(
  server: http.Server,
  socket: Socket | FdSocket,
  parsed?: UpgradeHead,
): void {
  const handlers = handlersOf.get(server);
  if (socket instanceof FdSocket) {
    // The listener hands over only connections whose first data is a complete simple upgrade,
    // parsed (`parsed`) and kept for read().
    const first = socket.read();
    if (first === null || parsed === undefined || handlers === undefined) {
      handlers?.log.error(
        "Upgrade failed: a connection on the epoll loop came without its parsed request " +
          "(a bug in the proxy: please report it with this log)",
      );
      socket.destroy();
      return;
    }
    upgrade(handlers, { ...parsed, socket }, socket, first.subarray(parsed.length));
    // Reading on (kept until the session reads it) shows a client that leaves meanwhile.
    socket.resume();
    return;
  }
  if (handlers !== undefined && !(socket instanceof tls.TLSSocket)) {
    const first: Buffer | null = socket.read();
    if (first !== null) {
      const fast = parseUpgradeHead(first);
      if (fast !== undefined) {
        upgrade(handlers, { ...fast, socket }, socket, first.subarray(fast.length));
        socket.resume();
        return;
      }
      socket.unshift(first);
    }
  }
  server.emit("connection", socket);
  // The sniffer paused the socket; node:http only attaches listeners.
  socket.resume();
}

function upgrade(
  handlers: HttpHandlers,
  req: UpgradeRequest,
  socket: Socket | FdSocket,
  head: Buffer,
): void {
  handleUpgrade(handlers, req, socket, head).catch((error) => {
    handlers.log.error(`Upgrade failed: ${errorMessage(error)}`);
    handlers.onRefused?.("internal");
    socket.destroy();
  });
}

async function handleUpgrade(
  handlers: HttpHandlers,
  req: UpgradeRequest,
  socket: Socket | FdSocket,
  head: Buffer,
): Promise<void> {
  connectionInfo(socket)?.headersDone();
  const request = requestInfo(req);
  const log = handlers.log.child({ peer: logPeer(request) });
  if ((header(req, "upgrade") ?? "").toLowerCase() !== "websocket") {
    handlers.onRefused?.("bad_request");
    return reject(socket, log, new HttpError(400, "Missing or incorrect upgrade header"));
  }
  if (req.method !== "GET") {
    handlers.onRefused?.("method");
    return reject(socket, log, new HttpError(405, "Method Not Allowed"));
  }
  const check = checkUpgrade({
    version: header(req, "sec-websocket-version"),
    key: header(req, "sec-websocket-key"),
    protocol: header(req, "sec-websocket-protocol"),
  });
  if (!check.ok) {
    handlers.onRefused?.("bad_request");
    return reject(socket, log, new HttpError(400, check.reason));
  }

  log.infoBatched(
    `${request.secure ? "SSL/TLS (wss://)" : "Plain non-SSL (ws://)"} WebSocket connection`,
  );
  if (request.path !== "/") log.infoBatched(`Path: '${request.path}'`);

  let admitted: unknown;
  try {
    admitted = await handlers.admit(request);
  } catch (error) {
    if (error instanceof AuthError) return writeAuthError(socket, error, logPeer(request));
    return reject(socket, log, error);
  }
  if (socket.destroyed || !socket.writable) {
    handlers.onAbandoned?.(admitted);
    return void socket.destroy();
  }
  // The handshake is answered here rather than by `ws`: the session runs the streaming framer
  // on the raw socket (see src/websocket/channel.ts and docs/decisions.md).
  socket.setTimeout(0);
  socket.setNoDelay(true);
  // A plain connection goes on outside node:net from here (src/ops/epoll.ts).
  const moved = moveToEpoll(socket, head);
  const deflate = handlers.permessageDeflate
    ? negotiateDeflate(header(req, "sec-websocket-extensions"))
    : undefined;
  if (deflate) log.infoBatched("Compression: permessage-deflate");
  moved.socket.write(
    switchingProtocolsResponse(
      header(req, "sec-websocket-key") ?? "",
      check.protocol,
      deflate?.response,
    ),
  );
  const channel = new WebSocketChannel(moved.socket, moved.head, {
    maxMessageSize: handlers.maxMessageSize,
    deflate,
  });
  handlers.onWebSocket(channel, request, admitted, log);
}

function reject(socket: Socket | FdSocket, log: Log, error: unknown): void {
  const { status, reason, headers, logText } = httpErrorOf(error);
  log.info(logText);
  if (!socket.destroyed) socket.end(errorResponse(status, reason, headers));
}

/** Maps a refusal to its HTTP status, reason phrase, headers and log text. */
export function httpErrorOf(error: unknown): {
  status: number;
  reason: string;
  headers: Readonly<Record<string, string>>;
  logText: string;
} {
  if (error instanceof HttpError) {
    return {
      status: error.status,
      reason: error.message,
      headers: error.headers,
      logText: `${error.status} ${error.message}`,
    };
  }
  if (error instanceof TokenLookupError) {
    return {
      status: error.status,
      reason: error.status === 503 ? "Service Unavailable" : "Bad Gateway",
      headers: {},
      logText: `Token lookup failed: ${error.message}`,
    };
  }
  return {
    status: 500,
    reason: "Internal Server Error",
    headers: {},
    logText: `Internal error: ${errorMessage(error)}`,
  };
}

/** Builds the plugin-facing view of a request. */
export function requestInfo(req: UpgradeRequest | http.IncomingMessage): RequestInfo {
  return new PluginRequest(req);
}

/**
 * The plugin-facing view of a request. Its `headers` are built when first read (a getter on the
 * prototype): a session with a fixed target and no plugin never reads them, and a `Headers` is a
 * validated append per header on every connection's set-up. A class rather than an object literal
 * with a getter, which V8 builds through a runtime call (docs/decisions.md, "Set-up: the accept
 * key, the request's headers and one session log").
 */
class PluginRequest implements RequestInfo {
  readonly method: string;
  readonly path: string;
  readonly peer: string;
  readonly clientAddress: string;
  readonly secure: boolean;
  // Declared, not a field: the property exists only for a verified client certificate.
  declare readonly clientIdentity?: ClientIdentity;
  readonly #raw: readonly string[];
  #headers: Headers | undefined;

  constructor(req: UpgradeRequest | http.IncomingMessage) {
    this.#raw = req.rawHeaders;
    const info = connectionInfo(req.socket);
    this.method = req.method ?? "GET";
    this.path = req.url ?? "/";
    this.peer = info?.peer ?? "unknown";
    const address = info?.address ?? "unknown";
    const trusted = info?.trustedProxies;
    // Only a trusted proxy's X-Forwarded-For or Forwarded is read.
    this.clientAddress = trusted === undefined
      ? address
      : clientAddress(address, this.headers, trusted);
    this.secure = info?.secure ?? false;
    // Out of band, from the verified TLS session: no header can forge it.
    if (req.socket instanceof tls.TLSSocket) {
      const identity = clientIdentityOf(req.socket);
      if (identity !== undefined) {
        (this as { clientIdentity?: ClientIdentity }).clientIdentity = identity;
      }
    }
  }

  get headers(): Headers {
    return this.#headers ??= headersOf(this.#raw);
  }
}

function headersOf(raw: readonly string[]): Headers {
  const headers = new Headers();
  for (let index = 0; index + 1 < raw.length; index += 2) {
    try {
      headers.append(raw[index] as string, raw[index + 1] as string);
    } catch {
      // A header value Headers rejects (e.g. bare CR) is dropped, not fatal.
    }
  }
  return headers;
}

function header(req: UpgradeRequest, name: string): string | undefined {
  const headers = req.headers;
  const value = headers instanceof Map
    ? headers.get(name)
    : (headers as Readonly<Record<string, string | string[] | undefined>>)[name];
  return Array.isArray(value) ? value.join(", ") : value;
}

function sendError(res: http.ServerResponse, status: number, reason: string, head: boolean): void {
  const body = errorPage(status, reason);
  res.writeHead(status, reason, {
    "Content-Type": "text/html;charset=utf-8",
    "Content-Length": Buffer.byteLength(body),
    "Connection": "close",
    "Server": "WebSockify Deno",
  });
  res.end(head ? "" : body);
}
