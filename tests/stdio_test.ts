/**
 * `--stdio`: a program per WebSocket session over its stdin/stdout, with real programs (`cat`,
 * `env`, `bash`, `bc`) and, side by side, Debian's `websocketd`.
 */

import assert from "node:assert/strict";
import {
  connectClient,
  randomBytes,
  runMain,
  startProxy,
  type TestClient,
  within,
} from "./_helpers.ts";
import { freePort } from "./_balancer_helpers.ts";
import { parseArgs } from "../src/cli.ts";

const decoder = new TextDecoder();

function url(port: number, path = "/"): string {
  return `ws://127.0.0.1:${port}${path}`;
}

/** Sends one message. */
function send(client: TestClient, data: Uint8Array | string): void {
  client.ws.send(data);
}

/** Pids of the live (non-zombie) and zombie children of `pid`. */
function childrenOf(pid: number): { live: number[]; zombies: number[] } {
  const live: number[] = [];
  const zombies: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    let stat: string;
    try {
      stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
    } catch {
      continue;
    }
    // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (Number(fields[1]) !== pid) continue;
    (fields[0] === "Z" ? zombies : live).push(Number(entry.name));
  }
  return { live, zombies };
}

async function waitUntil(check: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${ms} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

Deno.test("--stdio cat echoes exact bytes, a 1 MiB message included", async () => {
  await using proxy = await startProxy(["--stdio", "127.0.0.1:0", "--", "cat"]);
  const client = await connectClient(url(proxy.port));
  const small = randomBytes(1000);
  send(client, small);
  assert.deepEqual(await client.receiveBytes(small.length), small);
  const big = randomBytes(1024 * 1024);
  send(client, big);
  assert.deepEqual(await client.receiveBytes(big.length, 20000), big);
  // Binary messages, none larger than one read.
  assert.ok(client.messageSizes.every((size) => size <= 64 * 1024));
  client.ws.close(1000);
  await within(client.closed, 10000, "close");
});

Deno.test("--stdio gives the program the CGI variables and nothing else of the proxy's", async () => {
  await using proxy = await startProxy(
    ["--stdio", "--stdio-env-pass", "PATH,STDIO_PASSED", "127.0.0.1:0", "--", "env"],
    { env: { STDIO_SECRET: "proxy-only", STDIO_PASSED: "yes" } },
  );
  const client = await connectClient(url(proxy.port, "/some/path?a=1&b=two"), {
    headers: { "X-Custom-Thing": "hello" },
  });
  let output = "";
  const closed = client.closed;
  for (;;) {
    const message = await client.next(10000).catch(() => undefined);
    if (message === undefined) break;
    output += typeof message === "string" ? message : decoder.decode(message);
  }
  const env = Object.fromEntries(
    output.trim().split("\n").map((
      line,
    ) => [line.slice(0, line.indexOf("=")), line.slice(line.indexOf("=") + 1)]),
  );
  assert.equal(env["REMOTE_ADDR"], "127.0.0.1");
  assert.match(env["REMOTE_PORT"] ?? "", /^\d+$/);
  assert.equal(env["QUERY_STRING"], "a=1&b=two");
  assert.equal(env["PATH_INFO"], "/some/path");
  assert.equal(env["SERVER_NAME"], "127.0.0.1");
  assert.equal(env["SERVER_PORT"], String(proxy.port));
  assert.equal(env["HTTP_X_CUSTOM_THING"], "hello");
  assert.equal(env["HTTP_HOST"], `127.0.0.1:${proxy.port}`);
  assert.equal(env["STDIO_PASSED"], "yes");
  assert.equal(env["STDIO_SECRET"], undefined);
  assert.equal(env["HOME"], undefined);
  assert.deepEqual(await closed, { code: 1000, reason: "Program exited" });
});

Deno.test("--stdio closes 1011 with the exit code, 1000 on exit 0; stderr is logged", async () => {
  await using proxy = await startProxy([
    "--stdio",
    "127.0.0.1:0",
    "--",
    "bash",
    "-c",
    'read line; echo "got $line"; echo "to the log" >&2; [ "$line" = ok ] && exit 0; exit 3',
  ]);
  const failing = await connectClient(url(proxy.port));
  send(failing, "bad\n");
  assert.equal(decoder.decode(await failing.next() as Uint8Array), "got bad\n");
  const end = await within(failing.closed, 10000, "close after exit 3");
  assert.equal(end.code, 1011);
  assert.match(end.reason, /exit code 3/);
  await proxy.waitFor(/Program stderr: to the log/);

  const passing = await connectClient(url(proxy.port));
  send(passing, "ok\n");
  assert.equal(decoder.decode(await passing.next() as Uint8Array), "got ok\n");
  assert.equal((await within(passing.closed, 10000, "close after exit 0")).code, 1000);
});

Deno.test("--stdio: a program that stops reading still closes with its exit code", async () => {
  await using proxy = await startProxy(["--stdio", "127.0.0.1:0", "--", "head", "-c", "10"]);
  const client = await connectClient(url(proxy.port));
  // head exits after 10 bytes; the rest of the 4 MiB meets a closed pipe and is dropped.
  for (let index = 0; index < 4; index++) send(client, randomBytes(1024 * 1024));
  assert.equal((await client.receiveBytes(10)).length, 10);
  assert.deepEqual(await within(client.closed, 15000, "close"), {
    code: 1000,
    reason: "Program exited",
  });
});

Deno.test("--stdio: a client close sends SIGTERM, SIGKILL after the grace; all reaped", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const marker = `${dir}/terminated`;
    await using proxy = await startProxy([
      "--stdio",
      "--stdio-grace",
      "1",
      "127.0.0.1:0",
      "--",
      "bash",
      "-c",
      // The first session's program notes SIGTERM and exits; with IGNORE it must be killed.
      `if [ "$QUERY_STRING" = ignore ]; then trap '' TERM; else trap 'echo term > ${marker}; exit 0' TERM; fi; echo ready; while true; do sleep 0.1; done`,
    ]);
    const client = await connectClient(url(proxy.port, "/?trap"));
    assert.equal(decoder.decode(await client.next() as Uint8Array), "ready\n");
    client.ws.close(1000);
    await within(client.closed, 10000, "close");
    await waitUntil(
      () => {
        try {
          return Deno.readTextFileSync(marker) === "term\n";
        } catch {
          return false;
        }
      },
      10000,
      "the program's SIGTERM trap",
    );

    const stubborn = await connectClient(url(proxy.port, "/?ignore"));
    assert.equal(decoder.decode(await stubborn.next() as Uint8Array), "ready\n");
    stubborn.ws.close(1000);
    await within(stubborn.closed, 10000, "close");
    // bash ignores SIGTERM; SIGKILL after 1 s; no child of the proxy is left, not even a zombie.
    await waitUntil(
      () => {
        const children = childrenOf(proxy.pid);
        return children.live.length === 0 && children.zombies.length === 0;
      },
      10000,
      "programs killed and reaped",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--stdio: a proxy shutdown closes clients 1001 and kills and reaps programs", async () => {
  const proxy = await startProxy([
    "--stdio",
    "--stdio-grace",
    "1",
    "127.0.0.1:0",
    "--",
    "bash",
    "-c",
    "trap '' TERM; echo ready; while true; do sleep 0.1; done",
  ]);
  const client = await connectClient(url(proxy.port));
  assert.equal(decoder.decode(await client.next() as Uint8Array), "ready\n");
  const program = childrenOf(proxy.pid).live;
  assert.equal(program.length, 1);
  proxy.kill("SIGTERM");
  assert.equal((await within(client.closed, 10000, "close on shutdown")).code, 1001);
  await within(proxy.status, 15000, "proxy exit");
  // The program was killed before the proxy exited (not orphaned).
  assert.equal(childrenOf(1).live.includes(program[0] as number), false);
  assert.throws(() => Deno.readTextFileSync(`/proc/${program[0]}/stat`));
});

Deno.test("--stdio-text: one text message per line, a newline after each message (bc)", async () => {
  await using proxy = await startProxy([
    "--stdio",
    "--stdio-text",
    "127.0.0.1:0",
    "--",
    "bc",
    "-q",
  ]);
  const client = await connectClient(url(proxy.port));
  send(client, "1+2");
  assert.equal(await client.next(), "3");
  send(client, "6*7");
  send(client, "2^10");
  assert.equal(await client.next(), "42");
  assert.equal(await client.next(), "1024");
  send(client, "quit");
  assert.equal((await within(client.closed, 10000, "close after quit")).code, 1000);
});

Deno.test("--max-forks: a further upgrade gets 503 while the limit's programs run", async () => {
  await using proxy = await startProxy(["--stdio", "--max-forks", "1", "127.0.0.1:0", "--", "cat"]);
  const first = await connectClient(url(proxy.port));
  await assert.rejects(connectClient(url(proxy.port)), /503/);
  first.ws.close(1000);
  await within(first.closed, 10000, "close");
  await waitUntil(() => childrenOf(proxy.pid).live.length === 0, 10000, "cat reaped");
  // The slot is free once the proxy has the program's exit status and its last stderr, a moment
  // after /proc shows it gone: a 503 until then, for at most 10 s, is right.
  const second = await connectFreeSlot(url(proxy.port), 10000);
  send(second, "again");
  assert.equal(decoder.decode(await second.next() as Uint8Array), "again");
  second.ws.close(1000);
});

Deno.test("--stdio-text matches websocketd's messages for the same input", async () => {
  const input = ["first line", "", "ünïcödé", "last"];
  await using proxy = await startProxy(["--stdio", "--stdio-text", "127.0.0.1:0", "--", "cat"]);
  const ours = await exchange(url(proxy.port), input);
  const port = freePort();
  const websocketd = new Deno.Command("/usr/bin/websocketd", {
    args: [`--port=${port}`, "--address=127.0.0.1", "cat"],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  try {
    await waitForPort(port);
    const theirs = await exchange(`ws://127.0.0.1:${port}/`, input);
    assert.deepEqual(ours, theirs);
    assert.deepEqual(ours, input);
  } finally {
    websocketd.kill("SIGTERM");
    await websocketd.stderr.cancel();
    await websocketd.status;
  }
});

/** Connects, trying again while the proxy answers 503 (a program still being reaped). */
async function connectFreeSlot(address: string, ms: number): ReturnType<typeof connectClient> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await connectClient(address);
    } catch (error) {
      if (!/503/.test(String(error)) || Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}

async function exchange(address: string, lines: string[]): Promise<(string | Uint8Array)[]> {
  const client = await connectClient(address);
  const received = [];
  for (const line of lines) {
    send(client, line);
    received.push(await client.next());
  }
  client.ws.close(1000);
  await within(client.closed, 10000, "close");
  return received;
}

async function waitForPort(port: number): Promise<void> {
  const deadline = Date.now() + 10000;
  for (;;) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

Deno.test("--stdio usage errors exit 2 with one clear line", async () => {
  const cases: [string[], RegExp][] = [
    [["--stdio", "6080"], /--stdio needs a command after '--'/],
    [["--stdio", "6080", "--"], /--stdio needs a command after '--'/],
    [["--stdio", "6080", "localhost:5900", "--", "cat"], /--stdio takes no target address/],
    [
      ["--stdio", "--token-plugin", "TokenFile", "6080", "--", "cat"],
      /cannot be combined with --token-plugin/,
    ],
    [
      ["--stdio", "--stdio-grace", "-1", "6080", "--", "cat"],
      /--stdio-grace takes a number of seconds/,
    ],
    [["--stdio", "--max-forks", "x", "6080", "--", "cat"], /--max-forks takes a whole number/],
    [["--stdio-text", "6080", "localhost:5900"], /You must use --stdio to use --stdio-text/],
  ];
  for (const [args, pattern] of cases) {
    const result = await runMain(args);
    assert.equal(result.code, 2, `${args.join(" ")}: ${result.stderr}`);
    // One error line, then the house hint to --help.
    const [line, hint] = result.stderr.trim().split("\n");
    assert.match(line ?? "", pattern);
    assert.match(hint ?? "", /websockify --help/);
  }
});

Deno.test("parseArgs: --stdio settings, defaults, and a program path resolved from the cwd", () => {
  const parsed = parseArgs(
    [
      "--stdio",
      "--stdio-env-pass",
      "PATH, LANG",
      "--max-forks",
      "3",
      "8080",
      "--",
      "bin/x",
      "-a",
    ],
    { cwd: "/srv" },
  );
  assert.equal(parsed.kind, "run");
  if (parsed.kind !== "run") return;
  assert.deepEqual(parsed.config.target, { kind: "stdio", command: ["/srv/bin/x", "-a"] });
  assert.deepEqual(parsed.config.stdio, {
    command: ["/srv/bin/x", "-a"],
    grace: 5,
    envPass: ["PATH", "LANG"],
    text: false,
    maxForks: 3,
  });
  const bare = parseArgs(["--stdio", "8080", "--", "cat"], { cwd: "/srv" });
  assert.deepEqual(bare.kind === "run" && bare.config.stdio?.command, ["cat"]);
});
