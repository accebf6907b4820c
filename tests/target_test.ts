import assert from "node:assert/strict";
import { isIP } from "node:net";
import { describeTarget, dialTarget, isIpLiteral, preferIpv4 } from "../src/targets/target.ts";
import { TargetError } from "../src/errors.ts";
import { holdBlackHole, startEcho } from "./_helpers.ts";

const NO_TLS = { enabled: false, ca: undefined, insecure: false } as const;

Deno.test("preferIpv4() puts IPv4 addresses first and keeps the order within each family", () => {
  const addresses = [
    { address: "::1", family: 6 },
    { address: "10.0.0.2", family: 4 },
    { address: "fe80::1", family: 6 },
    { address: "10.0.0.1", family: 4 },
  ];
  assert.deepEqual(preferIpv4(addresses).map((entry) => entry.address), [
    "10.0.0.2",
    "10.0.0.1",
    "::1",
    "fe80::1",
  ]);
});

Deno.test("isIpLiteral() answers as net.isIP whichever host it was asked about before", () => {
  const hosts = [
    "127.0.0.1",
    "localhost",
    "::1",
    "127.0.0.1",
    "127.0.0.1",
    "",
    "300.1.1.1",
    "::1x",
  ];
  for (const order of [hosts, [...hosts].reverse(), hosts]) {
    for (const host of order) assert.equal(isIpLiteral(host), isIP(host) !== 0, host);
  }
});

Deno.test("describeTarget() brackets IPv6 hosts and shows socket paths", () => {
  assert.equal(describeTarget({ kind: "tcp", host: "::1", port: 5900 }), "[::1]:5900");
  assert.equal(describeTarget({ kind: "tcp", host: "vnc", port: 5900 }), "vnc:5900");
  assert.equal(describeTarget({ kind: "unix", path: "/run/vnc.sock" }), "/run/vnc.sock");
});

Deno.test("dialTarget() resolves a host name and connects", async () => {
  await using echo = startEcho();
  const connection = await dialTarget(
    { kind: "tcp", host: "localhost", port: echo.port },
    { timeoutMs: 5000, tls: NO_TLS },
  );
  await connection.write(new TextEncoder().encode("ping"));
  const buffer = new Uint8Array(4);
  assert.equal(await connection.read(buffer), 4);
  assert.equal(new TextDecoder().decode(buffer), "ping");
  connection.close();
});

Deno.test("dialTarget() to an IP that does not answer gives up at the timeout and says so", async () => {
  await using held = await holdBlackHole();
  const started = performance.now();
  const error = await dialTarget(
    { kind: "tcp", host: "127.0.0.1", port: held.port },
    { timeoutMs: 300, tls: NO_TLS },
  ).then(() => undefined, (failure) => failure);
  const waited = performance.now() - started;
  assert.ok(error instanceof TargetError, String(error));
  assert.equal(error.message, "timed out after 0.3 s");
  assert.ok(waited >= 300 && waited < 1300, `gave up after ${waited} ms`);
});
