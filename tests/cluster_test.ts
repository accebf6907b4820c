/**
 * Three proxies behind haproxy, configured by `deploy/haproxy.cfg` (only its port placeholders are
 * substituted): PROXY protocol v2, health checks on each instance's `/healthz`, tokens in Redis.
 * 300 sessions spread over all three; a SIGTERM'd instance closes its sessions with 1001, answers
 * 503 on `/healthz` while draining, and its clients reconnect through haproxy onto the other two,
 * whose sessions carry on undisturbed.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  connectClient,
  type ProxyProcess,
  randomBytes,
  startEcho,
  startProxy,
  type TestClient,
  within,
} from "./_helpers.ts";
import { freePort, startRedis } from "./_tokens_helpers.ts";
import { haproxyConfig } from "./_balancer_helpers.ts";

const HAPROXY = "/usr/sbin/haproxy";
const SESSIONS = 300;
const BATCH = 50;

interface Instance {
  readonly proxy: ProxyProcess;
  readonly metrics: string;
}

async function startInstance(redisPort: number, password: string): Promise<Instance> {
  // --shutdown-delay 1: /healthz answers 503 for a second before the drain, so the test (and
  // haproxy) see it even when the machine is busy and the drain itself takes a few ms.
  const proxy = await startProxy([
    "--proxy-protocol",
    "--shutdown-delay",
    "1",
    "--metrics",
    "127.0.0.1:0",
    "--token-plugin",
    "TokenRedis",
    "--token-source",
    `127.0.0.1:${redisPort}:0:${password}`,
    "127.0.0.1:0",
  ]);
  const match = await proxy.waitFor(/ - Metrics on (127\.0\.0\.1:\d+) \(\/metrics, \/healthz\)/);
  return { proxy, metrics: `http://${match[1]}` };
}

async function activeSessions(instance: Instance): Promise<number> {
  const text = await (await fetch(`${instance.metrics}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith("websockify_sessions_active "));
  assert.ok(line, `no websockify_sessions_active in:\n${text}`);
  return Number(line.split(" ")[1]);
}

/** Sends distinct bytes on every client and checks each gets exactly its own bytes back. */
async function echoAll(clients: TestClient[], size: number): Promise<void> {
  await Promise.all(clients.map(async (client) => {
    const payload = randomBytes(size);
    client.ws.send(payload);
    assert.deepEqual(await client.receiveBytes(size, 20000), payload);
  }));
}

/** Opens `count` sessions through `port`, `BATCH` at a time. */
async function openMany(port: number, count: number): Promise<TestClient[]> {
  const clients: TestClient[] = [];
  for (let start = 0; start < count; start += BATCH) {
    const batch = Math.min(BATCH, count - start);
    clients.push(
      ...await Promise.all(
        Array.from({ length: batch }, () => connectClient(`ws://127.0.0.1:${port}/?token=echo`)),
      ),
    );
  }
  return clients;
}

async function waitHealthy(instances: Instance[]): Promise<void> {
  for (const instance of instances) {
    const response = await fetch(`${instance.metrics}/healthz`);
    assert.equal(response.status, 200);
    await response.body?.cancel();
  }
}

