import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
// @ts-types="npm:@types/ws@8.18.2"
import { WebSocket } from "ws";
import { runMain } from "./_helpers.ts";
import { makeTestPki, spawnProxy, startEchoServer, type TestPki } from "./_tls_helpers.ts";
import { sample, scrape, scrapeUntil } from "./_metrics_helpers.ts";
import { TLS_FAILURES } from "../src/ops/metrics.ts";
import { launchChromium } from "./_novnc_helpers.ts";

const pki: TestPki = await makeTestPki();
const encoder = new TextEncoder();
const read = (path: string) => Deno.readTextFileSync(path);

interface ClientOptions {
  cert?: string;
  key?: string;
  ca?: string;
  headers?: Record<string, string>;
}

type Result = { echoed: string } | { status: number } | { closed: number } | { error: string };

/** Opens a WebSocket, sends "ping" and reports the echo, the HTTP status, the close or error. */
function exchange(url: string, options: ClientOptions = {}): Promise<Result> {
  return new Promise<Result>((resolve) => {
    const ws = new WebSocket(url, ["binary"], {
      ca: read(options.ca ?? pki.caCert),
      ...(options.cert ? { cert: read(options.cert), key: read(options.key!) } : {}),
      ...(options.headers ? { headers: options.headers } : {}),
      handshakeTimeout: 5000,
    });
    const timer = setTimeout(() => done({ error: "timed out" }), 8000);
    const done = (result: Result) => {
      clearTimeout(timer);
      ws.removeAllListeners();
      ws.on("error", () => {});
      ws.terminate();
      resolve(result);
    };
    ws.on("open", () => ws.send(new TextEncoder().encode("ping")));
    ws.on("message", (data: Buffer) => done({ echoed: data.toString() }));
    ws.on("unexpected-response", (_request, response) => done({ status: response.statusCode! }));
    ws.on("close", (code) => done({ closed: code }));
    ws.on("error", (error) => done({ error: error.message }));
  });
}

const TLS_ARGS = ["--cert", pki.serverCert, "--key", pki.serverKey];

Deno.test("main.ts serves wss:// and ws:// on one port and logs which", async () => {
  await using echo = await startEchoServer();
  await using proxy = await spawnProxy([...TLS_ARGS, "127.0.0.1:0", `127.0.0.1:${echo.port}`]);
  await proxy.waitFor(/\n {2}- SSL\/TLS support\n/);
  assert.deepEqual(await exchange(`wss://localhost:${proxy.port}/`), { echoed: "ping" });
  await proxy.waitFor(/SSL\/TLS \(wss:\/\/\) WebSocket connection/);
  assert.deepEqual(await exchange(`ws://127.0.0.1:${proxy.port}/`), { echoed: "ping" });
  await proxy.waitFor(/Plain non-SSL \(ws:\/\/\) WebSocket connection/);
});

Deno.test("main.ts without a cert file says so and refuses TLS clients", async () => {
  await using echo = await startEchoServer();
  const cert = `${pki.dir}/self.pem`;
  await using proxy = await spawnProxy(["--cert", cert, "127.0.0.1:0", `127.0.0.1:${echo.port}`]);
  await proxy.waitFor(/No SSL\/TLS support \(no cert file\)/);
  const result = await exchange(`wss://localhost:${proxy.port}/`);
  assert.ok("error" in result, JSON.stringify(result));
  await proxy.waitFor(new RegExp(`SSL connection but '${cert}' not found`));
});

