import assert from "node:assert/strict";
import { connectClient, runMain, startProxy, within } from "./_helpers.ts";
import {
  COUNT_STARTS,
  ECHO_SERVER,
  freePort,
  isAlive,
  linesOf,
  PYTHON,
  waitGone,
  waitUntil,
} from "./_wrap_helpers.ts";
import { buildRebindLibrary, listenPortOf, respawnDelay } from "../src/wrap/mod.ts";
import { StartupError } from "../src/errors.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

async function echoThrough(port: number, text: string): Promise<string> {
  const client = await connectClient(`ws://127.0.0.1:${port}/`);
  try {
    client.ws.send(encoder.encode(text));
    return decoder.decode(await client.receiveBytes(encoder.encode(text).length));
  } finally {
    client.ws.close();
    await within(client.closed, 5000, "client close");
  }
}

Deno.test("respawnDelay() follows upstream's three-starts-in-10-s rule", () => {
  assert.equal(respawnDelay([], 50_000), 0);
  assert.equal(respawnDelay([49_000, 49_500], 50_000), 0);
  // Average 49 000: 9 s of the window left.
  assert.equal(respawnDelay([48_000, 49_000, 50_000], 50_000), 9000);
  // Only the last three count; average 30 000 is more than 10 s ago.
  assert.equal(respawnDelay([49_000, 20_000, 30_000, 40_000], 50_000), 0);
  // Never more than the window.
  assert.equal(respawnDelay([60_000, 60_000, 60_000], 50_000), 10_000);
});

Deno.test("listenPortOf() reads IPv4 and IPv6 listener addresses", () => {
  assert.equal(listenPortOf("127.0.0.1:6080"), 6080);
  assert.equal(listenPortOf("[::]:443"), 443);
  assert.throws(() => listenPortOf("/tmp/websockify.sock"), /TCP listen port/);
});

Deno.test("buildRebindLibrary() compiles once and reuses the cached library", async () => {
  const cacheDir = await Deno.makeTempDir();
  try {
    const path = await buildRebindLibrary({ cacheDir });
    assert.match(path, new RegExp(`^${cacheDir}/rebind-[0-9a-f]{16}\\.so$`));
    const before = (await Deno.stat(path)).mtime?.getTime();
    assert.equal(await buildRebindLibrary({ cacheDir }), path);
    assert.equal((await Deno.stat(path)).mtime?.getTime(), before);
    assert.deepEqual([...Deno.readDirSync(cacheDir)].map((entry) => entry.name), [
      path.slice(cacheDir.length + 1),
    ]);
  } finally {
    await Deno.remove(cacheDir, { recursive: true });
  }
});

Deno.test("buildRebindLibrary() without a compiler says to install gcc", async () => {
  const cacheDir = await Deno.makeTempDir();
  try {
    await assert.rejects(
      buildRebindLibrary({ cacheDir, compilers: ["no-such-compiler-websockify"] }),
      (error: unknown) =>
        error instanceof StartupError && /install gcc/.test(error.message) &&
        /'no-such-compiler-websockify'/.test(error.message),
    );
  } finally {
    await Deno.remove(cacheDir, { recursive: true });
  }
});

