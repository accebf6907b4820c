/**
 * Test helpers: spawn the proxy as a real process, real TCP echo/sink servers, a `ws` client,
 * raw HTTP exchanges, and bounded waits. Everything listens on 127.0.0.1 port 0.
 *
 * @module
 */

import { WebSocket } from "ws";

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** Absolute path of main.ts. */
export const MAIN = new URL("../main.ts", import.meta.url).pathname;

/** Rejects after `ms` with `what` in the message, unless `promise` settles first. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms: ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** A proxy process started by {@link startProxy}. */
export interface ProxyProcess extends AsyncDisposable {
  /** `host:port` (or socket path) from the banner's "Listen on" line. */
  readonly address: string;
  /** The port, for TCP listeners. */
  readonly port: number;
  /** Process id of the proxy. */
  readonly pid: number;
  /** Everything written to stderr so far. */
  stderr(): string;
  /** Everything written to stdout so far. */
  stdout(): string;
  /** Waits until stderr matches `pattern`. */
  waitFor(pattern: RegExp, ms?: number): Promise<RegExpMatchArray>;
  /** Sends a signal. */
  kill(signal?: Deno.Signal): void;
  /** Resolves with the exit status. */
  readonly status: Promise<Deno.CommandStatus>;
}

/** This process's environment without DENO_V8_FLAGS (with `clearEnv`: started as users start it). */
export function envWithoutV8Flags(): Record<string, string> {
  const env = Deno.env.toObject();
  delete env.DENO_V8_FLAGS;
  return env;
}

/**
 * `taskset -c CPU` as a command prefix when the machine has taskset and two CPUs (so a server and
 * its load get a core each), otherwise nothing.
 */
export function pinned(cpu: number): string[] {
  const taskset = ["/usr/bin/taskset", "/bin/taskset"].find((path) => {
    try {
      return Deno.statSync(path).isFile;
    } catch {
      return false;
    }
  });
  return taskset && navigator.hardwareConcurrency >= 2 ? [taskset, "-c", String(cpu)] : [];
}

