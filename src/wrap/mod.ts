/**
 * Wrap mode (`websockify [options] PORT -- COMMAND`): runs COMMAND with `rebind.so` preloaded so
 * its bind() of the listen port lands on a free loopback port, proxies to that port, and
 * supervises the command per `--wrap-mode` (`exit`, `ignore`, `respawn`).
 *
 * Differences from upstream, on purpose: IPv6 binds are moved too; in `exit` mode the proxy
 * exits with the command's exit code (upstream exits 0); the LD_PRELOAD variables go into the
 * command's environment only; the command gets SIGTERM, then SIGKILL, when the proxy stops, and
 * SIGTERM from the kernel if the proxy dies without stopping it.
 *
 * @module
 */

import type { Config } from "../config.ts";
import { ConfigError, errorMessage, StartupError } from "../errors.ts";
import { getLog, type Log } from "../ops/log.ts";
import type { Target } from "../types.ts";
import { buildRebindLibrary, type RebindOptions } from "./rebind.ts";

export { buildRebindLibrary, REBIND_C, type RebindOptions } from "./rebind.ts";

/** How long the command gets to exit after SIGTERM before it is killed. */
export const STOP_GRACE_MS = 3000;

/** Upstream's respawn rule: the last three starts must average at least this long ago. */
const RESPAWN_WINDOW_MS = 10_000;

/** What to do when the command exits (`--wrap-mode`). */
export type WrapMode = "exit" | "ignore" | "respawn";

/** Options of {@link CommandWrapper}. */
export interface CommandWrapperOptions {
  /** Program and arguments. */
  readonly command: readonly string[];
  /** `--wrap-mode`. */
  readonly mode: WrapMode;
  /** Absolute path of the built `rebind.so`. */
  readonly library: string;
  /** The loopback port the command's bind is moved to. */
  readonly targetPort: number;
  /** @default getLog("wrap") */
  readonly log?: Log;
}

/**
 * Milliseconds to wait before respawning: zero unless the last three starts average less than
 * 10 s before `now`, as upstream's `poll()` decides ("Command respawning too fast").
 */
export function respawnDelay(startTimes: readonly number[], now: number): number {
  if (startTimes.length < 3) return 0;
  const last = startTimes.slice(-3);
  const average = last.reduce((sum, time) => sum + time, 0) / last.length;
  return Math.min(RESPAWN_WINDOW_MS, Math.max(0, Math.ceil(average + RESPAWN_WINDOW_MS - now)));
}

/** The port of a listener address such as `127.0.0.1:6080` or `[::]:6080`. */
export function listenPortOf(address: string): number {
  const port = Number(/:(\d+)$/.exec(address)?.[1] ?? NaN);
  if (!Number.isInteger(port) || port <= 0 || port > 65535) {
    throw new ConfigError(
      `Wrap mode needs a TCP listen port, and '${address}' has none: give [host:]port to listen on`,
    );
  }
  return port;
}

/** A wrapped command: where sessions go, and the supervised process. */
export class CommandWrapper {
  /** Where sessions are proxied: `127.0.0.1:<targetPort>`. */
  readonly target: Target;
  /** `'<command line>' (port N)`, for the banner and the per-connection log line. */
  readonly description: string;
  readonly #options: CommandWrapperOptions;
  readonly #log: Log;
  readonly #commandLine: string;
  readonly #startTimes: number[] = [];
  #child: Deno.ChildProcess | undefined;
  #listenPort = 0;
  #onExit: ((code: number) => void) | undefined;
  #exitCode: number | undefined;
  #stopping = false;
  #respawnTimer: ReturnType<typeof setTimeout> | undefined;

  /** Prepares (does not start) the command; see {@link prepareWrap}. */
  constructor(options: CommandWrapperOptions) {
    this.#options = options;
    this.#log = options.log ?? getLog("wrap");
    this.#commandLine = options.command.join(" ");
    this.target = { kind: "tcp", host: "127.0.0.1", port: options.targetPort };
    this.description = `'${this.#commandLine}' (port ${options.targetPort})`;
  }

  /** In `exit` mode, the command's exit code once it has exited by itself. */
  get exitCode(): number | undefined {
    return this.#exitCode;
  }

