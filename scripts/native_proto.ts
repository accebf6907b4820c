/**
 * Measurement prototype for issue 12 (docs/decisions.md, "Native Deno.Conn path for plain ws://
 * (issue 12)"): minimal ws:// -> TCP relays with the proxy's framer and handshake response and
 * nothing else (no logging, limits, close handshake rules or backpressure beyond awaiting each
 * write). Not the proxy; kept so the comparison can be repeated:
 *
 *     deno run -A scripts/native_proto.ts PORT TARGET_PORT
 *
 * - default: `Deno.listen` accept loop, `conn.read()` into one reused buffer per session (4 KiB
 *   from the client, 64 KiB from the target), target on `Deno.connect`;
 * - `NET_TARGET=1`: the same client side, target on `node:net`;
 * - `NET_ALL=1`: `node:net` on both sides, the same minimal logic.
 * - `EPOLL=1`: `node:net` accepts and reads the request, then both sockets move to the epoll loop
 *   of src/ops/epoll.ts (docs/decisions.md, "Sessions on our own epoll loop").
 *
 * Drive it with `scripts/loadgen.c` (echo, setup, idle, newcomer) against the bench's target.
 *
 * @module
 */
import {
  encodeFrame,
  frameHeaderSize,
  FrameReader,
  OPCODE,
  writeFrameHeader,
} from "../src/websocket/framer.ts";
import { switchingProtocolsResponse } from "../src/websocket/handshake.ts";
import net from "node:net";
import { Buffer } from "node:buffer";
import { duplicateDescriptor, openEpoll } from "../src/ops/epoll.ts";

const [portArg, targetArg] = Deno.args;
const targetPort = Number(targetArg);
const encoder = new TextEncoder();
const decoder = new TextDecoder();
if (Deno.env.get("NET_ALL") === "1") netServer(Number(portArg));
else if (Deno.env.get("EPOLL") === "1") epollServer(Number(portArg));
else void acceptLoop();

async function acceptLoop(): Promise<void> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: Number(portArg) });
  for await (const conn of listener) void session(conn).catch(() => {});
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) offset += await conn.write(bytes.subarray(offset));
}

function findEnd(buf: Uint8Array, n: number): number {
  for (let i = 3; i < n; i++) {
    if (buf[i] === 10 && buf[i - 1] === 13 && buf[i - 2] === 10 && buf[i - 3] === 13) return i + 1;
  }
  return -1;
}

async function session(conn: Deno.TcpConn): Promise<void> {
  conn.setNoDelay(true);
  const buf = new Uint8Array(4096);
  let n = 0;
  let end = -1;
  while (end < 0) {
    const r = await conn.read(buf.subarray(n));
    if (r === null) return conn.close();
    n += r;
    end = findEnd(buf, n);
  }
  const text = decoder.decode(buf.subarray(0, end));
  const key = /\r\nsec-websocket-key:\s*(\S+)/i.exec(text)?.[1] ?? "";
  if (Deno.env.get("NET_TARGET") === "1") return netSession(conn, buf, n, end, key);
  const target = await Deno.connect({ hostname: "127.0.0.1", port: targetPort });
  target.setNoDelay(true);
  await conn.write(encoder.encode(switchingProtocolsResponse(key, undefined)));
  let pieces: Uint8Array[] = [];
  let closed = false;
  const reader = new FrameReader({
    onData(p) {
      if (p.length > 0) pieces.push(p);
    },
    onControl(op, payload) {
      if (op === OPCODE.close) {
        closed = true;
        conn.write(encodeFrame(OPCODE.close, payload)).catch(() => {});
      }
    },
    onError() {
      closed = true;
    },
  });
  const out = new Uint8Array(65536 + 10);
  const down = (async () => {
    try {
      for (;;) {
        const r = await target.read(out.subarray(10));
        if (r === null) break;
        const size = frameHeaderSize(r);
        const start = 10 - size;
        writeFrameHeader(out.subarray(start), size, OPCODE.binary, r);
        await writeAll(conn, out.subarray(start, 10 + r));
      }
    } catch { /* gone */ }
  })();
  const flush = async () => {
    if (pieces.length === 0) return;
    const list = pieces;
    pieces = [];
    if (list.length === 1) return writeAll(target, list[0]!);
    let total = 0;
    for (const p of list) total += p.length;
    const joined = new Uint8Array(total);
    let o = 0;
    for (const p of list) {
      joined.set(p, o);
      o += p.length;
    }
    await writeAll(target, joined);
  };
  try {
    if (n > end) {
      reader.push(buf.slice(end, n));
      await flush();
    }
    while (!closed) {
      const r = await conn.read(buf);
      if (r === null) break;
      reader.push(buf.subarray(0, r));
      await flush();
    }
  } catch { /* gone */ }
  try {
    target.close();
  } catch { /* closed */ }
  await down;
  try {
    conn.close();
  } catch { /* closed */ }
}

