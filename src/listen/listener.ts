/**
 * Accepts connections (on the epoll loop for TCP where it can be used, else with `node:net`),
 * sniffs the first byte (0x16 or 0x80 starts a TLS handshake) and hands plain or TLS-wrapped
 * sockets on. On the loop, a plain connection whose first data is a complete simple upgrade stays
 * an `FdSocket`; everything else goes to `node:net` with that data given back. A header timer closes clients that do not
 * finish their request in time (slowloris), including ones that stall in the TLS handshake.
 *
 * @module
 */

import net from "node:net";
import { LibcAcceptor } from "./libc_accept.ts";
import tls from "node:tls";
import type { ListenConfig } from "../config.ts";
import { errorMessage, StartupError } from "../errors.ts";
import type { Log } from "../ops/log.ts";
import type { TlsFailure } from "../ops/metrics.ts";
import { duplicateDescriptor, type FdListener, FdSocket, openEpoll } from "../ops/epoll.ts";
import { parseUpgradeHead, type UpgradeHead } from "../http/upgrade_head.ts";
import type { ByteSocket, ClientIdentity } from "../types.ts";
import { type TrustedProxies, unmapIpv4 } from "./client_address.ts";
import { parseProxyHeader } from "./proxy_protocol.ts";
import { LiveList } from "../ops/live_list.ts";
import { type Deadline, Deadlines } from "../ops/deadlines.ts";

/** What the listener knows about an accepted connection. */
export interface ConnectionInfo {
  /** Sequence number of the accepted TCP connection, from 1 (names `--record` files). */
  readonly id: number;
  /**
   * `ip:port` of the peer (`[v6]:port`), or the socket path for a unix listener. With
   * `--proxy-protocol`, the source address of the PROXY header.
   */
  readonly peer: string;
  /** The bare IP of {@link peer} (the socket path for a unix listener). */
  readonly address: string;
  /** `--trusted-proxy`: peers whose forwarding headers name the client. */
  readonly trustedProxies?: TrustedProxies;
  /** Whether the connection is TLS. */
  readonly secure: boolean;
  /** Stops the header deadline (`--header-timeout`): the request has arrived. */
  headersDone(): void;
  /** The connection now goes on over `next` ({@link moveToEpoll}); the listener counts that one. */
  readonly movedTo?: (next: ByteSocket) => void;
}

/**
 * Alerts by which a client says it does not trust the proxy's certificate: Node's client sends
 * unknown_ca, Chromium certificate_unknown (both seen in tests/tls_cli_test.ts).
 */
const DISTRUST_ALERTS = new Set([
  "ERR_SSL_TLSV1_ALERT_UNKNOWN_CA",
  "ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE",
  "ERR_SSL_SSLV3_ALERT_CERTIFICATE_UNKNOWN",
  "ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED",
]);

/** The server-side TLS provider (see `src/listen/tls.ts`). */
export interface TlsProvider {
  /** Options for `new tls.TLSSocket(socket, options)`, with the current certificate. */
  socketOptions(): tls.TLSSocketOptions;
  /**
   * Checks the client certificate once the handshake is done (`--verify-client`); throws to
   * refuse the client. Required because Deno's `node:tls` does not check the client's chain.
   */
  authorize(socket: tls.TLSSocket): ClientIdentity | undefined;
}

