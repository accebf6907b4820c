// Many small client frames in one socket chunk: the pump moves their payloads together in the
// chunk (src/session/pump.ts, compactInto) and writes them as one piece. Every byte must reach
// the target in order, also when the target reads slowly and the proxy has to queue.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { randomBytes, startProxy, startTarget, upgradeRequest, within } from "./_helpers.ts";
import { clientFrame, concatBytes } from "./_perf_helpers.ts";

const encoder = new TextEncoder();

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Frames of sizes 0..2999 (some 20 KiB, one message in three fragments) with varying masks. */
function framesAndPayload(count: number): { wire: Uint8Array; payload: Uint8Array } {
  const frames: Uint8Array[] = [];
  const payloads: Uint8Array[] = [];
  for (let index = 0; index < count; index++) {
    const size = index % 50 === 7 ? 20_000 : (index * 7919) % 3000;
    const data = randomBytes(size);
    const mask = [index & 0xff, (index * 3) & 0xff, 0x5a, (index * 11) & 0xff];
    if (index % 97 === 5) {
      // A message in three fragments: binary, continuation, final continuation.
      const third = Math.floor(size / 3);
      frames.push(clientFrame(2, data.subarray(0, third), { fin: false, mask }));
      frames.push(clientFrame(0, data.subarray(third, 2 * third), { fin: false, mask }));
      frames.push(clientFrame(0, data.subarray(2 * third), { mask }));
    } else {
      frames.push(clientFrame(2, data, { mask }));
    }
    payloads.push(data);
  }
  return { wire: concatBytes(frames), payload: concatBytes(payloads) };
}

async function readUntil101(conn: Deno.Conn): Promise<void> {
  const buffer = new Uint8Array(4096);
  let text = "";
  while (!text.includes("\r\n\r\n")) {
    const count = await conn.read(buffer);
    assert.ok(count !== null, `the proxy closed before its answer: ${text}`);
    text += new TextDecoder().decode(buffer.subarray(0, count));
  }
  assert.match(text, /^HTTP\/1\.1 101 /);
}

for (const slow of [false, true]) {
  Deno.test(`small frames sent in large writes reach the target whole and in order${slow ? ", target reading slowly" : ""}`, async () => {
    const { wire, payload } = framesAndPayload(1500);
    const received: Uint8Array[] = [];
    let total = 0;
    const done = Promise.withResolvers<void>();
    await using target = startTarget(async (conn) => {
      const buffer = new Uint8Array(slow ? 4096 : 65536);
      if (slow) await new Promise((resolve) => setTimeout(resolve, 300));
      while (total < payload.length) {
        const count = await conn.read(buffer);
        if (count === null) break;
        received.push(buffer.slice(0, count));
        total += count;
        // A slow reader: the proxy's writes to the target queue up meanwhile.
        if (slow && received.length % 16 === 0) {
          await new Promise((resolve) => setTimeout(resolve, 1));
        }
      }
      done.resolve();
    });
    await using proxy = await startProxy(["127.0.0.1:0", `127.0.0.1:${target.port}`]);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    try {
      await conn.write(encoder.encode(upgradeRequest()));
      await readUntil101(conn);
      // 256 KiB writes: each socket read at the proxy holds dozens of frames and cut ones.
      for (let at = 0; at < wire.length; at += 256 * 1024) {
        const piece = wire.subarray(at, Math.min(at + 256 * 1024, wire.length));
        for (let written = 0; written < piece.length;) {
          written += await conn.write(piece.subarray(written));
        }
      }
      await within(done.promise, 20_000, `all ${payload.length} bytes at the target`);
      const got = concatBytes(received);
      assert.equal(got.length, payload.length, "bytes at the target");
      assert.equal(sha256(got), sha256(payload), "the target got other bytes than were sent");
    } finally {
      conn.close();
    }
  });
}
