import assert from "node:assert/strict";
import net from "node:net";
import { join } from "node:path";
import type { TargetTlsConfig } from "../src/config.ts";
import { ConfigError, TargetError } from "../src/errors.ts";
import { checkTargetTls, dialTlsTarget } from "../src/targets/target_tls.ts";
import type { TargetConnection } from "../src/types.ts";
import { holdPort } from "./_helpers.ts";
import { makeTestPki, startEchoServer, type TestPki } from "./_tls_helpers.ts";

const pki: TestPki = await makeTestPki();

function config(overrides: Partial<TargetTlsConfig> = {}): TargetTlsConfig {
  return { enabled: true, ca: pki.caCert, insecure: false, ...overrides };
}

/** Dials `host:port` with {@link config}`(overrides)` and a 5 s timeout. */
function dial(
  host: string,
  port: number,
  overrides: Partial<TargetTlsConfig> = {},
): Promise<TargetConnection> {
  return dialTlsTarget(host, port, { config: config(overrides), timeoutMs: 5000 });
}

async function readExactly(connection: TargetConnection, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  let offset = 0;
  const deadline = Date.now() + 5000;
  while (offset < length) {
    assert.ok(Date.now() < deadline, "echo did not arrive within 5 s");
    const count = await connection.read(out.subarray(offset));
    assert.notEqual(count, null, "unexpected end of stream");
    offset += count!;
  }
  return out;
}

async function writeAll(connection: TargetConnection, data: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < data.length) offset += await connection.write(data.subarray(offset));
}

/** Sends 256 KiB through the connection and checks the echo, then half-closes. */
async function assertEchoes(connection: TargetConnection): Promise<void> {
  const data = new Uint8Array(256 * 1024).map((_, index) => index * 7);
  const [, echoed] = await Promise.all([
    writeAll(connection, data),
    readExactly(connection, data.length),
  ]);
  assert.deepEqual(echoed, data);
  await connection.closeWrite();
  assert.equal(await connection.read(new Uint8Array(16)), null);
}

async function assertDialFails(
  port: number,
  host: string,
  overrides: Partial<TargetTlsConfig>,
  pattern: RegExp,
): Promise<void> {
  await assert.rejects(
    dial(host, port, overrides),
    (error: unknown) => {
      assert.ok(error instanceof TargetError, `expected TargetError, got ${error}`);
      assert.match(error.message, pattern);
      return true;
    },
  );
}

Deno.test("dialTlsTarget() verifies a target signed by --ssl-target-ca and sends SNI", async () => {
  await using server = await startEchoServer({ cert: pki.serverCert, key: pki.serverKey });
  const connection = await dial("localhost", server.port);
  try {
    await assertEchoes(connection);
  } finally {
    connection.close();
  }
  assert.deepEqual(server.serverNames, ["localhost"]);
});

Deno.test("dialTlsTarget() verifies a target by its IP address SAN", async () => {
  await using server = await startEchoServer({ cert: pki.serverCert, key: pki.serverKey });
  const connection = await dial("127.0.0.1", server.port);
  connection.close();
});

Deno.test("dialTlsTarget() accepts a self-signed CA:FALSE leaf given as the CA", async () => {
  await using server = await startEchoServer({ cert: pki.selfSignedCert, key: pki.selfSignedKey });
  const connection = await dial("localhost", server.port, { ca: pki.selfSignedCert });
  connection.close();
});

Deno.test("dialTlsTarget() refuses a target signed by an unknown CA", async () => {
  await using server = await startEchoServer({
    cert: pki.otherServerCert,
    key: pki.otherServerKey,
  });
  await assertDialFails(
    server.port,
    "localhost",
    {},
    /^TLS handshake with target 'localhost:\d+' failed: .*UnknownIssuer.*--ssl-target-ca FILE/,
  );
  await assertDialFails(server.port, "localhost", { ca: undefined }, /UnknownIssuer/);
});

Deno.test("dialTlsTarget() refuses a certificate for another name", async () => {
  await using server = await startEchoServer({ cert: pki.wrongNameCert, key: pki.wrongNameKey });
  await assertDialFails(
    server.port,
    "localhost",
    {},
    /not valid for name "localhost".*: connect by a name listed/,
  );
});

Deno.test("dialTlsTarget() with --ssl-target-insecure accepts an unverifiable target", async () => {
  await using server = await startEchoServer({
    cert: pki.otherServerCert,
    key: pki.otherServerKey,
  });
  const connection = await dial("localhost", server.port, { ca: undefined, insecure: true });
  try {
    await assertEchoes(connection);
  } finally {
    connection.close();
  }
  assert.deepEqual(server.serverNames, ["localhost"]);
});

Deno.test("dialTlsTarget() with --ssl-target-insecure sends no SNI for an IP", async () => {
  await using server = await startEchoServer({ cert: pki.selfSignedCert, key: pki.selfSignedKey });
  const connection = await dial("127.0.0.1", server.port, { insecure: true });
  await writeAll(connection, new Uint8Array([42]));
  assert.deepEqual(await readExactly(connection, 1), new Uint8Array([42]));
  connection.close();
  // A read after close() rejects rather than hanging.
  await assert.rejects(connection.read(new Uint8Array(4)));
  assert.equal(server.serverNames.length, 1);
  assert.ok(!server.serverNames[0], `unexpected SNI ${server.serverNames[0]}`);
});

Deno.test("dialTlsTarget() reports a refused connection", async () => {
  await using held = await holdPort("refuse");
  await assertDialFails(
    held.port,
    "127.0.0.1",
    {},
    /^Cannot connect to TLS target '127\.0\.0\.1:\d+'/,
  );
  await assertDialFails(held.port, "127.0.0.1", { insecure: true }, /TLS connection to target/);
});

Deno.test("dialTlsTarget() times out a target that never answers the handshake", async () => {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => sockets.add(socket)); // accepts, never speaks
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  try {
    for (const insecure of [false, true]) {
      const started = performance.now();
      await assert.rejects(
        dialTlsTarget("127.0.0.1", port, { config: config({ insecure }), timeoutMs: 300 }),
        /TLS connection to target '127\.0\.0\.1:\d+' timed out after 0\.3 s/,
      );
      assert.ok(performance.now() - started < 3000);
    }
  } finally {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  }
});

Deno.test("dialTlsTarget() reports an unreadable --ssl-target-ca", async () => {
  await assertDialFails(
    1,
    "127.0.0.1",
    { ca: join(pki.dir, "missing-ca.pem") },
    /Cannot read --ssl-target-ca '.*missing-ca\.pem'/,
  );
});

Deno.test("checkTargetTls() refuses a bad --ssl-target-ca at start-up", async () => {
  await assert.rejects(
    checkTargetTls(config({ ca: join(pki.dir, "missing-ca.pem") })),
    (error: unknown) => error instanceof ConfigError && /Cannot read/.test(error.message),
  );
  await assert.rejects(
    checkTargetTls(config({ ca: pki.serverKey })),
    (error: unknown) => error instanceof ConfigError && /No PEM certificate/.test(error.message),
  );
  await checkTargetTls(config());
  await checkTargetTls(config({ enabled: false, ca: join(pki.dir, "ignored.pem") }));
});
