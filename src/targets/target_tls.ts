/**
 * TLS towards targets (`--ssl-target`). Verified connections use `Deno.startTls` (rustls):
 * the default root store plus `--ssl-target-ca`, host name check and SNI, like upstream's
 * `ssl.create_default_context()`. `Deno.startTls` has no per-connection switch to turn
 * verification off, so `--ssl-target-insecure` uses `node:tls` with `rejectUnauthorized: false`
 * behind a {@link TargetConnection} adapter.
 *
 * Note (rustls): a self-signed certificate made by `openssl req -x509` is CA:TRUE and is refused
 * as a leaf (`CaUsedAsEndEntity`) even when given as `--ssl-target-ca`; a self-signed leaf with
 * `basicConstraints=critical,CA:FALSE` works.
 *
 * @module
 */

import { X509Certificate } from "node:crypto";
import net from "node:net";
import tls from "node:tls";
import type { TargetTlsConfig } from "../config.ts";
import { ConfigError, errorMessage, TargetError } from "../errors.ts";
import { getLog } from "../ops/log.ts";
import type { TargetConnection } from "../types.ts";

const log = getLog("tls");

/** Configurations whose `--ssl-target-insecure` warning was already logged. */
const warned = new WeakSet<TargetTlsConfig>();

/** Options of {@link dialTlsTarget}. */
export interface DialTlsOptions {
  /** `--ssl-target`, `--ssl-target-ca`, `--ssl-target-insecure`. */
  readonly config: TargetTlsConfig;
  /** Milliseconds for TCP connect plus TLS handshake; 0 waits forever. */
  readonly timeoutMs: number;
  /** Aborts the dial (the client went away). */
  readonly signal?: AbortSignal;
}

/** Explanations appended to rustls' error names, saying what to do. */
const HINTS: ReadonlyArray<readonly [RegExp, string]> = [
  [/UnknownIssuer/, "not signed by a trusted CA: pass --ssl-target-ca FILE for a private CA"],
  [
    /CaUsedAsEndEntity/,
    "the target presents a CA certificate (CA:TRUE) as its own: reissue it with " +
    "basicConstraints CA:FALSE, or sign it with a CA given in --ssl-target-ca",
  ],
  [
    /NotValidForName|not valid for name/,
    "connect by a name listed in the target certificate's subjectAltName",
  ],
  [/Expired/, "the target's certificate has expired: renew it"],
];

/**
 * Checks the `--ssl-target-*` options at start-up: the CA file must be readable and hold PEM
 * certificates (throws {@link ConfigError}), and `--ssl-target-insecure` is logged loudly once.
 */
export async function checkTargetTls(config: TargetTlsConfig): Promise<void> {
  if (!config.enabled) return;
  if (config.insecure) warnInsecure(config);
  else if (config.ca !== undefined) await readCa(config.ca, (message) => new ConfigError(message));
}

/**
 * Connects to `host:port` and completes the TLS handshake. Throws {@link TargetError} with a
 * clear message when the connection, the handshake or the certificate check fails, or when
 * `timeoutMs` passes first; nothing is left open on failure.
 */
export async function dialTlsTarget(
  host: string,
  port: number,
  options: DialTlsOptions,
): Promise<TargetConnection> {
  const { config } = options;
  const where = `'${net.isIPv6(host) ? `[${host}]` : host}:${port}'`;
  options.signal?.throwIfAborted();
  let connecting: Promise<TargetConnection>;
  if (config.insecure) {
    warnInsecure(config);
    connecting = dialInsecure(host, port, where);
  } else {
    const caCerts = config.ca === undefined
      ? undefined
      : [await readCa(config.ca, (message) => new TargetError(message))];
    connecting = dialVerified(host, port, caCerts, where);
  }
  return await withDeadline(connecting, where, options);
}

async function dialVerified(
  host: string,
  port: number,
  caCerts: string[] | undefined,
  where: string,
): Promise<TargetConnection> {
  let tcp: Deno.TcpConn;
  try {
    tcp = await Deno.connect({ hostname: host, port });
  } catch (error) {
    throw new TargetError(`Cannot connect to TLS target ${where}: ${errorMessage(error)}`, {
      cause: error,
    });
  }
  // Interactive protocols (VNC) need small writes to leave at once; Deno.TlsConn cannot set it.
  tcp.setNoDelay(true);
  tcp.setKeepAlive(true);
  let conn: Deno.TlsConn;
  try {
    conn = await Deno.startTls(tcp, { hostname: host, ...(caCerts ? { caCerts } : {}) });
  } catch (error) {
    tcp.close();
    throw new TargetError(`Cannot start TLS with target ${where}: ${errorMessage(error)}`, {
      cause: error,
    });
  }
  try {
    // The handshake is lazy; force it so a bad certificate fails the dial, not the first read.
    await conn.handshake();
  } catch (error) {
    conn.close();
    const message = errorMessage(error);
    const hint = HINTS.find(([pattern]) => pattern.test(message))?.[1];
    throw new TargetError(
      `TLS handshake with target ${where} failed: ${message}${hint ? `: ${hint}` : ""}`,
      { cause: error },
    );
  }
  return conn;
}

