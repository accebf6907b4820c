import assert from "node:assert/strict";
import { Deadlines } from "../src/ops/deadlines.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test("Deadlines ends each value once its delay has passed, never before", async () => {
  const ended: { value: string; after: number }[] = [];
  const start = performance.now();
  const deadlines = new Deadlines<string>(60, (value) => {
    ended.push({ value, after: performance.now() - start });
  });
  deadlines.add("first");
  await sleep(30);
  deadlines.add("second");
  await sleep(50);
  assert.deepEqual(ended.map((end) => end.value), ["first"]);
  await sleep(60);
  assert.deepEqual(ended.map((end) => end.value), ["first", "second"]);
  assert.ok(ended[0]!.after >= 60, `first ended after ${ended[0]!.after} ms`);
  assert.ok(ended[1]!.after >= 90, `second ended after ${ended[1]!.after} ms`);
  assert.equal(deadlines.size, 0);
});

Deno.test("Deadlines.cancel() takes a deadline back; cancelling twice or after it ended is harmless", async () => {
  const ended: number[] = [];
  const deadlines = new Deadlines<number>(40, (value) => ended.push(value));
  const handles = [1, 2, 3, 4].map((value) => deadlines.add(value));
  deadlines.cancel(handles[0]!);
  deadlines.cancel(handles[0]!);
  deadlines.cancel(handles[2]!);
  assert.equal(deadlines.size, 2);
  await sleep(80);
  assert.deepEqual(ended.sort(), [2, 4]);
  deadlines.cancel(handles[1]!);
  assert.equal(deadlines.size, 0);
});

Deno.test("Deadlines: a callback that adds a deadline gets it ended too", async () => {
  const ended: string[] = [];
  const deadlines: Deadlines<string> = new Deadlines<string>(30, (value) => {
    ended.push(value);
    if (value === "first") deadlines.add("added while ending");
  });
  deadlines.add("first");
  await sleep(120);
  assert.deepEqual(ended, ["first", "added while ending"]);
});

Deno.test("Deadlines keeps no timer that holds the process: it exits with a deadline pending", async () => {
  // A process whose only work left is a 60 s deadline ends at once (the sockets, not the header
  // timeout, keep a proxy alive).
  const module = new URL("../src/ops/deadlines.ts", import.meta.url).href;
  const script = `import { Deadlines } from ${JSON.stringify(module)};\n` +
    `new Deadlines(60_000, () => console.log("ended")).add("pending");\n`;
  const started = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", script],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
  const output = await child.output();
  clearTimeout(timer);
  const waited = performance.now() - started;
  assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
  assert.equal(new TextDecoder().decode(output.stdout), "");
  assert.ok(waited < 15_000, `the process waited ${waited.toFixed(0)} ms for the deadline`);
});
