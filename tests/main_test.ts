import assert from "node:assert/strict";
import { VERSION } from "../src/cli.ts";
import { V8_FLAGS } from "../src/ops/v8_flags.ts";
import { connectClient, runMain, startEcho, startProxy, within } from "./_helpers.ts";

const encoder = new TextEncoder();

/** Every option of the OPTIONS table in src/cli.ts, plus the built-in help and version. */
const ALL_FLAGS = [
  "-h, --help",
  "--version",
  "-v, --verbose",
  "--traffic",
  "--record <FILE>",
  "--log-file <FILE>",
  "--syslog <SERVER>",
  "--legacy-syslog",
  "-D, --daemon",
  "--run-once",
  "--timeout <N>",
  "--idle-timeout <N>",
  "--cert <CERT>",
  "--key <KEY>",
  "--key-password <PASSWORD>",
  "--ssl-only",
  "--ssl-target",
  "--ssl-target-ca <FILE>",
  "--ssl-target-insecure",
  "--verify-client",
  "--cafile <FILE>",
  "--ssl-version <VERSION>",
  "--ssl-ciphers <LIST>",
  "--unix-listen <FILE>",
  "--unix-listen-mode <MODE>",
  "-6, --prefer-ipv6",
  "--unix-target <FILE>",
  "--web <DIR>",
  "--web-auth",
  "--file-only",
  "--wrap-mode <MODE>",
  "--target-config <FILE>",
  "--token-plugin <CLASS>",
  "--token-source <ARG>",
  "--host-token",
  "--auth-plugin <CLASS>",
  "--auth-source <ARG>",
  "--origin <LIST>",
  "--heartbeat <N>",
  "--inactivity-timeout <N>",
  "--strict-binary",
  "--permessage-deflate",
  "--connect-timeout <N>",
  "--header-timeout <N>",
  "--max-message-size <BYTES>",
  "--workers <N>",
  "--metrics <[HOST:]PORT>",
  "--max-connections <N>",
  "--max-connections-per-ip <N>",
  "--log-format <FORMAT>",
  "--trusted-proxy <LIST>",
  "--proxy-protocol",
  "--reuse-port",
  "--shutdown-delay <N>",
  // Programs over stdio.
  "--stdio",
  "--stdio-grace <N>",
  "--stdio-env-pass <LIST>",
  "--stdio-text",
  "--max-forks <N>",
];

function assertNoStackTrace(stderr: string): void {
  assert.doesNotMatch(stderr, /^\s+at /m, `stack trace in:\n${stderr}`);
  assert.doesNotMatch(stderr, /Uncaught|Stack backtrace|\.ts:\d+:\d+/, stderr);
}

Deno.test("main.ts --help exits 0 and lists every option", async () => {
  const { code, stdout, stderr } = await runMain(["--help"]);
  assert.equal(code, 0, stderr);
  assert.equal(stderr, "");
  assert.match(stdout, /^Usage: websockify \[options\]/);
  const flagsInHelp = new Set(
    stdout.split("\n").map((line) => /^\s{2}(-\S.*?)(?:\s{2,}|$)/.exec(line)?.[1]).filter(
      (flags): flags is string => flags !== undefined,
    ),
  );
  for (const flags of ALL_FLAGS) assert.ok(flagsInHelp.has(flags), `--help lacks '${flags}'`);
  assert.equal(flagsInHelp.size, ALL_FLAGS.length, `unexpected options: ${[...flagsInHelp]}`);
  // Defaults and choices are shown.
  assert.match(stdout, /--ssl-version <VERSION>[\s\S]*choices: "default",\s+"tlsv1_1"/);
  assert.match(stdout, /--connect-timeout <N>[\s\S]*default: 10/);
});

Deno.test("deno task start accepts its V8 flags (--version exits 0); compile bakes in the same", async () => {
  // The README's run command: its DENO_V8_FLAGS must be flags this V8 knows (V8 refuses to
  // start otherwise).
  const config = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url))) as {
    tasks: Record<string, string>;
  };
  const flags = config.tasks.start!.match(/DENO_V8_FLAGS=(\S+)/)?.[1];
  assert.equal(flags, V8_FLAGS);
  assert.ok(config.tasks.compile!.includes(` --v8-flags=${flags} `), "compile task's --v8-flags");
  // The libc dialer needs FFI (src/targets/libc_dial.ts); without it connects can starve.
  for (const task of ["start", "compile"]) {
    assert.match(config.tasks[task]!, / --allow-ffi /, `${task} task grants --allow-ffi`);
  }
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["task", "start", "--version"],
    cwd: new URL("..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(output.stderr);
  assert.equal(output.code, 0, stderr);
  assert.doesNotMatch(stderr, /did not recognize flag/);
  assert.match(new TextDecoder().decode(output.stdout), new RegExp(VERSION.replaceAll(".", "\\.")));
});

Deno.test("main.ts -h prints the same help as --help", async () => {
  const [short, long] = await Promise.all([runMain(["-h"]), runMain(["--help"])]);
  assert.equal(short.code, 0);
  assert.equal(short.stdout, long.stdout);
});

Deno.test("main.ts --version exits 0 and prints the version", async () => {
  const { code, stdout, stderr } = await runMain(["--version"]);
  assert.equal(code, 0, stderr);
  assert.equal(stdout, `${VERSION}\n`);
  assert.match(VERSION, /^\d+\.\d+\.\d+/);
  assert.equal(stderr, "");
});

