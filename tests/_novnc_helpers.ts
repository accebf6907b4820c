/**
 * @module
 * Process, port, X/VNC and browser helpers for the real-browser end-to-end tests
 * (tests/novnc_test.ts): a bounded child-process handle that can wait for a line of output, a
 * TigerVNC `Xvnc` server on a free display, the proxy under test as a swappable command, a TCP
 * echo server, and headless Debian Chromium driven by `playwright-core`.
 *
 * Every wait here takes a timeout and throws when it expires, so a broken peer fails the test
 * instead of hanging it.
 */

import { chromium } from "playwright-core";
import type { Browser } from "playwright-core";

/** Default bound for one wait (process start, port open, line of output). */
export const WAIT_MS = 15_000;

/** Debian's Chromium; never a browser downloaded by Playwright. */
export const CHROMIUM_PATH = "/usr/bin/chromium";

/** Debian's noVNC web root (package `novnc`). */
export const NOVNC_ROOT = "/usr/share/novnc";

/** Chromium flags for a headless run as root with no network side traffic. */
export const CHROMIUM_ARGS: readonly string[] = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** Resolves `promise`, or rejects with an `Error` naming `what` after `ms` milliseconds. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Returns a TCP port on 127.0.0.1 that was free a moment ago. Only for peers that cannot listen
 * on port 0 and report the bound port (Xvnc, Python websockify); the tiny race is accepted.
 */