Deno.test("main.ts --ssl-only refuses plain clients without a response", async () => {
  await using echo = await startEchoServer();
  await using proxy = await spawnProxy([
    ...TLS_ARGS,
    "--ssl-only",
    "127.0.0.1:0",
    `127.0.0.1:${echo.port}`,
  ]);
  await proxy.waitFor(/\n {2}- Deny non-SSL\/TLS connections\n/);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  await conn.write(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  const answer = await conn.read(new Uint8Array(64)).catch(() => null);
  conn.close();
  assert.equal(answer, null, "a plain client got a response");
  await proxy.waitFor(/non-SSL connection received but disallowed/);
  assert.deepEqual(await exchange(`wss://localhost:${proxy.port}/`), { echoed: "ping" });
});

Deno.test("main.ts --verify-client accepts CA-signed clients and refuses others", async () => {
  await using echo = await startEchoServer();
  await using proxy = await spawnProxy([
    ...TLS_ARGS,
    "--verify-client",
    "--cafile",
    pki.caCert,
    "127.0.0.1:0",
    `127.0.0.1:${echo.port}`,
  ]);
  const url = `wss://localhost:${proxy.port}/`;
  assert.deepEqual(await exchange(url, { cert: pki.aliceCert, key: pki.aliceKey }), {
    echoed: "ping",
  });
  assert.ok("error" in await exchange(url), "a client without a certificate got through");
  const rogue = await exchange(url, { cert: pki.rogueAliceCert, key: pki.rogueAliceKey });
  assert.ok(!("echoed" in rogue), "a self-signed CN=alice got through");
  await proxy.waitFor(/Client certificate refused: Client certificate 'CN=alice' is not issued/);
  const plain = await exchange(`ws://127.0.0.1:${proxy.port}/`);
  assert.deepEqual(plain, { echoed: "ping" }, "without --ssl-only plain clients still work");
});

Deno.test("--metrics counts connections that end at the TLS layer, by reason, and logs why", async () => {
  await using echo = await startEchoServer();
  const metricsArgs = ["--metrics", "127.0.0.1:0", "127.0.0.1:0", `127.0.0.1:${echo.port}`];
  await using proxy = await spawnProxy([
    ...TLS_ARGS,
    "--verify-client",
    "--cafile",
    pki.caCert,
    "--ssl-only",
    ...metricsArgs,
  ]);
  const base = `http://${(await proxy.waitFor(/ - Metrics on (127\.0\.0\.1:\d+) /))[1]}`;
  const series = (reason: string) => `websockify_tls_failures_total{reason="${reason}"}`;
  const before = await scrape(base);
  for (const reason of TLS_FAILURES) assert.equal(sample(before, series(reason)), 0, reason);

  const url = `wss://localhost:${proxy.port}/`;
  // Refused client certificates: none at all, and a self-signed one with a listed name.
  assert.ok("error" in await exchange(url));
  await proxy.waitFor(/Client certificate refused: the client sent none \(--verify-client\)/);
  assert.ok("error" in await exchange(url, { cert: pki.rogueAliceCert, key: pki.rogueAliceKey }));
  // A client that does not trust the proxy's certificate ends the handshake itself.
  assert.ok("error" in await exchange(url, { ca: pki.otherCaCert }));
  await proxy.waitFor(/TLS handshake failed: the client does not trust the certificate/);
  // A TLS record of garbage, and a plain request under --ssl-only.
  for (const bytes of [[0x16, 0x03, 0x01, 0x00, 0x04, 1, 2, 3, 4], [...encoder.encode("GET / ")]]) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    await conn.write(new Uint8Array(bytes));
    assert.equal(await conn.read(new Uint8Array(64)).catch(() => null), null);
    conn.close();
  }
  assert.deepEqual(await exchange(url, { cert: pki.aliceCert, key: pki.aliceKey }), {
    echoed: "ping",
  });

  const text = await scrapeUntil(base, series("handshake"), 2);
  assert.equal(sample(text, series("client_certificate")), 2);
  assert.equal(sample(text, series("handshake")), 2);
  assert.equal(sample(text, series("not_tls")), 1);
  assert.equal(sample(text, series("no_certificate")), 0);
  assert.equal(sample(text, "websockify_sessions_total"), 1);

  // TLS on a proxy whose certificate file is missing.
  await using bare = await spawnProxy(["--cert", `${pki.dir}/missing.pem`, ...metricsArgs]);
  const bareBase = `http://${(await bare.waitFor(/ - Metrics on (127\.0\.0\.1:\d+) /))[1]}`;
  assert.ok("error" in await exchange(`wss://localhost:${bare.port}/`));
  assert.equal(sample(await scrape(bareBase), series("no_certificate")), 1);
});

Deno.test("main.ts survives a client that stalls in the TLS handshake", async () => {
  await using echo = await startEchoServer();
  await using proxy = await spawnProxy([
    ...TLS_ARGS,
    "--header-timeout",
    "1",
    "127.0.0.1:0",
    `127.0.0.1:${echo.port}`,
  ]);
  const stalled = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  try {
    await stalled.write(new Uint8Array([0x16, 0x03, 0x01]));
    const started = performance.now();
    assert.deepEqual(await exchange(`wss://localhost:${proxy.port}/`), { echoed: "ping" });
    assert.ok(performance.now() - started < 1000, "the good client waited for the stalled one");
    const closed = await Promise.race([
      stalled.read(new Uint8Array(8)).catch(() => null),
      new Promise((resolve) => setTimeout(() => resolve("still open"), 5000)),
    ]);
    assert.equal(closed, null, "the stalled client was not closed by --header-timeout");
  } finally {
    stalled.close();
  }
});

Deno.test("main.ts --ssl-target reaches a target signed by --ssl-target-ca", async () => {
  await using echo = await startEchoServer({ cert: pki.serverCert, key: pki.serverKey });
  await using proxy = await spawnProxy([
    "--ssl-target",
    "--ssl-target-ca",
    pki.caCert,
    "127.0.0.1:0",
    `localhost:${echo.port}`,
  ]);
  await proxy.waitFor(/ \(using SSL\)\n/);
  assert.deepEqual(await exchange(`ws://127.0.0.1:${proxy.port}/`), { echoed: "ping" });
});

Deno.test("main.ts --ssl-target refuses an unverifiable target with close 1011", async () => {
  await using echo = await startEchoServer({ cert: pki.otherServerCert, key: pki.otherServerKey });
  await using proxy = await spawnProxy([
    "--ssl-target",
    "--ssl-target-ca",
    pki.caCert,
    "127.0.0.1:0",
    `localhost:${echo.port}`,
  ]);
  assert.deepEqual(await exchange(`ws://127.0.0.1:${proxy.port}/`), { closed: 1011 });
  await proxy.waitFor(/UnknownIssuer.*--ssl-target-ca FILE/);
});

