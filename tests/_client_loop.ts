/**
 * The client loop of the takeover and rolling-restart tests: a new short session every 10 ms
 * (handshake, one exact-bytes echo, close), each one's outcome recorded. Bounded in count and time.
 *
 * @module
 */

import { connectClient, randomBytes, within } from "./_helpers.ts";

/** What the loop saw, once stopped. */
export interface LoopResult {
  /** Sessions started. */
  readonly tried: number;
  /** Start times (`Date.now()`) of the sessions that echoed their bytes and closed cleanly. */
  readonly echoedAt: readonly number[];
  /**
   * Sessions closed with 1001 after their handshake (accepted by a proxy that then stopped):
   * the client is told to come back, nothing was refused.
   */
  readonly goingAway: number;
  /** Everything else, one text each: `handshake: ...` for refused or reset connections. */
  readonly failures: readonly string[];
}

export interface ClientLoop {
  /** Stops starting sessions, waits for the running ones and reports. */
  stop(): Promise<LoopResult>;
}

type Outcome = "echoed" | "going away" | string;

/** One short session: handshake, one echo of `size` random bytes, close. */
async function session(url: string, size: number): Promise<Outcome> {
  let client;
  try {
    client = await connectClient(url);
  } catch (error) {
    return `handshake: ${error instanceof Error ? error.message : String(error)}`;
  }
  try {
    const payload = randomBytes(size);
    client.ws.send(payload);
    const reply = await client.receiveBytes(size, 10000);
    client.ws.close();
    const closed = await within(client.closed, 10000, "close");
    if (closed.code !== 1000 && closed.code !== 1005) return `closed with ${closed.code}`;
    return reply.every((byte, index) => byte === payload[index]) ? "echoed" : "wrong echo";
  } catch (error) {
    const closed = await within(client.closed, 10000, "close after a failure").catch(() => null);
    if (closed?.code === 1001) return "going away";
    client.ws.terminate();
    return `after the handshake: ${error instanceof Error ? error.message : String(error)}`;
  }
}

/**
 * Starts a session on `url` every `intervalMs` (10) until stopped, `maxSessions` have started or
 * `maxMs` have passed, whichever comes first.
 */
export function startClientLoop(
  url: string,
  options: { maxSessions: number; maxMs: number; intervalMs?: number; size?: number },
): ClientLoop {
  const echoedAt: number[] = [];
  const failures: string[] = [];
  const results: Promise<void>[] = [];
  let goingAway = 0;
  let running = true;
  const loop = (async () => {
    const end = Date.now() + options.maxMs;
    for (let index = 0; index < options.maxSessions && running && Date.now() < end; index++) {
      const startedAt = Date.now();
      results.push(
        session(url, options.size ?? 100).then((outcome) => {
          if (outcome === "echoed") echoedAt.push(startedAt);
          else if (outcome === "going away") goingAway++;
          else failures.push(`session ${index} (at ${startedAt}): ${outcome}`);
        }),
      );
      await new Promise((resolve) => setTimeout(resolve, options.intervalMs ?? 10));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      await Promise.all(results);
      echoedAt.sort((a, b) => a - b);
      return { tried: results.length, echoedAt, goingAway, failures };
    },
  };
}
