/**
 * Admission limits (`--max-connections`, `--max-connections-per-ip`): counts open WebSocket
 * sessions, in total and per client address, and refuses an upgrade over a limit with `503` or
 * `429` and `Retry-After` before any token lookup or target dial. A session holds its slot from
 * admission until it ends (also when the target dial fails) and releases it exactly once.
 *
 * @module
 */

import { HttpError } from "../errors.ts";
import type { RequestInfo } from "../types.ts";

/** Why an upgrade was refused, as a metrics label. */
export type RefusalReason = "max_connections" | "per_ip";

/** Options of {@link Admission}. */
export interface AdmissionOptions {
  /** `--max-connections`: open sessions at most; absent means no limit. */
  readonly maxConnections?: number | undefined;
  /** `--max-connections-per-ip`: open sessions per client address at most. */
  readonly maxConnectionsPerIp?: number | undefined;
  /** Called once per refusal (for a metrics counter). */
  readonly onRefused?: ((reason: RefusalReason) => void) | undefined;
}

/** Seconds a refused client is asked to wait (`Retry-After`). */
const RETRY_AFTER = "1";

/**
 * The key sessions are counted under: the client address (the peer, or what a trusted proxy or
 * a PROXY header named; a unix socket listener's clients share its path).
 */
export function clientKey(request: RequestInfo): string {
  return request.clientAddress;
}

/** Session counters of one server process; per-connection state stays in the returned release. */
export class Admission {
  readonly #options: AdmissionOptions;
  #open = 0;
  readonly #perClient = new Map<string, number>();

  /** Creates the counters for `options`. */
  constructor(options: AdmissionOptions) {
    this.#options = options;
  }

  /** Sessions currently holding a slot. */
  get open(): number {
    return this.#open;
  }

  /**
   * Takes a slot for `request`, or throws an {@link HttpError} (503 or 429 with `Retry-After`).
   * Returns the release function; calling it more than once releases once.
   */
  acquire(request: RequestInfo): () => void {
    const { maxConnections, maxConnectionsPerIp } = this.#options;
    if (maxConnections !== undefined && this.#open >= maxConnections) {
      this.#options.onRefused?.("max_connections");
      throw new HttpError(503, `Too many connections (--max-connections ${maxConnections})`, {
        "Retry-After": RETRY_AFTER,
      });
    }
    const key = clientKey(request);
    const fromClient = this.#perClient.get(key) ?? 0;
    if (maxConnectionsPerIp !== undefined && fromClient >= maxConnectionsPerIp) {
      this.#options.onRefused?.("per_ip");
      throw new HttpError(
        429,
        `Too many connections from ${key} (--max-connections-per-ip ${maxConnectionsPerIp})`,
        { "Retry-After": RETRY_AFTER },
      );
    }
    this.#open++;
    this.#perClient.set(key, fromClient + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#open--;
      const left = (this.#perClient.get(key) ?? 1) - 1;
      if (left > 0) this.#perClient.set(key, left);
      else this.#perClient.delete(key);
    };
  }
}
