/** Scraping a proxy's `--metrics` listener in tests. */

import assert from "node:assert/strict";

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
