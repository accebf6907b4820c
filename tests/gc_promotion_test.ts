import assert from "node:assert/strict";
import {
  connectClient,
  envWithoutV8Flags,
  randomBytes,
  startEcho,
  startProxy,
  within,
} from "./_helpers.ts";

const SESSIONS = 2000;
const PARALLEL = 4;
/**
 * Bytes promoted to V8's old generation per session, at most. Sessions live a millisecond or so
 * and a scavenge comes every hundred sessions or so, so nearly nothing of a session should survive
 * two of them: measured 75 bytes (140–160 while each connection still had two timers). Each holder
 * found so far kept the whole session until a full GC: an object literal with getters or a WeakMap
 * entry whose value refers to its key (5.2–5.5 KB per session), the listener's connections in a
 * Set (0.9–1.3 KB).
 */
const PROMOTED_PER_SESSION = 512;

/** One short session: handshake, one 16-byte echo, close. */
async function session(url: string): Promise<void> {
  const client = await connectClient(url);
  const payload = randomBytes(16);
  client.ws.send(payload);
  const reply = await client.receiveBytes(payload.length);
  assert.deepEqual(reply, payload);
  client.ws.close();
  await within(client.closed, 10000, "close");
}

/** Sum of `promoted` over the scavenges in `--trace-gc-nvp` output, and how many there were. */
function promotedByScavenges(output: string): { bytes: number; scavenges: number } {
  let bytes = 0;
  let scavenges = 0;
  for (const line of output.split("\n")) {
    if (!line.includes('"gc":"s"')) continue;
    const promoted = /"promoted":(\d+)/.exec(line);
    if (!promoted) continue;
    bytes += Number(promoted[1]);
    scavenges++;
  }
  return { bytes, scavenges };
}

Deno.test({
  name: "a session's objects die young: short sessions leave V8's young generation with nearly " +
    "nothing promoted",
  sanitizeResources: false,
  async fn() {
    await using target = startEcho();
    // V8's default heap (16 MiB semi-spaces), where a short-lived object is promoted only when
    // something keeps it past two scavenges; --trace-gc-nvp prints each GC on stdout.
    await using proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${target.port}`], {
      env: { ...envWithoutV8Flags(), DENO_V8_FLAGS: "--no-optimize-for-size,--trace-gc-nvp" },
      clearEnv: true,
    });
    const url = `ws://127.0.0.1:${proxy.port}/`;
    // Warm up (compilation, pools), then count from here.
    for (let index = 0; index < 100; index++) await session(url);
    const before = proxy.stdout().length;
    let started = 0;
    const deadline = Date.now() + 60_000;
    await Promise.all(Array.from({ length: PARALLEL }, async () => {
      while (started < SESSIONS && Date.now() < deadline) {
        started++;
        await session(url);
      }
    }));
    assert.equal(started, SESSIONS, "sessions within 60 s");
    // The proxy's stdout is read in the background: let the last lines arrive.
    await new Promise((resolve) => setTimeout(resolve, 200));
    const { bytes, scavenges } = promotedByScavenges(proxy.stdout().slice(before));
    const perSession = bytes / SESSIONS;
    console.log(
      `${scavenges} scavenges, ${bytes} bytes promoted, ${perSession.toFixed(0)} per session`,
    );
    assert.ok(scavenges >= 3, `too few scavenges to judge (${scavenges}): raise SESSIONS`);
    assert.ok(
      perSession <= PROMOTED_PER_SESSION,
      `${perSession.toFixed(0)} bytes promoted per session (at most ${PROMOTED_PER_SESSION}): ` +
        "something keeps finished sessions until a full GC; look on the session's path for a " +
        "long-lived Set or Map with a member per connection, a WeakMap value that refers to its " +
        'key, or an object literal with getters (docs/decisions.md, "Set-up: what each ' +
        'connection leaves to the full GC")',
    );
  },
});
