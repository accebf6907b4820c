/**
 * Bench parts for the cluster and operations issues, run by `scripts/bench.ts --only
 * cluster,metrics`, each printing a table of its own after the main tables:
 * - `cluster`: HAProxy with the exact `deploy/haproxy.cfg` (ports filled in by
 *   `haproxyConfig()`, the function tests/cluster_test.ts uses) in front of three proxy instances,
 *   against the same load straight to one instance, rounds alternating.
 * - `metrics`: the proxy with and without `--metrics`, rounds alternating, with the difference in %
 *   per round and the bar of the issue (prom-client costs at most 3 % of any figure).
 * `sizingLines()` turns the main table's 1,000-session and idle rows into sessions per core and per
 * GiB (docs/deploy.md, "Sizing").
 *
 * Pinning (with taskset): HAProxy and every proxy instance share CPU 0, like the single proxy; the
 * load generator and the TCP target stay on CPU 1. The cluster column thus gets the same one core
 * as the direct column: it shows what the extra hop and three processes cost per core.
 *
 * @module
 */

import { freePort, haproxyConfig, runBalancer } from "../tests/_balancer_helpers.ts";

type Json = Record<string, unknown>;

const HAPROXY = "/usr/sbin/haproxy";
const HAVE_TASKSET = await Deno.stat("/usr/bin/taskset").then(() => true, () => false);
/** The core of the servers under test (scripts/bench.ts pins its proxies there too). */
const SERVER_CPU = 0;

/** A server the load generator can be pointed at (the shape of scripts/bench.ts's Subject). */
export interface Subject {
  readonly name: string;
  readonly route: { port: number; ws: boolean; mode: boolean };
  readonly pids: number[];
  readonly usesTarget: boolean;
  stop(): Promise<void>;
}

/** What these parts need of scripts/bench.ts's BenchRun. */
export interface ClusterBenchRun {
  readonly options: { quick: boolean; pin: boolean };
  readonly repeats: number;
  readonly windowMs: number;
  readonly warmupMs: number;
  /** "direct" (the TCP target) first. */
  readonly subjects: Subject[];
  /** One run of the load generator (scripts/loadgen.c: `mode`, `keys`). */
  measure(subject: Subject, mode: string, keys: Json): Promise<Json>;
  /** One more proxy on the TCP target, pinned like the others, with `args` before the addresses. */
  proxy(name: string, args: string[]): Promise<Subject>;
  /** Text printed after the main tables. */
  readonly sections: string[];
}

/** A figure of these tables: the test to run and which of its results to show. */
interface Figure {
  label: string;
  unit: string;
  higher: boolean;
  /** The load generator's mode and keys (scripts/loadgen.c). */
  mode: string;
  keys: (run: ClusterBenchRun) => Json;
  /** The figure from a load result; the per-operation CPU divides the server's CPU by it. */
  value: (result: Json) => number;
  /** Whether server CPU per unit of the figure makes sense (rates: yes; latency: no). */
  perOp: boolean;
  /** What a result fell short of ("" if nothing): shown beside the figure. */
  short?: (result: Json) => string;
}

const FIGURES: Figure[] = [
  {
    label: "1,000 sessions echoing 32 B",
    unit: "msg/s",
    higher: true,
    mode: "echo",
    keys: (run) => ({
      sessions: 1000,
      window: run.options.quick ? 1500 : 3000,
      opentimeout: 20_000,
      starttimeout: 15_000,
    }),
    value: (result) => result.rate as number,
    perOp: true,
    short: (result) => Number(result.served) < 1000 ? `${result.served ?? 0}/1000 served` : "",
  },
  {
    label: "set-up: handshake, 1 echo, close (4 parallel)",
    unit: "conn/s",
    higher: true,
    mode: "setup",
    keys: (run) => ({ parallel: 4, window: run.windowMs }),
    value: (result) => result.rate as number,
    perOp: true,
  },
  {
    label: "ws→tcp, 64 KiB messages",
    unit: "MB/s",
    higher: true,
    mode: "up",
    keys: (run) => ({ size: 65536, window: run.windowMs, warmup: run.warmupMs }),
    value: (result) => result.mbps as number,
    perOp: true,
  },
  {
    label: "tcp→ws, 64 KiB writes",
    unit: "MB/s",
    higher: true,
    mode: "down",
    keys: (run) => ({ size: 65536, window: run.windowMs, warmup: run.warmupMs }),
    value: (result) => result.mbps as number,
    perOp: true,
  },
];

