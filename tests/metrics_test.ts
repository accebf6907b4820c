import assert from "node:assert/strict";
import {
  connectClient,
  holdPort,
  type ProxyProcess,
  rawExchange,
  runMain,
  startProxy,
  startTarget,
  upgradeRequest,
  within,
} from "./_helpers.ts";
import { promtool, sample, scrape, scrapeUntil } from "./_metrics_helpers.ts";
import { parseMetricsAddress } from "../src/cli.ts";
import { HANDSHAKE_FAILURES, SESSION_ENDS, TLS_FAILURES } from "../src/ops/metrics.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const GREETING = encoder.encode("hello, "); // 7 bytes the target sends first

/**
 * Starts the proxy with `options` and `--metrics 127.0.0.1:0`, to `port` (none: the options name
 * the targets); returns it and the metrics URL.
 */
async function startWithMetrics(
  port: number | undefined,
  options: string[] = [],
): Promise<{ proxy: ProxyProcess; base: string }> {
  const target = port === undefined ? [] : [`127.0.0.1:${port}`];
  const proxy = await startProxy([
    ...options,
    "--metrics",
    "127.0.0.1:0",
    "127.0.0.1:0",
    ...target,
  ]);
  const match = await proxy.waitFor(/ - Metrics on (127\.0\.0\.1:\d+) \(\/metrics, \/healthz\)/);
  return { proxy, base: `http://${match[1]}` };
}

