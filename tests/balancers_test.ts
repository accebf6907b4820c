/**
 * Real load balancers in front of the proxy: haproxy in TCP mode with `send-proxy` (PROXY v1) and
 * `send-proxy-v2` against `--proxy-protocol`, and nginx with `X-Forwarded-For` against
 * `--trusted-proxy`. Clients connect from 127.0.0.2 so that the client address differs from the
 * balancer's 127.0.0.1.
 */

import assert from "node:assert/strict";
import {
  connectClient,
  randomBytes,
  rawExchange,
  startEcho,
  startProxy,
  upgradeRequest,
} from "./_helpers.ts";
import { type Balancer, freePort, runBalancer, startNginx } from "./_balancer_helpers.ts";

const HAPROXY = "/usr/sbin/haproxy";

async function startHaproxy(backendPort: number, sendProxy: string): Promise<Balancer> {
  const dir = await Deno.makeTempDir({ prefix: "haproxy-" });
  const port = freePort();
  const config = `${dir}/haproxy.cfg`;
  await Deno.writeTextFile(
    config,
    [
      "global",
      "  maxconn 100",
      "defaults",
      "  mode tcp",
      "  timeout connect 5s",
      "  timeout client 30s",
      "  timeout server 30s",
      "frontend websockets",
      `  bind 127.0.0.1:${port}`,
      "  default_backend proxy",
      "backend proxy",
      `  server websockify 127.0.0.1:${backendPort} ${sendProxy}`,
      "",
    ].join("\n"),
  );
  return await runBalancer(HAPROXY, ["-db", "-f", config], port, dir);
}

for (const sendProxy of ["send-proxy", "send-proxy-v2"]) {
  Deno.test(`--proxy-protocol takes the client address from haproxy ${sendProxy}`, async () => {
    await using target = startEcho();
    await using proxy = await startProxy([
      "-v",
      "--proxy-protocol",
      "--header-timeout",
      "3",
      "127.0.0.1:0",
      `127.0.0.1:${target.port}`,
    ]);
    await using haproxy = await startHaproxy(proxy.port, sendProxy);

    const client = await connectClient(`ws://127.0.0.1:${haproxy.port}/`, {
      localAddress: "127.0.0.2",
    });
    const payload = randomBytes(100_000);
    client.ws.send(payload);
    assert.deepEqual(await client.receiveBytes(payload.length), payload);
    client.ws.close(1000);
    await client.closed;
    await proxy.waitFor(/127\.0\.0\.2 - - \[[^\]]+\] 127\.0\.0\.2: connecting to: 127\.0\.0\.1:/);
    assert.doesNotMatch(proxy.stderr(), /127\.0\.0\.1: connecting to/);
    assert.equal(target.connections.length, 1);

    // Straight to the proxy, without a header: closed, never reaches the target.
    const answer = await rawExchange(proxy.port, upgradeRequest(), { mustClose: true });
    assert.equal(answer.length, 0);
    await proxy.waitFor(/without a valid PROXY protocol header: no PROXY protocol header/);

    // A header that never completes: closed by the header timeout.
    const started = Date.now();
    const stalled = await rawExchange(proxy.port, "PROXY TCP4 127.0.0.2", {
      ms: 10000,
      mustClose: true,
    });
    assert.equal(stalled.length, 0);
    assert.ok(Date.now() - started >= 2500, `closed after ${Date.now() - started} ms`);
    assert.equal(target.connections.length, 1);
  });
}

Deno.test("--trusted-proxy applies to the PROXY header's source with --proxy-protocol", async () => {
  await using target = startEcho();
  await using proxy = await startProxy([
    "--proxy-protocol",
    "--trusted-proxy",
    "127.0.0.2",
    "127.0.0.1:0",
    `127.0.0.1:${target.port}`,
  ]);
  await using haproxy = await startHaproxy(proxy.port, "send-proxy-v2");
  // haproxy (127.0.0.1) is not trusted itself: the PROXY source 127.0.0.2 is the peer checked.
  const client = await connectClient(`ws://127.0.0.1:${haproxy.port}/`, {
    headers: { "X-Forwarded-For": "203.0.113.7" },
    localAddress: "127.0.0.2",
  });
  client.ws.close(1000);
  await client.closed;
  await proxy.waitFor(/203\.0\.113\.7 - - \[[^\]]+\] 203\.0\.113\.7: connecting to: /);
});

