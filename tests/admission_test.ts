import assert from "node:assert/strict";
import { WebSocket } from "ws";
import {
  connectClient,
  holdPort,
  randomBytes,
  rawExchange,
  runMain,
  startEcho,
  startProxy,
  type TestClient,
  upgradeRequest,
  within,
} from "./_helpers.ts";
import { Admission, clientKey } from "../src/ops/admission.ts";
import { HttpError } from "../src/errors.ts";
import type { RequestInfo } from "../src/types.ts";

const decoder = new TextDecoder();

/** The status line and headers of a refused upgrade. */
async function refusal(port: number): Promise<string> {
  const bytes = await rawExchange(port, upgradeRequest(), { mustClose: true });
  return decoder.decode(bytes).split("\r\n\r\n")[0] ?? "";
}

async function echoes(client: TestClient, size: number): Promise<void> {
  const data = randomBytes(size);
  client.ws.send(data);
  assert.deepEqual(await client.receiveBytes(size), data);
}

function request(peer: string): RequestInfo {
  const clientAddress = peer.replace(/:\d+$/, "").replace(/^\[(.*)\]$/, "$1");
  return { method: "GET", path: "/", headers: new Headers(), peer, clientAddress, secure: false };
}

Deno.test("clientKey() strips the port and IPv6 brackets", () => {
  assert.equal(clientKey(request("127.0.0.1:4000")), "127.0.0.1");
  assert.equal(clientKey(request("[::1]:4000")), "::1");
  assert.equal(clientKey(request("/run/ws.sock")), "/run/ws.sock");
});

Deno.test("Admission.acquire() refuses over the limits, counts refusals and releases once", () => {
  const refused: string[] = [];
  const admission = new Admission({
    maxConnections: 3,
    maxConnectionsPerIp: 2,
    onRefused: (reason) => refused.push(reason),
  });
  const first = admission.acquire(request("10.0.0.1:1"));
  admission.acquire(request("10.0.0.1:2"));
  assert.throws(() => admission.acquire(request("10.0.0.1:3")), (error) => {
    assert.ok(error instanceof HttpError);
    assert.equal(error.status, 429);
    assert.equal(error.headers["Retry-After"], "1");
    return true;
  });
  admission.acquire(request("10.0.0.2:1"));
  assert.throws(() => admission.acquire(request("10.0.0.3:1")), (error) => {
    assert.ok(error instanceof HttpError);
    assert.equal(error.status, 503);
    assert.equal(error.headers["Retry-After"], "1");
    return true;
  });
  assert.deepEqual(refused, ["per_ip", "max_connections"]);
  first();
  first();
  assert.equal(admission.open, 2);
  admission.acquire(request("10.0.0.1:4"));
  assert.throws(() => admission.acquire(request("10.0.0.1:5")));
});

Deno.test("--max-connections answers 503 with Retry-After without dialling; a freed slot is reused", async () => {
  await using echo = startEcho();
  await using proxy = await startProxy([
    "--max-connections",
    "2",
    "127.0.0.1:0",
    `127.0.0.1:${echo.port}`,
  ]);
  const url = `ws://127.0.0.1:${proxy.port}/`;
  const clients = [await connectClient(url), await connectClient(url)];
  for (const client of clients) await echoes(client, 1000);
  assert.equal(echo.connections.length, 2);

  const head = await refusal(proxy.port);
  assert.match(head, /^HTTP\/1\.1 503 /);
  assert.match(head, /\r\nRetry-After: 1(\r\n|$)/i);
  await proxy.waitFor(/503 Too many connections \(--max-connections 2\)/);
  assert.equal(echo.connections.length, 2, "a refused upgrade must not dial the target");
  for (const client of clients) await echoes(client, 70_000);

  const [first, second] = clients as [TestClient, TestClient];
  first.ws.close(1000);
  await first.closed;
  await proxy.waitFor(/session ended/);
  const third = await connectClient(url);
  await echoes(third, 10);
  assert.equal(echo.connections.length, 3);
  second.ws.close();
  third.ws.close();
  await Promise.all([second.closed, third.closed]);
});

Deno.test("--max-connections-per-ip answers 429 to the next session of one address only", async () => {
  await using echo = startEcho();
  await using proxy = await startProxy([
    "--max-connections-per-ip",
    "2",
    "127.0.0.1:0",
    `127.0.0.1:${echo.port}`,
  ]);
  const url = `ws://127.0.0.1:${proxy.port}/`;
  const clients = [await connectClient(url), await connectClient(url)];
  const head = await refusal(proxy.port);
  assert.match(head, /^HTTP\/1\.1 429 /);
  assert.match(head, /\r\nRetry-After: 1(\r\n|$)/i);
  await proxy.waitFor(/429 Too many connections from 127\.0\.0\.1/);
  assert.equal(echo.connections.length, 2);

  // Another loopback address has its own count.
  const other = new WebSocket(url, { localAddress: "127.0.0.2", perMessageDeflate: false });
  await within(
    new Promise<void>((resolve, reject) => {
      other.once("open", () => resolve());
      other.once("error", reject);
      other.once("unexpected-response", () => reject(new Error("127.0.0.2 was refused")));
    }),
    10000,
    "session from 127.0.0.2",
  );
  const otherClosed = new Promise((resolve) => other.once("close", resolve));
  other.close();
  await otherClosed;
  for (const client of clients) {
    await echoes(client, 100);
    client.ws.close();
    await client.closed;
  }
});

Deno.test("--max-connections releases the slot of a session whose target dial failed", async () => {
  await using refused = await holdPort("refuse");
  await using proxy = await startProxy([
    "--max-connections",
    "1",
    "127.0.0.1:0",
    `127.0.0.1:${refused.port}`,
  ]);
  const url = `ws://127.0.0.1:${proxy.port}/`;
  for (let attempt = 0; attempt < 3; attempt++) {
    const client = await connectClient(url);
    assert.equal((await client.closed).code, 1011, `attempt ${attempt}`);
    const failures = attempt + 1;
    await proxy.waitFor(new RegExp(`(Failed to connect[^]*){${failures}}`));
  }
  assert.doesNotMatch(proxy.stderr(), /Too many connections/);
});

Deno.test("--max-connections and --max-connections-per-ip reject zero, negative and fractional values", async () => {
  for (const option of ["--max-connections", "--max-connections-per-ip"]) {
    for (const value of ["0", "-1", "1.5", "many"]) {
      const result = await runMain([`${option}=${value}`, "127.0.0.1:0", "127.0.0.1:1"]);
      assert.equal(result.code, 2, `${option}=${value}`);
      const first = result.stderr.split("\n")[0] ?? "";
      assert.equal(
        first,
        `websockify: error: ${option} takes a whole number of sessions (1 or more), not '${value}'`,
      );
    }
  }
});
