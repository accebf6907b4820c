/**
 * `--workers N`: N processes accept on one TCP port. The first process binds (port 0 resolves
 * there) with `SO_REUSEPORT` and forks N - 1 copies of itself through `node:cluster`; each copy
 * binds the same port with `SO_REUSEPORT`, so the kernel spreads new connections over all of
 * them. Deno's `node:cluster` does not share listening handles (a worker's port 0 would be a port
 * of its own), hence the explicit port handed down in the environment.
 *
 * @module
 */

import cluster, { type Worker } from "node:cluster";
import type { Log } from "./log.ts";

/** Environment variable carrying the bound port to forked workers. */
const PORT_VARIABLE = "WEBSOCKIFY_WORKER_PORT";

/** What this process is in a `--workers` group. */
export type WorkerRole =
  | { readonly kind: "primary" }
  | { readonly kind: "worker"; readonly port: number; readonly index: number };

/** Tells a forked worker (with the port to bind) from the first process. */
export function workerRole(): WorkerRole {
  if (cluster.isPrimary) return { kind: "primary" };
  const port = Number(Deno.env.get(PORT_VARIABLE));
  return { kind: "worker", port, index: cluster.worker?.id ?? 0 };
}

/** The forked workers of a primary. */
export interface WorkerGroup {
  /** Asks every worker to shut down (SIGTERM) and resolves when all have exited. */
  stop(): Promise<void>;
}

/**
 * Forks `count` workers that bind `port` (with `env` added to their environment). A worker that dies while the group is running is
 * logged and not replaced (the other processes keep serving).
 */
export function forkWorkers(
  count: number,
  port: number,
  log: Log,
  env: Readonly<Record<string, string>> = {},
): WorkerGroup {
  const workers = new Set<Worker>();
  const exits: Promise<void>[] = [];
  let stopping = false;
  for (let index = 0; index < count; index++) {
    const worker = cluster.fork({ ...env, [PORT_VARIABLE]: String(port) });
    workers.add(worker);
    exits.push(
      new Promise((resolve) => {
        worker.on("exit", (code: number | null, signal: string | null) => {
          workers.delete(worker);
          if (!stopping) {
            log.error(
              `Worker process ${worker.process.pid} exited (${signal ?? `code ${code}`}): ` +
                "the other processes keep serving",
            );
          }
          resolve();
        });
      }),
    );
  }
  return {
    async stop() {
      stopping = true;
      for (const worker of workers) {
        // Deno.kill, not worker.process.kill(): the latter ends the worker at once in Deno
        // 2.9.6 (exit by signal, its SIGTERM listener never gets to close its sessions).
        const pid = worker.process.pid;
        try {
          if (pid !== undefined) Deno.kill(pid, "SIGTERM");
        } catch {
          // Already gone.
        }
      }
      await Promise.all(exits);
    },
  };
}
