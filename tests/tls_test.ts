import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import net from "node:net";
import tls from "node:tls";
import { join } from "node:path";
import type { TlsConfig } from "../src/config.ts";
import { ConfigError } from "../src/errors.ts";
import { clientIdentityOf, ServerTls, TlsHandshakeError } from "../src/listen/tls.ts";
import type { ClientIdentity } from "../src/types.ts";
import { within } from "./_helpers.ts";
import { makeTestPki, type TestPki } from "./_tls_helpers.ts";

const pki: TestPki = await makeTestPki();

function config(overrides: Partial<TlsConfig> = {}): TlsConfig {
  return {
    cert: pki.serverCert,
    key: pki.serverKey,
    keyPassword: undefined,
    sslOnly: false,
    verifyClient: false,
    cafile: undefined,
    minVersion: "default",
    ciphers: undefined,
    ...overrides,
  };
}

async function loaded(overrides: Partial<TlsConfig> = {}): Promise<ServerTls> {
  const serverTls = await ServerTls.load(config(overrides));
  assert.ok(serverTls, "expected TLS to be configured");
  return serverTls;
}

type Outcome = ClientIdentity | undefined | TlsHandshakeError;

/** A TLS server on 127.0.0.1:0 that greets each client with its CN, as the listener would. */
async function startServer(serverTls: ServerTls, timeoutMs = 5000) {
  const outcomes: Array<{ outcome: Outcome }> = [];
  const waiters: Array<(settled: { outcome: Outcome }) => void> = [];
  const settle = (outcome: Outcome) => {
    const waiter = waiters.shift();
    if (waiter) waiter({ outcome });
    else outcomes.push({ outcome });
  };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    serverTls.accept(socket, { timeoutMs }).then((secure) => {
      const identity = clientIdentityOf(secure);
      secure.end(`hello ${identity?.commonName ?? "anonymous"}\n`);
      settle(identity);
    }, (error) => settle(error));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    /** The next accept() outcome, in order. */
    async next(): Promise<Outcome> {
      const ready = outcomes.shift() ??
        await within(
          new Promise<{ outcome: Outcome }>((resolve) => waiters.push(resolve)),
          5000,
          "accept() outcome",
        );
      return ready.outcome;
    },
    async [Symbol.asyncDispose]() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
      serverTls.close();
    },
  };
}

interface ClientOptions {
  ca?: string;
  cert?: string;
  key?: string;
}

/** Connects with Deno's TLS client and returns what the server sent, or throws. */
async function greet(port: number, options: ClientOptions = {}): Promise<string> {
  const read = (path: string | undefined) => path && Deno.readTextFileSync(path);
  const conn = await Deno.connectTls({
    hostname: "localhost",
    port,
    caCerts: [read(options.ca ?? pki.caCert)!],
    ...(options.cert ? { cert: read(options.cert)!, key: read(options.key)! } : {}),
  });
  try {
    return await within(new Response(conn.readable).text(), 5000, "greeting");
  } finally {
    try {
      conn.close();
    } catch { /* already closed by the readable */ }
  }
}

/** The SHA-256 fingerprint of the certificate a server presents (no verification). */
function presentedFingerprint(port: number): Promise<string> {
  return within(
    new Promise<string>((resolve, reject) => {
      const socket = tls.connect({ host: "127.0.0.1", port, rejectUnauthorized: false });
      socket.once("secureConnect", () => {
        resolve(socket.getPeerCertificate().fingerprint256);
        socket.destroy();
      });
      socket.once("error", reject);
    }),
    5000,
    "presented certificate",
  );
}

function fingerprintOf(path: string): string {
  return new X509Certificate(Deno.readTextFileSync(path)).fingerprint256;
}

async function assertConfigError(overrides: Partial<TlsConfig>, pattern: RegExp): Promise<void> {
  await assert.rejects(ServerTls.load(config(overrides)), (error: unknown) => {
    assert.ok(error instanceof ConfigError, `expected ConfigError, got ${error}`);
    assert.match(error.message, pattern);
    return true;
  });
}

async function scratch(name: string, text: string): Promise<string> {
  const path = join(pki.dir, name);
  await Deno.writeTextFile(path, text);
  return path;
}

Deno.test("ServerTls.load() returns undefined when the cert file is missing", async () => {
  const serverTls = await ServerTls.load(
    config({ cert: join(pki.dir, "self.pem"), key: undefined }),
  );
  assert.equal(serverTls, undefined);
});

Deno.test("ServerTls.load() refuses --ssl-only without the cert file", async () => {
  const cert = join(pki.dir, "self.pem");
  await assertConfigError(
    { cert, key: undefined, sslOnly: true },
    new RegExp(`^SSL only and '${cert}' not found: `),
  );
});

Deno.test("ServerTls.load() refuses --verify-client or --key without the cert file", async () => {
  const cert = join(pki.dir, "missing.pem");
  await assertConfigError(
    { cert, verifyClient: true, cafile: pki.caCert },
    /--verify-client needs a server certificate but '.*missing\.pem' was not found/,
  );
  await assertConfigError({ cert }, /--key needs a server certificate/);
});

