/**
 * `BaseTokenAPI` and `JSONTokenApi`: ask an HTTP service for the target of a token.
 *
 * The source is a URL with `%s` where the token goes (`%%` is a literal `%`). Fixes over
 * upstream, which substitutes the raw token and makes a blocking request with no timeout:
 * - the token is URL-escaped (`encodeURIComponent`), so `?`, `/`, `#` and `&` cannot change
 *   the request;
 * - each request has a timeout ({@link TokenApiOptions.timeoutMs});
 * - only 404 and 410 mean "not found"; any other non-2xx status (401 from a misconfigured API
 *   included), a timeout, a refused connection or a body that is not a target is a lookup
 *   failure (502/503), never "not found" (upstream turns every non-2xx into "not found");
 * - found targets are cached briefly ({@link TokenApiOptions.cacheMs}) and concurrent lookups of
 *   one token share a request, so a reconnect storm does not hammer the API.
 *
 * `BaseTokenAPI` expects the body `host:port` (also `[v6]:port`, `unix_socket:/path`);
 * `JSONTokenApi` expects a JSON object with `host` and `port`.
 *
 * @module
 */

import { ConfigError, errorMessage, TokenLookupError } from "../errors.ts";
import type { Target, TokenPlugin } from "../types.ts";
import { parseTargetValue, targetFromHostPort } from "./target_value.ts";

/** Options of the token API plugins. */
export interface TokenApiOptions {
  /** Time allowed for the whole request, body included. @default 5000 */
  readonly timeoutMs?: number;
  /** How long a found target is reused without asking again; 0 disables. @default 2000 */
  readonly cacheMs?: number;
  /** Most tokens kept in the cache; the oldest is dropped first. @default 1000 */
  readonly cacheSize?: number;
}

type BodyParser = (body: string) => Target;

/** Substitutes the URL-escaped token for `%s` (and `%` for `%%`) in a source URL. */
export function tokenUrl(template: string, token: string): string {
  return template.replace(
    /%([%s])/g,
    (_, kind: string) => kind === "%" ? "%" : encodeURIComponent(token),
  );
}

class TokenApiPlugin implements TokenPlugin {
  readonly #template: string;
  readonly #parseBody: BodyParser;
  readonly #timeoutMs: number;
  readonly #cacheMs: number;
  readonly #cacheSize: number;
  readonly #cache = new Map<string, { target: Target; expires: number }>();
  readonly #pending = new Map<string, Promise<Target | null>>();

  constructor(template: string, parseBody: BodyParser, options: TokenApiOptions) {
    this.#template = template;
    this.#parseBody = parseBody;
    this.#timeoutMs = options.timeoutMs ?? 5000;
    this.#cacheMs = options.cacheMs ?? 2000;
    this.#cacheSize = options.cacheSize ?? 1000;
  }

  lookup(token: string): Promise<Target | null> {
    const cached = this.#cache.get(token);
    if (cached !== undefined && cached.expires > Date.now()) return Promise.resolve(cached.target);
    this.#cache.delete(token);
    let pending = this.#pending.get(token);
    if (pending === undefined) {
      pending = this.#fetch(token).finally(() => this.#pending.delete(token));
      this.#pending.set(token, pending);
    }
    return pending;
  }

  async #fetch(token: string): Promise<Target | null> {
    const url = tokenUrl(this.#template, token);
    const shown = redact(url);
    let response: Response;
    let body: string;
    try {
      response = await fetch(url, {
        signal: AbortSignal.timeout(this.#timeoutMs),
        redirect: "follow",
        headers: { accept: "application/json, text/plain;q=0.9, */*;q=0.1" },
      });
      body = await response.text();
    } catch (error) {
      const timedOut = error instanceof DOMException && error.name === "TimeoutError";
      throw new TokenLookupError(
        timedOut
          ? `Token API '${shown}' did not answer within ${this.#timeoutMs} ms`
          : `Token API '${shown}' is unreachable: ${errorMessage(error)}`,
        { status: 503, cause: error },
      );
    }
    if (response.status === 404 || response.status === 410) return null;
    if (!response.ok) {
      throw new TokenLookupError(
        `Token API '${shown}' answered ${response.status} ${response.statusText}`,
        { status: 502 },
      );
    }
    let target: Target;
    try {
      target = this.#parseBody(body);
    } catch (error) {
      throw new TokenLookupError(
        `Token API '${shown}' answered with no usable target: ${errorMessage(error)}`,
        { status: 502, cause: error },
      );
    }
    this.#remember(token, target);
    return target;
  }

  #remember(token: string, target: Target): void {
    if (this.#cacheMs <= 0 || this.#cacheSize <= 0) return;
    if (this.#cache.size >= this.#cacheSize) {
      const oldest = this.#cache.keys().next();
      if (!oldest.done) this.#cache.delete(oldest.value);
    }
    this.#cache.set(token, { target, expires: Date.now() + this.#cacheMs });
  }
}

/** Hides the password of a URL with user info, for log lines and error messages. */
function redact(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== "") parsed.password = "***";
    return parsed.href;
  } catch {
    return url;
  }
}

function validateTemplate(name: string, source: string | undefined): string {
  const example = "e.g. 'http://127.0.0.1:8000/targets/%s'";
  if (source === undefined || source === "") {
    throw new ConfigError(
      `${name} needs --token-source: give a URL with '%s' for the token, ${example}`,
    );
  }
  if (!/%s/.test(source.replaceAll("%%", ""))) {
    throw new ConfigError(
      `${name} source '${source}' has no '%s' where the token goes: add it, ${example}`,
    );
  }
  let url: URL;
  try {
    url = new URL(tokenUrl(source, "token"));
  } catch {
    throw new ConfigError(
      `${name} source '${source}' is not a URL: give an absolute URL, ${example}`,
    );
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new ConfigError(`${name} source '${source}' must be an http:// or https:// URL`);
  }
  return source;
}

/** Parses a `BaseTokenAPI` body: `host:port`. */
export function parsePlainBody(body: string): Target {
  return parseTargetValue(body);
}

/** Parses a `JSONTokenApi` body: `{"host": "...", "port": 5900}` (the port may be a string). */
export function parseJsonBody(body: string): Target {
  const value: unknown = JSON.parse(body);
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new TypeError("The JSON body is not an object with 'host' and 'port'");
  }
  const record = value as Record<string, unknown>;
  return targetFromHostPort(record["host"], record["port"]);
}

/** `BaseTokenAPI`: GET the source URL, the body is `host:port`. */
export function baseTokenApi(
  source: string | undefined,
  options: TokenApiOptions = {},
): TokenPlugin {
  return new TokenApiPlugin(validateTemplate("BaseTokenAPI", source), parsePlainBody, options);
}

/** `JSONTokenApi`: GET the source URL, the body is JSON with `host` and `port`. */
export function jsonTokenApi(
  source: string | undefined,
  options: TokenApiOptions = {},
): TokenPlugin {
  return new TokenApiPlugin(validateTemplate("JSONTokenApi", source), parseJsonBody, options);
}
