import assert from "node:assert/strict";
import net from "node:net";
import tls from "node:tls";
import { join } from "node:path";
import type { TargetTlsConfig } from "../src/config.ts";
import { ConfigError, TargetError } from "../src/errors.ts";
import { checkTargetTls, dialTlsTarget } from "../src/target_tls.ts";
import type { TargetConnection } from "../src/types.ts";
import { makeTestPki, type TestPki } from "./_tls_helpers.ts";

const pki: TestPki = await makeTestPki();
globalThis.addEventListener("unload", () => Deno.removeSync(pki.dir, { recursive: true }));

function config(overrides: Partial<TargetTlsConfig> = {}): TargetTlsConfig {
  return { enabled: true, ca: pki.caCert, insecure: false, ...overrides };
}

/** A TLS echo server on 127.0.0.1:0 presenting `cert`; records the SNI each client sent. */
async function startEchoServer(cert: string, key: string) {
  const serverNames: Array<string | false> = [];
  const sockets = new Set<net.Socket>();
  const server = tls.createServer({
    cert: Deno.readTextFileSync(cert),
    key: Deno.readTextFileSync(key),
  }, (socket) => {
    serverNames.push((socket as tls.TLSSocket & { servername: string | false }).servername);
    socket.pipe(socket);
  });
  server.on("connection", (socket: net.Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  server.on("tlsClientError", () => {});
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    serverNames,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
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
    dialTlsTarget(host, port, { config: config(overrides), timeoutMs: 5000 }),
    (error: unknown) => {
      assert.ok(error instanceof TargetError, `expected TargetError, got ${error}`);
      assert.match(error.message, pattern);
      return true;
    },
  );
}

Deno.test("dialTlsTarget() verifies a target signed by --ssl-target-ca and sends SNI", async () => {
  const server = await startEchoServer(pki.serverCert, pki.serverKey);
  try {
    const connection = await dialTlsTarget("localhost", server.port, {
      config: config(),
      timeoutMs: 5000,
    });
    try {
      await assertEchoes(connection);
    } finally {
      connection.close();
    }
    assert.deepEqual(server.serverNames, ["localhost"]);
  } finally {
    await server.close();
  }
});

Deno.test("dialTlsTarget() verifies a target by its IP address SAN", async () => {
  const server = await startEchoServer(pki.serverCert, pki.serverKey);
  try {
    const connection = await dialTlsTarget("127.0.0.1", server.port, {
      config: config(),
      timeoutMs: 5000,
    });
    connection.close();
  } finally {
    await server.close();
  }
});

Deno.test("dialTlsTarget() accepts a self-signed CA:FALSE leaf given as the CA", async () => {
  const server = await startEchoServer(pki.selfSignedCert, pki.selfSignedKey);
  try {
    const connection = await dialTlsTarget("localhost", server.port, {
      config: config({ ca: pki.selfSignedCert }),
      timeoutMs: 5000,
    });
    connection.close();
  } finally {
    await server.close();
  }
});

Deno.test("dialTlsTarget() refuses a target signed by an unknown CA", async () => {
  const server = await startEchoServer(pki.otherServerCert, pki.otherServerKey);
  try {
    await assertDialFails(
      server.port,
      "localhost",
      {},
      /^TLS handshake with target 'localhost:\d+' failed: .*UnknownIssuer.*--ssl-target-ca FILE/,
    );
    await assertDialFails(server.port, "localhost", { ca: undefined }, /UnknownIssuer/);
  } finally {
    await server.close();
  }
});

Deno.test("dialTlsTarget() refuses a certificate for another name", async () => {
  const server = await startEchoServer(pki.wrongNameCert, pki.wrongNameKey);
  try {
    await assertDialFails(
      server.port,
      "localhost",
      {},
      /not valid for name "localhost".*: connect by a name listed/,
    );
  } finally {
    await server.close();
  }
});

Deno.test("dialTlsTarget() with --ssl-target-insecure accepts an unverifiable target", async () => {
  const server = await startEchoServer(pki.otherServerCert, pki.otherServerKey);
  try {
    const connection = await dialTlsTarget("localhost", server.port, {
      config: config({ ca: undefined, insecure: true }),
      timeoutMs: 5000,
    });
    try {
      await assertEchoes(connection);
    } finally {
      connection.close();
    }
    assert.deepEqual(server.serverNames, ["localhost"]);
  } finally {
    await server.close();
  }
});

Deno.test("dialTlsTarget() with --ssl-target-insecure sends no SNI for an IP", async () => {
  const server = await startEchoServer(pki.selfSignedCert, pki.selfSignedKey);
  try {
    const connection = await dialTlsTarget("127.0.0.1", server.port, {
      config: config({ insecure: true }),
      timeoutMs: 5000,
    });
    await writeAll(connection, new Uint8Array([42]));
    assert.deepEqual(await readExactly(connection, 1), new Uint8Array([42]));
    connection.close();
    // A read after close() rejects rather than hanging.
    await assert.rejects(connection.read(new Uint8Array(4)));
    assert.equal(server.serverNames.length, 1);
    assert.ok(!server.serverNames[0], `unexpected SNI ${server.serverNames[0]}`);
  } finally {
    await server.close();
  }
});

Deno.test("dialTlsTarget() reports a refused connection", async () => {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  await assertDialFails(port, "127.0.0.1", {}, /^Cannot connect to TLS target '127\.0\.0\.1:\d+'/);
  await assertDialFails(port, "127.0.0.1", { insecure: true }, /TLS connection to target/);
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
