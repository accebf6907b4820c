/**
 * `--shutdown-delay N`: on SIGTERM `/healthz` answers 503 at once while the proxy keeps accepting
 * and serving for N seconds; then the usual drain (listener closed, sessions closed with 1001). A
 * second signal during the delay drains at once. Without `--metrics` it is a usage error.
 *
 * @module
 */

import assert from "node:assert/strict";
import { connectClient, runMain, startEcho, startProxy, within } from "./_helpers.ts";

const encoder = new TextEncoder();

async function start(delay: string) {
  const echo = startEcho();
  const proxy = await startProxy([
    "--metrics",
    "127.0.0.1:0",
    "--shutdown-delay",
    delay,
    "127.0.0.1:0",
    `127.0.0.1:${echo.port}`,
  ]);
  const match = await proxy.waitFor(/ - Metrics on (127\.0\.0\.1:\d+) /);
  return { echo, proxy, base: `http://${match[1]}` };
}

async function health(base: string): Promise<[number, string]> {
  const response = await fetch(`${base}/healthz`);
  return [response.status, await response.text()];
}

/** A session echoes `text`. */
async function echoes(port: number, text: string): Promise<void> {
  const client = await connectClient(`ws://127.0.0.1:${port}/`);
  client.ws.send(encoder.encode(text));
  assert.equal(new TextDecoder().decode(await client.receiveBytes(text.length)), text);
  client.ws.close();
  await within(client.closed, 5000, "close");
}

Deno.test("--shutdown-delay: /healthz 503 at once, sessions served until the delay ends", async () => {
  const { echo, proxy, base } = await start("3");
  await using _echo = echo;
  await using _proxy = proxy;
  assert.deepEqual(await health(base), [200, "ok\n"]);
  const held = await connectClient(`ws://127.0.0.1:${proxy.port}/`);

  const signalled = Date.now();
  proxy.kill("SIGTERM");
  await proxy.waitFor(/Got SIGTERM: closing sessions and exiting in 3 s \(--shutdown-delay\)/);
  assert.deepEqual(await health(base), [503, "draining\n"]);
  // Still serving: the held session and a new one.
  held.ws.send(encoder.encode("still here"));
  assert.equal(new TextDecoder().decode(await held.receiveBytes(10)), "still here");
  await echoes(proxy.port, "new session");
  const early = await Promise.race([
    held.closed,
    new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 500)),
  ]);
  assert.equal(early, undefined, "the session was closed during the delay");

  // After the delay: the usual drain.
  assert.equal((await within(held.closed, 10000, "held close")).code, 1001);
  const closedAfter = Date.now() - signalled;
  assert.ok(closedAfter >= 2900, `closed ${closedAfter} ms after SIGTERM, before the delay`);
  assert.equal((await within(proxy.status, 10000, "exit")).code, 0);
  assert.equal(proxy.stderr().match(/closing sessions and exiting$/gm)?.length, 1);
});

Deno.test("--shutdown-delay: a second SIGTERM during the delay drains at once", async () => {
  const { echo, proxy, base } = await start("60");
  await using _echo = echo;
  await using _proxy = proxy;
  const held = await connectClient(`ws://127.0.0.1:${proxy.port}/`);
  proxy.kill("SIGTERM");
  await proxy.waitFor(/exiting in 60 s \(--shutdown-delay\)/);
  assert.deepEqual(await health(base), [503, "draining\n"]);
  proxy.kill("SIGTERM");
  assert.equal((await within(held.closed, 10000, "held close")).code, 1001);
  assert.equal((await within(proxy.status, 10000, "exit")).code, 0);
});

Deno.test("--shutdown-delay without --metrics is a usage error (exit 2)", async () => {
  const result = await runMain(["--shutdown-delay", "2", "127.0.0.1:0", "127.0.0.1:9"]);
  assert.equal(result.code, 2);
  assert.match(result.stderr, /--shutdown-delay needs --metrics: its \/healthz 503 is what/);
  const bad = await runMain(["--metrics", "0", "--shutdown-delay", "2s", "127.0.0.1:0", "h:9"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--shutdown-delay takes a number of seconds \(0 or more\), not '2s'/);
});

Deno.test("--help lists --shutdown-delay", async () => {
  const result = await runMain(["--help"]);
  assert.equal(result.code, 0);
  assert.match(
    result.stdout,
    /--shutdown-delay <N>\s+on SIGTERM\/SIGINT, answer \/healthz with 503/,
  );
});

Deno.test("/healthz answers 503 'starting' until the proxy's listener is bound", async () => {
  const { Metrics } = await import("../src/ops/metrics.ts");
  const { startMetricsServer } = await import("../src/ops/metrics_server.ts");
  const metrics = new Metrics();
  const server = await startMetricsServer(metrics, "127.0.0.1", 0);
  try {
    const base = `http://${server.address}`;
    assert.deepEqual(await health(base), [503, "starting\n"]);
    metrics.listening = true;
    assert.deepEqual(await health(base), [200, "ok\n"]);
    metrics.draining = true;
    assert.deepEqual(await health(base), [503, "draining\n"]);
  } finally {
    await server.close();
  }
});
