/**
 * `deno task bench [--quick] [--rounds N] [--workers N] [--no-python] [--no-pin] [--only PARTS]
 * [--compare-v8 FLAGS]...`: measures the
 * proxy against the limit (`Deno.serve` + `Deno.upgradeWebSocket` echoing, discarding or
 * sending, without a proxy: `scripts/bench_roles.ts`), websocketd running `cat` (or the C target
 * over stdio for the one-way rows), the floor (`scripts/floor_proxy.c`: a minimal C proxy, what
 * the kernel's work per message costs any proxy here) and Python websockify when
 * `/usr/bin/websockify` is installed, and prints a markdown table with ratios and the goals of
 * issue 12, a table of how busy the server and the load side were in each test (which side
 * limited each figure), and the load generator's headroom. `--only` takes a comma-separated list
 * of the parts in PARTS.
 * `--compare-v8 FLAGS` (repeatable) adds a proxy column `deno [FLAGS]` started with
 * `DENO_V8_FLAGS=FLAGS` instead of the start task's; `--compare-v8 --no-optimize-for-size` shows
 * V8's default heap policy beside the flag main.ts applies (docs/decisions.md, "Memory under
 * churn: applied", and "V8 flags: what --optimize-for-size costs"); the set-up, one-way and
 * echoing rows note each such column's paired ratio to deno (the median of the rounds' ratios,
 * steadier on a noisy machine than the ratio of the medians). `--rounds N` runs each figure N
 * times instead of 3 (5 for latency, 1 with `--quick`).
 *
 * The load generator and the TCP target are one C program, `scripts/loadgen.c`, compiled at
 * start (`scripts/loadgen.ts`). Servers under test are pinned to CPU 0, the load generator and
 * the TCP target to CPU 1 (`taskset`), so that the two sides do not preempt each other.
 *
 * The parts `cluster` (through HAProxy over 3 instances) and `metrics` (without and with
 * `--metrics`) are in `scripts/bench_cluster.ts` and print tables of their own.
 *
 * Adding a part: write `async function xPart(run: BenchRun)` that adds rows with `run.row()` and
 * fills them with `run.measure()`, and add it to PARTS.
 *
 * @module
 */

import net from "node:net";
import zlib from "node:zlib";
import { clusterPart, metricsPart, sizingLines } from "./bench_cluster.ts";
import { buildFloorProxy, buildLoadgen } from "./loadgen.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const ROLES = new URL("./bench_roles.ts", import.meta.url).pathname;
const PYTHON_WEBSOCKIFY = "/usr/bin/websockify";
const WEBSOCKETD = "/usr/bin/websocketd";

type Json = Record<string, unknown>;

interface Options {
  quick: boolean;
  /** Runs per figure (`--rounds`); undefined: 3, or 1 with --quick. */
  rounds: number | undefined;
  workers: number;
  python: boolean;
  pin: boolean;
  /** Parts of the bench to run (all by default). */
  only: string[];
  /** Further proxies, each with these `DENO_V8_FLAGS`. */
  compareV8: string[];
}

function parseOptions(args: string[]): Options {
  const names = PARTS.map((part) => part.name);
  const options: Options = {
    quick: false,
    rounds: undefined,
    workers: 1,
    python: true,
    pin: true,
    only: names,
    compareV8: [],
  };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--quick") options.quick = true;
    else if (arg === "--no-python") options.python = false;
    else if (arg === "--no-pin") options.pin = false;
    else if (arg === "--workers") options.workers = Number(args[++i]);
    else if (arg === "--rounds") options.rounds = Number(args[++i]);
    else if (arg === "--compare-v8") options.compareV8.push(args[++i] ?? "");
    else if (arg === "--only") {
      options.only = (args[++i] ?? "").split(",").filter(Boolean);
      const unknown = options.only.filter((part) => !names.includes(part));
      if (unknown.length > 0 || options.only.length === 0) {
        throw new Error(
          `Unknown part '${unknown.join(",")}' for --only: use a comma-separated list of ` +
            names.join(", "),
        );
      }
    } else {
      throw new Error(
        `Unknown option '${arg}': use --quick, --rounds N, --workers N, --no-python, --no-pin, ` +
          "--only PARTS or --compare-v8 FLAGS",
      );
    }
  }
  if (!Number.isInteger(options.workers) || options.workers < 1) {
    throw new Error("--workers takes a whole number of processes, 1 or more");
  }
  if (options.rounds !== undefined && (!Number.isInteger(options.rounds) || options.rounds < 1)) {
    throw new Error("--rounds takes a whole number of runs per figure, 1 or more");
  }
  return options;
}

const haveTaskset = await Deno.stat("/usr/bin/taskset").then(() => true, () => false);
const cpuCount = navigator.hardwareConcurrency;

/** A background process whose output is drained so it never blocks on a full pipe. */
export class Child {
  readonly process: Deno.ChildProcess;
  readonly lines: string[] = [];
  /** How the process ended ("exit code 1", "signal SIGKILL"), once it has. */
  exit: string | undefined;
  /** Resolves once both output streams have ended and every line is in `lines`. */
  readonly finished: Promise<void>;
  #waiters: { match: RegExp; resolve: (m: RegExpMatchArray) => void }[] = [];