  /** Process id of the running command, if any. */
  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /**
   * Starts the command with its binds of `listenAddress`'s port moved to the target port. In
   * `exit` mode `onExit` is called with the exit code when the command exits by itself. Throws
   * {@link StartupError} when the command cannot be run.
   */
  start(listenAddress: string, onExit?: (code: number) => void): void {
    this.#listenPort = listenPortOf(listenAddress);
    this.#onExit = onExit;
    this.#spawn();
  }

  /** Stops supervising and ends the command: SIGTERM, then SIGKILL after `graceMs`. */
  async stop(graceMs: number = STOP_GRACE_MS): Promise<void> {
    this.#stopping = true;
    clearTimeout(this.#respawnTimer);
    const child = this.#child;
    if (child === undefined) return;
    signal(child, "SIGTERM");
    const timer = setTimeout(() => {
      this.#log.warn(`'${this.#commandLine}' did not exit within ${graceMs} ms: killing it`);
      signal(child, "SIGKILL");
    }, graceMs);
    await child.status;
    clearTimeout(timer);
  }

  #spawn(): void {
    const [program = "", ...args] = this.#options.command;
    const preload = Deno.env.get("LD_PRELOAD");
    this.#log.info(`Starting '${this.#commandLine}'`);
    this.#startTimes.push(Date.now());
    if (this.#startTimes.length > 3) this.#startTimes.shift();
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(program, {
        args,
        // Only the command's environment: the proxy itself must not load rebind.so.
        env: {
          LD_PRELOAD: preload ? `${this.#options.library}:${preload}` : this.#options.library,
          REBIND_OLD_PORT: String(this.#listenPort),
          REBIND_NEW_PORT: String(this.#options.targetPort),
          REBIND_PARENT_PID: String(Deno.pid),
        },
        stdin: "inherit",
        stdout: "inherit",
        stderr: "inherit",
      }).spawn();
    } catch (error) {
      throw new StartupError(
        `Cannot run the wrapped command '${program}': ${
          errorMessage(error)
        }; check the command after '--'`,
      );
    }
    this.#child = child;
    void child.status.then((status) => this.#exited(child, status.code));
  }

  #exited(child: Deno.ChildProcess, code: number): void {
    if (this.#child === child) this.#child = undefined;
    if (this.#stopping) return;
    this.#log.info(`Wrapped command exited (or daemon). Returned ${code}`);
    if (this.#options.mode === "exit") {
      this.#exitCode = code;
      this.#onExit?.(code);
    } else if (this.#options.mode === "respawn") {
      this.#scheduleRespawn();
    }
  }

  #scheduleRespawn(): void {
    const delay = respawnDelay(this.#startTimes, Date.now());
    if (delay > 0) {
      this.#log.warn(
        `Command respawning too fast: restarting it in ${(delay / 1000).toFixed(1)} s`,
      );
    }
    this.#respawnTimer = setTimeout(() => {
      if (this.#stopping) return;
      try {
        this.#spawn();
      } catch (error) {
        this.#log.error(errorMessage(error));
        this.#scheduleRespawn();
      }
    }, delay);
  }
}

/** Options of {@link prepareWrap}. */
export interface PrepareWrapOptions extends RebindOptions {
  /** @default getLog("wrap") */
  readonly log?: Log;
}

/**
 * Checks the configuration, builds `rebind.so` and picks the loopback port for wrap mode. Throws
 * {@link ConfigError} for `--unix-listen` (there is no port to move) and {@link StartupError}
 * when `rebind.so` cannot be built.
 */
export async function prepareWrap(
  config: Config,
  options: PrepareWrapOptions = {},
): Promise<CommandWrapper> {
  if (config.target.kind !== "wrap") throw new Error("prepareWrap() needs a wrap target");
  if (config.listen.kind === "unix") {
    throw new ConfigError(
      "Wrap mode cannot be combined with --unix-listen: the command's bind of the listen port is what gets moved, so listen on a TCP [host:]port",
    );
  }
  const library = await buildRebindLibrary(options);
  return new CommandWrapper({
    command: config.target.command,
    mode: config.target.mode,
    library,
    targetPort: freeLoopbackPort(),
    ...(options.log ? { log: options.log } : {}),
  });
}

/** A port free on 127.0.0.1 right now (bind port 0, close); picked once, as upstream. */
function freeLoopbackPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

function signal(child: Deno.ChildProcess, name: Deno.Signal): void {
  try {
    child.kill(name);
  } catch {
    // Already exited.
  }
}
