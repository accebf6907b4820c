/**
 * `--reuse-port` takeover of one port on one machine: process B binds the port of a running
 * process A, A gets SIGTERM and drains, and a client opening a session every 10 ms sees no refused
 * connection and no failed handshake throughout.
 *
 * @module
 */

import assert from "node:assert/strict";
import { connectClient, runMain, startEcho, startProxy, within } from "./_helpers.ts";

const encoder = new TextEncoder();

/** How one session of the client loop ended. */
type Outcome = "echoed" | "going away" | string;

/**
 * One short session: handshake, one echo, close. A session closed with 1001 after its handshake
 * (accepted by the draining process just before it stopped accepting) is "going away": the
 * client is told to come back. Anything else is a failure text ("handshake: ..." for refused or
 * reset connections).
 */
async function session(url: string, index: number): Promise<Outcome> {
  let client;
  try {
    client = await connectClient(url);
  } catch (error) {
    return `handshake: ${error instanceof Error ? error.message : String(error)}`;
  }
  try {
    const message = encoder.encode(`hello ${index}`);
    client.ws.send(message);
    const reply = await client.receiveBytes(message.length, 5000);
    client.ws.close();
    await within(client.closed, 5000, "close");
    return new TextDecoder().decode(reply) === `hello ${index}` ? "echoed" : "wrong echo";
  } catch (error) {
    const closed = await within(client.closed, 5000, "close after a failure").catch(() => null);
    if (closed?.code === 1001) return "going away";
    return `after the handshake: ${error instanceof Error ? error.message : String(error)}`;
  }
}

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

    // The client loop: one session every 10 ms, at most 600 of them, for at most 6 s.
    const failures: string[] = [];
    const results: Promise<void>[] = [];
    let aExitedAt = Number.POSITIVE_INFINITY;
    let servedAfterAExited = 0;
    let goingAway = 0;
    let running = true;
    const loop = (async () => {
      const end = Date.now() + 6000;
      for (let index = 0; index < 600 && running && Date.now() < end; index++) {
        const startedAt = Date.now();
        results.push(
          session(url, index).then((outcome) => {
            if (outcome === "going away") goingAway++;
            else if (outcome !== "echoed") failures.push(`session ${index}: ${outcome}`);
            else if (startedAt > aExitedAt) servedAfterAExited++;
          }),
        );
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    })();

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
    aExitedAt = Date.now();
    assert.equal(status.code, 0, a.stderr());
    await new Promise((resolve) => setTimeout(resolve, 1000));
    running = false;
    await loop;
    await Promise.all(results);

    console.log(
      `${results.length} sessions, ${goingAway} closed with 1001 by A, ${failures.length} failed`,
    );
    assert.deepEqual(failures, [], `${failures.length} of ${results.length} sessions failed`);
    assert.ok(results.length >= 50, `only ${results.length} sessions were tried`);
    assert.ok(servedAfterAExited > 0, "no session was served by B after A exited");
  }));

Deno.test("--reuse-port needs a TCP listener", async () => {
  const result = await runMain(["--reuse-port", "--unix-listen", "/tmp/x.sock", "h:1"]);
  assert.equal(result.code, 2);
  assert.match(result.stderr, /--reuse-port needs a TCP listen address/);
});