Deno.test("--metrics counts a session's exact bytes both ways, and promtool accepts the text", async () => {
  await using target = startTarget(async (conn) => {
    await conn.write(GREETING);
    await conn.readable.pipeTo(conn.writable);
  });
  const { proxy, base } = await startWithMetrics(target.port);
  await using _proxy = proxy;

  const health = await fetch(`${base}/healthz`);
  assert.equal(health.status, 200);
  assert.equal(await health.text(), "ok\n");

  const before = await scrape(base);
  assert.equal(sample(before, "websockify_sessions_active"), 0);
  assert.equal(sample(before, "websockify_sessions_total"), 0);
  assert.equal(sample(before, 'websockify_connections_refused_total{reason="max_connections"}'), 0);
  assert.equal(sample(before, 'websockify_connections_refused_total{reason="per_ip"}'), 0);
  for (const reason of HANDSHAKE_FAILURES) {
    const series = `websockify_handshake_failures_total{reason="${reason}"}`;
    assert.equal(sample(before, series), 0, `${series} is published from the start`);
  }
  for (const reason of SESSION_ENDS) {
    const series = `websockify_sessions_ended_total{reason="${reason}"}`;
    assert.equal(sample(before, series), 0, `${series} is published from the start`);
  }
  // docs/deploy.md's table names exactly the series published, and every refusal reason.
  const guide = await Deno.readTextFile(new URL("../docs/deploy.md", import.meta.url));
  const documented = [...guide.matchAll(/^\| `(websockify_\w+)`/gm)].map((m) => m[1]).sort();
  const published = [...before.matchAll(/^# TYPE (websockify_\w+)/gm)].map((m) => m[1]).sort();
  assert.deepEqual(documented, published);
  for (const reason of [...HANDSHAKE_FAILURES, ...TLS_FAILURES, ...SESSION_ENDS]) {
    assert.ok(guide.includes(`\`${reason}\``), reason);
  }

  const client = await connectClient(`ws://${proxy.address}/`);
  const payload = new Uint8Array(3000).map((_, index) => index % 251);
  assert.deepEqual(await client.receiveBytes(GREETING.length), GREETING);
  client.ws.send(payload.subarray(0, 1000));
  client.ws.send(payload.subarray(1000));
  assert.deepEqual(await client.receiveBytes(payload.length), payload);
  const during = await scrape(base);
  assert.equal(sample(during, "websockify_sessions_active"), 1);
  client.ws.close(1000);
  await within(client.closed, 10000, "client close");

  // Refusals: a malformed upgrade, a wrong method, and a target that is not there.
  await rawExchange(
    proxy.port,
    upgradeRequest("/", []).replace("Upgrade: websocket", "Upgrade: x"),
  );
  await rawExchange(proxy.port, upgradeRequest("/").replace("GET", "POST"));
  // Requests that are no upgrade at all: plain (as through a front proxy that drops the Upgrade
  // header), unreadable (node:http's 400), and with too large headers (431).
  const answers = await Promise.all([
    "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "NOT HTTP AT ALL\r\n\r\n",
    `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(20_000)}\r\n\r\n`,
  ].map(async (request) =>
    decoder.decode(await rawExchange(proxy.port, request)).split("\r\n")[0]
  ));
  assert.deepEqual(answers, [
    "HTTP/1.1 405 Method Not Allowed",
    "HTTP/1.1 400 Bad request syntax",
    "HTTP/1.1 431 Request Header Fields Too Large",
  ]);

  const text = await scrapeUntil(base, "websockify_sessions_active", 0);
  assert.equal(sample(text, "websockify_sessions_active"), 0);
  assert.equal(sample(text, "websockify_sessions_total"), 1);
  assert.equal(sample(text, 'websockify_bytes_total{direction="client_to_target"}'), 3000);
  assert.equal(
    sample(text, 'websockify_bytes_total{direction="target_to_client"}'),
    3000 + GREETING.length,
  );
  assert.equal(sample(text, 'websockify_handshake_failures_total{reason="bad_request"}'), 3);
  assert.equal(sample(text, 'websockify_handshake_failures_total{reason="method"}'), 1);
  assert.equal(sample(text, 'websockify_handshake_failures_total{reason="not_upgrade"}'), 1);
  assert.equal(sample(text, "websockify_session_duration_seconds_count"), 1);
  assert.equal(sample(text, 'websockify_sessions_ended_total{reason="client"}'), 1);
  assert.equal(sample(text, "websockify_target_connect_failures_total"), 0);
  assert.equal(sample(text, "websockify_auth_failures_total"), 0);
  assert.ok(sample(text, "process_resident_memory_bytes") > 1e6);
  assert.ok(sample(text, "process_open_fds") > 0);
  assert.ok(sample(text, "nodejs_eventloop_lag_seconds") >= 0);

  const checked = await promtool(["check", "metrics"], text);
  assert.equal(checked.code, 0, checked.output);
});

Deno.test("--metrics counts target connect failures", async () => {
  await using held = await holdPort("refuse");
  const { proxy, base } = await startWithMetrics(held.port);
  await using _proxy = proxy;
  const client = await connectClient(`ws://${proxy.address}/`);
  assert.equal((await within(client.closed, 10000, "close")).code, 1011);
  const text = await scrapeUntil(base, "websockify_target_connect_failures_total", 1);
  assert.equal(sample(text, "websockify_target_connect_failures_total"), 1);
  assert.equal(sample(text, "websockify_sessions_total"), 0);
});

Deno.test("/healthz answers 503 from the start of a SIGTERM drain while a session is open", async () => {
  await using target = startTarget();
  const { proxy, base } = await startWithMetrics(target.port);
  await using _proxy = proxy;
  assert.equal((await fetch(`${base}/healthz`)).status, 200);

  // A raw client that never answers the close frame keeps the drain going (up to its grace).
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  await conn.write(encoder.encode(upgradeRequest("/")));
  const buffer = new Uint8Array(4096);
  let head = "";
  while (!head.includes("\r\n\r\n")) {
    const count = await within(conn.read(buffer), 10000, "101 response");
    assert.ok(count !== null);
    head += decoder.decode(buffer.subarray(0, count));
  }
  assert.match(head, /^HTTP\/1\.1 101/);
  await target.nextConnection();

  proxy.kill("SIGTERM");
  await proxy.waitFor(/Got SIGTERM/);
  const draining = await fetch(`${base}/healthz`);
  assert.equal(draining.status, 503);
  assert.equal(await draining.text(), "draining\n");

  const count = await within(conn.read(buffer), 10000, "close frame");
  assert.ok(count !== null && count >= 4);
  assert.equal(buffer[0], 0x88);
  assert.equal(((buffer[2] ?? 0) << 8) | (buffer[3] ?? 0), 1001);
  conn.close();
  assert.equal((await proxy.status).code, 0);
});

Deno.test("--metrics on a port in use exits 1 naming the port", async () => {
  await using held = await holdPort("listen");
  const result = await runMain(["--metrics", String(held.port), "127.0.0.1:0", "127.0.0.1:9"]);
  assert.equal(result.code, 1);
  assert.match(
    result.stderr,
    new RegExp(`Metrics port 127\\.0\\.0\\.1:${held.port} is in use: stop the other process`),
  );
});

for (const value of ["abc", "70000", "127.0.0.1:", "-1"]) {
  Deno.test(`--metrics '${value}' is a usage error (exit 2)`, async () => {
    const result = await runMain(["--metrics", value, "127.0.0.1:0", "127.0.0.1:9"]);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /--metrics takes \[HOST:\]PORT with a port from 0 to 65535/);
  });
}

Deno.test("--metrics with --workers 2 answers the sum over both processes", async () => {
  await using target = startTarget();
  const { proxy, base } = await startWithMetrics(target.port, ["--workers", "2"]);
  await using _proxy = proxy;
  // The worker announces its own metrics listener once it has started.
  const started = await scrapeUntil(base, "websockify_processes", 2);
  assert.equal(sample(started, "websockify_processes"), 2);

  // The kernel spreads new connections over both processes (SO_REUSEPORT).
  const sessions = 8;
  for (let index = 0; index < sessions; index++) {
    const client = await connectClient(`ws://${proxy.address}/`);
    client.ws.send(new Uint8Array(100).fill(index));
    assert.deepEqual(await client.receiveBytes(100), new Uint8Array(100).fill(index));
    client.ws.close(1000);
    await within(client.closed, 10000, "client close");
  }
  const text = await scrapeUntil(base, "websockify_sessions_total", sessions);
  assert.equal(sample(text, "websockify_sessions_total"), sessions);
  assert.equal(
    sample(text, 'websockify_bytes_total{direction="client_to_target"}'),
    100 * sessions,
  );
  assert.equal(
    sample(text, 'websockify_bytes_total{direction="target_to_client"}'),
    100 * sessions,
  );
  const checked = await promtool(["check", "metrics"], text);
  assert.equal(checked.code, 0, checked.output);
});

Deno.test("--metrics counts an origin refusal", async () => {
  await using target = startTarget();
  const { proxy, base } = await startWithMetrics(target.port, ["--origin", "http://good.example"]);
  await using _proxy = proxy;
  const answer = await rawExchange(
    proxy.port,
    upgradeRequest("/", ["Origin: http://bad.example"]),
  );
  assert.match(decoder.decode(answer), /^HTTP\/1\.1 403/);
  const text = await scrape(base);
  assert.equal(sample(text, 'websockify_handshake_failures_total{reason="origin"}'), 1);
  assert.equal(sample(text, "websockify_auth_failures_total"), 0);
});

Deno.test("--metrics counts auth and token refusals", async () => {
  const directory = await Deno.makeTempDir();
  try {
    await using target = startTarget();
    await Deno.writeTextFile(`${directory}/tokens`, `good: 127.0.0.1:${target.port}\n`);
    const { proxy, base } = await startWithMetrics(undefined, [
      "--token-plugin",
      "ReadOnlyTokenFile",
      "--token-source",
      `${directory}/tokens`,
      "--auth-plugin",
      "BasicHTTPAuth",
      "--auth-source",
      "user:secret",
    ]);
    await using _proxy = proxy;
    const unknown = await rawExchange(proxy.port, upgradeRequest("/?token=bad"));
    assert.match(decoder.decode(unknown), /^HTTP\/1\.1 404/);
    const unauthorized = await rawExchange(proxy.port, upgradeRequest("/?token=good"));
    assert.match(decoder.decode(unauthorized), /^HTTP\/1\.1 401/);
    const text = await scrape(base);
    assert.equal(sample(text, 'websockify_handshake_failures_total{reason="token"}'), 1);
    assert.equal(sample(text, 'websockify_handshake_failures_total{reason="auth"}'), 1);
    assert.equal(sample(text, "websockify_auth_failures_total"), 1);
  } finally {
    await Deno.remove(directory, { recursive: true });
  }
});

Deno.test("parseMetricsAddress() takes PORT, HOST:PORT and [IPv6]:PORT", () => {
  assert.equal(parseMetricsAddress(undefined), undefined);
  assert.deepEqual(parseMetricsAddress("9100"), { host: "127.0.0.1", port: 9100 });
  assert.deepEqual(parseMetricsAddress("0.0.0.0:9100"), { host: "0.0.0.0", port: 9100 });
  assert.deepEqual(parseMetricsAddress("[::1]:0"), { host: "::1", port: 0 });
  assert.throws(() => parseMetricsAddress(":9100"), /--metrics needs a host before ':'/);
});

Deno.test("--metrics counts clients closed by --header-timeout: silent ones apart from stalled requests", async () => {
  await using target = startTarget();
  const root = await Deno.makeTempDir();
  await Deno.writeTextFile(`${root}/a.txt`, "a");
  const { proxy, base } = await startWithMetrics(target.port, [
    "--header-timeout",
    "1",
    "--web",
    root,
  ]);
  await using _proxy = proxy;
  try {
    // Sends nothing (a preconnect); sends half a request; a kept-alive --web connection whose
    // second (pipelined) request stalls (node:http's own header timer, not the listener's).
    const exchanges = await Promise.all([
      new Uint8Array(0),
      "GET / HTTP/1.1\r\nHo",
      "GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\nGET /a.txt HTTP/1.1\r\nHo",
    ].map((request) => rawExchange(proxy.port, request, { ms: 8000, mustClose: true })));
    const [silent, stalled, keptAlive] = exchanges.map((bytes) => decoder.decode(bytes));
    assert.equal(silent, "", "the silent connection got an answer");
    assert.equal(stalled, "", "the stalled request got an answer");
    assert.match(keptAlive!, /^HTTP\/1\.1 200 /);
    assert.equal(keptAlive!.match(/HTTP\/1\.1 /g)?.length, 1, "the stalled request got an answer");
    const text = await scrapeUntil(
      base,
      'websockify_handshake_failures_total{reason="header_timeout"}',
      2,
    );
    assert.equal(sample(text, 'websockify_handshake_failures_total{reason="header_timeout"}'), 2);
    assert.equal(sample(text, 'websockify_handshake_failures_total{reason="no_request"}'), 1);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("--metrics counts how sessions ended: the target closing, --inactivity-timeout", async () => {
  // The target closes the first connection after its greeting and echoes on the second.
  let accepted = 0;
  await using target = startTarget(async (conn) => {
    await conn.write(GREETING);
    if (accepted++ === 0) return conn.close();
    await conn.readable.pipeTo(conn.writable);
  });
  const { proxy, base } = await startWithMetrics(target.port, ["--inactivity-timeout", "0.3"]);
  await using _proxy = proxy;
  const closedByTarget = await connectClient(`ws://${proxy.address}/`);
  assert.equal((await within(closedByTarget.closed, 5000, "the target's close")).code, 1000);
  const idle = await connectClient(`ws://${proxy.address}/`);
  assert.deepEqual(await within(idle.closed, 5000, "the inactivity close"), {
    code: 1001,
    reason: "Idle for 0.3 s",
  });
  const series = (reason: string) => `websockify_sessions_ended_total{reason="${reason}"}`;
  const text = await scrapeUntil(base, series("inactivity"), 1);
  assert.equal(sample(text, series("target")), 1);
  assert.equal(sample(text, series("inactivity")), 1);
  assert.equal(sample(text, series("client")), 0);
  assert.equal(sample(text, "websockify_sessions_active"), 0);
});