/** Output of a process that exits by itself (usage errors, --help). */
export async function runMain(
  args: string[],
  options: { cwd?: string; timeoutMs?: number } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const command = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--unstable-net", MAIN, ...args],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
    ...(options.cwd ? { cwd: options.cwd } : {}),
  });
  const child = command.spawn();
  const output = await within(child.output(), options.timeoutMs ?? 20000, `websockify ${args}`)
    .catch((error) => {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already exited.
      }
      throw error;
    });
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/** Starts `main.ts` with `args` and waits for its "Listen on" banner line. */
export async function startProxy(
  args: string[],
  options: {
    cwd?: string;
    env?: Record<string, string>;
    clearEnv?: boolean;
    deno?: string[];
    /** Words run before `deno` (e.g. from {@link pinned}). */
    prefix?: string[];
  } = {},
): Promise<ProxyProcess> {
  const [program, ...before] = [...(options.prefix ?? []), Deno.execPath()];
  const child = new Deno.Command(program!, {
    args: [...before, "run", ...(options.deno ?? ["--allow-all", "--unstable-net"]), MAIN, ...args],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
    ...(options.cwd ? { cwd: options.cwd } : {}),
    ...(options.env ? { env: options.env } : {}),
    ...(options.clearEnv ? { clearEnv: true } : {}),
  }).spawn();
  let stderr = "";
  let stdout = "";
  const waiters = new Set<() => void>();
  const collect = async (stream: ReadableStream<Uint8Array>, into: "out" | "err") => {
    for await (const chunk of stream) {
      if (into === "err") stderr += decoder.decode(chunk);
      else stdout += decoder.decode(chunk);
      for (const waiter of waiters) waiter();
    }
  };
  const collecting = Promise.all([collect(child.stdout, "out"), collect(child.stderr, "err")]);
  let exited = false;
  const status = child.status.then(async (value) => {
    await collecting;
    exited = true;
    for (const waiter of waiters) waiter();
    return value;
  });

  const waitFor = (pattern: RegExp, ms = 15000) =>
    within(
      new Promise<RegExpMatchArray>((resolve, reject) => {
        const check = () => {
          const match = stderr.match(pattern);
          if (match) {
            waiters.delete(check);
            resolve(match);
          } else if (exited) {
            waiters.delete(check);
            reject(new Error(`Proxy exited before printing ${pattern}:\n${stderr}`));
          }
        };
        waiters.add(check);
        check();
      }),
      ms,
      `proxy output ${pattern}; stderr so far:\n${stderr}`,
    );

  const kill = (signal: Deno.Signal = "SIGTERM") => {
    if (exited) return;
    try {
      child.kill(signal);
    } catch {
      // Already exited.
    }
  };
  let address = "";
  try {
    // `[^\s"]`: in --log-format json the address is followed by the closing quote.
    const match = await waitFor(/Listen on (?:unix socket )?([^\s"]+)/);
    address = match[1] ?? "";
    // The banner's last line: once it is there, the whole banner is.
    await waitFor(/ - proxying from /);
  } catch (error) {
    kill("SIGKILL");
    await status;
    throw error;
  }
  const port = Number(/:(\d+)$/.exec(address)?.[1] ?? 0);
  return {
    address,
    port,
    pid: child.pid,
    stderr: () => stderr,
    stdout: () => stdout,
    waitFor,
    kill,
    status,
    async [Symbol.asyncDispose]() {
      kill("SIGTERM");
      const timer = setTimeout(() => kill("SIGKILL"), 5000);
      await status;
      clearTimeout(timer);
    },
  };
}

/** A TCP server used as the proxy's target. */
export interface TargetServer extends AsyncDisposable {
  readonly port: number;
  /** Connections accepted so far. */
  readonly connections: Deno.Conn[];
  /** Resolves with the next connection not yet handed out (waiting for one if none is). */
  nextConnection(): Promise<Deno.Conn>;
}

/** Starts a TCP server; `handle` runs for each connection (default: echo). */
export function startTarget(
  handle: (conn: Deno.Conn) => Promise<void> = (conn) => conn.readable.pipeTo(conn.writable),
  options: { transport?: "tcp" | "unix"; path?: string } = {},
): TargetServer & { readonly path?: string } {
  const listener = options.transport === "unix"
    ? Deno.listen({ transport: "unix", path: options.path as string })
    : Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const connections: Deno.Conn[] = [];
  const pending: ((conn: Deno.Conn) => void)[] = [];
  const handlers: Promise<void>[] = [];
  /** Connections nextConnection() has handed out (or that a waiter took on arrival). */
  let claimed = 0;
  const accepting = (async () => {
    try {
      for await (const conn of listener) {
        connections.push(conn);
        const waiter = pending.shift();
        if (waiter) {
          claimed++;
          waiter(conn);
        }
        handlers.push(handle(conn).catch(() => {}));
      }
    } catch {
      // Listener closed.
    }
  })();
  return {
    port: options.transport === "unix" ? 0 : (listener.addr as Deno.NetAddr).port,
    ...(options.path ? { path: options.path } : {}),
    connections,
    // A connection accepted before the call counts: the proxy may dial before the test asks.
    nextConnection: () =>
      claimed < connections.length
        ? Promise.resolve(connections[claimed++]!)
        : within(new Promise((resolve) => pending.push(resolve)), 10000, "target connection"),
    async [Symbol.asyncDispose]() {
      listener.close();
      for (const conn of connections) {
        try {
          conn.close();
        } catch {
          // Already closed.
        }
      }
      await accepting;
      await Promise.all(handlers);
    },
  };
}

/** Starts a TCP echo server. */
export function startEcho(): TargetServer {
  return startTarget();
}

/** A loopback TCP port held by {@link holdPort} until disposed. */
export interface HeldPort extends AsyncDisposable {
  readonly port: number;
}

const HOLD_PORT_SCRIPT = `
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
if sys.argv[1] == "listen":
    s.listen(0)
print(s.getsockname()[1], flush=True)
sys.stdin.read()
`;

/**
 * Binds a loopback TCP port in a `/usr/bin/python3` child (Deno cannot bind without listening),
 * held until disposed; the child also exits when this process does (its stdin closes).
 * - `"refuse"`: bound, not listening. Every connect is refused at once, and since the socket is
 *   bound without SO_REUSEADDR nobody else can listen on the port meanwhile (unlike a port probed
 *   with a listener and closed again).
 * - `"listen"`: listening with a backlog of 0 and never accepting: once its queue is full (a
 *   connection or two), the kernel drops further SYNs, so a connect hangs as to a black-holed host.
 */
export async function holdPort(mode: "refuse" | "listen"): Promise<HeldPort> {
  const child = new Deno.Command("/usr/bin/python3", {
    args: ["-c", HOLD_PORT_SCRIPT, mode],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const stop = async () => {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    await child.stdin.close().catch(() => {});
    await child.stdout.cancel().catch(() => {});
    await child.status;
  };
  let port = 0;
  const reader = child.stdout.getReader();
  try {
    const line = decoder.decode((await within(reader.read(), 10000, "held port")).value);
    reader.releaseLock();
    port = Number(line.trim());
    if (!Number.isInteger(port) || port <= 0) throw new Error(`No port from the holder: '${line}'`);
  } catch (error) {
    // A read still pending keeps the stream locked: cancel it through the reader.
    await reader.cancel().catch(() => {});
    await stop();
    throw error;
  }
  return { port, [Symbol.asyncDispose]: stop };
}

/**
 * A loopback port that a connect hangs on, as on a black-holed host: {@link holdPort}'s
 * `"listen"` with its accept queue filled, so the kernel drops further SYNs.
 */
export async function holdBlackHole(): Promise<HeldPort> {
  const held = await holdPort("listen");
  const fillers: Deno.Conn[] = [];
  for (let index = 0; index < 4; index++) {
    const conn = await within(Deno.connect({ hostname: "127.0.0.1", port: held.port }), 500, "fill")
      .catch(() => undefined);
    if (conn === undefined) break; // The queue is full: this SYN was dropped.
    fillers.push(conn);
  }
  return {
    port: held.port,
    async [Symbol.asyncDispose]() {
      for (const conn of fillers) conn.close();
      await held[Symbol.asyncDispose]();
    },
  };
}

/** A connected `ws` client that collects what it receives. */
export interface TestClient {
  readonly ws: WebSocket;
  /** Resolves with the next message (binary as Uint8Array, text as string). */
  next(ms?: number): Promise<Uint8Array | string>;
  /** Resolves with `count` bytes of binary data, across messages. */
  receiveBytes(count: number, ms?: number): Promise<Uint8Array>;
  /** Resolves with the close code and reason. */
  readonly closed: Promise<{ code: number; reason: string }>;
  /** Sizes of the binary messages received so far. */
  readonly messageSizes: number[];
}

/** Opens a WebSocket to `url` and waits for it to open. */
export async function connectClient(
  url: string,
  options: { protocols?: string[]; headers?: Record<string, string>; localAddress?: string } = {},
): Promise<TestClient> {
  const ws = new WebSocket(url, options.protocols ?? [], {
    headers: options.headers ?? {},
    perMessageDeflate: false,
    ...(options.localAddress ? { localAddress: options.localAddress } : {}),
  });
  const queue: (Uint8Array | string)[] = [];
  const waiters: (() => void)[] = [];
  const messageSizes: number[] = [];
  ws.on("message", (data: Buffer, isBinary: boolean) => {
    if (isBinary) messageSizes.push(data.length);
    queue.push(isBinary ? new Uint8Array(data) : data.toString("utf8"));
    waiters.shift()?.();
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    ws.on("close", (code: number, reason: Buffer) => {
      resolve({ code, reason: reason.toString() });
      for (const waiter of waiters.splice(0)) waiter();
    });
  });
  await within(
    new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
      ws.once(
        "unexpected-response",
        (_req: unknown, res: { statusCode: number; statusMessage: string }) =>
          reject(new Error(`Unexpected response ${res.statusCode} ${res.statusMessage}`)),
      );
    }),
    10000,
    `WebSocket open ${url}`,
  );
  ws.on("error", () => {});
  const next = async (ms = 10000): Promise<Uint8Array | string> => {
    while (queue.length === 0) {
      if (ws.readyState === ws.CLOSED) throw new Error("WebSocket closed");
      await within(new Promise<void>((resolve) => waiters.push(resolve)), ms, "next message");
    }
    return queue.shift() as Uint8Array | string;
  };
  const receiveBytes = async (count: number, ms = 10000): Promise<Uint8Array> => {
    const result = new Uint8Array(count);
    let offset = 0;
    const deadline = Date.now() + ms;
    while (offset < count) {
      const message = await next(Math.max(1, deadline - Date.now()));
      const bytes = typeof message === "string" ? encoder.encode(message) : message;
      result.set(bytes.subarray(0, count - offset), offset);
      offset += bytes.length;
    }
    return result;
  };
  return { ws, next, receiveBytes, closed, messageSizes };
}

/**
 * Sends `request` on a raw TCP connection and returns the bytes read until the server closes it
 * (a reset counts as closing) or `ms` pass. With `mustClose`, a connection still open after `ms`
 * is an error instead (for answers that must end the connection).
 */
export async function rawExchange(
  port: number,
  request: string | Uint8Array,
  options: { ms?: number; mustClose?: boolean } = {},
): Promise<Uint8Array> {
  const { ms = 5000, mustClose = false } = options;
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const timer = setTimeout(() => conn.close(), ms);
  const chunks: Uint8Array[] = [];
  let closed = false;
  try {
    await conn.write(typeof request === "string" ? encoder.encode(request) : request);
    const buffer = new Uint8Array(65536);
    for (let reads = 0; reads < 10_000 && !closed; reads++) {
      const count = await conn.read(buffer);
      if (count === null) closed = true;
      else chunks.push(buffer.slice(0, count));
    }
  } catch (error) {
    // The timer closing the connection interrupts the read; a reset is the server closing.
    if (error instanceof Deno.errors.ConnectionReset) closed = true;
    else if (
      !(error instanceof Deno.errors.BadResource || error instanceof Deno.errors.Interrupted)
    ) {
      throw error;
    }
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // Already closed by the timer.
    }
  }
  if (mustClose && !closed) {
    throw new Error(`The server did not close the connection within ${ms} ms`);
  }
  const total = new Uint8Array(chunks.reduce((sum, chunk) => sum + chunk.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    total.set(chunk, offset);
    offset += chunk.length;
  }
  return total;
}

/** A minimal valid upgrade request for `path`, with extra header lines. */
export function upgradeRequest(path = "/", extra: string[] = []): string {
  return [
    `GET ${path} HTTP/1.1`,
    "Host: 127.0.0.1",
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
    ...extra,
    "",
    "",
  ].join("\r\n");
}

/** Random bytes of `size` (crypto.getRandomValues in 64 KiB pieces). */
export function randomBytes(size: number): Uint8Array {
  const bytes = new Uint8Array(size);
  for (let offset = 0; offset < size; offset += 65536) {
    crypto.getRandomValues(bytes.subarray(offset, Math.min(size, offset + 65536)));
  }
  return bytes;
}

/** Whether process `pid` still exists. */
export function alive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/** Resolves once process `pid` is gone; rejects after `ms` (`what` names the wait). */
export async function gone(pid: number, ms: number, what: string): Promise<void> {
  await within(
    (async () => {
      while (alive(pid)) await new Promise((resolve) => setTimeout(resolve, 50));
    })(),
    ms,
    what,
  );
}

/** Child pids of `pid` over all its threads (zombies included), from /proc. */
export function childrenOf(pid: number): number[] {
  const found: number[] = [];
  for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
    const text = Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/children`).trim();
    if (text) found.push(...text.split(/\s+/).map(Number));
  }
  return found;
}

/** How many descriptors of process `pid` are of `kind` ("socket", "pipe"), from /proc. */
export function descriptorsOf(pid: number, kind: string): number {
  let count = 0;
  for (const entry of Deno.readDirSync(`/proc/${pid}/fd`)) {
    try {
      if (Deno.readLinkSync(`/proc/${pid}/fd/${entry.name}`).startsWith(`${kind}:`)) count++;
    } catch {
      // closed while listed
    }
  }
  return count;
}

/** Resident set size of process `pid` in bytes, from /proc. */
export function rssOf(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const match = /VmRSS:\s+(\d+) kB/.exec(status);
  return match ? Number(match[1]) * 1024 : 0;
}
