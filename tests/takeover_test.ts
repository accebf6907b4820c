/**
 * `--reuse-port` takeover of one port on one machine: process B binds the port of a running
 * process A, A gets SIGTERM and drains, and a client opening a session every 10 ms sees no refused
 * connection and no failed handshake throughout.
 *
 * @module
 */

import assert from "node:assert/strict";
import { connectClient, runMain, startEcho, startProxy, within } from "./_helpers.ts";
import { startClientLoop } from "./_client_loop.ts";

const encoder = new TextEncoder();

const MIGRATE_REQ = "/proc/sys/net/ipv4/tcp_migrate_req";

/**
 * Runs `body` with `net.ipv4.tcp_migrate_req=1`, as docs/deploy.md recommends: without it the
 * kernel resets connections still queued in A's accept backlog when A closes its listener (about
 * one run in twenty here; docs/decisions.md, "Takeover of one port"). Restores the old value.
 */
async function withMigrateReq(body: () => Promise<void>): Promise<void> {
  const previous = (await Deno.readTextFile(MIGRATE_REQ)).trim();
  try {
    await Deno.writeTextFile(MIGRATE_REQ, "1\n");
  } catch (error) {
    throw new Error(
      `Cannot set ${MIGRATE_REQ} to 1 (${error}): run as root, or set it beforehand`,
    );
  }
  try {
    await body();
  } finally {
    if (previous !== "1") await Deno.writeTextFile(MIGRATE_REQ, `${previous}\n`);
  }
}

Deno.test("--reuse-port: a second proxy takes over the port while the first drains", () =>
  withMigrateReq(async () => {
    await using echo = startEcho();
    const target = `127.0.0.1:${echo.port}`;
    await using a = await startProxy(["--reuse-port", "127.0.0.1:0", target]);
    const url = `ws://127.0.0.1:${a.port}/`;
    const held = await connectClient(url);
    held.ws.send(encoder.encode("held"));
    await held.receiveBytes(4);

    // The client loop of tests/rolling_test.ts: a session every 10 ms, at most 2000 of them, for
    // at most 20 s (stopped 1 s after A has exited).
    const loop = startClientLoop(url, { maxSessions: 2000, maxMs: 20000 });

    // Without --reuse-port the port is taken: a start-up error, and A keeps serving.
    const refused = await runMain([`127.0.0.1:${a.port}`, target], { timeoutMs: 15000 });
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /is already in use/);
    await using b = await startProxy(["--reuse-port", `127.0.0.1:${a.port}`, target]);
    assert.equal(b.port, a.port);
    await new Promise((resolve) => setTimeout(resolve, 300));
    a.kill("SIGTERM");
    assert.equal((await within(held.closed, 10000, "held session close")).code, 1001);
    const status = await within(a.status, 10000, "A exits");
    const aExitedAt = Date.now();
    assert.equal(status.code, 0, a.stderr());
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const result = await loop.stop();

    console.log(
      `${result.tried} sessions, ${result.goingAway} closed with 1001 by A, ` +
        `${result.failures.length} failed`,
    );
    assert.deepEqual(result.failures, [], `${result.failures.length} of ${result.tried} failed`);
    assert.equal(result.echoedAt.length + result.goingAway, result.tried);
    assert.ok(result.tried >= 50, `only ${result.tried} sessions were tried`);
    assert.ok(
      result.echoedAt.some((time) => time > aExitedAt),
      "no session was served by B after A exited",
    );
  }));

Deno.test("--reuse-port needs a TCP listener", async () => {
  const result = await runMain(["--reuse-port", "--unix-listen", "/tmp/x.sock", "h:1"]);
  assert.equal(result.code, 2);
  assert.match(result.stderr, /--reuse-port needs a TCP listen address/);
});
