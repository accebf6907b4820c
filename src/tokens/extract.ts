/**
 * Where a connection's token comes from: the first `token` query parameter (percent-decoded,
 * `+` as space), or with `--host-token` the Host header without its port.
 *
 * @module
 */

/** Returns the token of a request, or undefined when there is none. */
export function extractToken(
  path: string,
  headers: Headers,
  hostToken: boolean,
): string | undefined {
  if (hostToken) {
    const host = headers.get("host");
    if (!host) return undefined;
    const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(host);
    if (bracketed) return bracketed[1];
    return host.replace(/:\d+$/, "") || undefined;
  }
  const query = path.indexOf("?");
  if (query < 0) return undefined;
  const token = new URLSearchParams(path.slice(query + 1)).get("token");
  return token === null ? undefined : token.replace(/\n$/, "");
}
