/**
 * What an idle session holds on the JS heap (issue 12, step 2): takes a V8 heap snapshot of a
 * running server through its inspector (`deno run --inspect=127.0.0.1:PORT ...` or
 * `node --inspect=127.0.0.1:PORT ...`), sums it by node type and constructor/closure name, and
 * diffs two such sums divided by the number of sessions between them.
 *
 *   deno run -A scripts/profile/heap_diff.ts snapshot INSPECT_PORT OUT.json
 *   deno run -A scripts/profile/heap_diff.ts diff BEFORE.json AFTER.json SESSIONS [ROWS]
 *
 * `scripts/profile/idle_memory.sh` runs both around 1,000 idle sessions.
 *
 * @module
 */

interface Summary {
  totalBytes: number;
  totalObjects: number;
  groups: Record<string, { count: number; bytes: number }>;
}

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  nodes: number[];
  strings: string[];
}

const GROUPED_BY_TYPE = new Set([
  "string",
  "concatenated string",
  "sliced string",
  "number",
  "bigint",
]);

async function takeSnapshot(inspectPort: number): Promise<Snapshot> {
  const targets = await (await fetch(`http://127.0.0.1:${inspectPort}/json/list`)).json();
  const url = (targets as { webSocketDebuggerUrl: string }[])[0]!.webSocketDebuggerUrl;
  const socket = new WebSocket(url);
  await new Promise((resolve, reject) => {
    socket.onopen = resolve;
    socket.onerror = reject;
  });
  const chunks: string[] = [];
  let nextId = 1;
  const pending = new Map<number, () => void>();
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data as string);
    if (message.method === "HeapProfiler.addHeapSnapshotChunk") chunks.push(message.params.chunk);
    else if (message.id !== undefined) pending.get(message.id)?.();
  };
  const call = (method: string, params: Record<string, unknown> = {}) =>
    new Promise<void>((resolve) => {
      const id = nextId++;
      pending.set(id, resolve);
      socket.send(JSON.stringify({ id, method, params }));
    });
  await call("HeapProfiler.enable");
  await call("HeapProfiler.collectGarbage");
  await call("HeapProfiler.takeHeapSnapshot", { reportProgress: false });
  socket.close();
  return JSON.parse(chunks.join(""));
}

function summarise(snapshot: Snapshot): Summary {
  const fields = snapshot.snapshot.meta.node_fields;
  const types = snapshot.snapshot.meta.node_types[0];
  const width = fields.length;
  const typeAt = fields.indexOf("type");
  const nameAt = fields.indexOf("name");
  const sizeAt = fields.indexOf("self_size");
  const groups: Summary["groups"] = {};
  let totalBytes = 0;
  let totalObjects = 0;
  const nodes = snapshot.nodes;
  for (let i = 0; i < nodes.length; i += width) {
    const type = types[nodes[i + typeAt]!]!;
    const size = nodes[i + sizeAt]!;
    const name = snapshot.strings[nodes[i + nameAt]!]!;
    const key = GROUPED_BY_TYPE.has(type) ? `(${type})` : `${type}: ${name.slice(0, 70)}`;
    const group = groups[key] ??= { count: 0, bytes: 0 };
    group.count++;
    group.bytes += size;
    totalBytes += size;
    totalObjects++;
  }
  return { totalBytes, totalObjects, groups };
}

function diff(before: Summary, after: Summary, sessions: number, rows: number): void {
  const perSession = (a: number, b: number) => (b - a) / sessions;
  console.log(
    `heap: ${(perSession(before.totalBytes, after.totalBytes) / 1024).toFixed(2)} KiB and ` +
      `${perSession(before.totalObjects, after.totalObjects).toFixed(1)} objects per session ` +
      `(${(before.totalBytes / 1048576).toFixed(1)} → ${
        (after.totalBytes / 1048576).toFixed(1)
      } MiB)`,
  );
  const keys = new Set([...Object.keys(before.groups), ...Object.keys(after.groups)]);
  const lines = [...keys].map((key) => {
    const a = before.groups[key] ?? { count: 0, bytes: 0 };
    const b = after.groups[key] ?? { count: 0, bytes: 0 };
    return { key, count: perSession(a.count, b.count), bytes: perSession(a.bytes, b.bytes) };
  }).sort((x, y) => y.bytes - x.bytes).slice(0, rows);
  console.log("| per session: objects | bytes | type: constructor or name |");
  console.log("| ---: | ---: | --- |");
  for (const line of lines) {
    console.log(`| ${line.count.toFixed(2)} | ${line.bytes.toFixed(0)} | ${line.key} |`);
  }
}

const [command, a, b, c, d] = Deno.args;
if (command === "snapshot" && a && b) {
  const summary = summarise(await takeSnapshot(Number(a)));
  await Deno.writeTextFile(b, JSON.stringify(summary));
  console.log(
    JSON.stringify({ totalBytes: summary.totalBytes, totalObjects: summary.totalObjects }),
  );
} else if (command === "diff" && a && b && c) {
  const read = async (path: string): Promise<Summary> => JSON.parse(await Deno.readTextFile(path));
  diff(await read(a), await read(b), Number(c), Number(d ?? 30));
} else {
  console.error("usage: heap_diff.ts snapshot INSPECT_PORT OUT.json | diff A.json B.json SESSIONS");
  Deno.exit(2);
}