/** The metrics part adds the figures where per-chunk counting weighs most. */
const METRICS_FIGURES: Figure[] = [
  ...FIGURES,
  {
    label: "ws→tcp, 1 KiB messages",
    unit: "MB/s",
    higher: true,
    mode: "up",
    keys: (run) => ({ size: 1024, window: run.windowMs, warmup: run.warmupMs }),
    value: (result) => result.mbps as number,
    perOp: true,
  },
  {
    label: "echo round trip p50 (32 B)",
    unit: "µs",
    higher: false,
    mode: "latency",
    keys: (run) => ({ count: run.options.quick ? 2000 : 4000 }),
    value: (result) => result.p50 as number,
    perOp: false,
  },
];

/** Per subject, per round: the figure, the server's CPU share of one core, what fell short. */
type Samples = Map<string, Sample[]>;

interface Sample {
  value: number;
  cpu: number;
  /** The load side's CPU share (load generator + TCP target). */
  load: number;
  short: string;
  /** The share of the subject's CPU time that went to its first process (HAProxy). */
  firstShare: number;
}

function log(line: string): void {
  Deno.stderr.writeSync(new TextEncoder().encode(line + "\n"));
}

function median(values: number[]): number {
  const sorted = values.filter(Number.isFinite).sort((a, b) => a - b);
  return sorted.length === 0 ? NaN : sorted[Math.floor((sorted.length - 1) / 2)]!;
}

/** A median figure, with what any round fell short of. */
function cell(value: number, samples: Sample[]): string {
  const short = samples.map((s) => s.short).filter(Boolean);
  return short.length > 0 ? `${format(value)} (${short.join(", ")})` : format(value);
}

function format(value: number): string {
  if (!Number.isFinite(value)) return "–";
  return value >= 100 ? Math.round(value).toLocaleString("en-US") : value.toPrecision(3);
}

function percent(value: number): string {
  if (!Number.isFinite(value)) return "–";
  return `${value >= 0 ? "+" : ""}${value.toFixed(1)} %`;
}

/** CPU ticks (user + system) used so far by `pid` (its own threads, not its children). */
async function ticksOf(pid: number): Promise<number> {
  const text = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => "");
  // utime and stime are fields 14 and 15; the command name (field 2) may hold spaces.
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11] ?? NaN) + Number(fields[12] ?? NaN);
}

/**
 * Runs every figure over `subjects`, rounds alternating between them within each figure. For each
 * subject it also notes which share of its processes' CPU time over the whole run went to the
 * first one (for the cluster: HAProxy against the three instances).
 */
async function measureAll(
  run: ClusterBenchRun,
  subjects: Subject[],
  figures: Figure[],
): Promise<Map<Figure, Samples>> {
  const all = new Map<Figure, Samples>();
  for (const figure of figures) {
    log(`  ${figure.label}`);
    const samples: Samples = new Map(subjects.map((s) => [s.name, []]));
    for (let round = 0; round < run.repeats; round++) {
      for (const subject of subjects) {
        const before = await Promise.all(subject.pids.map(ticksOf));
        const result = await run.measure(subject, figure.mode, figure.keys(run));
        const used = (await Promise.all(subject.pids.map(ticksOf))).map((t, i) => t - before[i]!);
        const firstShare = used[0]! / used.reduce((a, b) => a + b, 0);
        if (result.error) log(`  ${subject.name}: ${result.error}`);
        if (Number(result.failed) > 0) log(`  ${subject.name}: ${result.failed} failed`);
        const cpu = typeof result.serverCpu === "number" ? result.serverCpu : NaN;
        const short = figure.short?.(result) ?? "";
        const load = typeof result.loadCpu === "number" ? result.loadCpu : NaN;
        samples.get(subject.name)!.push({
          value: figure.value(result),
          cpu,
          load,
          short,
          firstShare,
        });
      }
    }
    all.set(figure, samples);
  }
  return all;
}

