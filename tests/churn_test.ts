import assert from "node:assert/strict";
import { envWithoutV8Flags, startProxy } from "./_helpers.ts";
import { churn, type ChurnSample, fdCount, rssMiB, startChurnTarget } from "../scripts/churn.ts";

const MiB_AFTER_FIRST_1000 = 30;
const MiB_AFTER_START = 50;
const EPOLL_FDS = 2;

Deno.test({
  name: "memory under churn: 30,000 sequential sessions as users run it (deno run -A main.ts)",
  // 3 min on a 2-core machine loaded by other work, about 75 s on a quiet one; each session is
  // bounded by 10 s.
  sanitizeResources: false,
  async fn() {
    const target = await startChurnTarget();
    // No V8 flags in the environment: the proxy applies its own (src/ops/v8_flags.ts).
    await using proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${target.port}`], {
      deno: ["-A"],
      env: envWithoutV8Flags(),
      clearEnv: true,
    });
    try {
      const startRss = rssMiB(proxy.pid);
      const startFds = fdCount(proxy.pid);
      const samples: ChurnSample[] = [];
      await churn(proxy.pid, proxy.port, target, 30000, 1000, (sample) => samples.push(sample));
      const trail = `start ${startRss.toFixed(1)} MiB, ${startFds} fds; ` +
        samples.map((s) => `${s.sessions}: ${s.rssMiB.toFixed(1)} MiB ${s.fds} fds`).join(", ");
      console.log(trail, `failed ${JSON.stringify(samples.at(-1)?.failed)}`);
      const first = samples[0]!;
      const last = samples.at(-1)!;
      assert.equal(last.sessions, 30000);
      // Every session ends as its kind says; on a machine loaded to swapping a few may not be
      // over within 10 s (at most 0.1 %), but none may be cut short.
      const closedEarly = Object.entries(last.failed).filter(([key]) => key.endsWith("early"));
      assert.deepEqual(closedEarly, [], `sessions closed early; ${trail}`);
      const timeouts = Object.values(last.failed).reduce((sum, count) => sum + count, 0);
      assert.ok(timeouts <= 30, `sessions not over within 10 s: ${timeouts}; ${trail}`);
      assert.ok(last.rssMiB <= first.rssMiB + MiB_AFTER_FIRST_1000, `RSS after 1,000: ${trail}`);
      assert.ok(last.rssMiB <= startRss + MiB_AFTER_START, `RSS above the start: ${trail}`);
      // The last session's sockets close a moment after its client has seen the close. The
      // epoll loop's two descriptors (its epoll set and eventfd, src/ops/epoll.ts) open with the
      // listener when the loop accepts, so startFds counts them; EPOLL_FDS allows for a proxy
      // whose loop opens with the first session (`node:net` accepting, --proxy-protocol).
      const settled = startFds + EPOLL_FDS;
      const deadline = Date.now() + 5000;
      while (fdCount(proxy.pid) > settled && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.ok(fdCount(proxy.pid) <= settled, `fds back to ${settled}: ${trail}`);
    } finally {
      await target.close();
    }
  },
});
