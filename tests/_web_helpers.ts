/**
 * Helpers for the web and auth tests: a real node:http server on 127.0.0.1:0, raw HTTP requests
 * and response parsing (for request targets `fetch` would normalise), and a temporary web root.
 *
 * @module
 */

import { rawExchange, startEcho, startProxy, upgradeRequest as requestText } from "./_helpers.ts";
import * as http from "node:http";
import type { Duplex } from "node:stream";

/** A running test server. */
export interface TestServer {
  readonly port: number;
  close(): Promise<void>;
}

/** Starts a node:http server on 127.0.0.1:0 with the given request and upgrade handlers. */
export async function startServer(
  onRequest: (request: http.IncomingMessage, response: http.ServerResponse) => void,
  onUpgrade?: (request: http.IncomingMessage, socket: Duplex, head: Uint8Array) => void,
): Promise<TestServer> {
  const server = http.createServer(onRequest);
  if (onUpgrade !== undefined) server.on("upgrade", onUpgrade);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("no TCP address");
  return {
    port: address.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** One parsed HTTP response. */
export interface RawResponse {
  readonly status: number;
  readonly reason: string;
  /** Header names lower-cased; repeated headers joined with ", ". */
  readonly headers: Map<string, string>;
  readonly body: string;
}

/**
 * Parses consecutive HTTP/1.1 responses from `bytes`. Bodies are delimited by Content-Length
 * (absent means none: for HEAD and 304, or for the last response, the rest of the bytes).
 */
export function parseResponses(bytes: Uint8Array, headRequest = false): RawResponse[] {
  // One char per byte (not TextDecoder("latin1"), which is windows-1252), so that
  // Content-Length counts line up; bodies are then decoded as UTF-8.
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  const responses: RawResponse[] = [];
  let rest = text;
  for (let count = 0; count < 100 && rest.length > 0; count++) {
    const end = rest.indexOf("\r\n\r\n");
    if (end < 0) throw new Error(`incomplete response head: ${JSON.stringify(rest)}`);
    const [statusLine = "", ...lines] = rest.slice(0, end).split("\r\n");
    const match = /^HTTP\/1\.[01] (\d{3}) ?(.*)$/.exec(statusLine);
    if (match === null) throw new Error(`bad status line: ${JSON.stringify(statusLine)}`);
    const headers = new Map<string, string>();
    for (const line of lines) {
      const colon = line.indexOf(":");
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim();
      headers.set(name, headers.has(name) ? `${headers.get(name)}, ${value}` : value);
    }
    const status = Number(match[1]);
    const length = headers.get("content-length");
    const bodyless = headRequest || status === 304 || status === 204;
    const bodyLength = bodyless ? 0 : length === undefined ? rest.length - end - 4 : Number(length);
    const bodyBytes = rest.slice(end + 4, end + 4 + bodyLength);
    const body = new TextDecoder().decode(Uint8Array.from(bodyBytes, (char) => char.charCodeAt(0)));
    responses.push({ status, reason: match[2] ?? "", headers, body });
    rest = rest.slice(end + 4 + bodyLength);
  }
  return responses;
}

/** Sends one request with `Connection: close` and parses the single response. */
export async function rawRequest(
  port: number,
  method: string,
  target: string,
  headers: Readonly<Record<string, string>> = {},
): Promise<RawResponse> {
  const lines = [`${method} ${target} HTTP/1.1`, "Host: 127.0.0.1", "Connection: close"];
  for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`);
  const bytes = await rawExchange(port, `${lines.join("\r\n")}\r\n\r\n`, { mustClose: true });
  const responses = parseResponses(bytes, method === "HEAD");
  if (responses.length !== 1) throw new Error(`expected 1 response, got ${responses.length}`);
  return responses[0]!;
}

/** A spawned `main.ts` process. */
export interface Proxy {
  /** The port it listens on. */
  readonly port: number;
  /** Everything written to stderr so far. */
  stderr(): string;
  /** Sends SIGTERM and waits (bounded) for the exit; returns the exit code. */
  stop(): Promise<number>;
}

const MAIN = new URL("../main.ts", import.meta.url).pathname;

/**
 * Runs `main.ts` with `args` (listen address `127.0.0.1:0` is prepended) and waits for its banner
 * (see `startProxy()` in tests/_helpers.ts); rejects with the collected stderr if it exits first.
 */
export async function spawnProxy(args: readonly string[], cwd?: string): Promise<Proxy> {
  const proxy = await startProxy(["127.0.0.1:0", ...args], cwd === undefined ? {} : { cwd });
  return {
    port: proxy.port,
    stderr: proxy.stderr,
    async stop() {
      proxy.kill("SIGTERM");
      const timer = setTimeout(() => proxy.kill("SIGKILL"), 10_000);
      const status = await proxy.status;
      clearTimeout(timer);
      return status.code;
    },
  };
}

/** Runs `main.ts` with `args` expecting it to fail at start-up; returns exit code and stderr. */
export async function runProxyToFailure(
  args: readonly string[],
  cwd?: string,
): Promise<{ code: number; stderr: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--unstable-net", MAIN, "127.0.0.1:0", ...args],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    ...(cwd === undefined ? {} : { cwd }),
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
  const output = await child.output();
  clearTimeout(timer);
  return { code: output.code, stderr: new TextDecoder().decode(output.stderr) };
}

/**
 * Sends a WebSocket upgrade request for `path` with extra `headers` and returns the response head
 * (status and headers). A 101 connection is closed right after its head; any other answer is read
 * to the end, so `body` is complete. Rejects after `timeoutMs`.
 */
export async function upgradeRequest(
  port: number,
  headers: Readonly<Record<string, string>> = {},
  path = "/websockify",
  timeoutMs = 5000,
): Promise<RawResponse> {
  const request = requestText(
    path,
    Object.entries(headers).map(([name, value]) => `${name}: ${value}`),
  );
  const connection = await Deno.connect({ hostname: "127.0.0.1", port });
  const timer = setTimeout(() => connection.close(), timeoutMs);
  let text = "";
  try {
    await connection.write(new TextEncoder().encode(request));
    const buffer = new Uint8Array(65536);
    for (let reads = 0; reads < 10_000; reads++) {
      const count = await connection.read(buffer);
      if (count === null) break;
      for (const byte of buffer.subarray(0, count)) text += String.fromCharCode(byte);
      if (text.startsWith("HTTP/1.1 101 ") && text.includes("\r\n\r\n")) break;
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.BadResource)) throw error;
    throw new Error(`no complete answer to the upgrade within ${timeoutMs} ms: ${text}`);
  } finally {
    clearTimeout(timer);
    try {
      connection.close();
    } catch {
      // Closed by the timer.
    }
  }
  const bytes = Uint8Array.from(text, (char) => char.charCodeAt(0));
  const [response] = parseResponses(bytes, text.startsWith("HTTP/1.1 101 "));
  if (response === undefined) throw new Error("no response to the upgrade");
  return response;
}

/** A TCP echo server on 127.0.0.1 (see `startEcho()` in tests/_helpers.ts). */
export function startEchoServer(): { port: number; close(): Promise<void> } {
  const echo = startEcho();
  return { port: echo.port, close: async () => await echo[Symbol.asyncDispose]() };
}
