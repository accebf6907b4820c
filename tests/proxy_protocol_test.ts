import assert from "node:assert/strict";
import { parseProxyHeader } from "../src/listen/proxy_protocol.ts";

const encoder = new TextEncoder();
const SIGNATURE = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];

function v2(command: number, family: number, body: number[]): Uint8Array {
  return new Uint8Array([
    ...SIGNATURE,
    0x20 | command,
    family,
    body.length >> 8,
    body.length & 255,
    ...body,
  ]);
}

Deno.test("parseProxyHeader() reads v1 lines", () => {
  const cases: [string, unknown][] = [
    ["PROXY TCP4 192.0.2.1 192.0.2.2 5000 80\r\nGET / HTTP/1.1", {
      kind: "done",
      length: 40,
      source: { address: "192.0.2.1", port: 5000 },
    }],
    ["PROXY TCP6 2001:db8::1 ::1 65535 443\r\n", {
      kind: "done",
      length: 38,
      source: { address: "2001:db8::1", port: 65535 },
    }],
    ["PROXY UNKNOWN\r\n", { kind: "done", length: 15 }],
    ["PROXY UNKNOWN ffff:f...f 0 0\r\nGET", { kind: "done", length: 30 }],
    ["PRO", { kind: "incomplete" }],
    ["PROXY TCP4 192.0.2.1 192.0.2.2 5000", { kind: "incomplete" }],
    ["GET / HTTP/1.1\r\n", { kind: "invalid", reason: "no PROXY protocol header" }],
    ["PROXY TCP4 192.0.2.1 192.0.2.2 5000 80\n", {
      kind: "invalid",
      reason: "v1 line does not end in CRLF",
    }],
    ["PROXY TCP4 300.0.2.1 192.0.2.2 5000 80\r\n", { kind: "invalid", reason: "bad v1 address" }],
    ["PROXY TCP4 ::1 ::1 5000 80\r\n", { kind: "invalid", reason: "bad v1 address" }],
    ["PROXY TCP6 1.2.3.4 ::1 5000 80\r\n", { kind: "invalid", reason: "bad v1 address" }],
    ["PROXY TCP4 192.0.2.1 192.0.2.2 65536 80\r\n", { kind: "invalid", reason: "bad v1 port" }],
    ["PROXY UDP4 192.0.2.1 192.0.2.2 1 2\r\n", {
      kind: "invalid",
      reason: "bad v1 line 'PROXY UDP4 192.0.2.1 192.0.2.2 1 2'",
    }],
    [`PROXY ${"x".repeat(120)}`, { kind: "invalid", reason: "v1 line too long" }],
  ];
  for (const [text, expected] of cases) {
    assert.deepEqual(parseProxyHeader(encoder.encode(text)), expected, JSON.stringify(text));
  }
});

Deno.test("parseProxyHeader() reads v2 headers: PROXY, LOCAL, families, TLVs", () => {
  const ipv4 = [203, 0, 113, 7, 127, 0, 0, 1, 0x13, 0x88, 0x00, 0x50];
  const ipv6 = [
    ...[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    ...new Array(15).fill(0),
    1,
    0x01,
    0xbb,
    0x00,
    0x50,
  ];
  const mapped = [
    ...new Array(10).fill(0),
    0xff,
    0xff,
    192,
    0,
    2,
    9,
    ...new Array(16).fill(0),
    0,
    1,
    0,
    2,
  ];
  const tlv = [0x04, 0x00, 0x03, 0x61, 0x62, 0x63];
  const cases: [Uint8Array, unknown][] = [
    [v2(1, 0x11, ipv4), {
      kind: "done",
      length: 28,
      source: { address: "203.0.113.7", port: 5000 },
    }],
    [v2(1, 0x11, [...ipv4, ...tlv]), {
      kind: "done",
      length: 34,
      source: { address: "203.0.113.7", port: 5000 },
    }],
    [v2(1, 0x21, ipv6), {
      kind: "done",
      length: 52,
      source: { address: "2001:db8::1", port: 443 },
    }],
    [v2(1, 0x21, mapped), { kind: "done", length: 52, source: { address: "192.0.2.9", port: 1 } }],
    [v2(0, 0x00, []), { kind: "done", length: 16 }],
    [v2(0, 0x11, ipv4), { kind: "done", length: 28 }],
    [v2(1, 0x31, new Array(216).fill(0)), { kind: "done", length: 232 }],
    [v2(1, 0x11, ipv4).subarray(0, 20), { kind: "incomplete" }],
    [v2(1, 0x11, ipv4).subarray(0, 5), { kind: "incomplete" }],
    [v2(1, 0x11, [1, 2, 3]), { kind: "invalid", reason: "v2 IPv4 addresses truncated" }],
    [v2(1, 0x21, ipv4), { kind: "invalid", reason: "v2 IPv6 addresses truncated" }],
    [v2(2, 0x11, ipv4), { kind: "invalid", reason: "bad v2 command" }],
    [v2(1, 0x11, new Array(3000).fill(0)), { kind: "invalid", reason: "v2 header too long" }],
  ];
  const badVersion = v2(1, 0x11, ipv4);
  badVersion[12] = 0x11;
  cases.push([badVersion, { kind: "invalid", reason: "bad v2 version" }]);
  for (const [bytes, expected] of cases) {
    assert.deepEqual(parseProxyHeader(bytes), expected, Array.from(bytes.subarray(12, 16)).join());
  }
});
