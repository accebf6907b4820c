/**
 * The client's address behind trusted load balancers (`--trusted-proxy`): a list of addresses and
 * CIDR ranges, and the choice of the client address from `X-Forwarded-For` or RFC 7239
 * `Forwarded: for=` when, and only when, the TCP peer is in that list. Pure: no I/O.
 *
 * @module
 */

import net from "node:net";

/** A set of trusted proxy addresses and ranges, built by {@link parseTrustedProxies}. */
export interface TrustedProxies {
  /** The entries as given (normalised), for log lines. */
  readonly entries: readonly string[];
  /** Whether the bare IP `address` is in the set; anything that is not an IP is not. */
  has(address: string): boolean;
}

/**
 * Parses a comma-separated list of IPv4/IPv6 addresses and CIDR ranges. Throws an `Error` whose
 * message names the bad entry (the caller wraps it as a `ConfigError`).
 *
 * @example
 * ```ts
 * const trusted = parseTrustedProxies("10.0.0.0/8, ::1");
 * trusted.has("10.1.2.3"); // true
 * ```
 */
export function parseTrustedProxies(list: string): TrustedProxies {
  const blockList = new net.BlockList();
  const entries: string[] = [];
  for (const raw of list.split(",")) {
    const entry = raw.trim();
    if (entry === "") continue;
    const slash = entry.indexOf("/");
    const address = unbracket(slash < 0 ? entry : entry.slice(0, slash));
    const family = net.isIP(address);
    if (family === 0) {
      throw new Error(
        `'${entry}' is not an IP address or CIDR range: give e.g. 10.0.0.1, 10.0.0.0/8 or ::1`,
      );
    }
    const type = family === 4 ? "ipv4" : "ipv6";
    if (slash < 0) {
      blockList.addAddress(address, type);
    } else {
      const bitsText = entry.slice(slash + 1);
      const bits = /^\d{1,3}$/.test(bitsText) ? Number(bitsText) : NaN;
      const max = family === 4 ? 32 : 128;
      if (!(bits >= 0 && bits <= max)) {
        throw new Error(`'${entry}' has a bad prefix length: give 0 to ${max}`);
      }
      blockList.addSubnet(address, bits, type);
    }
    entries.push(entry);
  }
  if (entries.length === 0) throw new Error("the list is empty: give addresses or CIDR ranges");
  return {
    entries,
    has(address: string): boolean {
      const bare = unbracket(address);
      const family = net.isIP(bare);
      if (family === 0) return false;
      // BlockList matches IPv4-mapped IPv6 (::ffff:a.b.c.d) against IPv4 ranges too.
      return blockList.check(bare, family === 4 ? "ipv4" : "ipv6");
    },
  };
}

/**
 * The client address of a request whose direct peer is `peerAddress` (a bare IP). From a trusted
 * peer it is the rightmost `X-Forwarded-For` entry that is not trusted (or, without that header,
 * the rightmost untrusted `Forwarded: for=`); otherwise, and whenever a header is absent or
 * unusable, `peerAddress`. Entries left of the first untrusted one were written by the client
 * itself and could be forged, so they are never used.
 */
export function clientAddress(
  peerAddress: string,
  headers: Headers,
  trusted: TrustedProxies | undefined,
): string {
  if (trusted === undefined || !trusted.has(peerAddress)) return peerAddress;
  const forwardedFor = headers.get("x-forwarded-for");
  if (forwardedFor !== null) {
    return rightmostUntrusted(peerAddress, forwardedFor.split(",").map(bareHost), trusted);
  }
  const forwarded = headers.get("forwarded");
  if (forwarded !== null) {
    return rightmostUntrusted(peerAddress, forwardedFor7239(forwarded), trusted);
  }
  return peerAddress;
}

/**
 * Walks the hops from right (nearest) to left. A hop that is not an IP (`unknown`, an obfuscated
 * name, garbage) stops the walk at the last trusted hop: that hop could not say who its client was.
 */
