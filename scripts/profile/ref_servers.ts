/**
 * Reference servers for the per-message and per-connection CPU figures of issue 12 (see
 * scripts/profile/README.md). Each listens on 127.0.0.1 (port picked by the kernel) and prints
 * `{"port":N}` on stdout:
 *
 *   deno run -A scripts/profile/ref_servers.ts ws-echo
 *       `Deno.serve` + `Deno.upgradeWebSocket` echo server (the fastest WebSocket server Deno has).
 *   deno run -A scripts/profile/ref_servers.ts deno-relay TARGET_PORT [BUFFER_BYTES]
 *       Plain TCP relay on `Deno.listen` / `Deno.connect`: one reused read buffer (default
 *       64 KiB) per direction, `read()` then `write()` until EOF, then `closeWrite()` on the other
 *       side.
 *   deno run -A scripts/profile/ref_servers.ts net-relay TARGET_PORT    (or under Node: bundled)
 *       Plain TCP relay on `node:net`: `data` → `write()`, `end` → `end()`, noDelay on both.
 *
 * The relays have no WebSocket code, so they measure the runtime's socket cost per message and per
 * connection; `net-relay` runs unchanged on Deno and on Node.
 *
 * @module
 */

import net from "node:net";
import process from "node:process";

function announce(port: number): void {
  console.log(JSON.stringify({ port }));
}

function wsEcho(): void {
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: ({ port }) => announce(port),
  }, (request) => {
    const { socket, response } = Deno.upgradeWebSocket(request);
    socket.binaryType = "arraybuffer";
    socket.onmessage = (event) => socket.send(event.data);
    return response;
  });
  void server.finished;
}

async function pipe(from: Deno.Conn, to: Deno.Conn, bufferBytes: number): Promise<void> {
  const buffer = new Uint8Array(bufferBytes);
  try {
    for (;;) {
      const n = await from.read(buffer);
      if (n === null) break;
      let offset = 0;
      while (offset < n) offset += await to.write(buffer.subarray(offset, n));
    }
    await to.closeWrite();
  } catch {
    // The other side went away: closing both below is all there is to do.
  }
}

async function denoRelay(targetPort: number, bufferBytes: number): Promise<void> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  announce((listener.addr as Deno.NetAddr).port);
  for await (const client of listener) {
    void (async () => {
      let target: Deno.Conn;
      try {
        target = await Deno.connect({ hostname: "127.0.0.1", port: targetPort });
      } catch {
        client.close();
        return;
      }
      client.setNoDelay(true);
      (target as Deno.TcpConn).setNoDelay(true);
      await Promise.all([pipe(client, target, bufferBytes), pipe(target, client, bufferBytes)]);
      for (const conn of [client, target]) {
        try {
          conn.close();
        } catch {
          // Already closed.
        }
      }
    })();
  }
}

function netRelay(targetPort: number): void {
  const server = net.createServer({ noDelay: true }, (client) => {
    const target = net.connect({ host: "127.0.0.1", port: targetPort, noDelay: true });
    client.on("data", (data) => target.write(data));
    target.on("data", (data) => client.write(data));
    client.on("end", () => target.end());
    target.on("end", () => client.end());
    client.on("error", () => target.destroy());
    target.on("error", () => client.destroy());
    client.on("close", () => target.destroy());
    target.on("close", () => client.destroy());
  });
  server.listen({ host: "127.0.0.1", port: 0, backlog: 4096 }, () => {
    announce((server.address() as net.AddressInfo).port);
  });
}

const [mode, port, bufferBytes] = process.argv.slice(2);
if (mode === "ws-echo") wsEcho();
else if (mode === "deno-relay") await denoRelay(Number(port), Number(bufferBytes ?? 65536));
else if (mode === "net-relay") netRelay(Number(port));
else {
  console.error("usage: ref_servers.ts ws-echo | deno-relay TARGET_PORT | net-relay TARGET_PORT");
  process.exit(2);
}
