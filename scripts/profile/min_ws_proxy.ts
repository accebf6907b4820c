/**
 * A minimal ws:// → TCP proxy, as a floor for what the proxy's own code costs (issue 12, step 2).
 * NOT a correct proxy: no node:http, no checks beyond finding the key, no backpressure, no
 * fragmentation, no ping/pong, no logging, no timers; frames of up to 64 KiB. It reads the
 * upgrade request by hand, answers with src/websocket/handshake.ts's 101, dials the target, and
 * then unmasks client frames (src/websocket/framer.ts's `unmask`) into target writes and sends
 * each target read as one binary frame; a close frame is answered and both sockets are closed.
 *
 *   deno run -A scripts/profile/min_ws_proxy.ts net TARGET_PORT     (node:net both sides)
 *   deno run -A scripts/profile/min_ws_proxy.ts deno TARGET_PORT    (Deno.listen / Deno.connect,
 *                                                                    one 16 KiB read buffer each)
 *   deno run -A scripts/profile/min_ws_proxy.ts deno-nowait TARGET_PORT  (the same, but writes are
 *                                              not awaited: what a Deno.Conn path costs at least)
 *
 * Prints `{"port":N}`.
 *
 * @module
 */

import type { Buffer } from "node:buffer";
import net from "node:net";
import { switchingProtocolsResponse } from "../../src/websocket/handshake.ts";
import { encodeCloseFrame, encodeFrame, unmask } from "../../src/websocket/framer.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const HEADER_END = encoder.encode("\r\n\r\n");

function indexOf(data: Uint8Array, pattern: Uint8Array): number {
  outer: for (let i = 0; i + pattern.length <= data.length; i++) {
    for (let j = 0; j < pattern.length; j++) if (data[i + j] !== pattern[j]) continue outer;
    return i;
  }
  return -1;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b;
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** The 101 response for a request head, or undefined if it has no key. */
function answer(head: Uint8Array): string | undefined {
  const match = /sec-websocket-key:\s*(\S+)/i.exec(decoder.decode(head));
  return match ? switchingProtocolsResponse(match[1]!, undefined) : undefined;
}

/**
 * Parses client frames; calls `data` with each unmasked payload, `close` on a close frame.
 * Returns the unparsed rest.
 */
function frames(
  buffer: Uint8Array,
  data: (payload: Uint8Array) => void,
  close: () => void,
): Uint8Array {
  let offset = 0;
  while (buffer.length - offset >= 6) {
    const opcode = buffer[offset]! & 0x0f;
    let length = buffer[offset + 1]! & 0x7f;
    let at = offset + 2;
    if (length === 126) {
      if (buffer.length - offset < 8) break;
      length = (buffer[at]! << 8) | buffer[at + 1]!;
      at += 2;
    }
    if (buffer.length - at < 4 + length) break;
    const mask = buffer.subarray(at, at + 4);
    const payload = buffer.slice(at + 4, at + 4 + length);
    unmask(payload, mask, 0);
    offset = at + 4 + length;
    if (opcode === 8) return close(), new Uint8Array(0);
    if (opcode <= 2) data(payload);
  }
  return buffer.subarray(offset);
}

function netProxy(targetPort: number): void {
  const server = net.createServer({ noDelay: true }, (client) => {
    let head: Uint8Array = new Uint8Array(0);
    let target: net.Socket | undefined;
    let rest: Uint8Array = new Uint8Array(0);
    const closeBoth = () => {
      client.destroy();
      target?.destroy();
    };
    client.on("error", closeBoth);
    client.on("close", closeBoth);
    const onFrames = (chunk: Uint8Array) => {
      rest = frames(concat(rest, chunk), (payload) => target!.write(payload), () => {
        client.end(encodeCloseFrame(1000));
        target!.end();
      });
    };
    const onHead = (chunk: Buffer) => {
      head = concat(head, chunk);
      const end = indexOf(head, HEADER_END);
      if (end < 0) return;
      client.off("data", onHead);
      const response = answer(head.subarray(0, end));
      if (response === undefined) return closeBoth();
      client.write(response);
      client.pause();
      const early = head.subarray(end + 4);
      target = net.connect({ host: "127.0.0.1", port: targetPort, noDelay: true }, () => {
        client.on("data", onFrames);
        if (early.length > 0) onFrames(early);
        client.resume();
      });
      target.on("data", (data: Buffer) => client.write(encodeFrame(2, data)));
      target.on("error", closeBoth);
      target.on("close", () => client.end());
    };
    client.on("data", onHead);
  });
  server.listen({ host: "127.0.0.1", port: 0, backlog: 4096 }, () => {
    console.log(JSON.stringify({ port: (server.address() as net.AddressInfo).port }));
  });
}

/** `deno-nowait` mode: writes are issued and not awaited (partial writes ignored: a floor only). */
let noWait = false;
const ignore = () => {};

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  if (noWait) return void conn.write(data).catch(ignore);
  let offset = 0;
  while (offset < data.length) offset += await conn.write(data.subarray(offset));
}

async function denoSession(client: Deno.TcpConn, targetPort: number): Promise<void> {
  client.setNoDelay(true);
  const buffer = new Uint8Array(16384);
  let head: Uint8Array = new Uint8Array(0);
  let end = -1;
  while (end < 0) {
    const n = await client.read(buffer);
    if (n === null) return;
    head = concat(head, buffer.slice(0, n));
    end = indexOf(head, HEADER_END);
  }
  const response = answer(head.subarray(0, end));
  if (response === undefined) return;
  await writeAll(client, encoder.encode(response));
  const target = await Deno.connect({ hostname: "127.0.0.1", port: targetPort });
  target.setNoDelay(true);
  let closed = false;
  const fromTarget = (async () => {
    const targetBuffer = new Uint8Array(16384);
    for (;;) {
      const n = await target.read(targetBuffer).catch(() => null);
      if (n === null || closed) break;
      await writeAll(client, encodeFrame(2, targetBuffer.subarray(0, n)));
    }
  })();
  let rest: Uint8Array = head.slice(end + 4);
  const writes: Uint8Array[] = [];
  while (!closed) {
    rest = frames(rest, (payload) => writes.push(payload), () => closed = true);
    for (const payload of writes.splice(0)) await writeAll(target, payload);
    if (closed) break;
    const n = await client.read(buffer).catch(() => null);
    if (n === null) break;
    rest = concat(rest, buffer.slice(0, n));
  }
  closed = true;
  await writeAll(client, encodeCloseFrame(1000)).catch(() => {});
  target.close();
  await fromTarget;
  client.close();
}

async function denoProxy(targetPort: number): Promise<void> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  console.log(JSON.stringify({ port: (listener.addr as Deno.NetAddr).port }));
  for await (const client of listener) {
    denoSession(client, targetPort).catch(() => {
      try {
        client.close();
      } catch {
        // Already closed.
      }
    });
  }
}

const [mode, port] = Deno.args;
if (mode === "net") netProxy(Number(port));
else if (mode === "deno") await denoProxy(Number(port));
else if (mode === "deno-nowait") {
  noWait = true;
  await denoProxy(Number(port));
} else {
  console.error("usage: min_ws_proxy.ts net|deno|deno-nowait TARGET_PORT");
  Deno.exit(2);
}
