/**
 * Self time of a V8 `.cpuprofile` (Deno `--cpu-prof`, Node `--cpu-prof`) by function and by where
 * the code lives (issue 12, step 2): ours (src/, main.ts, the Node bundle's main.mjs),
 * npm packages, the runtime's JS (ext:, node:), and V8's own entries ((garbage collector),
 * (program), (idle): native code and waiting).
 *
 *   deno run -A scripts/profile/cpuprofile_split.ts FILE.cpuprofile [ROWS]
 *
 * @module
 */

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

function place(url: string, name: string): string {
  if (url === "") return name.startsWith("(") ? name : "native/builtin";
  if (url.includes("/npm/") || url.includes("node_modules")) return "npm packages";
  if (url.startsWith("ext:") || url.startsWith("node:")) return "runtime JS";
  if (/\/src\/|main\.ts|main\.mjs/.test(url)) return "ours";
  return "other: " + url.slice(0, 60);
}

const [file, rowsArg] = Deno.args;
if (file === undefined) {
  console.error("usage: cpuprofile_split.ts FILE.cpuprofile [ROWS]");
  Deno.exit(2);
}
const profile: Profile = JSON.parse(await Deno.readTextFile(file));
const byId = new Map(profile.nodes.map((node) => [node.id, node]));
const selfUs = new Map<number, number>();
profile.samples.forEach((id, i) => {
  selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
});
const places = new Map<string, number>();
const urls = new Map<string, number>();
const functions = new Map<string, number>();
let total = 0;
for (const [id, us] of selfUs) {
  const frame = byId.get(id)!.callFrame;
  const where = place(frame.url, frame.functionName);
  places.set(where, (places.get(where) ?? 0) + us);
  const module = frame.url.replace(/^.*\/(src|npm)\//, "$1/") || frame.functionName;
  urls.set(module, (urls.get(module) ?? 0) + us);
  const short = frame.url.replace(/^.*\/(src|npm)\//, "$1/").replace(/^file:\/\/.*\//, "");
  const key = `${frame.functionName || "(anonymous)"} ${short}:${frame.lineNumber + 1}`;
  functions.set(key, (functions.get(key) ?? 0) + us);
  total += us;
}
const busy = total - (places.get("(idle)") ?? 0);
console.log(`total ${(total / 1000).toFixed(0)} ms, not idle ${(busy / 1000).toFixed(0)} ms`);
for (const [where, us] of [...places].sort((a, b) => b[1] - a[1])) {
  console.log(`  ${where.padEnd(24)} ${(us / total * 100).toFixed(1).padStart(5)} % of all`);
}
const rows = Number(rowsArg ?? 25);
console.log("top modules (self time, % of all samples):");
for (const [url, us] of [...urls].sort((a, b) => b[1] - a[1]).slice(0, rows)) {
  console.log(`  ${(us / total * 100).toFixed(2).padStart(6)} %  ${url}`);
}
console.log("top functions (self time, % of all samples):");
for (const [key, us] of [...functions].sort((a, b) => b[1] - a[1]).slice(0, rows)) {
  console.log(`  ${(us / total * 100).toFixed(2).padStart(6)} %  ${key}`);
}
