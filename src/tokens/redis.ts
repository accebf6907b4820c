/**
 * `TokenRedis`: `GET <namespace:>token` from Redis; the value is `host:port` or JSON.
 *
 * Source: `host[:port[:db[:password[:namespace]]]]`, fields split on `:`; a whole field may be
 * wrapped in double quotes to hold colons (`redis::::"first-ns:second-ns"`, or an IPv6 host
 * `"::1":6379`); empty fields take the defaults (port 6379, db 0, no password, no namespace); a
 * namespace gets `:` appended. As an extension a bracketed host works too: `[::1]:6379`.
 *
 * Values (trimmed): `host:port` (also `[v6]:port`, `v6:port`, `unix_socket:/path`), JSON
 * `{"host": "h:p"}` (upstream's form) or `{"host": "h", "port": p}`.
 *
 * Fixes over upstream: one connection is kept and reused (upstream connects per lookup); Redis
 * being down or slow is a lookup failure (503), reported quickly, never a crash or a hang; a
 * value that is not a target is a 502 (upstream crashes on IPv6 values or answers "not found");
 * a bad source is a start-up error rather than a silent `sys.exit()`. Redis `error` events are
 * logged (once per distinct message) and never crash the process.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { ConfigError, errorMessage, TokenLookupError } from "../errors.ts";
import type { Target, TokenPlugin } from "../types.ts";
import { parseTargetValue, targetFromHostPort } from "./target_value.ts";

const logger = getLogger(["websockify", "tokens"]);

const SOURCE_FORMAT = "host[:port[:db[:password[:namespace]]]]";

/** A parsed `TokenRedis` source. */
export interface RedisSource {
  readonly host: string;
  /** @default 6379 */
  readonly port: number;
  /** @default 0 */
  readonly db: number;
  readonly password: string | undefined;
  /** Prefix of every key, `""` or ending in `:`. */
  readonly namespace: string;
}

/** Options of the Redis plugin. */
export interface RedisOptions {
  /** Time allowed to connect, and for one GET. @default 2000 */
  readonly timeoutMs?: number;
}

/**
 * Splits a source on `:` like upstream's `parse_source_args`: a field that is entirely
 * `"..."` (non-empty inside) may contain colons, and its quotes are removed.
 */
export function splitSourceFields(source: string): string[] {
  const fields: string[] = [];
  let start = 0;
  for (;;) {
    if (source[start] === '"') {
      const close = source.indexOf('"', start + 1);
      const after = source[close + 1];
      if (close > start + 1 && (after === undefined || after === ":")) {
        fields.push(source.slice(start + 1, close));
        if (after === undefined) return fields;
        start = close + 2;
        continue;
      }
    }
    const colon = source.indexOf(":", start);
    if (colon < 0) {
      fields.push(source.slice(start));
      return fields;
    }
    fields.push(source.slice(start, colon));
    start = colon + 1;
  }
}

/**
 * Parses a `TokenRedis` source.
 *
 * @throws {ConfigError} naming the expected format
 */
export function parseRedisSource(source: string | undefined): RedisSource {
  const fail = (reason: string): never => {
    throw new ConfigError(
      `The provided --token-source='${
        source ?? ""
      }' is not in the expected format ${SOURCE_FORMAT}: ${reason}`,
    );
  };
  if (source === undefined || source === "") return fail("give at least the Redis host");
  let text = source;
  let bracketedHost: string | undefined;
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close < 0) return fail("the '[' of the IPv6 host has no ']'");
    bracketedHost = text.slice(1, close);
    text = "host" + text.slice(close + 1);
  }
  const fields = splitSourceFields(text);
  if (fields.length > 5) return fail(`it has ${fields.length} fields; quote fields that hold ':'`);
  const [hostField = "", portField = "", dbField = "", password = "", namespace = ""] = fields;
  const host = bracketedHost ?? hostField;
  if (host === "") fail("the host is empty");
  const port = portField === "" ? 6379 : Number(portField);
  if (!/^[0-9]*$/.test(portField) || !(port >= 1 && port <= 65535)) {
    fail(`'${portField}' is not a port number`);
  }
  const db = dbField === "" ? 0 : Number(dbField);
  if (!/^[0-9]*$/.test(dbField) || !Number.isSafeInteger(db)) {
    fail(`'${dbField}' is not a db number`);
  }
  return {
    host,
    port,
    db,
    password: password === "" ? undefined : password,
    namespace: namespace === "" ? "" : `${namespace}:`,
  };
}

/**
 * Parses a Redis value into a target.
 *
 * @throws {Error} when the value is no target
 */
export function parseRedisValue(value: string): Target {
  const text = value.trim();
  if (!text.startsWith("{")) return parseTargetValue(text);
  const json: unknown = JSON.parse(text);
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new TypeError("The JSON value is not an object");
  }
  const record = json as Record<string, unknown>;
  if (!("host" in record)) throw new TypeError("The JSON value has no 'host' key");
  if ("port" in record) return targetFromHostPort(record["host"], record["port"]);
  if (typeof record["host"] !== "string") throw new TypeError("'host' is not a string");
  return parseTargetValue(record["host"]);
}

