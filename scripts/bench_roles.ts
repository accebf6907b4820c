/**
 * The processes `scripts/bench.ts` starts besides the proxies under test: the TCP target, a
 * direct WebSocket echo server (no proxy), and the load generator. Each runs as
 * `deno run -A scripts/bench_roles.ts ROLE JSON` and prints one JSON line on stdout (the ports it
 * listens on, or the measurement).
 *
 * The target speaks a one-byte protocol so that one proxy instance serves every test: the first
 * byte a connection sends picks the mode.
 * - `E`: echo everything after it.
 * - `S` + u32 window ms + u32 warm-up ms: sink; after the warm-up it counts bytes for the window
 *   and answers with the count as a u64 (then keeps discarding).
 * - `R` + u32 write size: source; writes that many bytes at a time, as fast as the peer reads.
 *
 * The load generator is a raw-socket WebSocket client built for speed: frames are masked once
 * ahead of time and written in large batches; received frames are only delimited, never copied.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import net from "node:net";
import process from "node:process";
// @ts-types="npm:@types/ws@8.18.2"
import { WebSocketServer } from "ws";
import { whenDrained } from "../src/targets/socket_target.ts";

type Json = Record<string, unknown>;

function print(value: Json): void {
  Deno.stdout.writeSync(new TextEncoder().encode(JSON.stringify(value) + "\n"));
}

// ---------------------------------------------------------------- target

function startTarget(): void {
  const server = net.createServer({ noDelay: true }, (socket) => {
    socket.on("error", () => socket.destroy());
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const mode = String.fromCharCode(head[0]!);
      const need = mode === "S" ? 9 : mode === "R" ? 5 : 1;
      if (head.length < need) return;
      socket.off("data", onData);
      const rest = head.subarray(need);
      if (mode === "E") {
        if (rest.length > 0) socket.write(rest);
        socket.on("data", (data: Buffer) => socket.write(data));
      } else if (mode === "S") {
        sink(socket, head.readUInt32BE(1), head.readUInt32BE(5), rest.length);
      } else if (mode === "R") {
        source(socket, head.readUInt32BE(1));
      } else {
        socket.destroy();
      }
    };
    socket.on("data", onData);
  });
  // A deep backlog: the proxy dials thousands of sessions at once in the concurrency tests.
  server.listen({ port: 0, host: "127.0.0.1", backlog: 4096 }, () => {
    print({ port: (server.address() as net.AddressInfo).port });
  });
}

function sink(socket: net.Socket, windowMs: number, warmupMs: number, already: number): void {
  let count = 0;
  let counting = false;
  let first = true;
  const onFirst = () => {
    setTimeout(() => {
      counting = true;
      setTimeout(() => {
        counting = false;
        const answer = Buffer.alloc(8);
        answer.writeBigUInt64BE(BigInt(count));
        if (!socket.destroyed) socket.write(answer);
      }, windowMs);
    }, warmupMs);
  };
  if (already > 0) {
    first = false;
    onFirst();
  }
  socket.on("data", (data: Buffer) => {
    if (first) {
      first = false;
      onFirst();
    }
    if (counting) count += data.length;
  });
}

function source(socket: net.Socket, writeSize: number): void {
  const block = Buffer.alloc(writeSize, 0x5a);
  const pump = () => {
    while (!socket.destroyed) {
      if (!socket.write(block)) return void socket.once("drain", pump);
    }
  };
  pump();
}

// ---------------------------------------------------------------- direct ws echo server

function startWsEcho(): void {
  const wss = new WebSocketServer({
    host: "127.0.0.1",
    port: 0,
    perMessageDeflate: false,
    clientTracking: false,
    maxPayload: 64 * 1024 * 1024,
  });
  wss.on("connection", (ws) => {
    ws.on("error", () => {});
    ws.on("message", (data, isBinary) => ws.send(data as Buffer, { binary: isBinary }));
  });
  wss.on("listening", () => print({ port: (wss.address() as net.AddressInfo).port }));
}

// ---------------------------------------------------------------- client side

/** How the load generator reaches the target. */
interface Route {
  /** `ws`: WebSocket through a proxy or echo server; `tcp`: raw bytes straight to the target. */
  readonly kind: "ws" | "tcp";
  readonly port: number;
  /** Send the target's mode byte (false for the direct ws echo server, which only echoes). */
  readonly modeByte: boolean;
}