Deno.test("rebind.so moves IPv4, dual-stack and v6-only binds of the old port only", async () => {
  const cacheDir = await Deno.makeTempDir();
  try {
    const library = await buildRebindLibrary({ cacheDir });
    const script = `
import socket
def bound(family, kind, host, port, v6only=None):
    s = socket.socket(family, kind)
    if v6only is not None:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
    s.bind((host, port))
    name = s.getsockname()
    s.close()
    return f"{name[0]} {name[1]}"
print(bound(socket.AF_INET, socket.SOCK_STREAM, "0.0.0.0", 6099))
print(bound(socket.AF_INET6, socket.SOCK_STREAM, "::", 6099, 0))
print(bound(socket.AF_INET6, socket.SOCK_STREAM, "::", 6099, 1))
print(bound(socket.AF_INET, socket.SOCK_DGRAM, "127.0.0.1", 6099))
print(bound(socket.AF_INET, socket.SOCK_STREAM, "127.0.0.1", 0).split()[0])
`;
    const newPort = freePort();
    const output = await new Deno.Command(PYTHON, {
      args: ["-c", script],
      env: { LD_PRELOAD: library, REBIND_OLD_PORT: "6099", REBIND_NEW_PORT: String(newPort) },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(output.code, 0, decoder.decode(output.stderr));
    assert.deepEqual(decoder.decode(output.stdout).trim().split("\n"), [
      `127.0.0.1 ${newPort}`,
      `::ffff:127.0.0.1 ${newPort}`,
      `::1 ${newPort}`,
      "127.0.0.1 6099",
      "127.0.0.1",
    ]);
  } finally {
    await Deno.remove(cacheDir, { recursive: true });
  }
});

Deno.test("wrap mode proxies to the command's moved port and stops it on SIGTERM", async () => {
  const listenPort = freePort();
  const proxy = await startProxy([
    `127.0.0.1:${listenPort}`,
    "--",
    PYTHON,
    "-c",
    ECHO_SERVER,
    "0.0.0.0",
    String(listenPort),
  ]);
  let pid = 0;
  try {
    const banner = await proxy.waitFor(/proxying from \S+ to '([^]+?)' \(port (\d+)\)/);
    assert.equal(proxy.port, listenPort);
    const [, , movedPort] = await proxy.waitFor(/echo pid \d+ bound (\S+) (\d+)/);
    assert.equal(movedPort, banner[2]);
    pid = Number((await proxy.waitFor(/echo pid (\d+)/))[1]);
    assert.equal(await echoThrough(proxy.port, "hello through wrap"), "hello through wrap");
    await proxy.waitFor(/connecting to command: '\/usr\/bin\/python3 -c .*' \(port \d+\)/s);
    // The proxy's own environment has no LD_PRELOAD: its port is its own.
    assert.equal(isAlive(pid), true);
  } finally {
    proxy.kill("SIGTERM");
    const status = await within(proxy.status, 10000, "proxy exit");
    assert.equal(status.code, 0, proxy.stderr());
  }
  await waitGone(pid);
});

Deno.test("wrap mode moves an IPv6 dual-stack bind of port 0's actual listen port", async () => {
  await using proxy = await startProxy(["127.0.0.1:0", "--", PYTHON, "-c", ECHO_SERVER, "::"]);
  const [, host] = await proxy.waitFor(/echo pid \d+ bound (\S+) (\d+)/);
  assert.equal(host, "::ffff:127.0.0.1");
  assert.equal(await echoThrough(proxy.port, "over ipv6"), "over ipv6");
});

Deno.test("wrap mode exit: the proxy exits with the command's exit code", async () => {
  const result = await runMain([
    "127.0.0.1:0",
    "--wrap-mode",
    "exit",
    "--",
    PYTHON,
    "-c",
    "exit(3)",
  ]);
  assert.equal(result.code, 3, result.stderr);
  assert.match(result.stderr, /Wrapped command exited \(or daemon\)\. Returned 3/);
});

Deno.test("wrap mode ignore: the proxy keeps running after the command exits", async () => {
  await using proxy = await startProxy([
    "127.0.0.1:0",
    "--wrap-mode",
    "ignore",
    "--",
    PYTHON,
    "-c",
    "exit(0)",
  ]);
  await proxy.waitFor(/Returned 0/);
  // Still accepting: the upgrade succeeds and the dial to the gone command fails with 1011.
  const client = await connectClient(`ws://127.0.0.1:${proxy.port}/`);
  const closed = await within(client.closed, 10000, "1011 close");
  assert.equal(closed.code, 1011);
  let exited = false;
  void proxy.status.then(() => (exited = true));
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(exited, false, proxy.stderr());
});

Deno.test("wrap mode respawn: restarts, then slows down after three fast starts", async () => {
  const directory = await Deno.makeTempDir();
  const starts = `${directory}/starts`;
  try {
    await using proxy = await startProxy([
      "127.0.0.1:0",
      "--wrap-mode",
      "respawn",
      "--",
      PYTHON,
      "-c",
      COUNT_STARTS,
      starts,
      "1",
    ]);
    await proxy.waitFor(/Command respawning too fast/, 10000);
    assert.equal(linesOf(starts).length, 3);
    assert.equal(proxy.stderr().match(/Command respawning too fast/g)?.length, 1);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    assert.equal(linesOf(starts).length, 3, "no restart while throttled");
    // Upstream's rule releases the restart about 10 s after the average of the last starts.
    await waitUntil(() => linesOf(starts).length >= 4, 14000, "the fourth start");
  } finally {
    await Deno.remove(directory, { recursive: true });
  }
});

Deno.test("wrap mode with --unix-listen is a configuration error", async () => {
  const directory = await Deno.makeTempDir();
  try {
    const result = await runMain([
      "--unix-listen",
      `${directory}/socket`,
      "--",
      PYTHON,
      "-c",
      "exit(0)",
    ]);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /Wrap mode cannot be combined with --unix-listen/);
  } finally {
    await Deno.remove(directory, { recursive: true });
  }
});

Deno.test("wrap mode with a missing program fails at start-up with exit code 1", async () => {
  const result = await runMain(["127.0.0.1:0", "--", "/nonexistent/websockify-program"]);
  assert.equal(result.code, 1, result.stderr);
  assert.match(result.stderr, /Cannot run the wrapped command '\/nonexistent\/websockify-program'/);
});

Deno.test("wrap mode: a killed proxy takes the command with it", async () => {
  const proxy = await startProxy(["127.0.0.1:0", "--", PYTHON, "-c", ECHO_SERVER, "0.0.0.0"]);
  const pid = Number((await proxy.waitFor(/echo pid (\d+)/))[1]);
  try {
    assert.equal(isAlive(pid), true);
    proxy.kill("SIGKILL");
    await within(proxy.status, 5000, "proxy exit");
    await waitGone(pid, 5000);
  } finally {
    if (isAlive(pid)) Deno.kill(pid, "SIGKILL");
  }
});