Deno.test("ServerTls.load() reports a missing or unreadable key file", async () => {
  await assertConfigError({ key: join(pki.dir, "nope.key") }, /Key file '.*nope\.key' not found/);
  await assertConfigError({ key: pki.dir }, /Cannot read Key file '.*': .*permissions/);
});

Deno.test("ServerTls.load() reports a cert file without a certificate", async () => {
  const cert = await scratch("garbage.pem", "this is not a certificate\n");
  await assertConfigError({ cert }, /No PEM certificate in certificate '.*garbage\.pem'/);
});

Deno.test("ServerTls.load() reports a corrupt certificate block", async () => {
  const cert = await scratch(
    "corrupt.pem",
    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
  );
  await assertConfigError({ cert }, /Certificate 1 in certificate '.*corrupt\.pem' is not valid/);
});

Deno.test("ServerTls.load() reports a cert file without a key when --key is absent", async () => {
  await assertConfigError({ key: undefined }, /No private key in '.*server\.pem': pass --key KEY/);
});

Deno.test("ServerTls.load() reports a key that does not match the certificate", async () => {
  await assertConfigError(
    { key: pki.otherKey },
    /Certificate '.*server\.pem' does not match key '.*other\.key'/,
  );
});

Deno.test("ServerTls.load() reports an encrypted key without --key-password", async () => {
  await assertConfigError(
    { key: pki.serverKeyEncrypted },
    /Key '.*server-encrypted\.key' is encrypted: pass its password with --key-password/,
  );
});

Deno.test("ServerTls.load() reports a wrong --key-password", async () => {
  await assertConfigError(
    { key: pki.serverKeyEncrypted, keyPassword: "wrong" },
    /Cannot decrypt key '.*server-encrypted\.key': check --key-password/,
  );
});

Deno.test("ServerTls.load() refuses --ssl-ciphers, which the runtime ignores", async () => {
  await assertConfigError({ ciphers: "ECDHE-RSA-AES128-GCM-SHA256" }, /cannot be honoured/);
});

Deno.test("ServerTls.load() refuses --verify-client without a usable --cafile", async () => {
  await assertConfigError({ verifyClient: true }, /--verify-client needs --cafile FILE/);
  await assertConfigError(
    { verifyClient: true, cafile: join(pki.dir, "none.pem") },
    /CA file '.*none\.pem' not found/,
  );
  await assertConfigError(
    { verifyClient: true, cafile: pki.serverKey },
    /No PEM certificate in CA file '.*server\.key'/,
  );
});

Deno.test("ServerTls.accept() serves a TLS client with a cert and key in one file", async () => {
  await using server = await startServer(
    await loaded({ cert: pki.serverCombined, key: undefined }),
  );
  assert.equal(await greet(server.port), "hello anonymous\n");
  assert.equal(await server.next(), undefined);
});

Deno.test("ServerTls.accept() serves with an encrypted key and the right password", async () => {
  const serverTls = await loaded({ key: pki.serverKeyEncrypted, keyPassword: pki.keyPassword });
  await using server = await startServer(serverTls);
  assert.equal(await greet(server.port), "hello anonymous\n");
});

Deno.test("ServerTls.accept() with --ssl-version tlsv1_3 refuses a TLS 1.2 client", async () => {
  await using server = await startServer(await loaded({ minVersion: "tlsv1_3" }));
  const error = await within(
    new Promise<Error>((resolve) => {
      const socket = tls.connect({
        host: "127.0.0.1",
        port: server.port,
        rejectUnauthorized: false,
        maxVersion: "TLSv1.2",
      });
      socket.once("secureConnect", () => resolve(new Error("unexpected TLS 1.2 handshake")));
      socket.once("error", resolve);
    }),
    5000,
    "TLS 1.2 refusal",
  );
  assert.match(error.message, /ProtocolVersion/);
  const outcome = await server.next();
  assert.ok(outcome instanceof TlsHandshakeError);
  // A TLS 1.3 client still gets through.
  assert.equal(await greet(server.port), "hello anonymous\n");
});

Deno.test("ServerTls.accept() with --verify-client accepts alice and bob with their CNs", async () => {
  await using server = await startServer(await loaded({ verifyClient: true, cafile: pki.caCert }));
  assert.equal(
    await greet(server.port, { cert: pki.aliceCert, key: pki.aliceKey }),
    "hello alice\n",
  );
  const alice = await server.next();
  assert.ok(alice && !(alice instanceof Error));
  assert.equal(alice.commonName, "alice");
  assert.equal(alice.subject["O"], "Websockify Tests");
  assert.equal(alice.fingerprint256, fingerprintOf(pki.aliceCert));
  assert.equal(await greet(server.port, { cert: pki.bobCert, key: pki.bobKey }), "hello bob\n");
  assert.equal((await server.next() as ClientIdentity).commonName, "bob");
});