const MASK = [0x12, 0x34, 0x56, 0x78];

function maskedFrame(opcode: number, payload: Uint8Array): Buffer {
  const length = payload.length;
  const size = length < 126 ? 2 : length < 65536 ? 4 : 10;
  const frame = Buffer.alloc(size + 4 + length);
  frame[0] = 0x80 | opcode;
  if (length < 126) frame[1] = 0x80 | length;
  else if (length < 65536) {
    frame[1] = 0x80 | 126;
    frame.writeUInt16BE(length, 2);
  } else {
    frame[1] = 0x80 | 127;
    frame.writeBigUInt64BE(BigInt(length), 2);
  }
  for (let i = 0; i < 4; i++) frame[size + i] = MASK[i]!;
  for (let i = 0; i < length; i++) frame[size + 4 + i] = payload[i]! ^ MASK[i & 3]!;
  return frame;
}

/** Bytes as the route carries them: one masked frame per message, or raw for TCP. */
function encode(route: Route, payload: Uint8Array): Buffer {
  return route.kind === "ws" ? maskedFrame(2, payload) : Buffer.from(payload);
}

/** Delimits server frames; calls back with payload byte counts and control frames. */
class FrameCounter {
  #header = Buffer.alloc(10);
  #headerHave = 0;
  #headerNeed = 2;
  #remaining = 0;
  #opcode = 0;
  #control: Buffer[] = [];
  constructor(
    readonly onPayload: (bytes: number, chunk: Buffer, at: number) => void,
    readonly onClose: () => void,
  ) {}

