import assert from "node:assert/strict";
import * as jose from "jose";
import { join } from "node:path";
import { ConfigError, TokenLookupError } from "../src/errors.ts";
import { jwtTokenApi } from "../src/tokens/jwt.ts";
import { captureLogs, lookupRequest as request, tempDir } from "./_tokens_helpers.ts";

const claims = { host: "10.1.2.3", port: 5901 };
const target = { kind: "tcp", host: "10.1.2.3", port: 5901 };
const now = () => Math.floor(Date.now() / 1000);

function sign(payload: jose.JWTPayload, alg: string, key: jose.CryptoKey | Uint8Array) {
  return new jose.SignJWT(payload).setProtectedHeader({ alg }).sign(key);
}

async function keyFile(dir: string, name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await Deno.writeTextFile(path, text);
  return path;
}

Deno.test("jwtTokenApi() verifies RS256 with a public key and refuses other keys", async () => {
  await using dir = await tempDir();
  const pair = await jose.generateKeyPair("RS256", { extractable: true });
  const other = await jose.generateKeyPair("RS256", { extractable: true });
  const plugin = await jwtTokenApi(
    await keyFile(dir.path, "public.pem", await jose.exportSPKI(pair.publicKey)),
  );
  assert.deepEqual(
    await plugin.lookup(await sign(claims, "RS256", pair.privateKey), request),
    target,
  );
  assert.deepEqual(
    await plugin.lookup(
      await sign(
        { host: "h", port: "7" },
        "PS256",
        await jose.importPKCS8(await jose.exportPKCS8(pair.privateKey), "PS256"),
      ),
      request,
    ),
    { kind: "tcp", host: "h", port: 7 },
  );
  const logs = captureLogs();
  assert.equal(await plugin.lookup(await sign(claims, "RS256", other.privateKey), request), null);
  assert.equal(logs.matching("Failed to parse token").length, 1);
  assert.equal(await plugin.lookup("not.a.jwt", request), null);
  const unsigned = new jose.UnsecuredJWT(claims).encode();
  assert.equal(await plugin.lookup(unsigned, request), null, "alg none is refused");
});

Deno.test("jwtTokenApi() verifies ES256 with a private key file (its public half)", async () => {
  await using dir = await tempDir();
  const pair = await jose.generateKeyPair("ES256", { extractable: true });
  const plugin = await jwtTokenApi(
    await keyFile(dir.path, "ec.pem", await jose.exportPKCS8(pair.privateKey)),
  );
  assert.deepEqual(
    await plugin.lookup(await sign(claims, "ES256", pair.privateKey), request),
    target,
  );
  const rsa = await jose.generateKeyPair("RS256");
  assert.equal(await plugin.lookup(await sign(claims, "RS256", rsa.privateKey), request), null);
});

Deno.test("jwtTokenApi() verifies HS256/384/512 with a secret file, raw or upstream-style", async () => {
  await using dir = await tempDir();
  const text = "secret_sauce";
  const plugin = await jwtTokenApi(await keyFile(dir.path, "symmetric.key", `${text}\n`));
  const raw = new TextEncoder().encode(text);
  const upstream = jose.base64url.decode(text); // jwcrypto's oct key with k = file text
  for (const alg of ["HS256", "HS384", "HS512"]) {
    assert.deepEqual(await plugin.lookup(await sign(claims, alg, raw), request), target, alg);
  }
  assert.deepEqual(await plugin.lookup(await sign(claims, "HS256", upstream), request), target);
  const wrong = new TextEncoder().encode("wrong_sauce");
  assert.equal(await plugin.lookup(await sign(claims, "HS256", wrong), request), null);
});

Deno.test("jwtTokenApi() enforces nbf and exp", async () => {
  await using dir = await tempDir();
  const secret = new TextEncoder().encode("a-long-enough-shared-secret-value");
  const plugin = await jwtTokenApi(
    await keyFile(dir.path, "k", "a-long-enough-shared-secret-value"),
  );
  const logs = captureLogs();
  const valid = await sign({ ...claims, nbf: now() - 10, exp: now() + 60 }, "HS256", secret);
  assert.deepEqual(await plugin.lookup(valid, request), target);
  const early = await sign({ ...claims, nbf: now() + 60, exp: now() + 120 }, "HS256", secret);
  assert.equal(await plugin.lookup(early, request), null);
  const late = await sign({ ...claims, nbf: now() - 120, exp: now() - 60 }, "HS256", secret);
  assert.equal(await plugin.lookup(late, request), null);
  assert.equal(logs.matching("Failed to parse token: Token can not be used yet").length, 1);
  assert.equal(logs.matching("Failed to parse token: Token has expired").length, 1);
});