Deno.test("main.ts --ssl-target-insecure reaches a self-signed target and warns", async () => {
  await using echo = await startEchoServer({ cert: pki.otherServerCert, key: pki.otherServerKey });
  await using proxy = await spawnProxy([
    "--ssl-target",
    "--ssl-target-insecure",
    "127.0.0.1:0",
    `localhost:${echo.port}`,
  ]);
  await proxy.waitFor(/WARNING: --ssl-target-insecure: target TLS certificates are NOT/);
  assert.deepEqual(await exchange(`ws://127.0.0.1:${proxy.port}/`), { echoed: "ping" });
});

Deno.test("main.ts reloads a renewed certificate on SIGHUP and keeps it on a bad one", async () => {
  await using echo = await startEchoServer();
  const cert = `${pki.dir}/sighup.pem`;
  const key = `${pki.dir}/sighup.key`;
  await Deno.copyFile(pki.serverCert, cert);
  await Deno.copyFile(pki.serverKey, key);
  await using proxy = await spawnProxy([
    "--cert",
    cert,
    "--key",
    key,
    "127.0.0.1:0",
    `127.0.0.1:${echo.port}`,
  ]);
  // Write both files in one go so the file watcher cannot see half a renewal.
  await Deno.writeTextFile(key + ".new", read(pki.otherServerKey));
  await Deno.writeTextFile(cert + ".new", read(pki.otherServerCert));
  await Deno.rename(key + ".new", key);
  await Deno.rename(cert + ".new", cert);
  proxy.kill("SIGHUP");
  await proxy.waitFor(/Reloaded TLS certificate/);
  const url = `wss://localhost:${proxy.port}/`;
  assert.deepEqual(await exchange(url, { ca: pki.otherCaCert }), { echoed: "ping" });
  await Deno.writeTextFile(cert, "not a certificate");
  proxy.kill("SIGHUP");
  await proxy.waitFor(/TLS certificate reload failed, still serving the previous certificate/);
  assert.deepEqual(await exchange(url, { ca: pki.otherCaCert }), { echoed: "ping" });
  const fingerprint = new X509Certificate(read(pki.otherServerCert)).fingerprint256;
  assert.ok(fingerprint.length > 0);
});

async function assertStartupError(args: string[], pattern: RegExp): Promise<void> {
  const { code, stderr } = await runMain([...args, "127.0.0.1:0", "127.0.0.1:9"]);
  assert.equal(code, 2, stderr);
  assert.match(stderr, pattern);
  assert.doesNotMatch(stderr, /Listen on/);
}

Deno.test("main.ts exits 2 with a clear message for bad TLS files and options", async () => {
  const missing = `${pki.dir}/missing.pem`;
  await Promise.all([
    assertStartupError(
      ["--cert", missing, "--ssl-only"],
      new RegExp(`error: SSL only and '${missing}' not found: `),
    ),
    assertStartupError(["--cert", pki.serverCert, "--key", pki.otherKey], /does not match key/),
    assertStartupError(
      ["--cert", pki.serverCert, "--key", pki.serverKeyEncrypted],
      /is encrypted: pass its password with --key-password/,
    ),
    assertStartupError([...TLS_ARGS, "--ssl-ciphers", "HIGH"], /--ssl-ciphers 'HIGH' cannot/),
    assertStartupError([...TLS_ARGS, "--verify-client"], /--verify-client needs --cafile/),
    assertStartupError(
      ["--ssl-target", "--ssl-target-ca", missing],
      /Cannot read --ssl-target-ca '.*missing\.pem'/,
    ),
  ]);
});

Deno.test("Chromium refusing the proxy's certificate is logged at info with what to do, and counted", async () => {
  // The message was written from Node's client (unknown CA); a browser is who meets it in
  // practice: Chromium ends the handshake with a certificate_unknown alert.
  await using echo = await startEchoServer();
  await using proxy = await spawnProxy([
    ...TLS_ARGS,
    "--metrics",
    "127.0.0.1:0",
    "127.0.0.1:0",
    `127.0.0.1:${echo.port}`,
  ]);
  const base = `http://${(await proxy.waitFor(/ - Metrics on (127\.0\.0\.1:\d+) /))[1]}`;
  await using chromium = await launchChromium();
  const page = await chromium.browser.newPage();
  const outcome = await page.evaluate((port) =>
    new Promise<string>((resolve) => {
      const socket = new WebSocket(`wss://localhost:${port}/`);
      socket.onopen = () => resolve("open");
      socket.onclose = (event) => resolve(`close ${event.code}`);
    }), proxy.port);
  assert.equal(
    outcome,
    "close 1006",
    "Chromium opened a WebSocket to a certificate it cannot trust",
  );
  await proxy.waitFor(
    /TLS handshake failed: the client does not trust the certificate \(.*\): install its CA/,
  );
  const series = 'websockify_tls_failures_total{reason="handshake"}';
  assert.equal(sample(await scrapeUntil(base, series, 1), series), 1);
});
