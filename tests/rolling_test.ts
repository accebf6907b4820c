/**
 * Rolling restart behind haproxy (issue 11): three proxies (`--proxy-protocol --metrics
 * --shutdown-delay 3`, tokens in one Redis) behind haproxy running the exact `deploy/haproxy.cfg`
 * (ports filled in). A client loop opens a session every 10 ms through haproxy while each instance
 * in turn gets SIGTERM and is replaced, on the same ports, by a new process once the old one has
 * exited: the procedure of docs/deploy.md, "Rolling restart behind haproxy". No session of the
 * loop is refused, fails its handshake or is cut; haproxy's own counters (stats socket) show no
 * connection error, retry or redispatch, and its checks took each instance out of rotation (503)
 * before its listener closed.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type ProxyProcess, startEcho, startProxy, within } from "./_helpers.ts";
import { startRedis } from "./_tokens_helpers.ts";
import { type Balancer, freePort, runBalancer } from "./_balancer_helpers.ts";
import { startClientLoop } from "./_client_loop.ts";

const CONFIG = new URL("../deploy/haproxy.cfg", import.meta.url);
/**
 * Seconds between SIGTERM (`/healthz` 503) and the drain; docs/deploy.md uses the same. More than
 * haproxy can take to see the 503: `inter` (200 ms) × `fall` (1) + `timeout check` (2 s).
 */
const SHUTDOWN_DELAY = 3;

interface Instance {
  readonly proxy: ProxyProcess;
  readonly port: number;
  readonly metricsPort: number;
}

const DEPLOY_DOC = new URL("../docs/deploy.md", import.meta.url);

/** The instance command line of docs/deploy.md's rolling restart section, without `websockify`. */
async function documentedArgs(): Promise<string[]> {
  const doc = await Deno.readTextFile(DEPLOY_DOC);
  const section = doc.slice(doc.indexOf("## Rolling restart behind haproxy"));
  const line = section.split("\n").find((l) => l.startsWith("websockify "));
  assert.ok(line, "no websockify command line in docs/deploy.md's rolling restart section");
  const args = line.split(/\s+/).slice(1);
  assert.equal(args[args.indexOf("--shutdown-delay") + 1], String(SHUTDOWN_DELAY));
  return args;
}

/** Starts one instance as docs/deploy.md runs it; ports 0 for the first generation. */
async function startInstance(
  redis: { port: number; password: string },
  port = 0,
  metricsPort = 0,
): Promise<Instance> {
  const values: Record<string, string> = {
    "@METRICS@": String(metricsPort),
    "@REDIS@": `127.0.0.1:${redis.port}:0:${redis.password}`,
    "@PORT@": String(port),
  };
  const args = (await documentedArgs()).map((arg) =>
    arg.replace(/@[A-Z]+@/g, (name) => values[name] ?? name)
  );
  assert.doesNotMatch(args.join(" "), /@/);
  const proxy = await startProxy(args);
  const match = await proxy.waitFor(/ - Metrics on 127\.0\.0\.1:(\d+) /);
  return { proxy, port: proxy.port, metricsPort: Number(match[1]) };
}

/** `websockify_sessions_total` of one instance. */
async function sessionsTotal(instance: Instance): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${instance.metricsPort}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith("websockify_sessions_total "));
  assert.ok(line, `no websockify_sessions_total in:\n${text}`);
  return Number(line.split(" ")[1]);
}

/** One row of haproxy's `show stat`, by column name. */
type StatRow = Record<string, string>;

