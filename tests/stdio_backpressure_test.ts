/**
 * `--stdio` backpressure: a program's stdout waits for a slow client, and a client waits for a
 * program that does not read its stdin; in both the proxy's memory stays bounded while far more
 * bytes are pushed than it may grow by.
 */

import assert from "node:assert/strict";
import { WebSocket } from "ws";
import { rssOf, startProxy, within } from "./_helpers.ts";

const MiB = 1024 * 1024;
/** The most the proxy's RSS may grow by while 200 MiB are pushed through it. */
const ALLOWED_GROWTH = 150 * MiB;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Samples `pid`'s RSS every 100 ms until `stop` is called; resolves with the peak. */
function sampleRss(pid: number): { stop(): number } {
  let peak = rssOf(pid);
  const timer = setInterval(() => {
    peak = Math.max(peak, rssOf(pid));
  }, 100);
  return {
    stop(): number {
      clearInterval(timer);
      return Math.max(peak, rssOf(pid));
    },
  };
}

/** Opens a `ws` client (no deflate) and waits for it to open. */
async function open(port: number): Promise<WebSocket> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate: false });
  await within(
    new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    }),
    10000,
    "WebSocket open",
  );
  ws.on("error", () => {});
  return ws;
}

function socketOf(ws: WebSocket): { pause(): void; resume(): void } {
  return (ws as unknown as { _socket: { pause(): void; resume(): void } })._socket;
}

function mib(bytes: number): string {
  return `${(bytes / MiB).toFixed(1)} MiB`;
}

Deno.test("--stdio: 200 MiB of program output to a paused client, memory bounded, all bytes arrive", async () => {
  const total = 200 * MiB;
  await using proxy = await startProxy([
    "--stdio",
    "127.0.0.1:0",
    "--",
    "head",
    "-c",
    String(total),
    "/dev/zero",
  ]);
  const before = rssOf(proxy.pid);
  const ws = await open(proxy.port);
  let received = 0;
  let nonZero = 0;
  ws.on("message", (data: Buffer, isBinary: boolean) => {
    assert.ok(isBinary, "stdout comes as binary messages");
    received += data.length;
    for (const byte of data) if (byte !== 0) nonZero++;
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    ws.on("close", (code: number, reason: Buffer) => resolve({ code, reason: reason.toString() }));
  });
  const rss = sampleRss(proxy.pid);
  // Read nothing for 5 s: the program must be held back, not buffered by the proxy.
  socketOf(ws).pause();
  await sleep(5000);
  const duringPause = received;
  const pausedPeak = rss.stop() - before;
  const drain = sampleRss(proxy.pid);
  socketOf(ws).resume();
  const end = await within(closed, 45000, "all 200 MiB and the close");
  const drainPeak = drain.stop() - before;
  console.log(
    `paused: ${mib(duringPause)} received, RSS +${mib(pausedPeak)}; ` +
      `drain: RSS +${mib(drainPeak)}`,
  );
  assert.deepEqual(end, { code: 1000, reason: "Program exited" });
  assert.equal(received, total, "every byte arrives");
  assert.equal(nonZero, 0, "bytes arrive unchanged");
  assert.ok(duringPause < total / 2, `the paused client got ${mib(duringPause)}`);
  assert.ok(pausedPeak <= ALLOWED_GROWTH, `proxy RSS grew by ${mib(pausedPeak)} while paused`);
  assert.ok(drainPeak <= ALLOWED_GROWTH, `proxy RSS grew by ${mib(drainPeak)} while draining`);
});

Deno.test("--stdio: a client flooding a program that reads nothing is paused, not buffered", async () => {
  await using proxy = await startProxy(["--stdio", "127.0.0.1:0", "--", "sleep", "30"]);
  const before = rssOf(proxy.pid);
  const ws = await open(proxy.port);
  const chunk = new Uint8Array(MiB);
  const rss = sampleRss(proxy.pid);
  let sent = 0;
  const deadline = Date.now() + 10000;
  while (sent < 200 && Date.now() < deadline) {
    ws.send(chunk);
    sent++;
    while (ws.bufferedAmount > 8 * MiB && Date.now() < deadline) await sleep(20);
  }
  await sleep(1000);
  const grown = rss.stop() - before;
  const backlog = ws.bufferedAmount;
  const accepted = sent * MiB - backlog;
  console.log(
    `sent ${sent} MiB, ${mib(backlog)} still queued in the client, ` +
      `${mib(accepted)} left it; proxy RSS +${mib(grown)}`,
  );
  ws.terminate();
  assert.ok(backlog > 0, "the client's writes should stall");
  assert.ok(accepted < 64 * MiB, `the socket took ${mib(accepted)} from the client`);
  assert.ok(grown <= ALLOWED_GROWTH, `proxy RSS grew by ${mib(grown)}`);
});