/** Options of {@link Listener.start}. */
export interface ListenerOptions {
  readonly listen: ListenConfig;
  /** Milliseconds a client has to send its first request's headers; 0: no limit. */
  readonly headerTimeoutMs: number;
  /** TLS for clients whose first byte is a handshake; absent means no certificate. */
  readonly tls: TlsProvider | undefined;
  /** Absolute path of the certificate, for the log line when TLS is not available. */
  readonly certPath: string;
  /** Refuse plain connections. */
  readonly sslOnly: boolean;
  /**
   * Receives each sniffed (and, for TLS, handshaken) connection: a `node:net` or `node:tls`
   * socket, or, for a plain connection whose first data is a complete simple upgrade, an
   * {@link FdSocket} on the epoll loop holding that data for `read()`, with `head` parsed from it.
   */
  readonly onConnection: (
    socket: net.Socket | FdSocket,
    info: ConnectionInfo,
    head?: UpgradeHead,
  ) => void;
  /** Called whenever the number of open connections changes. */
  readonly onCountChange?: (count: number) => void;
  /** Told of each connection that ends at the TLS layer, for metrics. */
  readonly onTlsFailure?: (reason: TlsFailure) => void;
  /**
   * Told of each connection closed by the header timeout, for metrics: `no_request` when it sent
   * nothing at all (a browser's preconnect, a TCP check), `header_timeout` when its request (or
   * TLS handshake) was still incomplete (a slow or stalled client, Slowloris).
   */
  readonly onHeaderTimeout?: (reason: "header_timeout" | "no_request") => void;
  /** `--trusted-proxy`: handed on in each {@link ConnectionInfo}. */
  readonly trustedProxies?: TrustedProxies;
  /** `--proxy-protocol`: every connection starts with a PROXY v1/v2 header. @default false */
  readonly proxyProtocol?: boolean;
  /** Bind with `SO_REUSEPORT` so that `--workers` processes share the port. @default false */
  readonly reusePort?: boolean;
  readonly log: Log;
}

/**
 * Where a socket carries its {@link ConnectionInfo}: a property, not a WeakMap. The info refers
 * back to its socket (`headersDone` and `movedTo` hold the connection), and V8's young-generation
 * GC keeps a WeakMap entry whose value refers to its key, with the whole connection, until the
 * next full GC (docs/decisions.md, "Set-up: what each connection leaves to the full GC").
 */
const INFO = Symbol("websockify.connectionInfo");

interface WithInfo {
  [INFO]?: ConnectionInfo;
}

function setInfo(socket: object, info: ConnectionInfo): void {
  (socket as WithInfo)[INFO] = info;
}

/** Returns the listener's information about `socket` (plain or TLS, or moved to epoll). */
export function connectionInfo(socket: object): ConnectionInfo | undefined {
  return (socket as WithInfo)[INFO];
}

/**
 * Moves a plain (not TLS) accepted connection from `node:net` to the epoll loop
 * (src/ops/epoll.ts), once its request has been read: returns the socket to go on with and
 * `head` with any bytes `node:net` had already read after it. Without the loop (no FFI
 * permission, not Linux), for TLS, or when the descriptor cannot be had, returns `socket` as it
 * is.
 */
export function moveToEpoll(
  socket: net.Socket | FdSocket,
  head: Uint8Array,
): { socket: ByteSocket; head: Uint8Array } {
  if (socket instanceof FdSocket) {
    // Accepted on the loop: only what arrived while the upgrade was admitted is to be joined.
    const later = socket.read();
    return { socket, head: later === null ? head : Buffer.concat([head, later]) };
  }
  const info = connectionInfo(socket);
  const loop = openEpoll();
  if (!loop || !info?.movedTo || socket instanceof tls.TLSSocket || socket.destroyed) {
    return { socket, head };
  }
  socket.pause();
  const fd = duplicateDescriptor(socket);
  if (fd === undefined) return { socket, head };
  const buffered: Uint8Array[] = head.length > 0 ? [head] : [];
  for (let chunk = socket.read(); chunk !== null; chunk = socket.read()) buffered.push(chunk);
  const next = loop.adopt(fd, {
    remoteAddress: socket.remoteAddress,
    remotePort: socket.remotePort,
    remoteFamily: socket.remoteFamily,
    localAddress: socket.localAddress,
    localPort: socket.localPort,
  });
  setInfo(next, info);
  info.movedTo(next);
  // Closes node:net's descriptor; the connection stays open on the duplicate.
  socket.destroy();
  return { socket: next, head: buffered.length === 1 ? buffered[0]! : Buffer.concat(buffered) };
}

/** An open client connection, as the listener tracks it. */
interface Connection {
  /** The socket it is on now: a move to or from the epoll loop replaces it. */
  socket: ByteSocket;
  /** When it was accepted (`performance.now()`). */
  readonly at: number;
  readonly peer: string;
  /** Nothing received yet (a drain closes such connections: {@link Listener.closeSilent}). */
  silent: boolean;
  /** Until the request's headers have arrived (`--header-timeout`). */
  headerDeadline: Deadline | undefined;
}