Deno.test("ServerTls.accept() with --verify-client refuses a client without a certificate", async () => {
  await using server = await startServer(await loaded({ verifyClient: true, cafile: pki.caCert }));
  const greeting = await greet(server.port).catch((error) => `failed: ${error.message}`);
  assert.match(greeting, /^failed: /);
  const outcome = await server.next();
  assert.ok(outcome instanceof TlsHandshakeError);
});

Deno.test("ServerTls.accept() with --verify-client refuses a self-signed CN=alice", async () => {
  // Deno's node:tls accepts any client certificate here; authorize() must catch it.
  await using server = await startServer(await loaded({ verifyClient: true, cafile: pki.caCert }));
  const greeting = await greet(server.port, {
    cert: pki.rogueAliceCert,
    key: pki.rogueAliceKey,
  }).catch((error) => `failed: ${error.message}`);
  assert.doesNotMatch(greeting, /hello/);
  const outcome = await server.next();
  assert.ok(outcome instanceof TlsHandshakeError);
  assert.match(outcome.message, /Client certificate 'CN=alice' is not issued by a CA in/);
});

Deno.test("clientIdentityOf() is undefined without --verify-client", async () => {
  await using server = await startServer(await loaded());
  // The client offers a certificate, but none is requested, so no identity exists.
  assert.equal(
    await greet(server.port, { cert: pki.aliceCert, key: pki.aliceKey }),
    "hello anonymous\n",
  );
});

Deno.test("ServerTls.accept() times out a stalled handshake without blocking others", async () => {
  await using server = await startServer(await loaded(), 400);
  const stalled = await new Promise<Deno.Conn>((resolve, reject) => {
    Deno.connect({ hostname: "127.0.0.1", port: server.port }).then(resolve, reject);
  });
  try {
    await stalled.write(new Uint8Array([0x16, 0x03, 0x01])); // a TLS record header, then nothing
    const started = performance.now();
    assert.equal(await greet(server.port), "hello anonymous\n");
    assert.ok(performance.now() - started < 400, "the good client waited for the stalled one");
    assert.equal(await server.next(), undefined);
    const outcome = await server.next();
    assert.ok(outcome instanceof TlsHandshakeError);
    assert.match(outcome.message, /timed out after 0\.4 s/);
    // The stalled socket was closed by the server.
    assert.equal(await within(stalled.read(new Uint8Array(16)), 2000, "stalled close"), null);
  } finally {
    stalled.close();
  }
});

async function copyPki(name: string): Promise<{ cert: string; key: string }> {
  const cert = join(pki.dir, `${name}.pem`);
  const key = join(pki.dir, `${name}.key`);
  await Deno.copyFile(pki.serverCert, cert);
  await Deno.copyFile(pki.serverKey, key);
  return { cert, key };
}

Deno.test("ServerTls.reload() uses a renewed certificate and keeps the old on a bad one", async () => {
  const files = await copyPki("renew-sighup");
  const serverTls = await loaded(files);
  await using server = await startServer(serverTls);
  assert.equal(await serverTls.reload(), "unchanged");
  assert.equal(await presentedFingerprint(server.port), fingerprintOf(pki.serverCert));

  await Deno.copyFile(pki.otherServerCert, files.cert);
  await Deno.copyFile(pki.otherServerKey, files.key);
  assert.equal(await serverTls.reload(), "reloaded");
  assert.equal(await presentedFingerprint(server.port), fingerprintOf(pki.otherServerCert));
  assert.equal(await greet(server.port, { ca: pki.otherCaCert }), "hello anonymous\n");

  // Half a renewal: the new certificate is there but the key is still the old one.
  await Deno.copyFile(pki.serverCert, files.cert);
  assert.equal(await serverTls.reload(), "failed");
  assert.equal(await presentedFingerprint(server.port), fingerprintOf(pki.otherServerCert));
  await Deno.writeTextFile(files.cert, "garbage");
  assert.equal(await serverTls.reload(), "failed");
  assert.equal(await greet(server.port, { ca: pki.otherCaCert }), "hello anonymous\n");
});

Deno.test("ServerTls.watch() picks up a certificate replaced on disk", async () => {
  const files = await copyPki("renew-watch");
  const serverTls = await loaded(files);
  serverTls.watch();
  await using server = await startServer(serverTls);
  // Replace both files by rename, as renewal tools do.
  await Deno.copyFile(pki.otherServerKey, files.key + ".new");
  await Deno.copyFile(pki.otherServerCert, files.cert + ".new");
  await Deno.rename(files.key + ".new", files.key);
  await Deno.rename(files.cert + ".new", files.cert);
  const wanted = fingerprintOf(pki.otherServerCert);
  const deadline = Date.now() + 5000;
  let seen = await presentedFingerprint(server.port);
  while (seen !== wanted && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    seen = await presentedFingerprint(server.port);
  }
  assert.equal(seen, wanted, "the renewed certificate was not picked up within 5 s");
});
