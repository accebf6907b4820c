import assert from "node:assert/strict";
import { startEcho, startProxy, upgradeRequest, within } from "./_helpers.ts";

const decoder = new TextDecoder();
const encoder = new TextEncoder();
const PYTHON = "/usr/bin/python3";
const INTEROP = new URL("./testdata/interop/", import.meta.url).pathname;

interface Check {
  sent: number;
  received: number;
  equal: boolean;
}

/** Runs a Python client script against `url` and returns its JSON results. */
async function runPythonClient(script: string, url: string): Promise<Record<string, unknown>> {
  const child = new Deno.Command(PYTHON, {
    args: [`${INTEROP}${script}`, url],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const output = await within(child.output(), 30000, `${script} ${url}`).catch((error) => {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    throw error;
  });
  const stdout = decoder.decode(output.stdout);
  assert.equal(output.code, 0, `${script} failed:\n${stdout}\n${decoder.decode(output.stderr)}`);
  return JSON.parse(stdout);
}

function assertEchoed(results: Record<string, unknown>, names: string[]): void {
  for (const name of names) {
    const check = results[name] as Check | undefined;
    assert.ok(check, `no result for '${name}': ${JSON.stringify(results)}`);
    assert.ok(check.sent > 0, name);
    assert.deepEqual(check, { sent: check.sent, received: check.sent, equal: true }, name);
  }
}

Deno.test("websocket-client (Python) sends binary, text, fragmented and 1 MiB messages through the proxy", async () => {
  await using echo = startEcho();
  await using proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${echo.port}`]);
  const results = await runPythonClient("websocket_client.py", `ws://127.0.0.1:${proxy.port}/`);
  assert.equal(results["protocol"], "binary");
  assertEchoed(results, ["binary", "text", "fragmented", "fragmented_text", "one_mib"]);
  assert.deepEqual(results["close"], [8, 1000, "done"]);
});

Deno.test("websockets (Python asyncio) sends bytes, str, async-iterator fragments and 1 MiB through the proxy", async () => {
  await using echo = startEcho();
  await using proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${echo.port}`]);
  const results = await runPythonClient("websockets_client.py", `ws://127.0.0.1:${proxy.port}/`);
  assert.equal(results["protocol"], "binary");
  assert.deepEqual(results["extensions"], [], "compression is off without --permessage-deflate");
  assertEchoed(results, ["binary", "text", "fragmented", "fragmented_text", "one_mib"]);
  assert.equal(results["ping"], true);
  assert.equal(results["close_code"], 1000);
  assert.equal(results["close_reason"], "done");
});

Deno.test("websockets (Python asyncio) with --permessage-deflate: every message compressed, all echoed", async () => {
  await using echo = startEcho();
  await using proxy = await startProxy([
    "--permessage-deflate",
    "127.0.0.1:0",
    `127.0.0.1:${echo.port}`,
  ]);
  const results = await runPythonClient("websockets_client.py", `ws://127.0.0.1:${proxy.port}/`);
  assert.deepEqual(results["extensions"], ["permessage-deflate"]);
  assertEchoed(results, ["binary", "text", "fragmented", "fragmented_text", "one_mib"]);
  assert.equal(results["ping"], true);
  assert.equal(results["close_code"], 1000);
});

// Raw frames: the proxy's protocol handling (done by `ws`) seen byte by byte.

const OPCODE = { continuation: 0x0, text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa };

/** Encodes one client frame (masked unless `masked` is false; payload ≤ 65535 bytes). */
function frame(
  opcode: number,
  payload: Uint8Array | string,
  options: { fin?: boolean; masked?: boolean } = {},
): Uint8Array {
  const data = typeof payload === "string" ? encoder.encode(payload) : payload;
  const masked = options.masked ?? true;
  const header = [(options.fin ?? true ? 0x80 : 0) | opcode];
  const maskBit = masked ? 0x80 : 0;
  if (data.length < 126) header.push(maskBit | data.length);
  else header.push(maskBit | 126, data.length >> 8, data.length & 0xff);
  const mask = masked ? crypto.getRandomValues(new Uint8Array(4)) : new Uint8Array(0);
  const body = data.map((byte, index) => masked ? byte ^ (mask[index % 4] as number) : byte);
  return new Uint8Array([...header, ...mask, ...body]);
}

interface ServerFrame {
  fin: boolean;
  opcode: number;
  payload: Uint8Array;
}

/** A raw WebSocket connection to the proxy: upgrade done, frames read one by one. */
async function rawSocket(port: number): Promise<{
  send(bytes: Uint8Array): Promise<void>;
  next(ms?: number): Promise<ServerFrame | null>;
  close(): void;
}> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  let buffered = new Uint8Array(0);
  const read = async (deadline: number): Promise<boolean> => {
    const chunk = new Uint8Array(65536);
    const count = await within(conn.read(chunk), Math.max(1, deadline - Date.now()), "raw read");
    if (count === null) return false;
    const joined = new Uint8Array(buffered.length + count);
    joined.set(buffered);
    joined.set(chunk.subarray(0, count), buffered.length);
    buffered = joined;
    return true;
  };
  await conn.write(encoder.encode(upgradeRequest("/", ["Sec-WebSocket-Protocol: binary"])));
  const deadline = Date.now() + 5000;
  let end = -1;
  while ((end = decoder.decode(buffered).indexOf("\r\n\r\n")) < 0) {
    if (!await read(deadline)) throw new Error("closed during the handshake");
  }
  const head = decoder.decode(buffered).slice(0, end);
  assert.match(head, /^HTTP\/1\.1 101 /);
  buffered = buffered.slice(encoder.encode(head).length + 4);

  const next = async (ms = 5000): Promise<ServerFrame | null> => {
    const limit = Date.now() + ms;
    for (;;) {
      if (buffered.length >= 2) {
        const second = buffered[1] as number;
        assert.equal(second & 0x80, 0, "server frames must not be masked");
        let length = second & 0x7f;
        let offset = 2;
        if (length === 126 && buffered.length >= 4) {
          length = ((buffered[2] as number) << 8) | (buffered[3] as number);
          offset = 4;
        } else if (length === 127 && buffered.length >= 10) {
          length = Number(
            new DataView(buffered.buffer, buffered.byteOffset + 2, 8).getBigUint64(0),
          );
          offset = 10;
        }
        if (length < 126 || offset > 2) {
          if (buffered.length >= offset + length) {
            const first = buffered[0] as number;
            const result = {
              fin: (first & 0x80) !== 0,
              opcode: first & 0x0f,
              payload: buffered.slice(offset, offset + length),
            };
            buffered = buffered.slice(offset + length);
            return result;
          }
        }
      }
      if (!await read(limit)) return null;
    }
  };
  return {
    send: async (bytes) => {
      let offset = 0;
      while (offset < bytes.length) offset += await conn.write(bytes.subarray(offset));
    },
    next,
    close: () => {
      try {
        conn.close();
      } catch {
        // Closed by the proxy.
      }
    },
  };
}

function closeCode(received: ServerFrame | null): number | undefined {
  if (received === null || received.opcode !== OPCODE.close) return undefined;
  return ((received.payload[0] as number) << 8) | (received.payload[1] as number);
}

Deno.test("proxy closes with 1002 on an unmasked client frame", async () => {
  await using echo = startEcho();
  await using proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${echo.port}`]);
  const socket = await rawSocket(proxy.port);
  try {
    await socket.send(frame(OPCODE.binary, "unmasked", { masked: false }));
    const received = await socket.next();
    assert.equal(received?.opcode, OPCODE.close, JSON.stringify(received));
    assert.equal(closeCode(received), 1002);
    assert.equal(await socket.next(), null, "the proxy closes the connection after 1002");
  } finally {
    socket.close();
  }
});

Deno.test("proxy answers a ping with a pong of the same payload", async () => {
  await using echo = startEcho();
  await using proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${echo.port}`]);
  const socket = await rawSocket(proxy.port);
  try {
    for (const payload of ["", "abef", "x".repeat(125)]) {
      await socket.send(frame(OPCODE.ping, payload));
      const pong = await socket.next();
      assert.equal(pong?.opcode, OPCODE.pong, JSON.stringify(pong));
      assert.equal(decoder.decode(pong?.payload), payload);
    }
    await socket.send(frame(OPCODE.close, new Uint8Array([0x03, 0xe8])));
    assert.equal(closeCode(await socket.next()), 1000);
  } finally {
    socket.close();
  }
});