Deno.test("main.ts exits 2 with one error line and the help hint on a usage error", async () => {
  const cases: [string[], string][] = [
    [["6080"], "websockify: error: Too few arguments"],
    [["6080", "host:5900", "extra"], "websockify: error: Too many arguments"],
    [["6080", "host:x"], "websockify: error: Error parsing target port: 'x'"],
    [["--legacy-syslog", "6080", "h:1"], "websockify: error: You must use --syslog to use"],
    [["--heartbeat", "soon", "6080", "h:1"], "websockify: error: --heartbeat takes a number"],
  ];
  const results = await Promise.all(cases.map(([argv]) => runMain(argv)));
  cases.forEach(([argv, start], index) => {
    const { code, stdout, stderr } = results[index] as Awaited<ReturnType<typeof runMain>>;
    assert.equal(code, 2, `${argv}: ${stderr}`);
    assert.equal(stdout, "");
    const lines = stderr.split("\n");
    assert.equal(lines.length, 3, `${argv}: ${JSON.stringify(stderr)}`);
    assert.ok(lines[0]?.startsWith(start), `${argv}: ${lines[0]}`);
    assert.equal(lines[1], "Try 'websockify --help' for the options.");
    assert.equal(lines[2], "");
    assertNoStackTrace(stderr);
  });
});

Deno.test("main.ts exits 2 on an unknown option", async () => {
  const { code, stdout, stderr } = await runMain(["--no-such-option", "6080", "h:1"]);
  assert.equal(code, 2);
  assert.equal(stdout, "");
  assert.equal(
    stderr,
    "websockify: error: Unknown option '--no-such-option'\n" +
      "Try 'websockify --help' for the options.\n",
  );
});

Deno.test("main.ts exits 1 with one clear line when the port is already in use", async () => {
  const holder = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (holder.addr as Deno.NetAddr).port;
  try {
    const { code, stdout, stderr } = await runMain([`127.0.0.1:${port}`, "127.0.0.1:5900"]);
    assert.equal(code, 1, stderr);
    assert.equal(stdout, "");
    // Regression: the listener's error event used to add a second "Listener error: ..." line.
    assert.equal(
      stderr,
      `websockify: error: Address 127.0.0.1:${port} is already in use: ` +
        "stop the other process or choose another port\n",
    );
  } finally {
    holder.close();
  }
});

Deno.test("main.ts exits 1 with one clear line when the listen address is not local", async () => {
  // 192.0.2.1 is TEST-NET-1 (RFC 5737): never configured on this machine.
  const { code, stdout, stderr } = await runMain(["192.0.2.1:0", "127.0.0.1:5900"]);
  assert.equal(code, 1, stderr);
  assert.equal(stdout, "");
  assert.equal(
    stderr,
    "websockify: error: Cannot listen on 192.0.2.1:0: the address is not on this machine; " +
      "check the listen host\n",
  );
});

Deno.test("main.ts exits 1 with one clear line when the --unix-listen directory is missing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "websockify-main-" });
  try {
    const path = `${dir}/missing/ws.sock`;
    const { code, stdout, stderr } = await runMain(["--unix-listen", path, "127.0.0.1:5900"]);
    assert.equal(code, 1, stderr);
    assert.equal(stdout, "");
    assert.equal(
      stderr,
      `websockify: error: Cannot listen on '${path}': its directory does not exist; ` +
        "create it or choose another --unix-listen path\n",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("main.ts -6 with an empty listen host binds :: and takes IPv6 and IPv4 clients", async () => {
  await using echo = startEcho();
  await using proxy = await startProxy(["-6", ":0", `127.0.0.1:${echo.port}`]);
  assert.match(proxy.address, /^\[::\]:\d+$/, proxy.stderr());
  await proxy.waitFor(/proxying from \[::\]:\d+ to 127\.0\.0\.1:\d+/);
  for (const host of ["[::1]", "127.0.0.1"]) {
    const client = await connectClient(`ws://${host}:${proxy.port}/`);
    client.ws.send(encoder.encode(`via ${host}`));
    assert.deepEqual(await client.next(), encoder.encode(`via ${host}`));
    client.ws.close();
    await within(client.closed, 5000, `close via ${host}`);
  }
  await proxy.waitFor(/^::1 - - \[.*\] ::1: Plain non-SSL/m);
  await proxy.waitFor(/^127\.0\.0\.1 - - \[.*\] 127\.0\.0\.1: Plain non-SSL/m);
});

Deno.test("main.ts without -6 binds 0.0.0.0 for an empty listen host", async () => {
  await using echo = startEcho();
  await using proxy = await startProxy(["0", `127.0.0.1:${echo.port}`]);
  assert.match(proxy.address, /^0\.0\.0\.0:\d+$/, proxy.stderr());
});

Deno.test("main.ts proxies to an IPv6 target given as [::1]:port", async () => {
  const listener = Deno.listen({ hostname: "::1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const serving = (async () => {
    for await (const conn of listener) void conn.readable.pipeTo(conn.writable).catch(() => {});
  })().catch(() => {});
  try {
    await using proxy = await startProxy(["127.0.0.1:0", `[::1]:${port}`]);
    await proxy.waitFor(new RegExp(`proxying from 127\\.0\\.0\\.1:\\d+ to \\[::1\\]:${port}`));
    const client = await connectClient(`ws://127.0.0.1:${proxy.port}/`);
    const payload = encoder.encode("over IPv6");
    client.ws.send(payload);
    assert.deepEqual(await client.next(), payload);
    await proxy.waitFor(new RegExp(`connecting to: \\[::1\\]:${port}`));
    client.ws.close(1000);
    assert.equal((await within(client.closed, 5000, "close")).code, 1000);
  } finally {
    listener.close();
    await serving;
  }
});
