/**
 * Test helpers of the token plugin tests: captured log lines, temp dirs, a real `redis-server`
 * on a free loopback port, and a local HTTP server.
 *
 * @module
 */

import { configureSync, type LogRecord } from "@logtape/logtape";
import { createServer } from "node:net";

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
