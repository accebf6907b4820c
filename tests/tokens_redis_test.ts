import assert from "node:assert/strict";
import { ConfigError, TokenLookupError } from "../src/errors.ts";
import {
  parseRedisSource,
  parseRedisValue,
  splitSourceFields,
  tokenRedis,
} from "../src/tokens/redis.ts";
import { captureLogs, freePort, lookupRequest as request, startRedis } from "./_tokens_helpers.ts";

Deno.test("splitSourceFields() splits on colons except inside a whole quoted field", () => {
  const cases: [string, string[]][] = [
    ["a", ["a"]],
    ["a:b:c:d", ["a", "b", "c", "d"]],
    ["a::::ns", ["a", "", "", "", "ns"]],
    ['a::::"ns1:ns2"', ["a", "", "", "", "ns1:ns2"]],
    ['a:"b:c":d', ["a", "b:c", "d"]],
    ['"::1":6379', ["::1", "6379"]],
    ['a:"b"c:d', ["a", '"b"c', "d"]],
    ['a:"":d', ["a", '""', "d"]],
    ["a:", ["a", ""]],
  ];
  for (const [source, fields] of cases) assert.deepEqual(splitSourceFields(source), fields, source);
});

Deno.test("parseRedisSource() applies defaults and upstream's field rules", () => {
  assert.deepEqual(parseRedisSource("redis"), {
    host: "redis",
    port: 6379,
    db: 0,
    password: undefined,
    namespace: "",
  });
  assert.deepEqual(parseRedisSource("redis:6380:2:pw:ns"), {
    host: "redis",
    port: 6380,
    db: 2,
    password: "pw",
    namespace: "ns:",
  });
  assert.deepEqual(parseRedisSource('redis:::"p:w":"a:b"'), {
    host: "redis",
    port: 6379,
    db: 0,
    password: "p:w",
    namespace: "a:b:",
  });
  assert.equal(parseRedisSource("[::1]:6390").host, "::1");
  assert.equal(parseRedisSource("[::1]:6390").port, 6390);
  assert.equal(parseRedisSource('"::1"').host, "::1");
  for (
    const bad of [undefined, "", ":6379", "h:x", "h:0", "h:70000", "h:1:x", "a:b:c:d:e:f", "[::1"]
  ) {
    assert.throws(() => parseRedisSource(bad), ConfigError, String(bad));
  }
  assert.throws(() => parseRedisSource("h:x"), /expected format host\[:port\[:db/);
});

Deno.test("parseRedisValue() reads plain, JSON and IPv6 values", () => {
  assert.deepEqual(parseRedisValue(" 127.0.0.1:5900\n"), {
    kind: "tcp",
    host: "127.0.0.1",
    port: 5900,
  });
  assert.deepEqual(parseRedisValue('{"host": "h:1"}'), { kind: "tcp", host: "h", port: 1 });
  assert.deepEqual(parseRedisValue('{"host": "h", "port": 2}'), {
    kind: "tcp",
    host: "h",
    port: 2,
  });
  assert.deepEqual(parseRedisValue('{"host":"[::1]:3"}'), { kind: "tcp", host: "::1", port: 3 });
  assert.deepEqual(parseRedisValue("::1:4"), { kind: "tcp", host: "::1", port: 4 });
  for (const bad of ["{not json", '{"port": 1}', "[1]", "justhost", '{"host": 5}']) {
    assert.throws(() => parseRedisValue(bad), Error, bad);
  }
});

Deno.test("tokenRedis() looks tokens up in a real Redis, with db, password and namespace", async () => {
  await using redis = await startRedis();
  await redis.cli(3, "SET", "app:ns:plain", "127.0.0.1:5901");
  await redis.cli(3, "SET", "app:ns:json", '{"host": "10.0.0.1:5902"}');
  await redis.cli(3, "SET", "app:ns:json2", ' {"host": "10.0.0.2", "port": 5903} ');
  await redis.cli(3, "SET", "app:ns:v6", "[::1]:5904");
  await redis.cli(3, "SET", "app:ns:bad", "garbage");
  await redis.cli(0, "SET", "app:ns:otherdb", "h:1");
  await redis.cli(3, "SET", "plain", "h:1");
  const plugin = tokenRedis(`127.0.0.1:${redis.port}:3:"${redis.password}":"app:ns"`);
  try {
    assert.deepEqual(await plugin.lookup("plain", request), {
      kind: "tcp",
      host: "127.0.0.1",
      port: 5901,
    });
    assert.deepEqual(await plugin.lookup("json", request), {
      kind: "tcp",
      host: "10.0.0.1",
      port: 5902,
    });
    assert.deepEqual(await plugin.lookup("json2", request), {
      kind: "tcp",
      host: "10.0.0.2",
      port: 5903,
    });
    assert.deepEqual(await plugin.lookup("v6", request), { kind: "tcp", host: "::1", port: 5904 });
    assert.equal(await plugin.lookup("missing", request), null);
    assert.equal(await plugin.lookup("otherdb", request), null, "db 3 is used");
    await assert.rejects(plugin.lookup("bad", request), (error: unknown) => {
      assert.ok(error instanceof TokenLookupError);
      assert.equal(error.status, 502);
      return true;
    });
    // A token added while running.
    await redis.cli(3, "SET", "app:ns:late", "h:9");
    assert.deepEqual(await plugin.lookup("late", request), { kind: "tcp", host: "h", port: 9 });
  } finally {
    await plugin.close?.();
  }
});

Deno.test("tokenRedis() reuses one connection for many lookups", async () => {
  await using redis = await startRedis();
  await redis.cli(0, "SET", "t", "h:1");
  const plugin = tokenRedis(`127.0.0.1:${redis.port}:0:"${redis.password}"`);
  try {
    const clientsBefore = Number(
      /connected_clients:(\d+)/.exec(await redis.cli(0, "INFO", "clients"))?.[1],
    );
    await Promise.all(Array.from({ length: 20 }, () => plugin.lookup("t", request)));
    for (let index = 0; index < 20; index++) await plugin.lookup("t", request);
    const clientsAfter = Number(
      /connected_clients:(\d+)/.exec(await redis.cli(0, "INFO", "clients"))?.[1],
    );
    // Two redis-cli connections were opened for INFO around the lookups; the plugin added one.
    assert.equal(clientsAfter, clientsBefore + 1);
  } finally {
    await plugin.close?.();
  }
});

Deno.test("tokenRedis() answers 503 quickly when Redis is down, without a log storm", async () => {
  const logs = captureLogs();
  const port = await freePort();
  const plugin = tokenRedis(`127.0.0.1:${port}`, { timeoutMs: 1000 });
  try {
    const started = Date.now();
    await assert.rejects(plugin.lookup("t", request), (error: unknown) => {
      assert.ok(error instanceof TokenLookupError, String(error));
      assert.equal(error.status, 503);
      assert.match(error.message, /Redis at 127\.0\.0\.1:\d+\/0 is unavailable/);
      return true;
    });
    assert.ok(Date.now() - started < 3000, "fails fast");
    await assert.rejects(plugin.lookup("t", request), TokenLookupError);
  } finally {
    await plugin.close?.();
  }
  assert.ok(logs.lines.length < 10, "no log storm");
});

Deno.test("tokenRedis() survives a Redis restart: 503 while down, found again after", async () => {
  const redis = await startRedis();
  await redis.cli(0, "SET", "t", "h:1");
  const plugin = tokenRedis(`127.0.0.1:${redis.port}::"${redis.password}"`, { timeoutMs: 1000 });
  try {
    assert.deepEqual(await plugin.lookup("t", request), { kind: "tcp", host: "h", port: 1 });
    await redis.stop();
    await assert.rejects(plugin.lookup("t", request), (error: unknown) => {
      assert.ok(error instanceof TokenLookupError, String(error));
      assert.equal(error.status, 503);
      return true;
    });
    await using again = await startRedis({ port: redis.port, password: redis.password });
    await again.cli(0, "SET", "t", "h:2");
    const deadline = Date.now() + 8000;
    let result: unknown;
    for (;;) {
      result = await plugin.lookup("t", request).catch((error) => error);
      if (!(result instanceof Error) || Date.now() > deadline) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.deepEqual(result, { kind: "tcp", host: "h", port: 2 });
  } finally {
    await plugin.close?.();
    await redis.stop();
  }
});