Deno.test("haproxy + deploy/haproxy.cfg spreads 300 sessions over three proxies and survives a SIGTERM", async () => {
  await using redis = await startRedis({ password: "pw" });
  await using target = startEcho();
  await redis.cli(0, "SET", "echo", `127.0.0.1:${target.port}`);
  const instances: Instance[] = [];
  const clients: TestClient[] = [];
  let haproxy: Deno.ChildProcess | undefined;
  const dir = await Deno.makeTempDir({ prefix: "cluster-" });
  let haproxyOutput = "";
  try {
    for (let index = 0; index < 3; index++) {
      instances.push(await startInstance(redis.port, redis.password));
    }
    await waitHealthy(instances);
    const front = await freePort();
    const config = await haproxyConfig(
      front,
      instances.map((instance) => ({
        port: instance.proxy.port,
        metricsPort: Number(new URL(instance.metrics).port),
      })),
    );
    await Deno.writeTextFile(`${dir}/haproxy.cfg`, config);
    haproxy = new Deno.Command(HAPROXY, {
      args: ["-db", "-f", `${dir}/haproxy.cfg`],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const decoder = new TextDecoder();
    for (const stream of [haproxy.stdout, haproxy.stderr]) {
      (async () => {
        for await (const chunk of stream) haproxyOutput += decoder.decode(chunk);
      })();
    }
    // Ready once the frontend accepts and a first session goes through.
    const deadline = Date.now() + 10000;
    for (;;) {
      try {
        const probe = await connectClient(`ws://127.0.0.1:${front}/?token=echo`);
        probe.ws.close(1000);
        await within(probe.closed, 5000, "probe close");
        break;
      } catch (error) {
        if (Date.now() > deadline) throw new Error(`haproxy not ready: ${error}\n${haproxyOutput}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }

    clients.push(...await within(openMany(front, SESSIONS), 40000, "300 sessions"));
    await echoAll(clients, 1000);
    const counts = await Promise.all(instances.map(activeSessions));
    assert.equal(counts.reduce((a, b) => a + b, 0), SESSIONS, `per instance: ${counts}`);
    for (const count of counts) assert.ok(count >= 50, `uneven spread: ${counts}`);

    // SIGTERM the first instance: its sessions close with 1001, its /healthz says 503.
    const victim = instances[0]!;
    const closes = clients.map((client) =>
      Promise.race([
        client.closed,
        new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 300)),
      ])
    );
    const before = await Promise.all(closes);
    assert.ok(before.every((value) => value === undefined), "a session closed before SIGTERM");
    victim.proxy.kill("SIGTERM");
    let sawDraining = false;
    for (let attempt = 0; attempt < 50 && !sawDraining; attempt++) {
      try {
        const response = await fetch(`${victim.metrics}/healthz`);
        const body = await response.text();
        if (response.status === 503) {
          assert.equal(body, "draining\n");
          sawDraining = true;
        } else assert.equal(response.status, 200);
      } catch {
        break; // The metrics listener closes last, once the drain is over.
      }
    }
    const closedCodes = await Promise.all(clients.map((client) =>
      Promise.race([
        client.closed.then((value) => value.code),
        new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 5000)),
      ])
    ));
    const dropped = clients.filter((_, index) => closedCodes[index] !== undefined);
    const kept = clients.filter((_, index) => closedCodes[index] === undefined);
    assert.equal(dropped.length, counts[0], `closed: ${dropped.length}, on victim: ${counts[0]}`);
    for (const code of closedCodes) if (code !== undefined) assert.equal(code, 1001);
    assert.ok(sawDraining, "/healthz never answered 503 during the drain");
    assert.equal((await within(victim.proxy.status, 10000, "victim exit")).code, 0);

    // The dropped clients reconnect through haproxy; all land on the other two.
    const reconnected = await within(openMany(front, dropped.length), 30000, "reconnects");
    clients.push(...reconnected);
    await echoAll(reconnected, 1000);
    // The sessions on the other two were not disturbed.
    await echoAll(kept, 5000);
    const after = await Promise.all(instances.slice(1).map(activeSessions));
    assert.equal(after[0]! + after[1]!, SESSIONS, `after: ${after}`);
    assert.ok(
      after[0]! > counts[1]! && after[1]! > counts[2]!,
      `after: ${after}, before ${counts}`,
    );
  } finally {
    for (const client of clients) client.ws.terminate();
    if (haproxy) {
      try {
        haproxy.kill("SIGTERM");
      } catch {
        // Already exited.
      }
      await haproxy.status;
    }
    for (const instance of instances) await instance.proxy[Symbol.asyncDispose]();
    await Deno.remove(dir, { recursive: true });
  }
});
