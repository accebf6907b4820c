import assert from "node:assert/strict";
import type { LogRecord } from "@logtape/logtape";
import { formatLogDate, formatRecord, formatSyslog, peerHost } from "../src/ops/log.ts";
import { escapeFrame } from "../src/session/record.ts";
import {
  connectClient,
  type ProxyProcess,
  runMain,
  startEcho,
  startProxy,
  within,
} from "./_helpers.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function record(
  text: string,
  options: { level?: LogRecord["level"]; peer?: string; timestamp?: number } = {},
): LogRecord {
  return {
    category: ["websockify", "test"],
    level: options.level ?? "info",
    message: ["", text, ""],
    rawMessage: text,
    timestamp: options.timestamp ?? Date.UTC(2026, 10, 21, 8, 19, 28, 345),
    properties: options.peer === undefined ? {} : { peer: options.peer },
  };
}

/** Opens one session through `proxy`, sends a message, gets it back and closes with 1000. */
async function oneSession(proxy: ProxyProcess): Promise<void> {
  const client = await connectClient(`ws://127.0.0.1:${proxy.port}/`);
  client.ws.send(encoder.encode("ping"));
  assert.deepEqual(await client.next(), encoder.encode("ping"));
  client.ws.close(1000);
  await within(client.closed, 5000, "client close");
}

/** Collects datagrams from `listener` until `done` is called. */
function collectDatagrams(listener: Deno.DatagramConn): {
  lines: string[];
  waitFor(pattern: RegExp, ms?: number): Promise<string>;
  done: Promise<void>;
} {
  const lines: string[] = [];
  const waiters = new Set<() => void>();
  const done = (async () => {
    try {
      for await (const [data] of listener) {
        lines.push(decoder.decode(data));
        for (const waiter of waiters) waiter();
      }
    } catch {
      // Listener closed.
    }
  })();
  const waitFor = (pattern: RegExp, ms = 10000) =>
    within(
      new Promise<string>((resolve) => {
        const check = () => {
          const line = lines.find((item) => pattern.test(item));
          if (line === undefined) return;
          waiters.delete(check);
          resolve(line);
        };
        waiters.add(check);
        check();
      }),
      ms,
      `datagram ${pattern}; got:\n${lines.join("\n")}`,
    );
  return { lines, waitFor, done };
}

Deno.test("formatLogDate() formats like Python's log_date_time_string in local time", () => {
  assert.equal(formatLogDate(new Date(2026, 10, 21, 8, 19, 28)), "21/Nov/2026 08:19:28");
  assert.equal(formatLogDate(new Date(2025, 0, 2, 3, 4, 5)), "02/Jan/2025 03:04:05");
  assert.equal(formatLogDate(new Date(1999, 11, 31, 23, 59, 59, 999)), "31/Dec/1999 23:59:59");
  const months = Array.from({ length: 12 }, (_, month) => formatLogDate(new Date(2026, month, 1)));
  assert.deepEqual(
    months.map((text) => text.slice(3, 6)),
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"],
  );
});

Deno.test("formatRecord() prints server lines bare and request lines in upstream's form", () => {
  assert.equal(formatRecord(record("WebSocket server settings:")), "WebSocket server settings:");
  const timestamp = new Date(2026, 10, 21, 8, 19, 28).getTime();
  assert.equal(
    formatRecord(record("connecting to: h:1", { peer: "127.0.0.1:40000", timestamp })),
    "127.0.0.1 - - [21/Nov/2026 08:19:28] 127.0.0.1: connecting to: h:1",
  );
  assert.equal(
    formatRecord(
      record("Plain non-SSL (ws://) WebSocket connection", { peer: "[::1]:1", timestamp }),
    ),
    "::1 - - [21/Nov/2026 08:19:28] ::1: Plain non-SSL (ws://) WebSocket connection",
  );
  // A template placeholder-like text is not interpreted.
  assert.equal(formatRecord(record("path {peer} {0}")), "path {peer} {0}");
});

Deno.test("peerHost() takes the host of ip:port and [v6]:port, and keeps socket paths", () => {
  const cases: [string, string][] = [
    ["127.0.0.1:40000", "127.0.0.1"],
    ["[::1]:40000", "::1"],
    ["[2001:db8::1]:443", "2001:db8::1"],
    ["/run/websockify.sock", "/run/websockify.sock"],
    ["unknown", "unknown"],
    ["::1", "::1"],
    ["example.com:80", "example.com"],
  ];
  for (const [peer, host] of cases) assert.equal(peerHost(peer), host, peer);
});

