/**
 * Test PKI made by `openssl` at test time (X.509 v3, P-256 keys): a CA, a server certificate for
 * localhost/127.0.0.1, client certificates CN=alice and CN=bob, and the broken variants the
 * start-up checks must catch. Needs the `openssl` command (`.ci/apt/tls.txt`).
 *
 * @module
 */

import { type ProxyProcess, startProxy } from "./_helpers.ts";
import net from "node:net";
import { join } from "node:path";
import tls from "node:tls";

/** Paths of the generated files; every certificate is PEM. */
export interface TestPki {
  readonly dir: string;
  readonly caCert: string;
  readonly caKey: string;
  /** Server certificate (SAN localhost, 127.0.0.1) signed by the CA. */
  readonly serverCert: string;
  readonly serverKey: string;
  /** Server certificate followed by its key, as upstream's default `self.pem`. */
  readonly serverCombined: string;
  /** The server key encrypted with {@link TestPki.keyPassword}. */
  readonly serverKeyEncrypted: string;
  readonly keyPassword: string;
  /** A key that does not belong to the server certificate. */
  readonly otherKey: string;
  readonly aliceCert: string;
  readonly aliceKey: string;
  readonly bobCert: string;
  readonly bobKey: string;
  /** A self-signed certificate with CN=alice, not issued by the CA. */
  readonly rogueAliceCert: string;
  readonly rogueAliceKey: string;
  /** A self-signed v3 leaf (CA:FALSE, SAN localhost/127.0.0.1), trusted only as itself. */
  readonly selfSignedCert: string;
  readonly selfSignedKey: string;
  /** A second CA (not trusted by anything) and a server certificate it issued. */
  readonly otherCaCert: string;
  readonly otherServerCert: string;
  readonly otherServerKey: string;
  /** Signed by the CA, but for the name `wrong.invalid` only. */
  readonly wrongNameCert: string;
  readonly wrongNameKey: string;
  /** Removes the directory. */
  cleanup(): Promise<void>;
}

async function openssl(cwd: string, args: string[]): Promise<void> {
  const output = await new Deno.Command("openssl", { args, cwd, stdout: "piped", stderr: "piped" })
    .output();
  if (!output.success) {
    throw new Error(`openssl ${args.join(" ")} failed: ${new TextDecoder().decode(output.stderr)}`);
  }
}

const LEAF_EXT = "basicConstraints=critical,CA:FALSE\n";
const SERVER_EXT = LEAF_EXT + "subjectAltName=DNS:localhost,IP:127.0.0.1\n" +
  "extendedKeyUsage=serverAuth\n";
const CLIENT_EXT = LEAF_EXT + "extendedKeyUsage=clientAuth\n";

async function newKey(dir: string, name: string): Promise<void> {
  await openssl(dir, [
    "genpkey",
    "-algorithm",
    "EC",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-out",
    `${name}.key`,
  ]);
}

async function selfSigned(dir: string, name: string, subject: string, ext: string[]) {
  await newKey(dir, name);
  const addext = ext.flatMap((line) => ["-addext", line]);
  await openssl(dir, [
    "req",
    "-x509",
    "-new",
    "-key",
    `${name}.key`,
    "-out",
    `${name}.pem`,
    "-days",
    "2",
    "-subj",
    subject,
    ...addext,
  ]);
}

async function issued(dir: string, name: string, subject: string, ca: string, ext: string) {
  await newKey(dir, name);
  await openssl(dir, [
    "req",
    "-new",
    "-key",
    `${name}.key`,
    "-out",
    `${name}.csr`,
    "-subj",
    subject,
  ]);
  await Deno.writeTextFile(join(dir, `${name}.ext`), ext);
  await openssl(dir, [
    "x509",
    "-req",
    "-in",
    `${name}.csr`,
    "-CA",
    `${ca}.pem`,
    "-CAkey",
    `${ca}.key`,
    "-set_serial",
    String(1 + Math.floor(Math.random() * 2 ** 48)),
    "-out",
    `${name}.pem`,
    "-days",
    "2",
    "-extfile",
    `${name}.ext`,
  ]);
}

/**
 * Generates the whole test PKI into a fresh temporary directory, which is removed when the test
 * process exits (or earlier by {@link TestPki.cleanup}): one PKI serves a whole test file.
 */
