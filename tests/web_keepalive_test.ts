// End-to-end: main.ts with --web keeps HTTP/1.1 connections alive between requests (a browser
// loading noVNC fetches dozens of files), bounds idle and slow kept-alive connections, and closes
// them on a drain without holding it up.
import assert from "node:assert/strict";
import { startEcho, startProxy, upgradeRequest, within } from "./_helpers.ts";
import { parseResponses, type RawResponse } from "./_web_helpers.ts";

const REPO = new URL("..", import.meta.url).pathname;
const encoder = new TextEncoder();

/** A raw client connection that reads responses one at a time. */
class Client {
  #conn: Deno.Conn;
  #bytes = new Uint8Array(0);
  #closed = false;
  #reading: Promise<void>;
  #wake: (() => void) | undefined;

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
    this.#reading = this.#read();
  }

  static async open(port: number): Promise<Client> {
    return new Client(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  async #read(): Promise<void> {
    const buffer = new Uint8Array(65536);
    try {
      for (let reads = 0; reads < 10_000; reads++) {
        const count = await this.#conn.read(buffer);
        if (count === null) break;
        const next = new Uint8Array(this.#bytes.length + count);
        next.set(this.#bytes);
        next.set(buffer.subarray(0, count), this.#bytes.length);
        this.#bytes = next;
        this.#wake?.();
      }
    } catch {
      // A reset or our own close: the connection is over either way.
    }
    this.#closed = true;
    this.#wake?.();
  }

  get closed(): boolean {
    return this.#closed;
  }

  async send(text: string | Uint8Array): Promise<void> {
    await this.#conn.write(typeof text === "string" ? encoder.encode(text) : text);
  }

  /** Waits until `done(bytes)` holds (or the connection closes); returns and drops the bytes. */
  async until(done: (bytes: Uint8Array) => boolean, ms: number, what: string): Promise<Uint8Array> {
    await within(
      (async () => {
        while (!done(this.#bytes) && !this.#closed) {
          await new Promise<void>((resolve) => (this.#wake = resolve));
        }
      })(),
      ms,
      what,
    );
    const bytes = this.#bytes;
    this.#bytes = new Uint8Array(0);
    return bytes;
  }

  /** Reads exactly one response with a Content-Length body. */
  async response(ms = 5000): Promise<RawResponse> {
    const complete = (bytes: Uint8Array) => {
      try {
        const [first] = parseResponses(bytes);
        const length = Number(first?.headers.get("content-length") ?? NaN);
        return first !== undefined && new TextEncoder().encode(first.body).length === length;
      } catch {
        return false;
      }
    };
    const bytes = await this.until(complete, ms, "a complete response");
    const responses = parseResponses(bytes);
    assert.equal(responses.length, 1, `one response expected, got ${responses.length}`);
    return responses[0]!;
  }

  /** Resolves with the milliseconds until the server closes the connection. */
  async closedWithin(ms: number): Promise<number> {
    const start = performance.now();
    const rest = await this.until(() => false, ms, "the server closing the connection");
    assert.equal(new TextDecoder().decode(rest), "", "nothing is sent before the close");
    assert.ok(this.#closed);
    return performance.now() - start;
  }

  async close(): Promise<void> {
    try {
      this.#conn.close();
    } catch {
      // Already closed.
    }
    await this.#reading;
  }
}

const get = (path: string, extra = "") => `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${extra}\r\n`;

/** The proxy under test; `stop()` sends SIGTERM once and resolves with the exit status. */
interface WebProxy {
  readonly port: number;
  stop(): Promise<Deno.CommandStatus>;
}

/** Runs `body` against `main.ts --web <root>` with `args`; the proxy must exit with 0. */
async function withWebProxy(
  args: string[],
  body: (proxy: WebProxy) => Promise<void>,
): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "websockify-keepalive-" });
  await Deno.writeTextFile(`${root}/a.txt`, "first file\n");
  await Deno.writeTextFile(`${root}/b.txt`, "second file\n");
  await using echo = startEcho();
  const proxy = await startProxy(
    ["127.0.0.1:0", `127.0.0.1:${echo.port}`, "--web", root, ...args],
    { cwd: REPO },
  );
  let stopped: Promise<Deno.CommandStatus> | undefined;
  const stop = () => {
    if (stopped === undefined) {
      proxy.kill("SIGTERM");
      stopped = within(proxy.status, 10_000, "the proxy exiting");
    }
    return stopped;
  };
  try {
    await body({ port: proxy.port, stop });
  } finally {
    const status = await stop();
    await Deno.remove(root, { recursive: true });
    assert.equal(status.code, 0, proxy.stderr());
  }
}

/** Opens a connection, fetches /a.txt and checks the connection is kept open after it. */
async function keptAlive(port: number): Promise<Client> {
  const client = await Client.open(port);
  await client.send(get("/a.txt"));
  const first = await client.response();
  assert.equal(first.status, 200);
  assert.equal(first.body, "first file\n");
  assert.notEqual(first.headers.get("connection"), "close");
  // A browser's next fetch comes a moment later, on the same connection.
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.ok(!client.closed, "the connection is still open after the first response");
  return client;
}

Deno.test("main.ts --web answers several requests on one kept-alive connection", async () => {
  await withWebProxy([], async (proxy) => {
    const client = await keptAlive(proxy.port);
    try {
      await client.send(get("/b.txt"));
      const second = await client.response();
      assert.equal(second.status, 200);
      assert.equal(second.body, "second file\n");
      // Pipelined: two requests in one write, two answers in order.
      await client.send(get("/b.txt") + get("/a.txt", "Connection: close\r\n"));
      const bytes = await client.until(() => false, 5000, "the close after Connection: close");
      const answers = parseResponses(bytes);
      assert.deepEqual(answers.map((answer) => answer.body), ["second file\n", "first file\n"]);
      assert.ok(client.closed, "Connection: close ends the connection after its answer");
    } finally {
      await client.close();
    }
  });
});

Deno.test("main.ts --web closes an idle kept-alive connection after about 6 s", async () => {
  await withWebProxy([], async (proxy) => {
    const client = await keptAlive(proxy.port);
    try {
      const ms = await client.closedWithin(12_000);
      // node:http's keep-alive timeout (5 s) plus its 1 s allowance, counted from the response.
      assert.ok(ms > 4000 && ms < 10_000, `closed after ${Math.round(ms)} ms`);
    } finally {
      await client.close();
    }
  });
});

Deno.test("main.ts --web --header-timeout closes a kept-alive connection whose next headers stall", async () => {
  await withWebProxy(["--header-timeout", "1"], async (proxy) => {
    const client = await keptAlive(proxy.port);
    try {
      await client.send("GET /b.txt HTTP/1.1\r\nHo");
      const ms = await client.closedWithin(5000);
      assert.ok(ms < 4000, `closed after ${Math.round(ms)} ms`);
    } finally {
      await client.close();
    }
  });
});

Deno.test("main.ts --web: a drain closes idle kept-alive connections at once and exits", async () => {
  await withWebProxy([], async (proxy) => {
    const client = await keptAlive(proxy.port);
    try {
      const start = performance.now();
      const stopped = proxy.stop();
      await client.closedWithin(5000);
      await stopped;
      const ms = performance.now() - start;
      // The drain's grace for connections is 3 s: an idle kept-alive one must not use it up.
      assert.ok(ms < 2500, `exited ${Math.round(ms)} ms after SIGTERM`);
    } finally {
      await client.close();
    }
  });
});

Deno.test("main.ts --web --header-timeout leaves an upgraded connection on node:http alone", async () => {
  await withWebProxy(["--header-timeout", "1"], async (proxy) => {
    const client = await Client.open(proxy.port);
    try {
      // Split in two writes: an incomplete first read goes to node:http, not the fast path.
      const request = upgradeRequest("/");
      await client.send(request.slice(0, 20));
      await new Promise((resolve) => setTimeout(resolve, 200));
      await client.send(request.slice(20));
      const head = await client.until(
        (bytes) => new TextDecoder().decode(bytes).includes("\r\n\r\n"),
        5000,
        "the 101 answer",
      );
      assert.match(new TextDecoder().decode(head), /^HTTP\/1\.1 101 /);
      // Longer than the header timeout and the sweep that enforces it.
      await new Promise((resolve) => setTimeout(resolve, 2500));
      assert.ok(!client.closed, "the session is still open");
      const payload = encoder.encode("ping");
      const mask = [1, 2, 3, 4];
      await client.send(
        Uint8Array.from([
          0x82,
          0x80 | payload.length,
          ...mask,
          ...payload.map((byte, index) => byte ^ mask[index % 4]!),
        ]),
      );
      const echoed = await client.until((bytes) => bytes.length >= 6, 5000, "the echo");
      assert.deepEqual([...echoed.subarray(0, 6)], [0x82, 4, ...payload]);
    } finally {
      await client.close();
    }
  });
});