Deno.test("formatSyslog() builds RFC 5424 and legacy BSD datagrams with LOG_USER priorities", () => {
  const options = { legacy: false, hostname: "box", pid: 4242 };
  assert.equal(
    formatSyslog(record("hello"), options),
    "<14>1 2026-11-21T08:19:28Z box websockify 4242 - - hello",
  );
  const levels: [LogRecord["level"], number][] = [
    ["debug", 15],
    ["info", 14],
    ["warning", 12],
    ["error", 11],
    ["fatal", 10],
  ];
  for (const [level, priority] of levels) {
    assert.match(formatSyslog(record("x", { level }), options), new RegExp(`^<${priority}>1 `));
    assert.equal(
      formatSyslog(record("x", { level }), { ...options, legacy: true }),
      `<${priority}>websockify[4242]: x`,
    );
  }
  assert.equal(
    formatSyslog(record("line one\nline two\r\nthree"), { ...options, legacy: true }),
    "<14>websockify[4242]: line one line two three",
  );
  const long = formatSyslog(record("x"), { ...options, hostname: "h".repeat(300) });
  assert.equal(long, `<14>1 2026-11-21T08:19:28Z ${"h".repeat(255)} websockify 4242 - - x`);
  // Request lines keep their peer prefix.
  assert.match(
    formatSyslog(record("msg", { peer: "10.0.0.1:5" }), options),
    /^<14>1 2026-11-21T08:19:28Z box websockify 4242 - - 10\.0\.0\.1 - - \[.*\] 10\.0\.0\.1: msg$/,
  );
});

Deno.test("escapeFrame() matches Python's unicode_escape with quotes escaped", () => {
  const cases: [number[] | string, string][] = [
    ["Hello, world!", "Hello, world!"],
    [" ~", " ~"],
    ["\\", "\\\\"],
    ["'", "\\'"],
    ['"', '"'],
    ["\t\n\r", "\\t\\n\\r"],
    [[0x00, 0x01, 0x1f, 0x7f], "\\x00\\x01\\x1f\\x7f"],
    [[0x80, 0xab, 0xff], "\\x80\\xab\\xff"],
    [[0x0b, 0x0c, 0x08, 0x07], "\\x0b\\x0c\\x08\\x07"],
    [[], ""],
  ];
  for (const [input, expected] of cases) {
    const bytes = typeof input === "string" ? encoder.encode(input) : new Uint8Array(input);
    assert.equal(escapeFrame(bytes), expected, JSON.stringify(input));
  }
  // Every byte value: printable ASCII stays, everything else is escaped, hex is lower case.
  const all = escapeFrame(Uint8Array.from({ length: 256 }, (_, index) => index));
  assert.doesNotMatch(all, /\\x[0-9a-f]*[A-F]/);
  // 95 printable bytes (backslash and quote among them) and \t \n \r are not \x-escaped.
  assert.equal(all.match(/\\x[0-9a-f]{2}/g)?.length, 256 - 95 - 3);
});

