/**
 * nginx as the TLS terminator in front of the proxy, with the exact server block shipped in
 * `deploy/nginx.conf` (only its placeholders replaced, wrapped in a minimal `events {}`/`http {}`
 * envelope with temporary paths). A wss:// client verifying nginx's certificate against the test
 * CA connects from 127.0.0.2, so that the client address the proxy logs (from X-Forwarded-For,
 * with `--trusted-proxy 127.0.0.1`) differs from nginx's own 127.0.0.1.
 */

import assert from "node:assert/strict";
import { WebSocket } from "ws";
import { randomBytes, startEcho, startProxy, within } from "./_helpers.ts";
import { type Balancer, freePort, startNginx } from "./_balancer_helpers.ts";
import { makeTestPki } from "./_tls_helpers.ts";

const DEPLOYED = new URL("../deploy/nginx.conf", import.meta.url).pathname;

/** deploy/nginx.conf with its placeholders replaced; throws if one is left or missing. */
async function deployedServerBlock(values: Record<string, string>): Promise<string> {
  let text = await Deno.readTextFile(DEPLOYED);
  for (const [name, value] of Object.entries(values)) {
    const placeholder = `@${name}@`;
    assert.ok(text.includes(placeholder), `deploy/nginx.conf has no ${placeholder}`);
    text = text.replaceAll(placeholder, value);
  }
  const left = text.split("\n").filter((line) => !line.trimStart().startsWith("#"))
    .join("\n").match(/@[A-Z_]+@/);
  assert.equal(left, null, `deploy/nginx.conf has a placeholder the test does not fill: ${left}`);
  return text;
}

async function startNginxFor(proxyPort: number, cert: string, key: string): Promise<Balancer> {
  const port = freePort();
  const server = await deployedServerBlock({
    LISTEN: `127.0.0.1:${port}`,
    CERT: cert,
    KEY: key,
    PROXY_PORT: String(proxyPort),
  });
  return await startNginx(server, port, "nginx-tls-");
}

/** Opens a wss:// client that trusts only `ca`, from `localAddress`; collects binary data. */
async function connectWss(url: string, ca: string, localAddress: string) {
  const ws = new WebSocket(url, [], {
    ca: await Deno.readTextFile(ca),
    localAddress,
    perMessageDeflate: false,
  });
  const chunks: Uint8Array[] = [];
  let received = 0;
  let wake: (() => void) | undefined;
  ws.on("message", (data: Buffer, isBinary: boolean) => {
    assert.ok(isBinary, "the proxy sends binary frames");
    chunks.push(new Uint8Array(data));
    received += data.length;
    wake?.();
  });
  const closed = new Promise<number>((resolve) => ws.on("close", (code: number) => resolve(code)));
  await within(
    new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    }),
    10000,
    `WebSocket open ${url}`,
  );
  ws.on("error", () => {});
  /** Resolves with exactly `count` bytes (across messages), failing on more or after 10 s. */
  const receiveBytes = async (count: number): Promise<Uint8Array> => {
    const deadline = Date.now() + 10000;
    while (received < count) {
      assert.ok(ws.readyState === ws.OPEN, `closed after ${received} of ${count} bytes`);
      await within(new Promise<void>((resolve) => (wake = resolve)), deadline - Date.now(), "data");
    }
    const all = new Uint8Array(received);
    let offset = 0;
    for (const chunk of chunks.splice(0)) {
      all.set(chunk, offset);
      offset += chunk.length;
    }
    assert.equal(received, count, "more bytes than were sent");
    received = 0;
    return all;
  };
  return { ws, receiveBytes, closed };
}

Deno.test("deploy/nginx.conf terminates TLS for wss:// and forwards the client address", async () => {
  const pki = await makeTestPki();
  try {
    await using target = startEcho();
    await using proxy = await startProxy([
      "--trusted-proxy",
      "127.0.0.1",
      "127.0.0.1:0",
      `127.0.0.1:${target.port}`,
    ]);
    await using nginx = await startNginxFor(proxy.port, pki.serverCert, pki.serverKey);

    // An untrusted certificate is refused: the client really verifies nginx's certificate.
    await assert.rejects(
      connectWss(`wss://127.0.0.1:${nginx.port}/`, pki.otherCaCert, "127.0.0.2"),
      /certificate/i,
    );

    const client = await connectWss(`wss://127.0.0.1:${nginx.port}/`, pki.caCert, "127.0.0.2");
    for (const size of [1, 1000, 1024 * 1024]) {
      const payload = randomBytes(size);
      client.ws.send(payload);
      assert.deepEqual(await client.receiveBytes(size), payload, `${size} bytes echoed`);
    }
    client.ws.close(1000);
    assert.equal(await within(client.closed, 10000, "close"), 1000);

    await proxy.waitFor(
      /127\.0\.0\.2 - - \[[^\]]+\] 127\.0\.0\.2: connecting to: 127\.0\.0\.1:/,
    );
    assert.doesNotMatch(proxy.stderr(), /127\.0\.0\.1: connecting to/);
    assert.equal(target.connections.length, 1);
    assert.doesNotMatch(nginx.output(), /\[(emerg|alert|crit)\]/);
  } finally {
    await pki.cleanup();
  }
});
