import assert from "node:assert/strict";
import net from "node:net";
import { SocketConnection } from "../src/targets/socket_target.ts";
import { concatBytes, deadline } from "./_perf_helpers.ts";

async function serve(onSocket: (socket: net.Socket) => void): Promise<net.Server> {
  const server = net.createServer((socket) => {
    socket.on("error", () => socket.destroy());
    onSocket(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return server;
}

function portOf(server: net.Server): number {
  return (server.address() as net.AddressInfo).port;
}

Deno.test("SocketConnection.read() and readChunk() deliver every byte, then null", async () => {
  const sent = new Uint8Array(300_000).map((_, i) => i * 7);
  const server = await serve((socket) => socket.end(sent));
  try {
    const connection = await SocketConnection.connect("127.0.0.1", portOf(server));
    const parts: Uint8Array[] = [];
    const buffer = new Uint8Array(1000);
    for (let turn = 0; turn < 10_000; turn++) {
      if (turn % 2 === 0) {
        const count = await deadline(connection.read(buffer), 5000, "read");
        if (count === null) break;
        parts.push(buffer.slice(0, count));
      } else {
        const chunk = await deadline(connection.readChunk(4096), 5000, "readChunk");
        if (chunk === null) break;
        assert.ok(chunk.length <= 4096);
        parts.push(chunk.slice());
      }
    }
    assert.deepEqual(concatBytes(parts), sent);
    assert.equal(await connection.read(buffer), null);
    connection.close();
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
});

Deno.test("SocketConnection.close() still delivers what write() accepted", async () => {
  const received: Uint8Array[] = [];
  let resolveEnd = () => {};
  const ended = new Promise<void>((resolve) => (resolveEnd = resolve));
  const server = await serve((socket) => {
    socket.on("data", (chunk: Uint8Array) => received.push(chunk));
    socket.on("close", () => resolveEnd());
  });
  try {
    const connection = await SocketConnection.connect("127.0.0.1", portOf(server));
    const data = new Uint8Array(4 * 1024 * 1024).fill(9);
    const writing = connection.write(data);
    connection.close();
    await writing.catch(() => {});
    await deadline(ended, 10_000, "the server to see the connection close");
    assert.equal(concatBytes(received).length, data.length);
    await assert.rejects(connection.read(new Uint8Array(10)));
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
});

Deno.test("SocketConnection.connect() rejects when nothing listens", async () => {
  const server = await serve(() => {});
  const port = portOf(server);
  await new Promise((resolve) => server.close(resolve));
  await assert.rejects(SocketConnection.connect("127.0.0.1", port));
});

Deno.test("SocketConnection.stream() pushes every byte, then ends once", async () => {
  const sent = new Uint8Array(300_000).map((_, i) => i * 13);
  const server = await serve((socket) => socket.end(sent));
  try {
    const connection = await SocketConnection.connect("127.0.0.1", portOf(server));
    // Let some chunks arrive before push mode starts: they must come first, in order.
    await new Promise((resolve) => setTimeout(resolve, 50));
    const parts: Uint8Array[] = [];
    const ends: (Error | undefined)[] = [];
    await deadline(
      new Promise<void>((resolve) => {
        connection.stream({
          chunk: (data) => parts.push(data.slice()),
          end: (error) => {
            ends.push(error);
            resolve();
          },
        });
      }),
      5000,
      "the end of the stream",
    );
    assert.deepEqual(concatBytes(parts), sent);
    connection.close();
    assert.deepEqual(ends, [undefined]);
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
});

Deno.test("SocketConnection.writePieces() delivers small and large pieces in order", async () => {
  const received: Uint8Array[] = [];
  let resolveEnd = () => {};
  const ended = new Promise<void>((resolve) => (resolveEnd = resolve));
  const server = await serve((socket) => {
    socket.on("data", (chunk: Uint8Array) => received.push(chunk));
    socket.on("end", () => resolveEnd());
  });
  try {
    const connection = await SocketConnection.connect("127.0.0.1", portOf(server));
    const sizes = [1, 100, 20_000, 5, 7, 300_000, 16_383, 16_384, 2];
    const pieces = sizes.map((size, n) => new Uint8Array(size).fill(n + 1));
    let written = 0;
    const below = connection.writePieces(pieces, 1024 * 1024, () => written++);
    assert.equal(typeof below, "boolean");
    await deadline(connection.drained(), 5000, "drained()");
    await deadline(connection.closeWrite(), 5000, "closeWrite()");
    await deadline(ended, 5000, "the server to see the end");
    assert.equal(written, 1);
    assert.deepEqual(concatBytes(received), concatBytes(pieces));
    connection.close();
    assert.throws(() => connection.writePieces([new Uint8Array(1)], 1024));
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
});
