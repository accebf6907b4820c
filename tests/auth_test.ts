import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { fileURLToPath } from "node:url";
import { basicHttpAuth } from "../src/auth/basic.ts";
import { clientCertCnAuth } from "../src/auth/client_cert_cn.ts";
import {
  BUILTIN_AUTH_PLUGINS,
  checkOrigin,
  isModulePath,
  loadAuthPlugin,
  toAuthError,
  writeAuthError,
} from "../src/auth/mod.ts";
import { expectOrigin } from "../src/auth/origin.ts";
import { parseOrigins } from "../src/cli.ts";
import { AuthError, ConfigError } from "../src/errors.ts";
import type { AuthPlugin, ClientIdentity, RequestInfo } from "../src/types.ts";
import { rawExchange } from "./_helpers.ts";
import { parseResponses, rawRequest, startServer } from "./_web_helpers.ts";

const TESTS_DIR = fileURLToPath(new URL(".", import.meta.url));

function request(
  headers: Record<string, string> = {},
  clientIdentity?: ClientIdentity,
): RequestInfo {
  return {
    method: "GET",
    path: "/websockify",
    headers: new Headers(headers),
    peer: "127.0.0.1:5000",
    clientAddress: "127.0.0.1",
    secure: clientIdentity !== undefined,
    ...(clientIdentity === undefined ? {} : { clientIdentity }),
  };
}

/** Resolves to the AuthError `plugin` denies `info` with; fails the test if it allows. */
async function denial(plugin: AuthPlugin, info: RequestInfo): Promise<AuthError> {
  try {
    await plugin.authenticate(info);
  } catch (error) {
    assert.ok(error instanceof AuthError, `expected AuthError, got ${error}`);
    return error;
  }
  assert.fail("the request was allowed");
}

function basic(credentials: string | Uint8Array): string {
  return `Basic ${Buffer.from(credentials).toString("base64")}`;
}

Deno.test("basicHttpAuth() allows the right user and password", async () => {
  const plugin = basicHttpAuth("admin:s3cret:with:colons");
  await plugin.authenticate(request({ Authorization: basic("admin:s3cret:with:colons") }));
  await plugin.authenticate(
    request({
      Authorization: `basic  ${Buffer.from("admin:s3cret:with:colons").toString("base64")}`,
    }),
  );
});

Deno.test("basicHttpAuth() answers a missing header with 401 and the challenge", async () => {
  const error = await denial(basicHttpAuth("admin:secret"), request());
  assert.equal(error.status, 401);
  assert.equal(error.message, "Unauthorized");
  assert.deepEqual(error.headers, { "WWW-Authenticate": 'Basic realm="Websockify"' });
});

Deno.test("basicHttpAuth() answers wrong credentials with 401 and the challenge", async () => {
  const plugin = basicHttpAuth("admin:secret");
  for (const credentials of ["admin:wrong", "root:secret", "admin:secre", "admin:secrett", ":"]) {
    const error = await denial(plugin, request({ Authorization: basic(credentials) }));
    assert.equal(error.status, 401, credentials);
    assert.equal(error.headers["WWW-Authenticate"], 'Basic realm="Websockify"');
    assert.ok(!(error.logDetail ?? "").includes('wrong"'), "the password is never logged");
  }
});

Deno.test("basicHttpAuth() answers another scheme with 403", async () => {
  const plugin = basicHttpAuth("admin:secret");
  for (const header of ["Bearer abc", "Digest x=1", "Basicabc"]) {
    const error = await denial(plugin, request({ Authorization: header }));
    assert.equal(error.status, 403, header);
  }
});

Deno.test("basicHttpAuth() answers malformed base64 with 401", async () => {
  const plugin = basicHttpAuth("admin:secret");
  const bad = ["Basic !!!!", "Basic YWRtaW46c2VjcmV0=", "Basic YWRta", "Basic ", "Basic YWRtaW4="];
  for (const header of bad) {
    const error = await denial(plugin, request({ Authorization: header }));
    assert.equal(error.status, 401, header);
    assert.equal(error.headers["WWW-Authenticate"], 'Basic realm="Websockify"');
  }
});

Deno.test("basicHttpAuth() accepts non-ASCII credentials in UTF-8 and ISO-8859-1", async () => {
  const plugin = basicHttpAuth("j\u00fcrgen:p\u00e4ss");
  await plugin.authenticate(request({ Authorization: basic("j\u00fcrgen:p\u00e4ss") }));
  await plugin.authenticate(
    request({ Authorization: basic(Buffer.from("j\u00fcrgen:p\u00e4ss", "latin1")) }),
  );
  await denial(plugin, request({ Authorization: basic("jurgen:pass") }));
});

Deno.test("basicHttpAuth() needs a user:password source", () => {
  assert.throws(() => basicHttpAuth(undefined), ConfigError);
  assert.throws(() => basicHttpAuth("nocolon"), /--auth-source USER:PASSWORD/);
});

