import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Socket } from "node:net";
// @ts-types="npm:@types/ws@8.18.2"
import { WebSocketServer } from "ws";
import {
  type ControlOpcode,
  type DataOpcode,
  encodeCloseFrame,
  encodeFrame,
  encodeFrameHeader,
  encodePingFrame,
  encodePongFrame,
  frameHeaderSize,
  FrameReader,
  isValidCloseCode,
  unmask,
  writeFrameHeader,
} from "../src/websocket/framer.ts";
import { hasSimdUnmask, SIMD_MIN, unmaskWords } from "../src/websocket/unmask.ts";
import { clientFrame, concatBytes, deadline, RawClient } from "./_perf_helpers.ts";

interface Recorded {
  data: { payload: Uint8Array; opcode: DataOpcode; fin: boolean }[];
  control: { opcode: ControlOpcode; payload: Uint8Array }[];
  errors: { code: number; reason: string }[];
}

function recordingReader(maxMessageSize = 0): { reader: FrameReader; seen: Recorded } {
  const seen: Recorded = { data: [], control: [], errors: [] };
  const reader = new FrameReader({
    maxMessageSize,
    onData: (payload, opcode, fin) => seen.data.push({ payload: payload.slice(), opcode, fin }),
    onControl: (opcode, payload) => seen.control.push({ opcode, payload }),
    onError: (code, reason) => seen.errors.push({ code, reason }),
  });
  return { reader, seen };
}

function pattern(length: number, seed = 1): Uint8Array {
  const bytes = new Uint8Array(length);
  let x = seed;
  for (let i = 0; i < length; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    bytes[i] = x >>> 24;
  }
  return bytes;
}

/** Pushes `bytes` in pieces of the given sizes (cycled), each copied to a fresh odd offset. */
function pushInPieces(reader: FrameReader, bytes: Uint8Array, sizes: readonly number[]): void {
  let at = 0;
  let turn = 0;
  while (at < bytes.length) {
    const size = Math.max(1, sizes[turn++ % sizes.length]!);
    const piece = bytes.subarray(at, at + size);
    const backing = new Uint8Array(piece.length + 3);
    const shifted = backing.subarray(turn % 4, turn % 4 + piece.length);
    shifted.set(piece);
    reader.push(shifted);
    at += size;
  }
}

Deno.test("FrameReader.push() forwards a masked binary frame's payload unmasked", () => {
  const { reader, seen } = recordingReader();
  const payload = pattern(1000);
  reader.push(clientFrame(2, payload));
  assert.equal(seen.errors.length, 0);
  assert.equal(seen.data.length, 1);
  assert.deepEqual(seen.data[0], { payload, opcode: 2, fin: true });
});

Deno.test("FrameReader.push() gives the same bytes for any split of the input", () => {
  const payloads = [pattern(0), pattern(5, 2), pattern(125, 3), pattern(126, 4), pattern(70000, 5)];
  const stream = concatBytes([
    ...payloads.map((payload, i) => clientFrame(2, payload, { mask: [i, 0x81, 0x7e, 0xff] })),
    clientFrame(1, "héllo wörld ✓", { fin: false }),
    clientFrame(9, "ping!"),
    clientFrame(0, " ünïcode 🎉"),
  ]);
  const expected = concatBytes([...payloads, new TextEncoder().encode("héllo wörld ✓ ünïcode 🎉")]);
  for (const sizes of [[1], [2, 3], [7], [13, 1, 4096], [65536], [3, 70001]]) {
    const { reader, seen } = recordingReader();
    pushInPieces(reader, stream, sizes);
    assert.deepEqual(seen.errors, [], `split ${sizes}`);
    const joined = concatBytes(seen.data.map((d) => d.payload));
    assert.equal(firstDifference(joined, expected), -1, `split ${sizes}`);
    assert.equal(seen.data.filter((d) => d.fin).length, 6, `split ${sizes}`);
    assert.deepEqual(seen.control.map((c) => c.opcode), [9]);
    assert.equal(new TextDecoder().decode(seen.control[0]!.payload), "ping!");
    assert.ok(seen.data.filter((d) => d.fin).every((d, i) => d.opcode === (i < 5 ? 2 : 1)));
  }
});