export function pickFreePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Waits until 127.0.0.1:`port` accepts a TCP connection; throws after `timeoutMs`. */
export async function waitForPort(port: number, timeoutMs = WAIT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (let attempt = 0; attempt < 1000 && Date.now() < deadline; attempt++) {
    try {
      const connection = await Deno.connect({ hostname: "127.0.0.1", port });
      connection.close();
      return;
    } catch (error) {
      lastError = error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  throw new Error(
    `Port '127.0.0.1:${port}' did not accept connections within ${timeoutMs} ms: ${lastError}`,
  );
}

/** Options for {@linkcode startProcess}. */
export interface StartProcessOptions {
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Working directory. */
  cwd?: string;
}

/** Options for {@linkcode ChildProcess.waitForOutput}. */
export interface WaitForOutputOptions {
  /** How long to wait. @default WAIT_MS */
  timeoutMs?: number;
  /** Match stdout alone instead of stdout and stderr together. @default false */
  stdoutOnly?: boolean;
}

/**
 * A child process whose stdout and stderr are collected (each capped at 1 MiB) and can be
 * waited on line by line. Disposing it sends SIGTERM, then SIGKILL after 3 s, and awaits exit.
 */
export class ChildProcess implements AsyncDisposable {
  /** The command line, for error messages. */
  readonly commandLine: string;
  /** Exit status; resolves once the process has exited. */
  readonly status: Promise<Deno.CommandStatus>;
  #child: Deno.ChildProcess;
  #output = "";
  #stdout = "";
  #exited = false;
  #waiters = new Set<() => void>();
  #readers: Promise<void>[];

  constructor(command: string, args: readonly string[], options: StartProcessOptions = {}) {
    this.commandLine = [command, ...args].join(" ");
    this.#child = new Deno.Command(command, {
      args: [...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: options.env ?? {},
      ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    }).spawn();
    this.#readers = [
      this.#collect(this.#child.stdout, true),
      this.#collect(this.#child.stderr, false),
    ];
    this.status = this.#child.status.then((status) => {
      this.#exited = true;
      this.#notify();
      return status;
    });
  }

  /** Process id. */
  get pid(): number {
    return this.#child.pid;
  }

  /** Everything written so far to stdout and stderr, interleaved by arrival. */
  get output(): string {
    return this.#output;
  }

  /** Everything written so far to stdout alone. */
  get stdout(): string {
    return this.#stdout;
  }

  /**
   * Resolves with the first match of `pattern` in the output (in stdout alone with
   * `stdoutOnly`). Throws when the process exits first or after `timeoutMs` (default
   * {@linkcode WAIT_MS}); the error carries the output so far.
   */
  async waitForOutput(
    pattern: RegExp,
    { timeoutMs = WAIT_MS, stdoutOnly = false }: WaitForOutputOptions = {},
  ): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    // One round per chunk of output, so the count bound is only a backstop to the deadline.
    for (let round = 0; round < 100_000; round++) {
      const match = (stdoutOnly ? this.#stdout : this.#output).match(pattern);
      if (match) return match;
      if (this.#exited) {
        throw new Error(
          `'${this.commandLine}' exited before printing ${pattern}: check its output:\n` +
            this.#output,
        );
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `'${this.commandLine}' did not print ${pattern} within ${timeoutMs} ms: ` +
            `check its output:\n${this.#output}`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, left);
        function done() {
          clearTimeout(timer);
          resolve();
        }
        this.#waiters.add(done);
      });
    }
    throw new Error(`'${this.commandLine}' wrote too many chunks while waiting for ${pattern}`);
  }

  /**
   * Sends SIGTERM, escalates to SIGKILL after `graceMs`, and waits for the exit and (at most
   * `graceMs` more) for the end of the output.
   */
  async stop(graceMs = 3_000): Promise<Deno.CommandStatus> {
    if (!this.#exited) {
      try {
        this.#child.kill("SIGTERM");
      } catch { /* already gone */ }
    }
    let status: Deno.CommandStatus;
    try {
      status = await withTimeout(this.status, graceMs, `'${this.commandLine}' to exit`);
    } catch {
      try {
        this.#child.kill("SIGKILL");
      } catch { /* already gone */ }
      status = await this.status;
    }
    // A grandchild that inherited the pipes could keep them open: do not wait for it forever.
    await withTimeout(Promise.all(this.#readers), graceMs, "output pipes to close").catch(() => {});
    return status;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  async #collect(stream: ReadableStream<Uint8Array>, isStdout: boolean): Promise<void> {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      const text = decoder.decode(chunk, { stream: true });
      if (this.#output.length < 1 << 20) this.#output += text;
      if (isStdout && this.#stdout.length < 1 << 20) this.#stdout += text;
      this.#notify();
    }
  }

  #notify(): void {
    for (const waiter of this.#waiters) waiter();
    this.#waiters.clear();
  }
}

/** A running `Xvnc` server: X display number and RFB port on 127.0.0.1. */
export interface VncServer extends AsyncDisposable {
  /** X display, e.g. `:3`. */
  readonly display: string;
  /** RFB (VNC) port on 127.0.0.1. */
  readonly port: number;
  /** The Xvnc process. */
  readonly process: ChildProcess;
}

/** Options for {@linkcode startXvnc}. */
export interface XvncOptions {
  /** Screen size. @default "800x600" */
  geometry?: string;
  /** Colour depth. @default 24 */
  depth?: number;
  /** Desktop name sent to VNC clients. @default "websockify-e2e" */
  desktop?: string;
}

/**
 * Starts TigerVNC `Xvnc` without VNC authentication on a free X display (chosen by Xvnc itself
 * through `-displayfd`) and a free RFB port on 127.0.0.1; resolves once the port accepts. The
 * port is picked before Xvnc binds it, so a port taken in between is retried (3 attempts).
 */
export async function startXvnc(options: XvncOptions = {}): Promise<VncServer> {
  for (let attempt = 1;; attempt++) {
    try {
      return await startXvncOnce(options, pickFreePort());
    } catch (error) {
      if (attempt >= 3 || !/Address already in use/.test(String(error))) throw error;
    }
  }
}

async function startXvncOnce(options: XvncOptions, port: number): Promise<VncServer> {
  const process = new ChildProcess("Xvnc", [
    "-displayfd",
    "1",
    "-rfbport",
    String(port),
    "-interface",
    "127.0.0.1",
    "-localhost",
    "-nolisten",
    "tcp",
    "-SecurityTypes",
    "None",
    "-geometry",
    options.geometry ?? "800x600",
    "-depth",
    String(options.depth ?? 24),
    "-desktop",
    options.desktop ?? "websockify-e2e",
  ]);
  try {
    // With -displayfd the display number is the first line on stdout.
    const match = await process.waitForOutput(/^(\d+)\n/, { stdoutOnly: true });
    await waitForPort(port);
    const display = `:${match[1]}`;
    return { display, port, process, [Symbol.asyncDispose]: () => process[Symbol.asyncDispose]() };
  } catch (error) {
    await process.stop();
    throw error;
  }
}

/** Runs a short-lived command to completion within `timeoutMs`; throws on a non-zero exit. */
export async function run(
  command: string,
  args: readonly string[],
  options: StartProcessOptions = {},
  timeoutMs = WAIT_MS,
): Promise<string> {
  const process = new ChildProcess(command, args, options);
  let status: Deno.CommandStatus;
  try {
    status = await withTimeout(process.status, timeoutMs, `'${process.commandLine}' to finish`);
  } finally {
    await process.stop();
  }
  if (!status.success) {
    throw new Error(
      `'${process.commandLine}' failed with exit code ${status.code}:\n${process.output}`,
    );
  }
  return process.output;
}

/** Starts the X client `command` on X `display`; dispose the result to stop it. */
export function startXClient(
  display: string,
  command: string,
  args: readonly string[],
): ChildProcess {
  return new ChildProcess(command, ["-display", display, ...args]);
}

/** Fills the root window of X `display` with `colour` (any X colour spec, e.g. `#ff8000`). */
export async function setRootColour(display: string, colour: string): Promise<void> {
  await run("xsetroot", ["-display", display, "-solid", colour]);
}

/** What the proxy under test must do; turned into a command line by a {@linkcode ProxyCommand}. */
export interface ProxySpec {
  /** Target as `host:port`. */
  target: string;
  /** Directory to serve with `--web`. */
  web?: string;
  /** `user:pass` for the BasicHTTPAuth plugin. */
  basicAuth?: string;
  /** Also require auth for plain file requests (`--web-auth`). */
  webAuth?: boolean;
  /** Allowed `Origin` values. */
  origins?: readonly string[];
  /** `--permessage-deflate` (ours only: upstream has no compression). */
  permessageDeflate?: boolean;
}

/** Builds the command line of a proxy; `port` is the port to listen on (0 = let it choose). */
export interface ProxyCommand {
  /** Short name for messages. */
  readonly name: string;
  /** Whether the proxy reports its real port when told to listen on port 0. */
  readonly reportsEphemeralPort: boolean;
  /** Program and arguments. */
  build(spec: ProxySpec, port: number): { command: string; args: string[] };
}

/**
 * Debian's Python websockify 0.10, the reference. It has no `--origin`; an origin list is
 * mapped to its `ExpectOrigin` auth plugin, which cannot be combined with basic auth.
 */
export const PYTHON_WEBSOCKIFY: ProxyCommand = {
  name: "python websockify",
  reportsEphemeralPort: false,
  build(spec, port) {
    const args = ["--verbose"];
    if (spec.web !== undefined) args.push("--web", spec.web);
    if (spec.basicAuth !== undefined && spec.origins !== undefined) {
      throw new Error("Python websockify takes one auth plugin: use basic auth or origins");
    }
    if (spec.basicAuth !== undefined) {
      args.push(
        "--auth-plugin",
        "websockify.auth_plugins.BasicHTTPAuth",
        "--auth-source",
        spec.basicAuth,
      );
    }
    if (spec.origins !== undefined) {
      args.push(
        "--auth-plugin",
        "websockify.auth_plugins.ExpectOrigin",
        "--auth-source",
        spec.origins.join(" "),
      );
    }
    if (spec.webAuth) args.push("--web-auth");
    if (spec.permessageDeflate) throw new Error("Python websockify has no permessage-deflate");
    args.push(`127.0.0.1:${port}`, spec.target);
    return { command: "/usr/bin/websockify", args };
  },
};

/** Our proxy, `main.ts` of this repository, run by the current `deno`. */
export const DENO_WEBSOCKIFY: ProxyCommand = {
  name: "websockify (deno)",
  reportsEphemeralPort: true,
  build(spec, port) {
    const args = [
      "run",
      "--allow-all",
      "--unstable-net",
      new URL("../main.ts", import.meta.url)
        .pathname,
      "--verbose",
    ];
    if (spec.web !== undefined) args.push("--web", spec.web);
    if (spec.basicAuth !== undefined) {
      args.push("--auth-plugin", "BasicHTTPAuth", "--auth-source", spec.basicAuth);
    }
    if (spec.webAuth) args.push("--web-auth");
    if (spec.origins !== undefined) args.push("--origin", spec.origins.join(","));
    if (spec.permessageDeflate) args.push("--permessage-deflate");
    args.push(`127.0.0.1:${port}`, spec.target);
    return { command: Deno.execPath(), args };
  },
};

/** A running proxy and the port it listens on. */
export interface RunningProxy extends AsyncDisposable {
  /** Listening port on 127.0.0.1. */
  readonly port: number;
  /** The proxy process. */
  readonly process: ChildProcess;
}

/**
 * Starts the proxy `proxy` for `spec` and resolves once its banner line
 * `  - Listen on 127.0.0.1:PORT` has appeared and the port accepts connections.
 */
export async function startProxy(proxy: ProxyCommand, spec: ProxySpec): Promise<RunningProxy> {
  const requested = proxy.reportsEphemeralPort ? 0 : pickFreePort();
  const { command, args } = proxy.build(spec, requested);
  const process = new ChildProcess(command, args, { env: { PYTHONUNBUFFERED: "1" } });
  try {
    const match = await process.waitForOutput(/Listen on 127\.0\.0\.1:(\d+)/, {
      timeoutMs: 30_000,
    });
    const port = Number(match[1]);
    if (!(port > 0)) throw new Error(`'${proxy.name}' reported port '${match[1]}'`);
    await waitForPort(port);
    return { port, process, [Symbol.asyncDispose]: () => process[Symbol.asyncDispose]() };
  } catch (error) {
    await process.stop();
    throw error;
  }
}

/** A TCP echo server on 127.0.0.1 (port 0). */
export interface EchoServer extends AsyncDisposable {
  /** Listening port. */
  readonly port: number;
}

/** Starts a TCP server that writes back every byte it reads, on any number of connections. */
export function startEchoServer(): EchoServer {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const connections = new Set<Deno.Conn>();
  const tasks = new Set<Promise<void>>();
  const echo = async (connection: Deno.Conn) => {
    try {
      await connection.readable.pipeTo(connection.writable);
    } catch { /* peer reset; nothing to report */ }
    connections.delete(connection);
  };
  const accepting = (async () => {
    try {
      for await (const connection of listener) {
        connections.add(connection);
        const task = echo(connection);
        tasks.add(task);
        task.finally(() => tasks.delete(task));
      }
    } catch { /* listener closed */ }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    async [Symbol.asyncDispose]() {
      listener.close();
      for (const connection of connections) {
        try {
          connection.close();
        } catch { /* already closed by pipeTo */ }
      }
      await accepting;
      await Promise.allSettled([...tasks]);
    },
  };
}

/** A launched headless Chromium; disposing closes it (and kills it if close hangs). */
export interface HeadlessBrowser extends AsyncDisposable {
  /** The Playwright browser. */
  readonly browser: Browser;
}

/**
 * Launches Debian's Chromium headless through `playwright-core`. Playwright gives every launch
 * a fresh temporary `--user-data-dir` (it refuses one in `args`) and removes it on close.
 */
export async function launchChromium(): Promise<HeadlessBrowser> {
  const browser = await chromium.launch({
    executablePath: CHROMIUM_PATH,
    args: [...CHROMIUM_ARGS],
    headless: true,
    chromiumSandbox: false,
    timeout: 30_000,
  });
  return {
    browser,
    async [Symbol.asyncDispose]() {
      await withTimeout(browser.close(), 10_000, "Chromium to close").catch(() => {
        // close() hung: the browser process is Playwright's child; it dies with the test run.
      });
    },
  };
}