  constructor(
    command: string,
    args: string[],
    cpu: number | undefined,
    env: Record<string, string> = {},
  ) {
    const pinned = cpu !== undefined && haveTaskset;
    this.process = new Deno.Command(pinned ? "taskset" : command, {
      args: pinned ? ["-c", String(cpu), command, ...args] : args,
      cwd: ROOT,
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.finished = Promise.all([
      this.#drain(this.process.stdout),
      this.#drain(this.process.stderr),
    ]).then(() => {});
    this.process.status.then((status) => {
      this.exit = status.signal ? `signal ${status.signal}` : `exit code ${status.code}`;
    });
  }

  get pid(): number {
    return this.process.pid;
  }

  async #drain(stream: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoderStream();
    let rest = "";
    for await (const text of stream.pipeThrough(decoder)) {
      rest += text;
      const parts = rest.split("\n");
      rest = parts.pop() ?? "";
      for (const line of parts) {
        // The latest 200 lines: a measurement's result is its last line.
        this.lines.push(line);
        if (this.lines.length > 200) this.lines.shift();
        for (const waiter of [...this.#waiters]) {
          const match = line.match(waiter.match);
          if (match) {
            this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
            waiter.resolve(match);
          }
        }
      }
    }
  }

  /** Resolves with the first output line matching `pattern`. */
  waitFor(pattern: RegExp, ms: number, what: string): Promise<RegExpMatchArray> {
    for (const line of this.lines) {
      const match = line.match(pattern);
      if (match) return Promise.resolve(match);
    }
    return withTimeout(
      new Promise((resolve) => this.#waiters.push({ match: pattern, resolve })),
      ms,
      `${what} did not start: ${this.lines.slice(-5).join(" | ")}`,
    );
  }

  async stop(): Promise<void> {
    try {
      this.process.kill("SIGTERM");
    } catch {
      // already gone
    }
    const exited = await withTimeout(this.process.status, 5000, "stop").catch(() => undefined);
    if (!exited) {
      try {
        this.process.kill("SIGKILL");
      } catch {
        // already gone
      }
      await this.process.status;
    }
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

async function waitConnectable(port: number, ms: number): Promise<void> {
  const deadline = performance.now() + ms;
  while (performance.now() < deadline) {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
      return;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  throw new Error(`Nothing listens on port ${port} after ${ms} ms`);
}

/** How the load generator reaches a server (loadgen's port=, ws= and mode= keys). */
interface Route {
  readonly port: number;
  /** WebSocket (true) or raw TCP. */
  readonly ws: boolean;
  /** Send the target's mode message first (false for websocketd + cat, which only echoes). */
  readonly mode: boolean;
}

/** A server the load generator can be pointed at: one column of the tables. */
interface Subject {
  readonly name: string;
  readonly route: Route;
  /** Processes whose CPU and memory count (the server under test). */
  readonly pids: number[];
  /** It forwards to the TCP target, whose CPU then counts on the load side. */
  readonly usesTarget: boolean;
  /** The server for the one-way rows, when it is another process (websocketd). */
  oneWay?: Subject;
  /** A process per session (Python websockify, websocketd): measure once the last ones exit. */
  forks?: boolean;
  /** Starts a fresh copy (after stop()). */
  restart?: () => Promise<Subject>;
  /** How its process ended and its last output, once it has ended by itself. */
  exited?: () => string | undefined;
  stop(): Promise<void>;
}

/** Starts a server with `start` and lets freshServers() start it again the same way. */
async function restartable(start: () => Promise<Subject>): Promise<Subject> {
  const subject = await start();
  subject.restart = () => restartable(start);
  return subject;
}

/** Child processes of `pid` (every thread's). */
async function childrenOf(pid: number): Promise<number[]> {
  const children: number[] = [];
  try {
    for await (const task of Deno.readDir(`/proc/${pid}/task`)) {
      const text = await Deno.readTextFile(`/proc/${pid}/task/${task.name}/children`)
        .catch(() => "");
      children.push(...text.trim().split(/\s+/).filter(Boolean).map(Number));
    }
  } catch {
    // The process is gone.
  }
  return children;
}

/**
 * Waits (at most `ms`) until a forking server's sessions of the previous measurement have exited,
 * so that they neither take its CPU nor count in its memory.
 */
async function settle(subject: Subject, ms = 10_000): Promise<void> {
  const deadline = performance.now() + ms;
  while (performance.now() < deadline) {
    const busy = await Promise.all(subject.pids.map(childrenOf));
    if (busy.every((list) => list.length === 0)) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const SERVER_CPU = 0;
const LOAD_CPU = cpuCount > 1 ? 1 : 0;

function pin(options: Options, cpu: number): number | undefined {
  return options.pin ? cpu : undefined;
}

async function startTarget(options: Options, loadgen: string): Promise<Child> {
  const child = new Child(loadgen, ["target"], pin(options, LOAD_CPU));
  await child.waitFor(/^\{"port":(\d+)\}/, 20_000, "The TCP target");
  return child;
}

function portOf(child: Child): number {
  const line = child.lines.find((l) => /^\{"port":\d+\}/.test(l));
  return Number(line?.match(/\d+/)?.[0]);
}

/**
 * The environment `deno task start` gives the proxy (its `DENO_V8_FLAGS`, the heap settings in
 * docs/decisions.md), so that the bench measures the proxy as users run it.
 */
async function startTaskEnv(): Promise<Record<string, string>> {
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`)) as {
    tasks: Record<string, string>;
  };
  const flags = config.tasks.start?.match(/DENO_V8_FLAGS=(\S+)/)?.[1];
  return flags ? { DENO_V8_FLAGS: flags } : {};
}

/**
 * What the kernel's log says of a SIGKILL the bench did not send: the out-of-memory killer's line
 * for `pid` ("Out of memory: Killed process PID (name) ... anon-rss:NkB"), as "killed by the
 * kernel's out-of-memory killer at N GiB resident", or undefined. (websocketd died so in a run:
 * its RSS had reached the machine's memory at 2,000 sessions plus newcomers.)
 */
export function oomKillOf(pid: number, log: string): string | undefined {
  const line = log.split("\n").find((text) => text.includes(`Killed process ${pid} (`));
  if (line === undefined) return undefined;
  const rss = /anon-rss:(\d+)kB/.exec(line);
  const resident = rss ? ` at ${(Number(rss[1]) / 1024 / 1024).toFixed(1)} GiB resident` : "";
  return `killed by the kernel's out-of-memory killer${resident}`;
}

/** The kernel's log (`dmesg`), or "" where it cannot be read. */
function kernelLog(): string {
  try {
    const output = new Deno.Command("dmesg", { stdout: "piped", stderr: "null" }).outputSync();
    return output.success ? new TextDecoder().decode(output.stdout) : "";
  } catch {
    return "";
  }
}

export function subjectOf(
  name: string,
  child: Child,
  route: Route,
  usesTarget: boolean,
): Subject {
  let stopped = false;
  return {
    name,
    route,
    pids: [child.pid],
    usesTarget,
    exited: () => {
      if (stopped || child.exit === undefined) return undefined;
      const oom = child.exit === "signal SIGKILL" ? oomKillOf(child.pid, kernelLog()) : undefined;
      return `${child.exit}${oom ? ` (${oom})` : ""}; last output: ` +
        (child.lines.slice(-2).join(" | ") || "none");
    },
    stop: () => {
      stopped = true;
      return child.stop();
    },
  };
}

async function startDenoProxy(
  options: Options,
  targetPort: number,
  workers: number,
  extra: string[] = [],
  name?: string,
  v8Flags?: string,
): Promise<Subject> {
  const args = ["run", "--allow-all", "--unstable-net", "main.ts", ...extra];
  if (workers > 1) args.push("--workers", String(workers));
  args.push("127.0.0.1:0", `127.0.0.1:${targetPort}`);
  // With several workers the proxy gets every core; one process is pinned like the others.
  const child = new Child(
    Deno.execPath(),
    args,
    workers > 1 ? undefined : pin(options, SERVER_CPU),
    v8Flags === undefined ? await startTaskEnv() : { DENO_V8_FLAGS: v8Flags },
  );
  const match = await child.waitFor(/Listen on 127\.0\.0\.1:(\d+)/, 30_000, "The proxy");
  const port = Number(match[1]);
  await waitConnectable(port, 10_000);
  const column = name ??
    (v8Flags !== undefined ? `deno [${v8Flags}]` : workers > 1 ? `deno ×${workers}` : "deno");
  return subjectOf(column, child, { port, ws: true, mode: true }, true);
}

async function startPython(options: Options, targetPort: number): Promise<Subject> {
  const port = await freePort();
  const child = new Child(
    PYTHON_WEBSOCKIFY,
    [`127.0.0.1:${port}`, `127.0.0.1:${targetPort}`],
    pin(options, SERVER_CPU),
  );
  await waitConnectable(port, 20_000);
  return { ...subjectOf("python", child, { port, ws: true, mode: true }, true), forks: true };
}

/** The C floor proxy (scripts/floor_proxy.c) in front of the C target. */
async function startFloor(options: Options, binary: string, targetPort: number): Promise<Subject> {
  const child = new Child(binary, [String(targetPort)], pin(options, SERVER_CPU));
  const match = await child.waitFor(/^\{"port":(\d+)\}/, 20_000, "The C floor proxy");
  return subjectOf("floor", child, { port: Number(match[1]), ws: true, mode: true }, true);
}

async function startLimit(options: Options): Promise<Subject> {
  const child = new Child(Deno.execPath(), ["run", "-A", ROLES, "limit"], pin(options, SERVER_CPU));
  const match = await child.waitFor(/^\{"port":(\d+)\}/, 20_000, "The Deno.serve limit server");
  return subjectOf("limit", child, { port: Number(match[1]), ws: true, mode: true }, false);
}

/**
 * Debian's websocketd running `program` per session: `--binary` for the main rows (binary
 * messages passed through as they are), line mode for the stdio row.
 */
async function startWebsocketd(
  options: Options,
  program: string[],
  binary: boolean,
  mode: boolean,
): Promise<Subject> {
  const port = await freePort();
  const child = new Child(
    WEBSOCKETD,
    ["--address=127.0.0.1", `--port=${port}`, "--loglevel=error"]
      .concat(binary ? ["--binary"] : [], program),
    pin(options, SERVER_CPU),
    { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" },
  );
  await waitConnectable(port, 20_000);
  return { ...subjectOf("websocketd", child, { port, ws: true, mode }, false), forks: true };
}

/** One figure's CPU: shares of one core over the measuring window. */
interface CpuSample {
  /** The server under test's process tree. */
  server: number;
  /** Load generator + TCP target (when the server forwards to it). */
  load: number;
  /** The load generator alone. */
  own: number;
  /** How busy the server's core and the load core were, every process counted. */
  serverCore: number;
  loadCore: number;
}

/** A goal: deno's figure against a column (`ratio` × it), or an absolute bound. */
interface Goal {
  against: string;
  ratio: number;
  text: string;
}

/** One row of the table. */
interface Row {
  label: string;
  unit: string;
  /** Which way is better. */
  higher: boolean;
  values: Map<string, number>;
  notes: Map<string, string>;
  /** Columns whose process died during the row (shown after their note). */
  exits: Map<string, string>;
  /** Per column: did every session get served (echo rows); a goal fails when not. */
  served: Map<string, boolean>;
  cpu: Map<string, CpuSample[]>;
  goals: Goal[];
  /** The same loadgen run for the generator part (against the C target on the server's CPU). */
  generatorTest?: { mode: string; keys: Json };
  /** Its figure and the generator's own CPU share at it. */
  generator?: { value: number; own: number };
}

/** What the parts of one bench invocation share. */
interface BenchRun {
  readonly options: Options;
  /** Runs per figure, and the throughput tests' window and warm-up. */
  readonly repeats: number;
  readonly windowMs: number;
  readonly warmupMs: number;
  /** The columns: limit, the proxies, websocketd, Python; freshProxies() replaces the proxies. */
  readonly subjects: Subject[];
  readonly rows: Row[];
  /** Path of the built load generator. */
  readonly loadgen: string;
  /** Adds a row to the table. */
  row(label: string, unit: string, higher: boolean, goals?: Goal[]): Row;
  /**
   * One loadgen run (`mode`, `keys`) against `subject`; keeps its CPU figures on `row`.
   * Resolves with its JSON result (`{ error }` when it failed).
   */
  measure(subject: Subject, mode: string, keys: Json, row?: Row): Promise<Json>;
  /** Restarts the proxies, for figures that need a fresh process. */
  freshProxies(): Promise<void>;
  /** One more proxy on the target, pinned like the others; the caller stops it. */
  proxy(name: string, args: string[]): Promise<Subject>;
  /** Tables of their own (scripts/bench_cluster.ts), printed after the main tables. */
  readonly sections: string[];
  /** Restarts every server that can be (all columns: the memory rows compare fresh servers). */
  freshServers(): Promise<void>;
}

/** A part of the bench: `--only` picks them by name; they run in this order. */
interface Part {
  readonly name: string;
  run(run: BenchRun): Promise<void>;
}

const PARTS: readonly Part[] = [
  { name: "throughput", run: throughputPart },
  { name: "latency", run: latencyPart },
  { name: "setup", run: setupPart },
  { name: "stdio", run: stdioPart },
  { name: "deflate", run: deflatePart },
  { name: "concurrency", run: concurrencyPart },
  { name: "newcomer", run: newcomerPart },
  { name: "idle", run: idlePart },
  { name: "generator", run: generatorPart },
  { name: "cluster", run: clusterPart },
  { name: "metrics", run: metricsPart },
];

function log(line: string): void {
  Deno.stderr.writeSync(new TextEncoder().encode(line + "\n"));
}

function median(values: number[]): number {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  return sorted.length === 0 ? NaN : sorted[Math.floor((sorted.length - 1) / 2)]!;
}

/** A number from a loadgen result (null, the JSON of NaN, and missing give NaN). */
function num(value: unknown): number {
  return typeof value === "number" ? value : NaN;
}

async function runLoadgen(
  options: Options,
  loadgen: string,
  args: string[],
  what: string,
): Promise<Json> {
  const child = new Child(loadgen, args, pin(options, LOAD_CPU));
  await child.finished;
  await child.process.status;
  const last = [...child.lines].reverse().find((line) => line.startsWith("{"));
  try {
    const parsed = JSON.parse(last ?? "") as Json;
    if (parsed.error) log(`  ${what}: ${parsed.error}`);
    return parsed;
  } catch {
    log(`  ${what}: no result (${child.lines.slice(-3).join(" | ")})`);
    return { error: "no result" };
  }
}

async function main(): Promise<void> {
  const options = parseOptions(Deno.args);
  const started = performance.now();
  const python = options.python &&
    await Deno.stat(PYTHON_WEBSOCKIFY).then(() => true, () => false);
  const websocketd = await Deno.stat(WEBSOCKETD).then(() => true, () => false);
  const versionText = new TextDecoder().decode(
    (await new Deno.Command(Deno.execPath(), { args: ["--version"] }).output()).stdout,
  ).split("\n")[0];
  const loadgen = await buildLoadgen();
  const floor = await buildFloorProxy();
  const repeats = options.rounds ?? (options.quick ? 1 : 3);
  log(`bench: ${options.quick ? "quick" : "full"} mode, ${repeats} run(s) per figure`);
  const target = await startTarget(options, loadgen);
  const running: Subject[] = [];
  try {
    const run = await startServers(
      options,
      { loadgen, floor },
      target,
      python,
      websocketd,
      running,
    );
    for (const part of PARTS) {
      if (!options.only.includes(part.name)) continue;
      const start = performance.now();
      await part.run(run);
      log(`  (${part.name}: ${((performance.now() - start) / 1000).toFixed(0)} s)`);
    }
    const info = {
      mode: options.quick ? "quick" : "full",
      seconds: (performance.now() - started) / 1000,
      version: versionText ?? "",
      pinned: options.pin && haveTaskset,
      workers: options.workers,
    };
    const names = run.subjects.map((s) => s.name);
    const table = renderTable(run.rows, names, info);
    // Only parts with tables of their own ran: the machine lines, no empty tables.
    if (run.rows.length === 0) console.log(table.split("\n").slice(0, 2).join("\n"));
    else {
      console.log(table);
      console.log("");
      console.log(renderCpuTable(run.rows, names, info.pinned));
      console.log("");
      console.log(renderHeadroom(run.rows, names));
    }
    for (const text of [sizingLines(run.rows).join("\n"), ...run.sections].filter(Boolean)) {
      console.log(`\n${text}`);
    }
  } finally {
    for (const subject of running) await subject.stop();
    await target.stop();
  }
}

/** Starts the servers under test; `running` collects them for the caller to stop. */
async function startServers(
  options: Options,
  binaries: { loadgen: string; floor: string },
  target: Child,
  python: boolean,
  websocketd: boolean,
  running: Subject[],
): Promise<BenchRun> {
  const targetPort = portOf(target);
  const loadgen = binaries.loadgen;
  const subjects: Subject[] = [];
  const add = (subject: Subject) => {
    subjects.push(subject);
    running.push(subject);
  };
  add(await restartable(() => startLimit(options)));
  add(await startDenoProxy(options, targetPort, 1));
  if (options.workers > 1) add(await startDenoProxy(options, targetPort, options.workers));
  for (const flags of options.compareV8) {
    add(await startDenoProxy(options, targetPort, 1, [], undefined, flags));
  }
  if (websocketd) {
    const cat = await restartable(() => startWebsocketd(options, ["cat"], true, false));
    // The one-way rows need a sink and a source behind websocketd: the C target over stdio.
    cat.oneWay = await startWebsocketd(options, [loadgen, "stdio"], true, true);
    running.push(cat.oneWay);
    add(cat);
  }
  add(await restartable(() => startFloor(options, binaries.floor, targetPort)));
  if (python) add(await restartable(() => startPython(options, targetPort)));
  const rows: Row[] = [];
  /** Stops the restartable column at `index` and starts it again in its place. */
  const restartAt = async (index: number): Promise<Subject> => {
    const old = subjects[index]!;
    await old.stop();
    const fresh = await old.restart!();
    if (old.oneWay) fresh.oneWay = old.oneWay;
    subjects[index] = fresh;
    running[running.indexOf(old)] = fresh;
    return fresh;
  };
  const run: BenchRun = {
    options,
    repeats: options.rounds ?? (options.quick ? 1 : 3),
    windowMs: options.quick ? 1000 : 2000,
    warmupMs: options.quick ? 300 : 500,
    subjects,
    rows,
    loadgen,
    row(label, unit, higher, goals = []) {
      const r: Row = {
        label,
        unit,
        higher,
        values: new Map(),
        notes: new Map(),
        exits: new Map(),
        served: new Map(),
        cpu: new Map(),
        goals,
      };
      rows.push(r);
      return r;
    },
    async measure(subject, mode, keys, row) {
      // A column whose process has died is started again when it can be, and never measured
      // dead: a figure of 0 would read as the server's.
      const gone = subject.exited?.();
      if (gone !== undefined) {
        // Only a column itself is started again; websocketd's one-way server is another process.
        const index = subjects.indexOf(subject);
        if (index < 0 || !subject.restart) {
          log(`  ${subject.name} has exited (${gone}): not measured`);
          row?.exits.set(subject.name, "exited, not measured");
          return { error: `${subject.name} has exited` };
        }
        log(`  ${subject.name} had exited (${gone}): started again`);
        row?.exits.set(subject.name, "exited, started again");
        subject = await restartAt(index);
      }
      const route = subject.route;
      const args = [
        mode,
        `port=${route.port}`,
        `ws=${route.ws ? 1 : 0}`,
        `mode=${route.mode ? 1 : 0}`,
        `server=${subject.pids.join(",")}`,
        ...(subject.usesTarget ? [`target=${target.pid}`] : []),
        ...Object.entries(keys).map(([key, value]) => `${key}=${value}`),
      ];
      if (subject.forks) await settle(subject);
      const result = await runLoadgen(options, loadgen, args, `${subject.name} ${mode}`);
      const died = subject.exited?.();
      if (died !== undefined) {
        log(`  ${subject.name} exited during ${mode} (${died}): its figure is dropped`);
        row?.exits.set(subject.name, "exited during a run, figure dropped");
        return { error: `${subject.name} exited` };
      }
      if (row) keepCpu(row, subject.name, result);
      return result;
    },
    // Memory figures need a fresh proxy: RSS after the bulk-transfer tests says more about the
    // allocator's high-water mark than about sessions.
    async freshProxies() {
      for (let index = 0; index < subjects.length; index++) {
        const old = subjects[index]!;
        if (!old.name.startsWith("deno")) continue;
        await old.stop();
        const flags = /^deno \[(.*)\]$/.exec(old.name)?.[1];
        const workers = old.name.startsWith("deno ×") ? options.workers : 1;
        const fresh = await startDenoProxy(options, targetPort, workers, [], undefined, flags);
        subjects[index] = fresh;
        running[running.indexOf(old)] = fresh;
      }
      await new Promise((resolve) => setTimeout(resolve, 500));
    },
    proxy: (name, args) => startDenoProxy(options, targetPort, 1, args, name),
    sections: [],
    async freshServers() {
      await run.freshProxies();
      for (let index = 0; index < subjects.length; index++) {
        if (subjects[index]!.restart) await restartAt(index);
      }
      await new Promise((resolve) => setTimeout(resolve, 500));
    },
  };
  return run;
}

/** A loadgen result's CPU figures, kept on `row` under `name`. */
function keepCpu(row: Row, name: string, result: Json): void {
  const cores = Array.isArray(result.cores) ? result.cores as unknown[] : [];
  const list = row.cpu.get(name) ?? [];
  list.push({
    server: num(result.serverCpu),
    load: num(result.loadCpu),
    own: num(result.ownCpu),
    serverCore: num(cores[SERVER_CPU]),
    loadCore: num(cores[LOAD_CPU]),
  });
  row.cpu.set(name, list);
}

/** Appends `value` to the list kept under `key`. */
/**
 * Notes on each `deno [FLAGS]` column (--compare-v8) of `row` its paired ratio to deno: the median
 * of the rounds' ratios (`lists` holds each subject's figures in round order), and in how many
 * rounds it did better.
 */
function notePaired(row: Row, lists: Map<string, number[]>): void {
  const deno = lists.get("deno");
  if (deno === undefined) return;
  for (const [name, list] of lists) {
    if (!name.startsWith("deno [")) continue;
    const ratios = list.map((value, round) => value / deno[round]!).filter(Number.isFinite);
    if (ratios.length === 0) continue;
    const better = ratios.filter((ratio) => row.higher ? ratio > 1 : ratio < 1).length;
    const paired = `paired ${median(ratios).toFixed(2)}× deno, better in ${better} of ` +
      `${ratios.length} rounds`;
    const note = row.notes.get(name);
    row.notes.set(name, note === undefined ? paired : `${note}; ${paired}`);
  }
}

function pushTo(map: Map<string, number[]>, key: string, value: number): void {
  map.set(key, [...map.get(key) ?? [], value]);
}

// Rounds alternate between the subjects, so that a noisy stretch of the shared machine does not
// land on one of them only; each figure is the median over the rounds.
async function throughputPart(run: BenchRun): Promise<void> {
  const goals = (limit: number, python: number): Goal[] => [
    ...(limit > 0 ? [{ against: "limit", ratio: limit, text: `≥ ${limit}× limit` }] : []),
    { against: "python", ratio: python, text: `≥ ${python}× python` },
  ];
  const tests: [string, string, number, Row][] = [
    [
      "ws→tcp 64 KiB",
      "up",
      65536,
      run.row("ws→tcp, 64 KiB messages", "MB/s", true, goals(0.7, 1.5)),
    ],
    ["ws→tcp 1 KiB", "up", 1024, run.row("ws→tcp, 1 KiB messages", "MB/s", true, goals(0, 8))],
    [
      "tcp→ws 64 KiB",
      "down",
      65536,
      run.row("tcp→ws, 64 KiB writes", "MB/s", true, goals(0.9, 1.5)),
    ],
    ["tcp→ws 1 KiB", "down", 1024, run.row("tcp→ws, 1 KiB writes", "MB/s", true, goals(0, 1.25))],
  ];
  for (const [name, mode, size, row] of tests) {
    log(`- ${name}`);
    row.generatorTest = { mode, keys: { size, window: run.windowMs, warmup: run.warmupMs } };
    const samples = new Map<string, number[]>();
    for (let round = 0; round < run.repeats; round++) {
      for (const subject of run.subjects) {
        // websocketd's column: the C target over stdio behind it (its CPU counts as the server's).
        const server = { ...(subject.oneWay ?? subject), name: subject.name };
        const result = await run.measure(server, mode, {
          size,
          window: run.windowMs,
          warmup: run.warmupMs,
        }, row);
        pushTo(samples, subject.name, num(result.mbps));
      }
    }
    for (const [subject, values] of samples) row.values.set(subject, median(values));
    if (run.subjects.some((s) => s.oneWay)) row.notes.set("websocketd", "C target over stdio");
    notePaired(row, samples);
  }
}

async function latencyPart(run: BenchRun): Promise<void> {
  log("- echo round trip");
  const p50 = run.row("echo round trip p50 (32 B)", "µs", false, [
    { against: "python", ratio: 1, text: "≤ 1.0× python" },
  ]);
  const p99 = run.row("echo round trip p99 (32 B)", "µs", false, [
    { against: "python", ratio: 0.75, text: "≤ 0.75× python" },
  ]);
  const quick = run.options.quick;
  const rounds = run.options.rounds ?? (quick ? 1 : 5);
  const p50s = new Map<string, number[]>();
  const p99s = new Map<string, number[]>();
  for (let round = 0; round < rounds; round++) {
    for (const subject of run.subjects) {
      const result = await run.measure(
        subject,
        "latency",
        { count: quick ? 4000 : 6000, size: 32 },
        p50,
      );
      pushTo(p50s, subject.name, num(result.p50));
      pushTo(p99s, subject.name, num(result.p99));
    }
  }
  for (const subject of run.subjects) {
    p50.values.set(subject.name, median(p50s.get(subject.name) ?? []));
    p99.values.set(subject.name, median(p99s.get(subject.name) ?? []));
    if (rounds > 1) p99.notes.set(subject.name, spread(p99s.get(subject.name) ?? []));
  }
}

async function setupPart(run: BenchRun): Promise<void> {
  log("- connection set-up");
  const setup = run.row("set-up: handshake, 1 echo, close (4 parallel)", "conn/s", true, [
    { against: "limit", ratio: 0.8, text: "≥ 0.8× limit" },
  ]);
  setup.generatorTest = { mode: "setup", keys: { parallel: 4, window: run.windowMs } };
  const rates = new Map<string, number[]>();
  for (let round = 0; round < run.repeats; round++) {
    for (const subject of run.subjects) {
      const result = await run.measure(
        subject,
        "setup",
        { parallel: 4, window: run.windowMs },
        setup,
      );
      pushTo(rates, subject.name, num(result.rate));
      if (Number(result.failed) > 0) log(`  ${subject.name}: ${result.failed} set-ups failed`);
    }
  }
  for (const [name, list] of rates) setup.values.set(name, median(list));
  notePaired(setup, rates);
}

/**
 * 64 KiB of JSON lines, as a telemetry feed sends them (pseudo-random but the same every run),
 * compressed as a browser would (raw deflate, zlib's default level, Z_SYNC_FLUSH, its 00 00 ff ff
 * tail removed) into a temporary file for loadgen's deflate= key.
 */
async function deflatedMessage(): Promise<{ path: string; plain: number; packed: number }> {
  let seed = 1;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  let text = "";
  for (let id = 0; text.length < 65536; id++) {
    text += JSON.stringify({
      id,
      sensor: `sensor-${Math.floor(random() * 500)}`,
      t: 1765000000000 + id * 17,
      value: Math.round(random() * 1e5) / 100,
      ok: random() > 0.1,
    }) + "\n";
  }
  const plain = new TextEncoder().encode(text.slice(0, 65536));
  const packed = zlib.deflateRawSync(plain, { finishFlush: zlib.constants.Z_SYNC_FLUSH });
  const path = await Deno.makeTempFile({ prefix: "websockify-bench-", suffix: ".deflate" });
  await Deno.writeFile(path, packed.subarray(0, packed.length - 4));
  return { path, plain: plain.length, packed: packed.length - 4 };
}

// ws→tcp with --permessage-deflate: the same compressed 64 KiB JSON message again and again, the
// proxy inflating each (no context takeover, as it negotiates), the sink counting what comes
// out; rounds alternate with uncompressed 64 KiB messages on the same proxy. Only the proxy: the
// limit, websocketd and Python websockify have no permessage-deflate.
async function deflatePart(run: BenchRun): Promise<void> {
  log("- permessage-deflate");
  const row = run.row("ws→tcp, 64 KiB JSON messages, permessage-deflate", "MB/s", true);
  const message = await deflatedMessage();
  const subject = await run.proxy("deno", ["--permessage-deflate"]);
  try {
    const compressed: number[] = [];
    const plain: number[] = [];
    for (let round = 0; round < run.repeats; round++) {
      const keys = { window: run.windowMs, warmup: run.warmupMs };
      const inflated = await run.measure(subject, "up", { ...keys, deflate: message.path }, row);
      compressed.push(num(inflated.mbps));
      plain.push(num((await run.measure(subject, "up", { ...keys, size: 65536 })).mbps));
    }
    const rate = median(compressed);
    row.values.set("deno", rate);
    for (const other of run.subjects) {
      if (!other.name.startsWith("deno")) row.notes.set(other.name, "no permessage-deflate");
    }
    const ratio = message.plain / message.packed;
    row.notes.set(
      "deno",
      `payload inflated; ${format(rate / ratio, "MB/s")} MB/s on the wire (${
        ratio.toFixed(1)
      }:1); ` +
        `${format(median(plain), "MB/s")} MB/s uncompressed`,
    );
  } finally {
    await subject.stop();
    await Deno.remove(message.path).catch(() => {});
  }
}

/** The proxy running `cat` per session over stdio, in line mode (`--stdio --stdio-text`). */
async function startDenoStdio(options: Options): Promise<Subject> {
  const child = new Child(
    Deno.execPath(),
    ["run", "--allow-all", "--unstable-net", "main.ts", "--stdio", "--stdio-text"]
      .concat(["127.0.0.1:0", "--", "cat"]),
    pin(options, SERVER_CPU),
    await startTaskEnv(),
  );
  const match = await child.waitFor(/Listen on 127\.0\.0\.1:(\d+)/, 30_000, "The stdio proxy");
  const port = Number(match[1]);
  await waitConnectable(port, 10_000);
  return subjectOf("deno", child, { port, ws: true, mode: false }, false);
}

// Program sessions over stdio: each set-up starts `cat`, echoes one line through it and closes.
// The proxy (`--stdio --stdio-text -- cat`) against websocketd in line mode, rounds alternating;
// the figures sit in the deno and websocketd columns, their ratio in the note of websocketd's.
async function stdioPart(run: BenchRun): Promise<void> {
  log("- program sessions over stdio");
  const row = run.row(
    "stdio: sessions of `cat`, 1 line echoed, close (4 parallel)",
    "conn/s",
    true,
  );
  const haveWebsocketd = await Deno.stat(WEBSOCKETD).then(() => true, () => false);
  const subjects = [await startDenoStdio(run.options)];
  try {
    if (haveWebsocketd) subjects.push(await startWebsocketd(run.options, ["cat"], false, false));
    const rates = new Map<string, number[]>();
    for (let round = 0; round < run.repeats; round++) {
      for (const subject of subjects) {
        const result = await run.measure(subject, "setup", {
          parallel: 4,
          window: run.windowMs,
          text: "hello",
        }, row);
        pushTo(rates, subject.name, num(result.rate));
        if (Number(result.failed) > 0) log(`  ${subject.name}: ${result.failed} set-ups failed`);
      }
    }
    for (const [name, list] of rates) row.values.set(name, median(list));
    const deno = row.values.get("deno");
    const other = row.values.get("websocketd");
    if (!haveWebsocketd) row.notes.set("websocketd", `not installed (${WEBSOCKETD})`);
    else if (deno !== undefined && other !== undefined && other > 0 && Number.isFinite(deno)) {
      row.notes.set("websocketd", `deno / websocketd ${(deno / other).toFixed(2)}`);
    }
  } finally {
    for (const subject of subjects) await subject.stop();
  }
}

// N sessions echoing 32 B messages, each waiting for its echo; every session is open before any
// echoes. Runs alternate between the servers, the proxies fresh at the first run of each size;
// the rate is the median, the memory the largest seen and "served" the fewest.
async function concurrencyPart(run: BenchRun): Promise<void> {
  for (const sessions of [1000, 5000]) await echoingSessions(run, sessions);
}

async function echoingSessions(run: BenchRun, sessions: number): Promise<void> {
  log(`- ${sessions} echoing sessions`);
  await run.freshServers();
  const large = sessions === 5000;
  const label = sessions.toLocaleString("en-US");
  const rate = run.row(`${label} sessions echoing (32 B)`, "msg/s", true, [
    { against: "limit", ratio: 0.6, text: "≥ 0.6× limit" },
    { against: "websocketd", ratio: 1, text: "> websocketd" },
    { against: "served", ratio: 1, text: "all served" },
  ]);
  const memory = run.row(
    `  server RSS at ${label} sessions`,
    "MiB",
    false,
    large ? [{ against: "absolute", ratio: 160, text: "≤ 160 MiB" }] : [],
  );
  rate.generatorTest = {
    mode: "echo",
    keys: { sessions, window: run.options.quick ? 1500 : 3000 },
  };
  const rates = new Map<string, number[]>();
  const memories = new Map<string, number[]>();
  const served = new Map<string, number[]>();
  const opened = new Map<string, number[]>();
  for (let round = 0; round < run.repeats; round++) {
    for (const subject of run.subjects) {
      const python = subject.name === "python";
      // Python websockify forks per session and opens a few hundred in 10 s: 1,000 only.
      if (python && large) continue;
      const result = await run.measure(subject, "echo", {
        sessions,
        window: run.options.quick ? 1500 : 3000,
        // Python websockify forks per session and opens them slowly: its sessions get 10 s.
        opentimeout: python ? 10_000 : 15_000,
        starttimeout: python ? 5_000 : 10_000,
      }, rate);
      pushTo(rates, subject.name, num(result.rate));
      pushTo(memories, subject.name, num(result.memoryKib) / 1024);
      pushTo(served, subject.name, Number(result.served ?? 0));
      pushTo(opened, subject.name, Number(result.opened ?? 0));
      if (Number(result.served) !== sessions && !python && !result.error) {
        log(
          `  ${subject.name}: ${result.served}/${sessions} served (opened ${result.opened}, ` +
            `never started ${result.neverStarted}, stalled ${result.stalled}, closed ` +
            `${result.closed}${
              result.lastError
                ? `; ${result.openErrors} failed to open, ` +
                  `last: ${result.lastError}`
                : ""
            })`,
        );
      }
    }
  }
  for (const [name, list] of rates) {
    rate.values.set(name, median(list));
    const fewest = Math.min(...served.get(name)!);
    const fewestOpened = Math.min(...opened.get(name)!);
    rate.served.set(name, fewest === sessions);
    rate.notes.set(
      name,
      `${fewest}/${sessions} served` + (fewestOpened < sessions ? `, ${fewestOpened} opened` : ""),
    );
    // The largest RSS over the runs (sessions of earlier runs have come and gone by the later
    // ones: the figure includes what the heap keeps of them), and the fresh process's.
    const seen = memories.get(name)!.filter(Number.isFinite);
    if (seen.length > 0) memory.values.set(name, Math.max(...seen));
    if (seen.length > 1 && name.startsWith("deno")) {
      memory.notes.set(name, `fresh ${seen[0]!.toFixed(1)}`);
    }
  }
  if (large && run.subjects.some((s) => s.name === "python")) {
    rate.notes.set("python", "forks per session: not run");
  }
  notePaired(rate, rates);
}

// A new client while 2,000 sessions echo at full speed: handshake and first echo, one after
// another, in the same load generator. Not a goal: it keeps the known limitation (a saturated
// Deno event loop accepts late, docs/decisions.md "Sixth pass") visible for the proxy and for
// the limit server, which runs on the same runtime. One run per server; not Python (it forks).
async function newcomerPart(run: BenchRun): Promise<void> {
  const busy = 2000;
  log(`- new sessions while ${busy} sessions echo`);
  const window = run.options.quick ? 3000 : 5000;
  const row = run.row(
    `new session while ${busy.toLocaleString("en-US")} sessions echo (handshake + 1 echo)`,
    "ms",
    false,
  );
  for (const subject of run.subjects) {
    if (subject.name === "python") continue;
    const result = await run.measure(subject, "newcomer", {
      busy,
      window,
      interval: 100,
      timeout: 10_000,
      opentimeout: 15_000,
      starttimeout: 10_000,
    }, row);
    if (result.error) continue;
    row.values.set(subject.name, num(result.max));
    const extra = [
      Number(result.timeouts) > 0 ? `${result.timeouts} waited 10 s` : "",
      Number(result.failures) > 0 ? `${result.failures} failed` : "",
      Number(result.busyStarted) < busy ? `${result.busyStarted}/${busy} busy started` : "",
      Number(result.busyServed) < busy ? `${result.busyServed}/${busy} busy served` : "",
    ].filter(Boolean).map((text) => `, ${text}`).join("");
    row.notes.set(
      subject.name,
      `max; p50 ${format(num(result.p50), "ms")}, ${result.count} ` +
        `session${result.count === 1 ? "" : "s"}${extra}`,
    );
  }
  if (run.subjects.some((s) => s.name === "python")) {
    row.notes.set("python", "forks per session: not run");
  }
}

async function idlePart(run: BenchRun): Promise<void> {
  log("- idle sessions");
  await run.freshServers();
  const idle = run.row("idle memory per session", "KiB", false, [
    { against: "absolute", ratio: 20, text: "≤ 20 KiB" },
  ]);
  for (const subject of run.subjects) {
    // The forking servers need a process per session: fewer sessions for them.
    const sessions = subject.name === "python" ? 100 : subject.name === "websocketd" ? 1000 : 5000;
    const result = await run.measure(subject, "idle", { sessions, hold: 1000 });
    idle.values.set(subject.name, num(result.kibPerSession));
    idle.notes.set(subject.name, `${result.opened ?? 0} sessions`);
  }
}

// The load generator against the fastest server there is: a second C target, pinned where the
// servers under test run, over raw TCP (no WebSocket framing on either side; the generator's
// framing is a few per cent of its time). What it reaches is a lower bound of what the generator
// can drive, shown in the headroom table beside the estimate from its CPU share. One run each.
async function generatorPart(run: BenchRun): Promise<void> {
  const rows = run.rows.filter((row) => row.generatorTest);
  if (rows.length === 0) return;
  log("- load generator against the C target on the servers' CPU");
  const child = new Child(run.loadgen, ["target"], pin(run.options, SERVER_CPU));
  try {
    await child.waitFor(/^\{"port":(\d+)\}/, 20_000, "The second C target");
    const subject = subjectOf("C target", child, {
      port: portOf(child),
      ws: false,
      mode: true,
    }, false);
    for (const row of rows) {
      const test = row.generatorTest!;
      const result = await run.measure(subject, test.mode, test.keys);
      const value = num(result.rate ?? result.mbps);
      if (Number.isFinite(value)) row.generator = { value, own: num(result.ownCpu) };
    }
  } finally {
    await child.stop();
  }
}

/** "min–max" of `values`, for the spread of a median. */
function spread(values: number[]): string {
  const finite = values.filter(Number.isFinite);
  if (finite.length === 0) return "";
  return `${format(Math.min(...finite), "µs")}–${format(Math.max(...finite), "µs")}`;
}

function format(value: number | undefined, unit: string): string {
  if (value === undefined || !Number.isFinite(value)) return "–";
  if (unit === "MiB" || unit === "KiB") return value.toFixed(1);
  return value >= 100 ? Math.round(value).toLocaleString("en-US") : value.toPrecision(3);
}

/** Whether deno's figure in `row` meets `goal`; undefined when a figure is missing. */
function meets(row: Row, goal: Goal): boolean | undefined {
  const deno = row.values.get("deno");
  if (deno === undefined || !Number.isFinite(deno)) return undefined;
  if (goal.against === "served") return row.served.get("deno") ?? undefined;
  if (goal.against === "absolute") return row.higher ? deno >= goal.ratio : deno <= goal.ratio;
  const other = row.values.get(goal.against);
  if (other === undefined || !Number.isFinite(other)) return undefined;
  return row.higher ? deno >= goal.ratio * other : deno <= goal.ratio * other;
}

function renderTable(
  rows: Row[],
  names: string[],
  info: { mode: string; seconds: number; version: string; pinned: boolean; workers: number },
): string {
  const lines: string[] = [];
  const cpu = Deno.readTextFileSync("/proc/cpuinfo").match(/model name\s*:\s*(.*)/)?.[1] ?? "?";
  lines.push(
    `Machine: ${cpuCount} × ${cpu}, ${Deno.osRelease()}; ${info.version}; ` +
      `${info.mode} mode, ${info.seconds.toFixed(0)} s.`,
  );
  lines.push(
    info.pinned
      ? "Pinned with taskset: servers under test on CPU 0, load generator and TCP target on CPU 1" +
        (info.workers > 1 ? ` (deno ×${info.workers} is not pinned)` : "") + "."
      : "Not pinned (taskset missing or --no-pin).",
  );
  lines.push(
    '"limit" is Deno.serve + Deno.upgradeWebSocket without a proxy (echoing; discarding for ' +
      "ws→tcp, sending as fast as bufferedAmount allows for tcp→ws); websocketd runs `cat` per " +
      "session (--binary; the C target over stdio for the one-way rows). The load generator and " +
      'the TCP target are scripts/loadgen.c (C, epoll, one thread). "floor" is ' +
      "scripts/floor_proxy.c, a minimal WebSocket-to-TCP proxy in C (one read and one send per " +
      "chunk and direction, epoll, no checks): the least a proxy costs on this machine, so " +
      "floor / limit is the most any proxy can reach against the limit here.",
  );
  lines.push(
    "Rounds alternate between the servers; figures are medians (p99: median of the rounds' " +
      "p99, with their range). The proxy runs with the V8 flags of `deno task start`. The " +
      "echoing-session rows start on a fresh proxy and repeat on it: RSS is the largest seen " +
      "(with the fresh process's first figure), PSS summed over the process tree for forking " +
      "servers and --workers; the idle row uses a fresh proxy.",
  );
  lines.push("");
  const header = [
    "test",
    "unit",
    ...names,
    "deno / limit",
    "floor / limit",
    "deno / floor",
    "deno / websocketd",
    "deno / python",
    "goal",
    "met",
  ];
  lines.push(`| ${header.join(" | ")} |`);
  lines.push(`| ${header.map(() => "---").join(" | ")} |`);
  for (const row of rows) {
    const deno = row.values.get("deno");
    const ratio = (other: string, of = deno) => {
      const b = row.values.get(other);
      return of !== undefined && b !== undefined && b > 0 && Number.isFinite(of) &&
          Number.isFinite(b)
        ? (of / b).toFixed(2)
        : "–";
    };
    const cells = names.map((name) => {
      const note = [row.notes.get(name), row.exits.get(name)].filter(Boolean).join("; ");
      const value = format(row.values.get(name), row.unit);
      return note ? (value === "–" ? note : `${value} (${note})`) : value;
    });
    const verdicts = row.goals.map((goal) => meets(row, goal));
    const met = verdicts.length === 0
      ? ""
      : verdicts.some((v) => v === false)
      ? "**no**"
      : verdicts.every((v) => v === true)
      ? "yes"
      : "–";
    const goals = row.goals.map((goal) => goal.text).join(", ");
    lines.push(
      `| ${
        [
          row.label,
          row.unit,
          ...cells,
          ratio("limit"),
          ratio("limit", row.values.get("floor")),
          ratio("floor"),
          ratio("websocketd"),
          ratio("python"),
          goals,
          met,
        ].join(" | ")
      } |`,
    );
  }
  return lines.join("\n");
}

/** A core or a process counts as the limit from this share of a core on. */
const SATURATED = 0.9;

/**
 * What limited a figure: the server's process (at 90 % of a core or more), the load side's
 * (load generator + TCP target), else, when pinned, a core busy 90 % with other processes too
 * (the machine's other load took the time), else neither (a latency-bound test).
 */
type Limiter = "server" | "load" | "server core" | "load core" | "neither" | "–";

function limiterOf(sample: CpuSample, pinned: boolean): Limiter {
  if (!Number.isFinite(sample.server) && !Number.isFinite(sample.load)) return "–";
  if (sample.server >= SATURATED) return "server";
  if (sample.load >= SATURATED) return "load";
  if (pinned && sample.serverCore >= SATURATED) return "server core";
  if (pinned && sample.loadCore >= SATURATED) return "load core";
  return "neither";
}

/** The median sample of a list (by server share), for one cell of the CPU table. */
function medianSample(samples: CpuSample[]): CpuSample {
  const field = (key: keyof CpuSample) => median(samples.map((s) => s[key]));
  return {
    server: field("server"),
    load: field("load"),
    own: field("own"),
    serverCore: field("serverCore"),
    loadCore: field("loadCore"),
  };
}

/**
 * The second table: how busy each side was during each test (median share of one core), and
 * which side limited each figure. The load side is the load generator plus the TCP target, which
 * share CPU 1 when pinned.
 */
function renderCpuTable(rows: Row[], names: string[], pinned: boolean): string {
  const lines = [
    "CPU use during each test, as a share of one core: server under test / load side (load " +
    "generator + TCP target; the limit and websocketd columns use no TCP target), then the side " +
    "that limited the figure: server or load (that side's processes at 90 % of a core or more)" +
    (pinned
      ? ", server core or load core (that core 90 % busy with other processes too: the " +
        "machine's other load took the time)"
      : "") +
    ", neither (a latency-bound figure); – where the measuring window was under 0.5 s.",
    "",
  ];
  const header = ["test", ...names, "deno limited by"];
  lines.push(`| ${header.join(" | ")} |`);
  lines.push(`| ${header.map(() => "---").join(" | ")} |`);
  const share = (value: number) => Number.isFinite(value) ? `${Math.round(value * 100)} %` : "–";
  for (const row of rows) {
    if (row.cpu.size === 0) continue;
    const cells = names.map((name) => {
      const samples = row.cpu.get(name);
      if (!samples) return "–";
      const sample = medianSample(samples);
      return `${share(sample.server)} / ${share(sample.load)} ${limiterOf(sample, pinned)}`;
    });
    const deno = row.cpu.get("deno");
    const limiter = deno ? limiterOf(medianSample(deno), pinned) : "–";
    const limit = {
      server: "proxy",
      load: "load side",
      "server core": "proxy's core (other processes)",
      "load core": "load core (other processes)",
      neither: "neither side saturated",
      "–": "–",
    }[limiter];
    const label = row.label.replace(/ p50 \(32 B\)$/, " (32 B)");
    lines.push(`| ${[label, ...cells, limit].join(" | ")} |`);
  }
  return lines.join("\n");
}

/** The load generator must manage this many times the fastest server's figure. */
const HEADROOM = 3;

/**
 * The third table: can the load generator do ≥ 3× the fastest server's figure? For each rate
 * row, the fastest column's figure divided by the generator's own CPU share at it (getrusage)
 * is what one core of the generator could drive: a conservative estimate, since a busier event
 * loop costs less per message. The generator part adds what it did against the C target (raw
 * TCP) on the servers' CPU, a lower bound measured directly. Headroom is the larger of the two
 * over the fastest figure.
 */
function renderHeadroom(rows: Row[], names: string[]): string {
  const lines = [
    "Load generator headroom: what one core of it could drive (the fastest figure ÷ its own " +
    "CPU share at that figure), and what it did against the C target on the servers' CPU (raw " +
    `TCP; the generator part), against the fastest figure; the goal is ≥ ${HEADROOM}×. Over ` +
    "loopback TCP most of the generator's time is the kernel's work per message (docs/" +
    "decisions.md, issue 12), the same work the server does for it: against a server with " +
    "little work of its own per message the headroom stays near 2×, and the CPU table then " +
    "says whether the load core was the limit.",
    "",
    "| test | fastest | figure | generator CPU | generator could drive | against the C target " +
    "| headroom | ≥ 3× |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const row of rows) {
    if (!row.higher || row.cpu.size === 0) continue;
    let best: string | undefined;
    for (const name of names) {
      const value = row.values.get(name);
      if (value === undefined || !Number.isFinite(value)) continue;
      if (best === undefined || value > row.values.get(best)!) best = name;
    }
    if (best === undefined) continue;
    const figure = row.values.get(best)!;
    const own = median((row.cpu.get(best) ?? []).map((s) => s.own));
    const capacity = own > 0 ? figure / own : NaN;
    const direct = row.generator?.value ?? NaN;
    const headroom = Math.max(...[capacity, direct].filter(Number.isFinite)) / figure;
    const withUnit = (value: number) =>
      Number.isFinite(value) ? `${format(value, row.unit)} ${row.unit}` : "–";
    lines.push(
      `| ${
        [
          row.label,
          best,
          withUnit(figure),
          Number.isFinite(own) ? `${Math.round(own * 100)} %` : "–",
          withUnit(capacity),
          row.generator
            ? `${withUnit(direct)} (generator ${Math.round(row.generator.own * 100)} %)`
            : "–",
          Number.isFinite(headroom) ? `${headroom.toFixed(1)}×` : "–",
          Number.isFinite(headroom) ? (headroom >= HEADROOM ? "yes" : "**no**") : "–",
        ].join(" | ")
      } |`,
    );
  }
  return lines.join("\n");
}

if (import.meta.main) await main();
