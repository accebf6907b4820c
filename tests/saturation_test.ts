// With the proxy's core saturated by sessions already echoing, every new session still gets its
// target connection (docs/decisions.md, "Starved connects"): before the libc dialer, 146–348 of
// 1,000 sessions here were closed 1011 "timed out" while the target had accepted them.

import assert from "node:assert/strict";
import { buildLoadgen } from "../scripts/loadgen.ts";
import { pinned, startProxy, within } from "./_helpers.ts";

const decoder = new TextDecoder();

/** Runs `loadgen MODE ARGS` (CPU 1) against a proxy (CPU 0) in front of a loadgen target (CPU 1). */
async function throughProxy(
  mode: string,
  args: string[],
): Promise<{ result: Record<string, number>; log: string }> {
  const loadgen = await buildLoadgen();
  const [targetProgram, ...targetArgs] = [...pinned(1), loadgen, "target"];
  const target = new Deno.Command(targetProgram!, {
    args: targetArgs,
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  try {
    const reader = target.stdout.getReader();
    const first = decoder.decode((await within(reader.read(), 10000, "target port")).value);
    reader.releaseLock();
    const targetPort = JSON.parse(first.split("\n")[0]!).port as number;
    await using proxy = await startProxy(
      ["127.0.0.1:0", `127.0.0.1:${targetPort}`, "--connect-timeout", "5"],
      { prefix: pinned(0) },
    );
    const [program, ...rest] = [...pinned(1), loadgen, mode, `port=${proxy.port}`, ...args];
    const output = await new Deno.Command(program!, { args: rest, stdout: "piped" }).output();
    const result = JSON.parse(decoder.decode(output.stdout).trim().split("\n").at(-1)!);
    return { result, log: proxy.stderr() };
  } finally {
    target.kill("SIGKILL");
    await target.stdout.cancel().catch(() => {});
    await target.status;
  }
}

Deno.test("1,000 sessions all start while the proxy's core is saturated", async () => {
  const { result, log } = await throughProxy("echo", [
    "sessions=1000",
    "window=2000",
    "opentimeout=20000",
    "starttimeout=15000",
    "limit=60000",
  ]);
  assert.equal(result.opened, 1000, JSON.stringify(result));
  assert.equal(result.neverStarted, 0, JSON.stringify(result));
  assert.equal(result.closed, 0, JSON.stringify(result));
  assert.doesNotMatch(log, /Failed to connect/);
});

Deno.test("new sessions open within seconds while 2,000 sessions saturate the proxy", async () => {
  // Before the accept sweep (src/listen/libc_accept.ts) a newcomer could wait 10 s and more.
  const { result } = await throughProxy("newcomer", [
    "busy=2000",
    "window=4000",
    "interval=100",
    "timeout=10000",
    "limit=90000",
  ]);
  assert.equal(result.busyStarted, 2000, JSON.stringify(result));
  assert.ok((result.count ?? 0) >= 5, JSON.stringify(result));
  assert.equal(result.timeouts, 0, JSON.stringify(result));
  assert.equal(result.failures, 0, JSON.stringify(result));
  assert.ok((result.max ?? Infinity) < 5000, JSON.stringify(result));
});
