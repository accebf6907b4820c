/**
 * A program per WebSocket session (`--stdio`, websocketd's job): the program's stdin gets the
 * bytes of the client's messages, its stdout goes back as messages, its stderr to the log line
 * by line. It is a {@link TargetConnection}, so the pump, heartbeat, limits and logging drive it
 * like any socket. Closing it sends SIGTERM, then SIGKILL after the grace period; every program
 * is reaped, and {@link stopPrograms} ends a shutdown with none left.
 *
 * @module
 */

import type { Log } from "../ops/log.ts";
import type { RequestInfo, TargetConnection } from "../types.ts";

/** `--stdio` settings. */
export interface StdioConfig {
  /** The program and its arguments (after `--`); run without a shell. */
  readonly command: readonly string[];
  /** `--stdio-grace`: seconds between SIGTERM and SIGKILL. @default 5 */
  readonly grace: number;
  /** `--stdio-env-pass`: names copied from the proxy's environment. */
  readonly envPass: readonly string[];
  /** `--stdio-text`: line mode (one text message per stdout line). @default false */
  readonly text: boolean;
  /** `--max-forks`: programs running at once; 0 means no limit. @default 0 */
  readonly maxForks: number;
}

/** Programs not yet reaped, with their exit. */
const running = new Map<ProgramConnection, Promise<unknown>>();

/** How many programs are running (not yet reaped). */
export function runningPrograms(): number {
  return running.size;
}

/**
 * Closes every program still running (SIGTERM, SIGKILL after the grace) and resolves once all
 * have been reaped: the last step of a shutdown, so no program outlives the proxy.
 */
export async function stopPrograms(): Promise<void> {
  while (running.size > 0) {
    for (const program of running.keys()) program.close();
    await Promise.all([...running.values()]);
  }
}

/** The CGI-style environment of a session's program (as websocketd). */
export function programEnv(
  request: RequestInfo,
  listenPort: number,
  envPass: readonly string[],
): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of envPass) {
    const value = Deno.env.get(name);
    if (value !== undefined) env[name] = value;
  }
  for (const [name, value] of request.headers) {
    env[`HTTP_${name.toUpperCase().replaceAll("-", "_")}`] = value;
  }
  const colon = request.peer.lastIndexOf(":");
  env["REMOTE_ADDR"] = colon > 0 ? request.peer.slice(0, colon).replace(/^\[|\]$/g, "") : "";
  env["REMOTE_PORT"] = colon > 0 ? request.peer.slice(colon + 1) : "";
  const question = request.path.indexOf("?");
  env["PATH_INFO"] = question >= 0 ? request.path.slice(0, question) : request.path;
  env["QUERY_STRING"] = question >= 0 ? request.path.slice(question + 1) : "";
  const host = request.headers.get("host") ?? "";
  env["SERVER_NAME"] = host.replace(/:\d+$/, "");
  env["SERVER_PORT"] = String(listenPort);
  return env;
}

/** Options of {@link ProgramConnection.spawn}. */
export interface SpawnOptions {
  readonly config: StdioConfig;
  readonly env: Record<string, string>;
  /** The session's logger (stderr lines go there). */
  readonly log: Log;
}

const NEWLINE = 0x0a;

/** A running program as a target connection. */
export class ProgramConnection implements TargetConnection {
  readonly lines: boolean;
  readonly #child: Deno.ChildProcess;
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #status: Promise<Deno.CommandStatus>;
  readonly #grace: number;
  #exit: Deno.CommandStatus | undefined;
  #pending: Uint8Array = new Uint8Array(0);
  #closed = false;
  #stdinBroken = false;

  private constructor(child: Deno.ChildProcess, options: SpawnOptions) {
    this.#child = child;
    this.lines = options.config.text;
    this.#grace = options.config.grace;
    this.#reader = child.stdout.getReader();
    this.#writer = child.stdin.getWriter();
    const stderr = logLines(child.stderr, options.log);
    const status = child.status.then(async (status) => {
      this.#exit = status;
      await stderr;
      return status;
    });
    this.#status = status;
    running.set(this, status);
    void status.finally(() => running.delete(this));
  }

