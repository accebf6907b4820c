import assert from "node:assert/strict";
import * as https from "node:https";
import type { AddressInfo } from "node:net";
import { clientCertCnAuth } from "../src/auth/client_cert_cn.ts";
import { clientIdentityOf } from "../src/client_identity.ts";
import { AuthError } from "../src/errors.ts";
import { requestInfo } from "../src/http.ts";

/** Runs openssl with `args` in `dir`; throws with its stderr on failure. */
async function openssl(dir: string, args: string[]): Promise<void> {
  const output = await new Deno.Command("openssl", { args, cwd: dir, stdout: "null" }).output();
  if (!output.success) throw new Error(new TextDecoder().decode(output.stderr));
}

/** A CA, a server certificate for 127.0.0.1, CA-signed clients alice and bob, a self-signed alice. */
async function makeCertificates(dir: string): Promise<void> {
  const key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  await openssl(dir, [
    "req",
    "-x509",
    ...key,
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-subj",
    "/CN=Test CA",
    "-days",
    "2",
  ]);
  await Deno.writeTextFile(`${dir}/server.ext`, "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
  await Deno.writeTextFile(`${dir}/client.ext`, "extendedKeyUsage=clientAuth\n");
  for (
    const [name, subject, ext] of [
      ["server", "/CN=localhost", "server.ext"],
      ["alice", "/O=Example/CN=alice", "client.ext"],
      ["bob", "/CN=bob", "client.ext"],
    ] as const
  ) {
    await openssl(dir, [
      "req",
      ...key,
      "-keyout",
      `${name}.key`,
      "-out",
      `${name}.csr`,
      "-subj",
      subject,
    ]);
    await openssl(dir, [
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      "ca.pem",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      `${name}.pem`,
      "-days",
      "2",
      "-extfile",
      ext,
    ]);
  }
  await openssl(dir, [
    "req",
    "-x509",
    ...key,
    "-keyout",
    "rogue.key",
    "-out",
    "rogue.pem",
    "-subj",
    "/CN=alice",
    "-days",
    "2",
  ]);
}

Deno.test("clientIdentityOf() gives ClientCertCNAuth the verified certificate only", async () => {
  const dir = await Deno.makeTempDir({ prefix: "websockify-client-cert-" });
  const read = (name: string) => Deno.readTextFileSync(`${dir}/${name}`);
  try {
    await makeCertificates(dir);
    const plugin = clientCertCnAuth("alice");
    const seen: (string | undefined)[] = [];
    // rejectUnauthorized: false lets unverified certificates through the handshake, so the test
    // shows that clientIdentityOf() itself ignores them.
    const server = https.createServer(
      {
        key: read("server.key"),
        cert: read("server.pem"),
        ca: read("ca.pem"),
        requestCert: true,
        rejectUnauthorized: false,
      },
      (req, res) => {
        const info = requestInfo(req);
        seen.push(info.clientIdentity?.commonName);
        plugin.authenticate(info).then(
          () => res.writeHead(200).end("ok"),
          (error) => res.writeHead(error instanceof AuthError ? error.status : 500).end(),
        );
      },
    );
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as AddressInfo).port;
    const get = (client: string | undefined, headers: Record<string, string> = {}) =>
      new Promise<number>((resolve, reject) => {
        const request = https.get({
          host: "127.0.0.1",
          port,
          path: "/",
          ca: read("ca.pem"),
          headers,
          agent: false,
          ...(client === undefined
            ? {}
            : { cert: read(`${client}.pem`), key: read(`${client}.key`) }),
        }, (res) => {
          res.resume();
          res.on("end", () => resolve(res.statusCode ?? 0));
        });
        request.on("error", reject);
        request.setTimeout(5000, () => request.destroy(new Error("timed out")));
      });
    try {
      assert.equal(await get("alice"), 200);
      assert.equal(await get("bob"), 403);
      assert.equal(await get("rogue"), 403);
      assert.equal(await get(undefined, { SSL_CLIENT_S_DN_CN: "alice" }), 403);
      assert.equal(await get("bob", { "ssl_client_s_dn_cn": "alice" }), 403);
      assert.deepEqual(seen, ["alice", "bob", undefined, undefined, "bob"]);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("clientIdentityOf() returns undefined for anything but a verified TLS socket", () => {
  assert.equal(clientIdentityOf(undefined), undefined);
  assert.equal(
    clientIdentityOf({ authorized: true, getPeerCertificate: () => ({ subject: { CN: "x" } }) }),
    undefined,
  );
});
