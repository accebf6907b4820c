/**
 * Stand-alone reproduction of late accepts in a saturated Deno `node:net` server (Deno 2.9.6),
 * for an upstream report; see docs/decisions.md, "Sixth pass" and "Starved connects and accepts" (the
 * cause: tokio's cooperative budget in Deno's libuv emulation). Nothing of the proxy is used:
 *
 *     deno run -A scripts/repro_late_accept.ts [BUSY_CONNECTIONS=2000] [SECONDS=8]
 *
 * starts a 20-line `node:net` relay (pinned to CPU 0 when `taskset` exists), a `node:net` echo
 * server behind it, and a client process that keeps BUSY_CONNECTIONS connections echoing 32 bytes
 * through the relay as fast as it can. This process then opens one new connection through the
 * relay every 100 ms, sends 32 bytes and times the echo. With the relay's core saturated, some
 * newcomers wait seconds, although the kernel completes their handshake at once.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import net from "node:net";

const SELF = new URL(import.meta.url).pathname;
const MESSAGE = Buffer.alloc(32, 0x61);

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve) => {
    server.listen({ host: "127.0.0.1", port: 0, backlog: 4096 }, () => {
      resolve((server.address() as net.AddressInfo).port);
    });
  });
}

function print(line: string): void {
  Deno.stdout.writeSync(new TextEncoder().encode(line + "\n"));
}

async function echoRole(): Promise<void> {
  const server = net.createServer({ noDelay: true }, (socket) => {
    socket.on("error", () => socket.destroy());
    socket.on("data", (data) => socket.write(data));
  });
  print(String(await listen(server)));
}

async function relayRole(targetPort: number): Promise<void> {
  const server = net.createServer({ noDelay: true, pauseOnConnect: true }, (client) => {
    const target = net.connect({ host: "127.0.0.1", port: targetPort, noDelay: true }, () => {
      client.on("data", (data) => target.write(data));
      target.on("data", (data) => client.write(data));
      client.resume();
    });
    client.on("error", () => client.destroy());
    target.on("error", () => target.destroy());
    client.on("close", () => target.destroy());
    target.on("close", () => client.destroy());
  });
  print(String(await listen(server)));
}

async function busyRole(port: number, count: number): Promise<void> {
  for (let index = 0; index < count; index++) {
    const socket = net.connect({ host: "127.0.0.1", port, noDelay: true });
    socket.on("error", () => socket.destroy());
    let have = 0;
    socket.on("data", (data: Buffer) => {
      for (have += data.length; have >= 32; have -= 32) socket.write(MESSAGE);
    });
    await new Promise((resolve) => socket.once("connect", resolve));
    socket.write(MESSAGE);
  }
  print("busy");
}

/** Starts this script in another role, pinned to `cpu` when `taskset` exists. */
async function spawn(args: string[], cpu?: number): Promise<Deno.ChildProcess> {
  const pin = cpu !== undefined && (await Deno.stat("/usr/bin/taskset").catch(() => null));
  const command = [Deno.execPath(), "run", "-A", SELF, ...args];
  return new Deno.Command(pin ? "taskset" : command[0]!, {
    args: pin ? ["-c", String(cpu), ...command] : command.slice(1),
    stdout: "piped",
  }).spawn();
}

async function firstLine(child: Deno.ChildProcess): Promise<string> {
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("A helper process ended before it was ready");
    text += value;
  }
  reader.releaseLock();
  return text.split("\n")[0]!.trim();
}

/** Opens a connection, sends 32 bytes and resolves with the milliseconds until they come back. */
function newcomer(port: number): Promise<number> {
  const start = performance.now();
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port, noDelay: true }, () => {
      socket.write(MESSAGE);
    });
    let have = 0;
    const done = () => {
      socket.destroy();
      resolve(performance.now() - start);
    };
    socket.on("data", (data: Buffer) => {
      have += data.length;
      if (have >= 32) done();
    });
    socket.on("error", done);
    setTimeout(done, 30_000);
  });
}

async function main(busyCount: number, seconds: number): Promise<void> {
  const children: Deno.ChildProcess[] = [];
  try {
    const echo = await spawn(["echo"], 1);
    children.push(echo);
    const relay = await spawn(["relay", await firstLine(echo)], 0);
    children.push(relay);
    const relayPort = await firstLine(relay);
    const busy = await spawn(["busy", relayPort, String(busyCount)], 1);
    children.push(busy);
    await firstLine(busy);
    const times: number[] = [];
    const deadline = performance.now() + seconds * 1000;
    while (performance.now() < deadline) {
      times.push(await newcomer(Number(relayPort)));
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    times.sort((a, b) => a - b);
    const over = times.filter((ms) => ms > 1000).length;
    print(
      `${busyCount} busy connections: ${times.length} newcomers, median ` +
        `${times[times.length >> 1]!.toFixed(1)} ms, slowest ${times.at(-1)!.toFixed(1)} ms, ` +
        `${over} over 1 s`,
    );
  } finally {
    for (const child of children) {
      child.kill("SIGKILL");
      await child.status;
    }
  }
}

if (import.meta.main) {
  const [role, first, second] = Deno.args;
  if (role === "echo") await echoRole();
  else if (role === "relay") await relayRole(Number(first));
  else if (role === "busy") await busyRole(Number(first), Number(second));
  else await main(Number(role ?? 2000), Number(first ?? 8));
}