Deno.test("expectOrigin() allows listed origins and answers others with 403 Invalid Origin", async () => {
  const plugin = expectOrigin("https://example.com http://localhost:6080");
  await plugin.authenticate(request({ Origin: "https://example.com" }));
  await plugin.authenticate(request({ Origin: "https://EXAMPLE.com:443" }));
  await plugin.authenticate(request({ Origin: "http://localhost:6080" }));
  for (
    const origin of ["https://evil.com", "http://example.com", "http://localhost:6081", "null"]
  ) {
    const error = await denial(plugin, request({ Origin: origin }));
    assert.equal(error.status, 403);
    assert.equal(error.message, "Invalid Origin");
    assert.ok(error.logDetail?.includes(JSON.stringify(origin)), String(error.logDetail));
  }
  const missing = await denial(plugin, request());
  assert.equal(missing.status, 403);
  assert.match(missing.logDetail ?? "", /got none/);
  assert.throws(() => expectOrigin(undefined), ConfigError);
  assert.throws(() => expectOrigin("  "), ConfigError);
});

Deno.test("checkOrigin() applies --origin with scheme, host and port normalisation", () => {
  checkOrigin([], request());
  checkOrigin([], request({ Origin: "https://anything.example" }));
  const origins = parseOrigins("example.com,https://app.example:8443");
  checkOrigin(origins, request({ Origin: "http://example.com" }));
  checkOrigin(origins, request({ Origin: "https://example.com" }));
  checkOrigin(origins, request({ Origin: "https://Example.COM:443" }));
  checkOrigin(origins, request({ Origin: "https://app.example:8443" }));
  for (
    const origin of [
      "https://example.com:8443",
      "https://app.example",
      "https://sub.example.com",
      "https://example.com.evil",
      "ws://example.com",
      "garbage",
    ]
  ) {
    assert.throws(
      () => checkOrigin(origins, request({ Origin: origin })),
      (error: unknown) => error instanceof AuthError && error.status === 403,
      origin,
    );
  }
  assert.throws(() => checkOrigin(origins, request()), AuthError);
});

Deno.test("clientCertCnAuth() allows only listed common names from the certificate", async () => {
  const identity = (commonName: string): ClientIdentity => ({
    commonName,
    subject: { CN: commonName },
    fingerprint256: "AA:BB",
  });
  const plugin = clientCertCnAuth("alice  bob");
  await plugin.authenticate(request({}, identity("alice")));
  await plugin.authenticate(request({}, identity("bob")));
  assert.equal((await denial(plugin, request({}, identity("mallory")))).status, 403);
  assert.equal((await denial(plugin, request({}, identity("")))).status, 403);
  assert.equal((await denial(plugin, request())).status, 403);
  assert.throws(() => clientCertCnAuth(undefined), ConfigError);
});

Deno.test("clientCertCnAuth() never trusts SSL_CLIENT_S_DN_CN headers in any case", async () => {
  const plugin = clientCertCnAuth("admin");
  for (const name of ["SSL_CLIENT_S_DN_CN", "ssl_client_s_dn_cn", "Ssl_Client_S_Dn_Cn"]) {
    assert.equal((await denial(plugin, request({ [name]: "admin" }))).status, 403, name);
  }
  const withCert = request({ SSL_CLIENT_S_DN_CN: "admin" }, {
    commonName: "guest",
    subject: { CN: "guest" },
    fingerprint256: "AA",
  });
  assert.equal((await denial(plugin, withCert)).status, 403);
});

Deno.test("loadAuthPlugin() builds built-ins by upstream and dotted names", async () => {
  assert.deepEqual(Object.keys(BUILTIN_AUTH_PLUGINS), [
    "BasicHTTPAuth",
    "ExpectOrigin",
    "ClientCertCNAuth",
  ]);
  const basicPlugin = await loadAuthPlugin("BasicHTTPAuth", "a:b", "/");
  await basicPlugin.authenticate(request({ Authorization: basic("a:b") }));
  const dotted = await loadAuthPlugin("websockify.auth_plugins.ExpectOrigin", "http://x", "/");
  await dotted.authenticate(request({ Origin: "http://x" }));
  await assert.rejects(dotted.authenticate(request({ Origin: "http://y" })), AuthError);
  await assert.rejects(loadAuthPlugin("ClientCertCNAuth", undefined, "/"), ConfigError);
});

Deno.test("loadAuthPlugin() rejects an unknown name, listing the built-ins", async () => {
  await assert.rejects(
    loadAuthPlugin("NoSuchAuth", undefined, "/"),
    (error: unknown) =>
      error instanceof ConfigError && /'NoSuchAuth'/.test(error.message) &&
      /BasicHTTPAuth, ExpectOrigin, ClientCertCNAuth/.test(error.message),
  );
  await assert.rejects(loadAuthPlugin("toString", undefined, "/"), ConfigError);
  await assert.rejects(loadAuthPlugin("__proto__", undefined, "/"), ConfigError);
});