  /** Starts the program; throws when it cannot be started (not found, not executable). */
  static spawn(options: SpawnOptions): ProgramConnection {
    const [program, ...args] = options.config.command;
    const child = new Deno.Command(program as string, {
      args,
      clearEnv: true,
      env: options.env,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    return new ProgramConnection(child, options);
  }

  /** The close frame for the client once the program has ended: 1000, or 1011 with its code. */
  endFrame(): { code: number; reason: string } {
    const status = this.#exit;
    if (status === undefined || status.success) return { code: 1000, reason: "Program exited" };
    return status.signal !== null
      ? { code: 1011, reason: `Program killed by ${status.signal}` }
      : { code: 1011, reason: `Program failed: exit code ${status.code}` };
  }

  async read(buffer: Uint8Array): Promise<number | null> {
    if (this.lines) return await this.#readLine(buffer);
    if (this.#pending.length === 0) {
      const chunk = await this.#next();
      if (chunk === undefined) return null;
      this.#pending = chunk;
    }
    return this.#take(buffer, this.#pending.length);
  }

  /** One stdout line per read, without its newline (pieces of the buffer's size if longer). */
  async #readLine(buffer: Uint8Array): Promise<number | null> {
    for (;;) {
      const newline = this.#pending.indexOf(NEWLINE);
      if (newline >= 0 && newline <= buffer.length) {
        const count = this.#take(buffer, newline);
        this.#pending = this.#pending.subarray(1);
        return count;
      }
      if (this.#pending.length >= buffer.length) return this.#take(buffer, buffer.length);
      const chunk = await this.#next();
      if (chunk === undefined) {
        return this.#pending.length > 0 ? this.#take(buffer, this.#pending.length) : null;
      }
      const joined = new Uint8Array(this.#pending.length + chunk.length);
      joined.set(this.#pending);
      joined.set(chunk, this.#pending.length);
      this.#pending = joined;
    }
  }

  #take(buffer: Uint8Array, wanted: number): number {
    const count = Math.min(wanted, buffer.length);
    buffer.set(this.#pending.subarray(0, count));
    this.#pending = this.#pending.subarray(count);
    return count;
  }

  /** The next stdout chunk; at the end of stdout, waits for the program to exit. */
  async #next(): Promise<Uint8Array | undefined> {
    const { value, done } = await this.#reader.read().catch(() => ({
      value: undefined,
      done: true,
    }));
    if (!done && value) return value;
    await this.#status;
    return undefined;
  }

  /**
   * Writes to stdin. Once the program has stopped reading (exited, closed stdin), what the
   * client sends is dropped: the session ends when the program exits, with its exit code.
   */
  async write(data: Uint8Array): Promise<number> {
    if (this.#stdinBroken) return data.length;
    try {
      await this.#writer.ready;
      await this.#writer.write(data);
    } catch {
      this.#stdinBroken = true;
    }
    return data.length;
  }

  async closeWrite(): Promise<void> {
    await this.#writer.close();
  }

  /** SIGTERM now, SIGKILL after the grace period unless it has exited; reaped either way. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#writer.close().catch(() => {});
    this.#reader.cancel().catch(() => {});
    if (this.#exit !== undefined) return;
    this.#signal("SIGTERM");
    const timer = setTimeout(() => this.#signal("SIGKILL"), this.#grace * 1000);
    void this.#status.finally(() => clearTimeout(timer));
  }

  #signal(signal: Deno.Signal): void {
    if (this.#exit !== undefined) return;
    try {
      this.#child.kill(signal);
    } catch {
      // Exited meanwhile.
    }
  }
}

/** Logs each line of `stream` (the program's stderr). */
async function logLines(stream: ReadableStream<Uint8Array>, log: Log): Promise<void> {
  let rest = "";
  try {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      const lines = (rest + text).split("\n");
      rest = lines.pop() ?? "";
      for (const line of lines) log.info(`Program stderr: ${line}`);
    }
  } catch {
    // The stream ended with the program.
  }
  if (rest !== "") log.info(`Program stderr: ${rest}`);
}