Deno.test("proxy answers a ping in the middle of a fragmented message and forwards the whole message", async () => {
  await using echo = startEcho();
  await using proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${echo.port}`]);
  const socket = await rawSocket(proxy.port);
  try {
    await socket.send(frame(OPCODE.binary, "abc", { fin: false }));
    await socket.send(frame(OPCODE.ping, "abef"));
    const pong = await socket.next();
    assert.equal(pong?.opcode, OPCODE.pong);
    assert.equal(decoder.decode(pong?.payload), "abef");
    await socket.send(frame(OPCODE.continuation, "de", { fin: false }));
    await socket.send(frame(OPCODE.continuation, "f"));
    let echoed = "";
    while (echoed.length < 6) {
      const received = await socket.next();
      assert.equal(received?.opcode, OPCODE.binary, JSON.stringify(received));
      echoed += decoder.decode(received?.payload);
    }
    assert.equal(echoed, "abcdef");
  } finally {
    socket.close();
  }
});

Deno.test("proxy closes with 1002 on a continuation without a message and on a new frame mid-message", async () => {
  await using echo = startEcho();
  await using proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${echo.port}`]);
  const cases: Uint8Array[][] = [
    [frame(OPCODE.continuation, "orphan")],
    [frame(OPCODE.binary, "first", { fin: false }), frame(OPCODE.binary, "second")],
  ];
  for (const frames of cases) {
    const socket = await rawSocket(proxy.port);
    try {
      for (const bytes of frames) await socket.send(bytes);
      assert.equal(closeCode(await socket.next()), 1002);
    } finally {
      socket.close();
    }
  }
});