/** Asks haproxy's stats socket for `show stat` and returns the backend's rows by `svname`. */
async function showStat(socket: string): Promise<Map<string, StatRow>> {
  const conn = await Deno.connect({ transport: "unix", path: socket });
  await conn.write(new TextEncoder().encode("show stat\n"));
  let text = "";
  const decoder = new TextDecoder();
  for await (const chunk of conn.readable) text += decoder.decode(chunk);
  const [header = "", ...lines] = text.trim().split("\n");
  assert.ok(header.startsWith("# "), `no stat header:\n${text}`);
  const names = header.slice(2).split(",");
  const rows = new Map<string, StatRow>();
  for (const line of lines) {
    const values = line.split(",");
    const row = Object.fromEntries(names.map((name, index) => [name, values[index] ?? ""]));
    if (row["pxname"] === "websockify") rows.set(row["svname"]!, row);
  }
  return rows;
}

/** Polls the stats socket until `server`'s status starts with `status`; resolves with the row. */
async function waitStatus(socket: string, server: string, status: string): Promise<StatRow> {
  const deadline = Date.now() + 15000;
  for (;;) {
    const row = (await showStat(socket)).get(server);
    if (row?.["status"]?.startsWith(status)) return row;
    if (Date.now() > deadline) {
      throw new Error(`haproxy: ${server} not ${status} after 15 s: ${JSON.stringify(row)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Waits (bounded) for haproxy's own line saying `server` went down for a 503. */
async function downFor503(haproxy: Balancer, server: string): Promise<void> {
  const pattern = new RegExp(
    `Server websockify/${server} is DOWN, reason: Layer7 wrong status, code: 503`,
  );
  for (let attempt = 0; attempt < 100 && !pattern.test(haproxy.output()); attempt++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  assert.match(haproxy.output(), pattern);
}

Deno.test("rolling restart of three proxies behind haproxy refuses and fails no session", async () => {
  await using redis = await startRedis({ password: "pw" });
  await using target = startEcho();
  await redis.cli(0, "SET", "echo", `127.0.0.1:${target.port}`);
  const dir = await Deno.makeTempDir({ prefix: "rolling-" });
  const socket = `${dir}/haproxy.sock`;
  const instances: Instance[] = [];
  const old: Instance[] = [];
  try {
    for (let index = 0; index < 3; index++) instances.push(await startInstance(redis));
    const front = freePort();
    let config = (await Deno.readTextFile(CONFIG)).replace("@FRONT_PORT@", String(front));
    instances.forEach((instance, index) => {
      config = config
        .replace(`@PORT${index + 1}@`, String(instance.port))
        .replace(`@METRICS${index + 1}@`, String(instance.metricsPort));
    });
    assert.doesNotMatch(config, /@[A-Z0-9_]+@/);
    await Deno.writeTextFile(`${dir}/haproxy.cfg`, config);
    // The stats socket comes from a second file, so the deployed one stays exactly as shipped.
    await Deno.writeTextFile(`${dir}/stats.cfg`, `global\n  stats socket ${socket} mode 600\n`);
    await using haproxy = await runBalancer(
      "/usr/sbin/haproxy",
      ["-db", "-f", `${dir}/haproxy.cfg`, "-f", `${dir}/stats.cfg`],
      front,
      dir,
    );
    for (let index = 1; index <= 3; index++) await waitStatus(socket, `ws${index}`, "UP");

    // The client loop: a session every 10 ms, at most 8000 of them, for at most 120 s.
    const loop = startClientLoop(`ws://127.0.0.1:${front}/?token=echo`, {
      maxSessions: 8000,
      maxMs: 120000,
    });
    const loopStarted = Date.now();
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const timings: string[] = [];
    const windows: [string, number, number][] = [];
    for (let index = 0; index < 3; index++) {
      const server = `ws${index + 1}`;
      const previous = instances[index]!;
      // 1. SIGTERM: /healthz answers 503 at once, the listener stays open SHUTDOWN_DELAY s.
      const signalled = Date.now();
      previous.proxy.kill("SIGTERM");
      old.push(previous);
      // 2. haproxy's check sees the 503 and takes the instance out of rotation, before the
      //    listener closes (else haproxy would have had to retry refused connections).
      const down = await waitStatus(socket, server, "DOWN");
      const downAfter = Date.now() - signalled;
      // "L7STS": an HTTP answer with another status than 200 (not a refused or timed-out check).
      assert.match(down["check_status"] ?? "", /L7STS/, `${server} down: ${JSON.stringify(down)}`);
      await downFor503(haproxy, server);
      assert.match(
        previous.proxy.stderr(),
        new RegExp(`Got SIGTERM: closing sessions and exiting in ${SHUTDOWN_DELAY} s`),
      );
      assert.doesNotMatch(
        previous.proxy.stderr(),
        /closing sessions and exiting$/m,
        `${server} left rotation only after its listener closed (${downAfter} ms after SIGTERM)`,
      );
      // 3. The old process drains and exits; 4. the new one binds the same two ports.
      const status = await within(previous.proxy.status, 15000, `${server} exit`);
      assert.equal(status.code, 0, previous.proxy.stderr());
      const exited = Date.now() - signalled;
      const next = await startInstance(redis, previous.port, previous.metricsPort);
      instances[index] = next;
      // 5. haproxy's check sees 200 and puts it back; only then is the next instance restarted.
      await waitStatus(socket, server, "UP");
      windows.push([server, signalled, Date.now()]);
      timings.push(
        `${server}: down after ${downAfter} ms (check took ${
          down["check_duration"]
        } ms), old exited after ${exited} ms, ` +
          `up again after ${Date.now() - signalled} ms`,
      );
    }
    const restartedAt = Date.now();
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const result = await loop.stop();

    const stats = await showStat(socket);
    const counters = ["ws1", "ws2", "ws3", "BACKEND"].map((name) => {
      const row = stats.get(name);
      assert.ok(row, `no ${name} in haproxy's stats`);
      const count = (field: string) => Number(row[field] || "0");
      return {
        name,
        sessions: count("stot"),
        econ: count("econ"),
        wretr: count("wretr"),
        wredis: count("wredis"),
        eresp: count("eresp"),
        chkdown: count("chkdown"),
      };
    });
    console.log(timings.join("\n"));
    console.log(
      `${result.tried} sessions in ${restartedAt - loopStarted + 1500} ms: ` +
        `${result.echoedAt.length} echoed, ${result.goingAway} closed with 1001, ` +
        `${result.failures.length} failed; haproxy: ${JSON.stringify(counters)}`,
    );
    assert.deepEqual(
      result.failures,
      [],
      `${result.failures.length} of ${result.tried} failed; haproxy:\n${haproxy.output()}`,
    );
    assert.equal(result.goingAway, 0, "sessions of the loop were cut with 1001");
    assert.equal(result.echoedAt.length, result.tried);
    assert.ok(result.tried >= 300, `only ${result.tried} sessions were tried`);
    // Served throughout: during each restart (SIGTERM to UP again) sessions were started and, as
    // every session was, served. (The loop's own pace varies with the machine's load.)
    for (const [server, from, to] of windows) {
      const served = result.echoedAt.filter((time) => time >= from && time <= to).length;
      assert.ok(served >= 20, `only ${served} sessions were served while ${server} restarted`);
    }
    // What haproxy saw: no refused connection it had to retry or send elsewhere.
    for (const row of counters) {
      assert.equal(row.econ, 0, `${row.name}: connection errors`);
      assert.equal(row.wretr, 0, `${row.name}: retries`);
      assert.equal(row.wredis, 0, `${row.name}: redispatches`);
      assert.equal(row.eresp, 0, `${row.name}: response errors`);
    }
    for (const row of counters.slice(0, 3)) assert.equal(row.chkdown, 1, `${row.name} flapped`);
    // The new processes serve: every one of them took sessions of the loop.
    for (const instance of instances) {
      assert.ok(await sessionsTotal(instance) > 0, `new instance on ${instance.port} served none`);
    }
  } finally {
    for (const instance of [...instances, ...old]) await instance.proxy[Symbol.asyncDispose]();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