Deno.test("FrameReader.push() forwards a large frame piece by piece, fin on the last", () => {
  const { reader, seen } = recordingReader();
  const payload = pattern(200_000);
  const frame = clientFrame(2, payload);
  reader.push(frame.subarray(0, 50_000));
  assert.equal(seen.data.length, 1);
  assert.equal(seen.data[0]!.fin, false);
  assert.equal(seen.data[0]!.payload.length, 50_000 - 14);
  reader.push(frame.subarray(50_000));
  assert.equal(seen.data.length, 2);
  assert.equal(seen.data[1]!.fin, true);
  assert.equal(firstDifference(concatBytes(seen.data.map((d) => d.payload)), payload), -1);
});

Deno.test("FrameReader.push() ends a message with an empty final continuation", () => {
  const { reader, seen } = recordingReader();
  reader.push(concatBytes([clientFrame(2, "ab", { fin: false }), clientFrame(0, "")]));
  assert.deepEqual(seen.data.map((d) => [d.payload.length, d.fin]), [[2, false], [0, true]]);
});

Deno.test("FrameReader.push() accepts 16- and 64-bit length forms for short payloads", () => {
  const { reader, seen } = recordingReader();
  reader.push(clientFrame(2, "x", { lengthForm: 16 }));
  reader.push(clientFrame(2, "y", { lengthForm: 64 }));
  assert.deepEqual(seen.errors, []);
  assert.equal(new TextDecoder().decode(concatBytes(seen.data.map((d) => d.payload))), "xy");
});

Deno.test("FrameReader.push() stops after a close frame and reports it", () => {
  const { reader, seen } = recordingReader();
  reader.push(
    concatBytes([clientFrame(8, new Uint8Array([0x03, 0xe8, 0x6f, 0x6b])), clientFrame(2, "z")]),
  );
  assert.equal(reader.done, true);
  assert.equal(seen.data.length, 0);
  assert.deepEqual(seen.control, [{
    opcode: 8,
    payload: new Uint8Array([0x03, 0xe8, 0x6f, 0x6b]),
  }]);
});

Deno.test("FrameReader.push() counts maxMessageSize over a whole fragmented message", () => {
  const { reader, seen } = recordingReader(1000);
  reader.push(clientFrame(2, pattern(600), { fin: false }));
  reader.push(clientFrame(0, pattern(400), { fin: true }));
  assert.equal(seen.errors.length, 0);
  reader.push(clientFrame(2, pattern(600), { fin: false }));
  reader.push(clientFrame(0, pattern(401), { fin: true }));
  assert.deepEqual(seen.errors.map((e) => e.code), [1009]);
  assert.equal(reader.done, true);
});

Deno.test("FrameReader.push() validates UTF-8 split across frames and chunks", () => {
  const { reader, seen } = recordingReader();
  const euro = new TextEncoder().encode("€"); // 3 bytes
  reader.push(clientFrame(1, euro.subarray(0, 1), { fin: false }));
  pushInPieces(reader, clientFrame(0, euro.subarray(1)), [1]);
  assert.deepEqual(seen.errors, []);
  const broken = recordingReader();
  broken.reader.push(clientFrame(1, euro.subarray(0, 2)));
  assert.deepEqual(broken.seen.errors.map((e) => e.code), [1007]);
  assert.equal(broken.seen.data.length, 0, "the truncated piece is not forwarded");
});

Deno.test("unmask() matches a byte-wise XOR at every offset and phase", () => {
  const mask = new Uint8Array([0x12, 0x34, 0x56, 0x78]);
  for (let offset = 0; offset < 4; offset++) {
    for (let phase = 0; phase < 4; phase++) {
      for (const length of [0, 1, 3, 4, 5, 17, 64]) {
        const source = pattern(length, offset + phase + length);
        const backing = new Uint8Array(length + 8);
        const data = backing.subarray(offset, offset + length);
        data.set(source);
        unmask(data, mask, phase);
        const expected = source.map((b, i) => b ^ mask[(phase + i) & 3]!);
        assert.deepEqual(data, expected, `offset ${offset} phase ${phase} length ${length}`);
      }
    }
  }
});

