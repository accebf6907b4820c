import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import {
  connectClient,
  descriptorsOf,
  holdBlackHole,
  holdPort,
  randomBytes,
  rawExchange,
  rssOf,
  startEcho,
  startProxy,
  startTarget,
  upgradeRequest,
  within,
} from "./_helpers.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

Deno.test("proxy forwards binary and text both ways and echoes the client's close code", async () => {
  await using echo = startEcho();
  await using proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${echo.port}`]);
  const client = await connectClient(`ws://127.0.0.1:${proxy.port}/`, { protocols: ["binary"] });
  assert.equal(client.ws.protocol, "binary");
  client.ws.send(encoder.encode("hello"));
  assert.deepEqual(await client.next(), encoder.encode("hello"));
  client.ws.send("text é");
  // Text is forwarded as its UTF-8 bytes; the target's answer comes back as binary.
  assert.deepEqual(await client.next(), encoder.encode("text é"));
  client.ws.close(4001, "custom");
  assert.deepEqual(await within(client.closed, 5000, "close"), { code: 4001, reason: "custom" });
  await proxy.waitFor(/Plain non-SSL \(ws:\/\/\) WebSocket connection/);
  await proxy.waitFor(/connecting to: 127\.0\.0\.1:\d+/);
});

Deno.test("proxy moves 1 MiB messages intact and splits target data into ≤64 KiB messages", async () => {
  await using echo = startEcho();
  await using proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${echo.port}`]);
  const client = await connectClient(`ws://127.0.0.1:${proxy.port}/`);
  const payload = randomBytes(1024 * 1024);
  client.ws.send(payload);
  const received = await client.receiveBytes(payload.length, 15000);
  assert.deepEqual(received, payload);
  assert.ok(client.messageSizes.every((size) => size <= 65536), `${client.messageSizes}`);
  client.ws.close();
  await client.closed;
});

Deno.test("target data queued behind a client that does not read arrives intact, in ≤64 KiB messages", async () => {
  // While the client does not read, the target's data piles up in the kernel; once it reads
  // again, the proxy reads up to 256 KiB at a time and sends each read as several messages that
  // wait in its queue: the read's buffer may be freed only once the last of them is written.
  const data = randomBytes(16 * 1024 * 1024);
  await using target = startStreamingTarget(data);
  await using proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${target.port}`]);
  const client = await connectClient(`ws://127.0.0.1:${proxy.port}/`);
  const socket = (client.ws as unknown as { _socket: { pause(): void; resume(): void } })._socket;
  socket.pause();
  await new Promise((resolve) => setTimeout(resolve, 500));
  socket.resume();
  const received = await client.receiveBytes(data.length, 20000);
  assert.equal(Buffer.compare(received, data), 0, "the bytes differ from what the target sent");
  assert.ok(client.messageSizes.every((size) => size <= 65536), `${client.messageSizes}`);
  client.ws.close();
  await client.closed;
});

Deno.test("client data behind a target that does not read, and a message fragmented across reads, arrive intact", async () => {
  // The proxy reads client data into one memory region reused by every read (borrowReads): what
  // the target socket cannot take at once must be copied before it is queued, and the pieces of
  // a fragmented message held until its last frame must be copies too. Without either copy the
  // target gets later bytes in place of earlier ones.
  const bulk = randomBytes(8 * 1024 * 1024);
  const fragments = [randomBytes(3000), randomBytes(70000), randomBytes(5)];
  const total = bulk.length + fragments.reduce((sum, part) => sum + part.length, 0);
  const received = Promise.withResolvers<Uint8Array>();
  const bulkArrived = Promise.withResolvers<void>();
  await using target = startTarget(async (conn) => {
    await new Promise((resolve) => setTimeout(resolve, 500));
    const bytes = new Uint8Array(total);
    let at = 0;
    const reader = conn.readable.getReader();
    while (at < total) {
      const { value, done } = await reader.read();
      if (done) break;
      bytes.set(value.subarray(0, total - at), at);
      at += value.length;
      if (at >= bulk.length) bulkArrived.resolve();
    }
    received.resolve(bytes.subarray(0, at));
  });
  await using proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${target.port}`]);
  const client = await connectClient(`ws://127.0.0.1:${proxy.port}/`);
  for (let at = 0; at < bulk.length; at += 65536) client.ws.send(bulk.subarray(at, at + 65536));
  // Each frame of the fragmented message in a read of its own, once the bulk is through.
  await within(bulkArrived.promise, 20000, "the bulk at the target");
  for (const [index, part] of fragments.entries()) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    client.ws.send(part, { binary: true, fin: index === fragments.length - 1 });
  }
  const got = await within(received.promise, 20000, "the target's bytes");
  assert.equal(got.length, total, "the target got a different number of bytes");
  assert.equal(Buffer.compare(got.subarray(0, bulk.length), bulk), 0, "the bulk bytes differ");
  assert.equal(
    Buffer.compare(got.subarray(bulk.length), Buffer.concat(fragments)),
    0,
    "the fragmented message differs",
  );
  client.ws.close();
  await client.closed;
});