/** Median figure, and median server CPU (core-µs) per unit of the figure. */
function summary(samples: Sample[]): { value: number; cpuPerOp: number } {
  return {
    value: median(samples.map((s) => s.value)),
    cpuPerOp: median(samples.map((s) => s.cpu / s.value * 1e6)),
  };
}

/**
 * Three instances with `--proxy-protocol --metrics` behind HAProxy (deploy/haproxy.cfg: TCP mode,
 * send-proxy-v2, health checks on /healthz) against one instance with `--metrics`, which the load
 * reaches directly (no PROXY header: that is the only flag that differs).
 */
export async function clusterPart(run: ClusterBenchRun): Promise<void> {
  log("- through HAProxy over 3 instances, against direct to one instance");
  if (!await Deno.stat(HAPROXY).then(() => true, () => false)) {
    run.sections.push(`Through HAProxy: not run (${HAPROXY} is not installed).`);
    return;
  }
  const started: Subject[] = [];
  const dir = await Deno.makeTempDir({ prefix: "bench-haproxy-" });
  let haproxy: (AsyncDisposable & { pid: number; output(): string }) | undefined;
  try {
    const [singleMetrics, ...metricsPorts] = distinctPorts(4);
    const subjects = await startAll(run, started, [
      ["one instance", ["--metrics", `127.0.0.1:${singleMetrics}`]],
      ...metricsPorts.map((port, index): [string, string[]] => [
        `instance ${index + 1}`,
        ["--proxy-protocol", "--metrics", `127.0.0.1:${port}`],
      ]),
    ]);
    const single = subjects[0]!;
    const instances = subjects.slice(1).map((subject, index) => ({
      subject,
      metricsPort: metricsPorts[index]!,
    }));
    const front = freePort();
    const config = await haproxyConfig(
      front,
      instances.map(({ subject, metricsPort }) => ({ port: subject.route.port, metricsPort })),
    );
    await Deno.writeTextFile(`${dir}/haproxy.cfg`, config);
    const pinned = run.options.pin && HAVE_TASKSET;
    const args = ["-db", "-f", `${dir}/haproxy.cfg`];
    haproxy = pinned
      ? await runBalancer("taskset", ["-c", String(SERVER_CPU), HAPROXY, ...args], front, dir)
      : await runBalancer(HAPROXY, args, front, dir);
    await untilServed(front);
    const cluster: Subject = {
      name: "HAProxy + 3 instances",
      route: { port: front, ws: true, mode: true },
      pids: [haproxy.pid, ...instances.map(({ subject }) => subject.pids[0]!)],
      usesTarget: true,
      stop: async () => {},
    };
    const results = await measureAll(run, [single, cluster], FIGURES);
    run.sections.push(clusterTable(run, results, single.name, cluster.name));
  } finally {
    if (haproxy) await haproxy[Symbol.asyncDispose]();
    else await Deno.remove(dir, { recursive: true });
    for (const subject of started) await subject.stop();
  }
}

/** `count` different loopback ports that were free a moment ago. */
function distinctPorts(count: number): number[] {
  const ports = new Set<number>();
  for (let attempt = 0; ports.size < count && attempt < 100; attempt++) ports.add(freePort());
  return [...ports];
}

/**
 * Starts the proxies `specs` (name, arguments) at once; every one that started goes into
 * `started` (for the caller to stop), and the first failure is thrown after all have settled.
 */
async function startAll(
  run: ClusterBenchRun,
  started: Subject[],
  specs: [string, string[]][],
): Promise<Subject[]> {
  const results = await Promise.allSettled(specs.map(([name, args]) => run.proxy(name, args)));
  const subjects: Subject[] = [];
  for (const result of results) {
    if (result.status === "fulfilled") {
      started.push(result.value);
      subjects.push(result.value);
    }
  }
  const failed = results.find((result) => result.status === "rejected");
  if (failed) throw (failed as PromiseRejectedResult).reason;
  return subjects;
}

