import assert from "node:assert/strict";
import { connectClient, gone, runMain, startEcho } from "./_helpers.ts";

const encoder = new TextEncoder();

Deno.test("main.ts -D detaches, keeps proxying and stops on SIGTERM", async () => {
  await using echo = startEcho();
  const dir = await Deno.makeTempDir();
  const logFile = `${dir}/websockify.log`;
  const { code, stderr } = await runMain([
    "-D",
    "--log-file",
    logFile,
    "127.0.0.1:0",
    `127.0.0.1:${echo.port}`,
  ]);
  assert.equal(code, 0, stderr);
  const pid = Number(/running in the background as process (\d+)/.exec(stderr)?.[1]);
  assert.ok(pid > 0, stderr);
  try {
    const port = Number(/Listen on 127\.0\.0\.1:(\d+)/.exec(await Deno.readTextFile(logFile))?.[1]);
    assert.ok(port > 0);
    const client = await connectClient(`ws://127.0.0.1:${port}/`);
    client.ws.send(encoder.encode("daemon"));
    assert.deepEqual(await client.next(), encoder.encode("daemon"));
    client.ws.close();
    await client.closed;
  } finally {
    Deno.kill(pid, "SIGTERM");
    await gone(pid, 8000, "daemon exit");
  }
  assert.match(await Deno.readTextFile(logFile), /Got SIGTERM/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("main.ts -D reports a start-up failure in the foreground with its exit code", async () => {
  const occupied = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (occupied.addr as Deno.NetAddr).port;
  try {
    const { code, stderr } = await runMain(["-D", `127.0.0.1:${port}`, "127.0.0.1:5900"]);
    assert.equal(code, 1);
    assert.match(stderr, /^websockify: error: Address 127\.0\.0\.1:\d+ is already in use/);
  } finally {
    occupied.close();
  }
});
