import assert from "node:assert/strict";
import { ConfigError, TokenLookupError } from "../src/errors.ts";
import { baseTokenApi, jsonTokenApi, tokenUrl } from "../src/tokens/token_api.ts";
import { freePort, lookupRequest as request, startHttp } from "./_tokens_helpers.ts";

function isLookupError(status: number, pattern: RegExp) {
  return (error: unknown) => {
    assert.ok(error instanceof TokenLookupError, String(error));
    assert.equal(error.status, status);
    assert.match(error.message, pattern);
    return true;
  };
}

Deno.test("tokenUrl() URL-escapes the token and keeps %% as %", () => {
  assert.equal(
    tokenUrl("http://h/t/%s?x=100%%", "a b/c?d#e&f"),
    "http://h/t/a%20b%2Fc%3Fd%23e%26f?x=100%",
  );
});

Deno.test("baseTokenApi() maps a host:port body to a target and 404 to null", async () => {
  await using server = startHttp((req) => {
    const token = decodeURIComponent(new URL(req.url).pathname.slice("/targets/".length));
    if (token === "vnc1") return new Response("127.0.0.1:5901\n");
    if (token === "v6") return new Response("[::1]:5902");
    if (token === "a/b?c") return new Response("h:3");
    return new Response("no such token", { status: 404 });
  });
  const plugin = baseTokenApi(`${server.url}/targets/%s`, { cacheMs: 0 });
  assert.deepEqual(await plugin.lookup("vnc1", request), {
    kind: "tcp",
    host: "127.0.0.1",
    port: 5901,
  });
  assert.deepEqual(await plugin.lookup("v6", request), { kind: "tcp", host: "::1", port: 5902 });
  assert.deepEqual(await plugin.lookup("a/b?c", request), { kind: "tcp", host: "h", port: 3 });
  assert.equal(server.requests.at(-1)?.pathname, "/targets/a%2Fb%3Fc");
  assert.equal(server.requests.at(-1)?.search, "");
  assert.equal(await plugin.lookup("unknown", request), null);
});

Deno.test("jsonTokenApi() reads host and port keys", async () => {
  await using server = startHttp((req) => {
    const token = new URL(req.url).searchParams.get("t");
    if (token === "n") return Response.json({ host: "10.0.0.1", port: 5900 });
    if (token === "s") return Response.json({ host: "10.0.0.2", port: "5901" });
    if (token === "u") return Response.json({ host: "unix_socket", port: "/run/x.sock" });
    if (token === "noport") return Response.json({ host: "10.0.0.3" });
    if (token === "garbage") return new Response("<html>oops</html>");
    return new Response(null, { status: 410 });
  });
  const plugin = jsonTokenApi(`${server.url}/lookup?t=%s`);
  assert.deepEqual(await plugin.lookup("n", request), {
    kind: "tcp",
    host: "10.0.0.1",
    port: 5900,
  });
  assert.deepEqual(await plugin.lookup("s", request), {
    kind: "tcp",
    host: "10.0.0.2",
    port: 5901,
  });
  assert.deepEqual(await plugin.lookup("u", request), { kind: "unix", path: "/run/x.sock" });
  assert.equal(await plugin.lookup("gone", request), null);
  await assert.rejects(plugin.lookup("noport", request), isLookupError(502, /no usable target/));
  await assert.rejects(plugin.lookup("garbage", request), isLookupError(502, /no usable target/));
});

Deno.test("baseTokenApi() treats 5xx, 401 and bad bodies as failures, not 'not found'", async () => {
  await using server = startHttp((req) => {
    const path = new URL(req.url).pathname;
    if (path === "/500") return new Response("boom", { status: 500 });
    if (path === "/401") return new Response("who?", { status: 401 });
    return new Response("just-a-host");
  });
  const plugin = baseTokenApi(`${server.url}/%s`);
  await assert.rejects(plugin.lookup("500", request), isLookupError(502, /answered 500/));
  await assert.rejects(plugin.lookup("401", request), isLookupError(502, /answered 401/));
  await assert.rejects(plugin.lookup("x", request), isLookupError(502, /no usable target/));
});

Deno.test("baseTokenApi() fails with 503 when the API is down or too slow", async () => {
  const port = await freePort();
  const down = baseTokenApi(`http://127.0.0.1:${port}/%s`);
  await assert.rejects(down.lookup("x", request), isLookupError(503, /unreachable/));

  let release = () => {};
  const held = new Promise<void>((resolve) => release = resolve);
  await using server = startHttp(async () => {
    await held;
    return new Response("h:1");
  });
  const slow = baseTokenApi(`${server.url}/%s`, { timeoutMs: 200 });
  const started = Date.now();
  await assert.rejects(
    slow.lookup("x", request),
    isLookupError(503, /did not answer within 200 ms/),
  );
  assert.ok(Date.now() - started < 2000);
  release();
});

Deno.test("baseTokenApi() caches found targets briefly and shares concurrent requests", async () => {
  await using server = startHttp(() => new Response("h:1"));
  const plugin = baseTokenApi(`${server.url}/%s`, { cacheMs: 60_000 });
  const results = await Promise.all([1, 2, 3].map(() => plugin.lookup("t", request)));
  for (const result of results) assert.deepEqual(result, { kind: "tcp", host: "h", port: 1 });
  await plugin.lookup("t", request);
  assert.equal(server.requests.length, 1);
  const uncached = baseTokenApi(`${server.url}/%s`, { cacheMs: 0 });
  await uncached.lookup("t", request);
  await uncached.lookup("t", request);
  assert.equal(server.requests.length, 3);
});

Deno.test("baseTokenApi() and jsonTokenApi() validate the source URL at start-up", () => {
  assert.throws(() => baseTokenApi(undefined), ConfigError);
  assert.throws(() => baseTokenApi("http://h/no-placeholder"), /has no '%s'/);
  assert.throws(() => jsonTokenApi("not a url %s"), /is not a URL/);
  assert.throws(() => jsonTokenApi("ftp://h/%s"), /http:\/\/ or https:\/\//);
  assert.throws(() => jsonTokenApi("http://h/%%s"), /has no '%s'/);
});
