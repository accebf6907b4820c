// The benchmark script runs end to end and prints both tables; figures are not judged here (they
// come from `deno task bench`, never from tests), only their presence and shape.

import assert from "node:assert/strict";
import { sizingLines } from "../scripts/bench_cluster.ts";
import { Child, oomKillOf, subjectOf } from "../scripts/bench.ts";

const BENCH = new URL("../scripts/bench.ts", import.meta.url).pathname;

async function bench(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", BENCH, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/** The cells of the markdown row whose first cell starts with `label`. */
function rowOf(text: string, label: string): string[] {
  const line = text.split("\n").find((l) => l.startsWith(`| ${label}`));
  assert.ok(line, `no row '${label}' in:\n${text}`);
  return line.split("|").slice(1, -1).map((cell) => cell.trim());
}

Deno.test("bench --quick --only latency,setup prints the figures and the CPU table", async () => {
  const { code, stdout, stderr } = await bench([
    "--quick",
    "--only",
    "latency,setup",
    "--no-python",
    "--no-pin",
  ]);
  assert.equal(code, 0, stderr);
  const [figures, cpu] = stdout.split("CPU use during each test");
  assert.ok(figures && cpu, `no CPU table in:\n${stdout}`);
  assert.match(stdout, /^Machine: \d+ × .*quick mode/m);
  assert.match(stdout, /Not pinned/);
  const header = rowOf(figures, "test | unit");
  assert.deepEqual(header.slice(0, 6), ["test", "unit", "limit", "deno", "websocketd", "floor"]);
  for (const label of ["echo round trip p50", "echo round trip p99", "set-up"]) {
    const [, , limit, deno, websocketd, floor] = rowOf(figures, label);
    assert.match(limit!, /^[\d,.]+$/, `${label}: limit figure`);
    assert.match(deno!, /^[\d,.]+$/, `${label}: deno figure`);
    assert.match(websocketd!, /^[\d,.]+( \(.*\))?$/, `${label}: websocketd figure`);
    assert.match(floor!, /^[\d,.]+$/, `${label}: floor figure (scripts/floor_proxy.c)`);
  }
  const setup = rowOf(figures, "set-up");
  for (const ratio of ["deno / limit", "floor / limit", "deno / floor"]) {
    assert.match(setup[header.indexOf(ratio)]!, /^\d+\.\d\d$/, ratio);
  }
  assert.equal(setup.at(-2), "≥ 0.8× limit");
  assert.match(setup.at(-1)!, /^(yes|\*\*no\*\*)$/);
  // Parts not asked for are not run.
  assert.doesNotMatch(stdout, /^\| (ws→tcp|[\d,]+ sessions echoing|new session|idle memory)/m);
  // CPU table: a share for each server and load side, and the side that limited each figure.
  const cpuHeader = rowOf(cpu, "test | limit");
  assert.deepEqual(cpuHeader, ["test", "limit", "deno", "websocketd", "floor", "deno limited by"]);
  const [, limitCpu, denoCpu, , floorCpu, limit] = rowOf(cpu, "set-up");
  for (const cell of [limitCpu, denoCpu, floorCpu]) {
    assert.match(cell!, /^(\d+ %|–) \/ \d+ % (server|load|server core|load core|neither)$/);
  }
  assert.match(
    limit!,
    /^(proxy|load side|proxy's core \(other processes\)|load core \(other processes\)|neither side saturated)$/,
  );
  // The load generator's headroom, from its own CPU share at the fastest figure.
  const [, headroom] = stdout.split("Load generator headroom");
  assert.ok(headroom, `no headroom table in:\n${stdout}`);
  const [, fastest, , , , , ratio, met] = rowOf(headroom, "set-up");
  assert.match(fastest!, /^(limit|deno|websocketd|floor)$/);
  assert.match(ratio!, /^\d+\.\d×$/);
  assert.match(met!, /^(yes|\*\*no\*\*)$/);
});

Deno.test("bench --quick --only stdio compares program sessions with websocketd", async () => {
  const { code, stdout, stderr } = await bench([
    "--quick",
    "--only",
    "stdio",
    "--no-python",
    "--no-pin",
  ]);
  assert.equal(code, 0, stderr);
  const [figures, cpu] = stdout.split("CPU use during each test");
  assert.ok(figures && cpu, `no CPU table in:\n${stdout}`);
  const header = rowOf(figures, "test | unit");
  assert.deepEqual(header.slice(0, 5), ["test", "unit", "limit", "deno", "websocketd"]);
  const [, unit, , deno, websocketd] = rowOf(figures, "stdio:");
  assert.equal(unit, "conn/s");
  assert.match(deno!, /^[\d,.]+$/, "deno figure");
  assert.match(websocketd!, /^[\d,.]+ \(deno \/ websocketd \d+\.\d\d\)$/, "websocketd figure");
  assert.doesNotMatch(stdout, /^\| (set-up: handshake|echo round trip|ws→tcp)/m);
  const [, , denoCpu, websocketdCpu] = rowOf(cpu, "stdio:");
  for (const cell of [denoCpu, websocketdCpu]) {
    assert.match(cell!, /^\d+ % \/ \d+ % (server|load|server core|load core|neither)$/);
  }
});

Deno.test("bench refuses an unknown --only part with the list of parts", async () => {
  const { code, stderr } = await bench(["--only", "latency,warp"]);
  assert.notEqual(code, 0);
  assert.match(stderr, /Unknown part 'warp' for --only: use a comma-separated list of throughput/);
});

Deno.test("bench refuses --rounds that is not a whole number of runs", async () => {
  for (const rounds of ["0", "1.5", "many"]) {
    const { code, stderr } = await bench(["--rounds", rounds, "--only", "setup"]);
    assert.notEqual(code, 0);
    assert.match(stderr, /--rounds takes a whole number of runs per figure, 1 or more/);
  }
});

Deno.test("bench --compare-v8 adds a proxy column started with those V8 flags, paired with deno", async () => {
  const { code, stdout, stderr } = await bench([
    "--quick",
    "--rounds",
    "2",
    "--only",
    "setup",
    "--no-python",
    "--no-pin",
    "--compare-v8",
    "--no-optimize-for-size",
  ]);
  assert.equal(code, 0, stderr);
  const [figures] = stdout.split("CPU use during each test");
  const header = rowOf(figures!, "test | unit");
  const column = header.indexOf("deno [--no-optimize-for-size]");
  assert.ok(column > header.indexOf("deno"), `no deno [FLAGS] column after deno: ${header}`);
  const setup = rowOf(figures!, "set-up");
  assert.match(setup[header.indexOf("deno")]!, /^[\d,.]+$/);
  // Two rounds each (--rounds 2), and the median of the two rounds' ratios to deno.
  assert.match(stderr, /quick mode, 2 run\(s\) per figure/);
  assert.match(
    setup[column]!,
    /^[\d,.]+ \(paired \d+\.\d\d× deno, better in [012] of 2 rounds\)$/,
    "the compared proxy's set-up rate and its paired ratio",
  );
});

Deno.test("bench --quick --only deflate measures compressed 64 KiB messages through --permessage-deflate", async () => {
  const { code, stdout, stderr } = await bench([
    "--quick",
    "--only",
    "deflate",
    "--no-python",
    "--no-pin",
  ]);
  assert.equal(code, 0, stderr);
  const [figures] = stdout.split("CPU use during each test");
  const header = rowOf(figures!, "test | unit");
  const row = rowOf(figures!, "ws→tcp, 64 KiB JSON messages, permessage-deflate");
  // A rate of inflated payload, with the wire rate, the compression ratio and the plain rate.
  assert.match(
    row[header.indexOf("deno")]!,
    /^[\d,.]+ \(payload inflated; [\d,.]+ MB\/s on the wire \(\d+\.\d:1\); [\d,.]+ MB\/s uncompressed\)$/,
  );
  assert.equal(row[header.indexOf("limit")], "no permessage-deflate");
  assert.equal(row[header.indexOf("floor")], "no permessage-deflate");
});

/** A figure, with how many of the 1,000 sessions were served when not all were. */
const FIGURE = /^[\d,.]+( \(\d+\/1000 served\))?$/;

Deno.test("bench --quick --only cluster,metrics prints the HAProxy and --metrics tables", async () => {
  const { code, stdout, stderr } = await bench([
    "--quick",
    "--only",
    "cluster,metrics",
    "--no-python",
    "--no-pin",
  ]);
  assert.equal(code, 0, stderr);
  assert.match(stdout, /^Machine: \d+ × .*quick mode/m);
  // No main table: only parts with tables of their own ran.
  assert.doesNotMatch(stdout, /CPU use during each test|\| test \| unit \| limit/);
  const [, cluster, metrics] = stdout.split(/^(?:Through HAProxy|--metrics overhead)/m);
  assert.ok(cluster && metrics, `no HAProxy or --metrics table in:\n${stdout}`);
  assert.deepEqual(rowOf(cluster, "test | unit").slice(2, 5), [
    "one instance",
    "HAProxy + 3 instances",
    "cluster / one",
  ]);
  for (const label of ["1,000 sessions", "set-up", "ws→tcp, 64 KiB", "tcp→ws, 64 KiB"]) {
    const [, , one, through, ratio, cpuOne, cpuCluster, , haproxyPart] = rowOf(cluster, label);
    assert.match(one!, FIGURE, `${label}: one instance`);
    assert.match(through!, FIGURE, `${label}: through HAProxy`);
    assert.match(ratio!, /^\d+\.\d\d$/, `${label}: ratio`);
    assert.match(cpuOne!, /^\d+ % \/ \d+ %$/, `${label}: CPU of one instance`);
    assert.match(cpuCluster!, /^\d+ % \/ \d+ %$/, `${label}: CPU of the cluster`);
    assert.match(haproxyPart!, /^\d+ %$/, `${label}: HAProxy's part of the CPU`);
  }
  for (const label of ["1,000 sessions", "set-up", "ws→tcp, 1 KiB", "echo round trip p50"]) {
    const [, , without, withMetrics, cost, , , holds] = rowOf(metrics, label);
    assert.match(without!, FIGURE, `${label}: without`);
    assert.match(withMetrics!, FIGURE, `${label}: with --metrics`);
    assert.match(cost!, /^[+-]\d+\.\d %$/, `${label}: cost`);
    assert.match(holds!, /^(yes|\*\*no\*\*|noise)$/, `${label}: bar`);
  }
});

Deno.test("sizingLines turns the 1,000-session and idle rows into sessions per core and GiB", () => {
  const row = (label: string, value: number, server: number[]) => ({
    label,
    values: new Map([["deno", value]]),
    cpu: new Map([["deno", server.map((share) => ({ server: share }))]]),
  });
  const lines = sizingLines([
    row("1,000 sessions echoing (32 B)", 20000, [0.5, 0.4, 0.6]),
    row("idle memory per session", 16, []),
  ]);
  assert.match(lines.join("\n"), /20,000 msg\/s at 50 % of one core = 40,000 msg\/s per core/);
  assert.match(lines.join("\n"), /, 10 msg\/s each: 4,000,/);
  assert.match(lines.join("\n"), /16\.0 KiB per idle session = 65,536 idle sessions per GiB/);
  assert.deepEqual(sizingLines([]), []);
});

Deno.test("a column whose process has ended by itself says how, with its last output; a stopped one does not", async () => {
  const route = { port: 1, ws: true, mode: false };
  const crashed = new Child("sh", ["-c", "echo starting; echo boom >&2; exit 3"], undefined);
  const dead = subjectOf("websocketd", crashed, route, false);
  await crashed.process.status;
  await crashed.finished;
  // The exit is recorded by the status promise's own handler: give it its turn.
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.match(
    dead.exited!() ?? "",
    /^exit code 3; last output: (starting \| boom|boom \| starting)$/,
  );

  const running = new Child("sleep", ["30"], undefined);
  const alive = subjectOf("floor", running, route, false);
  assert.equal(alive.exited!(), undefined, "a running process has not exited");
  await alive.stop();
  assert.equal(alive.exited!(), undefined, "a process the bench stopped is not reported as dead");
});

Deno.test("a column killed by the kernel's out-of-memory killer says so, with its resident size", () => {
  const log = [
    "[18545.177140]  __alloc_pages_may_oom+0x14b/0x220",
    "[18545.178913] Out of memory: Killed process 18239 (websocketd) total-vm:95768192kB, " +
    "anon-rss:23943568kB, file-rss:68kB, shmem-rss:0kB, UID:0 pgtables:67664kB oom_score_adj:0",
  ].join("\n");
  assert.equal(
    oomKillOf(18239, log),
    "killed by the kernel's out-of-memory killer at 22.8 GiB resident",
  );
  // Another process's line, or none: nothing to say.
  assert.equal(oomKillOf(1823, log), undefined);
  assert.equal(oomKillOf(18239, ""), undefined);
});