Deno.test("loadAuthPlugin() loads a custom module relative to cwd", async () => {
  const plugin = await loadAuthPlugin("./testdata/auth/plugin.ts", "let-me-in", TESTS_DIR);
  await plugin.authenticate(request({ "X-Token": "let-me-in" }));
  const error = await denial(plugin, request({ "X-Token": "nope" }));
  assert.equal(error.message, "Token Required");
  const absolute = await loadAuthPlugin(`${TESTS_DIR}testdata/auth/plugin.ts`, "k", "/nowhere");
  await absolute.authenticate(request({ "X-Token": "k" }));
  const named = await loadAuthPlugin("testdata/auth/named.ts", "open", TESTS_DIR);
  await named.authenticate(request());
});

Deno.test("loadAuthPlugin() names what is wrong with a module that does not fit", async () => {
  const cases: [string, RegExp][] = [
    [
      "./testdata/auth/missing.ts",
      /Cannot load auth plugin module '.\/testdata\/auth\/missing.ts'/,
    ],
    ["./testdata/auth/no_factory.ts", /exports helper, something: export a factory/],
    ["./testdata/auth/bad_result.ts", /returned an object with keys check, not an object with/],
    ["./testdata/auth/class_export.ts", /exports a class: export a factory function/],
    ["./testdata/auth/throws.ts", /failed to start: cannot reach the user database/],
  ];
  for (const [path, message] of cases) {
    await assert.rejects(
      loadAuthPlugin(path, undefined, TESTS_DIR),
      (error: unknown) => error instanceof ConfigError && message.test(error.message),
      path,
    );
  }
});

Deno.test("isModulePath() tells module paths from plugin names", () => {
  for (const path of ["./a.ts", "../a", "/abs/a", "file:///a.ts", "a.js", "dir/a.mjs"]) {
    assert.ok(isModulePath(path), path);
  }
  for (const name of ["BasicHTTPAuth", "websockify.auth_plugins.ExpectOrigin", "my.Plugin"]) {
    assert.ok(!isModulePath(name), name);
  }
});

Deno.test("toAuthError() keeps AuthErrors and turns anything else into 500", () => {
  const original = new AuthError("Nope", { status: 401 });
  assert.equal(toAuthError(original), original);
  const wrapped = toAuthError(new Error("db down"));
  assert.equal(wrapped.status, 500);
  assert.match(wrapped.logDetail ?? "", /db down/);
  assert.equal(toAuthError("string thrown").status, 500);
});

Deno.test("writeAuthError() answers an upgrade socket with a complete response and closes", async () => {
  const error = new AuthError("Unauthorized", {
    status: 401,
    headers: { "WWW-Authenticate": 'Basic realm="Websockify"' },
  });
  const server = await startServer(
    (_request, response) => response.end(),
    (_request, socket) => writeAuthError(socket, error, "127.0.0.1:1"),
  );
  try {
    const upgrade = "GET /websockify HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n" +
      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
      "Sec-WebSocket-Version: 13\r\n\r\n";
    const bytes = await rawExchange(server.port, upgrade, { mustClose: true });
    const text = new TextDecoder().decode(bytes);
    assert.ok(text.startsWith("HTTP/1.1 401 Unauthorized\r\n"), text);
    const [response] = parseResponses(bytes);
    assert.ok(response !== undefined);
    assert.equal(response.headers.get("content-type"), "text/html;charset=utf-8");
    assert.equal(response.headers.get("connection"), "close");
    assert.equal(response.headers.get("www-authenticate"), 'Basic realm="Websockify"');
    assert.match(response.body, /<p>Error code: 401<\/p>/);
    assert.match(response.body, /<p>Message: Unauthorized.<\/p>/);
    assert.equal(Number(response.headers.get("content-length")), response.body.length);
    assert.equal(parseResponses(bytes).length, 1);
  } finally {
    await server.close();
  }
});

Deno.test("writeAuthError() answers a ServerResponse and strips control characters", async () => {
  const error = new AuthError("Bad\r\nX-Injected: 1", {
    status: 403,
    headers: { "X-Reason": "a\r\nX-Other: 2", "Bad Name": "x" },
  });
  const server = await startServer((_request, response) =>
    writeAuthError(response, error, "127.0.0.1:2")
  );
  try {
    const response = await rawRequest(server.port, "GET", "/");
    assert.equal(response.status, 403);
    assert.equal(response.reason, "BadX-Injected: 1");
    assert.equal(response.headers.get("x-injected"), undefined);
    assert.equal(response.headers.get("x-other"), undefined);
    assert.equal(response.headers.get("x-reason"), "aX-Other: 2");
    assert.equal(response.headers.get("connection"), "close");
    assert.match(response.body, /Message: BadX-Injected: 1\./);
    assert.equal(
      Number(response.headers.get("content-length")),
      new TextEncoder().encode(response.body).length,
    );
    // keep-alive requests are closed too: the connection ends after one response.
    const keepAlive = "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert.equal(
      parseResponses(await rawExchange(server.port, keepAlive, { mustClose: true })).length,
      1,
    );
    // An empty reason phrase falls back to the standard one.
    const plain = await startServer((_request, res) =>
      writeAuthError(res, new AuthError("", { status: 401 }), "127.0.0.1:3")
    );
    try {
      assert.equal((await rawRequest(plain.port, "GET", "/")).reason, "Unauthorized");
    } finally {
      await plain.close();
    }
  } finally {
    await server.close();
  }
});
