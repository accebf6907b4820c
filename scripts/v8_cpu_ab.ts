/**
 * CPU time the proxy spends per set-up and per message under each of several `DENO_V8_FLAGS`
 * values, for a fixed amount of work, in alternating rounds: on a shared machine CPU time per unit
 * of work compares better than rates. Each proxy runs as `deno run -A main.ts` with the flags in its
 * environment. Per round and proxy: SETUPS sessions (4 at a time: handshake, one echo, close),
 * then CONNS sessions opened at once that each echo MSGS 32-byte messages one after another.
 *
 * Usage: deno run -A scripts/v8_cpu_ab.ts ROUNDS SETUPS CONNS MSGS FLAGS... (a FLAGS of "-" is
 * the program's own choice: no DENO_V8_FLAGS, main.ts applies its flag)
 *
 * @module
 */
import net from "node:net";

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const [rounds, setups, conns, msgs] = Deno.args.slice(0, 4).map(Number) as [
  number,
  number,
  number,
  number,
];
const variants = Deno.args.slice(4);

const target = net.createServer((s) => {
  s.on("error", () => {});
  s.on("data", (d) => s.write(d));
});
await new Promise<void>((r) => target.listen({ port: 0, host: "127.0.0.1", backlog: 8192 }, r));
const targetPort = (target.address() as net.AddressInfo).port;

interface Proxy {
  flags: string;
  pid: number;
  port: number;
  child: Deno.ChildProcess;
}

async function startProxy(flags: string): Promise<Proxy> {
  const env = Deno.env.toObject();
  delete env.DENO_V8_FLAGS;
  if (flags !== "-") env.DENO_V8_FLAGS = flags;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "127.0.0.1:0", `127.0.0.1:${targetPort}`],
    env,
    clearEnv: true,
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!/proxying from/.test(text)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`proxy exited: ${text}`);
    text += value;
  }
  (async () => {
    while (!(await reader.read()).done);
  })();
  const port = Number(/Listen on [^:]+:(\d+)/.exec(text)![1]);
  return { flags, pid: child.pid, port, child };
}

function cpuMs(pid: number): number {
  const fields = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

const REQUEST = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
const FRAME = new Uint8Array(2 + 4 + 32);
FRAME.set([0x82, 0x80 | 32, 0, 0, 0, 0]);
FRAME.fill(0x44, 6);
const CLOSE = new Uint8Array([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]);

/** An open session: resolves `echo()` when 32 echoed bytes have come back. */
interface Session {
  socket: net.Socket;
  echo(): Promise<void>;
}

function open(port: number): Promise<Session> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.setNoDelay(true);
    let head = "";
    let have = 0;
    let waiter: (() => void) | undefined;
    socket.on("error", reject);
    socket.on("connect", () => socket.write(REQUEST));
    const onHead = (d: Buffer) => {
      head += d.toString("latin1");
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) return;
      socket.off("data", onHead);
      socket.on("data", (chunk: Buffer) => {
        have += chunk.length;
        // 2-byte header + 32 bytes per echoed message.
        while (have >= 34 && waiter) {
          have -= 34;
          const w = waiter;
          waiter = undefined;
          w();
        }
      });
      resolve({
        socket,
        echo: () =>
          new Promise<void>((r) => {
            waiter = r;
            socket.write(FRAME);
          }),
      });
    };
    socket.on("data", onHead);
  });
}

async function closeSession(session: Session): Promise<void> {
  session.socket.write(CLOSE);
  session.socket.end();
  await new Promise<void>((r) => {
    session.socket.once("close", () => r());
    setTimeout(() => {
      session.socket.destroy();
      r();
    }, 3000);
  });
}

async function setupRound(proxy: Proxy): Promise<number> {
  const before = cpuMs(proxy.pid);
  let next = 0;
  const worker = async () => {
    while (next++ < setups) {
      const session = await open(proxy.port);
      await session.echo();
      await closeSession(session);
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  return ((cpuMs(proxy.pid) - before) * 1000) / setups;
}

async function messageRound(proxy: Proxy): Promise<number> {
  const sessions: Session[] = [];
  for (let i = 0; i < conns; i += 100) {
    sessions.push(
      ...await Promise.all(
        Array.from({ length: Math.min(100, conns - i) }, () => open(proxy.port)),
      ),
    );
  }
  await Promise.all(sessions.map((s) => s.echo()));
  const before = cpuMs(proxy.pid);
  await Promise.all(sessions.map(async (s) => {
    for (let m = 0; m < msgs; m++) await s.echo();
  }));
  const perMessage = ((cpuMs(proxy.pid) - before) * 1000) / (conns * msgs);
  for (const s of sessions) s.socket.destroy();
  await new Promise((r) => setTimeout(r, 500));
  return perMessage;
}

function rssMiB(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync(`/proc/${pid}/status`))![1]) / 1024;
}

const proxies: Proxy[] = [];
for (const flags of variants) proxies.push(await startProxy(flags));
const results = new Map<string, { setup: number[]; message: number[] }>();
for (let round = 1; round <= rounds; round++) {
  for (const proxy of round % 2 ? proxies : [...proxies].reverse()) {
    const setup = await setupRound(proxy);
    const message = await messageRound(proxy);
    const entry = results.get(proxy.flags) ?? { setup: [], message: [] };
    entry.setup.push(setup);
    entry.message.push(message);
    results.set(proxy.flags, entry);
    console.log(
      `round ${round} ${proxy.flags}: ${setup.toFixed(0)} µs/set-up, ` +
        `${message.toFixed(1)} µs/message, rss ${rssMiB(proxy.pid).toFixed(1)} MiB`,
    );
  }
}
const median = (v: number[]) => [...v].sort((a, b) => a - b)[(v.length - 1) >> 1]!;
for (const [flags, r] of results) {
  console.log(
    `${flags}: median ${median(r.setup).toFixed(0)} µs/set-up, ` +
      `${median(r.message).toFixed(1)} µs/message`,
  );
}
for (const proxy of proxies) {
  proxy.child.kill("SIGTERM");
  await proxy.child.status;
}
target.close();
