// The libc dialer (src/targets/libc_dial.ts): addresses it encodes, connects, refusals, its own
// deadline, no descriptor left behind, and the proxy's fallback to net.connect without FFI.

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import net from "node:net";
import {
  DialError,
  DialTimeout,
  encodeAddress,
  ipv6Bytes,
  openLibcDialer,
} from "../src/targets/libc_dial.ts";
import {
  connectClient,
  holdBlackHole,
  holdPort,
  startEcho,
  startProxy,
  within,
} from "./_helpers.ts";

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("hex");
}

async function serve(host: string): Promise<net.Server> {
  const server = net.createServer((socket) => {
    socket.on("error", () => socket.destroy());
    socket.on("data", (data) => socket.write(data));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, host, resolve);
  });
  return server;
}

function portOf(server: net.Server): number {
  return (server.address() as net.AddressInfo).port;
}

function openFds(): number {
  return [...Deno.readDirSync("/proc/self/fd")].length;
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

/** Sockets open now that were not open in `before` (earlier tests' sockets closing do not count). */
function newSockets(before: Set<string>): string[] {
  return [...sockets()].filter((socket) => !before.has(socket));
}

async function echoOnce(socket: net.Socket, text: string): Promise<string> {
  const answer = new Promise<string>((resolve, reject) => {
    socket.once("data", (data) => resolve(data.toString()));
    socket.once("error", reject);
  });
  socket.write(text);
  return await within(answer, 5000, "echo");
}

function dialer() {
  const opened = openLibcDialer();
  assert.ok(opened, "the tests run with -A on Linux, so the libc dialer must be available");
  return opened;
}

Deno.test("encodeAddress() writes sockaddr_in and sockaddr_in6, and refuses scoped addresses", () => {
  assert.equal(hex(encodeAddress("127.0.0.1", 5900)), "0200170c7f0000010000000000000000");
  assert.equal(
    hex(encodeAddress("::1", 443)),
    "0a0001bb00000000" + "00000000000000000000000000000001" + "00000000",
  );
  assert.throws(() => encodeAddress("fe80::1%eth0", 80), RangeError);
  assert.throws(() => encodeAddress("localhost", 80), RangeError);
  const cases: [string, string][] = [
    ["::", "00000000000000000000000000000000"],
    ["1:2:3:4:5:6:7:8", "00010002000300040005000600070008"],
    ["fe80::1:2", "fe800000000000000000000000010002"],
    ["2001:db8::", "20010db8000000000000000000000000"],
    ["::ffff:1.2.3.4", "00000000000000000000ffff01020304"],
    ["::1.2.3.4", "00000000000000000000000001020304"],
    ["1:2:3:4:5:6:1.2.3.4", "00010002000300040005000601020304"],
    ["2001:db8:0:0:1::1", "20010db8000000000001000000000001"],
  ];
  for (const [address, bytes] of cases) assert.equal(hex(ipv6Bytes(address)), bytes, address);
});

Deno.test("LibcDialer connects over IPv4 and IPv6 and the adopted socket carries data", async () => {
  for (const host of ["127.0.0.1", "::1"]) {
    const server = await serve(host);
    try {
      const socket = await within(dialer().dial(host, portOf(server), 5000), 5000, "dial");
      assert.equal(socket.remoteAddress, host);
      assert.equal(socket.remotePort, portOf(server));
      assert.equal(await echoOnce(socket, `hello ${host}`), `hello ${host}`);
      socket.destroy();
      assert.equal(dialer().pending, 0);
    } finally {
      server.close();
    }
  }
});

Deno.test("LibcDialer reaches the address and port asked for when they change between dials", async () => {
  // The dialer keeps the last address's encoding: each dial below changes the port or the host.
  const tagged = async (host: string, tag: string) => {
    const server = net.createServer((socket) => socket.end(tag));
    await new Promise<void>((resolve) => server.listen(0, host, resolve));
    return server;
  };
  const servers = [
    await tagged("127.0.0.1", "a"),
    await tagged("127.0.0.1", "b"),
    await tagged("::1", "c"),
  ];
  try {
    const hosts = ["127.0.0.1", "127.0.0.1", "::1"];
    for (const index of [0, 0, 1, 0, 2, 1, 2, 2, 0]) {
      const socket = await within(
        dialer().dial(hosts[index]!, portOf(servers[index]!), 5000),
        5000,
        "dial",
      );
      const chunks: Buffer[] = [];
      for await (const chunk of socket) chunks.push(chunk as Buffer);
      assert.equal(Buffer.concat(chunks).toString(), "abc"[index]);
    }
  } finally {
    for (const server of servers) server.close();
  }
});

Deno.test("LibcDialer rejects a refused connect like net.connect: 'connect ECONNREFUSED …'", async () => {
  await using held = await holdPort("refuse");
  const error = await within(
    dialer().dial("127.0.0.1", held.port, 5000).then(() => undefined, (failure) => failure),
    5000,
    "refusal",
  );
  assert.ok(error instanceof DialError, String(error));
  assert.equal(error.code, "ECONNREFUSED");
  assert.equal(error.message, `connect ECONNREFUSED 127.0.0.1:${held.port}`);
  assert.equal(dialer().pending, 0);
});

Deno.test("LibcDialer gives up on a connect that hangs at its deadline and closes the socket", async () => {
  await using held = await holdBlackHole();
  const before = openFds();
  const started = performance.now();
  const error = await within(
    dialer().dial("127.0.0.1", held.port, 300).then(() => undefined, (failure) => failure),
    5000,
    "deadline",
  );
  const waited = performance.now() - started;
  assert.ok(error instanceof DialError, String(error));
  assert.equal(error.code, "ETIMEDOUT");
  // The dialer's own deadline, which callers tell from the kernel's ETIMEDOUT.
  assert.ok(error instanceof DialTimeout, String(error));
  assert.ok(waited >= 300 && waited < 2000, `gave up after ${waited} ms`);
  assert.equal(dialer().pending, 0);
  assert.equal(openFds(), before, "the timed-out socket was not closed");
});

Deno.test("LibcDialer leaves no descriptor behind over 300 dials, connected and refused", async () => {
  const server = await serve("127.0.0.1");
  await using held = await holdPort("refuse");
  try {
    const before = sockets();
    for (let round = 0; round < 30; round++) {
      const dials = [];
      for (let index = 0; index < 10; index++) {
        const port = index % 2 === 0 ? portOf(server) : held.port;
        dials.push(
          dialer().dial("127.0.0.1", port, 5000).then(
            async (socket) => {
              assert.equal(await echoOnce(socket, "x"), "x");
              await new Promise<void>((resolve) => socket.destroy().once("close", () => resolve()));
              return "connected";
            },
            (error: DialError) => error.code,
          ),
        );
      }
      const outcomes = await within(Promise.all(dials), 10000, "a round of dials");
      assert.deepEqual(outcomes.sort(), [
        ...new Array(5).fill("ECONNREFUSED"),
        ...new Array(5).fill("connected"),
      ]);
    }
    // The server side's sockets close a moment after ours.
    const deadline = Date.now() + 5000;
    while (newSockets(before).length > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.deepEqual(newSockets(before), []);
  } finally {
    server.close();
  }
});

Deno.test("without the FFI permission the proxy dials with net.connect and still works", async () => {
  await using echo = startEcho();
  await using held = await holdPort("refuse");
  const deno = ["--allow-net", "--allow-read", "--allow-env", "--allow-sys", "--unstable-net"];
  await using proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${echo.port}`], { deno });
  const client = await connectClient(`ws://127.0.0.1:${proxy.port}/`);
  client.ws.send(new Uint8Array([1, 2, 3]));
  assert.deepEqual(await within(client.next(), 5000, "echo"), new Uint8Array([1, 2, 3]));
  client.ws.close();
  await client.closed;
  await using refusing = await startProxy(["127.0.0.1:0", `127.0.0.1:${held.port}`], { deno });
  const refused = await connectClient(`ws://127.0.0.1:${refusing.port}/`);
  assert.deepEqual(await within(refused.closed, 10000, "close"), {
    code: 1011,
    reason: "Failed to connect to downstream server",
  });
  await refusing.waitFor(/Failed to connect to 127\.0\.0\.1:\d+: connect ECONNREFUSED/);
});
