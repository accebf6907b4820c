/**
 * Test helpers of the token plugin tests: captured log lines, temp dirs, a real `redis-server`
 * on a free loopback port, and a local HTTP server.
 *
 * @module
 */

import type { RequestInfo } from "../src/types.ts";
import { type ProxyProcess, startProxy, within } from "./_helpers.ts";
import { configureSync, type LogRecord } from "@logtape/logtape";
import { Buffer } from "node:buffer";
import { createServer } from "node:net";

/**
 * A plain `GET /` from 127.0.0.1:1, for plugin lookups that do not look at the request. Shared by
 * the token plugin tests: do not modify.
 */
export const lookupRequest: RequestInfo = {
  method: "GET",
  path: "/",
  headers: new Headers(),
  peer: "127.0.0.1:1",
  clientAddress: "127.0.0.1",
  secure: false,
};

/** Log lines of category `websockify` captured since {@link captureLogs} was called. */
export interface CapturedLogs {
  /** The rendered messages, oldest first. */
  readonly lines: string[];
  /** Rendered messages that contain `text`. */
  matching(text: string): string[];
}

/** Sends every `websockify` log record at debug level and above to memory. */
export function captureLogs(): CapturedLogs {
  const lines: string[] = [];
  configureSync({
    reset: true,
    sinks: {
      memory: (record: LogRecord) => lines.push(record.message.map(String).join("")),
    },
    loggers: [
      { category: ["websockify"], sinks: ["memory"], lowestLevel: "debug" },
      { category: ["logtape", "meta"], sinks: [], lowestLevel: "error" },
    ],
  });
  return { lines, matching: (text) => lines.filter((line) => line.includes(text)) };
}

/** Makes a temp dir and removes it (recursively) when disposed. */
export async function tempDir(): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempDir({ prefix: "websockify_tokens_" });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true });
    },
  };
}

/** A free TCP port on 127.0.0.1 (closed again, so another process can bind it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** A running `redis-server` started by the test. */
export interface RedisServer extends AsyncDisposable {
  readonly port: number;
  readonly password: string;
  /** Runs one command through `redis-cli` against database `db`, returning its output. */
  cli(db: number, ...args: string[]): Promise<string>;
  /** Stops the server (SIGTERM, then waits for it). */
  stop(): Promise<void>;
}

/**
 * Starts `redis-server` on 127.0.0.1 (a free port unless `options.port` is given) with a
 * password and no persistence.
 */
