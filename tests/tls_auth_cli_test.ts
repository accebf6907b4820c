/**
 * ClientCertCNAuth end to end. Needs `src/auth/client_cert_cn.ts` and its registration in
 * `src/auth/mod.ts` (branch `web`).
 */
import assert from "node:assert/strict";
// @ts-types="npm:@types/ws@8.18.2"
import { WebSocket } from "ws";
import { makeTestPki, spawnProxy, startEchoServer, type TestPki } from "./_tls_helpers.ts";

const pki: TestPki = await makeTestPki();
const read = (path: string) => Deno.readTextFileSync(path);

/** Opens a WebSocket and resolves with 101 when it opened, else the HTTP status or the error. */
function upgradeStatus(
  url: string,
  options: { cert?: string; key?: string; headers?: Record<string, string> } = {},
): Promise<number | string> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, ["binary"], {
      ca: read(pki.caCert),
      ...(options.cert ? { cert: read(options.cert), key: read(options.key!) } : {}),
      ...(options.headers ? { headers: options.headers } : {}),
      handshakeTimeout: 5000,
    });
    const done = (result: number | string) => {
      ws.removeAllListeners();
      ws.on("error", () => {});
      ws.terminate();
      resolve(result);
    };
    ws.on("open", () => done(101));
    ws.on("unexpected-response", (_request, response) => done(response.statusCode!));
    ws.on("error", (error) => done(error.message));
  });
}

async function withCnProxy(extra: string[], body: (port: number) => Promise<void>) {
  await using target = await startEchoServer();
  await using proxy = await spawnProxy([
    "--cert",
    pki.serverCert,
    "--key",
    pki.serverKey,
    "--auth-plugin",
    "ClientCertCNAuth",
    "--auth-source",
    "alice carol",
    ...extra,
    "127.0.0.1:0",
    `127.0.0.1:${target.port}`,
  ]);
  await body(proxy.port);
}

Deno.test("ClientCertCNAuth allows a listed CN and denies another with 403", async () => {
  await withCnProxy(["--verify-client", "--cafile", pki.caCert], async (port) => {
    const url = `wss://localhost:${port}/`;
    assert.equal(await upgradeStatus(url, { cert: pki.aliceCert, key: pki.aliceKey }), 101);
    assert.equal(await upgradeStatus(url, { cert: pki.bobCert, key: pki.bobKey }), 403);
  });
});

Deno.test("ClientCertCNAuth cannot be fooled by SSL_CLIENT_S_DN_CN headers", async () => {
  await withCnProxy(["--verify-client", "--cafile", pki.caCert], async (port) => {
    const spoofs = ["ssl_client_s_dn_cn", "SSL_CLIENT_S_DN_CN", "Ssl_Client_S_Dn_Cn"];
    for (const name of spoofs) {
      // Over plain ws:// (no certificate at all) ...
      assert.equal(
        await upgradeStatus(`ws://127.0.0.1:${port}/`, { headers: { [name]: "alice" } }),
        403,
        `plain ws with ${name}: alice`,
      );
      // ... and over wss:// as bob claiming to be alice.
      assert.equal(
        await upgradeStatus(`wss://localhost:${port}/`, {
          cert: pki.bobCert,
          key: pki.bobKey,
          headers: { [name]: "alice" },
        }),
        403,
        `bob with ${name}: alice`,
      );
    }
  });
});

Deno.test("ClientCertCNAuth without --verify-client denies every client", async () => {
  await withCnProxy([], async (port) => {
    assert.equal(
      await upgradeStatus(`wss://localhost:${port}/`, { cert: pki.aliceCert, key: pki.aliceKey }),
      403,
    );
  });
});
