import assert from "node:assert/strict";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { ConfigError, TokenLookupError } from "../src/errors.ts";
import { tokenFileName, tokenFileNameOf } from "../src/tokens/token_file_name.ts";
import { unixSocketDirectory } from "../src/tokens/unix_socket_directory.ts";
import { lookupRequest as request, tempDir } from "./_tokens_helpers.ts";

function listenUnix(path: string): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer((socket) => socket.end());
    server.once("error", reject);
    server.listen(path, () => resolve(server));
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

Deno.test("tokenFileNameOf() keeps only a safe last path component", () => {
  assert.equal(tokenFileNameOf("vnc1"), "vnc1");
  assert.equal(tokenFileNameOf("../../etc/passwd"), "passwd");
  assert.equal(tokenFileNameOf("a/b"), "b");
  for (const bad of ["", ".", "..", "a/..", "x/", "a\0b"]) {
    assert.equal(tokenFileNameOf(bad), undefined, JSON.stringify(bad));
  }
});

Deno.test("tokenFileName() reads host:port from the file named by the token", async () => {
  await using dir = await tempDir();
  const tokens = join(dir.path, "tokens");
  await Deno.mkdir(tokens);
  await Deno.writeTextFile(join(tokens, "vnc1"), "127.0.0.1:5901\n");
  await Deno.writeTextFile(join(tokens, "v6"), "[::1]:5902");
  await Deno.writeTextFile(join(tokens, "broken"), "no port here");
  await Deno.mkdir(join(tokens, "adir"));
  await Deno.writeTextFile(join(dir.path, "secret"), "10.0.0.1:22");
  const plugin = await tokenFileName(tokens);
  assert.deepEqual(await plugin.lookup("vnc1", request), {
    kind: "tcp",
    host: "127.0.0.1",
    port: 5901,
  });
  assert.deepEqual(await plugin.lookup("v6", request), { kind: "tcp", host: "::1", port: 5902 });
  assert.equal(await plugin.lookup("missing", request), null);
  assert.equal(await plugin.lookup("adir", request), null);
  assert.equal(await plugin.lookup("..", request), null);
  assert.equal(await plugin.lookup("../secret", request), null, "traversal reduced to 'secret'");
  assert.equal(await plugin.lookup("%2e%2e", request), null);
  await assert.rejects(plugin.lookup("broken", request), (error: unknown) => {
    assert.ok(error instanceof TokenLookupError);
    assert.equal(error.status, 502);
    return true;
  });
  // Added while running.
  await Deno.writeTextFile(join(tokens, "late"), "h:7");
  assert.deepEqual(await plugin.lookup("late", request), { kind: "tcp", host: "h", port: 7 });
});

Deno.test("tokenFileName() requires a directory at start-up", async () => {
  await using dir = await tempDir();
  const file = join(dir.path, "file");
  await Deno.writeTextFile(file, "");
  await assert.rejects(tokenFileName(file), /TokenFileName plugin requires a directory/);
  await assert.rejects(tokenFileName(join(dir.path, "nope")), ConfigError);
  await assert.rejects(tokenFileName(undefined), ConfigError);
});

Deno.test("unixSocketDirectory() finds sockets by token and refuses traversal", async () => {
  await using dir = await tempDir();
  const sockets = join(dir.path, "sockets");
  await Deno.mkdir(join(sockets, "team"), { recursive: true });
  const servers = [
    await listenUnix(join(sockets, "vnc1")),
    await listenUnix(join(sockets, "team", "vnc2")),
    await listenUnix(join(dir.path, "outside")),
  ];
  try {
    await Deno.writeTextFile(join(sockets, "plain"), "not a socket");
    await Deno.symlink(dir.path, join(sockets, "escape"));
    await Deno.symlink(join(dir.path, "outside"), join(sockets, "linked"));
    const plugin = await unixSocketDirectory(sockets);
    const realSockets = await Deno.realPath(sockets);
    assert.deepEqual(await plugin.lookup("vnc1", request), {
      kind: "unix",
      path: join(realSockets, "vnc1"),
    });
    assert.deepEqual(await plugin.lookup("team/vnc2", request), {
      kind: "unix",
      path: join(realSockets, "team", "vnc2"),
    });
    for (
      const bad of [
        "missing",
        "plain",
        "team",
        "../outside",
        "team/../../outside",
        "escape/outside",
        "linked",
        join(dir.path, "outside"),
        "",
        ".",
      ]
    ) {
      assert.equal(await plugin.lookup(bad, request), null, bad);
    }
    // A socket created while running is found.
    servers.push(await listenUnix(join(sockets, "late")));
    assert.deepEqual(await plugin.lookup("late", request), {
      kind: "unix",
      path: join(realSockets, "late"),
    });
  } finally {
    for (const server of servers) await closeServer(server);
  }
});

Deno.test("unixSocketDirectory() requires a directory at start-up", async () => {
  await using dir = await tempDir();
  const file = join(dir.path, "file");
  await Deno.writeTextFile(file, "");
  await assert.rejects(unixSocketDirectory(file), /requires a directory/);
  await assert.rejects(unixSocketDirectory(undefined), ConfigError);
});
