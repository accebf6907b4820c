/**
 * TLS towards targets (`--ssl-target`). Placeholder until the TLS work lands: refuses clearly.
 *
 * @module
 */

import type { TargetTlsConfig } from "./config.ts";
import { TargetError } from "./errors.ts";
import type { TargetConnection } from "./types.ts";

/** Connects to `host:port` over TLS. */
export function dialTlsTarget(
  _host: string,
  _port: number,
  _options: { config: TargetTlsConfig; timeoutMs: number },
): Promise<TargetConnection> {
  return Promise.reject(new TargetError("--ssl-target is not available in this build"));
}
