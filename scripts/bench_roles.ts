/**
 * The Deno process `scripts/bench.ts` starts besides the proxies under test: the "limit" column,
 * `Deno.serve` + `Deno.upgradeWebSocket`, the fastest WebSocket server Deno has (it cannot be a
 * proxy: it has no backpressure from client to target). Run as
 * `deno run -A scripts/bench_roles.ts limit`; prints `{"port":N}` once it listens.
 *
 * It speaks the protocol of the TCP target in `scripts/loadgen.c`, one WebSocket message at a
 * time, so that the load generator drives it exactly as it drives a proxy in front of that
 * target. The first message picks the mode:
 * - `E`: echo every message after it (bytes after the `E` are echoed too).
 * - `S` + u32 window ms + u32 warm-up ms: sink; the window starts warm-up ms after the first
 *   data, then the server answers with the payload bytes counted in the window as a u64 and keeps
 *   discarding (the ws→tcp rows).
 * - `R` + u32 size: source; sends `size`-byte binary messages as fast as `bufferedAmount`
 *   allows: it keeps up to 8 MiB queued and looks again every millisecond (Deno's WebSocket has
 *   no drain event; docs: /work/shared/reference/deno-platform.md §1a) (the tcp→ws rows).
 *
 * The load generator and TCP target themselves are C: `scripts/loadgen.c`.
 *
 * @module
 */

type Json = Record<string, unknown>;

function print(value: Json): void {
  Deno.stdout.writeSync(new TextEncoder().encode(JSON.stringify(value) + "\n"));
}

/** Bytes the source keeps queued in `bufferedAmount`, and how often it looks again. */
const SOURCE_HIGH_WATER = 8 * 1024 * 1024;
const SOURCE_POLL_MS = 1;

function u32(data: Uint8Array, at: number): number {
  return new DataView(data.buffer, data.byteOffset + at, 4).getUint32(0);
}

function sizeOf(data: unknown): number {
  if (data instanceof ArrayBuffer) return data.byteLength;
  if (typeof data === "string") return new TextEncoder().encode(data).length;
  return 0;
}

function sink(socket: WebSocket, windowMs: number, warmupMs: number, already: number): void {
  let count = 0;
  let counting = false;
  let started = false;
  const start = () => {
    started = true;
    setTimeout(() => {
      counting = true;
      setTimeout(() => {
        counting = false;
        const answer = new Uint8Array(8);
        new DataView(answer.buffer).setBigUint64(0, BigInt(count));
        if (socket.readyState === WebSocket.OPEN) socket.send(answer);
      }, windowMs);
    }, warmupMs);
  };
  if (already > 0) start();
  socket.onmessage = (event) => {
    if (!started) start();
    if (counting) count += sizeOf(event.data);
  };
}

function source(socket: WebSocket, size: number): void {
  const block = new Uint8Array(size || 65536).fill(0x5a);
  const pump = () => {
    if (socket.readyState !== WebSocket.OPEN) return;
    while (socket.bufferedAmount < SOURCE_HIGH_WATER) socket.send(block);
    setTimeout(pump, SOURCE_POLL_MS);
  };
  socket.onmessage = () => {};
  pump();
}

function startLimit(): void {
  Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: ({ port }) => print({ port }),
  }, (request) => {
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return new Response("WebSocket only\n", { status: 400 });
    }
    // The load generator asks for the `binary` subprotocol, as noVNC does; the proxy agrees to it.
    const asked = request.headers.get("sec-websocket-protocol");
    const { socket, response } = Deno.upgradeWebSocket(
      request,
      asked?.split(",").map((p) => p.trim()).includes("binary")
        ? { protocol: "binary", idleTimeout: 0 }
        : { idleTimeout: 0 },
    );
    socket.binaryType = "arraybuffer";
    socket.onerror = () => {};
    socket.onmessage = (event) => {
      const data = typeof event.data === "string"
        ? new TextEncoder().encode(event.data)
        : new Uint8Array(event.data as ArrayBuffer);
      const mode = String.fromCharCode(data[0] ?? 0);
      if (mode === "E") {
        socket.onmessage = (message) => socket.send(message.data);
        if (data.length > 1) socket.send(data.subarray(1));
      } else if (mode === "S" && data.length >= 9) {
        sink(socket, u32(data, 1), u32(data, 5), data.length - 9);
      } else if (mode === "R" && data.length >= 5) {
        source(socket, u32(data, 1));
      } else {
        socket.close(1003, "unknown mode");
      }
    };
    return response;
  });
}

if (import.meta.main) {
  const [role] = Deno.args;
  if (role === "limit") startLimit();
  else throw new Error(`Unknown role '${role}': use limit`);
}
