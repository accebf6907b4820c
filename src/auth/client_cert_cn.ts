/**
 * `ClientCertCNAuth`: allows a request only if its verified TLS client certificate has one of the
 * common names in `--auth-source` (space-separated). Use with `--ssl-only --verify-client`.
 *
 * The identity comes from `RequestInfo.clientIdentity`, which the listener fills from the TLS
 * session. Request headers are never consulted: upstream reads `SSL_CLIENT_S_DN_CN` from the
 * headers and can be fooled by a client sending `ssl_client_s_dn_cn: admin` itself.
 *
 * @module
 */

import { AuthError, ConfigError } from "../errors.ts";
import type { AuthPlugin, RequestInfo } from "../types.ts";

/** Builds the plugin; `source` lists the allowed CNs, separated by spaces. */
export function clientCertCnAuth(source: string | undefined): AuthPlugin {
  const allowed = new Set((source ?? "").split(/\s+/).filter((name) => name !== ""));
  if (allowed.size === 0) {
    throw new ConfigError(
      "ClientCertCNAuth needs --auth-source with the allowed certificate common names, " +
        "e.g. --auth-source 'alice bob'",
    );
  }
  return {
    authenticate(request: RequestInfo): Promise<void> {
      const identity = request.clientIdentity;
      if (identity !== undefined && allowed.has(identity.commonName)) return Promise.resolve();
      const got = identity === undefined
        ? "no verified client certificate"
        : `certificate CN ${JSON.stringify(identity.commonName)} is not allowed`;
      return Promise.reject(new AuthError("Forbidden", { status: 403, logDetail: got }));
    },
  };
}