export async function makeTestPki(): Promise<TestPki> {
  const dir = await Deno.makeTempDir({ prefix: "websockify-tls-" });
  globalThis.addEventListener("unload", () => {
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch {
      // Already removed by cleanup().
    }
  });
  const caExt = ["basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign"];
  await Promise.all([
    selfSigned(dir, "ca", "/CN=Websockify Test CA", caExt),
    selfSigned(dir, "other-ca", "/CN=Other Test CA", caExt),
    selfSigned(dir, "rogue-alice", "/CN=alice", ["basicConstraints=critical,CA:FALSE"]),
    selfSigned(dir, "self-signed", "/CN=localhost", [
      "basicConstraints=critical,CA:FALSE",
      "subjectAltName=DNS:localhost,IP:127.0.0.1",
    ]),
    newKey(dir, "other"),
  ]);
  await Promise.all([
    issued(dir, "server", "/CN=localhost", "ca", SERVER_EXT),
    issued(dir, "alice", "/CN=alice/O=Websockify Tests", "ca", CLIENT_EXT),
    issued(dir, "bob", "/CN=bob/O=Websockify Tests", "ca", CLIENT_EXT),
    issued(dir, "other-server", "/CN=localhost", "other-ca", SERVER_EXT),
    issued(
      dir,
      "wrong-name",
      "/CN=wrong.invalid",
      "ca",
      `${LEAF_EXT}subjectAltName=DNS:wrong.invalid\n`,
    ),
  ]);
  const keyPassword = "correct horse";
  await openssl(dir, [
    "pkey",
    "-in",
    "server.key",
    "-aes256",
    "-passout",
    `pass:${keyPassword}`,
    "-out",
    "server-encrypted.key",
  ]);
  const path = (name: string) => join(dir, name);
  await Deno.writeTextFile(
    path("server-combined.pem"),
    (await Deno.readTextFile(path("server.pem"))) + (await Deno.readTextFile(path("server.key"))),
  );
  return {
    dir,
    caCert: path("ca.pem"),
    caKey: path("ca.key"),
    serverCert: path("server.pem"),
    serverKey: path("server.key"),
    serverCombined: path("server-combined.pem"),
    serverKeyEncrypted: path("server-encrypted.key"),
    keyPassword,
    otherKey: path("other.key"),
    aliceCert: path("alice.pem"),
    aliceKey: path("alice.key"),
    bobCert: path("bob.pem"),
    bobKey: path("bob.key"),
    rogueAliceCert: path("rogue-alice.pem"),
    rogueAliceKey: path("rogue-alice.key"),
    selfSignedCert: path("self-signed.pem"),
    selfSignedKey: path("self-signed.key"),
    otherCaCert: path("other-ca.pem"),
    otherServerCert: path("other-server.pem"),
    otherServerKey: path("other-server.key"),
    wrongNameCert: path("wrong-name.pem"),
    wrongNameKey: path("wrong-name.key"),
    cleanup: () => Deno.remove(dir, { recursive: true }),
  };
}

/** A `main.ts` process (see tests/_helpers.ts). */
export type { ProxyProcess } from "./_helpers.ts";

/** Starts `main.ts args` and waits for its "Listen on" line. */
export function spawnProxy(args: string[]): Promise<ProxyProcess> {
  return startProxy(args);
}

/** An echo server started by {@link startEchoServer}. */
export interface EchoServer extends AsyncDisposable {
  readonly port: number;
  /** The SNI each TLS client sent (`false`: none), in order of connection. */
  readonly serverNames: Array<string | false>;
}

/**
 * Starts a TCP echo server on 127.0.0.1:0, or with `files` a TLS one presenting that certificate
 * and key. Disposing it drops every connection and closes the server.
 */
export async function startEchoServer(files?: { cert: string; key: string }): Promise<EchoServer> {
  const serverNames: Array<string | false> = [];
  const echo = (socket: net.Socket) => {
    if (socket instanceof tls.TLSSocket) {
      serverNames.push((socket as tls.TLSSocket & { servername: string | false }).servername);
    }
    socket.on("error", () => {});
    socket.pipe(socket);
  };
  const server = files
    ? tls.createServer({
      cert: Deno.readTextFileSync(files.cert),
      key: Deno.readTextFileSync(files.key),
    }, echo)
    : net.createServer(echo);
  server.on("tlsClientError", () => {});
  const sockets = new Set<net.Socket>();
  server.on("connection", (socket: net.Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    serverNames,
    async [Symbol.asyncDispose]() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
