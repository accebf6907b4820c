import assert from "node:assert/strict";
import net from "node:net";
import { alive, childrenOf, descriptorsOf } from "./_helpers.ts";
import { clientFrame, deadline, RawClient } from "./_perf_helpers.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

function echoServer(): Promise<net.Server> {
  const server = net.createServer((socket) => {
    socket.on("error", () => socket.destroy());
    socket.on("data", (data) => socket.write(data));
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

/** The socket inodes of the TCP listeners on `port` (`/proc/net/tcp` and `tcp6`). */
function listenerInodes(port: number): Set<string> {
  const inodes = new Set<string>();
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    for (const line of Deno.readTextFileSync(table).split("\n").slice(1)) {
      const fields = line.trim().split(/\s+/);
      // local_address is ADDR:PORT in hex; state 0A is LISTEN; field 9 is the inode.
      if (fields[1]?.endsWith(`:${hexPort}`) && fields[3] === "0A") inodes.add(fields[9]!);
    }
  }
  return inodes;
}

/** Whether process `pid` holds a listening socket on `port`. */
function listensOn(pid: number, port: number): boolean {
  const inodes = listenerInodes(port);
  for (const entry of Deno.readDirSync(`/proc/${pid}/fd`)) {
    try {
      const link = Deno.readLinkSync(`/proc/${pid}/fd/${entry.name}`);
      const inode = link.match(/^socket:\[(\d+)\]$/)?.[1];
      if (inode !== undefined && inodes.has(inode)) return true;
    } catch {
      // closed meanwhile
    }
  }
  return false;
}

Deno.test("--workers 2 serves one port from two processes and stops both on SIGTERM", async () => {
  const target = await echoServer();
  const targetPort = (target.address() as net.AddressInfo).port;
  const proxy = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      "--unstable-net",
      MAIN,
      "--workers",
      "2",
      "127.0.0.1:0",
      `127.0.0.1:${targetPort}`,
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const clients: RawClient[] = [];
  try {
    const reader = proxy.stderr.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    const port = await deadline(
      (async () => {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) throw new Error(`The proxy exited early: ${text}`);
          text += value;
          const match = text.match(/Listen on 127\.0\.0\.1:(\d+)/);
          if (match) return Number(match[1]);
        }
      })(),
      20_000,
      "the proxy's banner",
    );
    void (async () => {
      while (!(await reader.read()).done) { /* drain */ }
    })();
    // The forked worker binds the same port; wait until it listens there (its other sockets,
    // such as the cluster channel, exist long before: on a busy machine its start-up takes seconds).
    let workers: number[] = [];
    const until = Date.now() + 30_000;
    while (Date.now() < until) {
      workers = childrenOf(proxy.pid);
      if (workers.length === 1 && listensOn(workers[0]!, port)) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.equal(workers.length, 1, "one forked worker");
    assert.ok(listensOn(workers[0]!, port), `the worker never listened on port ${port}`);
    const before = [descriptorsOf(proxy.pid, "socket"), descriptorsOf(workers[0]!, "socket")];
    for (let index = 0; index < 40; index++) {
      const client = await RawClient.open(port);
      clients.push(client);
      await client.write(clientFrame(2, `hello ${index}`));
      const frame = await deadline(client.readFrame(), 5000, "echo");
      assert.equal(new TextDecoder().decode(frame?.payload), `hello ${index}`);
    }
    const after = [descriptorsOf(proxy.pid, "socket"), descriptorsOf(workers[0]!, "socket")];
    // Each session holds two sockets (client and target) in the process that accepted it.
    assert.ok(after[0]! - before[0]! >= 2, `the first process served none: ${before} → ${after}`);
    assert.ok(after[1]! - before[1]! >= 2, `the worker served none: ${before} → ${after}`);

    proxy.kill("SIGTERM");
    const closeCodes = await Promise.all(
      clients.map((client) => deadline(client.readCloseCode(), 10_000, "close on shutdown")),
    );
    assert.ok(closeCodes.every((code) => code === 1001), `close codes ${closeCodes}`);
    const status = await deadline(proxy.status, 10_000, "the proxy's exit");
    assert.equal(status.code, 0);
    assert.equal(alive(workers[0]!), false, "the worker exited too");
  } finally {
    for (const client of clients) client.close();
    try {
      proxy.kill("SIGKILL");
    } catch {
      // exited
    }
    await proxy.status;
    await new Promise((resolve) => target.close(resolve));
  }
});