Deno.test("jwtTokenApi() needs host and port claims", async () => {
  await using dir = await tempDir();
  const secret = new TextEncoder().encode("another-shared-secret-of-some-length");
  const plugin = await jwtTokenApi(
    await keyFile(dir.path, "k", "another-shared-secret-of-some-length"),
  );
  assert.equal(await plugin.lookup(await sign({ host: "h" }, "HS256", secret), request), null);
  assert.equal(await plugin.lookup(await sign({ port: 1 }, "HS256", secret), request), null);
  assert.deepEqual(
    await plugin.lookup(
      await sign({ host: "unix_socket", port: "/run/s" }, "HS256", secret),
      request,
    ),
    { kind: "unix", path: "/run/s" },
  );
});

Deno.test("jwtTokenApi() decrypts a JWE wrapping a signed JWT with the same private key", async () => {
  await using dir = await tempDir();
  const pair = await jose.generateKeyPair("RSA-OAEP-256", { extractable: true });
  const signing = await jose.generateKeyPair("RS256", { extractable: true });
  const pem = await jose.exportPKCS8(pair.privateKey);
  const plugin = await jwtTokenApi(await keyFile(dir.path, "private.pem", pem));
  // The inner JWS is signed with the same RSA key (imported for RS256), as upstream.
  const rsaForSigning = await jose.importPKCS8(pem, "RS256");
  const inner = await sign(claims, "RS256", rsaForSigning);
  const jwe = await new jose.CompactEncrypt(new TextEncoder().encode(inner))
    .setProtectedHeader({ alg: "RSA-OAEP-256", enc: "A256GCM" })
    .encrypt(pair.publicKey);
  assert.deepEqual(await plugin.lookup(jwe, request), target);
  // Encrypted but signed by someone else: refused.
  const forged = await new jose.CompactEncrypt(
    new TextEncoder().encode(await sign(claims, "RS256", signing.privateKey)),
  ).setProtectedHeader({ alg: "RSA-OAEP-256", enc: "A256GCM" }).encrypt(pair.publicKey);
  assert.equal(await plugin.lookup(forged, request), null);
});

Deno.test("jwtTokenApi() decrypts a JWE with a shared secret (dir + A256GCM)", async () => {
  await using dir = await tempDir();
  const secret = crypto.getRandomValues(new Uint8Array(32));
  const encoded = jose.base64url.encode(secret);
  const plugin = await jwtTokenApi(await keyFile(dir.path, "k", encoded));
  const inner = await sign(claims, "HS256", secret);
  const jwe = await new jose.CompactEncrypt(new TextEncoder().encode(inner))
    .setProtectedHeader({ alg: "dir", enc: "A256GCM" })
    .encrypt(secret);
  assert.deepEqual(await plugin.lookup(jwe, request), target);
});

Deno.test("jwtTokenApi() reloads a changed key file and reports a broken one as 503", async () => {
  await using dir = await tempDir();
  const first = await jose.generateKeyPair("ES256", { extractable: true });
  const second = await jose.generateKeyPair("ES256", { extractable: true });
  const path = await keyFile(dir.path, "public.pem", await jose.exportSPKI(first.publicKey));
  const plugin = await jwtTokenApi(path);
  const token2 = await sign(claims, "ES256", second.privateKey);
  assert.equal(await plugin.lookup(token2, request), null);
  await Deno.writeTextFile(path, await jose.exportSPKI(second.publicKey));
  assert.deepEqual(await plugin.lookup(token2, request), target);
  await Deno.writeTextFile(path, "-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n");
  await assert.rejects(plugin.lookup(token2, request), (error: unknown) => {
    assert.ok(error instanceof TokenLookupError);
    assert.equal(error.status, 503);
    return true;
  });
  await Deno.remove(path);
  await assert.rejects(plugin.lookup(token2, request), TokenLookupError);
});

Deno.test("jwtTokenApi() checks the key file at start-up", async () => {
  await using dir = await tempDir();
  await assert.rejects(jwtTokenApi(join(dir.path, "missing.pem")), ConfigError);
  await assert.rejects(jwtTokenApi(undefined), ConfigError);
  const bad = await keyFile(
    dir.path,
    "bad.pem",
    "-----BEGIN PUBLIC KEY-----\nxx\n-----END PUBLIC KEY-----",
  );
  await assert.rejects(jwtTokenApi(bad), /cannot be used/);
  await assert.rejects(jwtTokenApi(await keyFile(dir.path, "empty", "\n")), /empty/);
});
