/**
 * Typed errors of the proxy. Each kind is mapped to an exit code, an HTTP status or a WebSocket
 * close code in one place (`main.ts` for start-up, `src/http/http.ts` for requests).
 *
 * @module
 */

/** A bad command line or configuration: printed as one line, exit code 2. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/** A runtime failure at start-up (port in use, permission denied): one line, exit code 1. */
export class StartupError extends Error {
  override name = "StartupError";
}

/** Options of {@link AuthError}. */
export interface AuthErrorOptions {
  /** HTTP status to answer with. @default 403 */
  readonly status?: number;
  /** Extra response headers, e.g. `WWW-Authenticate`. */
  readonly headers?: Readonly<Record<string, string>>;
  /** Detail for the log only; never sent to the client. */
  readonly logDetail?: string;
}

/** A request denied by an auth plugin. `message` is the reason phrase sent to the client. */
export class AuthError extends Error {
  override name = "AuthError";
  /** HTTP status of the response. */
  readonly status: number;
  /** Extra response headers. */
  readonly headers: Readonly<Record<string, string>>;
  /** Detail for the log only. */
  readonly logDetail: string | undefined;

  /** Creates a denial with reason phrase `message`. */
  constructor(message: string, options: AuthErrorOptions = {}) {
    super(message);
    this.status = options.status ?? 403;
    this.headers = options.headers ?? {};
    this.logDetail = options.logDetail;
  }
}

/** A token or target lookup that failed (as opposed to "not found"): answered with 502/503. */
export class TokenLookupError extends Error {
  override name = "TokenLookupError";
  /** HTTP status of the response. @default 502 */
  readonly status: number;

  /** Creates a lookup failure; `status` is 502 (bad upstream answer) or 503 (unreachable). */
  constructor(message: string, options: { status?: number; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.status = options.status ?? 502;
  }
}

/** Dialling the target failed: the client gets close 1011 "Failed to connect to downstream server". */
export class TargetError extends Error {
  override name = "TargetError";
}

/** Returns the message of any thrown value, for log lines. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** A request answered with an HTTP error: `message` is the reason phrase. */
export class HttpError extends Error {
  override name = "HttpError";
  /** HTTP status of the response. */
  readonly status: number;
  /** Extra response headers. */
  readonly headers: Readonly<Record<string, string>>;

  /** Creates an error answered with `status` and reason phrase `message`. */
  constructor(status: number, message: string, headers: Readonly<Record<string, string>> = {}) {
    super(message);
    this.status = status;
    this.headers = headers;
  }
}
