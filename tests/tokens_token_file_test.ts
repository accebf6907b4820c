import assert from "node:assert/strict";
import { join } from "node:path";
import { ConfigError, TokenLookupError } from "../src/errors.ts";
import { FileCache } from "../src/tokens/file_cache.ts";
import { parseTokenFile, readOnlyTokenFile, tokenFile } from "../src/tokens/token_file.ts";
import { captureLogs, lookupRequest as request, tempDir } from "./_tokens_helpers.ts";

Deno.test("parseTokenFile() reads tokens, comments, blank lines, tabs, IPv6 and unix targets", () => {
  const errors: string[] = [];
  const table = parseTokenFile(
    [
      "# a comment",
      "",
      "   ",
      "one: 127.0.0.1:5900",
      "two:\texample.com:5901",
      "  three: [::1]:5902  ",
      "four: ::1:5903",
      "five: unix_socket:/run/vnc.sock",
      "one: 127.0.0.1:5999",
    ].join("\n"),
    (line, reason) => errors.push(`${line}: ${reason}`),
  );
  assert.deepEqual(errors, []);
  assert.deepEqual(Object.fromEntries(table), {
    one: { kind: "tcp", host: "127.0.0.1", port: 5999 },
    two: { kind: "tcp", host: "example.com", port: 5901 },
    three: { kind: "tcp", host: "::1", port: 5902 },
    four: { kind: "tcp", host: "::1", port: 5903 },
    five: { kind: "unix", path: "/run/vnc.sock" },
  });
});

Deno.test("parseTokenFile() reports syntax errors with their line and skips them", () => {
  const errors: number[] = [];
  const table = parseTokenFile(
    "tok:127.0.0.1:5900\r\nok: h:1\r\nnoport: host\r\na: b: c:1\r\n: h:1\r\nbad: h:99999\r\n",
    (line) => errors.push(line),
  );
  assert.deepEqual(errors, [1, 3, 4, 5, 6]);
  assert.deepEqual([...table.keys()], ["ok"]);
});

Deno.test("tokenFile() sees tokens added, changed and removed without a restart", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "tokens.cfg");
  await Deno.writeTextFile(path, "a: 127.0.0.1:5900\n");
  const plugin = await tokenFile(path);
  assert.deepEqual(await plugin.lookup("a", request), {
    kind: "tcp",
    host: "127.0.0.1",
    port: 5900,
  });
  assert.equal(await plugin.lookup("b", request), null);

  await Deno.writeTextFile(path, "a: 127.0.0.1:5901\nb: 127.0.0.1:5902\n");
  assert.deepEqual(await plugin.lookup("a", request), {
    kind: "tcp",
    host: "127.0.0.1",
    port: 5901,
  });
  assert.deepEqual(await plugin.lookup("b", request), {
    kind: "tcp",
    host: "127.0.0.1",
    port: 5902,
  });

  // Same size, same second: still noticed.
  await Deno.writeTextFile(path, "a: 127.0.0.1:5903\nb: 127.0.0.1:5902\n");
  assert.deepEqual(await plugin.lookup("a", request), {
    kind: "tcp",
    host: "127.0.0.1",
    port: 5903,
  });

  // Replaced by rename, as editors save.
  const next = join(dir.path, "tokens.tmp");
  await Deno.writeTextFile(next, "b: 127.0.0.1:5904\n");
  await Deno.rename(next, path);
  assert.equal(await plugin.lookup("a", request), null);
  assert.deepEqual(await plugin.lookup("b", request), {
    kind: "tcp",
    host: "127.0.0.1",
    port: 5904,
  });
});

Deno.test("FileCache.get() reads and parses an unchanged file only once", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "tokens.cfg");
  await Deno.writeTextFile(path, "a: h:1\n");
  let reads = 0;
  const cache = new FileCache(path, (text) => {
    reads++;
    return text;
  }, { racyWindowMs: 0 });
  for (let index = 0; index < 5; index++) assert.equal(await cache.get(), "a: h:1\n");
  assert.equal(reads, 1);
  await Deno.writeTextFile(path, "a: h:22\n");
  assert.equal(await cache.get(), "a: h:22\n");
  assert.equal(await cache.get(), "a: h:22\n");
  assert.equal(reads, 2);
});

