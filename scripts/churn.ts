/**
 * Memory under churn: sequential sessions (clean close, client reset, target reset in turn)
 * against `deno run -A main.ts` as a user runs it, printing RSS and open fds every N sessions.
 * Set DENO_V8_FLAGS to compare V8 flags. Usage: deno run -A scripts/churn.ts [SESSIONS] [EVERY]
 *
 * @module
 */
import net from "node:net";
const MAIN = new URL("../main.ts", import.meta.url).pathname;
const total = Number(Deno.args[0] ?? 3000);
let resetTarget = false;
const target = net.createServer((s) => {
  s.on("error", () => {});
  s.on("data", (d) => {
    if (resetTarget) s.resetAndDestroy();
    else s.write(d);
  });
});
await new Promise<void>((r) => target.listen(0, "127.0.0.1", () => r()));
const tport = (target.address() as net.AddressInfo).port;
const proc = new Deno.Command("deno", {
  args: ["run", "-A", "--unstable-net", MAIN, "127.0.0.1:0", `127.0.0.1:${tport}`],
  stderr: "piped",
  stdout: "null",
}).spawn();
const reader = proc.stderr.pipeThrough(new TextDecoderStream()).getReader();
let port = 0;
let buf = "";
while (!port) {
  const { value } = await reader.read();
  buf += value;
  const m = /Listen on [^:]+:(\d+)/.exec(buf);
  if (m) port = Number(m[1]);
}
(async () => {
  while (!(await reader.read()).done);
})();
const rss = () =>
  Number(/VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync(`/proc/${proc.pid}/status`))![1]) / 1024;
const fds = () => [...Deno.readDirSync(`/proc/${proc.pid}/fd`)].length;
const req =
  "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
const frame = new Uint8Array([0x82, 0x84, 1, 2, 3, 4, 1 ^ 0x61, 2 ^ 0x62, 3 ^ 0x63, 4 ^ 0x64]);
const close = new Uint8Array([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]);
function session(kind: number): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    let got = "";
    let stage = 0;
    s.on("error", () => resolve());
    s.on("close", () => resolve());
    s.on("connect", () => s.write(req));
    s.on("data", (d: Buffer) => {
      got += d.toString("latin1");
      if (stage >= 1 && got.includes("\x88")) {
        s.write(close);
        s.end();
        return;
      }
      if (stage === 0 && got.includes("\r\n\r\n")) {
        stage = 1;
        got = "";
        resetTarget = kind === 2;
        s.write(frame);
      } else if (stage === 1 && (got.includes("abcd") || kind === 2)) {
        stage = 2;
        if (kind === 1) s.resetAndDestroy();
        else if (kind === 0) s.write(close);
      }
    });
    setTimeout(() => {
      s.destroy();
      resolve();
    }, 3000);
  });
}
const start = rss();
const startFds = fds();
console.log(`start rss ${start.toFixed(1)} MiB fds ${startFds}`);
const t0 = Date.now();
for (let i = 1; i <= total; i++) {
  await session(i % 3);
  if (i % Number(Deno.args[1] ?? 1000) === 0) {
    console.log(
      `${i} rss ${rss().toFixed(1)} MiB fds ${fds()} ${((Date.now() - t0) / 1000).toFixed(0)} s`,
    );
  }
}
await new Promise((r) => setTimeout(r, 1000));
console.log(`end rss ${rss().toFixed(1)} MiB fds ${fds()}`);
proc.kill("SIGTERM");
await proc.status;
target.close();