function rightmostUntrusted(
  peerAddress: string,
  hops: readonly (string | undefined)[],
  trusted: TrustedProxies,
): string {
  let last = peerAddress;
  for (let index = hops.length - 1; index >= 0; index--) {
    const hop = hops[index];
    if (hop === undefined) return last;
    if (!trusted.has(hop)) return hop;
    last = hop;
  }
  return last;
}

/** The `for=` value of each element of a `Forwarded` header, as a bare IP or `undefined`. */
function forwardedFor7239(value: string): (string | undefined)[] {
  const hops: (string | undefined)[] = [];
  for (const element of splitOutsideQuotes(value, ",")) {
    let hop: string | undefined;
    for (const pair of splitOutsideQuotes(element, ";")) {
      const equals = pair.indexOf("=");
      if (equals < 0 || pair.slice(0, equals).trim().toLowerCase() !== "for") continue;
      let text = pair.slice(equals + 1).trim();
      if (text.length >= 2 && text.startsWith('"') && text.endsWith('"')) {
        text = text.slice(1, -1).replace(/\\(.)/g, "$1");
      }
      hop = bareHost(text);
    }
    hops.push(hop);
  }
  return hops;
}

function splitOutsideQuotes(value: string, separator: string): string[] {
  const parts: string[] = [];
  let current = "";
  let quoted = false;
  for (let index = 0; index < value.length; index++) {
    const char = value[index] as string;
    if (char === '"') quoted = !quoted;
    if (char === "\\" && quoted && index + 1 < value.length) {
      current += char + value[++index];
      continue;
    }
    if (char === separator && !quoted) {
      parts.push(current);
      current = "";
    } else {
      current += char;
    }
  }
  parts.push(current);
  return parts;
}

/**
 * `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:80` → the bare IP
 * (IPv4-mapped IPv6 unwrapped); anything else → `undefined`.
 */
export function bareHost(text: string): string | undefined {
  let host = text.trim();
  if (host.startsWith("[")) {
    const close = host.indexOf("]");
    if (close < 0) return undefined;
    const rest = host.slice(close + 1);
    if (rest !== "" && !/^:\d{1,5}$/.test(rest)) return undefined;
    host = host.slice(1, close);
  } else if (/^[\d.]+:\d{1,5}$/.test(host)) {
    host = host.slice(0, host.lastIndexOf(":"));
  }
  if (net.isIP(host) === 0) return undefined;
  return unmapIpv4(host);
}

/** `::ffff:1.2.3.4` → `1.2.3.4`; other addresses unchanged. */
export function unmapIpv4(address: string): string {
  return address.replace(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/i, "$1");
}

/**
 * The peer to name in log lines: the connection's `ip:port` when the client address is its host,
 * otherwise the client address a trusted proxy reported.
 */
export function logPeer(
  request: { readonly peer: string; readonly clientAddress: string },
): string {
  const { peer, clientAddress } = request;
  // Every connection's upgrade asks this; most come straight from an IPv4 client.
  if (isIpv4Peer(peer, clientAddress)) return peer;
  const peerAddress = bareHost(peer) ?? peer;
  return clientAddress === peerAddress ? peer : clientAddress;
}

/** The last address {@link isIpv4Peer} found to be IPv4. */
let lastIpv4 = "";

/**
 * Whether `peer` is `host:port` with `host` an IPv4 address: then {@link bareHost} of `peer` is
 * `host`. It skips bareHost's regular expressions, and remembers the last host that passed,
 * since connections usually come from the same few hosts.
 */
function isIpv4Peer(peer: string, host: string): boolean {
  const length = host.length;
  if (length === 0 || peer.length < length + 2 || peer.length > length + 6) return false;
  if (peer.charCodeAt(length) !== 0x3a || !peer.startsWith(host)) return false;
  for (let index = length + 1; index < peer.length; index++) {
    const code = peer.charCodeAt(index);
    if (code < 0x30 || code > 0x39) return false;
  }
  if (host === lastIpv4) return true;
  if (net.isIP(host) !== 4) return false;
  lastIpv4 = host;
  return true;
}

function unbracket(text: string): string {
  return text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
}
