/**
 * HAProxy PROXY protocol headers, version 1 (text) and 2 (binary), as sent by `send-proxy` /
 * `send-proxy-v2` in front of `--proxy-protocol`. Pure: {@link parseProxyHeader} looks at the
 * bytes received so far and says whether the header is complete, incomplete or invalid.
 *
 * @module
 */

/** The 12-byte signature that starts a version 2 header. */
const V2_SIGNATURE = new Uint8Array([
  0x0d,
  0x0a,
  0x0d,
  0x0a,
  0x00,
  0x0d,
  0x0a,
  0x51,
  0x55,
  0x49,
  0x54,
  0x0a,
]);
/** A v1 line is at most 107 bytes including CRLF. */
const V1_MAX = 107;
/** Cap on a v2 header with TLVs; real ones are far smaller. */
const V2_MAX = 16 + 2048;

/** Outcome of {@link parseProxyHeader}. */
export type ProxyHeader =
  /** More bytes are needed. */
  | { readonly kind: "incomplete" }
  /** Not a PROXY header, or a malformed one: close the connection. */
  | { readonly kind: "invalid"; readonly reason: string }
  /**
   * A complete header of `length` bytes. `source` is absent for v2 LOCAL and v1/v2 UNKNOWN or
   * non-IP families (the real peer then stands).
   */
  | {
    readonly kind: "done";
    readonly length: number;
    readonly source?: { readonly address: string; readonly port: number };
  };

/**
 * Parses the PROXY header at the start of `bytes`.
 *
 * @example
 * ```ts
 * const bytes = new TextEncoder().encode("PROXY TCP4 192.0.2.1 192.0.2.2 5000 80\r\nGET /");
 * parseProxyHeader(bytes); // { kind: "done", length: 40, source: { address: "192.0.2.1", port: 5000 } }
 * ```
 */
export function parseProxyHeader(bytes: Uint8Array): ProxyHeader {
  if (startsWithPrefix(bytes, V2_SIGNATURE)) {
    return bytes.length < V2_SIGNATURE.length ? incomplete() : parseV2(bytes);
  }
  if (startsWithPrefix(bytes, PROXY_V1_START)) {
    return bytes.length < PROXY_V1_START.length ? incomplete() : parseV1(bytes);
  }
  return invalid("no PROXY protocol header");
}

const PROXY_V1_START = new TextEncoder().encode("PROXY ");

function parseV1(bytes: Uint8Array): ProxyHeader {
  const end = bytes.subarray(0, V1_MAX).indexOf(0x0a);
  if (end < 0) return bytes.length >= V1_MAX ? invalid("v1 line too long") : incomplete();
  if (bytes[end - 1] !== 0x0d) return invalid("v1 line does not end in CRLF");
  const line = new TextDecoder().decode(bytes.subarray(0, end - 1));
  const parts = line.split(" ");
  const family = parts[1];
  if (family === "UNKNOWN") return { kind: "done", length: end + 1 };
  if (parts.length !== 6 || (family !== "TCP4" && family !== "TCP6")) {
    return invalid(`bad v1 line '${line.slice(0, 60)}'`);
  }
  const [, , source, destination, sourcePort, destinationPort] = parts as string[];
  const ipOk = family === "TCP4" ? isIpv4 : isIpv6;
  if (!ipOk(source ?? "") || !ipOk(destination ?? "")) return invalid("bad v1 address");
  const port = parsePort(sourcePort ?? "");
  if (port === undefined || parsePort(destinationPort ?? "") === undefined) {
    return invalid("bad v1 port");
  }
  return { kind: "done", length: end + 1, source: { address: source as string, port } };
}

function parseV2(bytes: Uint8Array): ProxyHeader {
  if (bytes.length < 16) return incomplete();
  const versionCommand = bytes[12] as number;
  if (versionCommand >> 4 !== 2) return invalid("bad v2 version");
  const command = versionCommand & 0x0f;
  if (command > 1) return invalid("bad v2 command");
  const familyProtocol = bytes[13] as number;
  const length = 16 + (((bytes[14] as number) << 8) | (bytes[15] as number));
  if (length > V2_MAX) return invalid("v2 header too long");
  if (bytes.length < length) return incomplete();
  // LOCAL: the balancer's own connection (health checks); the real peer stands.
  if (command === 0) return { kind: "done", length };
  const body = bytes.subarray(16, length);
  const family = familyProtocol >> 4;
  if (family === 1) {
    if (body.length < 12) return invalid("v2 IPv4 addresses truncated");
    const address = Array.from(body.subarray(0, 4)).join(".");
    return { kind: "done", length, source: { address, port: (body[8]! << 8) | body[9]! } };
  }
  if (family === 2) {
    if (body.length < 36) return invalid("v2 IPv6 addresses truncated");
    const groups: string[] = [];
    for (let index = 0; index < 16; index += 2) {
      groups.push(((body[index]! << 8) | body[index + 1]!).toString(16));
    }
    const address = compressIpv6(groups);
    return { kind: "done", length, source: { address, port: (body[32]! << 8) | body[33]! } };
  }
  // UNSPEC or unix sockets: no IP to report.
  return { kind: "done", length };
}

/** Whether `bytes` (possibly shorter) agrees with `prefix` on their common length. */
function startsWithPrefix(bytes: Uint8Array, prefix: Uint8Array): boolean {
  const count = Math.min(bytes.length, prefix.length);
  if (count === 0) return false;
  for (let index = 0; index < count; index++) if (bytes[index] !== prefix[index]) return false;
  return true;
}

function isIpv4(text: string): boolean {
  const parts = text.split(".");
  return parts.length === 4 &&
    parts.every((part) => /^\d{1,3}$/.test(part) && Number(part) <= 255);
}

function isIpv6(text: string): boolean {
  return /^[0-9a-fA-F:.]+$/.test(text) && text.includes(":") && URL.canParse(`http://[${text}]/`);
}

function parsePort(text: string): number | undefined {
  if (!/^\d{1,5}$/.test(text)) return undefined;
  const port = Number(text);
  return port <= 65535 ? port : undefined;
}

/** Eight hex groups → the RFC 5952 form (longest zero run as `::`), IPv4-mapped unwrapped. */
function compressIpv6(groups: string[]): string {
  if (groups.slice(0, 5).every((group) => group === "0") && groups[5] === "ffff") {
    const high = parseInt(groups[6] as string, 16);
    const low = parseInt(groups[7] as string, 16);
    return `${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`;
  }
  let bestStart = -1;
  let bestLength = 1;
  for (let start = 0; start < 8;) {
    let end = start;
    while (end < 8 && groups[end] === "0") end++;
    if (end - start > bestLength) {
      bestStart = start;
      bestLength = end - start;
    }
    start = end === start ? start + 1 : end;
  }
  if (bestStart < 0) return groups.join(":");
  const head = groups.slice(0, bestStart).join(":");
  const tail = groups.slice(bestStart + bestLength).join(":");
  return `${head}::${tail}`;
}

function incomplete(): ProxyHeader {
  return { kind: "incomplete" };
}

function invalid(reason: string): ProxyHeader {
  return { kind: "invalid", reason };
}
