import assert from "node:assert/strict";
import zlib from "node:zlib";
// @ts-types="npm:@types/ws@8.18.2"
import { WebSocket } from "ws";
import { startEcho, startProxy, startTarget, within } from "./_helpers.ts";
import { clientFrame, concatBytes, RawClient } from "./_perf_helpers.ts";
import { DEFLATE_MIN, negotiateDeflate } from "../src/websocket/deflate.ts";

const encoder = new TextEncoder();
const OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits";
const ACCEPTED = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/** A client message body as RFC 7692 sends it: raw deflate, sync-flushed, tail removed. */
function compress(data: Uint8Array): Uint8Array {
  const out = zlib.deflateRawSync(data, { finishFlush: zlib.constants.Z_SYNC_FLUSH });
  return out.subarray(0, out.length - 4);
}

function inflate(data: Uint8Array): Uint8Array {
  return zlib.inflateRawSync(concatBytes([data, new Uint8Array([0, 0, 0xff, 0xff])]), {
    finishFlush: zlib.constants.Z_SYNC_FLUSH,
  });
}

/** The first index where `a` and `b` differ, or -1 (deepEqual on large arrays is too slow). */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const length = Math.min(a.length, b.length);
  for (let index = 0; index < length; index++) if (a[index] !== b[index]) return index;
  return a.length === b.length ? -1 : length;
}

/**
 * An npm ws client through the proxy on `port`, open, with permessage-deflate negotiated;
 * `before` attaches handlers ahead of the handshake (frames may follow the 101 in one chunk).
 */
async function openCompressing(
  port: number,
  perMessageDeflate: true | { threshold: number },
  before?: (ws: WebSocket) => void,
): Promise<WebSocket> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate });
  before?.(ws);
  await within(
    new Promise((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("error", reject);
    }),
    5000,
    "open",
  );
  assert.match(ws.extensions, /^permessage-deflate/);
  return ws;
}

/** Text that compresses well, `size` bytes long. */
function prose(size: number): Uint8Array {
  const line = encoder.encode("The quick brown fox jumps over the lazy dog; ünïcödé 🎉\n");
  const out = new Uint8Array(size);
  for (let at = 0; at < size; at += line.length) out.set(line.subarray(0, size - at), at);
  return out;
}

Deno.test("negotiateDeflate() accepts valid permessage-deflate offers and skips the rest", () => {
  assert.equal(negotiateDeflate(undefined), undefined);
  assert.equal(negotiateDeflate("x-webkit-deflate-frame"), undefined);
  assert.deepEqual(negotiateDeflate("permessage-deflate; client_max_window_bits"), {
    serverWindowBits: 15,
    response: ACCEPTED,
  });
  // What browsers send, in another case and with spaces.
  assert.equal(
    negotiateDeflate("Permessage-Deflate ;client_max_window_bits")?.response,
    ACCEPTED,
  );
  assert.deepEqual(negotiateDeflate('permessage-deflate; server_max_window_bits="10"'), {
    serverWindowBits: 10,
    response: `${ACCEPTED}; server_max_window_bits=10`,
  });
  // Invalid offers are skipped; a later valid one is taken.
  for (
    const bad of [
      "permessage-deflate; server_max_window_bits=8",
      "permessage-deflate; server_max_window_bits=16",
      "permessage-deflate; server_max_window_bits",
      "permessage-deflate; client_max_window_bits=7",
      "permessage-deflate; server_no_context_takeover=1",
      "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
      "permessage-deflate; unknown_parameter",
    ]
  ) {
    assert.equal(negotiateDeflate(bad), undefined, bad);
    assert.equal(negotiateDeflate(`${bad}, permessage-deflate`)?.response, ACCEPTED, bad);
  }
});