function dialInsecure(host: string, port: number, where: string): Promise<TargetConnection> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host,
      port,
      rejectUnauthorized: false,
      // SNI carries host names only, never IP literals (RFC 6066).
      ...(net.isIP(host) === 0 ? { servername: host } : {}),
    });
    const onError = (error: Error) => {
      socket.destroy();
      reject(
        new TargetError(`TLS connection to target ${where} failed: ${error.message}`, {
          cause: error,
        }),
      );
    };
    socket.once("error", onError);
    socket.once("secureConnect", () => {
      socket.off("error", onError);
      if (!socket.authorized) {
        log.debug(`Unverified TLS target ${where}: ${String(socket.authorizationError)}`);
      }
      socket.setNoDelay(true);
      socket.setKeepAlive(true);
      resolve(new NodeSocketConnection(socket));
    });
  });
}

async function withDeadline(
  connecting: Promise<TargetConnection>,
  where: string,
  options: DialTlsOptions,
): Promise<TargetConnection> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let onAbort: (() => void) | undefined;
  const stop = new Promise<never>((_, reject) => {
    if (options.timeoutMs > 0) {
      timer = setTimeout(
        () =>
          reject(
            new TargetError(
              `TLS connection to target ${where} timed out after ${options.timeoutMs / 1000} s`,
            ),
          ),
        options.timeoutMs,
      );
    }
    onAbort = () => reject(new TargetError(`TLS connection to target ${where} was cancelled`));
    options.signal?.addEventListener("abort", onAbort, { once: true });
  });
  try {
    return await Promise.race([connecting, stop]);
  } catch (error) {
    // A connection completing after the deadline must not leak.
    connecting.then((connection) => connection.close(), () => {});
    throw error;
  } finally {
    clearTimeout(timer);
    if (onAbort) options.signal?.removeEventListener("abort", onAbort);
  }
}

async function readCa(path: string, fail: (message: string) => Error): Promise<string> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    throw fail(`Cannot read --ssl-target-ca '${path}': ${errorMessage(error)}: check the path`);
  }
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g);
  if (blocks === null) {
    throw fail(`No PEM certificate in --ssl-target-ca '${path}': give the CA certificate in PEM`);
  }
  for (const block of blocks) {
    try {
      new X509Certificate(block);
    } catch (error) {
      throw fail(`Bad certificate in --ssl-target-ca '${path}': ${errorMessage(error)}`);
    }
  }
  return text;
}

function warnInsecure(config: TargetTlsConfig): void {
  if (warned.has(config)) return;
  warned.add(config);
  const text = "WARNING: --ssl-target-insecure: target TLS certificates are NOT verified; " +
    "anyone on the network path can impersonate the target and read the sessions. Use " +
    "--ssl-target-ca FILE instead wherever possible";
  log.warn(text);
}

/**
 * A `node:tls` socket as a {@link TargetConnection}. The socket is paused while a chunk waits
 * to be read, so at most one chunk is buffered; `write` resolves when the data was handed on.
 */
class NodeSocketConnection implements TargetConnection {
  readonly #socket: tls.TLSSocket;
  #pending: Uint8Array | undefined;
  #ended = false;
  #failure: Error | undefined;
  #wake: (() => void) | undefined;

  constructor(socket: tls.TLSSocket) {
    this.#socket = socket;
    socket.on("data", (chunk: Uint8Array) => {
      this.#pending = chunk;
      socket.pause();
      this.#notify();
    });
    socket.on("end", () => {
      this.#ended = true;
      this.#notify();
    });
    socket.on("error", (error) => {
      this.#failure ??= error;
      this.#notify();
    });
    socket.on("close", () => {
      this.#ended = true;
      this.#notify();
    });
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  async read(buffer: Uint8Array): Promise<number | null> {
    while (this.#pending === undefined && !this.#ended && this.#failure === undefined) {
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
    const pending = this.#pending;
    if (pending !== undefined) {
      const count = Math.min(buffer.length, pending.length);
      buffer.set(pending.subarray(0, count));
      this.#pending = count < pending.length ? pending.subarray(count) : undefined;
      if (this.#pending === undefined && !this.#ended) this.#socket.resume();
      return count;
    }
    if (this.#failure !== undefined) throw this.#failure;
    return null;
  }

  write(data: Uint8Array): Promise<number> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    return new Promise((resolve, reject) => {
      this.#socket.write(data, (error) => error ? reject(error) : resolve(data.length));
    });
  }

  closeWrite(): Promise<void> {
    return new Promise((resolve) => this.#socket.end(resolve));
  }

  close(): void {
    this.#failure ??= new Deno.errors.BadResource("The target connection was closed");
    this.#socket.destroy();
    this.#notify();
  }
}
