/**
 * Types shared by the proxy core and its plugins: where a session goes ({@link Target}), what a
 * plugin may know about the request ({@link RequestInfo}), and the plugin interfaces.
 *
 * @module
 */

/** A place to forward a WebSocket session to. A tagged union, never a magic host name. */
export type Target =
  | {
    /** A TCP service; `--ssl-target` makes the proxy speak TLS to it. */
    readonly kind: "tcp";
    /** Host name or IP literal, without brackets. */
    readonly host: string;
    /** TCP port, 1 to 65535. */
    readonly port: number;
  }
  | {
    /** A Unix domain stream socket. */
    readonly kind: "unix";
    /** Path of the socket file. */
    readonly path: string;
  };

/** The verified identity of a client that presented a TLS certificate (`--verify-client`). */
export interface ClientIdentity {
  /** The certificate subject's common name (CN), or `""` when it has none. */
  readonly commonName: string;
  /** The full subject as `key=value` pairs, for custom plugins. */
  readonly subject: Readonly<Record<string, string>>;
  /** The certificate's SHA-256 fingerprint, colon-separated hex. */
  readonly fingerprint256: string;
}

/** What the proxy knows about an incoming HTTP request, given to token and auth plugins. */
export interface RequestInfo {
  /** HTTP method, upper case. */
  readonly method: string;
  /** The raw request target, e.g. `/websockify?token=abc`. */
  readonly path: string;
  /**
   * Request headers; `get()` is case-insensitive. Built when first read (a getter, since most
   * sessions never read them), so a copy made by spreading (`{ ...request }`) has none.
   */
  readonly headers: Headers;
  /**
   * The direct peer: `ip:port`, or the socket path for a Unix listener. With `--proxy-protocol`,
   * the source address from the PROXY header.
   */
  readonly peer: string;
  /**
   * The client's bare IP: the peer's, or, when the peer is a `--trusted-proxy`, the one its
   * `X-Forwarded-For` (or `Forwarded: for=`) names. The socket path for a Unix listener.
   */
  readonly clientAddress: string;
  /** Whether the client connection is TLS (wss:// or https://). */
  readonly secure: boolean;
  /**
   * The verified client certificate, carried out of band: never derived from request headers,
   * so no header (in any letter case) can forge it.
   */
  readonly clientIdentity?: ClientIdentity;
}

/**
 * Maps a token to a target. Returns `null` when the token is unknown; throws (any error) when the
 * lookup itself failed (API down, Redis down, bad key file), which is reported as 502/503 and
 * never as "not found".
 */
export interface TokenPlugin {
  /** Looks `token` up for the request `request`. */
  lookup(token: string, request: RequestInfo): Promise<Target | null>;
  /** Releases connections, watchers and timers. Called once at shutdown. */
  close?(): Promise<void>;
}

/** Builds a token plugin from its `--token-source` string (absent when the flag was not given). */
export type TokenPluginFactory = (source: string | undefined) => TokenPlugin | Promise<TokenPlugin>;

/**
 * Decides whether a request may proceed. Resolves to allow; throws `AuthError` (from
 * `src/errors.ts`) to deny with its status, headers and message.
 */
export interface AuthPlugin {
  /** Checks `request`, which is about to be proxied to `target` (absent for file requests). */
  authenticate(request: RequestInfo, target?: Target): Promise<void>;
}

/** Builds an auth plugin from its `--auth-source` string (absent when the flag was not given). */
export type AuthPluginFactory = (source: string | undefined) => AuthPlugin | Promise<AuthPlugin>;

/**
 * A connected target stream: the subset of `Deno.Conn` the pump uses, so `Deno.connect`,
 * `Deno.connectTls` and adapters (e.g. over `node:tls` for `--ssl-target-insecure`) all fit.
 * `write` may write fewer bytes than given, as `Deno.Conn.write` does.
 */
export interface TargetConnection {
  /** Reads into `buffer`; resolves to the byte count, or `null` at end of stream. */
  read(buffer: Uint8Array): Promise<number | null>;
  /** Writes some of `data`; resolves to the number of bytes written. */
  write(data: Uint8Array): Promise<number>;
  /** Half-closes: no more writes, reads continue. */
  closeWrite(): Promise<void>;
  /** Closes both directions at once; pending reads reject. */
  close(): void;
  /** Line mode (`--stdio-text`): each read is one text message, each client message a line. */
  readonly lines?: boolean;
  /** The close frame once the target has ended (`--stdio`: from the exit code). */
  endFrame?(): { code: number; reason: string };
}

/**
 * A connected byte stream with `net.Socket`'s events (`data`, `end`, `error`, `close`, `drain`,
 * `finish`) and the part of its methods the channel and the target connections use. Both a
 * `net.Socket` and an epoll-served `FdSocket` (src/ops/epoll.ts) are one.
 */
export interface ByteSocket {
  readonly destroyed: boolean;
  readonly writable: boolean;
  readonly writableEnded: boolean;
  readonly writableLength: number;
  readonly remoteAddress?: string | undefined;
  readonly remotePort?: number | undefined;
  // deno-lint-ignore no-explicit-any
  on(event: string, listener: (...args: any[]) => void): this;
  // deno-lint-ignore no-explicit-any
  once(event: string, listener: (...args: any[]) => void): this;
  // deno-lint-ignore no-explicit-any
  off(event: string, listener: (...args: any[]) => void): this;
  write(data: Uint8Array | string, callback?: (error?: Error | null) => void): boolean;
  end(callback?: () => void): this;
  destroy(error?: Error): this;
  pause(): this;
  resume(): this;
  isPaused(): boolean;
  cork(): void;
  uncork(): void;
  setNoDelay(noDelay?: boolean): this;
  setKeepAlive(enable?: boolean, initialDelay?: number): this;
}
