import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { parseUpgradeHead } from "../src/http/http.ts";
import { startEcho, startProxy, upgradeRequest } from "./_helpers.ts";

const decoder = new TextDecoder();
const encoder = new TextEncoder();

function head(lines: string[]): Buffer {
  return Buffer.from(lines.join("\r\n") + "\r\n\r\n", "latin1");
}

Deno.test("parseUpgradeHead() takes a complete simple upgrade and leaves the rest after it", () => {
  const request = upgradeRequest("/path?token=a", ["Sec-WebSocket-Protocol:  binary "]);
  const parsed = parseUpgradeHead(Buffer.from(request + "\x82\x00", "latin1"));
  assert.ok(parsed);
  assert.equal(parsed.method, "GET");
  assert.equal(parsed.url, "/path?token=a");
  assert.equal(parsed.length, request.length);
  assert.equal(parsed.headers.get("sec-websocket-protocol"), "binary");
  assert.equal(parsed.headers.get("upgrade"), "websocket");
  assert.deepEqual(parsed.rawHeaders.slice(0, 4), ["Host", "127.0.0.1", "Upgrade", "websocket"]);
});

Deno.test("parseUpgradeHead() leaves everything unusual to node:http", () => {
  const base = upgradeRequest().split("\r\n").slice(0, -2);
  const cases: [string, Buffer][] = [
    ["partial head", Buffer.from(upgradeRequest().slice(0, 40), "latin1")],
    ["POST", head(["POST / HTTP/1.1", ...base.slice(1)])],
    ["HTTP/1.0", head(["GET / HTTP/1.0", ...base.slice(1)])],
    ["absolute target", head(["GET http://a/ HTTP/1.1", ...base.slice(1)])],
    ["no Host", head(base.filter((line) => !line.startsWith("Host")))],
    ["no Connection: upgrade", head([...base.filter((l) => !l.startsWith("Connection"))])],
    ["no Upgrade", head(base.filter((line) => !line.startsWith("Upgrade")))],
    ["repeated header", head([...base, "Sec-WebSocket-Protocol: a", "sec-websocket-protocol: b"])],
    ["folded line", head([...base, "X-A: a", " b"])],
    ["byte above 0x7e", head([...base, "X-A: \xe9"])],
    ["control byte", head([...base, "X-A: a\x01"])],
    ["bad name", head([...base, "X A: a"])],
    ["body", head([...base, "Content-Length: 0"])],
    ["chunked", head([...base, "Transfer-Encoding: chunked"])],
    ["too large", head([...base, `X-A: ${"a".repeat(16 * 1024)}`])],
  ];
  for (const [what, chunk] of cases) assert.equal(parseUpgradeHead(chunk), undefined, what);
});

/** Sends `request` whole or in two writes 150 ms apart; returns what arrived within 1.5 s. */
async function exchange(port: number, request: string, split: boolean): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const timer = setTimeout(() => conn.close(), 1500);
  let received = "";
  try {
    const bytes = encoder.encode(request);
    if (split) {
      await conn.write(bytes.subarray(0, 5));
      await new Promise((resolve) => setTimeout(resolve, 150));
      await conn.write(bytes.subarray(5));
    } else {
      await conn.write(bytes);
    }
    const buffer = new Uint8Array(4096);
    for (let reads = 0; reads < 100; reads++) {
      const count = await conn.read(buffer);
      if (count === null) break;
      received += decoder.decode(buffer.subarray(0, count));
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.BadResource || error instanceof Deno.errors.Interrupted)) {
      if (!(error instanceof Deno.errors.ConnectionReset)) throw error;
    }
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // Closed by the timer.
    }
  }
  // The Date header of an error page may tick between the two exchanges.
  return received.replace(/\r\nDate: [^\r]*/, "");
}

Deno.test("an upgrade in one chunk (fast path) and in two (node:http) get the same answers", async () => {
  await using echo = startEcho();
  await using proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${echo.port}`]);
  const requests = [
    upgradeRequest(),
    upgradeRequest("/a?b=c", ["Sec-WebSocket-Protocol: base64, binary"]),
    upgradeRequest("/", ["Sec-WebSocket-Protocol: base64"]),
    upgradeRequest().replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 7"),
    upgradeRequest().replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Key: x"),
    upgradeRequest().replace("Upgrade: websocket", "Upgrade: h2c"),
  ];
  for (const request of requests) {
    const whole = await exchange(proxy.port, request, false);
    const split = await exchange(proxy.port, request, true);
    assert.match(whole, /^HTTP\/1\.1 (101|400) /, request);
    assert.equal(whole, split, request);
  }
});