export async function startRedis(
  options: { password?: string; port?: number } = {},
): Promise<RedisServer> {
  const password = options.password ?? "s3cret: pass";
  const port = options.port ?? await freePort();
  const child = new Deno.Command("redis-server", {
    args: [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
      "--requirepass",
      password,
      "--loglevel",
      "warning",
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    try {
      child.kill("SIGTERM");
    } catch {
      // already gone
    }
    await child.status;
  };
  const cli = async (db: number, ...args: string[]) => {
    const output = await new Deno.Command("redis-cli", {
      args: ["-h", "127.0.0.1", "-p", String(port), "-n", String(db), "--no-auth-warning"],
      env: { REDISCLI_AUTH: password },
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const writer = output.stdin.getWriter();
    await writer.write(new TextEncoder().encode(args.map(quoteForCli).join(" ") + "\n"));
    await writer.close();
    const result = await output.output();
    return new TextDecoder().decode(result.stdout).trim();
  };
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`redis-server did not start on port ${port} within 10 s`);
    }
    if ((await cli(0, "PING").catch(() => "")) === "PONG") break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return { port, password, cli, stop, [Symbol.asyncDispose]: stop };
}

/** Quotes one argument for redis-cli's interactive line syntax. */
function quoteForCli(argument: string): string {
  return `"${argument.replaceAll("\\", "\\\\").replaceAll('"', '\\"')}"`;
}

/** A local HTTP server on 127.0.0.1:0 answering with `handler`; disposed by shutting down. */
export function startHttp(
  handler: (request: Request) => Response | Promise<Response>,
): AsyncDisposable & { url: string; requests: URL[] } {
  const requests: URL[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    requests.push(new URL(request.url));
    return handler(request);
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    requests,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
    },
  };
}

// ---- End-to-end helpers: the proxy process, tagged echo targets, clients ----

export { MAIN, within } from "./_helpers.ts";

const decoder = new TextDecoder();

/** A running `main.ts` started by a test (see tests/_helpers.ts). */
export type Proxy = ProxyProcess;

/** Spawns `main.ts` with `args` and waits for the banner's "Listen on" line. */
export function spawnProxy(args: string[], cwd?: string): Promise<Proxy> {
  return startProxy(args, cwd === undefined ? {} : { cwd });
}

/** A TCP or Unix echo server that prefixes every chunk it echoes with `tag`. */
export interface TaggedEcho extends AsyncDisposable {
  /** The TCP port (0 for a Unix socket server). */
  readonly port: number;
}

/** Starts a tagged echo server on 127.0.0.1:0, or on the Unix socket `path`. */
export function startTaggedEcho(tag: string, path?: string): Promise<TaggedEcho> {
  const prefix = new TextEncoder().encode(tag);
  const sockets = new Set<import("node:net").Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => socket.destroy());
    socket.on("data", (data: Buffer) => socket.write(Buffer.concat([prefix, data])));
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    const ready = () => {
      const address = server.address();
      resolve({
        port: typeof address === "object" && address !== null ? address.port : 0,
        async [Symbol.asyncDispose]() {
          for (const socket of sockets) socket.destroy();
          await new Promise<void>((done) => server.close(() => done()));
        },
      });
    };
    if (path === undefined) server.listen(0, "127.0.0.1", ready);
    else server.listen(path, ready);
  });
}

/**
 * Opens a WebSocket to the proxy at `path`, sends `message` as a binary frame and returns the
 * first message it gets back, as text.
 */
export async function echoThrough(port: number, path: string, message: string): Promise<string> {
  const socket = new WebSocket(`ws://127.0.0.1:${port}${path}`, ["binary"]);
  socket.binaryType = "arraybuffer";
  try {
    return await within(
      new Promise<string>((resolve, reject) => {
        socket.onopen = () => socket.send(new TextEncoder().encode(message));
        socket.onmessage = (event) => resolve(decoder.decode(event.data as ArrayBuffer));
        socket.onerror = () => reject(new Error(`WebSocket to ${path} failed`));
        socket.onclose = (event) =>
          reject(new Error(`WebSocket closed: ${event.code} ${event.reason}`));
      }),
      10_000,
      `echo through ${path}`,
    );
  } finally {
    socket.onclose = null;
    socket.onerror = null;
    if (socket.readyState !== WebSocket.CLOSED) {
      const closed = new Promise((resolve) => socket.addEventListener("close", resolve));
      socket.close(1000);
      await within(closed, 5000, "WebSocket close").catch(() => {});
    }
  }
}

/** Sends a raw WebSocket upgrade request and returns the response status line and body. */
export async function upgradeStatus(
  port: number,
  path: string,
  extraHeaders: Record<string, string> = {},
): Promise<{ statusLine: string; response: string }> {
  const connection = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const headers = {
      Host: `127.0.0.1:${port}`,
      Upgrade: "websocket",
      Connection: "Upgrade",
      "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
      "Sec-WebSocket-Version": "13",
      ...extraHeaders,
    };
    const head = [`GET ${path} HTTP/1.1`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
    await connection.write(new TextEncoder().encode(head.join("\r\n") + "\r\n\r\n"));
    let response = "";
    const buffer = new Uint8Array(4096);
    await within(
      (async () => {
        for (;;) {
          const count = await connection.read(buffer);
          if (count === null) break;
          response += decoder.decode(buffer.subarray(0, count));
          if (response.startsWith("HTTP/1.1 101")) break;
        }
      })(),
      10_000,
      `response to ${path}`,
    );
    return { statusLine: response.split("\r\n")[0] ?? "", response };
  } finally {
    connection.close();
  }
}
