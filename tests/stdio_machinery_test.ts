/**
 * `--stdio` sessions run through the same machinery as TCP sessions: `--origin`, the admission
 * limits, `--metrics` (sessions and exact bytes) and the heartbeat apply to programs unchanged.
 */

import assert from "node:assert/strict";
import {
  connectClient,
  randomBytes,
  rawExchange,
  startProxy,
  upgradeRequest,
  within,
} from "./_helpers.ts";
import { sample, scrape } from "./_metrics_helpers.ts";

const decoder = new TextDecoder();

Deno.test("--stdio with --origin, --max-connections, --metrics and --heartbeat", async () => {
  const proxy = await startProxy([
    "--stdio",
    "--origin",
    "http://good.example",
    "--max-connections",
    "1",
    "--heartbeat",
    "1",
    "--metrics",
    "127.0.0.1:0",
    "127.0.0.1:0",
    "--",
    "cat",
  ]);
  await using _proxy = proxy;
  const match = await proxy.waitFor(/ - Metrics on (127\.0\.0\.1:\d+) /);
  const base = `http://${match[1]}`;
  const url = `ws://127.0.0.1:${proxy.port}/`;

  // --origin refuses before any program starts.
  const refused = await rawExchange(
    proxy.port,
    upgradeRequest("/", ["Origin: http://bad.example"]),
  );
  assert.match(decoder.decode(refused), /^HTTP\/1\.1 403/);

  const client = await connectClient(url, { headers: { Origin: "http://good.example" } });
  const data = randomBytes(5000);
  client.ws.send(data);
  assert.deepEqual(await client.receiveBytes(data.length), data);

  // The one allowed session is open: a second upgrade gets 503 with Retry-After.
  const second = decoder.decode(
    await rawExchange(proxy.port, upgradeRequest("/", ["Origin: http://good.example"])),
  );
  assert.match(second, /^HTTP\/1\.1 503/);
  assert.match(second, /\r\nRetry-After: 1\r\n/i);

  // The heartbeat pings every second; the client (ws answers pings) stays connected past 2 s.
  await new Promise((resolve) => setTimeout(resolve, 2500));
  client.ws.send(data);
  assert.deepEqual(await client.receiveBytes(data.length), data);

  const text = await scrape(base);
  assert.equal(sample(text, "websockify_sessions_active"), 1);
  assert.equal(sample(text, 'websockify_bytes_total{direction="client_to_target"}'), 10000);
  assert.equal(sample(text, 'websockify_bytes_total{direction="target_to_client"}'), 10000);
  assert.equal(sample(text, 'websockify_handshake_failures_total{reason="origin"}'), 1);
  assert.equal(sample(text, 'websockify_connections_refused_total{reason="max_connections"}'), 1);

  client.ws.close(1000);
  await within(client.closed, 10000, "close");
});
