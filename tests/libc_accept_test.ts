// The accept sweep (src/listen/libc_accept.ts): connections it takes work like the listener's
// own, each connection arrives once, and closing it leaves the port closed with the listener.

import assert from "node:assert/strict";
import net from "node:net";
import { LibcAcceptor } from "../src/listen/libc_accept.ts";
import { within } from "./_helpers.ts";

function openFds(): number {
  return [...Deno.readDirSync("/proc/self/fd")].length;
}

Deno.test("LibcAcceptor and the listener together deliver every connection once, working", async () => {
  const sockets: net.Socket[] = [];
  const serve = (socket: net.Socket) => {
    sockets.push(socket);
    socket.on("error", () => socket.destroy());
    socket.on("data", (data) => socket.write(data));
  };
  const server = net.createServer(serve);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  const fdsBefore = openFds();
  const errors: string[] = [];
  const acceptor = LibcAcceptor.open(server, serve, (message) => errors.push(message));
  assert.ok(acceptor, "with -A on Linux the listener's descriptor must be available");
  acceptor.setActive(true);
  try {
    const clients: Deno.Conn[] = [];
    for (let index = 0; index < 200; index++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      clients.push(conn);
      if (index % 20 === 0) await new Promise((resolve) => setTimeout(resolve, 15));
    }
    for (const [index, conn] of clients.entries()) {
      await conn.write(new Uint8Array([index % 256]));
      const answer = new Uint8Array(1);
      assert.equal(await within(conn.read(answer), 5000, `echo ${index}`), 1);
      assert.equal(answer[0], index % 256);
      conn.close();
    }
    assert.equal(sockets.length, 200, "each connection arrives exactly once");
    console.log(`${acceptor.accepted} of 200 taken by the sweep`);
    assert.deepEqual(errors, []);
  } finally {
    acceptor.close();
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
  // The duplicate descriptor went with close(): the port is closed once the listener is.
  await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port }), /refused/i);
  assert.ok(openFds() <= fdsBefore, `${openFds()} fds open, ${fdsBefore} before the acceptor`);
});

Deno.test("LibcAcceptor sweeps only while active", async () => {
  const server = net.createServer((socket) => socket.destroy());
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const acceptor = LibcAcceptor.open(server, (socket) => socket.destroy(), () => {});
  assert.ok(acceptor);
  try {
    acceptor.setActive(true);
    acceptor.setActive(false);
    const port = (server.address() as net.AddressInfo).port;
    for (let index = 0; index < 20; index++) {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(acceptor.accepted, 0, "an inactive acceptor took connections");
  } finally {
    acceptor.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});