Deno.test("--permessage-deflate: an npm ws client compressing every message gets each back exactly", async () => {
  await using echo = startEcho();
  await using proxy = await startProxy([
    "--permessage-deflate",
    "127.0.0.1:0",
    `127.0.0.1:${echo.port}`,
  ]);
  const ws = await openCompressing(proxy.port, { threshold: 0 });
  let received: Uint8Array = new Uint8Array(0);
  ws.on("message", (data: Buffer) => {
    received = concatBytes([received, new Uint8Array(data)]);
  });
  const random = crypto.getRandomValues(new Uint8Array(60_000));
  const messages = [prose(1), prose(300), prose(70_000), random, prose(1_000_000)];
  const sent = concatBytes(messages);
  for (const message of messages) ws.send(message);
  const deadline = Date.now() + 15_000;
  while (received.length < sent.length && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.equal(received.length, sent.length);
  assert.equal(firstDifference(received, sent), -1);
  ws.close(1000);
  await within(new Promise((resolve) => ws.once("close", resolve)), 5000, "close");
});

Deno.test("--permessage-deflate on the wire: RSV1 frames inflated for the target, target bytes compressed", async () => {
  const fromClient: Uint8Array[] = [];
  const reply = prose(20_000);
  await using target = startTarget(async (conn) => {
    const buffer = new Uint8Array(65536);
    let total = 0;
    while (total < 5_000 + 300) {
      const count = await conn.read(buffer);
      if (count === null) return;
      fromClient.push(buffer.slice(0, count));
      total += count;
    }
    await conn.write(reply);
    // Apart, so that the proxy reads it as a chunk of its own.
    await new Promise((resolve) => setTimeout(resolve, 300));
    await conn.write(encoder.encode("short"));
    await conn.readable.cancel().catch(() => {});
  });
  await using proxy = await startProxy([
    "--permessage-deflate",
    "127.0.0.1:0",
    `127.0.0.1:${target.port}`,
  ]);
  const client = await RawClient.open(proxy.port, "/", [OFFER]);
  assert.match(client.head, new RegExp(`\r\nSec-WebSocket-Extensions: ${ACCEPTED}(\r\n|$)`));
  // One compressed message in two frames (RSV1 on the first only), then an uncompressed one.
  const big = prose(5_000);
  const body = compress(big);
  const half = body.length >> 1;
  await client.write(concatBytes([
    clientFrame(2, body.subarray(0, half), { fin: false, rsv: 4 }),
    clientFrame(0, body.subarray(half)),
    clientFrame(2, prose(300)),
  ]));
  let toClient: Uint8Array = new Uint8Array(0);
  let compressed = 0;
  let plain = 0;
  while (toClient.length < reply.length + 5) {
    const frame = await within(client.readFrame(), 5000, "frames from the target");
    assert.ok(frame !== null && frame.opcode === 2, "a binary frame");
    const payload = frame.rsv1 ? inflate(frame.payload) : frame.payload;
    if (frame.rsv1) {
      compressed++;
      assert.ok(frame.payload.length < payload.length / 4, "prose compresses at least 4:1");
    } else {
      plain++;
    }
    toClient = concatBytes([toClient, payload]);
  }
  assert.equal(firstDifference(toClient, concatBytes([reply, encoder.encode("short")])), -1);
  assert.ok(compressed >= 1, "the 20 KB reply went out compressed");
  assert.ok(plain >= 1, `"short" (under ${DEFLATE_MIN} bytes) went out as it is`);
  assert.equal(firstDifference(concatBytes(fromClient), concatBytes([big, prose(300)])), -1);
  client.close();
});

Deno.test("--permessage-deflate refuses bombs, broken data and RSV1 where it is not allowed", async () => {
  const received: number[] = [];
  await using target = startTarget(async (conn) => {
    const buffer = new Uint8Array(65536);
    for (;;) {
      const count = await conn.read(buffer).catch(() => null);
      if (count === null) return;
      received.push(count);
    }
  });
  await using proxy = await startProxy([
    "--permessage-deflate",
    "--max-message-size",
    "65536",
    "127.0.0.1:0",
    `127.0.0.1:${target.port}`,
  ]);
  const cases: Array<[string, Uint8Array, number]> = [
    // 1 MB of zeros is about 1 KB compressed: it must not expand past --max-message-size.
    ["a bomb", clientFrame(2, compress(new Uint8Array(1_000_000)), { rsv: 4 }), 1009],
    ["broken data", clientFrame(2, new Uint8Array([1, 2, 3, 4, 5]), { rsv: 4 }), 1007],
    ["bad UTF-8 text", clientFrame(1, compress(new Uint8Array([0xc3, 0x28])), { rsv: 4 }), 1007],
    [
      "RSV1 on a continuation",
      concatBytes([
        clientFrame(2, compress(prose(10)), { fin: false, rsv: 4 }),
        clientFrame(0, new Uint8Array(0), { rsv: 4 }),
      ]),
      1002,
    ],
    ["RSV1 on a ping", clientFrame(9, new Uint8Array(0), { rsv: 4 }), 1002],
  ];
  for (const [name, bytes, code] of cases) {
    const client = await RawClient.open(proxy.port, "/", [OFFER]);
    await client.write(bytes);
    assert.equal(await within(client.readCloseCode(), 5000, name), code, name);
    client.close();
  }
  // A client that offers nothing gets no extension, and RSV1 is then a protocol error.
  const plain = await RawClient.open(proxy.port, "/");
  assert.doesNotMatch(plain.head, /Sec-WebSocket-Extensions/i);
  await plain.write(clientFrame(2, compress(prose(10)), { rsv: 4 }));
  assert.equal(await within(plain.readCloseCode(), 5000, "RSV1 unnegotiated"), 1002);
  plain.close();
  assert.deepEqual(received, [], "nothing invalid reached the target");
});

Deno.test("without --permessage-deflate an offer is ignored", async () => {
  await using echo = startEcho();
  await using proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${echo.port}`]);
  const client = await RawClient.open(proxy.port, "/", [OFFER]);
  assert.doesNotMatch(client.head, /Sec-WebSocket-Extensions/i);
  await client.write(clientFrame(2, compress(prose(10)), { rsv: 4 }));
  assert.equal(await within(client.readCloseCode(), 5000, "RSV1 without the option"), 1002);
  client.close();
});

Deno.test("--permessage-deflate: inflated messages queued behind a slow target reach it intact", async () => {
  // Each inflated message (a buffer of its own) is freed once written; while the target does not
  // read, they wait in the socket's queue and must stay whole until then.
  const messages = Array.from({ length: 240 }, (_, index) => {
    const message = prose(64 * 1024);
    message.set(encoder.encode(`message ${index} `));
    return message;
  });
  const sent = concatBytes(messages);
  let received: Uint8Array = new Uint8Array(0);
  const done = Promise.withResolvers<void>();
  await using target = startTarget(async (conn) => {
    await new Promise((resolve) => setTimeout(resolve, 500));
    const buffer = new Uint8Array(65536);
    const pieces: Uint8Array[] = [];
    let total = 0;
    while (total < sent.length) {
      const count = await conn.read(buffer);
      if (count === null) break;
      pieces.push(buffer.slice(0, count));
      total += count;
    }
    received = concatBytes(pieces);
    done.resolve();
  });
  await using proxy = await startProxy([
    "--permessage-deflate",
    "127.0.0.1:0",
    `127.0.0.1:${target.port}`,
  ]);
  const ws = await openCompressing(proxy.port, { threshold: 0 });
  for (const message of messages) ws.send(message);
  await within(done.promise, 15_000, "the target's reads");
  assert.equal(received.length, sent.length);
  assert.equal(firstDifference(received, sent), -1);
  ws.close(1000);
  await within(new Promise((resolve) => ws.once("close", resolve)), 5000, "close");
});

/**
 * The target sends `data` as fast as it can to a compressing client that does not read for
 * 500 ms, so that the proxy's messages wait in its queue; checks that all of it arrives intact.
 */
async function deliverToSlowClient(data: Uint8Array): Promise<void> {
  await using target = startTarget(async (conn) => {
    // Conn.write() may take part of a chunk: the rest is written again.
    for (let at = 0; at < data.length;) at += await conn.write(data.subarray(at, at + 65536));
    await conn.readable.cancel().catch(() => {});
  });
  await using proxy = await startProxy([
    "--permessage-deflate",
    "127.0.0.1:0",
    `127.0.0.1:${target.port}`,
  ]);
  const pieces: Uint8Array[] = [];
  let total = 0;
  let closed: Promise<unknown> = Promise.resolve();
  const ws = await openCompressing(proxy.port, true, (ws) => {
    // The target closes once it has written everything, and the proxy then closes the session.
    closed = new Promise((resolve) => ws.once("close", resolve));
    ws.on("message", (message: Buffer) => {
      pieces.push(new Uint8Array(message));
      total += message.length;
    });
  });
  // Not read for a while: the proxy's writes to the client queue up.
  (ws as unknown as { _socket: { pause(): void; resume(): void } })._socket.pause();
  await new Promise((resolve) => setTimeout(resolve, 500));
  (ws as unknown as { _socket: { pause(): void; resume(): void } })._socket.resume();
  const deadline = Date.now() + 15_000;
  while (total < data.length && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const received = concatBytes(pieces);
  assert.equal(received.length, data.length);
  assert.equal(firstDifference(received, data), -1);
  ws.close(1000);
  await within(closed, 5000, "close");
}

Deno.test("--permessage-deflate: compressed target data queued behind a slow client reaches it intact", async () => {
  // Each compressed message is freed once written, the target's chunk as soon as it is
  // compressed; while the client does not read, the messages wait in the socket's queue.
  // Lines that compress about 2:1, so that the compressed messages outgrow the kernel's buffers.
  const hex = (bytes: Uint8Array) =>
    Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0"));
  const random = new Uint8Array(8 * 400_000);
  for (let at = 0; at < random.length; at += 65536) {
    crypto.getRandomValues(random.subarray(at, at + 65536));
  }
  const lines = Array.from(
    { length: 400_000 },
    (_, index) => `line ${index} ${hex(random.subarray(index * 8, index * 8 + 8)).join("")}\n`,
  );
  await deliverToSlowClient(encoder.encode(lines.join("")));
});

Deno.test("--permessage-deflate: a target read sent as compressed and plain messages, queued behind a slow client, reaches it intact", async () => {
  // 256 KiB of random bytes (sent as they are: compressing does not help), then 64 KiB of one
  // repeated byte (compressed), over and over. A 256 KiB read becomes four messages; with five
  // blocks to the cycle, every fifth read or so ends in a compressed one after plain ones. The
  // read's buffer may be freed only once its last message is written: the plain ones are views.
  const data = new Uint8Array(16 * 1024 * 1024);
  for (let at = 0, block = 0; at < data.length; at += 65536, block++) {
    if (block % 5 === 4) data.fill(block % 251, at, at + 65536);
    else crypto.getRandomValues(data.subarray(at, at + 65536));
  }
  await deliverToSlowClient(data);
});
