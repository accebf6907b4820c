// The benchmark script runs end to end and prints both tables; figures are not judged here (they
// come from `deno task bench`, never from tests), only their presence and shape.

import assert from "node:assert/strict";

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
  assert.deepEqual(header.slice(0, 4), ["test", "unit", "direct", "deno"]);
  for (const label of ["echo round trip p50", "echo round trip p99", "set-up"]) {
    const [, , direct, deno] = rowOf(figures, label);
    assert.match(direct!, /^[\d,.]+$/, `${label}: direct figure`);
    assert.match(deno!, /^[\d,.]+$/, `${label}: deno figure`);
  }
  // Parts not asked for are not run.
  assert.doesNotMatch(stdout, /ws→tcp|concurrent|new session|idle memory/);
  // CPU table: a share for deno's server and load side, and the side that limited it.
  const cpuHeader = rowOf(cpu, "test | direct");
  assert.deepEqual(cpuHeader, ["test", "direct", "deno", "deno limited by"]);
  const [, , denoCpu, limit] = rowOf(cpu, "set-up");
  assert.match(denoCpu!, /^\d+ % \/ \d+ %$/);
  assert.match(limit!, /^(proxy CPU|load side CPU|neither core saturated)$/);
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
  assert.deepEqual(header.slice(0, 5), ["test", "unit", "direct", "deno", "websocketd"]);
  const [, unit, , deno, websocketd] = rowOf(figures, "stdio:");
  assert.equal(unit, "conn/s");
  assert.match(deno!, /^[\d,.]+$/, "deno figure");
  assert.match(websocketd!, /^[\d,.]+ \(deno \/ websocketd \d+\.\d\d\)$/, "websocketd figure");
  assert.doesNotMatch(stdout, /set-up: handshake|echo round trip|ws→tcp/);
  const [, , denoCpu, websocketdCpu] = rowOf(cpu, "stdio:");
  assert.match(denoCpu!, /^\d+ % \/ \d+ %$/);
  assert.match(websocketdCpu!, /^\d+ % \/ \d+ %$/);
});

Deno.test("bench refuses an unknown --only part with the list of parts", async () => {
  const { code, stderr } = await bench(["--only", "latency,warp"]);
  assert.notEqual(code, 0);
  assert.match(stderr, /Unknown part 'warp' for --only: use a comma-separated list of throughput/);
});

Deno.test("bench --compare-v8 adds a proxy column with those V8 flags and CPU per set-up", async () => {
  const { code, stdout, stderr } = await bench([
    "--quick",
    "--only",
    "setup",
    "--no-python",
    "--no-pin",
    "--compare-v8",
    "--no-optimize-for-size",
  ]);
  assert.equal(code, 0, stderr);
  const header = rowOf(stdout, "test | unit");
  assert.deepEqual(header.slice(0, 5), [
    "test",
    "unit",
    "direct",
    "deno",
    "deno [--no-optimize-for-size]",
  ]);
  const [, unit, direct, deno, other] = rowOf(stdout, "  server CPU per set-up");
  assert.equal(unit, "µs");
  assert.equal(direct, "–", "no server between the load and the target");
  assert.match(deno!, /^[\d,.]+$/);
  assert.match(other!, /^[\d,.]+$/);
});