async function startNginxFor(backendPort: number): Promise<Balancer> {
  const port = freePort();
  return await startNginx(
    `  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://127.0.0.1:${backendPort};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }
  }`,
    port,
    "nginx-",
  );
}

/** Opens a session through `port` and sends a message, so that the proxy logs the connection. */
async function session(
  port: number,
  headers: Record<string, string>,
  localAddress: string,
  path = "/",
) {
  const client = await connectClient(`ws://127.0.0.1:${port}${path}`, { headers, localAddress });
  const payload = randomBytes(1000);
  client.ws.send(payload);
  assert.deepEqual(await client.receiveBytes(payload.length), payload);
  client.ws.close(1000);
  await client.closed;
}

function connectingLine(address: string): RegExp {
  const host = address.replaceAll(".", "\\.");
  return new RegExp(`${host} - - \\[[^\\]]+\\] ${host}: connecting to: 127\\.0\\.0\\.1:`);
}

Deno.test("--trusted-proxy takes the client address from nginx's X-Forwarded-For", async () => {
  await using target = startEcho();
  await using proxy = await startProxy([
    "--trusted-proxy",
    "127.0.0.1",
    "127.0.0.1:0",
    `127.0.0.1:${target.port}`,
  ]);
  await using nginx = await startNginxFor(proxy.port);

  // From 127.0.0.1 (trusted, as an inner balancer would be): the entry left of it is the client.
  await session(nginx.port, { "X-Forwarded-For": "203.0.113.7" }, "127.0.0.1");
  await proxy.waitFor(connectingLine("203.0.113.7"));

  // From 127.0.0.2 (untrusted): nginx appends it, and the forged entry left of it is ignored.
  await session(nginx.port, { "X-Forwarded-For": "198.51.100.9" }, "127.0.0.2");
  await proxy.waitFor(connectingLine("127.0.0.2"));
  assert.doesNotMatch(proxy.stderr(), /198\.51\.100\.9/);
  assert.doesNotMatch(proxy.stderr(), /127\.0\.0\.1: connecting to/);
  assert.equal(target.connections.length, 2);
});

for (const trusted of [[], ["--trusted-proxy", "10.0.0.0/8,::1"]]) {
  Deno.test(`a forged X-Forwarded-For from an untrusted peer changes nothing (${trusted.join(" ") || "no --trusted-proxy"})`, async () => {
    await using target = startEcho();
    await using proxy = await startProxy([
      ...trusted,
      "127.0.0.1:0",
      `127.0.0.1:${target.port}`,
    ]);
    const forged = { "X-Forwarded-For": "203.0.113.7", "Forwarded": "for=203.0.113.8" };
    await session(proxy.port, forged, "127.0.0.2");
    await proxy.waitFor(connectingLine("127.0.0.2"));
    assert.doesNotMatch(proxy.stderr(), /203\.0\.113/);
  });
}

Deno.test("a token plugin behind nginx routes by the forwarded clientAddress", async () => {
  await using target = startEcho();
  const plugin = new URL("./testdata/tokens/client_address_plugin.ts", import.meta.url).pathname;
  await using proxy = await startProxy([
    "--trusted-proxy",
    "127.0.0.1",
    "--token-plugin",
    plugin,
    "--token-source",
    `203.0.113.7=${target.port}`,
    "127.0.0.1:0",
  ]);
  await using nginx = await startNginxFor(proxy.port);
  await session(nginx.port, { "X-Forwarded-For": "203.0.113.7" }, "127.0.0.1", "/?token=x");
  await assert.rejects(
    connectClient(`ws://127.0.0.1:${nginx.port}/?token=x`, {
      headers: { "X-Forwarded-For": "198.51.100.9" },
      localAddress: "127.0.0.1",
    }),
    /Unexpected response 404 /,
  );
  assert.equal(target.connections.length, 1);
});