  push(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.#remaining > 0) {
        const take = Math.min(this.#remaining, chunk.length - at);
        this.#remaining -= take;
        if (this.#opcode < 8) this.onPayload(take, chunk, at);
        else this.#control.push(chunk.subarray(at, at + take));
        at += take;
        if (this.#remaining === 0 && this.#opcode === 8) return this.onClose();
        continue;
      }
      const take = Math.min(this.#headerNeed - this.#headerHave, chunk.length - at);
      chunk.copy(this.#header, this.#headerHave, at, at + take);
      this.#headerHave += take;
      at += take;
      if (this.#headerHave < this.#headerNeed) continue;
      const code = this.#header[1]! & 0x7f;
      const need = code === 126 ? 4 : code === 127 ? 10 : 2;
      if (this.#headerNeed < need) {
        this.#headerNeed = need;
        continue;
      }
      this.#opcode = this.#header[0]! & 0x0f;
      this.#remaining = code === 126
        ? this.#header.readUInt16BE(2)
        : code === 127
        ? Number(this.#header.readBigUInt64BE(2))
        : code;
      this.#headerHave = 0;
      this.#headerNeed = 2;
      if (this.#remaining === 0 && this.#opcode === 8) return this.onClose();
    }
  }
}

/** An open connection with a byte counter over what it receives (payload only for ws). */
interface Connection {
  socket: net.Socket;
  /** Set the receiver; called with payload byte counts. */
  onBytes: (bytes: number, chunk: Buffer, at: number) => void;
  closed: Promise<void>;
  /** Resolves when the server's close frame (ws) or end of stream arrives. */
  serverClosed: Promise<void>;
}

const HANDSHAKE = (port: number) =>
  `GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
  "Sec-WebSocket-Protocol: binary\r\nOrigin: http://127.0.0.1\r\n\r\n";

function open(route: Route, timeoutMs = 10_000): Promise<Connection> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port: route.port, noDelay: true });
    let resolveServerClosed = () => {};
    const serverClosed = new Promise<void>((r) => (resolveServerClosed = r));
    const connection: Connection = {
      socket,
      onBytes: () => {},
      closed: new Promise((r) => socket.once("close", () => r())),
      serverClosed,
    };
    socket.once("close", () => resolveServerClosed());
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error("Timed out opening a connection"));
    }, timeoutMs);
    socket.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.once("connect", () => {
      if (route.kind === "tcp") {
        clearTimeout(timer);
        socket.on("data", (chunk: Buffer) => connection.onBytes(chunk.length, chunk, 0));
        return resolve(connection);
      }
      socket.write(HANDSHAKE(route.port));
      let head = Buffer.alloc(0);
      const onHead = (chunk: Buffer) => {
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf("\r\n\r\n");
        if (end < 0) return;
        socket.off("data", onHead);
        clearTimeout(timer);
        if (!head.subarray(0, 12).toString().startsWith("HTTP/1.1 101")) {
          socket.destroy();
          return reject(new Error(`Handshake refused: ${head.subarray(0, 40).toString()}`));
        }
        const counter = new FrameCounter(
          (bytes, data, at) => connection.onBytes(bytes, data, at),
          resolveServerClosed,
        );
        socket.on("data", (data: Buffer) => counter.push(data));
        resolve(connection);
        if (head.length > end + 4) counter.push(head.subarray(end + 4));
      };
      socket.on("data", onHead);
    });
  });
}

/** Writes `data`; resolves once the socket accepts more. */
function write(socket: net.Socket, data: Uint8Array): Promise<void> {
  return socket.write(data) ? Promise.resolve() : whenDrained(socket);
}

function u32s(...values: number[]): Uint8Array {
  const bytes = Buffer.alloc(values.length * 4);
  values.forEach((value, i) => bytes.writeUInt32BE(value, i * 4));
  return bytes;
}

function withMode(mode: string, body: Uint8Array = new Uint8Array(0)): Uint8Array {
  return Buffer.concat([Buffer.from(mode), body]);
}

/** Waits for `count` payload bytes on `connection`. */
function receive(connection: Connection, count: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let have = 0;
  return new Promise((resolve) => {
    connection.onBytes = (bytes, chunk, at) => {
      parts.push(chunk.subarray(at, at + bytes));
      have += bytes;
      if (have >= count) resolve(Buffer.concat(parts));
    };
  });
}

// ws→tcp: stream `messageSize` messages for warm-up + window; the sink reports what it got.
async function upload(route: Route, options: Json): Promise<Json> {
  const messageSize = options.messageSize as number;
  const windowMs = options.windowMs as number;
  const warmupMs = options.warmupMs as number;
  const connection = await open(route);
  const answer = receive(connection, 8);
  await write(connection.socket, encode(route, withMode("S", u32s(windowMs, warmupMs))));
  const payload = new Uint8Array(messageSize).fill(0xa5);
  const frame = encode(route, payload);
  const perBlock = Math.max(1, Math.floor(256 * 1024 / frame.length));
  const block = Buffer.concat(Array.from({ length: perBlock }, () => frame));
  let done = false;
  void answer.then(() => (done = true));
  // The sink's window starts about warmupMs after the first bytes, and ends with its answer.
  const meter = new CpuMeter(options);
  const metered = sleep(warmupMs).then(() => meter.start());
  while (!done && !connection.socket.destroyed) await write(connection.socket, block);
  const bytes = Number((await answer).readBigUInt64BE(0));
  await metered;
  const cpu = await meter.stop();
  connection.socket.destroy();
  return { mbps: bytes / (windowMs / 1000) / 1e6, ...cpu };
}

// tcp→ws: the source writes `writeSize` chunks; count payload received during the window. The
// socket is read with Deno.Conn into one reused buffer: no allocation per read, so the load
// generator costs as little as possible on the core it shares with the target.
async function download(route: Route, options: Json): Promise<Json> {
  const windowMs = options.windowMs as number;
  const warmupMs = options.warmupMs as number;
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: route.port });
  try {
    return await downloadOn(conn, route, options, windowMs, warmupMs);
  } finally {
    try {
      conn.close();
    } catch {
      // Closed already.
    }
  }
}

async function downloadOn(
  conn: Deno.TcpConn,
  route: Route,
  options: Json,
  windowMs: number,
  warmupMs: number,
): Promise<Json> {
  conn.setNoDelay(true);
  const buffer = new Uint8Array(256 * 1024);
  const view = Buffer.from(buffer.buffer);
  let count = 0;
  let counter: FrameCounter | undefined;
  let rest = Buffer.alloc(0);
  if (route.kind === "ws") {
    await writeAllTo(conn, new TextEncoder().encode(HANDSHAKE(route.port)));
    // Read the response headers; what follows them is the first frame data.
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) throw new Error("Connection closed during the handshake");
      rest = Buffer.concat([rest, view.subarray(0, n)]);
      const end = rest.indexOf("\r\n\r\n");
      if (end < 0) continue;
      if (!rest.subarray(0, 12).toString().startsWith("HTTP/1.1 101")) {
        throw new Error(`Handshake refused: ${rest.subarray(0, 40).toString()}`);
      }
      rest = rest.subarray(end + 4);
      break;
    }
    counter = new FrameCounter((bytes) => (count += bytes), () => {});
    counter.push(rest);
  }
  await writeAllTo(conn, encode(route, withMode("R", u32s(options.writeSize as number))));
  let reading = true;
  const reader = (async () => {
    while (reading) {
      const n = await conn.read(buffer).catch(() => null);
      if (n === null) break;
      if (counter) counter.push(view.subarray(0, n));
      else count += n;
    }
  })();
  await sleep(warmupMs);
  const meter = new CpuMeter(options);
  await meter.start();
  const start = count;
  await sleep(windowMs);
  const bytes = count - start;
  const cpu = await meter.stop();
  reading = false;
  conn.close();
  await reader;
  return { mbps: bytes / (windowMs / 1000) / 1e6, ...cpu };
}

async function writeAllTo(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  for (let at = 0; at < data.length;) at += await conn.write(data.subarray(at));
}

// Round trips of one small message on one connection.
async function latency(route: Route, options: Json): Promise<Json> {
  const count = options.count as number;
  const size = 32;
  const connection = await open(route);
  if (route.modeByte) await write(connection.socket, encode(route, withMode("E")));
  const frame = encode(route, new Uint8Array(size).fill(0x33));
  const samples: number[] = [];
  const meter = new CpuMeter(options);
  for (let i = 0; i < count + 200; i++) {
    if (i === 200) await meter.start();
    const echoed = receive(connection, size);
    const start = performance.now();
    connection.socket.write(frame);
    await echoed;
    if (i >= 200) samples.push((performance.now() - start) * 1000);
  }
  const cpu = await meter.stop();
  connection.socket.destroy();
  samples.sort((a, b) => a - b);
  const at = (q: number) => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))]!;
  return { p50: at(0.5), p99: at(0.99), ...cpu };
}

// Connection set-up: handshake, one echo, close; `parallel` loops for the window.
async function setup(route: Route, options: Json): Promise<Json> {
  const windowMs = options.windowMs as number;
  const parallel = options.parallel as number;
  const deadline = performance.now() + windowMs;
  let completed = 0;
  let failed = 0;
  // `line`: a text message for a program over stdio (`cat` echoes it as one text message).
  const line = options.line as string | undefined;
  const message = line !== undefined
    ? maskedFrame(1, Buffer.from(line))
    : encode(route, withMode(route.modeByte ? "E" : "", Buffer.from("0123456789abcdef")));
  const expected = line !== undefined ? Buffer.byteLength(line) : 16;
  const close = route.kind === "ws" ? maskedFrame(8, new Uint8Array([0x03, 0xe8])) : undefined;
  const loop = async () => {
    while (performance.now() < deadline) {
      try {
        const connection = await open(route, 5000);
        const echoed = receive(connection, expected);
        connection.socket.write(message);
        await withTimeout(echoed, 5000);
        if (close) {
          connection.socket.write(close);
          await withTimeout(connection.serverClosed, 5000);
        }
        connection.socket.end();
        connection.socket.destroySoon();
        completed++;
      } catch {
        failed++;
      }
    }
  };
  const meter = new CpuMeter(options);
  await meter.start();
  const start = performance.now();
  await Promise.all(Array.from({ length: parallel }, loop));
  const rate = completed / ((performance.now() - start) / 1000);
  return { rate, failed, ...await meter.stop() };
}

// Many connections, each echoing one small message at a time, for the window.
async function concurrent(route: Route, options: Json): Promise<Json> {
  const connections = options.connections as number;
  const windowMs = options.windowMs as number;
  const pid = options.pid as number[];
  const opened: Connection[] = [];
  let failed = 0;
  const openStart = performance.now();
  for (let i = 0; i < connections; i += 100) {
    const batch = await Promise.allSettled(
      Array.from({ length: Math.min(100, connections - i) }, () => open(route, 20_000)),
    );
    for (const result of batch) {
      if (result.status === "fulfilled") opened.push(result.value);
      else failed++;
    }
  }
  const openSeconds = (performance.now() - openStart) / 1000;
  // All sessions are open before any echoes: this measures N sessions echoing at once. Opening
  // them while earlier ones echo at full speed would measure something else: a Deno node:net
  // server whose core is saturated accepts new connections seconds late (docs/decisions.md,
  // "Sixth pass"), in the proxy and in the TCP target alike.
  const size = 32;
  if (route.modeByte) {
    for (const connection of opened) connection.socket.write(encode(route, withMode("E")));
  }
  const frame = encode(route, new Uint8Array(size).fill(0x44));
  const counts = new Array<number>(opened.length).fill(0);
  const echoes = new Array<number>(opened.length).fill(0);
  const lastEcho = new Array<number>(opened.length).fill(0);
  let running = true;
  let measuring = false;
  let started = 0;
  let resolveAllStarted = () => {};
  const allStarted = new Promise<void>((resolve) => (resolveAllStarted = resolve));
  opened.forEach((connection, index) => {
    let have = 0;
    let first = true;
    connection.onBytes = (bytes) => {
      have += bytes;
      while (have >= size) {
        have -= size;
        if (first) {
          first = false;
          if (++started === opened.length) resolveAllStarted();
        }
        if (measuring) counts[index]!++;
        echoes[index]!++;
        lastEcho[index] = performance.now();
        if (running) connection.socket.write(frame);
      }
    };
    connection.socket.write(frame);
  });
  // Measure the steady state: every session has its target connection and one echo behind it.
  const startWait = performance.now();
  await withTimeout(allStarted, 20_000).catch(() => {});
  // A bench part that runs something else against the busy server waits for this line.
  if (options.announce) print({ ready: true, started });
  const firstEchoSeconds = (performance.now() - startWait) / 1000;
  await sleep(300);
  const meter = new CpuMeter(options);
  await meter.start();
  measuring = true;
  await sleep(windowMs);
  measuring = false;
  const cpu = await meter.stop();
  const memory = await memoryOf(pid);
  running = false;
  const total = counts.reduce((a, b) => a + b, 0);
  const served = counts.filter((c) => c > 0).length;
  // Sessions without an echo in the window: never started, or stalled after some echoes (and
  // whether their socket was closed): what to look at when "all served" fails.
  const unserved = opened.map((connection, index) => ({ connection, index }))
    .filter(({ index }) => counts[index] === 0);
  const now = performance.now();
  const unservedDetail = unserved.length === 0 ? undefined : {
    neverStarted: unserved.filter(({ index }) => echoes[index] === 0).length,
    stalled: unserved.filter(({ index }) => echoes[index]! > 0).length,
    closed: unserved.filter(({ connection }) => connection.socket.destroyed).length,
    examples: unserved.slice(0, 5).map(({ connection, index }) => ({
      echoes: echoes[index],
      silentMs: echoes[index] ? Math.round(now - lastEcho[index]!) : undefined,
      localPort: connection.socket.localPort,
      buffered: connection.socket.writableLength,
    })),
  };
  for (const connection of opened) connection.socket.destroy();
  return {
    rate: total / (windowMs / 1000),
    served,
    opened: opened.length,
    failed,
    openRate: opened.length / openSeconds,
    firstEchoSeconds,
    started,
    ...memory,
    ...cpu,
    ...(unservedDetail ? { unserved: unservedDetail } : {}),
  };
}

// New sessions opened one after another (handshake and one echo each) for the window, meant to
// run while another load generator keeps the server busy: how long a newcomer waits. A session
// that times out counts with the time it waited; one refused or reset counts as failed.
async function probe(route: Route, options: Json): Promise<Json> {
  const windowMs = options.windowMs as number;
  const intervalMs = options.intervalMs as number;
  const timeoutMs = options.timeoutMs as number;
  const frame = encode(route, withMode(route.modeByte ? "E" : "", new Uint8Array(32).fill(0x55)));
  const samples: number[] = [];
  let timeouts = 0;
  let failures = 0;
  const deadline = performance.now() + windowMs;
  while (performance.now() < deadline) {
    const start = performance.now();
    let connection: Connection | undefined;
    try {
      connection = await open(route, timeoutMs);
      const echoed = receive(connection, 32);
      connection.socket.write(frame);
      await withTimeout(echoed, timeoutMs);
      samples.push(performance.now() - start);
    } catch (error) {
      if (String(error).includes("Timed out")) {
        timeouts++;
        samples.push(performance.now() - start);
      } else {
        failures++;
      }
    } finally {
      connection?.socket.destroy();
    }
    await sleep(intervalMs);
  }
  samples.sort((a, b) => a - b);
  return {
    count: samples.length,
    timeouts,
    failures,
    p50: samples[Math.floor(samples.length / 2)] ?? NaN,
    max: samples[samples.length - 1] ?? NaN,
  };
}

// Idle connections: memory of the server processes before and after opening them.
async function idle(route: Route, options: Json): Promise<Json> {
  const connections = options.connections as number;
  const pid = options.pid as number[];
  await sleep(300);
  const before = await memoryOf(pid);
  const opened: Connection[] = [];
  for (let i = 0; i < connections; i += 50) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(50, connections - i) }, () => open(route, 20_000)),
    );
    opened.push(...batch);
  }
  if (route.modeByte) {
    for (const connection of opened) {
      const echoed = receive(connection, 1);
      connection.socket.write(encode(route, withMode("E", Buffer.from("x"))));
      await withTimeout(echoed, 5000);
    }
  }
  await sleep(1000);
  const after = await memoryOf(pid);
  for (const connection of opened) connection.socket.destroy();
  return {
    kibPerConnection: (after.memoryKib - before.memoryKib) / connections,
    before: before.memoryKib,
    after: after.memoryKib,
  };
}

/** The processes of the trees rooted at `pids` (a forking server's children included). */
async function processTree(pids: number[]): Promise<Set<number>> {
  const all = new Set<number>();
  const visit = async (pid: number) => {
    if (all.has(pid)) return;
    all.add(pid);
    const tasks = await Deno.readDir(`/proc/${pid}/task`);
    for await (const task of tasks) {
      const text = await Deno.readTextFile(`/proc/${pid}/task/${task.name}/children`).catch(
        () => "",
      );
      for (const child of text.trim().split(/\s+/).filter(Boolean)) await visit(Number(child));
    }
  };
  for (const pid of pids) await visit(pid).catch(() => {});
  return all;
}

/**
 * Memory of a process tree in KiB: RSS for a single process; for a forking server, the sum of
 * PSS over the tree (children share the parent's pages, so RSS would count them many times).
 */
async function memoryOf(pids: number[]): Promise<{ memoryKib: number; processes: number }> {
  const all = await processTree(pids);
  let total = 0;
  for (const pid of all) {
    const key = all.size === 1 ? "Rss:" : "Pss:";
    const text = await Deno.readTextFile(`/proc/${pid}/smaps_rollup`).catch(() => "");
    const line = text.split("\n").find((l) => l.startsWith(key));
    total += Number(line?.split(/\s+/)[1] ?? 0);
  }
  return { memoryKib: total, processes: all.size };
}

/** Clock ticks per second of /proc/PID/stat times (`getconf CLK_TCK` is 100 on Linux). */
const TICKS_PER_SECOND = 100;
/** Shortest window over which CPU shares are reported. */
const MIN_CPU_WINDOW_MS = 500;

/**
 * CPU milliseconds used so far by the process trees of `pids`: every live process's user and
 * system time plus the time of children already reaped (a forking server's finished sessions).
 */
async function cpuMsOf(pids: number[]): Promise<number> {
  let ticks = 0;
  for (const pid of await processTree(pids)) {
    const text = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => "");
    // Fields after the command name (which may hold spaces), from field 3 on.
    const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
    // utime, stime, cutime, cstime are fields 14 to 17.
    for (let field = 14; field <= 17; field++) ticks += Number(fields[field - 3] ?? 0);
  }
  return ticks * 1000 / TICKS_PER_SECOND;
}

/** This process's own CPU milliseconds (all threads). */
function ownCpuMs(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1000;
}

/**
 * Measures, over a window, how busy the server under test and the load side (this load
 * generator plus the TCP target) were, each as a share of one core: the figure that shows
 * which side limited a test.
 */
class CpuMeter {
  #serverPids: number[];
  #targetPids: number[];
  #start = { at: 0, server: 0, target: 0, own: 0 };

  constructor(options: Json) {
    const target = options.targetPid as number | undefined;
    this.#targetPids = target === undefined ? [] : [target];
    // A direct route has no server between the load generator and the target.
    this.#serverPids = ((options.pid as number[] | undefined) ?? []).filter((p) => p !== target);
  }

  async start(): Promise<void> {
    this.#start = {
      at: performance.now(),
      server: await cpuMsOf(this.#serverPids),
      target: await cpuMsOf(this.#targetPids),
      own: ownCpuMs(),
    };
  }

  async stop(): Promise<{ serverCpu: number; loadCpu: number }> {
    const wall = performance.now() - this.#start.at;
    const server = await cpuMsOf(this.#serverPids) - this.#start.server;
    const target = await cpuMsOf(this.#targetPids) - this.#start.target;
    const own = ownCpuMs() - this.#start.own;
    // /proc counts in 10 ms ticks: shorter windows give no meaningful share.
    if (wall < MIN_CPU_WINDOW_MS) return { serverCpu: NaN, loadCpu: NaN };
    return {
      serverCpu: this.#serverPids.length > 0 ? server / wall : NaN,
      loadCpu: (own + target) / wall,
    };
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

const TESTS: Record<string, (route: Route, options: Json) => Promise<Json>> = {
  upload,
  download,
  latency,
  setup,
  concurrent,
  probe,
  idle,
};

if (import.meta.main) {
  const [role, json] = Deno.args;
  if (role === "target") startTarget();
  else if (role === "ws-echo") startWsEcho();
  else if (role === "load") {
    const options = JSON.parse(json ?? "{}") as Json;
    const test = TESTS[options.test as string];
    if (!test) throw new Error(`Unknown test '${String(options.test)}'`);
    const watchdog = setTimeout(() => {
      print({ error: "Load generator timed out" });
      Deno.exit(3);
    }, (options.limitMs as number | undefined) ?? 120_000);
    try {
      print(await test(options.route as Route, options));
    } catch (error) {
      print({ error: String(error) });
    }
    clearTimeout(watchdog);
    Deno.exit(0);
  } else {
    throw new Error(`Unknown role '${role}': use target, ws-echo or load`);
  }
}
