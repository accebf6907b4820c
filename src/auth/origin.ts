/**
 * Origin checks: the `ExpectOrigin` plugin (`--auth-source "https://a https://b"`) and
 * {@link checkOrigin} behind the first-class `--origin LIST` flag. Both answer `403 Invalid Origin`
 * when the request's `Origin` is missing or not allowed.
 *
 * Unlike upstream's exact string match, both sides are normalised to `scheme://host[:port]`
 * (lower-case host, default port dropped), so `https://Example.com:443` matches
 * `https://example.com`. Values that are not URLs (e.g. `null`) are compared as they are.
 *
 * @module
 */

import { normaliseOrigin } from "../cli.ts";
import { AuthError, ConfigError } from "../errors.ts";
import type { AuthPlugin, RequestInfo } from "../types.ts";

/**
 * Throws `AuthError` 403 "Invalid Origin" unless `origins` is empty (any origin) or the request's
 * `Origin` header, normalised, is one of `origins` (already normalised, as `parseOrigins()` does).
 */
export function checkOrigin(origins: readonly string[], request: RequestInfo): void {
  if (origins.length === 0) return;
  const origin = request.headers.get("origin");
  const normalised = origin === null ? undefined : normaliseOrigin(origin) ?? origin;
  if (normalised !== undefined && origins.includes(normalised)) return;
  throw new AuthError("Invalid Origin", {
    status: 403,
    logDetail: `Invalid Origin Header: Expected one of ${JSON.stringify(origins)}, got ${
      origin === null ? "none" : JSON.stringify(origin)
    }`,
  });
}

/** Builds `ExpectOrigin`; `source` is a space-separated list of allowed origins. */
export function expectOrigin(source: string | undefined): AuthPlugin {
  const entries = (source ?? "").split(/\s+/).filter((entry) => entry !== "");
  if (entries.length === 0) {
    throw new ConfigError(
      "ExpectOrigin needs --auth-source with the allowed origins, e.g. " +
        "--auth-source 'https://example.com http://localhost:6080'",
    );
  }
  const origins = entries.map((entry) => normaliseOrigin(entry) ?? entry);
  return {
    authenticate(request: RequestInfo): Promise<void> {
      try {
        checkOrigin(origins, request);
        return Promise.resolve();
      } catch (error) {
        return Promise.reject(error);
      }
    },
  };
}