/** Waits (bounded) until a WebSocket session through `port` opens: HAProxy sees the backends up. */
async function untilServed(port: number): Promise<void> {
  const deadline = performance.now() + 10_000;
  let last = "";
  while (performance.now() < deadline) {
    const opened = await new Promise<boolean>((resolve) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/`, "binary");
      const timer = setTimeout(() => {
        ws.close();
        resolve(false);
      }, 2000);
      ws.onopen = () => {
        clearTimeout(timer);
        ws.close();
        resolve(true);
      };
      ws.onerror = (event) => {
        clearTimeout(timer);
        last = (event as ErrorEvent).message ?? "error";
        resolve(false);
      };
    });
    if (opened) return;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`No WebSocket session through HAProxy on ${port} after 10 s: ${last}`);
}

function clusterTable(
  run: ClusterBenchRun,
  results: Map<Figure, Samples>,
  single: string,
  cluster: string,
): string {
  const pinned = run.options.pin && HAVE_TASKSET;
  const lines = [
    `Through HAProxy over 3 instances (deploy/haproxy.cfg: TCP mode, send-proxy-v2, health ` +
    `checks on /healthz; instances with --proxy-protocol --metrics) against the same load ` +
    `direct to one instance (--metrics). ` +
    (pinned
      ? "Pinned: HAProxy and the instances on CPU 0 (as the one instance), load generator and " +
        "TCP target on CPU 1."
      : "Not pinned.") +
    ` Medians of ${run.repeats} alternating round(s). CPU: share of one core used by the server ` +
    "side (HAProxy plus the instances) / the load side (load generator + TCP target) during " +
    "the window, and the server side's CPU per unit of the figure; HAProxy's part of the " +
    "cluster's CPU " +
    "time is over the whole run of each figure (connecting included).",
    "",
    `| test | unit | ${single} | ${cluster} | cluster / one | CPU ${single} | CPU cluster | ` +
    "CPU per unit, cluster / one | HAProxy's part |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const [figure, samples] of results) {
    const a = summary(samples.get(single)!);
    const b = summary(samples.get(cluster)!);
    const share = (v: number) => Number.isFinite(v) ? `${Math.round(v * 100)} %` : "–";
    const cpu = (name: string) => {
      const list = samples.get(name)!;
      return `${share(median(list.map((s) => s.cpu)))} / ${share(median(list.map((s) => s.load)))}`;
    };
    const ratio = (x: number, y: number) =>
      Number.isFinite(x) && Number.isFinite(y) && y > 0 ? (x / y).toFixed(2) : "–";
    lines.push(
      `| ${figure.label} | ${figure.unit} | ${cell(a.value, samples.get(single)!)} | ` +
        `${cell(b.value, samples.get(cluster)!)} | ${ratio(b.value, a.value)} | ${cpu(single)} | ` +
        `${cpu(cluster)} | ` +
        `${ratio(b.cpuPerOp, a.cpuPerOp)} | ` +
        `${share(median(samples.get(cluster)!.map((s) => s.firstShare)))} |`,
    );
  }
  return lines.join("\n");
}

/** The bar of the issue: prom-client costs at most this share of any bench figure. */
const METRICS_BAR = 3;

/**
 * The proxy without and with `--metrics` (nothing scrapes during the runs: the cost measured is
 * the counting in the pump, the sessions and the HTTP layer), rounds alternating.
 */
export async function metricsPart(run: ClusterBenchRun): Promise<void> {
  log("- without and with --metrics");
  const started: Subject[] = [];
  try {
    const pair = await startAll(run, started, [
      ["without", []],
      ["--metrics", ["--metrics", `127.0.0.1:${freePort()}`]],
    ]);
    const off = pair[0]!;
    const on = pair[1]!;
    // Five rounds in full mode: the differences sought are smaller than the cluster's.
    const rounds = run.options.quick ? run.repeats : Math.max(run.repeats, 5);
    const results = await measureAll({ ...run, repeats: rounds }, [off, on], METRICS_FIGURES);
    run.sections.push(metricsTable(rounds, results, off.name, on.name));
  } finally {
    for (const subject of started) await subject.stop();
  }
}

function metricsTable(
  rounds: number,
  results: Map<Figure, Samples>,
  off: string,
  on: string,
): string {
  const lines = [
    `--metrics overhead: the proxy without and with --metrics, ${rounds} alternating ` +
    "round(s), medians. Cost is how much worse the figure is with --metrics (negative: better); " +
    "the range is the cost in each round (the noise); CPU per unit is the server's CPU time per " +
    `unit of the figure. Bar: at most ${METRICS_BAR} % of any figure: yes when every round is ` +
    `within it, no when every round is over it, noise when the rounds disagree.`,
    "",
    "| test | unit | without | with --metrics | cost | cost per round | CPU per unit, cost | " +
    `≤ ${METRICS_BAR} % |`,
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const [figure, samples] of results) {
    const a = samples.get(off)!;
    const b = samples.get(on)!;
    const cost = (without: number, withMetrics: number) =>
      (figure.higher ? without / withMetrics - 1 : withMetrics / without - 1) * 100;
    const sa = summary(a);
    const sb = summary(b);
    const total = cost(sa.value, sb.value);
    const perRound = a.map((s, i) => cost(s.value, b[i]!.value)).filter(Number.isFinite);
    const range = perRound.length > 1
      ? `${percent(Math.min(...perRound))} … ${percent(Math.max(...perRound))}`
      : "–";
    const cpuCost = figure.perOp ? (sb.cpuPerOp / sa.cpuPerOp - 1) * 100 : NaN;
    // Met when every round is within the bar, missed when every round is over it; otherwise
    // the rounds disagree by more than the bar: this machine's noise cannot tell.
    const holds = perRound.length === 0
      ? "–"
      : Math.max(...perRound) <= METRICS_BAR
      ? "yes"
      : Math.min(...perRound) > METRICS_BAR
      ? "**no**"
      : "noise";
    lines.push(
      `| ${figure.label} | ${figure.unit} | ${cell(sa.value, a)} | ${cell(sb.value, b)} | ` +
        `${percent(total)} | ${range} | ${percent(cpuCost)} | ${holds} |`,
    );
  }
  return lines.join("\n");
}

/** What sizingLines() reads of a main-table row. */
export interface SizingRow {
  readonly label: string;
  readonly values: Map<string, number>;
  readonly cpu: Map<string, { server: number }[]>;
}

/**
 * Sessions one instance holds, from the main table: per core from the 1,000-session echo row (its
 * msg/s divided by the proxy's CPU share), per GiB from the idle row. Empty without those rows.
 */
export function sizingLines(rows: SizingRow[]): string[] {
  const echo = rows.find((row) => row.label.startsWith("1,000 sessions echoing"));
  const idle = rows.find((row) => row.label.startsWith("idle memory per session"));
  if (!echo && !idle) return [];
  const lines = ["Sizing one instance (from the rows above, deno column):", ""];
  if (echo) {
    const rate = echo.values.get("deno") ?? NaN;
    const cpu = median((echo.cpu.get("deno") ?? []).map((sample) => sample.server));
    const perCore = rate / cpu;
    lines.push(
      `- messages: ${format(rate)} msg/s at ${Math.round(cpu * 100)} % of one core = ` +
        `${format(perCore)} msg/s per core (32 B echoes, 1,000 sessions); sessions per core at ` +
        [1, 10, 100].map((r) => `${r} msg/s each: ${format(perCore / r)}`).join(", ") + ".",
    );
  }
  if (idle) {
    const kib = idle.values.get("deno") ?? NaN;
    lines.push(
      `- memory: ${kib.toFixed(1)} KiB per idle session = ${format(1048576 / kib)} idle ` +
        "sessions per GiB (RSS above the process's own).",
    );
  }
  return lines;
}
