/**
 * `BasicHTTPAuth`: HTTP Basic authentication against one `user:password` pair given as
 * `--auth-source`. As upstream: no `Authorization` header or wrong credentials → 401 with
 * `WWW-Authenticate: Basic realm="Websockify"`; a header of another scheme → 403. Unlike upstream,
 * malformed base64 is a 401 (not a dropped connection) and the comparison is constant-time.
 *
 * @module
 */

import { createHash, timingSafeEqual } from "node:crypto";
import { Buffer } from "node:buffer";
import { AuthError, ConfigError } from "../errors.ts";
import type { AuthPlugin, RequestInfo } from "../types.ts";

/** The challenge sent with every 401. */
const CHALLENGE = { "WWW-Authenticate": 'Basic realm="Websockify"' } as const;

/** Builds the plugin; `source` must be `user:password` (the password may contain `:`). */
export function basicHttpAuth(source: string | undefined): AuthPlugin {
  if (source === undefined || !source.includes(":")) {
    throw new ConfigError(
      "BasicHTTPAuth needs --auth-source USER:PASSWORD, e.g. --auth-source admin:secret",
    );
  }
  // Upstream decodes credentials as ISO-8859-1; browsers send UTF-8. Accept either encoding of a
  // non-ASCII source, comparing SHA-256 digests so lengths leak nothing and timing is constant.
  const expected = [digest(Buffer.from(source, "utf8"))];
  const codes = Array.from(source, (char) => char.codePointAt(0) ?? 0);
  if (codes.every((code) => code <= 0xff) && codes.some((code) => code >= 0x80)) {
    expected.push(digest(Buffer.from(source, "latin1")));
  }
  return {
    authenticate(request: RequestInfo): Promise<void> {
      const header = request.headers.get("authorization");
      if (header === null) {
        return Promise.reject(unauthorized("no Authorization header"));
      }
      const match = /^basic(?: +(.*))?$/i.exec(header.trim());
      if (match === null) {
        return Promise.reject(
          new AuthError("Forbidden", { status: 403, logDetail: "Authorization is not Basic" }),
        );
      }
      const encoded = match[1] ?? "";
      if (!/^[A-Za-z0-9+/]*={0,2}$/.test(encoded) || encoded.length % 4 !== 0) {
        return Promise.reject(unauthorized("malformed base64 in Authorization"));
      }
      const credentials = Buffer.from(encoded, "base64");
      const colon = credentials.indexOf(":");
      if (colon < 0) return Promise.reject(unauthorized("credentials without ':'"));
      const actual = digest(credentials);
      let matched = false;
      for (const candidate of expected) matched = timingSafeEqual(actual, candidate) || matched;
      if (!matched) {
        const user = JSON.stringify(credentials.subarray(0, colon).toString("latin1"));
        return Promise.reject(unauthorized(`wrong user or password for user ${user}`));
      }
      return Promise.resolve();
    },
  };
}

function unauthorized(logDetail: string): AuthError {
  return new AuthError("Unauthorized", { status: 401, headers: CHALLENGE, logDetail });
}

function digest(bytes: Uint8Array): Buffer {
  return createHash("sha256").update(bytes).digest();
}
