import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { ConfigError } from "../src/errors.ts";
import { isModulePath, loadTokenPlugin, TOKEN_PLUGINS } from "../src/tokens/mod.ts";
import type { RequestInfo } from "../src/types.ts";
import { tempDir } from "./_tokens_helpers.ts";

const here = dirname(fileURLToPath(import.meta.url));
const request: RequestInfo = {
  method: "GET",
  path: "/",
  headers: new Headers(),
  peer: "10.9.8.7:4242",
  clientAddress: "10.9.8.7",
  secure: false,
};

Deno.test("TOKEN_PLUGINS has every upstream plugin name", () => {
  assert.deepEqual(Object.keys(TOKEN_PLUGINS).sort(), [
    "BaseTokenAPI",
    "JSONTokenApi",
    "JWTTokenApi",
    "ReadOnlyTokenFile",
    "TokenFile",
    "TokenFileName",
    "TokenRedis",
    "UnixDomainSocketDirectory",
  ]);
});

Deno.test("isModulePath() tells module paths from plugin names", () => {
  for (const path of ["./p.ts", "../p.js", "/abs/p", "file:///p.ts", "p.mjs", "dir/p.ts"]) {
    assert.ok(isModulePath(path), path);
  }
  for (const name of ["TokenFile", "websockify.token_plugins.TokenFile", "my.module.Class"]) {
    assert.ok(!isModulePath(name), name);
  }
});

Deno.test("loadTokenPlugin() accepts bare and dotted names and resolves sources against cwd", async () => {
  await using dir = await tempDir();
  await Deno.writeTextFile(join(dir.path, "tokens.cfg"), "a: h:1\n");
  for (const name of ["TokenFile", "websockify.token_plugins.TokenFile", "ReadOnlyTokenFile"]) {
    const plugin = await loadTokenPlugin(name, "tokens.cfg", dir.path);
    assert.deepEqual(await plugin.lookup("a", request), { kind: "tcp", host: "h", port: 1 }, name);
  }
});

Deno.test("loadTokenPlugin() rejects unknown names with a hint", async () => {
  await assert.rejects(loadTokenPlugin("NoSuchPlugin", undefined, here), (error: unknown) => {
    assert.ok(error instanceof ConfigError);
    assert.match(error.message, /^Unknown token plugin 'NoSuchPlugin': use one of .*TokenFile/);
    return true;
  });
  await assert.rejects(loadTokenPlugin("tokenfile", "x", here), /did you mean 'TokenFile'\?/);
  await assert.rejects(
    loadTokenPlugin("mypackage.plugins.Mine", undefined, here),
    /Python plugin classes cannot be loaded/,
  );
  await assert.rejects(loadTokenPlugin("toString", undefined, here), ConfigError);
});

Deno.test("loadTokenPlugin() passes start-up validation errors through as ConfigError", async () => {
  await using dir = await tempDir();
  await Deno.writeTextFile(join(dir.path, "file"), "");
  await assert.rejects(loadTokenPlugin("TokenFileName", "file", dir.path), ConfigError);
  await assert.rejects(loadTokenPlugin("UnixDomainSocketDirectory", "file", dir.path), ConfigError);
  await assert.rejects(loadTokenPlugin("TokenRedis", "h:notaport", dir.path), ConfigError);
  await assert.rejects(loadTokenPlugin("BaseTokenAPI", "http://x/", dir.path), ConfigError);
  await assert.rejects(loadTokenPlugin("JWTTokenApi", "missing.key", dir.path), ConfigError);
  await assert.rejects(loadTokenPlugin("TokenFile", undefined, dir.path), ConfigError);
});

Deno.test("loadTokenPlugin() loads a custom plugin module by path", async () => {
  const plugin = await loadTokenPlugin("./testdata/tokens/custom_plugin.ts", "letmein", here);
  assert.deepEqual(await plugin.lookup("letmein", request), {
    kind: "tcp",
    host: "10.9.8.7",
    port: 5900,
  });
  assert.equal(await plugin.lookup("other", request), null);
  const named = await loadTokenPlugin(join(here, "testdata/tokens/named_plugin.js"), "vnc", "/");
  assert.deepEqual(await named.lookup("a", request), { kind: "unix", path: "/run/vnc/a" });
});

Deno.test("loadTokenPlugin() reports unusable plugin modules as ConfigError", async () => {
  await assert.rejects(
    loadTokenPlugin("./testdata/tokens/missing.ts", undefined, here),
    /Token plugin module '.\/testdata\/tokens\/missing.ts' cannot be loaded/,
  );
  await assert.rejects(
    loadTokenPlugin("./testdata/tokens/no_factory.ts", undefined, here),
    /has no factory: export a TokenPluginFactory/,
  );
  await assert.rejects(
    loadTokenPlugin("./testdata/tokens/named_plugin.js", "fail", here),
    /failed to start: bad source for the named plugin/,
  );
});
