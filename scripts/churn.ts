/**
 * Memory under churn: sequential sessions (clean close, client reset, target reset in turn)
 * against `deno run -A main.ts` as a user runs it, printing RSS and open fds every N sessions.
 * The proxy gets this environment; set DENO_V8_FLAGS to compare V8 flags (without it the proxy
 * applies its own, src/ops/v8_flags.ts). Usage: deno run -A scripts/churn.ts [SESSIONS] [EVERY]
 *
 * The session loop is exported for tests/churn_test.ts.
 *
 * @module
 */
import net from "node:net";

/** An echo target that resets the connection instead, while `reset` is set. */
export interface ChurnTarget {
  readonly port: number;
  reset: boolean;
  close(): Promise<void>;
}

/** Starts the target on 127.0.0.1, port 0. */
export async function startChurnTarget(): Promise<ChurnTarget> {
  const sockets = new Set<net.Socket>();
  const target: ChurnTarget = {
    port: 0,
    reset: false,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    s.on("error", () => {});
    s.on("data", (d) => {
      if (target.reset) s.resetAndDestroy();
      else s.write(d);
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  (target as { port: number }).port = (server.address() as net.AddressInfo).port;
  return target;
}

const REQUEST = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
/** A masked binary frame carrying "abcd". */
const FRAME = new Uint8Array([0x82, 0x84, 1, 2, 3, 4, 1 ^ 0x61, 2 ^ 0x62, 3 ^ 0x63, 4 ^ 0x64]);
/** A masked close frame, code 1000. */
const CLOSE = new Uint8Array([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]);

/** How a session ends: 0 clean close, 1 client reset, 2 target reset. */
export type SessionKind = 0 | 1 | 2;

/** How a session went: as expected, or closed early, or not over within 10 s. */
export type SessionOutcome = "ok" | "closed early" | "timeout";

/**
 * One session through the proxy on `port`: handshake, one echoed message, then the end `kind`
 * picks.
 */
export function churnSession(
  port: number,
  target: ChurnTarget,
  kind: SessionKind,
): Promise<SessionOutcome> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    let got = "";
    let stage = 0;
    const done = (outcome: SessionOutcome) => {
      clearTimeout(timer);
      resolve(outcome);
    };
    // Generous: on a loaded machine a session can take seconds.
    const timer = setTimeout(() => {
      s.destroy();
      done("timeout");
    }, 10000);
    const closed = () => done(stage >= 2 ? "ok" : "closed early");
    s.on("error", closed);
    s.on("close", closed);
    s.on("connect", () => s.write(REQUEST));
    s.on("data", (d: Buffer) => {
      got += d.toString("latin1");
      if (stage >= 1 && got.includes("\x88")) {
        // The proxy's close frame (after ours, or after the target's reset).
        stage = 2;
        s.write(CLOSE);
        s.end();
        return;
      }
      if (stage === 0 && got.includes("\r\n\r\n")) {
        stage = 1;
        got = "";
        target.reset = kind === 2;
        s.write(FRAME);
      } else if (stage === 1 && (got.includes("abcd") || kind === 2)) {
        if (kind === 1) {
          stage = 2;
          s.resetAndDestroy();
        } else if (kind === 0) s.write(CLOSE);
      }
    });
  });
}

/** RSS of `pid` in MiB. */
export function rssMiB(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
}

/** Open file descriptors of `pid`. */
export function fdCount(pid: number): number {
  return [...Deno.readDirSync(`/proc/${pid}/fd`)].length;
}

/** One reading after `sessions` sessions. */
export interface ChurnSample {
  readonly sessions: number;
  readonly rssMiB: number;
  readonly fds: number;
  readonly seconds: number;
  /** Sessions so far that did not complete as expected, by kind and outcome ("2 timeout"). */
  readonly failed: Readonly<Record<string, number>>;
}

/**
 * Runs `total` sequential sessions (kinds in turn) against the proxy `pid` listening on `port`,
 * calling `onSample` every `every` sessions.
 */
export async function churn(
  pid: number,
  port: number,
  target: ChurnTarget,
  total: number,
  every: number,
  onSample: (sample: ChurnSample) => void,
): Promise<void> {
  const t0 = performance.now();
  const failed: Record<string, number> = {};
  for (let i = 1; i <= total; i++) {
    const kind = (i % 3) as SessionKind;
    const outcome = await churnSession(port, target, kind);
    if (outcome !== "ok") failed[`${kind} ${outcome}`] = (failed[`${kind} ${outcome}`] ?? 0) + 1;
    if (i % every === 0) {
      const seconds = (performance.now() - t0) / 1000;
      onSample({
        sessions: i,
        rssMiB: rssMiB(pid),
        fds: fdCount(pid),
        seconds,
        failed: { ...failed },
      });
    }
  }
}

if (import.meta.main) {
  const MAIN = new URL("../main.ts", import.meta.url).pathname;
  const total = Number(Deno.args[0] ?? 3000);
  const every = Number(Deno.args[1] ?? 1000);
  const target = await startChurnTarget();
  const proc = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "127.0.0.1:0", `127.0.0.1:${target.port}`],
    stderr: "piped",
    stdout: "null",
  }).spawn();
  const reader = proc.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let port = 0;
  let buf = "";
  while (!port) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`The proxy exited:\n${buf}`);
    buf += value;
    const m = /Listen on [^:]+:(\d+)/.exec(buf);
    if (m) port = Number(m[1]);
  }
  (async () => {
    while (!(await reader.read()).done);
  })();
  const v8 = /DENO_V8_FLAGS=([^\0]*)/.exec(Deno.readTextFileSync(`/proc/${proc.pid}/environ`));
  console.log(`proxy DENO_V8_FLAGS ${v8?.[1] ?? "(none)"}`);
  console.log(`start rss ${rssMiB(proc.pid).toFixed(1)} MiB fds ${fdCount(proc.pid)}`);
  await churn(proc.pid, port, target, total, every, (s) => {
    console.log(
      `${s.sessions} rss ${s.rssMiB.toFixed(1)} MiB fds ${s.fds} ${s.seconds.toFixed(0)} s` +
        (Object.keys(s.failed).length ? ` failed ${JSON.stringify(s.failed)}` : ""),
    );
  });
  await new Promise((r) => setTimeout(r, 1000));
  console.log(`end rss ${rssMiB(proc.pid).toFixed(1)} MiB fds ${fdCount(proc.pid)}`);
  proc.kill("SIGTERM");
  await proc.status;
  await target.close();
}