async function netSession(
  conn: Deno.TcpConn,
  buf: Uint8Array,
  n: number,
  end: number,
  key: string,
): Promise<void> {
  const target = net.connect({ host: "127.0.0.1", port: targetPort, noDelay: true });
  await new Promise((r, j) => {
    target.once("connect", r);
    target.once("error", j);
  });
  await conn.write(encoder.encode(switchingProtocolsResponse(key, undefined)));
  let closed = false;
  // Target -> client: queue frames, one conn.write at a time.
  let queue: Uint8Array[] = [];
  let writing = false;
  const pumpOut = async () => {
    writing = true;
    try {
      while (queue.length > 0) {
        const list = queue;
        queue = [];
        for (const f of list) {
          let o = 0;
          while (o < f.length) o += await conn.write(f.subarray(o));
        }
      }
    } catch {
      target.destroy();
    }
    writing = false;
    target.resume();
  };
  target.on("data", (chunk: Buffer) => {
    const size = frameHeaderSize(chunk.length);
    const frame = new Uint8Array(size + chunk.length);
    writeFrameHeader(frame, size, OPCODE.binary, chunk.length);
    frame.set(chunk, size);
    queue.push(frame);
    if (!writing) void pumpOut();
    else target.pause();
  });
  target.on("error", () => {});
  target.on("close", () => {
    try {
      conn.close();
    } catch { /* closed */ }
  });
  const reader = new FrameReader({
    onData(p) {
      if (p.length > 0) target.write(Buffer.from(p));
    },
    onControl(op, payload) {
      if (op === OPCODE.close) {
        closed = true;
        conn.write(encodeFrame(OPCODE.close, payload)).catch(() => {});
      }
    },
    onError() {
      closed = true;
    },
  });
  try {
    if (n > end) reader.push(buf.slice(end, n));
    while (!closed) {
      const r = await conn.read(buf);
      if (r === null) break;
      reader.push(buf.subarray(0, r));
    }
  } catch { /* gone */ }
  target.end();
}

/** node:net on both sides, same minimal logic: isolates node:net from the proxy's features. */
export function netServer(port: number): void {
  const server = net.createServer({ noDelay: true }, (socket) => {
    socket.on("error", () => socket.destroy());
    let head: Buffer = Buffer.alloc(0);
    const onHead = (chunk: Buffer) => {
      head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
      const end = findEnd(head, head.length);
      if (end < 0) return;
      socket.off("data", onHead);
      socket.pause();
      const key = /\r\nsec-websocket-key:\s*(\S+)/i.exec(decoder.decode(head.subarray(0, end)))
        ?.[1] ?? "";
      const target = net.connect({ host: "127.0.0.1", port: targetPort, noDelay: true });
      target.on("error", () => socket.destroy());
      target.once("connect", () => {
        socket.write(switchingProtocolsResponse(key, undefined));
        const reader = new FrameReader({
          onData(p) {
            if (p.length > 0) target.write(Buffer.from(p.buffer, p.byteOffset, p.length));
          },
          onControl(op, payload) {
            if (op === OPCODE.close) {
              socket.write(encodeFrame(OPCODE.close, payload));
              socket.end();
            }
          },
          onError() {
            socket.destroy();
          },
        });
        target.on("data", (chunk: Buffer) => {
          const size = frameHeaderSize(chunk.length);
          const frame = Buffer.allocUnsafe(size + chunk.length);
          writeFrameHeader(frame, size, OPCODE.binary, chunk.length);
          frame.set(chunk, size);
          socket.write(frame);
        });
        target.on("close", () => socket.destroy());
        socket.on("close", () => target.destroy());
        socket.on("data", (chunk: Buffer) => reader.push(chunk));
        if (head.length > end) reader.push(head.subarray(end));
        socket.resume();
      });
    };
    socket.on("data", onHead);
  });
  server.listen({ port, host: "127.0.0.1", backlog: 4096 });
}

/** node:net accepts and reads the request, then both sockets move to our epoll loop. */
export function epollServer(port: number): void {
  const loop = openEpoll();
  if (!loop) throw new Error("no epoll loop: run with -A on Linux");
  const server = net.createServer({ noDelay: true }, (socket) => {
    socket.on("error", () => socket.destroy());
    let head: Buffer = Buffer.alloc(0);
    const onHead = (chunk: Buffer) => {
      head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
      const end = findEnd(head, head.length);
      if (end < 0) return;
      socket.off("data", onHead);
      socket.pause();
      const key = /\r\nsec-websocket-key:\s*(\S+)/i.exec(decoder.decode(head.subarray(0, end)))
        ?.[1] ?? "";
      const netTarget = net.connect({ host: "127.0.0.1", port: targetPort, noDelay: true });
      netTarget.on("error", () => socket.destroy());
      netTarget.once("connect", () => {
        const clientFd = duplicateDescriptor(socket)!;
        const targetFd = duplicateDescriptor(netTarget)!;
        socket.destroy();
        netTarget.destroy();
        const client = loop.adopt(clientFd);
        const target = loop.adopt(targetFd);
        client.on("error", () => {});
        target.on("error", () => {});
        client.write(switchingProtocolsResponse(key, undefined));
        const reader = new FrameReader({
          onData(p) {
            if (p.length > 0) target.write(p);
          },
          onControl(op, payload) {
            if (op === OPCODE.close) {
              client.write(encodeFrame(OPCODE.close, payload));
              client.end();
            }
          },
          onError() {
            client.destroy();
          },
        });
        target.on("data", (chunk: Buffer) => {
          const size = frameHeaderSize(chunk.length);
          const frame = Buffer.allocUnsafe(size + chunk.length);
          writeFrameHeader(frame, size, OPCODE.binary, chunk.length);
          frame.set(chunk, size);
          client.write(frame);
        });
        target.on("close", () => client.destroy());
        client.on("close", () => target.destroy());
        client.on("data", (chunk: Buffer) => reader.push(chunk));
        if (head.length > end) reader.push(head.subarray(end));
        client.resume();
        target.resume();
      });
    };
    socket.on("data", onHead);
  });
  server.listen({ port, host: "127.0.0.1", backlog: 4096 });
}