/** A target that writes `data` to each connection, as fast as the proxy takes it. */
function startStreamingTarget(data: Uint8Array) {
  return startTarget(async (conn) => {
    // Conn.write() may take part of a chunk: the rest is written again.
    for (let at = 0; at < data.length;) at += await conn.write(data.subarray(at, at + 65536));
    await conn.readable.cancel().catch(() => {});
  });
}

Deno.test("bulk target data reaches the client through a splice pipe, closed with the session", async () => {
  // A target far ahead of the client: its reads are moved into a pipe of the client socket and
  // from there to the client (src/ops/epoll.ts, spliceTo), so the proxy holds two more pipe
  // descriptors while it streams, and none once the session is over.
  const data = randomBytes(32 * 1024 * 1024);
  await using target = startStreamingTarget(data);
  await using proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${target.port}`]);
  const before = descriptorsOf(proxy.pid, "pipe");
  const client = await connectClient(`ws://127.0.0.1:${proxy.port}/`);
  let most = before;
  const watch = setInterval(() => (most = Math.max(most, descriptorsOf(proxy.pid, "pipe"))), 5);
  try {
    const received = await client.receiveBytes(data.length, 30000);
    assert.equal(Buffer.compare(received, data), 0, "the bytes differ from what the target sent");
    assert.ok(client.messageSizes.every((size) => size <= 65536), `${client.messageSizes}`);
  } finally {
    clearInterval(watch);
  }
  assert.equal(most, before + 2, "no splice pipe while the target was ahead of the client");
  client.ws.close();
  await client.closed;
  const deadline = Date.now() + 5000;
  while (descriptorsOf(proxy.pid, "pipe") > before && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.equal(descriptorsOf(proxy.pid, "pipe"), before, "the session's splice pipe is still open");
});

Deno.test("bulk target data to a --unix-listen client is read and sent as usual, intact", async () => {
  // Splicing is for TCP clients only (src/websocket/channel.ts, spliceSink): the same stream to a
  // client on a unix socket arrives byte for byte, and the proxy opens no splice pipe for it.
  const data = randomBytes(16 * 1024 * 1024);
  await using target = startStreamingTarget(data);
  const dir = await Deno.makeTempDir();
  const path = `${dir}/proxy.sock`;
  try {
    await using proxy = await startProxy(["--unix-listen", path, `127.0.0.1:${target.port}`]);
    const before = descriptorsOf(proxy.pid, "pipe");
    const client = await connectClient(`ws+unix://${path}:/`);
    let most = before;
    const watch = setInterval(() => (most = Math.max(most, descriptorsOf(proxy.pid, "pipe"))), 5);
    try {
      const received = await client.receiveBytes(data.length, 30000);
      assert.equal(Buffer.compare(received, data), 0, "the bytes differ from what the target sent");
    } finally {
      clearInterval(watch);
    }
    assert.equal(most, before, "a splice pipe for a unix-socket client");
    client.ws.close();
    await client.closed;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("proxy closes with 1000 'Target closed' after flushing the target's last data", async () => {
  await using target = startTarget(async (conn) => {
    await conn.write(encoder.encode("bye"));
    conn.close();
  });
  await using proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${target.port}`]);
  const client = await connectClient(`ws://127.0.0.1:${proxy.port}/`);
  assert.deepEqual(await client.next(), encoder.encode("bye"));
  assert.deepEqual(await within(client.closed, 5000, "close"), {
    code: 1000,
    reason: "Target closed",
  });
});

Deno.test("proxy closes with 1011 when the target refuses the connection", async () => {
  // A port that is bound but not listening refuses every connect, and stays ours for the test.
  await using held = await holdPort("refuse");
  await using proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${held.port}`]);
  const client = await connectClient(`ws://127.0.0.1:${proxy.port}/`);
  // A refused connect closes at once; the budget only has to outlast a loaded machine, not the
  // 10 s --connect-timeout, since the log line below shows the close came from the refusal.
  assert.deepEqual(await within(client.closed, 20000, "close"), {
    code: 1011,
    reason: "Failed to connect to downstream server",
  });
  await proxy.waitFor(
    new RegExp(`Failed to connect to 127\\.0\\.0\\.1:${held.port}: .*ECONNREFUSED`),
  );
});

Deno.test("proxy gives up on a black-holed target after --connect-timeout", async () => {
  await using held = await holdBlackHole();
  const port = held.port;
  await using proxy = await startProxy([
    "127.0.0.1:0",
    `127.0.0.1:${port}`,
    "--connect-timeout",
    "1",
  ]);
  const started = Date.now();
  const client = await connectClient(`ws://127.0.0.1:${proxy.port}/`);
  const closed = await within(client.closed, 8000, "close after connect timeout");
  assert.deepEqual(closed, { code: 1011, reason: "Failed to connect to downstream server" });
  assert.ok(Date.now() - started < 5000, `took ${Date.now() - started} ms`);
  await proxy.waitFor(/Failed to connect to 127\.0\.0\.1:\d+: timed out after 1 s/);
});

Deno.test("proxy answers upstream's 400s and 405 while a concurrent session keeps working", async () => {
  await using echo = startEcho();
  await using proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${echo.port}`]);
  const client = await connectClient(`ws://127.0.0.1:${proxy.port}/`);

  const cases: [string, RegExp][] = [
    [
      upgradeRequest("/", ["Sec-WebSocket-Protocol: base64"]),
      /^HTTP\/1\.1 400 Invalid protocol selected\r\n/,
    ],
    [
      upgradeRequest("/", ["Sec-WebSocket-Protocol: chat"]),
      /^HTTP\/1\.1 400 Invalid protocol selected\r\n/,
    ],
    [
      upgradeRequest("/").replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 5"),
      /^HTTP\/1\.1 400 Unsupported protocol version 5\r\n/,
    ],
    [
      upgradeRequest("/").replace("Sec-WebSocket-Version: 13\r\n", ""),
      /^HTTP\/1\.1 400 Missing Sec-WebSocket-Version header\r\n/,
    ],
    [
      upgradeRequest("/").replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
      /^HTTP\/1\.1 400 Missing Sec-WebSocket-Key header\r\n/,
    ],
    ["GET / HTTP/1.1\r\nHost: x\r\n\r\n", /^HTTP\/1\.1 405 Method Not Allowed\r\n/],
    ["POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", /^HTTP\/1\.1 405 /],
    ["HELLO\r\n\r\n", /^HTTP\/1\.1 400 Bad request syntax\r\n/],
    [`GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(20000)}\r\n\r\n`, /^HTTP\/1\.1 431 /],
  ];
  for (const [request, expected] of cases) {
    const response = decoder.decode(await rawExchange(proxy.port, request));
    assert.match(response, expected, `request ${JSON.stringify(request.slice(0, 60))}`);
    assert.match(response, /Content-Length: \d+/);
  }
  // Browsers offering ["base64", "binary"] send "base64, binary": accepted with binary.
  const both = decoder.decode(
    await rawExchange(
      proxy.port,
      upgradeRequest("/", ["Sec-WebSocket-Protocol: base64, binary"]),
      { ms: 1000 },
    ),
  );
  assert.match(both, /^HTTP\/1\.1 101 /);
  assert.match(both, /Sec-WebSocket-Protocol: binary\r\n/i);

  client.ws.send(encoder.encode("still here"));
  assert.deepEqual(await client.next(), encoder.encode("still here"));
  client.ws.close();
});

Deno.test("proxy closes a client that never finishes its request after --header-timeout", async () => {
  await using echo = startEcho();
  await using proxy = await startProxy([
    "127.0.0.1:0",
    `127.0.0.1:${echo.port}`,
    "--header-timeout",
    "1",
  ]);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  await conn.write(encoder.encode("GET / HTTP/1.1\r\nHost: x\r\n"));
  const started = Date.now();
  const result = await within(conn.read(new Uint8Array(16)), 5000, "server closes slow client")
    .catch((
      error,
    ) => (error instanceof Deno.errors.ConnectionReset ? null : Promise.reject(error)));
  assert.equal(result, null);
  assert.ok(Date.now() - started < 4000);
  conn.close();
  // A silent client (sends nothing at all) is closed too.
  const silent = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  const silentResult = await within(silent.read(new Uint8Array(16)), 5000, "silent client")
    .catch((
      error,
    ) => (error instanceof Deno.errors.ConnectionReset ? null : Promise.reject(error)));
  assert.equal(silentResult, null);
  silent.close();
});

Deno.test("proxy closes messages above --max-message-size with 1009", async () => {
  await using echo = startEcho();
  await using proxy = await startProxy([
    "127.0.0.1:0",
    `127.0.0.1:${echo.port}`,
    "--max-message-size",
    "1024",
  ]);
  const client = await connectClient(`ws://127.0.0.1:${proxy.port}/`);
  client.ws.send(new Uint8Array(1024));
  assert.equal((await client.next() as Uint8Array).length, 1024);
  client.ws.send(new Uint8Array(1025));
  assert.equal((await within(client.closed, 5000, "1009")).code, 1009);
});

Deno.test("proxy with --strict-binary closes text messages with 1003 as upstream", async () => {
  await using echo = startEcho();
  await using proxy = await startProxy([
    "127.0.0.1:0",
    `127.0.0.1:${echo.port}`,
    "--strict-binary",
  ]);
  const client = await connectClient(`ws://127.0.0.1:${proxy.port}/`);
  client.ws.send("text");
  assert.deepEqual(await within(client.closed, 5000, "1003"), {
    code: 1003,
    reason: "Unsupported: Text frames are not supported",
  });
  assert.equal(echo.connections.length, 1);
});

Deno.test("proxy reaches a unix socket target with --unix-target", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/target.sock`;
  await using target = startTarget(undefined, { transport: "unix", path });
  await using proxy = await startProxy(["127.0.0.1:0", "--unix-target", path]);
  const client = await connectClient(`ws://127.0.0.1:${proxy.port}/`);
  client.ws.send(encoder.encode("over unix"));
  assert.deepEqual(await client.next(), encoder.encode("over unix"));
  client.ws.close();
  await client.closed;
  assert.equal(target.connections.length, 1);
  await proxy.waitFor(/connecting to unix socket: .*target\.sock/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("proxy listens on a unix socket with --unix-listen and --unix-listen-mode", async () => {
  await using echo = startEcho();
  const dir = await Deno.makeTempDir();
  const path = `${dir}/proxy.sock`;
  await Deno.writeTextFile(path, ""); // a stale non-socket file is refused
  const refused = await startProxy(["--unix-listen", path, `127.0.0.1:${echo.port}`]).then(
    () => "started",
    (error: Error) => error.message,
  );
  assert.match(refused, /exists and is not a socket/);
  await Deno.remove(path);
  await using proxy = await startProxy([
    "--unix-listen",
    path,
    "--unix-listen-mode",
    "660",
    `127.0.0.1:${echo.port}`,
  ]);
  assert.equal(proxy.address, path);
  assert.equal((await Deno.stat(path)).mode! & 0o777, 0o660);
  const conn = await Deno.connect({ transport: "unix", path });
  await conn.write(encoder.encode(upgradeRequest("/")));
  const buffer = new Uint8Array(1024);
  const count = await within(conn.read(buffer), 5000, "101 over unix") ?? 0;
  assert.match(new TextDecoder().decode(buffer.subarray(0, count)), /^HTTP\/1\.1 101 /);
  conn.close();
  proxy.kill("SIGTERM");
  assert.equal((await proxy.status).code, 0);
  await assert.rejects(Deno.stat(path), Deno.errors.NotFound);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("proxy closes sessions with 1001 and exits 0 on SIGTERM", async () => {
  await using echo = startEcho();
  const proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${echo.port}`]);
  const client = await connectClient(`ws://127.0.0.1:${proxy.port}/`);
  client.ws.send(encoder.encode("x"));
  await client.next();
  proxy.kill("SIGTERM");
  assert.equal((await within(client.closed, 5000, "1001")).code, 1001);
  const status = await within(proxy.status, 8000, "exit");
  assert.equal(status.code, 0);
});

Deno.test("SIGTERM closes connections silent for a second at once, and serves a late request", async () => {
  await using echo = startEcho();
  const proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${echo.port}`]);
  // A browser's preconnect: connected, nothing sent. Then a client whose request is still coming.
  const idle = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  await new Promise((resolve) => setTimeout(resolve, 1200));
  const late = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  await new Promise((resolve) => setTimeout(resolve, 100));
  const signalled = performance.now();
  proxy.kill("SIGTERM");

  const idleEnd = await within(idle.read(new Uint8Array(16)).catch(() => null), 5000, "idle close");
  assert.equal(idleEnd, null, "the silent connection is closed without an answer");
  const idleMs = performance.now() - signalled;
  assert.ok(idleMs < 900, `closed ${Math.round(idleMs)} ms after SIGTERM, not at its grace`);
  idle.close();

  // 400 ms after its connect, under the second a silent connection is given: served, then closed
  // with 1001 (going away) because the proxy drains.
  await new Promise((resolve) => setTimeout(resolve, 300));
  await late.write(encoder.encode(upgradeRequest("/")));
  let received = new Uint8Array(0);
  const buffer = new Uint8Array(4096);
  // A close frame (opcode 8, unmasked, short length) whose code is 1001, with any reason.
  const hasClose = () =>
    received.some((byte, i) =>
      byte === 0x88 && received[i + 2] === 0x03 && received[i + 3] === 0xe9 &&
      i + 2 + received[i + 1]! === received.length
    );
  await within(
    (async () => {
      while (!hasClose()) {
        const count = await late.read(buffer);
        if (count === null) break;
        received = new Uint8Array([...received, ...buffer.subarray(0, count)]);
      }
    })(),
    5000,
    "101, then close 1001",
  );
  late.close();
  assert.match(decoder.decode(received), /^HTTP\/1\.1 101 /);
  assert.ok(hasClose(), `a 1001 close frame after the 101: ${received.slice(-8)}`);

  assert.equal((await within(proxy.status, 8000, "exit")).code, 0);
  const exitMs = performance.now() - signalled;
  // Before this, the silent connection held the drain until its 3 s grace.
  assert.ok(exitMs < 2500, `exited ${Math.round(exitMs)} ms after SIGTERM`);
});

Deno.test("proxy --run-once exits after the first WebSocket session", async () => {
  await using echo = startEcho();
  const proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${echo.port}`, "--run-once"]);
  // A plain HTTP request does not count.
  const answer = await rawExchange(proxy.port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", { ms: 1000 });
  assert.match(decoder.decode(answer), /405/);
  const client = await connectClient(`ws://127.0.0.1:${proxy.port}/`);
  client.ws.close();
  await client.closed;
  assert.equal((await within(proxy.status, 8000, "exit after run-once")).code, 0);
});

Deno.test("proxy --idle-timeout exits when nobody connects", async () => {
  await using echo = startEcho();
  const proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${echo.port}`, "--idle-timeout", "1"]);
  const started = Date.now();
  assert.equal((await within(proxy.status, 8000, "idle exit")).code, 0);
  assert.ok(Date.now() - started >= 900);
});

Deno.test("proxy --timeout stops accepting but lets the running session finish", async () => {
  await using echo = startEcho();
  const proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${echo.port}`, "--timeout", "1"]);
  const client = await connectClient(`ws://127.0.0.1:${proxy.port}/`);
  await proxy.waitFor(/--timeout: no new connections/, 5000);
  // The listening socket closes asynchronously: allow it a moment, bounded.
  let refused = false;
  for (let attempt = 0; attempt < 20 && !refused; attempt++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port: proxy.port })).close();
      await new Promise((resolve) => setTimeout(resolve, 100));
    } catch {
      refused = true;
    }
  }
  assert.ok(refused, "new connections should be refused after --timeout");
  client.ws.send(encoder.encode("after"));
  assert.deepEqual(await client.next(), encoder.encode("after"));
  client.ws.close();
  assert.equal((await within(proxy.status, 8000, "exit after timeout")).code, 0);
});

Deno.test("proxy --heartbeat pings the client and drops one that stops answering", async () => {
  await using echo = startEcho();
  await using proxy = await startProxy([
    "127.0.0.1:0",
    `127.0.0.1:${echo.port}`,
    "--heartbeat",
    "0.3",
  ]);
  const client = await connectClient(`ws://127.0.0.1:${proxy.port}/`);
  let pings = 0;
  client.ws.on("ping", () => pings++);
  await new Promise((resolve) => setTimeout(resolve, 1000));
  assert.ok(pings >= 2, `pings: ${pings}`);
  // Stop answering: ws auto-pongs, so pause the underlying socket to play dead.
  (client.ws as unknown as { _socket: { pause(): void } })._socket.pause();
  await proxy.waitFor(/sent no pong/, 5000);
});

Deno.test("proxy --inactivity-timeout closes a session only after that long without data, pings aside", async () => {
  await using echo = startEcho();
  await using proxy = await startProxy([
    "127.0.0.1:0",
    `127.0.0.1:${echo.port}`,
    "--inactivity-timeout",
    "0.6",
    "--heartbeat",
    "0.1",
  ]);
  const busy = await connectClient(`ws://127.0.0.1:${proxy.port}/`);
  const quiet = await connectClient(`ws://127.0.0.1:${proxy.port}/`);
  const quietStart = performance.now();
  let quietClosedAfter = NaN;
  void quiet.closed.then(() => (quietClosedAfter = performance.now() - quietStart));
  // The busy one echoes a message every 150 ms for 1.5 s, 2.5 timeouts: it must stay open.
  for (let i = 0; i < 10; i++) {
    busy.ws.send(encoder.encode(`m${i}`));
    assert.deepEqual(await busy.next(2000), encoder.encode(`m${i}`), `echo ${i}`);
    await new Promise((resolve) => setTimeout(resolve, 150));
  }
  assert.equal(busy.ws.readyState, busy.ws.OPEN, "a session with traffic was closed");
  // The quiet one (pinged and ponging all along) was closed after 0.6–0.75 s.
  assert.deepEqual(await within(quiet.closed, 2000, "the quiet session to close"), {
    code: 1001,
    reason: "Idle for 0.6 s",
  });
  assert.ok(
    quietClosedAfter >= 550 && quietClosedAfter < 1300,
    `the quiet session closed after ${Math.round(quietClosedAfter)} ms`,
  );
  await proxy.waitFor(
    /No data either way for 0\.6 s: closing the session \(--inactivity-timeout\)/,
  );
  // Once the busy one falls silent it goes the same way.
  assert.deepEqual(await within(busy.closed, 2000, "the busy session to close"), {
    code: 1001,
    reason: "Idle for 0.6 s",
  });
});

Deno.test("proxy --inactivity-timeout leaves a session that is already closing to its close handshake", async () => {
  // The target hangs up at once; the client never answers the proxy's close frame.
  await using target = startTarget((conn) => Promise.resolve(conn.close()));
  await using proxy = await startProxy([
    "127.0.0.1:0",
    `127.0.0.1:${target.port}`,
    "--inactivity-timeout",
    "0.2",
  ]);
  const answer = await rawExchange(proxy.port, upgradeRequest("/"), { ms: 1200 });
  const text = new TextDecoder().decode(answer);
  assert.match(text, /^HTTP\/1\.1 101 /);
  assert.ok(text.includes("Target closed"), "no close frame for the target's end");
  assert.doesNotMatch(proxy.stderr(), /No data either way/, "closed twice, for two reasons");
});

Deno.test("proxy --record writes upstream's VNC_frame_data format", async () => {
  await using echo = startEcho();
  const dir = await Deno.makeTempDir();
  await using proxy = await startProxy([
    "127.0.0.1:0",
    `127.0.0.1:${echo.port}`,
    "--record",
    `${dir}/rec`,
  ]);
  const client = await connectClient(`ws://127.0.0.1:${proxy.port}/`);
  client.ws.send(new Uint8Array([0x61, 0x27, 0x00, 0xff, 0x5c]));
  await client.next();
  client.ws.close();
  await client.closed;
  const files = [...Deno.readDirSync(dir)].map((entry) => entry.name);
  assert.deepEqual(files, ["rec.1"]);
  const text = await within(
    (async () => {
      for (let attempt = 0; attempt < 50; attempt++) {
        const content = await Deno.readTextFile(`${dir}/rec.1`);
        if (content.endsWith("'EOF'];\n")) return content;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      return await Deno.readTextFile(`${dir}/rec.1`);
    })(),
    8000,
    "recording",
  );
  assert.match(
    text,
    /^var VNC_frame_data = \[\n'\}\d+\}a\\'\\x00\\xff\\\\',\n'\{\d+\{a\\'\\x00\\xff\\\\',\n'EOF'\];\n$/,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("proxy --traffic prints the legend and traffic characters on stdout", async () => {
  await using echo = startEcho();
  await using proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${echo.port}`, "--traffic"]);
  await proxy.waitFor(/Traffic Legend:/);
  const client = await connectClient(`ws://127.0.0.1:${proxy.port}/`);
  client.ws.send(encoder.encode("abc"));
  await client.next();
  client.ws.close();
  await client.closed;
  await within(
    (async () => {
      while (!/\}.*\{|\{.*\}/.test(proxy.stdout())) await new Promise((r) => setTimeout(r, 50));
    })(),
    5000,
    "traffic characters",
  );
  assert.match(proxy.stdout(), /[}{<>]/);
});

Deno.test("proxy memory stays bounded with a slow target (client paused)", async () => {
  // The target reads nothing; the client pushes 200 MiB. Without backpressure the proxy would
  // buffer it all.
  let release: () => void = () => {};
  const hold = new Promise<void>((resolve) => (release = resolve));
  await using target = startTarget(async () => await hold);
  await using proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${target.port}`]);
  const client = await connectClient(`ws://127.0.0.1:${proxy.port}/`);
  await target.nextConnection();
  const chunk = new Uint8Array(1024 * 1024);
  const before = rssOf(proxy.pid);
  let sent = 0;
  const deadline = Date.now() + 6000;
  while (sent < 200 && Date.now() < deadline) {
    client.ws.send(chunk);
    sent++;
    while (client.ws.bufferedAmount > 8 * 1024 * 1024 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
  await new Promise((resolve) => setTimeout(resolve, 500));
  const grown = rssOf(proxy.pid) - before;
  release();
  client.ws.terminate();
  assert.ok(client.ws.bufferedAmount > 0 || sent < 200, "the client should have been held back");
  assert.ok(grown < 64 * 1024 * 1024, `proxy RSS grew by ${(grown / 1048576).toFixed(1)} MiB`);
});

Deno.test("proxy memory stays bounded with a slow client (target paused)", async () => {
  // The target sends 200 MiB as fast as it can; the client never reads.
  await using target = startTarget(async (conn) => {
    const chunk = new Uint8Array(1024 * 1024);
    const deadline = Date.now() + 6000;
    for (let index = 0; index < 200 && Date.now() < deadline; index++) {
      await within(conn.write(chunk), 6000, "target write").catch(() => {});
    }
  });
  await using proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${target.port}`]);
  const client = await connectClient(`ws://127.0.0.1:${proxy.port}/`);
  (client.ws as unknown as { _socket: { pause(): void } })._socket.pause();
  const before = rssOf(proxy.pid);
  await new Promise((resolve) => setTimeout(resolve, 3000));
  const grown = rssOf(proxy.pid) - before;
  client.ws.terminate();
  assert.ok(grown < 64 * 1024 * 1024, `proxy RSS grew by ${(grown / 1048576).toFixed(1)} MiB`);
});
