/**
 * Token changes reach the next connection of a running proxy, with no restart and no signal:
 * tokens added, changed and removed, in a TokenFile file (edited in place and replaced by rename)
 * and in the Redis of TokenRedis.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  echoThrough,
  spawnProxy,
  startRedis,
  startTaggedEcho,
  tempDir,
  upgradeStatus,
} from "./_tokens_helpers.ts";

Deno.test("TokenFile: a token added, changed or removed is honoured by the next connection", async () => {
  await using dir = await tempDir();
  await using a = await startTaggedEcho("A:");
  await using b = await startTaggedEcho("B:");
  const tokens = join(dir.path, "tokens.cfg");
  await Deno.writeTextFile(tokens, `one: 127.0.0.1:${a.port}\n`);
  await using proxy = await spawnProxy([
    "--token-plugin",
    "TokenFile",
    "--token-source",
    tokens,
    "127.0.0.1:0",
  ]);
  assert.equal(await echoThrough(proxy.port, "/?token=one", "1"), "A:1");
  assert.match((await upgradeStatus(proxy.port, "/?token=two")).statusLine, /^HTTP\/1\.1 404 /);

  // Added by editing the file in place.
  await Deno.writeTextFile(tokens, `two: 127.0.0.1:${b.port}\n`, { append: true });
  assert.equal(await echoThrough(proxy.port, "/?token=two", "2"), "B:2");

  // Changed and removed, saved the way editors do: a new file renamed over the old one.
  const next = join(dir.path, "tokens.cfg.new");
  await Deno.writeTextFile(next, `two: 127.0.0.1:${a.port}\n`);
  await Deno.rename(next, tokens);
  assert.equal(await echoThrough(proxy.port, "/?token=two", "3"), "A:3");
  assert.match((await upgradeStatus(proxy.port, "/?token=one")).statusLine, /^HTTP\/1\.1 404 /);

  // Emptied: every token is gone.
  await Deno.writeTextFile(tokens, "");
  assert.match((await upgradeStatus(proxy.port, "/?token=two")).statusLine, /^HTTP\/1\.1 404 /);
});

Deno.test("TokenRedis: a token added, changed or removed is honoured by the next connection", async () => {
  await using redis = await startRedis({ password: "pw" });
  await using a = await startTaggedEcho("A:");
  await using b = await startTaggedEcho("B:");
  await using proxy = await spawnProxy([
    "--token-plugin",
    "TokenRedis",
    "--token-source",
    `127.0.0.1:${redis.port}:2:${redis.password}`,
    "127.0.0.1:0",
  ]);
  assert.match((await upgradeStatus(proxy.port, "/?token=vnc")).statusLine, /^HTTP\/1\.1 404 /);

  await redis.cli(2, "SET", "vnc", `127.0.0.1:${a.port}`);
  assert.equal(await echoThrough(proxy.port, "/?token=vnc", "1"), "A:1");

  await redis.cli(2, "SET", "vnc", JSON.stringify({ host: "127.0.0.1", port: b.port }));
  assert.equal(await echoThrough(proxy.port, "/?token=vnc", "2"), "B:2");

  assert.equal(await redis.cli(2, "DEL", "vnc"), "1");
  assert.match((await upgradeStatus(proxy.port, "/?token=vnc")).statusLine, /^HTTP\/1\.1 404 /);
});