Deno.test("unmask() goes through WebAssembly SIMD from SIMD_MIN bytes and matches the JS loop", () => {
  assert.ok(hasSimdUnmask(), "Deno has WebAssembly SIMD: the fast path must load");
  const mask = new Uint8Array([0x9a, 0x0b, 0xfe, 0x41]);
  // Around the threshold, both loops of the module (64 and 16 bytes), and over its 64 KiB window.
  const lengths = [SIMD_MIN - 1, SIMD_MIN, SIMD_MIN + 13, 4095, 65535, 65536, 65537, 200_003];
  for (const length of lengths) {
    for (let offset = 0; offset < 4; offset++) {
      for (let phase = 0; phase < 4; phase++) {
        const source = pattern(length, length + offset * 4 + phase);
        const fast = new Uint8Array(length + 4).subarray(offset, offset + length);
        const slow = new Uint8Array(length + 4).subarray(offset, offset + length);
        fast.set(source);
        slow.set(source);
        unmask(fast, mask, phase);
        unmaskWords(slow, mask, phase);
        const label = `length ${length} offset ${offset} phase ${phase}`;
        assert.equal(firstDifference(fast, slow), -1, label);
        assert.equal(
          fast[length - 1],
          source[length - 1]! ^ mask[(phase + length - 1) & 3]!,
          label,
        );
      }
    }
  }
});

Deno.test("FrameReader unmasks a 300 KB frame pushed in odd pieces (the SIMD path across pushes)", () => {
  const payload = pattern(300_000, 7);
  const { reader, seen } = recordingReader();
  pushInPieces(reader, clientFrame(2, payload), [70_001, 1_023, 65_536, 5, 99_999]);
  assert.deepEqual(seen.errors, []);
  assert.equal(firstDifference(concatBytes(seen.data.map((piece) => piece.payload)), payload), -1);
  assert.equal(seen.data.at(-1)?.fin, true);
});

/**
 * The first index where `a` and `b` differ (the shorter length if one is a prefix), or -1:
 * assert.deepEqual on arrays of 100 KB and more spends minutes diffing them when they differ.
 */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const length = Math.min(a.length, b.length);
  for (let index = 0; index < length; index++) if (a[index] !== b[index]) return index;
  return a.length === b.length ? -1 : length;
}

