import assert from "node:assert/strict";
import { Recording } from "../src/session/record.ts";

const encoder = new TextEncoder();

Deno.test("Recording writes one line per client message, however many pieces it came in", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const recording = await Recording.open(`${dir}/rec.1`);
    recording.fromClient(encoder.encode("ab"), false);
    recording.fromClient(encoder.encode("c'd"), false);
    recording.fromClient(encoder.encode("e"), true);
    recording.toClient(encoder.encode("xy"));
    recording.toClient(encoder.encode("z"));
    recording.fromClient(new Uint8Array(0), true);
    await recording.close();
    const lines = (await Deno.readTextFile(`${dir}/rec.1`)).split("\n");
    assert.equal(lines[0], "var VNC_frame_data = [");
    assert.match(lines[1]!, /^'\}\d+\}abc\\'de',$/);
    assert.match(lines[2]!, /^'\{\d+\{xy',$/);
    assert.match(lines[3]!, /^'\{\d+\{z',$/);
    assert.match(lines[4]!, /^'\}\d+\}',$/);
    assert.deepEqual(lines.slice(5), ["'EOF'];", ""]);
    // The file holds the session's traffic: created private.
    assert.equal((await Deno.stat(`${dir}/rec.1`)).mode! & 0o777, 0o600);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