Deno.test("FileCache.get() re-reads a recently modified file but parses only new text", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "tokens.cfg");
  await Deno.writeTextFile(path, "x");
  let parses = 0;
  const cache = new FileCache(path, (text) => {
    parses++;
    return text;
  });
  assert.equal(await cache.get(), "x");
  // Same size and, very likely, the same millisecond: the racy window still catches it.
  await Deno.writeTextFile(path, "y");
  assert.equal(await cache.get(), "y");
  assert.equal(await cache.get(), "y");
  assert.equal(parses, 2);
});

Deno.test("tokenFile() logs a syntax error once per change of the file", async () => {
  const logs = captureLogs();
  await using dir = await tempDir();
  const path = join(dir.path, "tokens.cfg");
  await Deno.writeTextFile(path, "good: h:1\nbad:h:2\n");
  const plugin = await tokenFile(path);
  assert.equal(logs.matching("Syntax error").length, 1, "logged at start-up");
  for (let index = 0; index < 5; index++) await plugin.lookup("good", request);
  assert.deepEqual(logs.matching("Syntax error"), [
    `Syntax error in ${path} on line 2: expected 'token: host:port' with a space after the first colon`,
  ]);
  await Deno.writeTextFile(path, "good: h:1\n\nbad:h:2\n");
  await plugin.lookup("good", request);
  await plugin.lookup("good", request);
  assert.equal(logs.matching(`Syntax error in ${path} on line 3`).length, 1);
  assert.equal(logs.matching("Syntax error").length, 2);
});

Deno.test("tokenFile() reads every file of a directory in name order", async () => {
  await using dir = await tempDir();
  await Deno.writeTextFile(join(dir.path, "b.cfg"), "shared: h:2\nb: h:20\n");
  await Deno.writeTextFile(join(dir.path, "a.cfg"), "shared: h:1\na: h:10\n");
  await Deno.writeTextFile(join(dir.path, ".a.cfg.swp"), "garbage\n");
  await Deno.mkdir(join(dir.path, "sub"));
  await Deno.writeTextFile(join(dir.path, "sub", "c.cfg"), "c: h:30\n");
  const logs = captureLogs();
  const plugin = await readOnlyTokenFile(dir.path);
  assert.deepEqual(await plugin.lookup("shared", request), { kind: "tcp", host: "h", port: 2 });
  assert.deepEqual(await plugin.lookup("a", request), { kind: "tcp", host: "h", port: 10 });
  assert.deepEqual(await plugin.lookup("b", request), { kind: "tcp", host: "h", port: 20 });
  assert.equal(await plugin.lookup("c", request), null, "not recursive");
  assert.deepEqual(logs.matching("Syntax error"), [], "dot files skipped");

  await Deno.writeTextFile(join(dir.path, "c.cfg"), "c: h:31\n");
  assert.deepEqual(await plugin.lookup("c", request), { kind: "tcp", host: "h", port: 31 });
  await Deno.remove(join(dir.path, "b.cfg"));
  assert.equal(await plugin.lookup("b", request), null);
  assert.deepEqual(await plugin.lookup("shared", request), { kind: "tcp", host: "h", port: 1 });
});

Deno.test("tokenFile() reports a missing source at start-up and a vanished one as 503", async () => {
  await using dir = await tempDir();
  await assert.rejects(tokenFile(join(dir.path, "nope.cfg")), ConfigError);
  await assert.rejects(tokenFile(undefined), ConfigError);
  const path = join(dir.path, "tokens.cfg");
  await Deno.writeTextFile(path, "a: h:1\n");
  const plugin = await tokenFile(path);
  await Deno.remove(path);
  await assert.rejects(plugin.lookup("a", request), (error: unknown) => {
    assert.ok(error instanceof TokenLookupError);
    assert.equal(error.status, 503);
    assert.match(error.message, /tokens\.cfg' cannot be read/);
    return true;
  });
});