Deno.test("--log-file gets the same lines as stderr", async () => {
  const dir = await Deno.makeTempDir({ prefix: "websockify-log-" });
  try {
    const file = `${dir}/ws.log`;
    await using echo = startEcho();
    const proxy = await startProxy(["--log-file", file, "127.0.0.1:0", `127.0.0.1:${echo.port}`]);
    try {
      await oneSession(proxy);
      await proxy.waitFor(/connecting to: 127\.0\.0\.1:\d+/);
    } finally {
      await proxy[Symbol.asyncDispose]();
    }
    const stderr = proxy.stderr();
    const logged = await Deno.readTextFile(file);
    assert.match(logged, /^WebSocket server settings:\n {2}- Listen on 127\.0\.0\.1:\d+\n/);
    assert.match(logged, /127\.0\.0\.1 - - \[.*\] 127\.0\.0\.1: Plain non-SSL \(ws:\/\/\)/);
    assert.match(logged, /Got SIGTERM: closing sessions and exiting/);
    assert.equal(logged, stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("-v adds debug lines that are absent without it", async () => {
  await using echo = startEcho();
  const debugLines = /Client closed connection|Closed target/;
  {
    await using proxy = await startProxy(["-v", "127.0.0.1:0", `127.0.0.1:${echo.port}`]);
    await oneSession(proxy);
    await proxy.waitFor(/127\.0\.0\.1: 127\.0\.0\.1:\d+: Client closed connection \(code 1000\)/);
    await proxy.waitFor(/Closed target \(client\)/);
  }
  {
    await using proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${echo.port}`]);
    await oneSession(proxy);
    // A second session proves the first one's end has been fully logged by now.
    await oneSession(proxy);
    await proxy.waitFor(/(connecting to: 127\.0\.0\.1:\d+[\s\S]*){2}/);
    assert.doesNotMatch(proxy.stderr(), debugLines, proxy.stderr());
  }
});

Deno.test("--syslog host:port sends RFC 5424 datagrams over UDP", async () => {
  const listener = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const received = collectDatagrams(listener);
  try {
    await using echo = startEcho();
    await using proxy = await startProxy([
      "--syslog",
      `127.0.0.1:${port}`,
      "127.0.0.1:0",
      `127.0.0.1:${echo.port}`,
    ]);
    const pid = proxy.pid;
    const header = `<14>1 \\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ \\S+ websockify ${pid} - - `;
    await received.waitFor(new RegExp(`^${header}WebSocket server settings:$`));
    await received.waitFor(new RegExp(`^${header} {2}- Listen on 127\\.0\\.0\\.1:${proxy.port}$`));
    await oneSession(proxy);
    await received.waitFor(
      new RegExp(`^${header}127\\.0\\.0\\.1 - - \\[.*\\] 127\\.0\\.0\\.1: connecting to: `),
    );
    const line = await received.waitFor(/WebSocket server settings/);
    const time = new Date(line.split(" ")[1] as string).getTime();
    assert.ok(Math.abs(Date.now() - time) < 60_000, line);
  } finally {
    listener.close();
    await received.done;
  }
});

Deno.test("--legacy-syslog sends the BSD header", async () => {
  const listener = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const received = collectDatagrams(listener);
  try {
    await using proxy = await startProxy([
      "--syslog",
      `127.0.0.1:${port}`,
      "--legacy-syslog",
      "127.0.0.1:0",
      "127.0.0.1:9",
    ]);
    await received.waitFor(
      new RegExp(`^<14>websockify\\[${proxy.pid}\\]: WebSocket server settings:$`),
    );
    await received.waitFor(
      new RegExp(
        `^<14>websockify\\[${proxy.pid}\\]:  {2}- proxying from 127\\.0\\.0\\.1:\\d+ to 127\\.0\\.0\\.1:9$`,
      ),
    );
  } finally {
    listener.close();
    await received.done;
  }
});

Deno.test("--syslog /path sends datagrams to a unix socket", async () => {
  const dir = await Deno.makeTempDir({ prefix: "websockify-syslog-" });
  const path = `${dir}/log.sock`;
  const listener = Deno.listenDatagram({ transport: "unixpacket", path });
  const received = collectDatagrams(listener);
  try {
    await using echo = startEcho();
    await using proxy = await startProxy([
      "--syslog",
      path,
      "127.0.0.1:0",
      `127.0.0.1:${echo.port}`,
    ]);
    const header = `<14>1 \\S+Z \\S+ websockify ${proxy.pid} - - `;
    await received.waitFor(new RegExp(`^${header}WebSocket server settings:$`));
    await oneSession(proxy);
    await received.waitFor(new RegExp(`^${header}127\\.0\\.0\\.1 - - .*Plain non-SSL`));
  } finally {
    listener.close();
    await received.done;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("escapeFrame() equals Python's output for every byte value", async () => {
  const script = "import sys\n" +
    "s = bytes(range(256)).decode('latin-1').encode('unicode_escape').decode()\n" +
    'sys.stdout.write(s.replace("\'", "\\\\\'"))';
  const output = await new Deno.Command("/usr/bin/python3", { args: ["-c", script] }).output();
  assert.equal(output.code, 0, decoder.decode(output.stderr));
  const all = Uint8Array.from({ length: 256 }, (_, index) => index);
  assert.equal(escapeFrame(all), decoder.decode(output.stdout));
});

Deno.test("--log-file that cannot be opened exits 1 with one clear line, no stack trace", async () => {
  const dir = await Deno.makeTempDir({ prefix: "websockify-log-" });
  try {
    const file = `${dir}/missing/ws.log`;
    const { code, stdout, stderr } = await runMain(["--log-file", file, "127.0.0.1:0", "h:1"]);
    assert.equal(code, 1, stderr);
    assert.equal(stdout, "");
    assert.match(
      stderr,
      new RegExp(
        `^websockify: error: Cannot open log file '${file}': .*: check the --log-file path\n$`,
      ),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
