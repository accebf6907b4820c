// End-to-end: main.ts with --web, --file-only, --web-auth, --auth-plugin and --origin, spoken
// to over real sockets.
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import {
  rawRequest,
  runProxyToFailure,
  spawnProxy,
  startEchoServer,
  upgradeRequest,
} from "./_web_helpers.ts";

const REPO = new URL("..", import.meta.url).pathname;

async function makeRoot(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "websockify-web-cli-" });
  await Deno.mkdir(`${dir}/root/list`, { recursive: true });
  await Deno.writeTextFile(`${dir}/root/hello.txt`, "hello\n");
  await Deno.writeTextFile(`${dir}/root/list/a.txt`, "a");
  await Deno.writeTextFile(`${dir}/root/.secret`, "SECRET");
  await Deno.writeTextFile(`${dir}/outside.txt`, "SECRET");
  await Deno.symlink("../outside.txt", `${dir}/root/escape`);
  return dir;
}

/** Runs `body` against a proxy started with `args` (the echo target is appended). */
async function withProxy(
  args: (root: string) => string[],
  body: (port: number, stderr: () => string) => Promise<void>,
): Promise<void> {
  const dir = await makeRoot();
  const echo = startEchoServer();
  let proxy;
  try {
    proxy = await spawnProxy([`127.0.0.1:${echo.port}`, ...args(`${dir}/root`)], REPO);
    await body(proxy.port, proxy.stderr);
  } finally {
    if (proxy) assert.equal(await proxy.stop(), 0);
    await echo.close();
    await Deno.remove(dir, { recursive: true });
  }
}

const basic = (credentials: string) => `Basic ${Buffer.from(credentials).toString("base64")}`;

