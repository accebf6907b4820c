import assert from "node:assert/strict";
import {
  bareHost,
  clientAddress,
  logPeer,
  parseTrustedProxies,
} from "../src/listen/client_address.ts";

Deno.test("parseTrustedProxies() matches addresses and CIDR ranges, IPv4 and IPv6", () => {
  const trusted = parseTrustedProxies("127.0.0.1, 10.0.0.0/8,2001:db8::/32,[::1]");
  const cases: [string, boolean][] = [
    ["127.0.0.1", true],
    ["127.0.0.2", false],
    ["10.255.0.1", true],
    ["11.0.0.1", false],
    ["2001:db8::7", true],
    ["2001:db9::7", false],
    ["::1", true],
    ["::ffff:10.1.1.1", true],
    ["unknown", false],
    ["", false],
  ];
  for (const [address, expected] of cases) {
    assert.equal(trusted.has(address), expected, address);
  }
  assert.deepEqual(trusted.entries, ["127.0.0.1", "10.0.0.0/8", "2001:db8::/32", "[::1]"]);
});

Deno.test("parseTrustedProxies() rejects bad entries with a message naming them", () => {
  const cases: [string, RegExp][] = [
    ["10.0.0.0/33", /'10\.0\.0\.0\/33' has a bad prefix length: give 0 to 32/],
    ["::/129", /'::\/129' has a bad prefix length: give 0 to 128/],
    ["10.0.0.0/", /bad prefix length/],
    ["10.0.0.0/-1", /bad prefix length/],
    ["foo", /'foo' is not an IP address or CIDR range: give e.g./],
    ["127.0.0.1,300.1.1.1", /'300\.1\.1\.1' is not an IP/],
    [" , ", /the list is empty/],
  ];
  for (const [list, message] of cases) {
    assert.throws(() => parseTrustedProxies(list), message, list);
  }
});

Deno.test("bareHost() strips ports and brackets and refuses non-addresses", () => {
  const cases: [string, string | undefined][] = [
    ["203.0.113.7", "203.0.113.7"],
    [" 203.0.113.7:4711 ", "203.0.113.7"],
    ["2001:db8::1", "2001:db8::1"],
    ["[2001:db8::1]", "2001:db8::1"],
    ["[2001:db8::1]:4711", "2001:db8::1"],
    ["::ffff:192.0.2.1", "192.0.2.1"],
    ["[2001:db8::1]x", undefined],
    ["[2001:db8::1", undefined],
    ["unknown", undefined],
    ["_hidden", undefined],
    ["", undefined],
  ];
  for (const [text, expected] of cases) assert.equal(bareHost(text), expected, text);
});

Deno.test("clientAddress() picks the rightmost untrusted hop from a trusted peer only", () => {
  const trusted = parseTrustedProxies("127.0.0.1,10.0.0.0/8");
  const cases: [string, Record<string, string>, string][] = [
    // Untrusted peer: headers are ignored, whatever they say.
    ["192.0.2.9", { "X-Forwarded-For": "203.0.113.7" }, "192.0.2.9"],
    ["192.0.2.9", { "Forwarded": "for=203.0.113.7" }, "192.0.2.9"],
    // Trusted peer without headers.
    ["127.0.0.1", {}, "127.0.0.1"],
    ["127.0.0.1", { "X-Forwarded-For": "203.0.113.7" }, "203.0.113.7"],
    // A client-forged entry left of the real one is never used.
    ["127.0.0.1", { "X-Forwarded-For": "1.1.1.1, 203.0.113.7" }, "203.0.113.7"],
    ["127.0.0.1", { "X-Forwarded-For": "1.1.1.1, 203.0.113.7, 10.0.0.5" }, "203.0.113.7"],
    // Every hop trusted: the leftmost one.
    ["127.0.0.1", { "X-Forwarded-For": "10.0.0.6, 10.0.0.5" }, "10.0.0.6"],
    // Garbage stops at the last trusted hop.
    ["127.0.0.1", { "X-Forwarded-For": "203.0.113.7, garbage, 10.0.0.5" }, "10.0.0.5"],
    ["127.0.0.1", { "X-Forwarded-For": "" }, "127.0.0.1"],
    ["127.0.0.1", { "X-Forwarded-For": "203.0.113.7:5555" }, "203.0.113.7"],
    // RFC 7239, only when there is no X-Forwarded-For.
    ["127.0.0.1", { "Forwarded": "for=192.0.2.60;proto=http;by=203.0.113.43" }, "192.0.2.60"],
    ["127.0.0.1", { "Forwarded": 'for="[2001:db8:cafe::17]:4711"' }, "2001:db8:cafe::17"],
    ["127.0.0.1", { "Forwarded": 'For="[2001:db8::1]"' }, "2001:db8::1"],
    ["127.0.0.1", { "Forwarded": "for=1.1.1.1, for=192.0.2.43, for=10.0.0.1" }, "192.0.2.43"],
    ["127.0.0.1", { "Forwarded": "for=unknown" }, "127.0.0.1"],
    ["127.0.0.1", { "Forwarded": 'for=_hidden, for="a,b";by=x' }, "127.0.0.1"],
    ["127.0.0.1", { "Forwarded": "proto=https" }, "127.0.0.1"],
    [
      "127.0.0.1",
      { "Forwarded": "for=192.0.2.1", "X-Forwarded-For": "203.0.113.7" },
      "203.0.113.7",
    ],
    // IPv4-mapped peers match IPv4 entries.
    ["::ffff:127.0.0.1", { "X-Forwarded-For": "203.0.113.7" }, "203.0.113.7"],
  ];
  for (const [peer, headers, expected] of cases) {
    assert.equal(
      clientAddress(peer, new Headers(headers), trusted),
      expected,
      `${peer} ${JSON.stringify(headers)}`,
    );
  }
  assert.equal(
    clientAddress("127.0.0.1", new Headers({ "X-Forwarded-For": "203.0.113.7" }), undefined),
    "127.0.0.1",
  );
});

Deno.test("logPeer() names the forwarded client, else the connection's ip:port", () => {
  const cases: [string, string, string][] = [
    ["127.0.0.1:5000", "127.0.0.1", "127.0.0.1:5000"],
    ["127.0.0.1:5000", "203.0.113.7", "203.0.113.7"],
    ["[::1]:5000", "::1", "[::1]:5000"],
    ["/run/ws.sock", "/run/ws.sock", "/run/ws.sock"],
    // Peers that are not the client address's own host:port: the short cut must leave them be.
    ["127.0.0.1:123456", "127.0.0.1", "127.0.0.1"],
    ["::1:5000", "::1", "::1"],
    ["unknown:0", "unknown", "unknown"],
    ["127.0.0.1:", "127.0.0.1", "127.0.0.1"],
    ["127.0.0.1:50x0", "127.0.0.1", "127.0.0.1"],
    ["127.0.0.10:5000", "127.0.0.1", "127.0.0.1"],
    ["300.0.0.1:5000", "300.0.0.1", "300.0.0.1"],
  ];
  // Twice and in both orders: the last IPv4 host is remembered between calls.
  for (const round of [cases, [...cases].reverse(), cases]) {
    for (const [peer, client, expected] of round) {
      assert.equal(logPeer({ peer, clientAddress: client }), expected, `${peer} ${client}`);
    }
  }
});