/** The part of the `@redis/client` client this plugin uses (its generic type is unwieldy). */
interface Client {
  readonly isOpen: boolean;
  readonly isReady: boolean;
  connect(): Promise<unknown>;
  get(key: string): Promise<unknown>;
  close(): Promise<void>;
  destroy(): void;
  on(event: string, listener: (...args: never[]) => void): unknown;
}

class RedisPlugin implements TokenPlugin {
  readonly #source: RedisSource;
  readonly #timeoutMs: number;
  readonly #address: string;
  #client: Client | undefined;
  #connecting: Promise<Client> | undefined;
  #lastError = "";
  #closed = false;

  constructor(source: RedisSource, options: RedisOptions) {
    this.#source = source;
    this.#timeoutMs = options.timeoutMs ?? 2000;
    const { host, port, db } = source;
    this.#address = `${host.includes(":") ? `[${host}]` : host}:${port}/${db}`;
  }

  async lookup(token: string): Promise<Target | null> {
    logger.debug("resolving token '{token}'", { token });
    const client = await this.#connected();
    let value: unknown;
    try {
      value = await this.#withTimeout(
        client.get(this.#source.namespace + token),
        "did not answer",
      );
    } catch (error) {
      this.#drop(client);
      throw this.#failure(error);
    }
    if (value === null) return null;
    try {
      return parseRedisValue(String(value));
    } catch (error) {
      throw new TokenLookupError(
        `Redis value of token '${token}' is not a target: ${errorMessage(error)}`,
        { status: 502, cause: error },
      );
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    const client = this.#client;
    this.#client = undefined;
    if (client === undefined) return;
    try {
      if (client.isReady) await client.close();
      else client.destroy();
    } catch {
      client.destroy();
    }
  }

  /** The shared client, connecting (once, for all waiting lookups) when there is none. */
  async #connected(): Promise<Client> {
    if (this.#closed) {
      throw new TokenLookupError("The Redis token plugin is closed", { status: 503 });
    }
    const current = this.#client;
    if (current !== undefined && current.isReady) return current;
    if (current !== undefined && current.isOpen) {
      // Reconnecting after a dropped connection: fail fast instead of queueing the lookup.
      throw this.#failure(new Error(this.#lastError || "the connection was lost, reconnecting"));
    }
    if (current !== undefined) this.#drop(current);
    this.#connecting ??= this.#connect().finally(() => {
      this.#connecting = undefined;
    });
    return await this.#connecting;
  }

  async #connect(): Promise<Client> {
    const { host, port, db, password } = this.#source;
    let everReady = false;
    // Loaded on first use: the client library is large, and most proxies never use Redis.
    const { createClient } = await import("@redis/client");
    const client: Client = createClient({
      socket: {
        host,
        port,
        connectTimeout: this.#timeoutMs,
        // The first connect fails fast so the lookup can answer 503; an established
        // connection that drops is retried in the background with a capped back-off.
        reconnectStrategy: (retries: number) =>
          everReady && retries < 20 ? Math.min(100 * 2 ** retries, 3000) : false,
      },
      ...(password === undefined ? {} : { password }),
      database: db,
      disableOfflineQueue: true,
    }) as unknown as Client;
    client.on("error", (error: Error) => {
      const message = errorMessage(error);
      if (message !== this.#lastError) {
        logger.warn("Redis at {address}: {message}", { address: this.#address, message });
      }
      this.#lastError = message;
    });
    client.on("ready", () => {
      everReady = true;
      this.#lastError = "";
    });
    try {
      await this.#withTimeout(client.connect(), "did not accept a connection");
    } catch (error) {
      client.destroy();
      throw this.#failure(error);
    }
    if (this.#closed) {
      client.destroy();
      throw new TokenLookupError("The Redis token plugin is closed", { status: 503 });
    }
    this.#client = client;
    return client;
  }

  #drop(client: Client): void {
    if (this.#client === client) this.#client = undefined;
    try {
      client.destroy();
    } catch {
      // already closed
    }
  }

  #failure(error: unknown): TokenLookupError {
    return new TokenLookupError(
      `Redis at ${this.#address} is unavailable: ${errorMessage(error)}`,
      { status: 503, cause: error },
    );
  }

  async #withTimeout<T>(promise: Promise<T>, what: string): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`it ${what} within ${this.#timeoutMs} ms`)),
        this.#timeoutMs,
      );
    });
    try {
      return await Promise.race([promise, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** `TokenRedis`: the source is parsed now; the connection is made at the first lookup. */
export function tokenRedis(source: string | undefined, options: RedisOptions = {}): TokenPlugin {
  return new RedisPlugin(parseRedisSource(source), options);
}
