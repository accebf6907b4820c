import assert from "node:assert/strict";
import {
  connectClient,
  type ProxyProcess,
  randomBytes,
  runMain,
  startEcho,
  startProxy,
  type TestClient,
  within,
} from "./_helpers.ts";

const decoder = new TextDecoder();

async function echoes(client: TestClient, size: number): Promise<void> {
  const data = randomBytes(size);
  client.ws.send(data);
  assert.deepEqual(await client.receiveBytes(size), data);
}

/** Stops the proxy and returns its whole stderr (all lines flushed). */
async function stopped(proxy: ProxyProcess): Promise<string> {
  proxy.kill("SIGTERM");
  await within(proxy.status, 10000, "proxy exit");
  return proxy.stderr();
}

function endLines(stderr: string): string[] {
  return stderr.split("\n").filter((line) => line.includes("session ended"));
}

Deno.test("session end: one info line with exact bytes and close 1000 after a clean close", async () => {
  await using echo = startEcho();
  await using proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${echo.port}`]);
  const client = await connectClient(`ws://127.0.0.1:${proxy.port}/`);
  await echoes(client, 1000);
  await echoes(client, 70_000);
  client.ws.close(1000);
  await client.closed;
  await proxy.waitFor(/session ended/);
  const lines = endLines(await stopped(proxy));
  assert.equal(lines.length, 1, lines.join("\n"));
  assert.match(
    lines[0] ?? "",
    new RegExp(
      `^127\\.0\\.0\\.1 - - \\[[^\\]]+\\] 127\\.0\\.0\\.1: 127\\.0\\.0\\.1:${echo.port}: ` +
        `session ended after \\d+\\.\\d s, 71000 bytes from client, 71000 bytes from target, ` +
        `close 1000$`,
    ),
  );
});

Deno.test("session end: a client reset is logged once with close 1006", async () => {
  await using echo = startEcho();
  await using proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${echo.port}`]);
  const client = await connectClient(`ws://127.0.0.1:${proxy.port}/`);
  await echoes(client, 500);
  client.ws.terminate();
  await client.closed;
  await proxy.waitFor(/session ended/);
  const lines = endLines(await stopped(proxy));
  assert.equal(lines.length, 1, lines.join("\n"));
  assert.match(lines[0] ?? "", /500 bytes from client, 500 bytes from target, close 1006$/);
});

const RESET_TARGET = `
import socket, struct, sys
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(1)
print(server.getsockname()[1], flush=True)
conn, _ = server.accept()
got = 0
while got < 300:
    got += len(conn.recv(300 - got))
conn.sendall(b"t" * 700)
conn.recv(1)
conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
conn.close()
sys.stdin.read()
`;

Deno.test("session end: a target reset is logged once with close 1011", async () => {
  const child = new Deno.Command("/usr/bin/python3", {
    args: ["-c", RESET_TARGET],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  try {
    const reader = child.stdout.getReader();
    const port = Number(decoder.decode((await within(reader.read(), 10000, "target port")).value));
    reader.releaseLock();
    await using proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${port}`]);
    const client = await connectClient(`ws://127.0.0.1:${proxy.port}/`);
    client.ws.send(randomBytes(300));
    assert.equal((await client.receiveBytes(700)).length, 700);
    client.ws.send(new Uint8Array([1]));
    assert.equal((await client.closed).code, 1011);
    await proxy.waitFor(/session ended/);
    const lines = endLines(await stopped(proxy));
    assert.equal(lines.length, 1, lines.join("\n"));
    assert.match(lines[0] ?? "", /301 bytes from client, 700 bytes from target, close 1011$/);
  } finally {
    child.kill("SIGKILL");
    await child.stdin.close().catch(() => {});
    await child.stdout.cancel().catch(() => {});
    await child.status;
  }
});

Deno.test("--log-format json writes one JSON object per line, with the session end's fields", async () => {
  await using echo = startEcho();
  await using proxy = await startProxy([
    "--log-format",
    "json",
    "127.0.0.1:0",
    `127.0.0.1:${echo.port}`,
  ]);
  const url = `ws://127.0.0.1:${proxy.port}/`;
  const sizes = [123, 4567];
  for (const size of sizes) {
    const client = await connectClient(url);
    await echoes(client, size);
    client.ws.close(1000);
    await client.closed;
  }
  await proxy.waitFor(/(session ended[^]*){2}/);
  const stderr = await stopped(proxy);
  const records = stderr.split("\n").filter((line) => line !== "").map((line) => {
    const record = JSON.parse(line) as Record<string, unknown>;
    assert.match(String(record["time"]), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, line);
    assert.equal(typeof record["level"], "string", line);
    assert.equal(typeof record["message"], "string", line);
    return record;
  });
  assert.ok(records.some((record) => String(record["message"]).includes("Listen on")));
  const ends = records.filter((record) => String(record["message"]).includes("session ended"));
  assert.equal(ends.length, 2, JSON.stringify(ends));
  ends.forEach((end, index) => {
    const size = sizes[index];
    assert.equal(end["level"], "info");
    assert.equal(end["client"], "127.0.0.1");
    assert.equal(end["target"], `127.0.0.1:${echo.port}`);
    assert.equal(typeof end["session"], "number");
    assert.equal(end["bytes_client_to_target"], size);
    assert.equal(end["bytes_target_to_client"], size);
    assert.equal(end["close_code"], 1000);
    assert.ok(typeof end["duration_s"] === "number" && end["duration_s"] >= 0);
  });
  assert.notEqual(ends[0]?.["session"], ends[1]?.["session"]);
});

Deno.test("--log-format rejects an unknown format with exit code 2", async () => {
  const result = await runMain(["--log-format", "xml", "127.0.0.1:0", "127.0.0.1:1"]);
  assert.equal(result.code, 2);
  assert.match(result.stderr.split("\n")[0] ?? "", /--log-format.*'xml'/);
});
