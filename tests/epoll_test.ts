// The epoll loop (src/ops/epoll.ts): FdSocket carries data both ways with backpressure, pauses,
// ends and fails as net.Socket does, leaves no descriptor behind, and lets the process exit.

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import net from "node:net";
import process from "node:process";
import {
  duplicateDescriptor,
  type Epoll,
  EPOLL_SYMBOLS,
  EpollLoop,
  type FdSocket,
  openEpoll,
} from "../src/ops/epoll.ts";
import { openLibcDialer } from "../src/targets/libc_dial.ts";
import { within } from "./_helpers.ts";

function loop() {
  const opened = openEpoll();
  assert.ok(opened, "the tests run with -A on Linux, so the epoll loop must be available");
  return opened;
}

/** A server whose connections `handle` gets; returns it with its port. */
async function serve(
  handle: (socket: net.Socket) => void,
): Promise<{ server: net.Server; port: number }> {
  const server = net.createServer((socket) => {
    socket.on("error", () => {});
    handle(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, port: (server.address() as net.AddressInfo).port };
}

async function dial(port: number, on = loop()): Promise<FdSocket> {
  const dialer = openLibcDialer();
  assert.ok(dialer);
  const fd = await dialer.dialDescriptor("127.0.0.1", port, 5000);
  // As the proxy's targets: dialled here, so closing it takes it out of the set (no DEL).
  return on.adopt(fd, { remoteAddress: "127.0.0.1", remotePort: port }, { exclusive: true });
}

/** An FdSocket dialled to a local server, with the server's end of the connection. */
async function connectedPair(): Promise<
  { socket: FdSocket; peer: net.Socket; server: net.Server }
> {
  let peer: net.Socket | undefined;
  const connected = Promise.withResolvers<void>();
  const { server, port } = await serve((accepted) => {
    peer = accepted;
    connected.resolve();
  });
  const socket = await dial(port);
  await within(connected.promise, 5000, "accept");
  return { socket, peer: peer!, server };
}

let getsockopt:
  | Deno.DynamicLibrary<{
    getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"]; result: "i32" };
  }>
  | undefined;

const SOL_SOCKET = 1;

/** An int socket option of descriptor `fd`, read with getsockopt(2). */
function socketOption(fd: number, level: number, name: number): number {
  getsockopt ??= Deno.dlopen("libc.so.6", {
    getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  });
  const value = new Int32Array(1);
  const length = new Uint32Array([4]);
  assert.equal(getsockopt.symbols.getsockopt(fd, level, name, value, length), 0, "getsockopt");
  return value[0]!;
}

/** Resolves once `condition()` holds, checking every 10 ms; fails after 5 s naming `what`. */
function until(condition: () => boolean, what: string): Promise<void> {
  return within(
    (async () => {
      while (!condition()) await new Promise((resolve) => setTimeout(resolve, 10));
    })(),
    5000,
    what,
  );
}

function closed(socket: { once(event: string, listener: () => void): unknown }): Promise<void> {
  return new Promise((resolve) => socket.once("close", () => resolve()));
}

/** This process's sockets, each as "fd socket:[inode]". */
function sockets(): Set<string> {
  const found = new Set<string>();
  for (const entry of Deno.readDirSync("/proc/self/fd")) {
    try {
      const link = Deno.readLinkSync(`/proc/self/fd/${entry.name}`);
      if (link.startsWith("socket:")) found.add(`${entry.name} ${link}`);
    } catch {
      // closed while listed
    }
  }
  return found;
}

Deno.test("FdSocket echoes 16 MiB through a slow reader: write() reports backpressure, nothing is lost", async () => {
  // The server echoes, pausing its reads now and then so the client's queue must build up.
  const { server, port } = await serve((socket) => {
    socket.on("data", (data) => {
      if (!socket.write(data)) {
        socket.pause();
        socket.once("drain", () => socket.resume());
      }
    });
    socket.on("end", () => socket.end());
  });
  try {
    const socket = await dial(port);
    const sent = createHash("sha256");
    const received = createHash("sha256");
    let receivedBytes = 0;
    const total = 16 * 1024 * 1024;
    const done = new Promise<void>((resolve, reject) => {
      socket.on("data", (chunk: Buffer) => {
        received.update(chunk);
        receivedBytes += chunk.length;
        if (receivedBytes === total) resolve();
      });
      socket.on("error", reject);
    });
    socket.resume();
    let full = 0;
    let offset = 0;
    while (offset < total) {
      const block = Buffer.alloc(64 * 1024, offset / 1024 % 251);
      sent.update(block);
      offset += block.length;
      if (!socket.write(block)) {
        full++;
        await within(new Promise((resolve) => socket.once("drain", resolve)), 10000, "drain");
      }
    }
    await within(done, 20000, "the echo of 16 MiB");
    assert.equal(received.digest("hex"), sent.digest("hex"));
    assert.ok(full > 0, "write() never returned false");
    assert.equal(socket.bytesWritten, total);
    assert.equal(socket.bytesRead, total);
    const gone = closed(socket);
    socket.end();
    await within(gone, 5000, "close after both ends");
    assert.equal(socket.destroyed, true);
  } finally {
    server.close();
  }
});

Deno.test("FdSocket reads up to 256 KiB at once while its peer is ahead, in order", async () => {
  // The server writes 8 MiB at once, faster than the reader's turns: after reads that fill
  // their buffers, reads grow from 64 KiB to 256 KiB (one event-loop turn and one send each).
  const total = 8 * 1024 * 1024;
  const block = Buffer.alloc(total);
  for (let at = 0; at < total; at += 4) block.writeUInt32BE(at, at);
  const { server, port } = await serve((socket) => socket.end(block));
  try {
    const socket = await dial(port);
    const received = createHash("sha256");
    const sizes: number[] = [];
    const ended = new Promise<void>((resolve, reject) => {
      socket.on("data", (chunk: Buffer) => {
        received.update(chunk);
        sizes.push(chunk.length);
      });
      socket.on("end", resolve);
      socket.on("error", reject);
    });
    socket.resume();
    await within(ended, 10000, "the end of 8 MiB");
    assert.equal(received.digest("hex"), createHash("sha256").update(block).digest("hex"));
    const largest = Math.max(...sizes);
    assert.ok(largest > 64 * 1024, `no read above 64 KiB in ${sizes.length} reads`);
    assert.ok(largest <= 256 * 1024, `a read of ${largest} bytes`);
    socket.destroy();
  } finally {
    server.close();
  }
});

/**
 * A source writes `total` bytes at once; what `from` (dialled to it) reads is framed towards a
 * sink that reads nothing for its first 300 ms: each move into `to`'s pipe as "S" + length +
 * payload (writeSpliced), each chunk read as usual as "D" + length + payload, and after every
 * third move a one-byte "W" write, which queues between spliced bytes. `corked`: each move is
 * queued, then flushed by uncork (else it is sent at once when nothing is queued). Checks that the sink saw
 * the same records in the same order, and the same payload; returns the records and the receive
 * buffer `from` had at its first move (0 if none).
 */
async function relayFramed(
  on: EpollLoop,
  total: number,
  corked = false,
): Promise<{ records: string[]; receiveBuffer: number }> {
  const block = Buffer.alloc(total);
  for (let at = 0; at < total; at += 4) block.writeUInt32BE(at, at);
  const { server: source, port: sourcePort } = await serve((socket) => socket.end(block));
  const arrived: Buffer[] = [];
  const sinkEnded = Promise.withResolvers<void>();
  const { server: sink, port: sinkPort } = await serve((socket) => {
    socket.pause();
    setTimeout(() => socket.resume(), 300);
    socket.on("data", (data: Buffer) => arrived.push(data));
    socket.on("end", () => sinkEnded.resolve());
  });
  try {
    const from = await dial(sourcePort, on);
    const to = await dial(sinkPort, on);
    const records: string[] = [];
    const framed = (kind: string, length: number) => {
      records.push(`${kind}${length}`);
      const header = Buffer.alloc(5);
      header.write(kind, 0);
      header.writeUInt32BE(length, 1);
      return header;
    };
    const backpressure = () => {
      if (to.splicedLength <= 128 * 1024 && to.writableLength <= 1024 * 1024) return;
      from.pause();
      to.once("drain", () => from.resume());
    };
    let moves = 0;
    let receiveBuffer = 0;
    const SO_RCVBUF = 8;
    from.spliceTo({
      pipe: () => to.splicePipe(),
      moved(count) {
        if (moves === 0) receiveBuffer = socketOption(from.fd, SOL_SOCKET, SO_RCVBUF);
        if (corked) to.cork();
        to.writeSpliced(framed("S", count), count);
        if (corked) to.uncork();
        if (++moves % 3 === 0) {
          records.push("W");
          to.write(Buffer.from("W"));
        }
        backpressure();
      },
    });
    const ended = new Promise<void>((resolve, reject) => {
      from.on("data", (chunk: Buffer) => {
        to.write(framed("D", chunk.length));
        to.write(chunk);
        backpressure();
      });
      from.on("end", resolve);
      from.on("error", reject);
    });
    const failed = new Promise<never>((_, reject) => to.once("error", reject));
    from.resume();
    await within(Promise.race([ended, failed]), 10000, `the end of ${total} bytes`);
    to.end();
    await within(Promise.race([sinkEnded.promise, failed]), 10000, "the sink's end");
    // Parse what arrived back into records and payload.
    const stream = Buffer.concat(arrived);
    const seen: string[] = [];
    const payload: Buffer[] = [];
    for (let at = 0; at < stream.length;) {
      const kind = String.fromCharCode(stream[at]!);
      if (kind === "W") {
        seen.push("W");
        at += 1;
        continue;
      }
      assert.ok(kind === "S" || kind === "D", `a record of kind ${kind} at ${at}`);
      const length = stream.readUInt32BE(at + 1);
      seen.push(`${kind}${length}`);
      payload.push(stream.subarray(at + 5, at + 5 + length));
      at += 5 + length;
    }
    assert.deepEqual(seen, records, "the records arrived out of order");
    assert.equal(Buffer.compare(Buffer.concat(payload), block), 0, "the payload differs");
    from.destroy();
    to.destroy();
    return { records, receiveBuffer };
  } finally {
    source.close();
    sink.close();
  }
}

Deno.test("FdSocket splices bulk reads into another socket's pipe, in order with its writes", async () => {
  const { records, receiveBuffer } = await relayFramed(loop(), 8 * 1024 * 1024);
  assert.ok(records.some((record) => record.startsWith("S")), "no read was spliced");
  // A spliced socket's receive buffer does not grow by itself: it is set on the first splice
  // (the kernel doubles what is asked, within net.core.rmem_max).
  const most = Number(Deno.readTextFileSync("/proc/sys/net/core/rmem_max"));
  assert.equal(receiveBuffer, 2 * Math.min(2 * 1024 * 1024, most), "the receive buffer");
  assert.ok(records.some((record) => record.startsWith("D")), "the first reads go as usual");
});

/**
 * A loop of its own whose splice(2) calls with `refused(from, to)` true reach the kernel with a
 * flag it does not know, so that the kernel itself answers EINVAL, as one without splicing for
 * sockets would. Counts refusals and calls after them; collects what the loop logs.
 */
function refusingLoop(refused: (from: number, to: number) => boolean) {
  const symbols = Deno.dlopen("libc.so.6", EPOLL_SYMBOLS).symbols;
  // `late`: calls after the first refusal.
  const counts = { late: 0, refusals: 0 };
  const warnings: string[] = [];
  const wrapped: Epoll = {
    ...symbols,
    splice(from, offsetIn, to, offsetOut, length, flags) {
      if (counts.refusals > 0) counts.late++;
      if (!refused(from, to)) return symbols.splice(from, offsetIn, to, offsetOut, length, flags);
      counts.refusals++;
      return symbols.splice(from, offsetIn, to, offsetOut, length, flags | 0x4000_0000);
    },
  };
  return { loop: new EpollLoop(wrapped, (text) => warnings.push(text)), counts, warnings };
}

for (const side of ["into the pipe", "out of the pipe", "out of the pipe, queued"] as const) {
  Deno.test(`a kernel that refuses to splice ${side}: the bytes go by read and send, in order, and the loop stops splicing`, async () => {
    // Into the pipe: the first read of a socket (its descriptor is never a pipe's). Out of it:
    // a splice to a socket, once bytes are in the pipe: sent at once, or queued and flushed.
    const sockets = new Set<number>();
    const { loop: refusing, counts, warnings } = refusingLoop((from, to) =>
      side === "into the pipe" ? sockets.has(from) || !sockets.has(to) : sockets.has(to)
    );
    const adopt = refusing.adopt.bind(refusing);
    refusing.adopt = (fd, addresses, options) => {
      sockets.add(fd);
      return adopt(fd, addresses, options);
    };
    const { records } = await relayFramed(refusing, 4 * 1024 * 1024, side.endsWith("queued"));
    assert.equal(refusing.spliceRefused, "EINVAL");
    assert.ok(counts.refusals >= 1, "no splice was refused");
    // After the first refusal nothing tries again (moves already in the pipe are read out).
    assert.equal(counts.late, 0, "splice was called after it was refused");
    assert.equal(warnings.length, 1, `one warning, not ${warnings.length}`);
    assert.match(warnings[0]!, /splice\(2\) refused \(EINVAL\).*nothing was lost/);
    const moved = records.filter((record) => record.startsWith("S")).length;
    if (side === "into the pipe") assert.equal(moved, 0, "a read was spliced");
    else assert.ok(moved >= 1, "no read went into the pipe");
  });
}

Deno.test("FdSocket sends corked pieces, small and large, in order in one flush", async () => {
  const received: Buffer[] = [];
  const ended = Promise.withResolvers<void>();
  const { server, port } = await serve((socket) => {
    socket.on("data", (data: Buffer) => received.push(data));
    socket.on("end", () => ended.resolve());
  });
  try {
    const socket = await dial(port);
    const pieces = [3, 40000, 7, 70000, 1, 20000].map((size, index) =>
      Buffer.alloc(size, index + 1)
    );
    const written: number[] = [];
    socket.cork();
    pieces.forEach((piece, index) => socket.write(piece, () => written.push(index)));
    assert.equal(socket.writableLength, 130011, "corked pieces wait in the queue");
    socket.uncork();
    socket.end();
    await within(ended.promise, 5000, "the peer's end");
    assert.deepEqual(Buffer.concat(received), Buffer.concat(pieces));
    await new Promise((resolve) => setTimeout(resolve, 10));
    assert.deepEqual(written, [0, 1, 2, 3, 4, 5], "every write's callback, in order");
    socket.destroy();
  } finally {
    server.close();
  }
});

Deno.test("FdSocket gives each read to its data listeners as an EventEmitter would: one, once, several, removed", async () => {
  // A read calls a lone `data` listener directly; any change of the listeners must be seen.
  const { socket, peer, server } = await connectedPair();
  try {
    const seen: string[] = [];
    const send = async (text: string, count: number) => {
      const before = seen.length;
      peer.write(text);
      await until(() => seen.length >= before + count, `${count} deliveries of ${text}`);
      // Nothing more arrives for it (a listener called twice, or a removed one still called).
      await new Promise((resolve) => setTimeout(resolve, 30));
      assert.equal(seen.length, before + count, `deliveries of ${text}: ${seen.slice(before)}`);
    };
    const first = (chunk: Buffer) => seen.push(`first:${chunk}`);
    socket.on("data", first);
    await send("a", 1);
    socket.once("data", (chunk: Buffer) => seen.push(`once:${chunk}`));
    await send("b", 2);
    await send("c", 1);
    const second = (chunk: Buffer) => seen.push(`second:${chunk}`);
    socket.on("data", second);
    await send("d", 2);
    socket.off("data", first);
    await send("e", 1);
    socket.removeListener("data", second);
    socket.once("data", (chunk: Buffer) => seen.push(`last:${chunk}`));
    await send("f", 1);
    socket.removeAllListeners("data");
    socket.on("data", first);
    await send("g", 1);
    // Its only listener gone, a read is kept for the next one.
    socket.off("data", first);
    peer.write("h");
    await new Promise((resolve) => setTimeout(resolve, 50));
    socket.on("data", (chunk: Buffer) => seen.push(`third:${chunk}`));
    await until(() => seen.length === 10, "the read kept for a new listener");
    assert.deepEqual(seen, [
      "first:a",
      "first:b",
      "once:b",
      "first:c",
      "first:d",
      "second:d",
      "second:e",
      "last:f",
      "first:g",
      "third:h",
    ]);
    socket.destroy();
  } finally {
    server.close();
  }
});

Deno.test("FdSocket reads nothing while paused and everything once resumed", async () => {
  const { socket, peer, server } = await connectedPair();
  try {
    assert.equal(socket.isPaused(), true, "a new FdSocket starts paused");
    socket.pause();
    const chunks: Buffer[] = [];
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    assert.equal(socket.isPaused(), true, "a data listener after pause() must not resume");
    peer.write("while paused");
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(chunks.length, 0);
    socket.resume();
    await until(
      () => Buffer.concat(chunks).toString() === "while paused",
      "the data after resume()",
    );
    const gone = closed(socket);
    socket.destroy();
    await within(gone, 5000, "close");
  } finally {
    server.close();
  }
});

Deno.test("a paused FdSocket still in the epoll set leaves it when data comes, without spinning", async () => {
  const { socket, peer, server } = await connectedPair();
  try {
    const chunks: Buffer[] = [];
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    peer.write("one");
    await until(() => chunks.length > 0, "the first chunk");
    // pause() keeps the registration (no system call); data arriving now must take the socket
    // out of the set, or the level-triggered loop would report it on every poll.
    socket.pause();
    peer.write("two");
    await new Promise((resolve) => setTimeout(resolve, 50));
    const before = process.cpuUsage();
    await new Promise((resolve) => setTimeout(resolve, 400));
    const used = process.cpuUsage(before);
    const cpuMs = (used.user + used.system) / 1000;
    assert.ok(cpuMs < 150, `the paused socket kept the loop busy: ${cpuMs} ms of CPU in 400 ms`);
    assert.equal(Buffer.concat(chunks).toString(), "one");
    socket.resume();
    await until(() => Buffer.concat(chunks).toString() === "onetwo", "the data after resume()");
    const gone = closed(socket);
    socket.destroy();
    await within(gone, 5000, "close");
    assert.equal(loop().size, 0, "the loop still counts the closed socket");
  } finally {
    server.close();
  }
});

Deno.test("connections accepted on the loop inherit TCP_NODELAY and SO_KEEPALIVE from the listener", async () => {
  const option = socketOption;
  const SO_KEEPALIVE = 9, IPPROTO_TCP = 6, TCP_NODELAY = 1;
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  const fd = duplicateDescriptor(server);
  assert.ok(fd !== undefined);
  server.close();
  const accepted = Promise.withResolvers<
    { noDelay: number; keepAlive: number; socket: FdSocket }
  >();
  const listener = loop().listen(fd, (descriptor, peer, options) => {
    assert.deepEqual(options, { exclusive: true, noDelayKeepAlive: true });
    accepted.resolve({
      noDelay: option(descriptor, IPPROTO_TCP, TCP_NODELAY),
      keepAlive: option(descriptor, SOL_SOCKET, SO_KEEPALIVE),
      socket: loop().adopt(descriptor, peer, options),
    });
  }, (message) => accepted.reject(new Error(message)));
  const client = net.connect(port, "127.0.0.1");
  client.on("error", () => {});
  try {
    const { noDelay, keepAlive, socket } = await within(accepted.promise, 5000, "accept");
    assert.equal(noDelay, 1, "TCP_NODELAY on the accepted socket");
    assert.equal(keepAlive, 1, "SO_KEEPALIVE on the accepted socket");
    const gone = closed(socket);
    socket.destroy();
    await within(gone, 5000, "close");
  } finally {
    client.destroy();
    listener.close();
  }
});

Deno.test("FdSocket reads once it has a data listener, ends when the peer ends, and sends its FIN", async () => {
  const peerEnded = Promise.withResolvers<void>();
  const { server, port } = await serve((socket) => {
    socket.on("end", () => peerEnded.resolve());
    socket.end("bye");
  });
  try {
    const socket = await dial(port);
    const events: string[] = [];
    socket.on("data", (chunk: Buffer) => events.push(`data:${chunk}`));
    socket.on("end", () => events.push("end"));
    socket.on("finish", () => events.push("finish"));
    const gone = closed(socket);
    // No resume(): as with net.Socket, the data listener started the reading.
    await within(gone, 5000, "close after the peer's FIN");
    await within(peerEnded.promise, 5000, "our FIN at the peer");
    assert.deepEqual(events, ["data:bye", "end", "finish"]);
  } finally {
    server.close();
  }
});

Deno.test("FdSocket reports a reset as an ECONNRESET error, then closes", async () => {
  const { server, port } = await serve((socket) => {
    socket.once("data", () => socket.resetAndDestroy());
  });
  try {
    const socket = await dial(port);
    const failure = new Promise<Error>((resolve) => socket.once("error", resolve));
    const gone = new Promise<boolean>((resolve) => socket.once("close", resolve));
    socket.resume();
    socket.write("reset me");
    const error = await within(failure, 5000, "the reset") as Error & { code?: string };
    assert.equal(error.code, "ECONNRESET");
    assert.equal(await within(gone, 5000, "close"), true, "close(hadError)");
    assert.equal(socket.write("late"), false, "write after close");
  } finally {
    server.close();
  }
});

Deno.test("FdSocket leaves no descriptor behind over 200 sockets, and the loop stops when idle", async () => {
  const { server, port } = await serve((socket) => socket.on("data", (data) => socket.write(data)));
  try {
    const before = sockets();
    for (let round = 0; round < 20; round++) {
      const batch = await Promise.all(Array.from({ length: 10 }, () => dial(port)));
      await within(
        Promise.all(batch.map((socket) =>
          new Promise<void>((resolve) => {
            socket.once("data", () => {
              socket.destroy();
              resolve();
            });
            socket.resume();
            socket.write("x");
          })
        )),
        10000,
        "a round of echoes",
      );
    }
    const deadline = Date.now() + 5000;
    const ours = () => [...sockets()].filter((socket) => !before.has(socket));
    while (ours().length > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.deepEqual(ours(), []);
    assert.equal(loop().size, 0);
  } finally {
    server.close();
  }
});

Deno.test("a process whose epoll sockets have all closed exits on its own", async () => {
  // The loop waits in a thread while sockets are open; with none left it must not hold the process.
  const script = `
    import net from "node:net";
    import { openEpoll } from ${
    JSON.stringify(new URL("../src/ops/epoll.ts", import.meta.url).href)
  };
    import { openLibcDialer } from ${
    JSON.stringify(new URL("../src/targets/libc_dial.ts", import.meta.url).href)
  };
    const server = net.createServer((s) => s.on("data", (d) => s.write(d)));
    server.listen(0, "127.0.0.1", async () => {
      const fd = await openLibcDialer().dialDescriptor("127.0.0.1", server.address().port, 5000);
      const socket = openEpoll().adopt(fd);
      socket.on("data", (d) => {
        console.log("got " + d);
        // Closed from a timer, while the loop waits in its thread for the next event.
        setTimeout(() => socket.destroy(), 300);
      });
      socket.on("close", () => { server.close(); console.log("closed"); });
      socket.resume();
      // Idle for a moment first: the loop is then waiting in its thread.
      setTimeout(() => socket.write("ping"), 300);
    });
  `;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", script],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let exited = false;
  const output = await within(
    child.output().then((result) => {
      exited = true;
      return result;
    }),
    10000,
    "the child's exit",
  ).catch((error) => {
    if (!exited) child.kill("SIGKILL");
    throw error;
  });
  assert.equal(new TextDecoder().decode(output.stdout), "got ping\nclosed\n");
  assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
});
