/**
 * Finds the token of an upgrade request, as upstream's `get_target` does: the first non-empty
 * `token` query parameter (percent-decoded, `+` as space, a trailing newline removed), or with
 * `--host-token` the `Host` header without its port. Unlike upstream, an IPv6 `Host` such as
 * `[::1]:6080` gives `::1` rather than `[`.
 *
 * @module
 */

/**
 * Returns the token of a request, or `undefined` when it carries none (upstream's "Token not
 * present").
 *
 * @param path the raw request target, e.g. `/websockify?token=abc` or an absolute URI
 * @param headers the request headers (only `Host` is read, and only when `hostToken` is set)
 * @param hostToken `--host-token`: use the `Host` header instead of the query string
 */
export function extractToken(
  path: string,
  headers: Headers,
  hostToken: boolean,
): string | undefined {
  const token = hostToken ? hostWithoutPort(headers.get("host")) : queryToken(path);
  return token === undefined || token === "" ? undefined : token;
}

/**
 * The first `token` parameter with a non-empty value. Python's `parse_qs` (without
 * `keep_blank_values`) drops empty values, so `?token=&token=x` gives `x`.
 */
function queryToken(path: string): string | undefined {
  const hash = path.indexOf("#");
  const withoutFragment = hash < 0 ? path : path.slice(0, hash);
  const question = withoutFragment.indexOf("?");
  if (question < 0) return undefined;
  for (const field of withoutFragment.slice(question + 1).split("&")) {
    const equals = field.indexOf("=");
    if (equals < 0) continue;
    const value = field.slice(equals + 1);
    if (value === "" || decodeQueryPart(field.slice(0, equals)) !== "token") continue;
    return decodeQueryPart(value).replace(/\n+$/, "");
  }
  return undefined;
}

/**
 * Percent-decodes like Python's `unquote`: `+` is a space, malformed escapes stay as they are,
 * and invalid UTF-8 becomes U+FFFD instead of throwing.
 */
export function decodeQueryPart(text: string): string {
  const spaced = text.replaceAll("+", " ");
  if (!spaced.includes("%")) return spaced;
  const bytes: number[] = [];
  const encoder = new TextEncoder();
  for (let index = 0; index < spaced.length;) {
    const hex = spaced.slice(index + 1, index + 3);
    if (spaced[index] === "%" && /^[0-9a-fA-F]{2}$/.test(hex)) {
      bytes.push(parseInt(hex, 16));
      index += 3;
    } else {
      const codePoint = spaced.codePointAt(index) ?? 0;
      const character = String.fromCodePoint(codePoint);
      bytes.push(...encoder.encode(character));
      index += character.length;
    }
  }
  return new TextDecoder().decode(new Uint8Array(bytes));
}

/** `example.com:6080` → `example.com`, `[::1]:6080` → `::1`, a bare IPv6 literal stays whole. */
function hostWithoutPort(host: string | null): string | undefined {
  if (host === null) return undefined;
  const value = host.trim();
  if (value.startsWith("[")) {
    const close = value.indexOf("]");
    return close < 0 ? value : value.slice(1, close);
  }
  const colon = value.indexOf(":");
  if (colon < 0 || value.indexOf(":", colon + 1) >= 0) return value;
  return value.slice(0, colon);
}