Deno.test("encodeFrameHeader() picks the 7-, 16- and 64-bit length forms at the limits", () => {
  assert.deepEqual(encodeFrameHeader(2, 125), new Uint8Array([0x82, 125]));
  assert.deepEqual(encodeFrameHeader(2, 126), new Uint8Array([0x82, 126, 0, 126]));
  assert.deepEqual(encodeFrameHeader(1, 65535), new Uint8Array([0x81, 126, 0xff, 0xff]));
  assert.deepEqual(
    encodeFrameHeader(2, 65536),
    new Uint8Array([0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
  );
  assert.deepEqual(encodeFrameHeader(2, 5, false), new Uint8Array([0x02, 5]));
  assert.deepEqual([frameHeaderSize(125), frameHeaderSize(126), frameHeaderSize(65536)], [
    2,
    4,
    10,
  ]);
});

Deno.test("writeFrameHeader() writes into headroom just before the payload", () => {
  const buffer = new Uint8Array(10 + 300);
  buffer.fill(7, 10);
  const start = writeFrameHeader(buffer, 10, 2, 300);
  assert.equal(start, 6);
  assert.deepEqual(buffer.subarray(6, 10), new Uint8Array([0x82, 126, 1, 44]));
  const { reader, seen } = recordingReader();
  // Server frames are unmasked; re-mask with a zero mask to read it back with the server parser.
  const masked = concatBytes([
    new Uint8Array([0x82, 0xfe, 1, 44, 0, 0, 0, 0]),
    buffer.subarray(10),
  ]);
  reader.push(masked);
  assert.deepEqual(seen.data[0]!.payload, buffer.subarray(10));
});

Deno.test("encodeCloseFrame() encodes code and reason, cut to 123 bytes at a character", () => {
  assert.deepEqual(encodeCloseFrame(), new Uint8Array([0x88, 0]));
  assert.deepEqual(encodeCloseFrame(1000, "ok"), new Uint8Array([0x88, 4, 0x03, 0xe8, 0x6f, 0x6b]));
  const long = encodeCloseFrame(1011, "é".repeat(100));
  assert.equal(long[1], 124); // 2 + 122: 61 two-byte characters fit in 123 bytes
  assert.doesNotThrow(() => new TextDecoder("utf-8", { fatal: true }).decode(long.subarray(4)));
});

Deno.test("encodePingFrame() and encodePongFrame() refuse payloads over 125 bytes", () => {
  assert.deepEqual(encodePingFrame(new Uint8Array([1])), new Uint8Array([0x89, 1, 1]));
  assert.deepEqual(encodePongFrame(), new Uint8Array([0x8a, 0]));
  assert.throws(() => encodePingFrame(new Uint8Array(126)), RangeError);
  assert.deepEqual(encodeFrame(2, new Uint8Array([9])), new Uint8Array([0x82, 1, 9]));
});

Deno.test("isValidCloseCode() accepts the codes ws accepts", () => {
  const valid = [1000, 1001, 1002, 1003, 1007, 1008, 1011, 1014, 3000, 4999];
  const invalid = [0, 999, 1004, 1005, 1006, 1015, 2999, 5000];
  assert.ok(valid.every(isValidCloseCode));
  assert.ok(!invalid.some(isValidCloseCode));
});

// ---- Same bytes, same close code: the framer against a real `ws` server over real sockets ----

const MAX_MESSAGE = 1000;

/** Protocol cases: raw bytes after the handshake and the close code both servers must send. */
const PROTOCOL_CASES: readonly { name: string; bytes: Uint8Array; code: number }[] = [
  { name: "unmasked frame", bytes: clientFrame(2, "a", { masked: false }), code: 1002 },
  { name: "RSV1 set", bytes: clientFrame(2, "a", { rsv: 4 }), code: 1002 },
  { name: "RSV2 set", bytes: clientFrame(2, "a", { rsv: 2 }), code: 1002 },
  { name: "RSV3 set", bytes: clientFrame(2, "a", { rsv: 1 }), code: 1002 },
  { name: "reserved data opcode 3", bytes: clientFrame(3, "a"), code: 1002 },
  { name: "reserved control opcode 11", bytes: clientFrame(11, "a"), code: 1002 },
  { name: "continuation without a message", bytes: clientFrame(0, "a"), code: 1002 },
  {
    name: "new data frame mid-message",
    bytes: concatBytes([clientFrame(2, "a", { fin: false }), clientFrame(1, "b")]),
    code: 1002,
  },
  { name: "fragmented ping", bytes: clientFrame(9, "a", { fin: false }), code: 1002 },
  { name: "ping of 126 bytes", bytes: clientFrame(9, new Uint8Array(126)), code: 1002 },
  { name: "close of 1 byte", bytes: clientFrame(8, new Uint8Array([3])), code: 1002 },
  { name: "close code 999", bytes: clientFrame(8, new Uint8Array([3, 231])), code: 1002 },
  { name: "close code 1005", bytes: clientFrame(8, new Uint8Array([3, 237])), code: 1002 },
  { name: "close code 1006", bytes: clientFrame(8, new Uint8Array([3, 238])), code: 1002 },
  { name: "close code 5000", bytes: clientFrame(8, new Uint8Array([19, 136])), code: 1002 },
  {
    name: "close reason not UTF-8",
    bytes: clientFrame(8, new Uint8Array([3, 232, 0xc3, 0x28])),
    code: 1007,
  },
  { name: "text not UTF-8", bytes: clientFrame(1, new Uint8Array([0xff, 0x41])), code: 1007 },
  {
    name: "text ending mid-character",
    bytes: clientFrame(1, new Uint8Array([0x41, 0xe2, 0x82])),
    code: 1007,
  },
  { name: "message over the limit", bytes: clientFrame(2, new Uint8Array(1001)), code: 1009 },
  {
    name: "fragments over the limit",
    bytes: concatBytes([
      clientFrame(2, new Uint8Array(600), { fin: false }),
      clientFrame(0, new Uint8Array(401)),
    ]),
    code: 1009,
  },
  {
    name: "64-bit length over 2^53 - 1",
    bytes: clientFrame(2, new Uint8Array(0), { lengthForm: 64, claimedLength: 2 ** 53 }),
    code: 1009,
  },
  { name: "close 1000 is echoed", bytes: clientFrame(8, new Uint8Array([3, 232])), code: 1000 },
  { name: "close 4999 is echoed", bytes: clientFrame(8, new Uint8Array([19, 135])), code: 4999 },
  { name: "empty close is echoed empty", bytes: clientFrame(8), code: 1005 },
  {
    name: "valid traffic then close",
    bytes: concatBytes([
      clientFrame(1, "é", { fin: false }),
      clientFrame(9, "p"),
      clientFrame(0, "ok"),
      clientFrame(2, new Uint8Array(1000)),
      clientFrame(8, new Uint8Array([11, 184])),
    ]),
    code: 3000,
  },
];

function acceptKey(key: string): string {
  return createHash("sha1").update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
}

/** A server that answers the handshake itself and runs FrameReader on the raw socket. */
function framerServer(): { server: http.Server; sockets: Set<Socket> } {
  const server = http.createServer();
  const sockets = new Set<Socket>();
  server.on("upgrade", (request: http.IncomingMessage, socket: Socket, head: Buffer) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.write(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Accept: ${acceptKey(String(request.headers["sec-websocket-key"]))}\r\n\r\n`,
    );
    const reader = new FrameReader({
      maxMessageSize: MAX_MESSAGE,
      onData: (payload, opcode, fin) => socket.write(encodeFrame(fin ? opcode : 0, payload)),
      onControl: (opcode, payload) => {
        if (opcode === 9) socket.write(encodePongFrame(payload));
        if (opcode === 8) {
          const code = payload.length >= 2 ? (payload[0]! << 8) | payload[1]! : undefined;
          socket.end(encodeCloseFrame(code));
        }
      },
      onError: (code) => socket.end(encodeCloseFrame(code)),
    });
    socket.on("error", () => socket.destroy());
    if (head.length > 0) reader.push(head);
    socket.on("data", (chunk: Buffer) => reader.push(chunk));
    socket.on("end", () => socket.destroy());
  });
  return { server, sockets };
}

/** A server that hands the upgrade to `ws` with the same limit, echoing messages. */
function wsServer(): { server: http.Server; wss: WebSocketServer } {
  const server = http.createServer();
  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_MESSAGE });
  server.on("upgrade", (request, socket, head) => {
    wss.handleUpgrade(request, socket, head, (ws) => {
      ws.on("error", () => {});
      ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
    });
  });
  return { server, wss };
}

async function listen(server: http.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return (server.address() as AddressInfo).port;
}

async function closeCodeFor(port: number, bytes: Uint8Array): Promise<number | null> {
  const client = await RawClient.open(port);
  try {
    await client.write(bytes);
    return await deadline(client.readCloseCode(), 5000, "close frame from the server");
  } finally {
    client.close();
  }
}

Deno.test("FrameReader answers protocol cases with the same close codes as a ws server", async () => {
  const framer = framerServer();
  const reference = wsServer();
  const framerPort = await listen(framer.server);
  const wsPort = await listen(reference.server);
  try {
    for (const testCase of PROTOCOL_CASES) {
      const fromWs = await closeCodeFor(wsPort, testCase.bytes);
      const fromFramer = await closeCodeFor(framerPort, testCase.bytes);
      assert.equal(fromWs, testCase.code, `ws, ${testCase.name}`);
      assert.equal(fromFramer, testCase.code, `framer, ${testCase.name}`);
    }
  } finally {
    for (const client of reference.wss.clients) client.terminate();
    reference.wss.close();
    for (const socket of framer.sockets) socket.destroy();
    await new Promise((resolve) => framer.server.close(resolve));
    await new Promise((resolve) => reference.server.close(resolve));
  }
});

Deno.test("FrameReader.fragmented tells a multi-frame message from a frame split in chunks", () => {
  const seen: boolean[] = [];
  const reader: FrameReader = new FrameReader({
    onData: () => seen.push(reader.fragmented),
    onControl: () => {},
    onError: (code) => assert.fail(`unexpected close ${code}`),
  });
  const single = clientFrame(2, pattern(1000));
  reader.push(single.subarray(0, 300));
  reader.push(single.subarray(300));
  reader.push(clientFrame(2, "ab", { fin: false }));
  reader.push(clientFrame(0, "cd"));
  assert.deepEqual(seen, [false, false, true, true]);
});
