/** Scraping a proxy's `--metrics` listener in tests. */

import assert from "node:assert/strict";
import { within } from "./_helpers.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** GET /metrics: 200 in the Prometheus text format. */
export async function scrape(base: string): Promise<string> {
  const response = await fetch(`${base}/metrics`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  return await response.text();
}

/** The value of the sample `series` (name with labels, as printed) in `text`. */
export function sample(text: string, series: string): number {
  const line = text.split("\n").find((line) => line.startsWith(`${series} `));
  assert.ok(line, `no sample ${series} in:\n${text}`);
  return Number(line.slice(series.length + 1));
}

/** Scrapes until `series` has `value` (sessions end asynchronously), for at most 10 s. */
export async function scrapeUntil(base: string, series: string, value: number): Promise<string> {
  const deadline = Date.now() + 10000;
  for (;;) {
    const text = await scrape(base);
    if (sample(text, series) === value || Date.now() > deadline) return text;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Runs Debian's `promtool ARGS` (with `stdin` piped in, if given): its exit code and output. */
export async function promtool(
  args: string[],
  stdin?: string,
): Promise<{ code: number; output: string }> {
  const child = new Deno.Command("/usr/bin/promtool", {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(encoder.encode(stdin));
    await writer.close();
  }
  const output = await within(child.output(), 30000, `promtool ${args.slice(0, 2).join(" ")}`);
  return {
    code: output.code,
    output: decoder.decode(output.stdout) + decoder.decode(output.stderr),
  };
}