/** A listening socket (TCP or unix) and its open connections. */
export class Listener {
  readonly #server: net.Server;
  readonly #options: ListenerOptions;
  /** Open connections (an array, not a Set: src/ops/live_list.ts says why). */
  readonly #connections = new LiveList<Connection>();
  /** Takes clients from the accept queue when the runtime's own accept starves (TCP only). */
  #rescue: LibcAcceptor | undefined;
  /** The listening socket on the epoll loop, which then accepts instead of `node:net`. */
  #onLoop: FdListener | undefined;
  #nextId = 1;
  /** `--header-timeout` of every connection (absent for 0: no limit). */
  readonly #headerDeadlines: Deadlines<Connection> | undefined;
  /** The bound address: `host:port` (`[v6]:port`) or the unix socket path. */
  address = "";

  private constructor(options: ListenerOptions) {
    this.#options = options;
    const timeoutMs = options.headerTimeoutMs;
    this.#headerDeadlines = timeoutMs > 0
      ? new Deadlines(timeoutMs, (connection) => this.#headerTimedOut(connection))
      : undefined;
    this.#server = net.createServer({ pauseOnConnect: true }, (socket) => this.#accept(socket));
    // Errors while binding are reported once, by start(), as a StartupError.
    this.#server.on("error", (error) => {
      if (this.address !== "") options.log.error(`Listener error: ${error.message}`);
    });
  }

  /** Binds and starts accepting; throws {@link StartupError} when the address cannot be used. */
  static async start(options: ListenerOptions): Promise<Listener> {
    const listener = new Listener(options);
    await listener.#listen();
    return listener;
  }

  /** Number of open client connections. */
  get connectionCount(): number {
    return this.#connections.size;
  }

  /** Connections accepted on the epoll loop (tests, decisions.md figures). */
  get acceptedOnLoop(): number {
    return this.#onLoop?.accepted ?? 0;
  }

  /** Stops accepting new connections; open ones continue. */
  stopAccepting(): void {
    // Before the listener closes: its duplicate descriptor would keep the port accepting.
    this.#rescue?.close();
    // The loop's descriptor is the port's last one: closing it closes the port.
    this.#onLoop?.close();
    if (!this.#server.listening) return;
    // close()'s callback waits for every connection to end; nothing here needs to wait for that.
    this.#server.close();
    if (this.#options.listen.kind === "unix") {
      try {
        Deno.removeSync(this.#options.listen.path);
      } catch {
        // Already gone.
      }
    }
  }

  /**
   * For a drain: closes the connections that have sent nothing since they were accepted at least
   * `graceMs` ago (a browser's preconnect, a TCP health check), and each younger one once it is
   * that old and still silent. A client whose request is on its way is served; an idle one does
   * not hold the drain until its header timer or the drain's grace ends.
   */
  closeSilent(graceMs: number): void {
    const now = performance.now();
    for (const connection of this.#connections.values()) {
      if (!connection.silent) continue;
      const left = connection.at + graceMs - now;
      if (left <= 0) {
        this.#closeSilent(connection);
        continue;
      }
      setTimeout(() => {
        if (connection.silent) this.#closeSilent(connection);
      }, left);
    }
  }

  #closeSilent(connection: Connection): void {
    connection.silent = false;
    this.#options.log.child({ peer: connection.peer }).debug(
      "Closing a connection that sent nothing: the proxy is draining",
    );
    connection.socket.destroy();
  }

  #headerTimedOut(connection: Connection): void {
    const timeoutMs = this.#options.headerTimeoutMs;
    connection.headerDeadline = undefined;
    const silent = connection.silent;
    this.#options.log.child({ peer: connection.peer }).debug(
      `Closing a client that sent ${silent ? "nothing" : "no complete request"} within ` +
        `${timeoutMs / 1000} s (--header-timeout)`,
    );
    this.#options.onHeaderTimeout?.(silent ? "no_request" : "header_timeout");
    connection.socket.destroy();
  }

  /** Destroys every open connection. */
  destroyAll(): void {
    for (const connection of this.#connections.values()) connection.socket.destroy();
  }

  async #listen(): Promise<void> {
    const listen = this.#options.listen;
    const server = this.#server;
    const failed = new Promise<never>((_, reject) => server.once("error", reject));
    try {
      if (listen.kind === "unix") {
        await removeStaleSocket(listen.path);
        // The umask makes the socket file born with its final mode: no window where others
        // could connect before a chmod.
        const previous = Deno.umask(0o777 & ~listen.mode);
        try {
          server.listen(listen.path);
        } finally {
          Deno.umask(previous);
        }
        await Promise.race([once(server, "listening"), failed]);
        this.address = listen.path;
        return;
      }
      const host = listen.host !== "" ? listen.host : listen.preferIpv6 ? "::" : "0.0.0.0";
      server.listen({
        host,
        port: listen.port,
        backlog: 511,
        ipv6Only: false,
        reusePort: this.#options.reusePort ?? false,
      });
      await Promise.race([once(server, "listening"), failed]);
      const address = server.address() as net.AddressInfo;
      const onError = (message: string) => this.#options.log.error(`Listener error: ${message}`);
      // TCP without PROXY headers: the epoll loop accepts (the header's reader is node:net's).
      const loop = this.#options.proxyProtocol ? undefined : openEpoll();
      const fd = loop === undefined ? undefined : duplicateDescriptor(server);
      if (loop !== undefined && fd !== undefined) {
        this.#onLoop = loop.listen(
          fd,
          (accepted, peer, options) => this.#accept(loop.adopt(accepted, peer, options)),
          onError,
        );
        // node:net stops accepting; the port stays open on the loop's duplicate.
        server.close();
      } else {
        // TCP only: what starves is the runtime's TCP accept (src/listen/libc_accept.ts).
        this.#rescue = LibcAcceptor.open(server, (socket) => this.#accept(socket), onError);
      }
      this.address = address.family === "IPv6"
        ? `[${address.address}]:${address.port}`
        : `${address.address}:${address.port}`;
    } catch (error) {
      throw startupError(error, listen);
    }
  }

  #accept(socket: net.Socket | FdSocket): void {
    const id = this.#nextId++;
    const unix = this.#options.listen.kind === "unix";
    const peer = unix
      ? this.#options.listen.path
      : formatPeer(socket.remoteAddress, socket.remotePort);
    const address = unix ? peer : unmapIpv4(socket.remoteAddress ?? "unknown");
    const connection: Connection = {
      socket,
      at: performance.now(),
      peer,
      silent: true,
      headerDeadline: undefined,
    };
    const slot = this.#connections.add(connection);
    this.#options.onCountChange?.(this.#connections.size);
    this.#rescue?.setActive(true);
    /** A socket closed: the connection's end unless it had moved on to another one. */
    const closed = (which: ByteSocket) => {
      if (which !== connection.socket) return;
      connection.silent = false;
      this.#connections.remove(slot);
      this.#options.onCountChange?.(this.#connections.size);
      if (this.#connections.size === 0) this.#rescue?.setActive(false);
    };
    // One type for both kinds (their `on` overloads do not unite).
    const events: ByteSocket = socket;
    events.on("close", () => closed(socket));
    const movedTo = (next: ByteSocket) => {
      connection.socket = next;
      next.once("close", () => {
        closed(next);
        headersDone();
      });
    };
    events.on("error", () => {}); // Reported by whoever owns the socket next; never fatal.
    connection.headerDeadline = this.#headerDeadlines?.add(connection);
    const headersDone = () => {
      if (connection.headerDeadline === undefined) return;
      this.#headerDeadlines?.cancel(connection.headerDeadline);
      connection.headerDeadline = undefined;
    };
    events.once("close", headersDone);
    if (!unix) socket.setNoDelay(true);
    socket.setKeepAlive(true);
    const trusted = this.#options.trustedProxies;
    const base = { id, headersDone, movedTo, ...(trusted ? { trustedProxies: trusted } : {}) };
    if (this.#options.proxyProtocol) {
      // With PROXY headers node:net accepts (see #listen): never an FdSocket here.
      this.#readProxyHeader(socket as net.Socket, connection, (source) => {
        const proxied = source === undefined
          ? { peer, address }
          : { peer: formatPeer(source.address, source.port), address: source.address };
        this.#sniff(socket, connection, { ...base, ...proxied });
      });
    } else {
      this.#sniff(socket, connection, { ...base, peer, address });
    }
    socket.resume();
  }

  /**
   * Reads the PROXY header, then calls `next` with its source (absent for LOCAL/UNKNOWN) and the
   * socket paused with the rest of the data unshifted. Anything else closes the connection.
   */
  #readProxyHeader(
    socket: net.Socket,
    connection: Connection,
    next: (source: { address: string; port: number } | undefined) => void,
  ): void {
    let received: Buffer = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      connection.silent = false;
      received = received.length === 0 ? chunk : Buffer.concat([received, chunk]);
      const header = parseProxyHeader(received);
      if (header.kind === "incomplete") return;
      socket.off("data", onData);
      socket.pause();
      if (header.kind === "invalid") {
        this.#options.log.child({ peer: connection.peer }).info(
          `Closing a connection without a valid PROXY protocol header: ${header.reason}`,
        );
        socket.destroy();
        return;
      }
      const rest = received.subarray(header.length);
      if (rest.length > 0) socket.unshift(rest);
      next(header.source);
      socket.resume();
    };
    socket.on("data", onData);
  }

  /**
   * Waits for the first byte: a TLS handshake, or plain HTTP. A connection accepted on the loop
   * stays there only when its first data is a complete simple upgrade (the common case); TLS,
   * plain HTTP and partial or unusual heads go on over `node:net` with that data given back.
   */
  #sniff(
    socket: net.Socket | FdSocket,
    connection: Connection,
    info: Omit<ConnectionInfo, "secure">,
  ): void {
    (socket as ByteSocket).once("data", (first: Buffer) => {
      connection.silent = false;
      socket.pause();
      const byte = first[0];
      const handshake = byte === 0x16 || byte === 0x80;
      let head: UpgradeHead | undefined;
      if (socket instanceof FdSocket) {
        if (!handshake && this.#options.sslOnly) return this.#refusePlain(socket, info.peer);
        head = handshake ? undefined : parseUpgradeHead(first);
        if (head === undefined) {
          const node = this.#toNodeNet(socket, first, info);
          if (node !== undefined) this.#sniffed(node, handshake, info);
          return;
        }
      }
      socket.unshift(first);
      this.#sniffed(socket, handshake, info, head);
    });
  }

  /** Goes on with a sniffed connection whose first data is unread again. */
  #sniffed(
    socket: net.Socket | FdSocket,
    handshake: boolean,
    info: Omit<ConnectionInfo, "secure">,
    head?: UpgradeHead,
  ): void {
    if (handshake && !(socket instanceof FdSocket)) {
      this.#startTls(socket, { ...info, secure: true });
    } else if (this.#options.sslOnly) {
      this.#refusePlain(socket, info.peer);
    } else {
      const plain = { ...info, secure: false };
      setInfo(socket, plain);
      this.#options.onConnection(socket, plain, head);
    }
  }

  #refusePlain(socket: ByteSocket, peer: string): void {
    this.#options.onTlsFailure?.("not_tls");
    this.#options.log.child({ peer }).info("non-SSL connection received but disallowed");
    socket.destroy();
  }

  /**
   * Hands a connection accepted on the loop to `node:net` (TLS, plain HTTP, heads node:http
   * parses), with `first` to be read again; undefined (connection closed) if it cannot be adopted.
   */
  #toNodeNet(
    socket: FdSocket,
    first: Buffer,
    info: Omit<ConnectionInfo, "secure">,
  ): net.Socket | undefined {
    const fd = socket.release();
    let node: net.Socket;
    try {
      node = new net.Socket({ fd, readable: true, writable: true });
    } catch (error) {
      this.#options.log.error(
        `Listener error: could not adopt a connection: ${errorMessage(error)}`,
      );
      openEpoll()?.close(fd);
      socket.emit("close", false); // The listener's count and header timer see it closed.
      return undefined;
    }
    node.on("error", () => {}); // As for every accepted socket: its owner reports errors.
    node.pause();
    node.unshift(first);
    info.movedTo?.(node);
    return node;
  }

  #startTls(socket: net.Socket, info: ConnectionInfo): void {
    const log = this.#options.log.child({ peer: info.peer });
    const provider = this.#options.tls;
    const failed = this.#options.onTlsFailure;
    if (!provider) {
      failed?.("no_certificate");
      log.info(`SSL connection but '${this.#options.certPath}' not found`);
      socket.destroy();
      return;
    }
    const secure = new tls.TLSSocket(socket, provider.socketOptions());
    let handshaken = false;
    secure.on("error", (error: Error & { code?: string }) => {
      // After the handshake an error is the connection's (a reset), not TLS's.
      if (!handshaken) {
        if (error.code === "ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE") {
          failed?.("client_certificate");
          log.info("Client certificate refused: the client sent none (--verify-client)");
        } else if (DISTRUST_ALERTS.has(error.code ?? "")) {
          failed?.("handshake");
          log.info(
            `TLS handshake failed: the client does not trust the certificate ` +
              `(${error.message}): install its CA on the client, or use a certificate from a CA ` +
              `the client trusts`,
          );
        } else {
          failed?.("handshake");
          log.debug(`TLS error: ${error.message}`);
        }
      } else {
        log.debug(`TLS error: ${error.message}`);
      }
      handshaken = true;
      socket.destroy();
    });
    secure.once("secure", () => {
      handshaken = true;
      try {
        provider.authorize(secure);
      } catch (error) {
        failed?.("client_certificate");
        log.info(`Client certificate refused: ${errorMessage(error)}`);
        secure.destroy();
        socket.destroy();
        return;
      }
      setInfo(secure, info);
      this.#options.onConnection(secure, info);
    });
  }
}