Deno.test("main.ts --web serves files, listings and upgrades on one port", async () => {
  await withProxy((root) => ["--web", root], async (port, stderr) => {
    const file = await rawRequest(port, "GET", "/hello.txt");
    assert.equal(file.status, 200);
    assert.equal(file.body, "hello\n");
    assert.ok(file.headers.get("etag"));
    assert.equal((await rawRequest(port, "GET", "/list")).headers.get("location"), "/list/");
    const listing = await rawRequest(port, "GET", "/list/");
    assert.match(listing.body, /Directory listing for \/list\//);
    assert.match(listing.body, /<a href="a.txt">a.txt<\/a>/);
    for (const target of ["/..%2foutside.txt", "/escape", "/.secret", "/%2e%2e/outside.txt"]) {
      const refused = await rawRequest(port, "GET", target);
      assert.ok([400, 403, 404].includes(refused.status), `${target}: ${refused.status}`);
      assert.ok(!refused.body.includes("SECRET"), target);
    }
    const head = await rawRequest(port, "HEAD", "/hello.txt");
    assert.equal(head.status, 200);
    assert.equal(head.headers.get("content-length"), "6");
    const post = await rawRequest(port, "POST", "/hello.txt", { "Content-Length": "0" });
    assert.equal(post.status, 405);
    // Upgrades are accepted on any path, even one that names a file.
    assert.equal((await upgradeRequest(port, {}, "/hello.txt")).status, 101);
    assert.match(stderr(), /Web server\. Web root: /);
    assert.match(stderr(), /127\.0\.0\.1: "GET \/hello\.txt HTTP\/1\.1" 200/);
  });
});

Deno.test("main.ts --file-only answers directories without an index with 404", async () => {
  await withProxy((root) => ["--web", root, "--file-only"], async (port, stderr) => {
    assert.equal((await rawRequest(port, "GET", "/list/")).status, 404);
    assert.equal((await rawRequest(port, "GET", "/hello.txt")).status, 200);
    assert.match(stderr(), /Web server \(no directory listings\)/);
  });
});

Deno.test("main.ts without --web answers GET with 405", async () => {
  await withProxy(() => [], async (port) => {
    assert.equal((await rawRequest(port, "GET", "/hello.txt")).status, 405);
  });
});

Deno.test("main.ts BasicHTTPAuth guards upgrades, not files without --web-auth", async () => {
  const args = (root: string) => [
    "--web",
    root,
    "--auth-plugin",
    "BasicHTTPAuth",
    "--auth-source",
    "admin:s3cret",
  ];
  await withProxy(args, async (port, stderr) => {
    const missing = await upgradeRequest(port);
    assert.equal(missing.status, 401);
    assert.equal(missing.headers.get("www-authenticate"), 'Basic realm="Websockify"');
    assert.equal(missing.headers.get("connection"), "close");
    assert.equal(Number(missing.headers.get("content-length")), missing.body.length);
    assert.equal((await upgradeRequest(port, { Authorization: basic("admin:nope") })).status, 401);
    assert.equal((await upgradeRequest(port, { Authorization: "Bearer x" })).status, 403);
    assert.equal((await upgradeRequest(port, { Authorization: "Basic %%%" })).status, 401);
    const allowed = await upgradeRequest(port, { Authorization: basic("admin:s3cret") });
    assert.equal(allowed.status, 101);
    assert.equal((await rawRequest(port, "GET", "/hello.txt")).status, 200);
    assert.match(stderr(), /127\.0\.0\.1: Authentication failed: 401 Unauthorized/);
    assert.ok(!stderr().includes("nope"), "passwords are not logged");
  });
});

Deno.test("main.ts --web-auth runs the auth plugin for file requests", async () => {
  const args = (root: string) => [
    "--web",
    root,
    "--web-auth",
    "--auth-plugin",
    "websockify.auth_plugins.BasicHTTPAuth",
    "--auth-source",
    "admin:s3cret",
  ];
  await withProxy(args, async (port) => {
    const denied = await rawRequest(port, "GET", "/hello.txt");
    assert.equal(denied.status, 401);
    assert.equal(denied.headers.get("www-authenticate"), 'Basic realm="Websockify"');
    assert.ok(!denied.body.includes("hello"));
    const allowed = await rawRequest(port, "GET", "/hello.txt", {
      Authorization: basic("admin:s3cret"),
    });
    assert.equal(allowed.status, 200);
    assert.equal(allowed.body, "hello\n");
    const head = await rawRequest(port, "HEAD", "/hello.txt");
    assert.equal(head.status, 401);
  });
});

Deno.test("main.ts --origin refuses upgrades from other origins with 403 Invalid Origin", async () => {
  const args = () => ["--origin", "good.example,https://app.example:8443"];
  await withProxy(args, async (port, stderr) => {
    assert.equal((await upgradeRequest(port, { Origin: "https://good.example" })).status, 101);
    assert.equal((await upgradeRequest(port, { Origin: "http://GOOD.example:80" })).status, 101);
    assert.equal((await upgradeRequest(port, { Origin: "https://app.example:8443" })).status, 101);
    const evil = await upgradeRequest(port, { Origin: "https://evil.example" });
    assert.equal(evil.status, 403);
    assert.equal(evil.reason, "Invalid Origin");
    assert.equal((await upgradeRequest(port)).status, 403);
    assert.match(stderr(), /Invalid Origin.*"https:\/\/evil\.example"/);
  });
});

Deno.test("main.ts ExpectOrigin plugin refuses unlisted origins", async () => {
  const args = () => ["--auth-plugin", "ExpectOrigin", "--auth-source", "https://good.example"];
  await withProxy(args, async (port) => {
    assert.equal((await upgradeRequest(port, { Origin: "https://good.example" })).status, 101);
    const evil = await upgradeRequest(port, { Origin: "https://evil.example" });
    assert.equal(evil.status, 403);
    assert.equal(evil.reason, "Invalid Origin");
  });
});

Deno.test("main.ts loads a custom auth plugin module relative to the working directory", async () => {
  const args = () => [
    "--auth-plugin",
    "./tests/testdata/auth/plugin.ts",
    "--auth-source",
    "let-me-in",
  ];
  await withProxy(args, async (port) => {
    assert.equal((await upgradeRequest(port, { "X-Token": "let-me-in" })).status, 101);
    const denied = await upgradeRequest(port, { "X-Token": "guess" });
    assert.equal(denied.status, 403);
    assert.equal(denied.reason, "Token Required");
  });
});

Deno.test("main.ts exits with 2 for an auth plugin that cannot be loaded", async () => {
  const cases: [string[], RegExp][] = [
    [["--auth-plugin", "NoSuchPlugin"], /Unknown auth plugin 'NoSuchPlugin'/],
    [["--auth-plugin", "./tests/testdata/auth/no_factory.ts"], /export a factory/],
    [["--auth-plugin", "BasicHTTPAuth"], /BasicHTTPAuth needs --auth-source/],
  ];
  for (const [args, message] of cases) {
    const { code, stderr } = await runProxyToFailure(["127.0.0.1:9", ...args], REPO);
    assert.equal(code, 2, stderr);
    assert.match(stderr, message);
  }
});
