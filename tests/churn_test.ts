import assert from "node:assert/strict";
import { envWithoutV8Flags, startProxy } from "./_helpers.ts";
import { churn, type ChurnSample, fdCount, rssMiB, startChurnTarget } from "../scripts/churn.ts";

const MiB_AFTER_FIRST_1000 = 30;
const MiB_AFTER_START = 50;

Deno.test({
  name: "memory under churn: 30,000 sequential sessions as users run it (deno run -A main.ts)",
  // About 1.5 min on a loaded 2-core machine; each session is bounded by 3 s.
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
      console.log(trail);
      const first = samples[0]!;
      const last = samples.at(-1)!;
      assert.equal(last.sessions, 30000);
      assert.equal(last.failed, 0, `sessions that did not end as expected; ${trail}`);
      assert.ok(last.rssMiB <= first.rssMiB + MiB_AFTER_FIRST_1000, `RSS after 1,000: ${trail}`);
      assert.ok(last.rssMiB <= startRss + MiB_AFTER_START, `RSS above the start: ${trail}`);
      // The last session's sockets close a moment after its client has seen the close.
      const deadline = Date.now() + 5000;
      while (fdCount(proxy.pid) > startFds && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.ok(fdCount(proxy.pid) <= startFds, `fds back to ${startFds}: ${trail}`);
    } finally {
      await target.close();
    }
  },
});