/** Formats a peer address as `ip:port`, bracketing IPv6 and unwrapping IPv4-mapped addresses. */
export function formatPeer(address: string | undefined, port: number | undefined): string {
  const host = (address ?? "unknown").replace(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/, "$1");
  return host.includes(":") ? `[${host}]:${port ?? 0}` : `${host}:${port ?? 0}`;
}

function once(server: net.Server, event: string): Promise<void> {
  return new Promise((resolve) => server.once(event, () => resolve()));
}

async function removeStaleSocket(path: string): Promise<void> {
  try {
    const info = await Deno.lstat(path);
    if (!info.isSocket) {
      throw new StartupError(
        `'${path}' exists and is not a socket: remove it or choose another --unix-listen path`,
      );
    }
    await Deno.remove(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return;
    throw error;
  }
}

function startupError(error: unknown, listen: ListenConfig): Error {
  if (error instanceof StartupError) return error;
  const code = (error as { code?: string }).code;
  const where = listen.kind === "unix"
    ? `'${listen.path}'`
    : `${listen.host === "" ? "*" : listen.host}:${listen.port}`;
  if (code === "EADDRINUSE") {
    return new StartupError(
      `Address ${where} is already in use: stop the other process or choose another port`,
    );
  }
  if (code === "EACCES" || error instanceof Deno.errors.PermissionDenied) {
    return new StartupError(
      `Permission denied listening on ${where}: use a port above 1023 or run with the needed rights`,
    );
  }
  // Deno's node:net reports a non-local bind address as EINVAL rather than EADDRNOTAVAIL.
  const notLocal = code === "EADDRNOTAVAIL" || (code === "EINVAL" && listen.kind === "tcp");
  if (notLocal || code === "ENOTFOUND" || code === "EAI_AGAIN") {
    return new StartupError(
      `Cannot listen on ${where}: the address is not on this machine; check the listen host`,
    );
  }
  if (code === "ENOENT" && listen.kind === "unix") {
    return new StartupError(
      `Cannot listen on ${where}: its directory does not exist; create it or choose another --unix-listen path`,
    );
  }
  const message = error instanceof Error ? error.message : String(error);
  return new StartupError(`Cannot listen on ${where}: ${message}`);
}
